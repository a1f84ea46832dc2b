// train.cpp — pretrain and search loops, evaluation, metrics and the bench.
//
// Order of work in one search step (DESIGN.md §3): batch from the W- or
// λ-loader → Supergraph::train_step (W-step: weight gradients only; λ-step:
// λ gradients only) → finite check → clip ±clip (search) → W: NAG on every
// trainable parameter; λ: γ_e from the penalty mode, APG-NAG, §6.1 pruning,
// plan rebuilt when the live mask changed.
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
#include "dsonas/io/atomic_file.hpp"
#include "dsonas/io/model_file.hpp"
#include "dsonas/io/trajectory.hpp"
#include "dsonas/model/supergraph.hpp"
#include "dsonas/optim/lr_schedule.hpp"
#include "dsonas/optim/optimizer.hpp"
#include "dsonas/optim/penalty.hpp"
#include "dsonas/optim/prune.hpp"

namespace dsonas {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Streams of the counter-based RNG (core/rng.hpp).
constexpr uint64_t kStreamSplit = 11, kStreamW = 21, kStreamLam = 22, kStreamAugW = 31,
                   kStreamAugLam = 32, kStreamBn = 41;

// ---------------------------------------------------------------------------
// output: rank-0 console, DIR/log.rank0, DIR/metrics.jsonl

class Output {
 public:
  Output(const std::string& dir, bool progress) {
    if (!dir.empty()) {
      log_.open(dir + "/log.rank0", std::ios::app);
      metrics_.open(dir + "/metrics.jsonl", std::ios::app);
      if (!log_ || !metrics_) throw Error(kExitInternal, str("cannot write into ", dir));
    }
    tty_ = progress && isatty(fileno(stderr));
  }
  ~Output() { end_progress(); }
  void line(const std::string& s) {
    end_progress();
    std::cout << s << "\n" << std::flush;
    if (log_) log_ << s << "\n" << std::flush;
  }
  void metrics(const std::string& json) {
    if (metrics_) metrics_ << json << "\n" << std::flush;
  }
  /// Live status: overwritten in place on a TTY (and logged), else a plain line.
  void progress(const std::string& s) {
    if (!tty_) return line(s);
    std::cerr << "\r\033[K" << s << std::flush;
    open_ = true;
    if (log_) log_ << s << "\n" << std::flush;
  }

 private:
  void end_progress() {
    if (open_) std::cerr << "\n";
    open_ = false;
  }
  std::ofstream log_, metrics_;
  bool tty_ = false, open_ = false;
};

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// ---------------------------------------------------------------------------
// data

struct Data {
  ImageSet train, test;
  Split split;
};

Data load_data(const RunConfig& cfg) {
  Data d;
  const SearchSpace& s = cfg.space;
  if (cfg.dataset == "fmnist") {
    d.train = load_fashion_mnist(cfg.data_dir, true);
    d.test = load_fashion_mnist(cfg.data_dir, false);
  } else if (cfg.dataset == "cifar10") {
    d.train = load_cifar10(cfg.data_dir, true);
    d.test = load_cifar10(cfg.data_dir, false);
  } else {
    d.train = make_synthetic(cfg.synthetic_train, s.in_channels, s.in_height, s.in_width, s.classes, cfg.seed);
    d.test = make_synthetic(cfg.synthetic_test, s.in_channels, s.in_height, s.in_width, s.classes,
                            cfg.seed + 0x5eed);
  }
  for (const ImageSet* set : {&d.train, &d.test}) {
    if (set->c != s.in_channels || set->h != s.in_height || set->w != s.in_width)
      fail_usage(str("space.input: ", s.in_channels, "x", s.in_height, "x", s.in_width, " but ", set->source,
                     " holds ", set->c, "x", set->h, "x", set->w, " images"));
    if (set->classes > s.classes)
      fail_usage(str("space.classes: ", s.classes, " but ", set->source, " has ", set->classes, " classes"));
  }
  d.split = split_indices(d.train, cfg.split, mix64(cfg.seed, kStreamSplit, 0));
  return d;
}

/// Normalisation of the dataset (ALGORITHM.md §8.1 for CIFAR-10).
Augment eval_augment(const RunConfig& cfg) {
  return cfg.dataset == "cifar10" ? cifar10_eval_augment() : fashion_mnist_eval_augment();
}

/// The dataset's training augmentation (CIFAR-10: pad 4 with 127, crop, flip),
/// with data.pad (when given) and data.flip applied.
Augment train_augment(const RunConfig& cfg) {
  Augment a = cfg.dataset == "cifar10" ? cifar10_train_augment(false) : fashion_mnist_train_augment();
  if (cfg.pad >= 0) a.pad = cfg.pad;
  a.flip = cfg.flip;
  return a;
}

// ---------------------------------------------------------------------------
// output folder: created only after every input was checked; never clobbered

void prepare_out_dir(const std::string& dir, bool resume) {
  struct stat st;
  if (!resume && ::stat((dir + "/metrics.jsonl").c_str(), &st) == 0)
    fail_usage(str("--out: ", dir, " already holds a run (metrics.jsonl); choose another folder or add --resume"));
  std::string cur;
  std::stringstream ss(dir);
  std::string part;
  if (!dir.empty() && dir[0] == '/') cur = "/";
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    cur += part + "/";
    if (::mkdir(cur.c_str(), 0775) != 0 && errno != EEXIST)
      fail_usage(str("--out: cannot create ", cur, ": ", std::strerror(errno)));
  }
  if (::access(dir.c_str(), W_OK) != 0) fail_usage(str("--out: ", dir, " is not writable"));
}

