// config.hpp — every option of every command, in one registry.
//
// Options come from the command line or an INI config file (Boost.Program_options,
// `[section]` groups: `[space] preset = fmnist` is the option `--space.preset`);
// the command line wins.  An unknown option, a malformed value or a value out of
// range fails with exit 2 and one line naming the option (and the file).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "dsonas/model/search_space.hpp"

namespace dsonas {

struct RunConfig {
  std::string command;      // pretrain | search | bench
  std::string config_file;  // --config
  std::string out;          // --out
  std::string init;         // --init (search: a pretrain run folder or model file)
  std::string device = "cpu";
  std::string gpu_math = "fp32";  // --gpu-math: fp32 | tf32 | bf16 (cuda only)
  uint64_t seed = 1;
  int threads = 0;        // 0: all cores
  int64_t max_steps = 0;  // 0: no limit (epochs decide)
  double epochs = 1;
  int log_every = 20;
  bool progress = true;          // live line on a TTY
  int64_t checkpoint_every = 0;  // steps; 0: only at the end of the stage and on signals
  bool resume = false;
  double checkpoint_secs = 0;     // also checkpoint when this many seconds passed (0 = off)
  int64_t keep_last = 3;          // retention: newest checkpoints kept (0 = all)
  int64_t keep_every = 0;         // retention: also keep steps that are multiples of this
  std::string deadline;           // +SECONDS or epoch seconds; else SLURM_JOB_END_TIME
  double deadline_margin = 120;   // seconds kept free before the deadline
  int64_t trajectory_every = 10;  // search: λ trajectory record every N steps (0 = off)
  bool strict_resume = false;
  bool allow_world_size_change = false;  // resume a checkpoint of another world size (re-shard)
  int64_t lambda_check_every = 100;      // multi-rank: λ hash compared every N steps
  double bucket_mb = 4;                  // multi-rank: gradient bucket size
  std::string recompute = "auto";        // none | blocks | auto (blocks when activations > 2 GiB)

  SearchSpace space;

  // [data]
  std::string dataset = "fmnist";  // fmnist | cifar10 | synthetic
  std::string data_dir;            // default: Debian's dataset-fashion-mnist folder
  int batch = 64;                  // per rank
  double split = 0.5;              // W-half fraction of the training set
  int pad = -1;                    // pad-crop augmentation (0 = off, -1 = the dataset's)
  bool flip = true;
  int synthetic_train = 2048, synthetic_test = 512;
  bool prefetch = true;
  int workers = 4;       // imagenet: decoding threads per rank
  int eval_batches = 0;  // 0: whole validation set

  // [optim]
  double lr = 0.1;
  double momentum = 0.9;
  double wd = 1e-4;
  std::string lr_schedule = "constant";
  double clip = 2.0;  // search only (docs/method.md §4.1); 0 = off

  // [search]
  double gamma = 0.001;
  double lambda_lr_mult = 1.0;
  std::string penalty = "none";  // none | adaptive-flops | adaptive-flops-exact | adaptive-mac
  int w_steps = 1, lambda_steps = 1;
  double target_zero_frac = 0;  // 0 = off: stop when this fraction of λ is zero
  int64_t stable_steps = 0;     // 0 = off: stop when the live mask has not changed for this many λ-steps
  std::string prune = "step";   // step | reference (optim/lambda_step.hpp)
  int prune_dense_epochs = 5, prune_every = 5;
  int latency_iters = 100, latency_warmup = 10;  // adaptive-latency timing (§5.3)
  int bn_reestimate = 512;                       // images for BN re-estimation before evaluations (0 = off)

  // retrain / eval / pipeline
  std::string arch;     // --arch: architecture JSON or "baseline"
  std::string run_dir;  // eval: --run
  std::string eval_data = "test";
  std::string logits_file;  // eval: --logits FILE (io/logits_file.hpp)
  int logits_count = 64;    // eval: --logits-count K, the first K images of the set
  int retrain_width = 0;    // 0: the architecture's own width
  double target_macs = 0, target_params = 0;
  double dropout = 0, drop_path = 0, label_smoothing = 0, aux_weight = 0.4;
  bool aux_head = false;
  int cutout = 0;
  bool baseline = true;  // pipeline: also retrain the hand-made baseline
  std::string baseline_op = "sep3";

  // [study]
  int study_random = 4, study_seeds = 3, study_search_seeds = 1, study_task = -1;
  double study_tolerance = 0.02, study_reference_sd = 0;
  int64_t study_random_seed = 1;
  std::string study_reference;
  bool study_prepare = false, study_report = false, study_plan = false;

  // [bench]
  int bench_steps = 7;
  std::string bench_json;
  bool bench_profile = false;

  /// The resolved configuration as INI text (printed by rank 0, stored in files).
  std::string resolved;
  /// The options given on the command line, in order, apart from --config,
  /// --out and --help: {name, what was typed} (e.g. {"search.prune",
  /// "--search.prune reference"}): what a report says was set on top of the
  /// configuration file.
  std::vector<std::pair<std::string, std::string>> cli_settings;
};

/// Parses argv after the command word.  `--help` prints the options and exits 0.
RunConfig parse_config(const std::string& command, int argc, char** argv);
/// Refuses (exit 2, naming `where`) option text that Boost.Program_options cannot
/// report an error about: its messages substitute placeholders such as
/// %original_token% and loop forever when the substituted text contains the
/// placeholder again (found by fuzzing; Boost 1.74).  Every Boost parse of user
/// text (argv tokens, config files) is checked by this first.
void check_option_text(const std::string& text, const std::string& where);
/// "section.key" → value of a resolved-configuration text (INI).
std::map<std::string, std::string> ini_map(const std::string& text);
/// Help text for a command.
std::string config_help(const std::string& command);

}  // namespace dsonas
