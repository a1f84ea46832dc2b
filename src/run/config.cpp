// config.cpp — the option registry (Boost.Program_options) and validation.
#include "dsonas/run/config.hpp"

#include <sys/stat.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/optim/lambda_step.hpp"
#include "dsonas/optim/lr_schedule.hpp"
#include "dsonas/optim/penalty.hpp"

namespace po = boost::program_options;

namespace dsonas {
namespace {

std::vector<int> parse_int_list(const std::string& s, const std::string& field) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    try {
      size_t used = 0;
      int v = std::stoi(tok, &used);
      if (used != tok.size()) throw std::invalid_argument(tok);
      out.push_back(v);
    } catch (const std::exception&) {
      fail_usage(str(field, ": '", s, "' is not a comma-separated list of integers"));
    }
  }
  if (out.empty()) fail_usage(str(field, ": empty list"));
  return out;
}

std::string join(const std::vector<int>& v) {
  std::string r;
  for (size_t i = 0; i < v.size(); ++i) r += (i ? "," : "") + std::to_string(v[i]);
  return r;
}

struct Registry {
  po::options_description all{"dsonas options"};
  po::options_description general{"General"}, space{"[space] search space"}, data{"[data]"}, optim{"[optim]"},
      pretrain{"[pretrain]"}, search{"[search]"}, retrain{"[retrain] (retrain, eval, pipeline)"}, bench{"[bench]"},
      study{"[study] (study, pipeline report)"};

  explicit Registry(RunConfig& c) {
    add_general(c);
    add_space_data(c);
    add_training(c);
    add_retrain(c);
    add_study_bench(c);
    all.add(general).add(space).add(data).add(optim).add(pretrain).add(search).add(retrain).add(study).add(bench);
  }

