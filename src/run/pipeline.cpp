// pipeline.cpp — `dsonas pipeline --config C --out DIR [stage options]`: the
// whole method as one command (docs/method.md §7):
//   DIR/pretrain   supergraph, λ fixed at 1            (dsonas pretrain)
//   DIR/search     DSO-NAS search from the pretrain    (dsonas search --init)
//   DIR/arch.json  + arch.dot / arch.png               (dsonas derive)
//   DIR/retrain    the found architecture from scratch (dsonas retrain), + eval_test/
//   DIR/baseline   the hand-made baseline at the found architecture's MACs, + eval_test/
//   DIR/report.md  picture, MACs, parameters and test accuracy of both
// Each stage is the stand-alone command run in-process with the same
// configuration; a stage whose folder already holds a run is resumed (a finished
// one returns at once), so re-running the same command after a preemption or
// a deadline (exit 75) continues where it stopped.  Under mpirun every stage is
// data parallel; derive and the report are written by rank 0.
#include "dsonas/run/pipeline.hpp"

#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/dist/communicator.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/run/config.hpp"
#include "dsonas/run/retrain.hpp"
#include "dsonas/run/run_common.hpp"
#include "dsonas/run/train.hpp"
#include "stages.hpp"

namespace dsonas {
namespace {

std::string pct(double v) { return fmt("%.2f %%", 100 * v); }

/// What a single found-vs-baseline margin (points) means, given the seed-to-seed
/// standard deviation of this configuration's retrain as a study measured it
/// (study.reference-sd): the difference of two independent retrains has sd √2·sd,
/// and a margin within two of those is seed noise.
std::string margin_note(const RunConfig& cfg, double margin) {
  const double sd = cfg.study_reference_sd;
  if (!(sd > 0))
    return str("Margin ", fmt("%+.2f", margin),
               " points from one retrain of each: no seed-to-seed spread is known for this "
               "configuration (set study.reference-sd from a `dsonas study`), so it cannot be called significant.");
  const double sd_diff = std::sqrt(2.0) * sd;
  return str("Margin ", fmt("%+.2f", margin),
             " points from one retrain of each; the seed-to-seed standard deviation of "
             "this retrain is ",
             fmt("%.2f", sd), " points (", cfg.study_reference.empty() ? "study.reference-sd" : cfg.study_reference,
             "), so a difference of two single retrains has sd ", fmt("%.2f", sd_diff), ": ",
             std::fabs(margin) < 2 * sd_diff ? "the margin is within seed noise (not significant)."
                                             : "the margin is beyond two of those (see the study for a real test).");
}

}  // namespace

int run_pipeline(int argc, char** argv) {
  // validates the whole configuration once, before anything runs
  const RunConfig cfg = parse_config("pipeline", argc, argv);
  Communicator& comm = Communicator::world();
  const std::vector<std::string> args(argv + 1, argv + argc);
  const std::string D = cfg.out;
  const auto t0 = Clock::now();
  auto say = [&](const std::string& s) {
    if (comm.root()) std::cout << "== pipeline: " << s << std::endl;
  };
  using namespace stages;
  // the pipeline's clock (the "pipeline left" of every stage's log lines): each stage's
  // configuration as it will run (the retrains' architecture does not change their steps)
  const RunConfig plan_pre = stage_config("pretrain", stage_args(args, D + "/pretrain", {}));
  const RunConfig plan_search = stage_config("search", stage_args(args, D + "/search", {"--init", D + "/pretrain"}));
  // (the baseline is retrained with the found network's configuration)
  const RunConfig plan_re = stage_config("retrain", stage_args(args, D + "/retrain", {"--arch", "baseline"}));
  const RunConfig* const plan[PipelineClock::kStages] = {&plan_pre, &plan_search, &plan_re,
                                                         cfg.baseline ? &plan_re : nullptr};
  PipelineClock pclock(plan, comm.size());
  auto stage = [&](PipelineClock::Stage s, const char* name, const std::string& out,
                   const std::vector<std::string>& extra, int (*fn)(const RunConfig&)) {
    pclock.begin(s);
    const int64_t planned = pclock.planned_steps(s);  // known once a stage has reported the dataset's size
    say(str(name, " → ", out, path_exists(out + "/metrics.jsonl") ? " (resuming)" : "", "  (",
            planned > 0 ? str(planned, " steps planned; ") : std::string(), "pipeline elapsed ",
            human_duration(seconds_since(t0)), ")"));
    const RunConfig c = stage_config(name, stage_args(args, out, extra));
    return fn(c);
  };
  if (comm.root()) {
    // the folder and the pipeline's own record (stages keep their own locks)
    prepare_out_dir(D, true);
    std::ofstream(D + "/pipeline.cfg") << cfg.resolved;
  }
  comm.barrier();

  int rc = stage(PipelineClock::kPretrain, "pretrain", D + "/pretrain", {}, run_pretrain);
  if (rc) return rc;
  rc = stage(PipelineClock::kSearch, "search", D + "/search", {"--init", D + "/pretrain"}, run_search);
  if (rc) return rc;
  if (!path_exists(D + "/arch.json")) {
    say("derive → " + D + "/arch.json");
    rc = derive_on_root(D + "/search", D + "/arch.json", D + "/arch.png");
    if (rc) return rc;
  }
  const Architecture found = Architecture::from_json(read_text(D + "/arch.json"), D + "/arch.json");
  rc = stage(PipelineClock::kRetrain, "retrain", D + "/retrain", {"--arch", D + "/arch.json"}, run_retrain);
  if (rc) return rc;
  RunConfig ec = stage_config("eval", eval_args(args, D + "/retrain"));
  const EvalSummary fe = evaluate_network_file(ec);

  EvalSummary be;
  bool have_baseline = false;
  if (cfg.baseline) {
    // the hand-made design at the found architecture's retrain MACs, same budget
    const double target = fe.macs;
    rc = stage(PipelineClock::kBaseline, "retrain", D + "/baseline",
               {"--arch", "baseline", "--retrain.target-macs", fmt("%.0f", target)}, run_retrain);
    if (rc) return rc;
    RunConfig bc = stage_config("eval", eval_args(args, D + "/baseline"));
    be = evaluate_network_file(bc);
    have_baseline = true;
  }

  if (comm.root()) {
    const std::string sf = final_metrics(D + "/search");
    const Architecture retrained =
        Architecture::from_json(read_text(D + "/retrain/arch.json"), D + "/retrain/arch.json");
    std::ostringstream r;
    r << "# dsonas pipeline report\n\n"
      << "Configuration: `" << (cfg.config_file.empty() ? "(command line)" : cfg.config_file) << "`, " << comm.size()
      << " rank" << (comm.size() > 1 ? "s" : "") << ", dataset " << cfg.dataset << ".\n\n"
      << "## Found architecture\n\n![architecture](arch.png)\n\n"
      << "(`arch.json`, `arch.dot`; derived from `search/model.h5`.)\n\n"
      << "- search: " << static_cast<int64_t>(json_number(sf, "zero_lambda")) << " of "
      << static_cast<int64_t>(json_number(sf, "total_lambda")) << " λ exactly zero, "
      << static_cast<int64_t>(json_number(sf, "live_ops")) << " live ops, supergraph validation accuracy "
      << pct(json_number(sf, "val_acc")) << "\n"
      << "- survivors per op type:";
    const std::vector<int64_t> per = found.survivors_per_type();
    for (size_t j = 0; j < per.size(); ++j) r << (j ? ", " : " ") << op_name(found.space().ops[j]) << " " << per[j];
    r << "\n";
    for (const std::string& w : found.warnings()) r << "- warning: " << w << "\n";
    r << "\n## Retrained from scratch (test set)\n\n"
      << "| network | width | MACs | parameters | top-1 | top-5 |\n|---|---:|---:|---:|---:|---:|\n"
      << "| found (DSO-NAS) | " << retrained.space().stem_channels << " | " << fmt("%.2fM", fe.macs / 1e6) << " | "
      << fmt("%.3fM", fe.params / 1e6) << " | " << pct(fe.top1) << " | " << pct(fe.top5) << " |\n";
    if (have_baseline) {
      const Architecture base =
          Architecture::from_json(read_text(D + "/baseline/arch.json"), D + "/baseline/arch.json");
      r << "| hand-made baseline (" << cfg.baseline_op << " chains) | " << base.space().stem_channels << " | "
        << fmt("%.2fM", be.macs / 1e6) << " | " << fmt("%.3fM", be.params / 1e6) << " | " << pct(be.top1) << " | "
        << pct(be.top5) << " |\n\n"
        << (fe.top1 > be.top1
                ? "The searched architecture beats the hand-made baseline at equal MACs by "
                : "The searched architecture does NOT beat the hand-made baseline at equal MACs (difference ")
        << fmt("%+.2f", 100 * (fe.top1 - be.top1)) << " points" << (fe.top1 > be.top1 ? "" : ")") << ".\n\n"
        << margin_note(cfg, 100 * (fe.top1 - be.top1)) << "\n";
    }
    r << "\nPer-class accuracy and confusion matrices: `retrain/eval_test/`"
      << (have_baseline ? ", `baseline/eval_test/`" : "")
      << ".  Total wall time of this invocation: " << fmt("%.0f", seconds_since(t0)) << " s.\n";
    const std::string text = r.str();
    write_file_atomically(D + "/report.md", text.data(), text.size());
    std::cout << "pipeline done: found architecture " << pct(fe.top1) << " test accuracy, "
              << fmt("%.2fM", fe.macs / 1e6) << " MACs, " << fmt("%.3fM", fe.params / 1e6) << " parameters";
    if (have_baseline)
      std::cout << " (hand-made baseline at equal MACs: " << pct(be.top1) << ")\n  "
                << margin_note(cfg, 100 * (fe.top1 - be.top1));
    std::cout << "\n  picture " << D << "/arch.png, report " << D << "/report.md" << std::endl;
  }
  comm.barrier();
  return kExitOk;
}

}  // namespace dsonas
