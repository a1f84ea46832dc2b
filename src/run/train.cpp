// train.cpp — pretrain and search as stages of run_stage (run/stage.hpp):
// the Trainer's steps, evaluation, metrics, the λ trajectory; and the bench.
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

#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <cmath>
#include <cstdio>
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
#include "dsonas/run/retrain.hpp"
#include "dsonas/run/run_common.hpp"
#include "dsonas/run/stage.hpp"

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

/// Pretrain and search as a stage of run_stage: the supergraph, its W- and
/// λ-halves, the Trainer's steps, the search's stop rules, λ trajectory and
/// adaptive latency.
class SupergraphStage : public Stage {
 public:
  /// Everything that can fail on bad input, before anything is written.
  SupergraphStage(const RunConfig& cfg, Phase phase)
      : cfg_(cfg), search_(phase == Phase::Search), phase_(phase), data_(load_data(cfg)) {
    if (search_ && !cfg.init.empty()) {
      init_path_ = resolve_init(cfg.init);
      read_model_space(init_path_);
    }
    threads_for_rank(cfg, &threads_note_);
    be_ = backend_for(cfg);
    g_.reset(new Supergraph(cfg.space, *be_, cfg.seed));
    if (!init_path_.empty()) load_model_file(init_path_, *g_, false);
    g_->set_lambda_fixed(!search_);
    global_batch_ = static_cast<int64_t>(cfg.batch) * Communicator::world().size();
    if (static_cast<int64_t>(data_.split.first.size()) < global_batch_ ||
        static_cast<int64_t>(data_.split.second.size()) < global_batch_)
      fail_usage(str("data.batch: ", cfg.batch, " × ", Communicator::world().size(),
                     " ranks is larger than a half of the training set"));
  }

  const char* name() const override { return search_ ? "search" : "pretrain"; }
  std::string (*attr_reader() const)(const std::string&, const char*) override { return read_file_attr; }
  void load_checkpoint(const std::string& path, TrainState* st) override { load_model_file(path, *g_, true, st); }

  int64_t begin(StageEnv& env) override {
    Output& out = *env.out;
    Supergraph& g = *g_;
    out.line(str("dsonas ", name(), ": ", cfg_.space.to_json()));
    out.line(cfg_.resolved);
    if (env.root) std::ofstream(cfg_.out + "/config.resolved.cfg") << cfg_.resolved;
    if (!init_path_.empty()) out.line(str("initialised from ", init_path_));
    if (!threads_note_.empty()) out.line("note: " + threads_note_);
    out.line(apply_recompute(cfg_, g, *be_));
    wl_ = train_source(cfg_, data_, data_.split.first, env.rank, env.world, kStreamW, kStreamAugW);
    if (search_) ll_ = train_source(cfg_, data_, data_.split.second, env.rank, env.world, kStreamLam, kStreamAugLam);
    epoch_steps_ = stage_epoch_steps(cfg_, wl_->steps_per_epoch(), search_);
    total_ = stage_total_steps(cfg_, epoch_steps_);
    out.line(str("W-half ", data_.split.first.size(), " images, λ-half ", data_.split.second.size(), ", test ",
                 data_.test_size(), "; ", epoch_steps_, " steps per epoch, ", total_, " steps; ", env.world, " rank",
                 env.world > 1 ? "s" : "", " × batch ", cfg_.batch, " = global batch ", global_batch_, "; backend ",
                 be_->name(), " with ", be_->threads(), " threads; ", g.num_weights(), " weights, ", g.lambda().size(),
                 " λ"));
    tr_.reset(new Trainer(cfg_, phase_, *be_, g, epoch_steps_, env.comm));
    reference_ = tr_->prune_schedule().kind == PruneSchedule::Kind::Reference;
    full_ = full_macs(cfg_.space);
    return total_;
  }

  int cycle() const override { return search_ ? cfg_.w_steps + cfg_.lambda_steps : 1; }