 private:
  /// the commands' own options and the run-time ones
  void add_general(RunConfig& c) {
    general.add_options()("help,h", "print this help and exit")(
        "config", po::value<std::string>(&c.config_file),
        "INI config file (e.g. jobs/fmnist.cfg); the command line wins")(
        "out", po::value<std::string>(&c.out), "output folder (created; metrics.jsonl, model.h5, log.rank0)")(
        "init", po::value<std::string>(&c.init), "search: start from this pretrain run folder (or its model.h5)")(
        "arch", po::value<std::string>(&c.arch),
        "retrain: the architecture JSON (dsonas derive), or 'baseline' for the hand-made design")(
        "run", po::value<std::string>(&c.run_dir), "eval: a retrain run folder (its network.h5) or a network file")(
        "data", po::value<std::string>(&c.eval_data)->default_value("test"), "eval: test | train")(
        "logits", po::value<std::string>(&c.logits_file),
        "eval: also write the first --logits-count images of the set (inputs in [0, 1] and normalised) and "
        "dsonas's logits for them to this HDF5 file (to compare an exported network, dsonas export)")(
        "logits-count", po::value<int>(&c.logits_count)->default_value(64), "eval: images in the --logits file")(
        "device", po::value<std::string>(&c.device)->default_value("cpu"), "cpu | cuda")(
        "gpu-math", po::value<std::string>(&c.gpu_math)->default_value("fp32"),
        "cuda: fp32 | tf32 (TF32 tensor cores in cuBLAS and cuDNN) | bf16 (bfloat16 tensor-core GEMMs, TF32 "
        "convolutions); the CPU is fp32")("seed", po::value<uint64_t>(&c.seed)->default_value(1),
                                          "random seed (weights, data order, augmentation)")(
        "threads", po::value<int>(&c.threads)->default_value(0), "CPU threads per rank (0 = all cores)")(
        "max-steps", po::value<int64_t>(&c.max_steps)->default_value(0), "step budget; when > 0 it replaces --epochs")(
        "epochs", po::value<double>(&c.epochs)->default_value(1),
        "epochs over the W-half (fractions allowed); used when --max-steps is 0")(
        "log-every", po::value<int>(&c.log_every)->default_value(20), "steps between metrics lines")(
        "progress", po::value<bool>(&c.progress)->default_value(true), "live progress line when stderr is a TTY")(
        "checkpoint-every", po::value<int64_t>(&c.checkpoint_every)->default_value(0),
        "write DIR/ckpt/step_N.h5 every N steps (0: only at the end of the stage and on SIGUSR1/SIGTERM)")(
        "trajectory-every", po::value<int64_t>(&c.trajectory_every)->default_value(10),
        "search: append λ and loss to DIR/lambda_trajectory.h5 every N steps (0 = off)")(
        "checkpoint-secs", po::value<double>(&c.checkpoint_secs)->default_value(0),
        "also checkpoint every S seconds (0 = off)")("keep-last", po::value<int64_t>(&c.keep_last)->default_value(3),
                                                     "keep the newest K checkpoints (0 = all)")(
        "keep-every", po::value<int64_t>(&c.keep_every)->default_value(0),
        "also keep checkpoints whose step is a multiple of M")(
        "deadline", po::value<std::string>(&c.deadline),
        "+SECONDS or seconds since the epoch (default: SLURM_JOB_END_TIME): checkpoint and exit 75 before it")(
        "deadline-margin", po::value<double>(&c.deadline_margin)->default_value(120),
        "seconds kept free before the deadline")(
        "resume", po::bool_switch(&c.resume),
        "continue from the newest usable checkpoint in DIR/ckpt (or start if none)")(
        "strict-resume", po::bool_switch(&c.strict_resume),
        "with --resume: fail (exit 3) instead of falling back to an older checkpoint")(
        "allow-world-size-change", po::bool_switch(&c.allow_world_size_change),
        "with --resume: accept a checkpoint written by another number of ranks (re-shards the data; not "
        "bit-continuous)")("lambda-check-every", po::value<int64_t>(&c.lambda_check_every)->default_value(100),
                           "multi-rank search: compare a hash of λ across ranks every N steps (and at every "
                           "checkpoint; 0 = checkpoints only)")(
        "bucket-mb", po::value<double>(&c.bucket_mb)->default_value(4),
        "multi-rank: gradient reduction bucket size in MiB (reduced while the backward pass goes on)")(
        "recompute", po::value<std::string>(&c.recompute)->default_value("auto"),
        "none | blocks (keep only block inputs, recompute in backward) | auto (blocks when activations would exceed 2 "
        "GiB)");
  }
  /// [space], [data]
  void add_space_data(RunConfig& c) {
    space.add_options()("space.preset", po::value<std::string>()->default_value("fmnist"),
                        "fmnist | bench_fmnist | cifar10 | imagenet | tiny")("space.levels", po::value<int>(),
                                                                             "L: levels per block (preset: 4)")(
        "space.ops", po::value<std::string>(), "ops per level, comma-separated from sep3,sep5,max3,avg3")(
        "space.input", po::value<std::string>(), "input CxHxW, e.g. 1x28x28")(
        "space.classes", po::value<int>(), "number of classes")("space.stem-channels", po::value<int>(),
                                                                "C: stem output channels (= stage-1 width)")(
        "space.units", po::value<std::string>(), "normal units per stage, e.g. 2,2,2")(
        "space.widths", po::value<std::string>(), "width per stage, e.g. 16,32,64")(
        "space.share", po::value<bool>(), "share λ across all normal blocks (docs/method.md §3)");
    data.add_options()("data.dataset", po::value<std::string>(&c.dataset)->default_value("fmnist"),
                       "fmnist | cifar10 | imagenet (HDF5 shards of dsonas pack) | synthetic")(
        "data.dir", po::value<std::string>(&c.data_dir)->default_value("/usr/share/datasets/fashion-mnist"),
        "fmnist: folder of the gzipped IDX files; cifar10: the cifar-10-batches-bin folder (required)")(
        "data.batch", po::value<int>(&c.batch)->default_value(64), "batch per rank")(
        "data.split", po::value<double>(&c.split)->default_value(0.5), "fraction of the training set in the W-half")(
        "data.pad", po::value<int>(&c.pad)->default_value(-1),
        "pad-and-random-crop pixels (0 = off; -1 = the dataset's: fmnist 2, cifar10 4 with value 127)")(
        "data.flip", po::value<bool>(&c.flip)->default_value(true), "random horizontal flip")(
        "data.synthetic-train", po::value<int>(&c.synthetic_train)->default_value(2048), "synthetic: training images")(
        "data.synthetic-test", po::value<int>(&c.synthetic_test)->default_value(512), "synthetic: test images")(
        "data.prefetch", po::value<bool>(&c.prefetch)->default_value(true), "prepare batches in a background thread")(
        "data.workers", po::value<int>(&c.workers)->default_value(4),
        "imagenet: JPEG decoding threads per rank (≈ img/s ÷ 670 per thread)")(
        "data.eval-batches", po::value<int>(&c.eval_batches)->default_value(0), "batches per validation (0 = all)");
  }
  /// [optim], [pretrain], [search]
  void add_training(RunConfig& c) {
    optim.add_options()("optim.lr", po::value<double>(&c.lr)->default_value(0.1), "base learning rate")(
        "optim.momentum", po::value<double>(&c.momentum)->default_value(0.9), "NAG momentum (weights and λ)")(
        "optim.wd", po::value<double>(&c.wd)->default_value(1e-4), "weight decay (docs/method.md §4.2 rules)")(
        "optim.lr-schedule", po::value<std::string>(&c.lr_schedule)->default_value("constant"),
        "constant | step:E1,E2,... (×0.1 at these epochs) | cosine[:T0[,Tmult]] | warmup-linear[:W]")(
        "optim.clip", po::value<double>(&c.clip)->default_value(2.0),
        "search: clip gradients to [-clip, clip] (0 = off)");
    pretrain.add_options()("pretrain.epochs", po::value<double>(), "pretrain: epochs (when --epochs is not given)")(
        "pretrain.max-steps", po::value<int64_t>(), "pretrain: step limit (when --max-steps is not given)");
    search.add_options()("search.epochs", po::value<double>(), "search: epochs (when --epochs is not given)")(
        "search.max-steps", po::value<int64_t>(), "search: step limit (when --max-steps is not given)")(
        "search.gamma", po::value<double>(&c.gamma)->default_value(0.001), "γ: L1 strength on λ")(
        "search.lambda-lr-mult", po::value<double>(&c.lambda_lr_mult)->default_value(1.0), "λ lr = lr × this")(
        "search.penalty", po::value<std::string>(&c.penalty)->default_value("none"),
        "none | adaptive-flops | adaptive-flops-exact | adaptive-mac | adaptive-latency (docs/method.md §5)")(
        "search.latency-iters", po::value<int>(&c.latency_iters)->default_value(100),
        "adaptive-latency: forwards timed per network (§5.3: 100)")(
        "search.latency-warmup", po::value<int>(&c.latency_warmup)->default_value(10),
        "adaptive-latency: of which untimed warm-up forwards (§5.3: 10)")(
        "search.w-steps", po::value<int>(&c.w_steps)->default_value(1), "weight steps per cycle")(
        "search.lambda-steps", po::value<int>(&c.lambda_steps)->default_value(1), "λ steps per cycle")(
        "search.target-zero-frac", po::value<double>(&c.target_zero_frac)->default_value(0),
        "stop once this fraction of λ is exactly 0 (0 = off)")(
        "search.stable-steps", po::value<int64_t>(&c.stable_steps)->default_value(0),
        "stop once the live mask is unchanged for this many λ-steps (0 = off)")(
        "search.prune", po::value<std::string>(&c.prune)->default_value("step"),
        "step: §6.1 after every λ-step (a λ at 0 leaves at once) | reference: the official schedule (docs/method.md "
        "§6.2): dense for search.prune-dense-epochs epochs, then a rebuild every search.prune-every epochs; between "
        "rebuilds a λ at 0 stays wired and may revive")(
        "search.prune-dense-epochs", po::value<int>(&c.prune_dense_epochs)->default_value(5),
        "reference schedule: epochs on the dense supergraph before the first rebuild (CIFAR: 5)")(
        "search.prune-every", po::value<int>(&c.prune_every)->default_value(5),
        "reference schedule: epochs between rebuilds (CIFAR: 5, ImageNet: 1)")(
        "search.bn-reestimate", po::value<int>(&c.bn_reestimate)->default_value(512),
        "images used to re-estimate BN statistics before each evaluation (0 = off)");
  }
  /// [retrain]
  void add_retrain(RunConfig& c) {
    retrain.add_options()("retrain.epochs", po::value<double>(), "retrain: epochs (when --epochs is not given)")(
        "retrain.max-steps", po::value<int64_t>(), "retrain: step limit (when --max-steps is not given)")(
        "retrain.lr", po::value<double>(), "retrain: base learning rate (default optim.lr)")(
        "retrain.lr-schedule", po::value<std::string>(),
        "retrain: lr schedule (default optim.lr-schedule), e.g. cosine:600,1")(
        "retrain.wd", po::value<double>(), "retrain: weight decay, BN γ included (default optim.wd)")(
        "retrain.batch", po::value<int>(), "retrain: per-rank batch (default data.batch)")(
        "retrain.width", po::value<int>(&c.retrain_width)->default_value(0),
        "stem width C of the retrained network (0: the architecture's own)")(
        "retrain.target-macs", po::value<double>(&c.target_macs)->default_value(0),
        "pick the width whose MACs are closest to this (0 = off)")(
        "retrain.target-params", po::value<double>(&c.target_params)->default_value(0),
        "pick the width whose parameter count is closest to this (0 = off)")(
        "retrain.dropout", po::value<double>(&c.dropout)->default_value(0),
        "dropout before the classifier (docs/method.md §2.4)")("retrain.drop-path",
                                                               po::value<double>(&c.drop_path)->default_value(0),
                                                               "drop-path rate of the deepest block (§2.4)")(
        "retrain.aux-head", po::value<bool>(&c.aux_head)->default_value(false),
        "auxiliary head on the last reduction (§2.3)")(
        "retrain.aux-weight", po::value<double>(&c.aux_weight)->default_value(0.4), "its weight in the loss")(
        "retrain.label-smoothing", po::value<double>(&c.label_smoothing)->default_value(0), "label smoothing ε")(
        "retrain.cutout", po::value<int>(&c.cutout)->default_value(0),
        "cutout square side in pixels (0 = off; CIFAR-10: 16)")(
        "retrain.baseline", po::value<bool>(&c.baseline)->default_value(true),
        "pipeline: also retrain the hand-made baseline at the found architecture's MACs")(
        "retrain.baseline-op", po::value<std::string>(&c.baseline_op)->default_value("sep3"),
        "the baseline's op (a chain of it in every block)");
  }
  /// [study], [bench]
  void add_study_bench(RunConfig& c) {
    study.add_options()("study.random", po::value<int>(&c.study_random)->default_value(4),
                        "study: random architectures of the found one's cost (dsonas derive --random)")(
        "study.seeds", po::value<int>(&c.study_seeds)->default_value(3), "study: retrain seeds per architecture")(
        "study.search-seeds", po::value<int>(&c.study_search_seeds)->default_value(1),
        "study: searches (seeds seed, seed+1, …), each found architecture retrained too")(
        "study.tolerance", po::value<double>(&c.study_tolerance)->default_value(0.02),
        "study: the random architectures' MACs within ± this fraction of the found one's")(
        "study.random-seed", po::value<int64_t>(&c.study_random_seed)->default_value(1),
        "study: stream of the random architectures")(
        "study.reference-sd", po::value<double>(&c.study_reference_sd)->default_value(0),
        "pipeline report: seed-to-seed standard deviation (points of top-1) of this config's retrain as a study "
        "measured it (0 = unknown)")("study.reference", po::value<std::string>(&c.study_reference)->default_value(""),
                                     "pipeline report: where that measurement is (e.g. docs/results/...)")(
        "study.task", po::value<int>(&c.study_task)->default_value(-1),
        "study: run retrain task N (0-based, see --study.plan) only: one Slurm array task")(
        "study.prepare", po::bool_switch(&c.study_prepare),
        "study: searches, architectures and the task plan only, no retrain")(
        "study.report", po::bool_switch(&c.study_report), "study: the report only, from the finished tasks")(
        "study.plan", po::bool_switch(&c.study_plan), "study: print the task plan (one line per retrain) and exit");
    bench.add_options()("bench.steps", po::value<int>(&c.bench_steps)->default_value(7),
                        "timed search steps (after 2 warm-up steps); 0: report the model's sizes only")(
        "bench.json", po::value<std::string>(&c.bench_json), "write the results as JSON here")(
        "bench.profile", po::value<bool>(&c.bench_profile)->default_value(false), "print time per backend primitive");
  }
};

