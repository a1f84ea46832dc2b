// train.cpp — pretrain and search loops, evaluation, metrics and the bench.
//
// Order of work in one search step (docs/design.md §3): batch from the W- or
// λ-loader (this rank's slice of the global batch) → Supergraph::train_step
// (W-step: weight gradients only; λ-step: λ gradients only) → finite check →
// sum over the ranks (W-steps: bucketed, overlapping the backward pass) → clip
// ±clip (search) → W: NAG on every trainable parameter; λ: γ_e from the penalty
// mode, APG-NAG, §6.1 pruning, plan rebuilt when the live mask changed.  Every
// rank does the same update on the same reduced gradient, so λ stay identical
// (hash-checked every --lambda-check-every steps and at every checkpoint).
#include "dsonas/run/train.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <map>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <iostream>
#include <memory>
#include <sstream>

#include "dsonas/backend/backend.hpp"
#include "dsonas/backend/profiling.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/fault.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/data/augment.hpp"
#include "dsonas/data/cifar.hpp"
#include "dsonas/data/dataset.hpp"
#include "dsonas/data/loader.hpp"
#include "dsonas/data/sampler.hpp"
#include "dsonas/dist/communicator.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "dsonas/io/model_file.hpp"
#include "dsonas/io/trajectory.hpp"
#include "dsonas/model/supergraph.hpp"
#include "dsonas/optim/lambda_step.hpp"
#include "dsonas/optim/latency.hpp"
#include "dsonas/optim/lr_schedule.hpp"
#include "dsonas/optim/optimizer.hpp"
#include "dsonas/optim/penalty.hpp"
#include "dsonas/model/prune.hpp"
#include "dsonas/run/run_common.hpp"

namespace dsonas {
namespace {

// ---------------------------------------------------------------------------
// the trainer

enum class StepKind { W, Lambda };

class Trainer {
 public:
  Trainer(const RunConfig& cfg, Phase phase, Backend& be, Supergraph& g, int64_t epoch_steps, Communicator& comm)
      : cfg_(cfg),
        phase_(phase),
        be_(be),
        g_(g),
        comm_(comm),
        mode_(parse_penalty_mode(cfg.penalty, "search.penalty")),
        red_(comm, be, g.flat_grad(), std::max<int64_t>(1, static_cast<int64_t>(cfg.bucket_mb * (1 << 20) / 4))),
        lam_step_(g.space(), static_cast<float>(cfg.gamma), mode_, cfg.lambda_lr_mult, static_cast<float>(cfg.momentum),
                  PruneSchedule::from(cfg.prune, cfg.prune_dense_epochs, cfg.prune_every), epoch_steps, cfg.w_steps,
                  cfg.lambda_steps) {
    LrParams lp;
    lp.base_lr = cfg.lr;
    lp.epoch_size = std::max<int64_t>(1, epoch_steps);
    sched_ = make_lr_schedule(cfg.lr_schedule, lp);
    const size_t T = g.lambda().size();
    grad_.assign(T, 0.f);
    lat_r_.assign(T, 1.f);
    if (phase == Phase::Search && mode_ == PenaltyMode::AdaptiveLatency)
      lat_.reset(new LatencyPenalty(g.space(), cfg.retrain_width, cfg.latency_iters, cfg.latency_warmup, be));
    // Data parallel: the weight gradients of every finished piece of the
    // backward pass are checked, then their reduction starts (GradReducer).
    if (comm_.size() > 1)
      g_.set_grad_ready_hook([this](int64_t from) {
        if (!in_w_step_) return;
        check_finite(from, checked_from_);
        checked_from_ = std::min(checked_from_, from);
        red_.ready(from);
      });
  }
  ~Trainer() { g_.set_grad_ready_hook(nullptr); }

  struct Out {
    StepResult r;
    double seconds = 0, reduce_seconds = 0;
    LambdaStepResult lam;  // λ-steps: plan change, rebuild, pruned and revived entries
  };

  /// One step on this rank's batch of n images (global batch n·world).
  Out step(StepKind kind, int64_t t, const float* x, const int32_t* y, int n) {
    Out o;
    const auto t0 = Clock::now();
    step_ = t + 1;  // steps are named by their 1-based number, as in the metrics
    const float lr = static_cast<float>(sched_->lr(t));
    const bool search = phase_ == Phase::Search;
    const bool multi = comm_.size() > 1;
    const int64_t W = g_.num_weights(), T = g_.flat_grad().numel();
    // §4.1: the loss is the mean over the global batch, so every rank scales by
    // 1/(n·world) and the reduction sums
    const float scale = 1.f / (static_cast<float>(n) * static_cast<float>(comm_.size()));
    in_w_step_ = kind == StepKind::W;
    checked_from_ = in_w_step_ ? W : T;
    if (multi) {
      if (in_w_step_)
        red_.begin(0, W);
      else
        red_.begin(W, T);
    }
    o.r = g_.train_step(x, y, n, scale, kind == StepKind::W, kind == StepKind::Lambda);
    if (!std::isfinite(o.r.loss_sum))
      fail_numerical(str("step ", t + 1, ": non-finite loss ", o.r.loss_sum, " on rank ", comm_.rank()));
    // every gradient is checked before it is reduced (a NaN on one rank must not
    // spread to the others): W-steps check what the hook did not, λ-steps dλ
    if (multi) {
      check_finite(in_w_step_ ? 0 : W, checked_from_);
      const double before = red_.wait_seconds();
      red_.finish();
      o.reduce_seconds = red_.wait_seconds() - before;
    } else {
      check_finite(0, T);
    }
    in_w_step_ = false;
    if (search && cfg_.clip > 0)
      be_.clip(g_.flat_grad(), static_cast<float>(-cfg_.clip), static_cast<float>(cfg_.clip));
    if (kind == StepKind::W) {
      for (Param& p : g_.params()) {
        if (p.frozen) continue;
        be_.nag_update(p.value, p.grad, p.momentum, lr, static_cast<float>(cfg_.momentum),
                       weight_decay_for(p.name, phase_, static_cast<float>(cfg_.wd)));
      }
    } else {
      // identical reduced dλ on every rank → identical λ (checked by hash)
      be_.download(g_.lambda_grad(), grad_.data());
      o.lam = lam_step_.step(g_.lambda(), g_.mask(), grad_.data(), lr, t, lat_ ? lat_r_.data() : nullptr);
      if (o.lam.mask_changed) g_.rebuild_plan();
    }
    be_.synchronize();  // a GPU step's last kernels (clip, NAG) count in its own time
    o.seconds = seconds_since(t0);
    return o;
  }