  void restore(StageEnv& env, const Resumed& res) override {
    const int world_then = res.world_then;
    resumed_step_ = res.counter("step");
    stable_ = res.counter("stable");
    lambda_steps_ = res.counter("lambda_steps");
    revivals_ = res.counter("revivals");
    // older checkpoints lack images_seen: their steps × their global batch (exact
    // unless that run had already changed its world size)
    images_seen_ = res.counter("images_seen", resumed_step_ * cfg_.batch * world_then);
    traj_records_ = res.counter("traj_records", -1);
    tr_->lambda_momentum() = res.state.lambda_v;
    for (size_t e = 0; e < tr_->latency_factors().size(); ++e)
      tr_->latency_factors()[e] = static_cast<float>(res.real(str("latency_r/", e), tr_->latency_factors()[e]));
    auto resume_loader = [&](BatchSource& L, size_t n, const std::string& prefix) {
      SamplerState s{res.counter(prefix + "epoch"), res.counter(prefix + "position"), res.counter(prefix + "offset")};
      if (world_then != env.world) s = Sampler::reshard(s, static_cast<int64_t>(n), cfg_.batch, world_then, env.world);
      L.restore(s);
    };
    resume_loader(*wl_, data_.split.first.size(), "w_");
    if (ll_) resume_loader(*ll_, data_.split.second.size(), "l_");
  }

  void started(StageEnv& env, int64_t t) override {
    Supergraph& g = *g_;
    last_zero_ = count_zero(g.lambda().data(), g.lambda().size()).zero;
    // λ trajectory (search, rank 0): saved before every checkpoint, so it is never
    // behind the newest checkpoint; on resume it keeps the checkpoint's traj_records
    // records (older checkpoints: those with step ≤ its step, in its own numbering)
    if (search_ && cfg_.trajectory_every > 0 && env.root) {
      traj_.reset(new Trajectory(cfg_.out + "/lambda_trajectory.h5", cfg_.space.to_json(), g.lambda_groups()));
      if (resumed_step_ >= 0 && traj_records_ < 0)
        traj_->load(resumed_step_);
      else if (resumed_step_ >= 0 && !traj_->load_count(traj_records_) && traj_records_ > 0)
        env.out->line(str("note: ", cfg_.out, "/lambda_trajectory.h5 is missing (the checkpoint counts ", traj_records_,
                          " records); a new one starts at step ", t));
      traj_records_ = static_cast<int64_t>(traj_->records().size());
    }
    info_.stage = name();
    info_.seed = cfg_.seed;
    info_.config = cfg_.resolved;
    info_.structural = env.structural;
    info_.world_size = env.world;
    last_traj_save_ = Clock::now();
  }

  bool may_stop_early() const override { return search_ && (cfg_.target_zero_frac > 0 || cfg_.stable_steps > 0); }
  StageWork work() const override {
    return {global_batch_, full_, static_cast<int64_t>(data_.split.first.size()),
            static_cast<int64_t>(data_.train_size())};
  }