std::string resolve_init(const std::string& init) {
  struct stat st;
  if (::stat(init.c_str(), &st) != 0) fail_usage(str("--init: ", init, " does not exist"));
  if (S_ISDIR(st.st_mode)) {
    const std::string f = init + "/model.h5";
    if (::stat(f.c_str(), &st) != 0) fail_usage(str("--init: ", init, " holds no model.h5 (did its pretrain finish?)"));
    return f;
  }
  return init;
}

// ---------------------------------------------------------------------------
// the trainer

enum class StepKind { W, Lambda };

class Trainer {
 public:
  Trainer(const RunConfig& cfg, Phase phase, Backend& be, Supergraph& g, int64_t epoch_steps)
      : cfg_(cfg), phase_(phase), be_(be), g_(g), mode_(parse_penalty_mode(cfg.penalty, "search.penalty")) {
    LrParams lp;
    lp.base_lr = cfg.lr;
    lp.epoch_size = std::max<int64_t>(1, epoch_steps);
    sched_ = make_lr_schedule(cfg.lr_schedule, lp);
    const size_t T = g.lambda().size();
    v_.assign(T, 0.f);
    gamma_e_.assign(T, 0.f);
    grad_.assign(T, 0.f);
    before_.assign(T, 0.f);
  }

  struct Out {
    StepResult r;
    double seconds = 0;
    bool mask_changed = false;
  };

  /// One step on a batch.  Returns the loss and timing.
  Out step(StepKind kind, int64_t t, const float* x, const int32_t* y, int n) {
    Out o;
    const auto t0 = Clock::now();
    const float lr = static_cast<float>(sched_->lr(t));
    const bool search = phase_ == Phase::Search;
    o.r = g_.train_step(x, y, n, 1.f / static_cast<float>(n), kind == StepKind::W, kind == StepKind::Lambda);
    if (!std::isfinite(o.r.loss_sum))
      fail_numerical(str("step ", t, ": non-finite loss ", o.r.loss_sum, " (rank ", error_rank(), ")"));
    if (!be_.all_finite(g_.flat_grad())) {
      for (Param& p : g_.params())
        if (!p.frozen && !be_.all_finite(p.grad))
          fail_numerical(str("step ", t, ": non-finite gradient in ", p.name, " (rank ", error_rank(), ")"));
      fail_numerical(str("step ", t, ": non-finite λ gradient (rank ", error_rank(), ")"));
    }
    if (search && cfg_.clip > 0) be_.clip(g_.flat_grad(), static_cast<float>(-cfg_.clip), static_cast<float>(cfg_.clip));
    if (kind == StepKind::W) {
      for (Param& p : g_.params()) {
        if (p.frozen) continue;
        be_.nag_update(p.value, p.grad, p.momentum, lr, static_cast<float>(cfg_.momentum),
                       weight_decay_for(p.name, phase_, static_cast<float>(cfg_.wd)));
      }
    } else {
      std::vector<float>& lam = g_.lambda();
      std::vector<uint8_t>& mask = g_.mask();
      be_.download(g_.lambda_grad(), grad_.data());
      penalty_gamma(g_.space(), lam.data(), mask.data(), static_cast<float>(cfg_.gamma), mode_, gamma_e_.data());
      before_ = lam;
      std::vector<uint8_t> mask_before = mask;
      apg_nag_step(lam.data(), v_.data(), grad_.data(), gamma_e_.data(), mask.data(), lam.size(),
                   static_cast<float>(lr * cfg_.lambda_lr_mult), static_cast<float>(cfg_.momentum));
      prune_all(g_.space(), lam.data(), mask.data(), v_.data(), before_.data());
      if (mask != mask_before) {
        g_.rebuild_plan();
        o.mask_changed = true;
      }
    }
    o.seconds = seconds_since(t0);
    return o;
  }