void check(bool ok, const std::string& field, const std::string& why) {
  if (!ok) fail_usage(str(field, ": ", why));
}

/// The search space: the preset, then the [space] overrides.
SearchSpace space_from(const po::variables_map& vm) {
  SearchSpace s = SearchSpace::preset_named(vm["space.preset"].as<std::string>());
  if (vm.count("space.levels")) s.levels = vm["space.levels"].as<int>();
  if (vm.count("space.ops")) {
    s.ops.clear();
    std::stringstream ss(vm["space.ops"].as<std::string>());
    std::string tok;
    while (std::getline(ss, tok, ',')) s.ops.push_back(parse_op(tok, "space.ops"));
  }
  if (vm.count("space.input")) {
    const std::string v = vm["space.input"].as<std::string>();
    int a = 0, b = 0, d = 0;
    char x1 = 0, x2 = 0;
    std::stringstream ss(v);
    if (!(ss >> a >> x1 >> b >> x2 >> d) || x1 != 'x' || x2 != 'x')
      fail_usage(str("space.input: '", v, "' is not CxHxW"));
    s.in_channels = a;
    s.in_height = b;
    s.in_width = d;
  }
  if (vm.count("space.classes")) s.classes = vm["space.classes"].as<int>();
  if (vm.count("space.stem-channels")) s.stem_channels = vm["space.stem-channels"].as<int>();
  if (vm.count("space.units")) s.normal_units = parse_int_list(vm["space.units"].as<std::string>(), "space.units");
  if (vm.count("space.widths")) s.widths = parse_int_list(vm["space.widths"].as<std::string>(), "space.widths");
  if (vm.count("space.share")) s.share = vm["space.share"].as<bool>();
  s.validate();
  if (s.widths[0] != s.stem_channels)
    fail_usage(str("space.widths: stage-1 width ", s.widths[0], " must equal space.stem-channels ", s.stem_channels));

  return s;
}