  double lr(int64_t t) const { return sched_->lr(t); }
  std::vector<float>& lambda_momentum() { return lam_step_.momentum(); }
  const PruneSchedule& prune_schedule() const { return lam_step_.schedule(); }
  bool adaptive_latency() const { return lat_ != nullptr; }
  /// The §5.3 factors in use (1 where not adaptive); saved in checkpoints.
  std::vector<float>& latency_factors() { return lat_r_; }
  /// §5.3 at an epoch boundary: time the retrain network without each live edge
  /// (bits dealt out over the ranks, timings summed), new factors; a log line.
  std::string update_latency() {
    const auto t0 = Clock::now();
    const std::vector<int> bits = lat_->live_bits(g_.lambda().data(), g_.mask().data());
    const int64_t timed0 = lat_->timed(), cached0 = lat_->cached();
    std::vector<double> t = lat_->time_removals(g_.lambda().data(), g_.mask().data(), bits, comm_.rank(), comm_.size());
    comm_.sum(t.data(), static_cast<int64_t>(t.size()));
    lat_r_ = lat_->factors(bits, t);
    double lo = 1e30, hi = 0;
    for (double v : t) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    std::string detail;
    for (size_t k = 0; k < bits.size(); ++k)
      detail += str(k ? "," : "", "[", bits[k], ",", fmt("%.4g", t[k] * 1e3), ",",
                    fmt("%.3f", lat_r_[static_cast<size_t>(bits[k])]), "]");
    return str("{\"event\":\"latency\",\"live_bits\":", bits.size(), ",\"timed\":", lat_->timed() - timed0,
               ",\"cached\":", lat_->cached() - cached0, ",\"width\":", lat_->width(),
               ",\"ms_min\":", fmt("%.4g", bits.empty() ? 0 : lo * 1e3), ",\"ms_max\":", fmt("%.4g", hi * 1e3),
               ",\"seconds\":", fmt("%.2f", seconds_since(t0)), ",\"bits\":[", detail, "]}");
  }
  /// Hash of what must be identical on every rank: λ, live mask, APG momentum.
  uint64_t lambda_hash() const {
    uint64_t h = hash_bytes(g_.lambda().data(), g_.lambda().size() * sizeof(float));
    h = hash_bytes(g_.mask().data(), g_.mask().size(), h);
    const std::vector<float>& v = lam_step_.momentum();
    return hash_bytes(v.data(), v.size() * sizeof(float), h);
  }

 private:
  /// Exit 4 naming the tensor when [lo, hi) of the flat gradient holds a NaN/Inf.
  void check_finite(int64_t lo, int64_t hi) {
    if (hi <= lo) return;
    Tensor& flat = g_.flat_grad();
    if (be_.all_finite(flat.view(lo, {hi - lo}))) return;
    for (Param& p : g_.params()) {
      if (p.frozen) continue;
      const int64_t off = p.grad.data() - flat.data();
      if (off + p.grad.numel() > lo && off < hi && !be_.all_finite(p.grad))
        fail_numerical(str("step ", step_, ": non-finite gradient in ", p.name, " on rank ", comm_.rank(),
                           " (found before the reduction)"));
    }
    fail_numerical(
        str("step ", step_, ": non-finite λ gradient on rank ", comm_.rank(), " (found before the reduction)"));
  }