  double lr(int64_t t) const { return sched_->lr(t); }
  std::vector<float>& lambda_momentum() { return v_; }

 private:
  const RunConfig& cfg_;
  Phase phase_;
  Backend& be_;
  Supergraph& g_;
  PenaltyMode mode_;
  std::unique_ptr<LrSchedule> sched_;
  std::vector<float> v_, gamma_e_, grad_, before_;
};

struct EvalResult {
  double loss = 0, acc = 0;
  int64_t n = 0;
};

/// BN re-estimation on `images` training images (if > 0), then inference-mode
/// evaluation over `idx` of `set`.
EvalResult evaluate(const RunConfig& cfg, Supergraph& g, const ImageSet& set, const std::vector<int>& idx,
                    const ImageSet& bn_set, const std::vector<int>& bn_idx, int max_batches) {
  if (cfg.bn_reestimate > 0 && !bn_idx.empty()) {
    Sampler smp(bn_idx, cfg.batch, 0, 1, cfg.seed, kStreamBn);
    const int nb = std::max(1, cfg.bn_reestimate / cfg.batch);
    std::vector<std::vector<float>> bufs(static_cast<size_t>(nb));
    std::vector<int32_t> labels(static_cast<size_t>(cfg.batch));
    std::vector<const float*> ptrs;
    const Augment aug = train_augment(cfg);
    for (int b = 0; b < nb; ++b) {
      std::vector<int> ids = smp.next();
      bufs[static_cast<size_t>(b)].resize(static_cast<size_t>(cfg.batch) * bn_set.image_size());
      make_batch(bn_set, ids, aug, cfg.seed, kStreamBn, static_cast<uint64_t>(b), bufs[static_cast<size_t>(b)].data(),
                 labels.data());
      ptrs.push_back(bufs[static_cast<size_t>(b)].data());
    }
    g.reestimate_bn(ptrs, cfg.batch);
  }
  EvalIterator it(set, idx, cfg.batch, eval_augment(cfg));
  Batch b;
  EvalResult r;
  double loss = 0;
  int64_t correct = 0;
  int nb = 0;
  while (it.next(b)) {
    StepResult s = g.eval_batch(b.data.data(), b.labels.data(), b.n);
    loss += s.loss_sum;
    correct += s.correct;
    r.n += s.n;
    if (max_batches > 0 && ++nb >= max_batches) break;
  }
  r.loss = r.n ? loss / static_cast<double>(r.n) : 0;
  r.acc = r.n ? static_cast<double>(correct) / static_cast<double>(r.n) : 0;
  return r;
}

std::unique_ptr<Backend> backend_for(const RunConfig& cfg) {
  return make_backend(cfg.device == "cuda" ? Device::CUDA : Device::CPU, cfg.threads);
}

constexpr int64_t kRecomputeAutoBytes = int64_t(2) << 30;
constexpr double kTrajectorySaveSecs = 60;

/// Applies --recompute; returns a line for the log.
std::string apply_recompute(const RunConfig& cfg, Supergraph& g) {
  const int64_t est = g.activation_bytes_estimate(cfg.batch);
  const bool on = cfg.recompute == "blocks" || (cfg.recompute == "auto" && est > kRecomputeAutoBytes);
  g.set_recompute(on);
  return str("activations without recomputation ~", est >> 20, " MiB; per-block recomputation ", on ? "on" : "off",
             " (--recompute ", cfg.recompute, ")");
}

std::string ops_summary(const SearchSpace& s, Supergraph& g) {
  std::vector<int64_t> per = live_ops_per_type(s, g.lambda().data(), g.mask().data());
  std::string r;
  for (size_t j = 0; j < per.size(); ++j) r += str(j ? " " : "", op_name(s.ops[j]), "=", per[j]);
  return r;
}

// ---------------------------------------------------------------------------
// checkpoints: DIR/ckpt/step_<8 digits>.h5 and the pointer DIR/ckpt/latest

volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

void install_stop_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

std::string structural_fields(const RunConfig& cfg, const char* stage) {
  return str("stage=", stage, ";seed=", cfg.seed, ";dataset=", cfg.dataset, ";batch=", cfg.batch, ";split=", cfg.split,
             ";w-steps=", cfg.w_steps, ";lambda-steps=", cfg.lambda_steps, ";world_size=1");
}