  StageStep step(StageEnv& env, int64_t t) override {
    Supergraph& g = *g_;
    const StepKind kind = (t % cycle()) < (search_ ? cfg_.w_steps : 1) ? StepKind::W : StepKind::Lambda;
    BatchSource& L = kind == StepKind::W ? *wl_ : *ll_;
    L.next(batch_);
    if (fault_active("nan-grad", t + 1, env.rank)) batch_.data[0] = std::numeric_limits<float>::quiet_NaN();
    const Trainer::Out o = tr_->step(kind, t, batch_.data.data(), batch_.labels.data(), batch_.n);
    images_seen_ += global_batch_;
    zero_ = count_zero(g.lambda().data(), g.lambda().size());
    StageStep r;
    r.loss_sum = o.r.loss_sum;
    r.correct = o.r.correct;
    r.n = o.r.n;
    r.seconds = o.seconds;
    r.reduce_seconds = o.reduce_seconds;
    if (kind == StepKind::Lambda) {
      ++lambda_steps_;
      if (!reference_) {
        stable_ = o.lam.mask_changed ? 0 : stable_ + 1;
      } else {  // the plan changes only at rebuilds: "stable" = no λ crossed zero either way
        stable_ = o.lam.mask_changed || o.lam.revived > 0 || zero_.zero != last_zero_ ? 0 : stable_ + 1;
        last_zero_ = zero_.zero;
        revivals_ += o.lam.revived;
        if (o.lam.rebuilt)
          env.out->line(str("search: rebuild at step ", t + 1, " (epoch ", (t + 1 + epoch_steps_ - 1) / epoch_steps_,
                            "): ", o.lam.pruned, " λ entries left the plan, ", g.live_edges(), " live edges, ",
                            g.live_ops(), " live ops; ", revivals_, " revivals so far"));
      }
    }
    if (search_ && env.world > 1 && cfg_.lambda_check_every > 0 && (t + 1) % cfg_.lambda_check_every == 0)
      env.comm.check_same(tr_->lambda_hash(), "λ (values, live mask, momentum)", t + 1);
    const ZeroCount& z = zero_;
    const double zero_frac = static_cast<double>(z.zero) / static_cast<double>(z.total);
    if (search_ && cfg_.target_zero_frac > 0 && zero_frac >= cfg_.target_zero_frac) {
      r.stop = true;
      r.stop_reason = str("target zero fraction ", cfg_.target_zero_frac, " reached");
    }
    if (search_ && cfg_.stable_steps > 0 && stable_ >= cfg_.stable_steps && z.zero > 0) {
      r.stop = true;
      r.stop_reason = str("live mask unchanged for ", cfg_.stable_steps, " λ-steps");
    }
    return r;
  }

  void log(StageEnv& env, int64_t t, const StatsWindow::Totals& w, const StatsWindow& own) override {
    Supergraph& g = *g_;
    const ZeroCount& z = zero_;  // this step's, from step()
    const double macs = live_macs_now();
    if (PipelineClock* pc = PipelineClock::active(); pc && search_) pc->note_live_macs(macs);
    const double ips = own.time > 0 ? w.n / own.time : 0;  // global images / rank 0's time
    const double epoch = static_cast<double>(t + 1) / static_cast<double>(epoch_steps_);
    env.out->metrics(str(
        "{\"stage\":\"", name(), "\",\"step\":", t + 1, ",\"epoch\":", fmt("%.4f", epoch), ",\"lr\":",
        fmt("%.6g", tr_->lr(t)), ",\"loss\":", fmt("%.6f", w.loss / w.n), ",\"acc\":", fmt("%.5f", w.correct / w.n),
        ",\"img_per_s\":", fmt("%.2f", ips), ",\"live_macs\":", fmt("%.0f", macs), ",\"zero_lambda\":", z.zero,
        ",\"total_lambda\":", z.total, ",\"live_ops\":", g.live_ops(), ",\"live_edges\":", g.live_edges(),
        reference_ ? str(",\"revivals\":", revivals_) : std::string(),
        env.world > 1
            ? str(",\"ranks\":", env.world, ",\"reduce_share\":", fmt("%.4f", own.time > 0 ? own.reduce / own.time : 0))
            : std::string(),
        env.clock->json(t + 1), "}"));
    env.out->progress(str(name(), " epoch ", fmt("%.2f", epoch), " step ", t + 1, "/", total_, "  ", fmt("%.1f", ips),
                          " img/s  loss ", fmt("%.4f", w.loss / w.n), "  acc ", fmt("%.3f", w.correct / w.n), "  MACs ",
                          fmt("%.2fM", macs / 1e6), "  zero λ ", z.zero, "/", z.total, env.clock->text(t + 1)));
  }