/// Every value's range and the combinations that cannot work: exit 2 naming the field.
void check_values(const RunConfig& c, const po::variables_map& vm, const std::string& command) {
  const SearchSpace& s = c.space;
  check(c.device == "cpu" || c.device == "cuda", "--device", str("'", c.device, "' (expected cpu or cuda)"));
  gpu_math_from(c.gpu_math, "--gpu-math");  // a bad name is a usage error naming the field
  check(c.gpu_math == "fp32" || c.device == "cuda", "--gpu-math",
        str(c.gpu_math, " needs --device cuda (the CPU computes in fp32)"));
  check(c.threads >= 0, "--threads", "must be >= 0");
  check(c.recompute == "none" || c.recompute == "blocks" || c.recompute == "auto", "--recompute",
        str("'", c.recompute, "' (expected none, blocks or auto)"));
  check(c.max_steps >= 0, "--max-steps", "must be >= 0");
  check(c.checkpoint_every >= 0, "--checkpoint-every", "must be >= 0");
  check(c.trajectory_every >= 0, "--trajectory-every", "must be >= 0");
  check(c.lambda_check_every >= 0, "--lambda-check-every", "must be >= 0");
  check(c.bucket_mb > 0 && c.bucket_mb <= 1024, "--bucket-mb", "must be in (0, 1024]");
  check(c.checkpoint_secs >= 0, "--checkpoint-secs", "must be >= 0");
  check(c.keep_last >= 0, "--keep-last", "must be >= 0");
  check(c.keep_every >= 0, "--keep-every", "must be >= 0");
  check(c.deadline_margin >= 0, "--deadline-margin", "must be >= 0");
  check(c.epochs > 0 && std::isfinite(c.epochs), "--epochs", str("must be > 0 (got ", c.epochs, ")"));
  check(c.log_every >= 1, "--log-every", "must be >= 1");
  check(c.dataset == "fmnist" || c.dataset == "cifar10" || c.dataset == "synthetic" || c.dataset == "imagenet",
        "data.dataset", str("'", c.dataset, "' (expected fmnist, cifar10, imagenet or synthetic)"));
  if (c.dataset == "imagenet" && vm["data.dir"].defaulted())
    fail_usage("data.dir: ImageNet is read from the HDF5 shards of `dsonas pack`; point data.dir at its output folder");
  check(c.workers >= 0 && c.workers <= 256, "data.workers", "must be in 0..256");
  if (c.dataset == "cifar10" && vm["data.dir"].defaulted())
    fail_usage(
        "data.dir: CIFAR-10 is not shipped with Debian; download the binary version and point data.dir at its "
        "cifar-10-batches-bin folder");
  check(c.batch >= 1, "data.batch", str("must be >= 1 (got ", c.batch, ")"));
  check(c.split > 0 && c.split < 1, "data.split", str("must be in (0,1) (got ", c.split, ")"));
  check(c.pad >= -1 && c.pad < s.in_height, "data.pad", str("must be -1 or in [0, H) (got ", c.pad, ")"));
  check(c.synthetic_train >= 2 && c.synthetic_test >= 1, "data.synthetic-train", "too small");
  check(c.eval_batches >= 0, "data.eval-batches", "must be >= 0");
  check(c.lr > 0 && std::isfinite(c.lr), "optim.lr", str("must be > 0 (got ", c.lr, ")"));
  check(c.momentum >= 0 && c.momentum < 1, "optim.momentum", str("must be in [0,1) (got ", c.momentum, ")"));
  check(c.wd >= 0, "optim.wd", str("must be >= 0 (got ", c.wd, ")"));
  check(c.clip >= 0, "optim.clip", str("must be >= 0 (got ", c.clip, ")"));
  check(c.gamma >= 0, "search.gamma", str("must be >= 0 (got ", c.gamma, ")"));
  check(c.lambda_lr_mult > 0, "search.lambda-lr-mult", str("must be > 0 (got ", c.lambda_lr_mult, ")"));
  parse_penalty_mode(c.penalty, "search.penalty");
  check(c.w_steps >= 1, "search.w-steps", "must be >= 1");
  check(c.lambda_steps >= 1, "search.lambda-steps", "must be >= 1");
  check(c.target_zero_frac >= 0 && c.target_zero_frac < 1, "search.target-zero-frac", "must be in [0,1)");
  check(c.stable_steps >= 0, "search.stable-steps", "must be >= 0");
  check(c.study_random >= 0 && c.study_random <= 999, "study.random", "must be in [0, 999]");
  check(c.study_seeds >= 1 && c.study_seeds <= 999, "study.seeds", "must be in [1, 999]");
  check(c.study_search_seeds >= 1 && c.study_search_seeds <= 99, "study.search-seeds", "must be in [1, 99]");
  check(c.study_tolerance > 0 && c.study_tolerance < 1, "study.tolerance", "must be in (0, 1)");
  check(c.study_reference_sd >= 0, "study.reference-sd", "must be >= 0");
  PruneSchedule::from(c.prune, c.prune_dense_epochs, c.prune_every, "search.prune");
  check(c.bn_reestimate >= 0, "search.bn-reestimate", "must be >= 0");
  check(c.latency_iters > c.latency_warmup && c.latency_warmup >= 0, "search.latency-iters",
        "must exceed search.latency-warmup (>= 0)");
  if (c.penalty == "adaptive-latency" && !c.space.share)
    fail_usage("search.penalty: adaptive-latency needs the share space (space.share = true, docs/method.md §5.3)");
  {
    LrParams lp;
    lp.base_lr = c.lr;
    make_lr_schedule(c.lr_schedule, lp);  // validates optim.lr-schedule
  }
  check(c.bench_steps >= 0, "bench.steps", "must be >= 0 (0: build the model and report its sizes only)");
  if (command != "bench" && command != "validate" && command != "eval")
    check(!c.out.empty(), "--out", "an output folder is required");
  if (command == "retrain")
    check(!c.arch.empty(), "--arch", "an architecture JSON (dsonas derive) or 'baseline' is required");
  if (command == "eval") check(!c.run_dir.empty(), "--run", "a retrain run folder or network file is required");
  check(c.eval_data == "test" || c.eval_data == "train", "--data", str("'", c.eval_data, "' (expected test or train)"));
  check(c.logits_count >= 1 && c.logits_count <= 1000000, "--logits-count", "must be in [1, 1000000]");
  check(c.retrain_width >= 0, "retrain.width", "must be >= 0");
  check(c.target_macs >= 0 && c.target_params >= 0, "retrain.target-macs", "targets must be >= 0");
  check(!(c.target_macs > 0 && c.target_params > 0), "retrain.target-params",
        "give target-macs or target-params, not both");
  check(c.cutout >= 0, "retrain.cutout", "must be >= 0");
  check(c.aux_weight >= 0, "retrain.aux-weight", "must be >= 0");
  parse_op(c.baseline_op, "retrain.baseline-op");
}