/// Refuses a checkpoint whose structural fields differ: "field: checkpoint=A now=B", exit 3.
void check_structural(const std::string& path, const std::string& was, const std::string& now) {
  auto parse = [](const std::string& s) {
    std::map<std::string, std::string> m;
    std::stringstream ss(s);
    std::string kv;
    while (std::getline(ss, kv, ';')) {
      const size_t e = kv.find('=');
      if (e != std::string::npos) m[kv.substr(0, e)] = kv.substr(e + 1);
    }
    return m;
  };
  auto a = parse(was), b = parse(now);
  for (const auto& kv : b)
    if (a[kv.first] != kv.second)
      throw Error(kExitCheckpoint, str(path, ": ", kv.first, ": checkpoint=", a[kv.first], " now=", kv.second));
}

std::string ckpt_name(int64_t step) {
  char b[32];
  std::snprintf(b, sizeof b, "step_%08lld.h5", static_cast<long long>(step));
  return b;
}

/// Writes the checkpoint, then the `latest` pointer (both atomically).
std::string write_checkpoint(const std::string& out, Supergraph& g, const ModelFileInfo& info, const TrainState& ts) {
  const std::string dir = out + "/ckpt";
  if (::mkdir(dir.c_str(), 0775) != 0 && errno != EEXIST)
    throw Error(kExitInternal, str("cannot create ", dir, ": ", std::strerror(errno)));
  const std::string name = ckpt_name(info.step);
  save_model_file(dir + "/" + name, g, info, &ts);
  fault_point("ckpt-before-latest", info.step);
  const std::string pointer = name + "\n";
  write_file_atomically(dir + "/latest", pointer.data(), pointer.size());
  return dir + "/" + name;
}

/// Candidate checkpoints, best first: the one `latest` names, then every
/// step_*.h5 from the newest down.  Orphaned *.tmp files are removed.
std::vector<std::string> checkpoint_candidates(const std::string& out) {
  const std::string dir = out + "/ckpt";
  std::vector<std::string> files, order;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0) ::unlink((dir + "/" + n).c_str());
      else if (n.rfind("step_", 0) == 0 && n.size() > 3 && n.compare(n.size() - 3, 3, ".h5") == 0) files.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(files.rbegin(), files.rend());
  std::ifstream lf(dir + "/latest");
  std::string latest;
  if (lf >> latest && std::find(files.begin(), files.end(), latest) != files.end()) order.push_back(dir + "/" + latest);
  for (const std::string& f : files)
    if (f != latest) order.push_back(dir + "/" + f);
  return order;
}

/// Retention after a committed checkpoint: keep the newest `keep_last` (0 =
/// all) and every step that is a multiple of `keep_every` (milestones); never
/// the one `latest` names.
void prune_checkpoints(const std::string& out, int64_t keep_last, int64_t keep_every) {
  if (keep_last <= 0) return;
  const std::vector<std::string> files = checkpoint_candidates(out);  // latest first
  if (files.empty()) return;
  std::vector<std::pair<int64_t, std::string>> steps;
  for (const std::string& f : files) steps.push_back({std::stoll(f.substr(f.rfind("step_") + 5, 8)), f});
  std::sort(steps.rbegin(), steps.rend());  // newest first
  for (size_t i = 0; i < steps.size(); ++i) {
    const bool keep = static_cast<int64_t>(i) < keep_last || steps[i].second == files.front() ||
                      (keep_every > 0 && steps[i].first % keep_every == 0);
    if (!keep) ::unlink(steps[i].second.c_str());
  }
}

/// DIR/run.lock: one writer per output folder.  Holds "pid host"; a lock whose
/// process is gone (same host) is stale and taken over.
class RunLock {
 public:
  explicit RunLock(const std::string& dir) : path_(dir + "/run.lock") {
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    const std::string me = str(::getpid(), " ", host, "\n");
    for (int attempt = 0; attempt < 2; ++attempt) {
      int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
      if (fd >= 0) {
        if (::write(fd, me.data(), me.size()) != static_cast<ssize_t>(me.size())) {
          ::close(fd);
          throw Error(kExitInternal, str("cannot write ", path_, ": ", std::strerror(errno)));
        }
        ::close(fd);
        held_ = true;
        return;
      }
      std::ifstream in(path_);
      long pid = 0;
      std::string h;
      in >> pid >> h;
      const bool dead = h == host && pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
      if (!dead) fail_usage(str("--out: ", dir, " is in use by pid ", pid, " on ", h, " (", path_, ")"));
      ::unlink(path_.c_str());  // stale: its process is gone
    }
    fail_usage(str("--out: cannot take ", path_));
  }
  ~RunLock() {
    if (held_) ::unlink(path_.c_str());
  }

 private:
  std::string path_;
  bool held_ = false;
};