  const RunConfig& cfg_;
  Phase phase_;
  Backend& be_;
  Supergraph& g_;
  Communicator& comm_;
  PenaltyMode mode_;
  GradReducer red_;
  LambdaStepper lam_step_;
  std::unique_ptr<LrSchedule> sched_;
  std::vector<float> grad_, lat_r_;
  std::unique_ptr<LatencyPenalty> lat_;
  bool in_w_step_ = false;
  int64_t checked_from_ = 0, step_ = 0;
};

struct EvalResult {
  double loss = 0, acc = 0;
  int64_t n = 0;
};

/// BN re-estimation on about cfg.bn_reestimate training images of `bn_idx`
/// (spread over the ranks, then averaged), then inference-mode evaluation over
/// `idx` of the training set (test_set = false) or the test set (its first
/// max_batches·batch entries when max_batches > 0), each rank taking a
/// contiguous share; the sums are reduced, so every rank gets the same result.
EvalResult evaluate(const RunConfig& cfg, Communicator& comm, Supergraph& g, const Data& data, bool test_set,
                    const std::vector<int>& idx, const std::vector<int>& bn_idx, int max_batches) {
  const int world = comm.size(), rank = comm.rank();
  if (cfg.bn_reestimate > 0 && !bn_idx.empty()) {
    Sampler smp(bn_idx, cfg.batch, rank, world, cfg.seed, kStreamBn);
    const int nb = std::max(1, cfg.bn_reestimate / (cfg.batch * world));
    std::vector<std::vector<float>> bufs(static_cast<size_t>(nb));
    std::vector<int32_t> labels(static_cast<size_t>(cfg.batch));
    std::vector<const float*> ptrs;
    const SearchSpace& sp = g.space();
    const size_t image = static_cast<size_t>(sp.in_channels) * sp.in_height * sp.in_width;
    for (int b = 0; b < nb; ++b) {
      std::vector<int> ids = smp.next();
      bufs[static_cast<size_t>(b)].resize(static_cast<size_t>(cfg.batch) * image);
      training_batch(cfg, data, ids, kStreamBn, static_cast<uint64_t>(b),
                     static_cast<uint64_t>(rank) * static_cast<uint64_t>(cfg.batch),
                     bufs[static_cast<size_t>(b)].data(), labels.data());
      ptrs.push_back(bufs[static_cast<size_t>(b)].data());
    }
    g.reestimate_bn(ptrs, cfg.batch);
  }
  average_bn_stats(comm, g.backend(), g.bn_stats());
  size_t len = idx.size();
  if (max_batches > 0) len = std::min(len, static_cast<size_t>(max_batches) * static_cast<size_t>(cfg.batch));
  const size_t lo = len * static_cast<size_t>(rank) / static_cast<size_t>(world);
  const size_t hi = len * static_cast<size_t>(rank + 1) / static_cast<size_t>(world);
  std::unique_ptr<EvalSource> it = eval_source(
      cfg, data, test_set,
      std::vector<int>(idx.begin() + static_cast<std::ptrdiff_t>(lo), idx.begin() + static_cast<std::ptrdiff_t>(hi)));
  Batch b;
  double sums[3] = {0, 0, 0};  // loss, correct, n
  while (it->next(b)) {
    StepResult s = g.eval_batch(b.data.data(), b.labels.data(), b.n);
    sums[0] += s.loss_sum;
    sums[1] += static_cast<double>(s.correct);
    sums[2] += s.n;
  }
  comm.sum(sums, 3);
  EvalResult r;
  r.n = static_cast<int64_t>(sums[2]);
  r.loss = r.n ? sums[0] / sums[2] : 0;
  r.acc = r.n ? sums[1] / sums[2] : 0;
  return r;
}

constexpr int64_t kRecomputeAutoBytes = int64_t(2) << 30;
constexpr double kTrajectorySaveSecs = 60;

/// Applies --recompute; returns a line for the log.
std::string apply_recompute(const RunConfig& cfg, Supergraph& g, Backend& be) {
  const int64_t est = g.activation_bytes_estimate(cfg.batch);
  // auto: on a GPU, when the activations would take more than half of the
  // memory still free (the rest: weights, gradients, workspaces, fragmentation);
  // elsewhere above a fixed 2 GiB
  const int64_t free_b = cfg.recompute == "auto" ? be.memory_free_bytes() : -1;
  const int64_t limit = free_b > 0 ? free_b / 2 : kRecomputeAutoBytes;
  const bool on = cfg.recompute == "blocks" || (cfg.recompute == "auto" && est > limit);
  g.set_recompute(on);
  return str("activations without recomputation ~", est >> 20, " MiB; per-block recomputation ", on ? "on" : "off",
             " (--recompute ", cfg.recompute,
             cfg.recompute != "auto" ? std::string()
             : free_b > 0            ? str(": limit half of the ", free_b >> 20, " MiB free on the device")
                                     : std::string(": limit 2048 MiB"),
             ")");
}

std::string ops_summary(const SearchSpace& s, Supergraph& g) {
  std::vector<int64_t> per = live_ops_per_type(s, g.lambda().data(), g.mask().data());
  std::string r;
  for (size_t j = 0; j < per.size(); ++j) r += str(j ? " " : "", op_name(s.ops[j]), "=", per[j]);
  return r;
}

/// Writes the checkpoint (rank 0), then the `latest` pointer (both atomically).
std::string write_checkpoint(const std::string& out, Supergraph& g, const ModelFileInfo& info, const TrainState& ts) {
  const std::string dir = out + "/ckpt";
  if (::mkdir(dir.c_str(), 0775) != 0 && errno != EEXIST)
    throw Error(kExitInternal, str("cannot create ", dir, ": ", std::strerror(errno)));
  const std::string name = ckpt_name(info.step);
  save_model_file(dir + "/" + name, g, info, &ts);
  write_latest_pointer(out, name, info.step);
  return dir + "/" + name;
}

/// The shared loop of pretrain and search.
int train_loop(const RunConfig& cfg, Phase phase) {
  const bool search = phase == Phase::Search;
  const char* stage = search ? "search" : "pretrain";
  Communicator& comm = Communicator::world();
  const int world = comm.size(), rank = comm.rank();
  const bool root = comm.root();
  // 1. everything that can fail on bad input, before anything is written
  Data data = load_data(cfg);
  std::string init_path;
  if (search && !cfg.init.empty()) {
    init_path = resolve_init(cfg.init);
    read_model_space(init_path);
  }
  std::string threads_note;
  threads_for_rank(cfg, &threads_note);
  std::unique_ptr<Backend> be = backend_for(cfg);
  Supergraph g(cfg.space, *be, cfg.seed);
  if (!init_path.empty()) load_model_file(init_path, g, false);
  g.set_lambda_fixed(!search);
  const int64_t global_batch = static_cast<int64_t>(cfg.batch) * world;
  if (static_cast<int64_t>(data.split.first.size()) < global_batch ||
      static_cast<int64_t>(data.split.second.size()) < global_batch)
    fail_usage(str("data.batch: ", cfg.batch, " × ", world, " ranks is larger than a half of the training set"));
  const double deadline = deadline_epoch(cfg);
  // rank 0 creates the folder and takes the lock; the others wait for it
  std::unique_ptr<RunLock> lock;
  if (root) {
    prepare_out_dir(cfg.out, cfg.resume);
    lock.reset(new RunLock(cfg.out));
  }
  comm.barrier();
  install_stop_handlers();
  const std::string structural = structural_fields(cfg, stage, world);

  // resume: the newest checkpoint that loads (or, under --strict-resume, the
  // newest or nothing).  Every rank reads the same files and takes the same
  // decisions; a changed world size is refused unless --allow-world-size-change.
  Resumed res = resume_stage(cfg, world, root, structural, read_file_attr,
                             [&](const std::string& c, TrainState* st) { load_model_file(c, g, true, st); });
  TrainState& rs = res.state;
  const std::string& resumed_from = res.path;
  const int world_then = res.world_then;

  Output out(cfg.out, cfg.progress, rank);
  for (const std::string& l : res.notes) out.line(l);
  if (!resumed_from.empty()) {  // runtime options may change across a resume: say which did
    const auto was = ini_map(read_root_attr(resumed_from, "config")), now = ini_map(cfg.resolved);
    for (const auto& kv : now) {
      auto it = was.find(kv.first);
      if (it != was.end() && it->second != kv.second)
        out.line(str("changed since the checkpoint: ", kv.first, " = ", it->second, " -> ", kv.second));
    }
  }
  if (!resumed_from.empty() && rs.counters["finished"]) {
    out.line(str(stage, " had already finished; nothing to do"));
    return kExitOk;
  }
  out.line(str("dsonas ", stage, ": ", cfg.space.to_json()));
  out.line(cfg.resolved);
  if (root) {
    std::ofstream f(cfg.out + "/config.resolved.cfg");
    f << cfg.resolved;
  }
  if (!init_path.empty()) out.line(str("initialised from ", init_path));
  if (!threads_note.empty()) out.line("note: " + threads_note);
  out.line(apply_recompute(cfg, g, *be));

  std::unique_ptr<BatchSource> wlp = train_source(cfg, data, data.split.first, rank, world, kStreamW, kStreamAugW);
  BatchSource& wl = *wlp;
  std::unique_ptr<BatchSource> ll;
  if (search) ll = train_source(cfg, data, data.split.second, rank, world, kStreamLam, kStreamAugLam);
  const int cycle = search ? cfg.w_steps + cfg.lambda_steps : 1;
  const int64_t epoch_steps = stage_epoch_steps(cfg, wl.steps_per_epoch(), search);
  const int64_t total = stage_total_steps(cfg, epoch_steps);
  out.line(str("W-half ", data.split.first.size(), " images, λ-half ", data.split.second.size(), ", test ",
               data.test_size(), "; ", epoch_steps, " steps per epoch, ", total, " steps; ", world, " rank",
               world > 1 ? "s" : "", " × batch ", cfg.batch, " = global batch ", global_batch, "; backend ", be->name(),
               " with ", be->threads(), " threads; ", g.num_weights(), " weights, ", g.lambda().size(), " λ"));

  Trainer tr(cfg, phase, *be, g, epoch_steps, comm);
  const double full = full_macs(cfg.space);
  Batch batch;
  // window sums for the metrics line: per rank, reduced when a line is written
  double win_loss = 0, win_time = 0, win_reduce = 0;
  int64_t win_correct = 0, win_n = 0;
  int64_t stable = 0, lambda_steps = 0;
  // reference pruning schedule: λ entries revived so far (0 → > 0 while wired)
  const bool reference = tr.prune_schedule().kind == PruneSchedule::Kind::Reference;
  int64_t revivals = 0, last_zero = 0;
  int64_t t = 0;
  // training images consumed (global batch summed over the steps) and trajectory
  // records written (traj_records -1: unknown, a checkpoint of an older version)
  int64_t images_seen = 0, traj_records = 0;
  if (!resumed_from.empty()) {
    auto& k = rs.counters;
    t = k["step"];
    stable = k["stable"];
    lambda_steps = k["lambda_steps"];
    revivals = k.count("revivals") ? k["revivals"] : 0;
    // older checkpoints lack images_seen: their steps × their global batch (exact
    // unless that run had already changed its world size)
    images_seen = k.count("images_seen") ? k["images_seen"] : t * cfg.batch * world_then;
    traj_records = k.count("traj_records") ? k["traj_records"] : -1;
    // the checkpoint holds the window summed over the ranks: rank 0 carries it on
    if (root) {
      win_correct = k["win_correct"];
      win_n = k["win_n"];
      win_loss = rs.reals["win_loss"];
    }
    win_time = rs.reals["win_time"];
    tr.lambda_momentum() = rs.lambda_v;
    for (size_t e = 0; e < tr.latency_factors().size(); ++e) {
      auto it = rs.reals.find(str("latency_r/", e));
      if (it != rs.reals.end()) tr.latency_factors()[e] = static_cast<float>(it->second);
    }
    // A checkpoint of another world size (--allow-world-size-change): each
    // loader continues from the samples its epoch has already taken
    // (Sampler::reshard: none skipped, none repeated), and the step counter
    // is rescaled by the global batch ratio so that the lr schedule, the epoch
    // count and the step budget keep meaning the same amount of data; the
    // W/λ phase of the step is kept.
    auto resume_state = [&](BatchSource& L, size_t n, const std::string& prefix) {
      SamplerState s{k[prefix + "epoch"], k[prefix + "position"], k[prefix + "offset"]};
      if (world_then != world) s = Sampler::reshard(s, static_cast<int64_t>(n), cfg.batch, world_then, world);
      L.restore(s);
    };
    resume_state(wl, data.split.first.size(), "w_");
    if (ll) resume_state(*ll, data.split.second.size(), "l_");
    if (world_then != world) {
      const int64_t rescaled = rescale_step(t, world_then, world, cycle);
      out.line(str("step counter rescaled for the new global batch: ", t, " steps of ", int64_t(cfg.batch) * world_then,
                   " -> ", rescaled, " steps of ", global_batch));
      t = rescaled;
    }
  }
  last_zero = count_zero(g.lambda().data(), g.lambda().size()).zero;
  // λ trajectory (search, rank 0): saved before every checkpoint, so it is never
  // behind the newest checkpoint; on resume it keeps the checkpoint's traj_records
  // records (older checkpoints: those with step ≤ its step, in its own numbering)
  std::unique_ptr<Trajectory> traj;
  if (search && cfg.trajectory_every > 0 && root) {
    traj.reset(new Trajectory(cfg.out + "/lambda_trajectory.h5", cfg.space.to_json(), g.lambda_groups()));
    if (!resumed_from.empty() && traj_records < 0)
      traj->load(rs.counters["step"]);
    else if (!resumed_from.empty() && !traj->load_count(traj_records) && traj_records > 0)
      out.line(str("note: ", cfg.out, "/lambda_trajectory.h5 is missing (the checkpoint counts ", traj_records,
                   " records); a new one starts at step ", t));
    traj_records = static_cast<int64_t>(traj->records().size());
  }
  ModelFileInfo info;
  info.stage = stage;
  info.seed = cfg.seed;
  info.config = cfg.resolved;
  info.structural = structural;
  info.world_size = world;
  Clock::time_point last_ckpt = Clock::now(), last_traj_save = Clock::now();
  double max_step_s = 0;
  auto checkpoint = [&](int64_t step, bool finished) {
    // replicas must agree before one of them speaks for all
    if (search) comm.check_same(tr.lambda_hash(), "λ (values, live mask, momentum)", step);
    average_bn_stats(comm, g.backend(), g.bn_stats());
    if (world > 1) comm.check_same(params_hash(g.backend(), g.params()), "the weights", step);
    // the window, summed over the ranks, continues on rank 0 (as after a resume)
    double wsum[3] = {win_loss, static_cast<double>(win_correct), static_cast<double>(win_n)};
    comm.sum(wsum, 3);
    win_loss = root ? wsum[0] : 0;
    win_correct = root ? static_cast<int64_t>(wsum[1]) : 0;
    win_n = root ? static_cast<int64_t>(wsum[2]) : 0;
    std::string path;
    if (root) {
      TrainState ts;
      ts.lambda_v = tr.lambda_momentum();
      auto& k = ts.counters;
      k["step"] = step;
      k["finished"] = finished;
      k["stable"] = stable;
      k["lambda_steps"] = lambda_steps;
      if (reference) k["revivals"] = revivals;
      k["win_correct"] = win_correct;
      k["win_n"] = win_n;
      k["images_seen"] = images_seen;
      k["metrics_lines"] = out.metrics_lines();
      if (traj) traj_records = static_cast<int64_t>(traj->records().size());
      if (search && traj_records >= 0) k["traj_records"] = traj_records;
      ts.reals["win_loss"] = win_loss;
      ts.reals["win_time"] = win_time;
      if (tr.adaptive_latency())
        for (size_t e = 0; e < tr.latency_factors().size(); ++e)
          if (tr.latency_factors()[e] != 1.f) ts.reals[str("latency_r/", e)] = tr.latency_factors()[e];
      const SamplerState ws = wl.state();
      k["w_epoch"] = ws.epoch;
      k["w_position"] = ws.position;
      k["w_offset"] = ws.offset;
      if (ll) {
        const SamplerState ls = ll->state();
        k["l_epoch"] = ls.epoch;
        k["l_position"] = ls.position;
        k["l_offset"] = ls.offset;
      }
      info.step = step;
      if (traj) traj->save();
      path = write_checkpoint(cfg.out, g, info, ts);
      const std::string note = res.after_checkpoint(cfg.out, path);
      if (!note.empty()) out.line(note);
      prune_checkpoints(cfg.out, cfg.keep_last, cfg.keep_every);
    }
    comm.barrier();  // the others wait for rank 0's commit
    last_ckpt = Clock::now();
    return path.empty() ? str(cfg.out, "/ckpt/", ckpt_name(step)) : path;
  };
  const auto t_start = Clock::now();
  const StageClock clock(t, total, deadline, search && (cfg.target_zero_frac > 0 || cfg.stable_steps > 0));
  if (PipelineClock* pc = PipelineClock::active())
    pc->started(
        {global_batch, full, static_cast<int64_t>(data.split.first.size()), static_cast<int64_t>(data.train_size())});
  std::string stop_reason = "step budget reached";
  for (; t < total; ++t) {
    // Signals, the deadline and the checkpoint timer are seen by each rank at
    // its own moment: one small sum makes every rank act on the same step.
    double flags[3] = {
        g_stop_signal ? static_cast<double>(g_stop_signal) : 0.0,
        deadline > 0 && static_cast<double>(std::time(nullptr)) + cfg.deadline_margin + 2 * max_step_s >= deadline
            ? 1.0
            : 0.0,
        cfg.checkpoint_secs > 0 && t > 0 && seconds_since(last_ckpt) >= cfg.checkpoint_secs ? 1.0 : 0.0};
    comm.sum(flags, 3);
    if (flags[0] > 0) {
      const int sig = g_stop_signal ? static_cast<int>(g_stop_signal) : SIGTERM;
      const std::string path = checkpoint(t, false);
      out.line(str(stage, ": signal ", sig, " (", sig == SIGUSR1 ? "SIGUSR1" : "SIGTERM", ") at step ", t,
                   ": checkpoint ", path, " written; exiting with ", int(kExitRequeue), " (resume with --resume)"));
      return kExitRequeue;
    }
    // stop before the deadline: margin plus two of the slowest steps so far
    if (flags[1] > 0) {
      const std::string path = checkpoint(t, false);
      out.line(str(stage, ": deadline in ", fmt("%.0f", deadline - static_cast<double>(std::time(nullptr))),
                   " s at step ", t, ": checkpoint ", path, " written; exiting with ", int(kExitRequeue)));
      return kExitRequeue;
    }
    if (flags[2] > 0) checkpoint(t, false);
    const StepKind kind = (t % cycle) < (search ? cfg.w_steps : 1) ? StepKind::W : StepKind::Lambda;
    BatchSource& L = kind == StepKind::W ? wl : *ll;
    L.next(batch);
    if (fault_active("nan-grad", t + 1, rank)) batch.data[0] = std::numeric_limits<float>::quiet_NaN();
    Trainer::Out o = tr.step(kind, t, batch.data.data(), batch.labels.data(), batch.n);
    images_seen += global_batch;
    max_step_s = std::max(max_step_s, o.seconds);
    win_loss += o.r.loss_sum;
    win_correct += o.r.correct;
    win_n += o.r.n;
    win_time += o.seconds;
    win_reduce += o.reduce_seconds;
    if (kind == StepKind::Lambda) {
      ++lambda_steps;
      if (!reference) {
        stable = o.lam.mask_changed ? 0 : stable + 1;
      } else {  // the plan changes only at rebuilds: "stable" = no λ crossed zero either way
        const int64_t zero_now = count_zero(g.lambda().data(), g.lambda().size()).zero;
        stable = o.lam.mask_changed || o.lam.revived > 0 || zero_now != last_zero ? 0 : stable + 1;
        last_zero = zero_now;
        revivals += o.lam.revived;
        if (o.lam.rebuilt)
          out.line(str("search: rebuild at step ", t + 1, " (epoch ", (t + 1 + epoch_steps - 1) / epoch_steps,
                       "): ", o.lam.pruned, " λ entries left the plan, ", g.live_edges(), " live edges, ", g.live_ops(),
                       " live ops; ", revivals, " revivals so far"));
      }
    }
    if (search && world > 1 && cfg.lambda_check_every > 0 && (t + 1) % cfg.lambda_check_every == 0)
      comm.check_same(tr.lambda_hash(), "λ (values, live mask, momentum)", t + 1);
    const bool last = t + 1 == total;
    ZeroCount z = count_zero(g.lambda().data(), g.lambda().size());
    const double zero_frac = static_cast<double>(z.zero) / static_cast<double>(z.total);
    bool stop = false;
    if (search && cfg.target_zero_frac > 0 && zero_frac >= cfg.target_zero_frac) {
      stop = true;
      stop_reason = str("target zero fraction ", cfg.target_zero_frac, " reached");
    }
    if (search && cfg.stable_steps > 0 && stable >= cfg.stable_steps && z.zero > 0) {
      stop = true;
      stop_reason = str("live mask unchanged for ", cfg.stable_steps, " λ-steps");
    }
    if ((t + 1) % cfg.log_every == 0 || last || stop) {
      double w[3] = {win_loss, static_cast<double>(win_correct), static_cast<double>(win_n)};
      comm.sum(w, 3);
      const double macs = search ? live_macs(cfg.space, g.lambda().data(), g.mask().data()) : full;
      if (PipelineClock* pc = PipelineClock::active(); pc && search) pc->note_live_macs(macs);
      const double ips = win_time > 0 ? w[2] / win_time : 0;  // global images / rank 0's time
      const double epoch = static_cast<double>(t + 1) / static_cast<double>(epoch_steps);
      out.metrics(str("{\"stage\":\"", stage, "\",\"step\":", t + 1, ",\"epoch\":", fmt("%.4f", epoch),
                      ",\"lr\":", fmt("%.6g", tr.lr(t)), ",\"loss\":", fmt("%.6f", w[0] / w[2]),
                      ",\"acc\":", fmt("%.5f", w[1] / w[2]), ",\"img_per_s\":", fmt("%.2f", ips),
                      ",\"live_macs\":", fmt("%.0f", macs), ",\"zero_lambda\":", z.zero, ",\"total_lambda\":", z.total,
                      ",\"live_ops\":", g.live_ops(), ",\"live_edges\":", g.live_edges(),
                      reference ? str(",\"revivals\":", revivals) : std::string(),
                      world > 1 ? str(",\"ranks\":", world,
                                      ",\"reduce_share\":", fmt("%.4f", win_time > 0 ? win_reduce / win_time : 0))
                                : std::string(),
                      clock.json(t + 1), "}"));
      out.progress(str(stage, " epoch ", fmt("%.2f", epoch), " step ", t + 1, "/", total, "  ", fmt("%.1f", ips),
                       " img/s  loss ", fmt("%.4f", w[0] / w[2]), "  acc ", fmt("%.3f", w[1] / w[2]), "  MACs ",
                       fmt("%.2fM", macs / 1e6), "  zero λ ", z.zero, "/", z.total, clock.text(t + 1)));
      win_loss = win_time = win_reduce = 0;
      win_correct = win_n = 0;
    }
    if (search && cfg.trajectory_every > 0 && ((t + 1) % cfg.trajectory_every == 0 || last || stop)) {
      double s[3] = {o.r.loss_sum, static_cast<double>(o.r.correct), static_cast<double>(o.r.n)};
      comm.sum(s, 3);  // the step's loss over the global batch
      if (traj) {
        TrajectoryRecord rec;
        rec.step = t + 1;
        rec.images = images_seen;
        rec.loss = s[0] / s[2];
        rec.acc = s[1] / s[2];
        rec.live_macs = live_macs(cfg.space, g.lambda().data(), g.mask().data());
        rec.zero_lambda = z.zero;
        rec.live_edges = g.live_edges();
        rec.revivals = reference ? revivals : -1;
        rec.lambda = g.lambda();
        traj->append(std::move(rec));
        // also persist between checkpoints, at most once a minute, so a running
        // search can be watched (a file ahead of the checkpoint is trimmed on resume)
        if (seconds_since(last_traj_save) >= kTrajectorySaveSecs) {
          traj->save();
          last_traj_save = Clock::now();
        }
      }
    }
    if (tr.adaptive_latency() && (t + 1) % epoch_steps == 0 && !stop && t + 1 < total) {
      const std::string j = tr.update_latency();  // §5.3: at the end of every search epoch
      out.metrics(str("{\"stage\":\"search\",\"step\":", t + 1, ",", j.substr(1)));
      out.line(str("adaptive latency at step ", t + 1, ": ",
                   j.substr(0, std::min<size_t>(j.find(",\"bits\""), j.size())), "}"));
    }
    if (cfg.checkpoint_every > 0 && (t + 1) % cfg.checkpoint_every == 0 && !stop && t + 1 < total)
      checkpoint(t + 1, false);
    fault_point("kill-after-step", t + 1, rank);
    fault_point("signal-after-step", t + 1, rank);
    if (stop) {
      ++t;
      break;
    }
  }
  out.line(str(stage, " stopped after ", t, " steps: ", stop_reason));

  // validation on the λ-half (no augmentation) and test, after BN re-estimation
  EvalResult val = evaluate(cfg, comm, g, data, false, data.split.second, data.split.first, cfg.eval_batches);
  EvalResult test = evaluate(cfg, comm, g, data, true, all_indices(data.test_size()), data.split.first, 0);
  ZeroCount z = count_zero(g.lambda().data(), g.lambda().size());
  const double macs = search ? live_macs(cfg.space, g.lambda().data(), g.mask().data()) : full;
  out.metrics(str("{\"stage\":\"", stage, "\",\"event\":\"final\",\"step\":", t,
                  ",\"val_loss\":", fmt("%.6f", val.loss), ",\"val_acc\":", fmt("%.5f", val.acc), ",\"test_loss\":",
                  fmt("%.6f", test.loss), ",\"test_acc\":", fmt("%.5f", test.acc), ",\"live_macs\":", fmt("%.0f", macs),
                  ",\"full_macs\":", fmt("%.0f", full), ",\"zero_lambda\":", z.zero, ",\"total_lambda\":", z.total,
                  ",\"live_ops\":", g.live_ops(), ",\"time_s\":", fmt("%.3f", seconds_since(t_start)), "}"));
  info.step = t;
  if (root) save_model_file(cfg.out + "/model.h5", g, info);
  checkpoint(t, true);  // also checks that λ and the weights agree on every rank
  if (search)
    out.line(str("λ hash ", std::hex, tr.lambda_hash(), std::dec, " (values, live mask, momentum)",
                 world > 1 ? str("; identical on all ", world, " ranks") : std::string()));
  out.line(str(stage, " done: val acc ", fmt("%.4f", val.acc), " (λ-half, ", val.n, " images), test acc ",
               fmt("%.4f", test.acc), ", live MACs ", fmt("%.2fM", macs / 1e6), " of ", fmt("%.2fM", full / 1e6),
               ", zero λ ", z.zero, "/", z.total, ", live ops ", g.live_ops(), " (", ops_summary(cfg.space, g),
               "); model in ", cfg.out, "/model.h5"));
  return kExitOk;
}

}  // namespace

int run_pretrain(const RunConfig& cfg) { return train_loop(cfg, Phase::Pretrain); }
int run_search(const RunConfig& cfg) { return train_loop(cfg, Phase::Search); }

int run_bench(const RunConfig& cfg) {
  const SearchSpace& s = cfg.space;
  std::unique_ptr<Backend> base = backend_for(cfg);
  std::unique_ptr<Backend> prof = cfg.bench_profile ? make_profiling_backend(*base) : nullptr;
  Backend* be = prof ? prof.get() : base.get();
  Communicator& comm = Communicator::world();
  Supergraph g(s, *be, cfg.seed);
  const std::string rc = apply_recompute(cfg, g, *be);
  if (comm.root()) std::cerr << rc << "\n";
  if (cfg.bench_steps == 0) {  // sizes only (the scaling model's flat-buffer size)
    const std::string j =
        str("{\"preset\":\"", s.preset, "\",\"space\":", s.to_json(), ",\"weights\":", g.num_weights(),
            ",\"lambda\":", g.lambda().size(), ",\"flat_grad_bytes\":", g.flat_grad().numel() * 4,
            ",\"activation_bytes_batch\":", g.activation_bytes_estimate(cfg.batch), ",\"batch\":", cfg.batch, "}");
    if (comm.root()) std::cout << j << std::endl;
    return kExitOk;
  }
  Trainer tr(cfg, Phase::Search, *be, g, 1000, comm);
  // each rank its own slice of one synthetic global batch
  ImageSet data = make_synthetic(cfg.batch * comm.size(), s.in_channels, s.in_height, s.in_width, s.classes, cfg.seed);
  std::vector<int> mine(static_cast<size_t>(cfg.batch));
  for (int i = 0; i < cfg.batch; ++i) mine[static_cast<size_t>(i)] = comm.rank() * cfg.batch + i;
  std::vector<float> x(static_cast<size_t>(cfg.batch) * data.image_size());
  std::vector<int32_t> y(static_cast<size_t>(cfg.batch));
  make_batch(data, mine, fashion_mnist_eval_augment(), cfg.seed, 0, 0, x.data(), y.data());
  const int warm = std::min(2, cfg.bench_steps);
  for (int i = 0; i < warm; ++i) tr.step(i % 2 ? StepKind::Lambda : StepKind::W, i, x.data(), y.data(), cfg.batch);
  if (prof) profiling_report(*be, 1);  // drop the warm-up
  std::vector<double> w_ms, l_ms, all_ms, red_ms;
  for (int i = 0; i < cfg.bench_steps; ++i) {
    const StepKind k = i % 2 ? StepKind::Lambda : StepKind::W;
    Trainer::Out o = tr.step(k, warm + i, x.data(), y.data(), cfg.batch);
    (k == StepKind::W ? w_ms : l_ms).push_back(o.seconds * 1e3);
    all_ms.push_back(o.seconds * 1e3);
    red_ms.push_back(o.reduce_seconds * 1e3);
  }
  auto median = [](std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  };
  auto list = [](const std::vector<double>& v) {
    std::string r = "[";
    for (size_t i = 0; i < v.size(); ++i) r += str(i ? "," : "", fmt("%.3f", v[i]));
    return r + "]";
  };
  const double med = median(all_ms);
  const double ips = cfg.batch * comm.size() / (med / 1e3);  // global images per second
  double red_total = 0, all_total = 0;
  for (double v : red_ms) red_total += v;
  for (double v : all_ms) all_total += v;
  const double rss_mb = static_cast<double>(peak_rss_kb()) / 1024.0;
  const double alloc_mb = static_cast<double>(allocator(be->device()).peak()) / (1024.0 * 1024.0);
  std::string json = str(
      "{\"preset\":\"", s.preset, "\",\"space\":", s.to_json(), ",\"batch\":", cfg.batch, ",\"device\":\"", cfg.device,
      "\",\"gpu_math\":\"", cfg.gpu_math, "\",\"backend\":\"", be->name(), "\"", ",\"ranks\":", comm.size(),
      ",\"threads\":", be->threads(), ",\"reduce_ms_median\":", fmt("%.3f", median(red_ms)),
      ",\"reduce_share\":", fmt("%.4f", all_total > 0 ? red_total / all_total : 0), ",\"steps\":", cfg.bench_steps,
      ",\"recompute\":", g.recompute() ? "true" : "false", ",\"step_ms_median\":", fmt("%.3f", med),
      ",\"w_step_ms_median\":", fmt("%.3f", median(w_ms)), ",\"lambda_step_ms_median\":", fmt("%.3f", median(l_ms)),
      ",\"img_per_s\":", fmt("%.3f", ips), ",\"peak_rss_mb\":", fmt("%.1f", rss_mb),
      ",\"peak_tensor_mb\":", fmt("%.1f", alloc_mb), ",\"weights\":", g.num_weights(),
      ",\"lambda\":", g.lambda().size(), ",\"w_step_ms\":", list(w_ms), ",\"lambda_step_ms\":", list(l_ms), "}");
  if (!comm.root()) return kExitOk;
  if (prof) std::cout << profiling_report(*be, cfg.bench_steps);
  std::cout << json << std::endl;
  if (!cfg.bench_json.empty()) {
    std::ofstream f(cfg.bench_json);
    if (!f) throw Error(kExitInternal, str("cannot write ", cfg.bench_json));
    f << json << "\n";
  }
  return kExitOk;
}

}  // namespace dsonas