/// The resolved configuration as INI text (config.resolved.cfg, the files' `config`).
std::string resolved_text(const RunConfig& c, const std::string& command) {
  const SearchSpace& s = c.space;
  std::ostringstream os;
  os << "# resolved configuration (dsonas " << command << ")\n"
     << "seed = " << c.seed << "\ndevice = " << c.device << "\ngpu-math = " << c.gpu_math << "\nthreads = " << c.threads
     << "\nrecompute = " << c.recompute << "\ncheckpoint-every = " << c.checkpoint_every
     << "\ncheckpoint-secs = " << c.checkpoint_secs << "\nkeep-last = " << c.keep_last
     << "\nkeep-every = " << c.keep_every << "\ntrajectory-every = " << c.trajectory_every
     << "\nlambda-check-every = " << c.lambda_check_every << "\nbucket-mb = " << c.bucket_mb
     << "\ndeadline-margin = " << c.deadline_margin << "\nmax-steps = " << c.max_steps << "\nepochs = " << c.epochs
     << "\nlog-every = " << c.log_every << "\n\n[space]\npreset = " << s.preset << "\nlevels = " << s.levels
     << "\nops = ";
  for (size_t i = 0; i < s.ops.size(); ++i) os << (i ? "," : "") << op_name(s.ops[i]);
  os << "\ninput = " << s.in_channels << "x" << s.in_height << "x" << s.in_width << "\nclasses = " << s.classes
     << "\nstem-channels = " << s.stem_channels << "\nunits = " << join(s.normal_units)
     << "\nwidths = " << join(s.widths) << "\nshare = " << (s.share ? "true" : "false")
     << "\n\n[data]\ndataset = " << c.dataset << "\ndir = " << c.data_dir << "\nbatch = " << c.batch
     << "\nsplit = " << c.split << "\npad = " << c.pad << "\nflip = " << (c.flip ? "true" : "false")
     << "\nsynthetic-train = " << c.synthetic_train << "\nsynthetic-test = " << c.synthetic_test
     << "\n\n[optim]\nlr = " << c.lr << "\nmomentum = " << c.momentum << "\nwd = " << c.wd
     << "\nlr-schedule = " << c.lr_schedule << "\nclip = " << c.clip << "\n\n[search]\ngamma = " << c.gamma
     << "\nlambda-lr-mult = " << c.lambda_lr_mult << "\npenalty = " << c.penalty << "\nw-steps = " << c.w_steps
     << "\nlambda-steps = " << c.lambda_steps << "\ntarget-zero-frac = " << c.target_zero_frac
     << "\nstable-steps = " << c.stable_steps << "\nbn-reestimate = " << c.bn_reestimate
     << "\nlatency-iters = " << c.latency_iters << "\nlatency-warmup = " << c.latency_warmup << "\nprune = " << c.prune;
  if (c.prune == "reference")
    os << "\nprune-dense-epochs = " << c.prune_dense_epochs << "\nprune-every = " << c.prune_every;
  if (command == "retrain" || command == "eval" || command == "pipeline" || command == "study")
    os << "\n\n[retrain]\nwidth = " << c.retrain_width << "\ntarget-macs = " << c.target_macs
       << "\ntarget-params = " << c.target_params << "\ndropout = " << c.dropout << "\ndrop-path = " << c.drop_path
       << "\naux-head = " << (c.aux_head ? "true" : "false") << "\naux-weight = " << c.aux_weight
       << "\nlabel-smoothing = " << c.label_smoothing << "\ncutout = " << c.cutout
       << "\nbaseline = " << (c.baseline ? "true" : "false") << "\nbaseline-op = " << c.baseline_op;
  if (command == "study")
    os << "\n\n[study]\nrandom = " << c.study_random << "\nseeds = " << c.study_seeds
       << "\nsearch-seeds = " << c.study_search_seeds << "\ntolerance = " << c.study_tolerance
       << "\nrandom-seed = " << c.study_random_seed;
  os << "\n";
  return os.str();
}

}  // namespace