/// Seconds since the epoch of the job's end: --deadline (absolute seconds, or
/// +seconds from now) or SLURM_JOB_END_TIME; 0 when there is none.
double deadline_epoch(const RunConfig& cfg) {
  const double now = static_cast<double>(std::time(nullptr));
  if (!cfg.deadline.empty()) {
    try {
      if (cfg.deadline[0] == '+') return now + std::stod(cfg.deadline.substr(1));
      return std::stod(cfg.deadline);
    } catch (const std::exception&) {
      fail_usage(str("--deadline: '", cfg.deadline, "' is not +SECONDS or seconds since the epoch"));
    }
  }
  if (const char* e = std::getenv("SLURM_JOB_END_TIME")) {
    try {
      return std::stod(e);
    } catch (const std::exception&) {
      fail_usage(str("SLURM_JOB_END_TIME: '", e, "' is not a number"));
    }
  }
  return 0;
}

/// Keeps the metrics lines of steps ≤ step (the ones the resumed run would
/// otherwise write twice).
void truncate_metrics(const std::string& out, int64_t step) {
  const std::string path = out + "/metrics.jsonl", tmp = path + ".tmp";
  std::ifstream in(path);
  if (!in) return;
  std::ofstream o(tmp, std::ios::trunc);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("\"event\":\"final\"") != std::string::npos) continue;
    const size_t k = line.find("\"step\":");
    if (k != std::string::npos && std::stoll(line.substr(k + 7)) > step) continue;
    o << line << "\n";
  }
  o.close();
  std::rename(tmp.c_str(), path.c_str());
}

