// stages.hpp — private to src/run: running the stand-alone commands in-process as
// stages of a larger command (`pipeline`, `study`).  A stage receives the parent's
// arguments with --out replaced (and --resume added when its folder already holds
// a run), so re-running the parent after a preemption continues every stage where
// it stopped.
#pragma once
#include <string>
#include <vector>

#include "dsonas/run/config.hpp"

namespace dsonas {
namespace stages {

/// The parent's arguments without its --out, its --resume and the options `extra`
/// sets, then --out OUT, --resume if OUT holds a run (OUT/metrics.jsonl), then `extra`
/// (option/value pairs, so they win: `study --seed 7` gives each stage its own --seed).
std::vector<std::string> stage_args(const std::vector<std::string>& args, const std::string& out,
                                    const std::vector<std::string>& extra);
/// The configuration `command` resolves from `args`.
RunConfig stage_config(const std::string& command, const std::vector<std::string>& args);
/// The parent's arguments without --out, plus --run RUN (for `eval`).
std::vector<std::string> eval_args(const std::vector<std::string>& args, const std::string& run);
/// A whole text file ("" if it cannot be read).
std::string read_text(const std::string& p);
/// The last "final" metrics line of a run folder ("" if none).
std::string final_metrics(const std::string& dir);
/// The number after "key": in a one-line JSON object (0 if absent).
double json_number(const std::string& line, const std::string& key);
/// `derive --run RUN --out OUT [--png PNG]` in-process on rank 0; the exit code on every rank.
int derive_on_root(const std::string& run, const std::string& out, const std::string& png);

}  // namespace stages
}  // namespace dsonas