  void after_step(StageEnv& env, int64_t t, const StageStep& o, bool last) override {
    if (search_ && cfg_.trajectory_every > 0 && ((t + 1) % cfg_.trajectory_every == 0 || last || o.stop)) {
      double s[3] = {o.loss_sum, static_cast<double>(o.correct), static_cast<double>(o.n)};
      env.comm.sum(s, 3);  // the step's loss over the global batch
      if (traj_) {
        Supergraph& g = *g_;
        TrajectoryRecord rec;
        rec.step = t + 1;
        rec.images = images_seen_;
        rec.loss = s[0] / s[2];
        rec.acc = s[1] / s[2];
        rec.live_macs = live_macs_now();
        rec.zero_lambda = zero_.zero;
        rec.live_edges = g.live_edges();
        rec.revivals = reference_ ? revivals_ : -1;
        rec.lambda = g.lambda();
        traj_->append(std::move(rec));
        // also persist between checkpoints, at most once a minute, so a running
        // search can be watched (a file ahead of the checkpoint is trimmed on resume)
        if (seconds_since(last_traj_save_) >= kTrajectorySaveSecs) {
          traj_->save();
          last_traj_save_ = Clock::now();
        }
      }
    }
    if (tr_->adaptive_latency() && (t + 1) % epoch_steps_ == 0 && !o.stop && t + 1 < total_) {
      const std::string j = tr_->update_latency();  // §5.3: at the end of every search epoch
      env.out->metrics(str("{\"stage\":\"search\",\"step\":", t + 1, ",", j.substr(1)));
      env.out->line(str("adaptive latency at step ", t + 1, ": ",
                        j.substr(0, std::min<size_t>(j.find(",\"bits\""), j.size())), "}"));
    }
  }

  void agree(StageEnv& env, int64_t step) override {
    if (search_) env.comm.check_same(tr_->lambda_hash(), "λ (values, live mask, momentum)", step);
    average_bn_stats(env.comm, g_->backend(), g_->bn_stats());
    if (env.world > 1) env.comm.check_same(params_hash(g_->backend(), g_->params()), "the weights", step);
  }

  void save_state(StageEnv& /*env*/, TrainState& ts) override {
    ts.lambda_v = tr_->lambda_momentum();
    auto& k = ts.counters;
    k["stable"] = stable_;
    k["lambda_steps"] = lambda_steps_;
    if (reference_) k["revivals"] = revivals_;
    k["images_seen"] = images_seen_;
    if (traj_) traj_records_ = static_cast<int64_t>(traj_->records().size());
    if (search_ && traj_records_ >= 0) k["traj_records"] = traj_records_;
    if (tr_->adaptive_latency())
      for (size_t e = 0; e < tr_->latency_factors().size(); ++e)
        if (tr_->latency_factors()[e] != 1.f) ts.reals[str("latency_r/", e)] = tr_->latency_factors()[e];
    auto save_loader = [&](const BatchSource& L, const std::string& prefix) {
      const SamplerState s = L.state();
      k[prefix + "epoch"] = s.epoch;
      k[prefix + "position"] = s.position;
      k[prefix + "offset"] = s.offset;
    };
    save_loader(*wl_, "w_");
    if (ll_) save_loader(*ll_, "l_");
  }

  void write_checkpoint(StageEnv& /*env*/, const std::string& path, int64_t step, const TrainState& ts) override {
    info_.step = step;
    if (traj_) traj_->save();
    save_model_file(path, *g_, info_, &ts);
  }

  void finish(StageEnv& env, int64_t t) override {
    Supergraph& g = *g_;
    // validation on the λ-half (no augmentation) and test, after BN re-estimation
    val_ = evaluate(cfg_, env.comm, g, data_, false, data_.split.second, data_.split.first, cfg_.eval_batches);
    const EvalResult test =
        evaluate(cfg_, env.comm, g, data_, true, all_indices(data_.test_size()), data_.split.first, 0);
    test_acc_ = test.acc;
    const ZeroCount z = count_zero(g.lambda().data(), g.lambda().size());
    env.out->metrics(str("{\"stage\":\"", name(), "\",\"event\":\"final\",\"step\":", t,
                         ",\"val_loss\":", fmt("%.6f", val_.loss), ",\"val_acc\":", fmt("%.5f", val_.acc),
                         ",\"test_loss\":", fmt("%.6f", test.loss), ",\"test_acc\":", fmt("%.5f", test.acc),
                         ",\"live_macs\":", fmt("%.0f", live_macs_now()), ",\"full_macs\":", fmt("%.0f", full_),
                         ",\"zero_lambda\":", z.zero, ",\"total_lambda\":", z.total, ",\"live_ops\":", g.live_ops(),
                         ",\"time_s\":", fmt("%.3f", env.clock->elapsed()), "}"));
    info_.step = t;
    if (env.root) save_model_file(cfg_.out + "/model.h5", g, info_);
  }