/// The shared loop of pretrain and search.
int train_loop(const RunConfig& cfg, Phase phase) {
  const bool search = phase == Phase::Search;
  const char* stage = search ? "search" : "pretrain";
  // 1. everything that can fail on bad input, before anything is written
  Data data = load_data(cfg);
  std::string init_path;
  if (search && !cfg.init.empty()) {
    init_path = resolve_init(cfg.init);
    read_model_space(init_path);
  }
  std::unique_ptr<Backend> be = backend_for(cfg);
  Supergraph g(cfg.space, *be, cfg.seed);
  if (!init_path.empty()) load_model_file(init_path, g, false);
  g.set_lambda_fixed(!search);
  if ((int)data.split.first.size() < cfg.batch || (int)data.split.second.size() < cfg.batch)
    fail_usage(str("data.batch: ", cfg.batch, " is larger than a half of the training set"));
  const double deadline = deadline_epoch(cfg);
  prepare_out_dir(cfg.out, cfg.resume);
  RunLock lock(cfg.out);
  install_stop_handlers();
  const std::string structural = structural_fields(cfg, stage);

  // resume: the newest checkpoint that loads (or, under --strict-resume, the newest or nothing)
  TrainState rs;
  std::string resumed_from, skipped;
  if (cfg.resume) {
    // An unreadable file falls back to an older one (unless --strict-resume);
    // a changed structural field is fatal whatever the file.
    auto unusable = [&](const std::string& c, const Error& e) {
      if (cfg.strict_resume || e.code() != kExitCheckpoint) throw e;
      skipped += str("checkpoint ", c, " unusable (", e.what(), "); trying an older one\n");
    };
    for (const std::string& c : checkpoint_candidates(cfg.out)) {
      std::string was;
      try {
        was = read_file_attr(c, "structural");
      } catch (const Error& e) {
        unusable(c, e);
        continue;
      }
      check_structural(c, was, structural);
      try {
        load_model_file(c, g, true, &rs);
        resumed_from = c;
        break;
      } catch (const Error& e) {
        unusable(c, e);
      }
    }
    if (resumed_from.empty() && !skipped.empty())
      throw Error(kExitCheckpoint, str(cfg.out, "/ckpt: no usable checkpoint"));
    truncate_metrics(cfg.out, resumed_from.empty() ? 0 : rs.counters["step"]);
  }

  Output out(cfg.out, cfg.progress);
  if (!skipped.empty()) out.line(skipped.substr(0, skipped.size() - 1));
  if (cfg.resume)
    out.line(resumed_from.empty() ? str("--resume: no checkpoint in ", cfg.out, "/ckpt; starting from the beginning")
                                  : str("resumed from ", resumed_from, " (step ", rs.counters["step"], ")"));
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
  {
    std::ofstream f(cfg.out + "/config.resolved.cfg");
    f << cfg.resolved;
  }
  if (!init_path.empty()) out.line(str("initialised from ", init_path));
  out.line(apply_recompute(cfg, g));

  Loader wl(data.train, Sampler(data.split.first, cfg.batch, 0, 1, cfg.seed, kStreamW), train_augment(cfg), cfg.seed,
            kStreamAugW, cfg.prefetch);
  std::unique_ptr<Loader> ll;
  if (search)
    ll.reset(new Loader(data.train, Sampler(data.split.second, cfg.batch, 0, 1, cfg.seed, kStreamLam),
                        train_augment(cfg), cfg.seed, kStreamAugLam, cfg.prefetch));
  const int cycle = search ? cfg.w_steps + cfg.lambda_steps : 1;
  const int64_t epoch_steps = search ? wl.steps_per_epoch() * cycle / cfg.w_steps : wl.steps_per_epoch();
  int64_t total = cfg.max_steps > 0 ? cfg.max_steps
                                    : static_cast<int64_t>(std::llround(cfg.epochs * static_cast<double>(epoch_steps)));
  total = std::max<int64_t>(total, 1);
  out.line(str("W-half ", data.split.first.size(), " images, λ-half ", data.split.second.size(), ", test ",
               data.test.n, "; ", epoch_steps, " steps per epoch, ", total, " steps; backend ", be->name(),
               " with ", be->threads(), " threads; ", g.num_weights(), " weights, ", g.lambda().size(), " λ"));

  Trainer tr(cfg, phase, *be, g, epoch_steps);
  const double full = full_macs(cfg.space);
  Batch batch;
  double win_loss = 0, win_time = 0;
  int64_t win_correct = 0, win_n = 0;
  int64_t stable = 0, lambda_steps = 0;
  int64_t t = 0;
  if (!resumed_from.empty()) {
    auto& k = rs.counters;
    t = k["step"];
    stable = k["stable"];
    lambda_steps = k["lambda_steps"];
    win_correct = k["win_correct"];
    win_n = k["win_n"];
    win_loss = rs.reals["win_loss"];
    win_time = rs.reals["win_time"];
    tr.lambda_momentum() = rs.lambda_v;
    wl.restore(SamplerState{k["w_epoch"], k["w_position"]});
    if (ll) ll->restore(SamplerState{k["l_epoch"], k["l_position"]});
  }
  // λ trajectory (search): saved before every checkpoint, so it is never
  // behind the newest checkpoint; records past a resumed checkpoint are dropped
  std::unique_ptr<Trajectory> traj;
  if (search && cfg.trajectory_every > 0) {
    traj.reset(new Trajectory(cfg.out + "/lambda_trajectory.h5", cfg.space.to_json(), g.lambda_groups()));
    if (!resumed_from.empty()) traj->load(t);
  }
  ModelFileInfo info;
  info.stage = stage;
  info.seed = cfg.seed;
  info.config = cfg.resolved;
  info.structural = structural;
  Clock::time_point last_ckpt = Clock::now(), last_traj_save = Clock::now();
  double max_step_s = 0;
  auto checkpoint = [&](int64_t step, bool finished) {
    TrainState ts;
    ts.lambda_v = tr.lambda_momentum();
    auto& k = ts.counters;
    k["step"] = step;
    k["finished"] = finished;
    k["stable"] = stable;
    k["lambda_steps"] = lambda_steps;
    k["win_correct"] = win_correct;
    k["win_n"] = win_n;
    ts.reals["win_loss"] = win_loss;
    ts.reals["win_time"] = win_time;
    const SamplerState ws = wl.state();
    k["w_epoch"] = ws.epoch;
    k["w_position"] = ws.position;
    if (ll) {
      const SamplerState ls = ll->state();
      k["l_epoch"] = ls.epoch;
      k["l_position"] = ls.position;
    }
    info.step = step;
    if (traj) traj->save();
    const std::string path = write_checkpoint(cfg.out, g, info, ts);
    prune_checkpoints(cfg.out, cfg.keep_last, cfg.keep_every);
    last_ckpt = Clock::now();
    return path;
  };
  const auto t_start = Clock::now();
  std::string stop_reason = "step budget reached";
  for (; t < total; ++t) {
    if (g_stop_signal) {
      const int sig = g_stop_signal;
      const std::string path = checkpoint(t, false);
      out.line(str(stage, ": signal ", sig, " (", sig == SIGTERM ? "SIGTERM" : "SIGUSR1", ") at step ", t,
                   ": checkpoint ", path, " written; exiting with ", int(kExitRequeue), " (resume with --resume)"));
      return kExitRequeue;
    }
    // stop before the deadline: margin plus two of the slowest steps so far
    if (deadline > 0 && static_cast<double>(std::time(nullptr)) + cfg.deadline_margin + 2 * max_step_s >= deadline) {
      const std::string path = checkpoint(t, false);
      out.line(str(stage, ": deadline in ", fmt("%.0f", deadline - static_cast<double>(std::time(nullptr))),
                   " s at step ", t, ": checkpoint ", path, " written; exiting with ", int(kExitRequeue)));
      return kExitRequeue;
    }
    if (cfg.checkpoint_secs > 0 && t > 0 && seconds_since(last_ckpt) >= cfg.checkpoint_secs) checkpoint(t, false);
    const StepKind kind = (t % cycle) < (search ? cfg.w_steps : 1) ? StepKind::W : StepKind::Lambda;
    Loader& L = kind == StepKind::W ? wl : *ll;
    L.next(batch);
    Trainer::Out o = tr.step(kind, t, batch.data.data(), batch.labels.data(), batch.n);
    max_step_s = std::max(max_step_s, o.seconds);
    win_loss += o.r.loss_sum;
    win_correct += o.r.correct;
    win_n += o.r.n;
    win_time += o.seconds;
    if (kind == StepKind::Lambda) {
      ++lambda_steps;
      stable = o.mask_changed ? 0 : stable + 1;
    }
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
      const double macs = search ? live_macs(cfg.space, g.lambda().data(), g.mask().data()) : full;
      const double ips = win_time > 0 ? static_cast<double>(win_n) / win_time : 0;
      const double epoch = static_cast<double>(t + 1) / static_cast<double>(epoch_steps);
      out.metrics(str("{\"stage\":\"", stage, "\",\"step\":", t + 1, ",\"epoch\":", fmt("%.4f", epoch),
                      ",\"lr\":", fmt("%.6g", tr.lr(t)), ",\"loss\":", fmt("%.6f", win_loss / win_n),
                      ",\"acc\":", fmt("%.5f", static_cast<double>(win_correct) / win_n), ",\"img_per_s\":",
                      fmt("%.2f", ips), ",\"live_macs\":", fmt("%.0f", macs), ",\"zero_lambda\":", z.zero,
                      ",\"total_lambda\":", z.total, ",\"live_ops\":", g.live_ops(), ",\"live_edges\":",
                      g.live_edges(), ",\"time_s\":", fmt("%.3f", seconds_since(t_start)), "}"));
      out.progress(str(stage, " epoch ", fmt("%.2f", epoch), " step ", t + 1, "/", total, "  ", fmt("%.1f", ips),
                       " img/s  loss ", fmt("%.4f", win_loss / win_n), "  acc ",
                       fmt("%.3f", static_cast<double>(win_correct) / win_n), "  MACs ", fmt("%.2fM", macs / 1e6),
                       "  zero λ ", z.zero, "/", z.total));
      win_loss = win_time = 0;
      win_correct = win_n = 0;
    }
    if (traj && ((t + 1) % cfg.trajectory_every == 0 || last || stop)) {
      TrajectoryRecord rec;
      rec.step = t + 1;
      rec.loss = o.r.loss_sum / o.r.n;
      rec.acc = static_cast<double>(o.r.correct) / o.r.n;
      rec.live_macs = live_macs(cfg.space, g.lambda().data(), g.mask().data());
      rec.zero_lambda = z.zero;
      rec.live_edges = g.live_edges();
      rec.lambda = g.lambda();
      traj->append(std::move(rec));
      // also persist between checkpoints, at most once a minute, so a running
      // search can be watched (a file ahead of the checkpoint is trimmed on resume)
      if (seconds_since(last_traj_save) >= kTrajectorySaveSecs) {
        traj->save();
        last_traj_save = Clock::now();
      }
    }
    if (cfg.checkpoint_every > 0 && (t + 1) % cfg.checkpoint_every == 0 && !stop && t + 1 < total)
      checkpoint(t + 1, false);
    fault_point("kill-after-step", t + 1);
    fault_point("signal-after-step", t + 1);
    if (stop) {
      ++t;
      break;
    }
  }
  out.line(str(stage, " stopped after ", t, " steps: ", stop_reason));

  // validation on the λ-half (no augmentation) and test, after BN re-estimation
  EvalResult val = evaluate(cfg, g, data.train, data.split.second, data.train, data.split.first, cfg.eval_batches);
  EvalResult test = evaluate(cfg, g, data.test, all_indices(data.test.n), data.train, data.split.first, 0);
  ZeroCount z = count_zero(g.lambda().data(), g.lambda().size());
  const double macs = search ? live_macs(cfg.space, g.lambda().data(), g.mask().data()) : full;
  out.metrics(str("{\"stage\":\"", stage, "\",\"event\":\"final\",\"step\":", t, ",\"val_loss\":",
                  fmt("%.6f", val.loss), ",\"val_acc\":", fmt("%.5f", val.acc), ",\"test_loss\":",
                  fmt("%.6f", test.loss), ",\"test_acc\":", fmt("%.5f", test.acc), ",\"live_macs\":",
                  fmt("%.0f", macs), ",\"full_macs\":", fmt("%.0f", full), ",\"zero_lambda\":", z.zero,
                  ",\"total_lambda\":", z.total, ",\"live_ops\":", g.live_ops(), ",\"time_s\":",
                  fmt("%.3f", seconds_since(t_start)), "}"));
  info.step = t;
  save_model_file(cfg.out + "/model.h5", g, info);
  checkpoint(t, true);
  out.line(str(stage, " done: val acc ", fmt("%.4f", val.acc), " (λ-half, ", val.n, " images), test acc ",
               fmt("%.4f", test.acc), ", live MACs ", fmt("%.2fM", macs / 1e6), " of ", fmt("%.2fM", full / 1e6),
               ", zero λ ", z.zero, "/", z.total, ", live ops ", g.live_ops(), " (", ops_summary(cfg.space, g),
               "); model in ", cfg.out, "/model.h5"));
  return kExitOk;
}