std::map<std::string, std::string> ini_map(const std::string& text) {
  std::map<std::string, std::string> m;
  std::stringstream ss(text);
  std::string line, section;
  while (std::getline(ss, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line.substr(1, line.find(']') - 1) + ".";
      continue;
    }
    const size_t e = line.find(" = ");
    if (e != std::string::npos) m[section + line.substr(0, e)] = line.substr(e + 3);
  }
  return m;
}

std::string config_help(const std::string& command) {
  RunConfig c;
  Registry r(c);
  std::ostringstream os;
  os << "usage: dsonas " << command << " [--config FILE] [options]\n" << r.all;
  return os.str();
}

void check_option_text(const std::string& text, const std::string& where) {
  for (const char* ph :
       {"%canonical_option%", "%prefix_option%", "%original_token%", "%option%", "%prefix%", "%value%"})
    if (text.find(ph) != std::string::npos)
      fail_usage(str(where, ": contains '", ph, "', which the option parser cannot report errors about"));
}

RunConfig parse_config(const std::string& command, int argc, char** argv) {
  RunConfig c;
  c.command = command;
  Registry r(c);
  po::variables_map vm;
  for (int i = 1; i < argc; ++i) check_option_text(argv[i], str("command line argument ", i));
  try {
    const po::parsed_options cl = po::command_line_parser(argc, argv).options(r.all).run();
    po::store(cl, vm);
    for (const po::option& o : cl.options) {
      if (o.string_key == "config" || o.string_key == "out" || o.string_key == "help") continue;
      std::string typed;
      for (const std::string& t : o.original_tokens) typed += (typed.empty() ? "" : " ") + t;
      c.cli_settings.emplace_back(o.string_key, typed);
    }
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) fail_usage(str("--config: cannot open ", path, ": ", std::strerror(errno)));
      if (!S_ISREG(st.st_mode)) fail_usage(str("--config: ", path, " is not a regular file"));
      std::ifstream file(path);
      if (!file) fail_usage(str("--config: cannot open ", path));
      const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
      check_option_text(text, path);
      std::istringstream in(text);
      try {
        po::store(po::parse_config_file(in, r.all, false), vm);
      } catch (const po::error& e) {
        fail_usage(str(path, ": ", e.what()));
      }
    }
    if (vm.count("help")) {
      std::cout << config_help(command);
      std::exit(0);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    fail_usage(e.what());
  }

  // per-stage budgets: [pretrain]/[search] epochs and max-steps, unless given directly
  if (command == "pretrain" || command == "search" || command == "retrain") {
    if (vm["epochs"].defaulted() && vm.count(command + ".epochs")) c.epochs = vm[command + ".epochs"].as<double>();
    if (vm["max-steps"].defaulted() && vm.count(command + ".max-steps"))
      c.max_steps = vm[command + ".max-steps"].as<int64_t>();
  }
  // retraining has its own optimiser settings (docs/method.md §7): [retrain] wins
  if (command == "retrain" || command == "eval") {
    if (vm.count("retrain.lr")) c.lr = vm["retrain.lr"].as<double>();
    if (vm.count("retrain.lr-schedule")) c.lr_schedule = vm["retrain.lr-schedule"].as<std::string>();
    if (vm.count("retrain.wd")) c.wd = vm["retrain.wd"].as<double>();
    if (vm.count("retrain.batch")) c.batch = vm["retrain.batch"].as<int>();
  }

  c.space = space_from(vm);
  check_values(c, vm, command);
  c.resolved = resolved_text(c, command);
  return c;
}

}  // namespace dsonas