  void done(StageEnv& env, int64_t /*t*/) override {
    Supergraph& g = *g_;
    if (search_)
      env.out->line(str("λ hash ", std::hex, tr_->lambda_hash(), std::dec, " (values, live mask, momentum)",
                        env.world > 1 ? str("; identical on all ", env.world, " ranks") : std::string()));
    const ZeroCount z = count_zero(g.lambda().data(), g.lambda().size());
    const double macs = live_macs_now();
    env.out->line(str(name(), " done: val acc ", fmt("%.4f", val_.acc), " (λ-half, ", val_.n, " images), test acc ",
                      fmt("%.4f", test_acc_), ", live MACs ", fmt("%.2fM", macs / 1e6), " of ",
                      fmt("%.2fM", full_ / 1e6), ", zero λ ", z.zero, "/", z.total, ", live ops ", g.live_ops(), " (",
                      ops_summary(cfg_.space, g), "); model in ", cfg_.out, "/model.h5"));
  }

 private:
  double live_macs_now() const {
    return search_ ? live_macs(cfg_.space, g_->lambda().data(), g_->mask().data()) : full_;
  }

  const RunConfig& cfg_;
  const bool search_;
  const Phase phase_;
  Data data_;
  std::string init_path_, threads_note_;
  std::unique_ptr<Backend> be_;
  std::unique_ptr<Supergraph> g_;
  std::unique_ptr<Trainer> tr_;
  std::unique_ptr<BatchSource> wl_, ll_;  // W-half, λ-half (search)
  std::unique_ptr<Trajectory> traj_;
  Batch batch_;
  ModelFileInfo info_;
  Clock::time_point last_traj_save_;
  int64_t global_batch_ = 0, epoch_steps_ = 0, total_ = 0;
  double full_ = 0;
  bool reference_ = false;  // reference pruning schedule: revivals counted
  // the search's counters (kept in checkpoints)
  int64_t stable_ = 0;        // λ-steps without a change of the live mask
  int64_t lambda_steps_ = 0;  // λ-steps done
  int64_t revivals_ = 0;      // λ entries revived (0 → > 0 while wired; reference schedule)
  int64_t images_seen_ = 0;   // training images consumed (global batch summed over the steps)
  int64_t traj_records_ = 0;  // trajectory records written (−1: unknown, a checkpoint of an older version)
  int64_t last_zero_ = 0, resumed_step_ = -1;
  ZeroCount zero_;  // λ exactly zero after the last step (its stop rules, metrics line, trajectory)
  EvalResult val_;
  double test_acc_ = 0;
};

}  // namespace

int run_pretrain(const RunConfig& cfg) {
  SupergraphStage s(cfg, Phase::Pretrain);
  return run_stage(cfg, s);
}
int run_search(const RunConfig& cfg) {
  SupergraphStage s(cfg, Phase::Search);
  return run_stage(cfg, s);
}

int run_bench(const RunConfig& cfg) {
  if (!cfg.arch.empty()) return run_bench_retrain(cfg);  // retrain steps of a derived network
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
  const auto median = median_of;
  const auto list = json_list;
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
      ",\"lambda\":", g.lambda().size(), ",\"w_step_ms\":", list(w_ms), ",\"lambda_step_ms\":", list(l_ms),
      prof ? str(",\"profile\":", profiling_json(*be, cfg.bench_steps)) : std::string(), "}");
  if (!comm.root()) return kExitOk;
  report_bench(cfg, prof ? be : nullptr, json);
  return kExitOk;
}

}  // namespace dsonas