/// Peak resident memory of this process image.  VmHWM belongs to the address
/// space created by exec; ru_maxrss would include the RSS of the parent at fork
/// time (a benchmark driver that already holds a PyTorch model, say).
long peak_rss_kb() {
  std::ifstream st("/proc/self/status");
  std::string line;
  while (std::getline(st, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

}  // namespace

int run_pretrain(const RunConfig& cfg) { return train_loop(cfg, Phase::Pretrain); }
int run_search(const RunConfig& cfg) { return train_loop(cfg, Phase::Search); }

int run_bench(const RunConfig& cfg) {
  const SearchSpace& s = cfg.space;
  std::unique_ptr<Backend> base = backend_for(cfg);
  std::unique_ptr<Backend> prof = cfg.bench_profile ? make_profiling_backend(*base) : nullptr;
  Backend* be = prof ? prof.get() : base.get();
  Supergraph g(s, *be, cfg.seed);
  std::cerr << apply_recompute(cfg, g) << "\n";
  Trainer tr(cfg, Phase::Search, *be, g, 1000);
  ImageSet data = make_synthetic(cfg.batch, s.in_channels, s.in_height, s.in_width, s.classes, cfg.seed);
  std::vector<float> x(static_cast<size_t>(cfg.batch) * data.image_size());
  std::vector<int32_t> y(static_cast<size_t>(cfg.batch));
  make_batch(data, all_indices(data.n), fashion_mnist_eval_augment(), cfg.seed, 0, 0, x.data(), y.data());
  const int warm = std::min(2, cfg.bench_steps);
  for (int i = 0; i < warm; ++i)
    tr.step(i % 2 ? StepKind::Lambda : StepKind::W, i, x.data(), y.data(), cfg.batch);
  if (prof) profiling_report(*be, 1);  // drop the warm-up
  std::vector<double> w_ms, l_ms, all_ms;
  for (int i = 0; i < cfg.bench_steps; ++i) {
    const StepKind k = i % 2 ? StepKind::Lambda : StepKind::W;
    Trainer::Out o = tr.step(k, warm + i, x.data(), y.data(), cfg.batch);
    (k == StepKind::W ? w_ms : l_ms).push_back(o.seconds * 1e3);
    all_ms.push_back(o.seconds * 1e3);
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
  const double ips = cfg.batch / (med / 1e3);
  const double rss_mb = static_cast<double>(peak_rss_kb()) / 1024.0;
  const double alloc_mb = static_cast<double>(allocator(be->device()).peak()) / (1024.0 * 1024.0);
  std::string json = str("{\"preset\":\"", s.preset, "\",\"space\":", s.to_json(), ",\"batch\":", cfg.batch, ",\"threads\":", be->threads(),
                         ",\"steps\":", cfg.bench_steps, ",\"recompute\":", g.recompute() ? "true" : "false", ",\"step_ms_median\":", fmt("%.3f", med),
                         ",\"w_step_ms_median\":", fmt("%.3f", median(w_ms)), ",\"lambda_step_ms_median\":",
                         fmt("%.3f", median(l_ms)), ",\"img_per_s\":", fmt("%.3f", ips), ",\"peak_rss_mb\":",
                         fmt("%.1f", rss_mb), ",\"peak_tensor_mb\":", fmt("%.1f", alloc_mb), ",\"weights\":",
                         g.num_weights(), ",\"lambda\":", g.lambda().size(), ",\"w_step_ms\":", list(w_ms),
                         ",\"lambda_step_ms\":", list(l_ms), "}");
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
