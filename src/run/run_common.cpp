// run_common.cpp — shared machinery of the training commands (run_common.hpp).
#include "dsonas/run/run_common.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "dsonas/backend/profiling.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/optim/lambda_step.hpp"
#include "dsonas/core/fault.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/data/cifar.hpp"
#include "dsonas/data/imagenet_loader.hpp"
#include "dsonas/dist/communicator.hpp"
#include "dsonas/io/atomic_file.hpp"
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
#include "dsonas/backend/cuda_probe.hpp"  // host-only declarations, no CUDA header
#endif

namespace dsonas {

// ---------------------------------------------------------------------------
// output

Output::Output(const std::string& dir, bool progress, int rank) : console_(rank == 0) {
  if (!dir.empty()) {
    log_.open(str(dir, "/log.rank", rank), std::ios::app);
    if (rank == 0) {
      std::ifstream existing(dir + "/metrics.jsonl");
      std::string l;
      while (std::getline(existing, l)) ++metrics_lines_;
      metrics_.open(dir + "/metrics.jsonl", std::ios::app);
    }
    if (!log_ || (rank == 0 && !metrics_)) throw Error(kExitInternal, str("cannot write into ", dir));
  }
  tty_ = console_ && progress && isatty(fileno(stderr));
}
Output::~Output() { end_progress(); }
void Output::line(const std::string& s) {
  end_progress();
  if (console_) std::cout << s << "\n" << std::flush;
  if (log_) log_ << s << "\n" << std::flush;
}
void Output::metrics(const std::string& json) {
  if (!metrics_) return;
  metrics_ << json << "\n" << std::flush;
  ++metrics_lines_;
}
void Output::progress(const std::string& s) {
  if (!tty_) return line(s);
  std::cerr << "\r\033[K" << s << std::flush;
  open_ = true;
  if (log_) log_ << s << "\n" << std::flush;
}
void Output::end_progress() {
  if (open_) std::cerr << "\n";
  open_ = false;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

bool path_exists(const std::string& p, bool* is_dir) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return false;
  if (is_dir) *is_dir = S_ISDIR(st.st_mode);
  return true;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void report_bench(const RunConfig& cfg, Backend* profiled, const std::string& json) {
  if (profiled) std::cout << profiling_report(*profiled, cfg.bench_steps);
  std::cout << json << std::endl;
  if (!cfg.bench_json.empty()) {
    std::ofstream f(cfg.bench_json);
    if (!(f << json << "\n")) throw Error(kExitInternal, str("cannot write ", cfg.bench_json));
  }
}

std::string json_list(const std::vector<double>& v) {
  std::string r = "[";
  for (size_t i = 0; i < v.size(); ++i) r += str(i ? "," : "", fmt("%.3f", v[i]));
  return r + "]";
}

std::string human_duration(double s) {
  if (!(s >= 0) || s > 1e9) return "?";
  const int64_t n = static_cast<int64_t>(s + 0.5);
  char b[32];
  if (n < 60)
    std::snprintf(b, sizeof b, "%llds", static_cast<long long>(n));
  else if (n < 3600)
    std::snprintf(b, sizeof b, "%lldm%02llds", static_cast<long long>(n / 60), static_cast<long long>(n % 60));
  else if (n < 86400)
    std::snprintf(b, sizeof b, "%lldh%02lldm", static_cast<long long>(n / 3600), static_cast<long long>(n % 3600 / 60));
  else
    std::snprintf(b, sizeof b, "%lldd%02lldh", static_cast<long long>(n / 86400),
                  static_cast<long long>(n % 86400 / 3600));
  return b;
}

StageClock::StageClock(int64_t first_step, int64_t total_steps, double deadline_epoch, bool may_stop_early)
    : t0_(Clock::now()), first_(first_step), total_(total_steps), deadline_(deadline_epoch), bound_(may_stop_early) {}

double StageClock::eta(int64_t done) const {
  if (done <= first_) return -1;
  return std::max<double>(0, static_cast<double>(total_ - done)) * elapsed() / static_cast<double>(done - first_);
}

namespace {
// The whole pipeline's seconds left after `done` steps of the running stage (−1 unknown).
double pipeline_eta(const PipelineClock* p, double stage_eta, double elapsed, int64_t done, int64_t first) {
  if (!p || stage_eta < 0 || done <= first) return -1;
  const double after = p->after_current(elapsed / static_cast<double>(done - first));
  return after < 0 ? -1 : stage_eta + after;
}
}  // namespace

std::string StageClock::text(int64_t done) const {
  const double e = eta(done);
  std::string s = str("  elapsed ", human_duration(elapsed()), "  left ", bound_ ? "≤" : "~", human_duration(e));
  if (const PipelineClock* p = PipelineClock::active())
    s += str("  pipeline left ~", human_duration(pipeline_eta(p, e, elapsed(), done, first_)));
  if (deadline_ > 0) s += str("  deadline in ", human_duration(deadline_ - static_cast<double>(std::time(nullptr))));
  return s;
}

std::string StageClock::json(int64_t done) const {
  const double e = eta(done);
  std::string s = str(",\"time_s\":", fmt("%.3f", elapsed()), ",\"eta_s\":", e >= 0 ? fmt("%.1f", e) : "null");
  if (bound_) s += ",\"eta_is_bound\":true";
  if (const PipelineClock* p = PipelineClock::active()) {
    const double pe = pipeline_eta(p, e, elapsed(), done, first_);
    s += str(",\"pipeline_eta_s\":", pe >= 0 ? fmt("%.1f", pe) : "null");
  }
  if (deadline_ > 0) s += str(",\"deadline_in_s\":", fmt("%.0f", deadline_ - static_cast<double>(std::time(nullptr))));
  return s;
}

int64_t stage_epoch_steps(const RunConfig& cfg, int64_t w_loader_steps, bool search) {
  return search ? w_loader_steps * (cfg.w_steps + cfg.lambda_steps) / cfg.w_steps : w_loader_steps;
}

int64_t stage_total_steps(const RunConfig& cfg, int64_t epoch_steps) {
  const int64_t total = cfg.max_steps > 0
                            ? cfg.max_steps
                            : static_cast<int64_t>(std::llround(cfg.epochs * static_cast<double>(epoch_steps)));
  return std::max<int64_t>(total, 1);
}

namespace {
PipelineClock* g_pipeline_clock = nullptr;
}

PipelineClock::PipelineClock(const RunConfig* const (&cfg)[kStages], int world) : world_(world) {
  for (int s = 0; s < kStages; ++s) cfg_[s] = cfg[s];
  g_pipeline_clock = this;
}
PipelineClock::~PipelineClock() {
  if (g_pipeline_clock == this) g_pipeline_clock = nullptr;
}
PipelineClock* PipelineClock::active() { return g_pipeline_clock; }

void PipelineClock::begin(Stage s) { current_ = s; }

void PipelineClock::started(const StageWork& w) {
  work_[current_] = w;
  reported_[current_] = true;
  if (w.w_images > 0) w_images_ = w.w_images;
  if (w.train_images > 0) train_images_ = w.train_images;
  if (current_ <= kSearch && w.macs > 0 && !(live_macs_ > 0)) live_macs_ = w.macs;
}

int64_t PipelineClock::planned_steps(Stage s) const {
  const RunConfig* c = cfg_[s];
  if (!c) return 0;
  if (c->max_steps > 0) return stage_total_steps(*c, 0);
  // as train.cpp and retrain.cpp plan them (a sampler drops the partial global batch)
  const int64_t gb = static_cast<int64_t>(c->batch) * world_;
  const int64_t n = s <= kSearch ? w_images_ : train_images_;
  if (n <= 0 || gb <= 0) return -1;
  return stage_total_steps(*c, stage_epoch_steps(*c, n / gb, s == kSearch));
}

double PipelineClock::after_current(double sec_per_step) const {
  const StageWork& now = work_[current_];
  if (!reported_[current_] || !(sec_per_step > 0) || !(now.macs > 0) || now.global_batch <= 0) return -1;
  const double sec_per_unit = sec_per_step / (static_cast<double>(now.global_batch) * now.macs);
  // MACs per image of each stage's model
  double macs[kStages];
  macs[kPretrain] = macs[kSearch] = reported_[kPretrain] ? work_[kPretrain].macs : now.macs;
  if (reported_[kSearch]) macs[kSearch] = work_[kSearch].macs;
  macs[kRetrain] = reported_[kRetrain] ? work_[kRetrain].macs : live_macs_;
  macs[kBaseline] = reported_[kBaseline] ? work_[kBaseline].macs : macs[kRetrain];
  double left = 0;
  for (int s = current_ + 1; s < kStages; ++s) {
    if (!cfg_[s]) continue;
    const int64_t steps = planned_steps(static_cast<Stage>(s));
    if (steps < 0 || !(macs[s] > 0)) return -1;
    left += static_cast<double>(steps) * static_cast<double>(cfg_[s]->batch) * world_ * macs[s] * sec_per_unit;
  }
  return left;
}

// ---------------------------------------------------------------------------
// data

int Data::train_size() const { return imagenet() ? shards_train->size() : train.n; }
int Data::test_size() const { return imagenet() ? shards_test->size() : test.n; }

Data load_data(const RunConfig& cfg) {
  Data d;
  const SearchSpace& s = cfg.space;
  if (cfg.dataset == "imagenet") {
    // HDF5 shards of `dsonas pack`: opened (and checked) here, read on demand
    d.shards_train.reset(new ImageNetShards(cfg.data_dir, "train"));
    d.shards_test.reset(new ImageNetShards(cfg.data_dir, "val"));
    const int side = imagenet_train_augment().size;
    if (s.in_channels != 3 || s.in_height != side || s.in_width != side)
      fail_usage(str("space.input: ", s.in_channels, "x", s.in_height, "x", s.in_width, " but ImageNet batches are 3x",
                     side, "x", side));
    for (const ImageNetShards* set : {d.shards_train.get(), d.shards_test.get()})
      if (set->classes() > s.classes)
        fail_usage(str("space.classes: ", s.classes, " but ", set->source(), " has ", set->classes(), " classes"));
    d.split =
        split_labels(d.shards_train->labels(), d.shards_train->classes(), cfg.split, mix64(cfg.seed, kStreamSplit, 0));
    return d;
  }
  if (cfg.dataset == "fmnist") {
    d.train = load_fashion_mnist(cfg.data_dir, true);
    d.test = load_fashion_mnist(cfg.data_dir, false);
  } else if (cfg.dataset == "cifar10") {
    d.train = load_cifar10(cfg.data_dir, true);
    d.test = load_cifar10(cfg.data_dir, false);
  } else {
    d.train = make_synthetic(cfg.synthetic_train, s.in_channels, s.in_height, s.in_width, s.classes, cfg.seed);
    d.test = make_synthetic(cfg.synthetic_test, s.in_channels, s.in_height, s.in_width, s.classes, cfg.seed + 0x5eed);
  }
  for (const ImageSet* set : {&d.train, &d.test}) {
    if (set->c != s.in_channels || set->h != s.in_height || set->w != s.in_width)
      fail_usage(str("space.input: ", s.in_channels, "x", s.in_height, "x", s.in_width, " but ", set->source, " holds ",
                     set->c, "x", set->h, "x", set->w, " images"));
    if (set->classes > s.classes)
      fail_usage(str("space.classes: ", s.classes, " but ", set->source, " has ", set->classes, " classes"));
  }
  d.split = split_indices(d.train, cfg.split, mix64(cfg.seed, kStreamSplit, 0));
  return d;
}

std::unique_ptr<BatchSource> train_source(const RunConfig& cfg, const Data& d, std::vector<int> idx, int rank,
                                          int world, uint64_t sampler_stream, uint64_t aug_stream, const Augment* aug) {
  Sampler smp(std::move(idx), cfg.batch, rank, world, cfg.seed, sampler_stream);
  if (d.imagenet())
    return std::unique_ptr<BatchSource>(new ShardLoader(*d.shards_train, std::move(smp), imagenet_train_augment(),
                                                        cfg.seed, aug_stream, cfg.workers, 2));
  return std::unique_ptr<BatchSource>(
      new Loader(d.train, std::move(smp), aug ? *aug : train_augment(cfg), cfg.seed, aug_stream, cfg.prefetch));
}

std::unique_ptr<EvalSource> eval_source(const RunConfig& cfg, const Data& d, bool test_set, std::vector<int> idx,
                                        bool unit_range) {
  if (d.imagenet()) {
    ImageNetAugment a = imagenet_eval_augment();
    if (unit_range) {  // §8.2's statistics are on the 0..255 scale
      a.mean = {{0.f, 0.f, 0.f}};
      a.std = {{255.f, 255.f, 255.f}};
    }
    return std::unique_ptr<EvalSource>(new ShardEvalIterator(test_set ? *d.shards_test : *d.shards_train,
                                                             std::move(idx), cfg.batch, a, cfg.workers, 2));
  }
  Augment a = eval_augment(cfg);
  if (unit_range) {
    a.mean = {0.f};
    a.std = {1.f};
  }
  return std::unique_ptr<EvalSource>(new EvalIterator(test_set ? d.test : d.train, std::move(idx), cfg.batch, a));
}

InputNormalisation input_normalisation(const RunConfig& cfg, int channels) {
  InputNormalisation n;
  auto at = [](const auto& v, int c) { return v.size() == 1 ? v[0] : v[static_cast<size_t>(c)]; };
  if (cfg.dataset == "imagenet") {
    const ImageNetAugment a = imagenet_eval_augment();
    for (int c = 0; c < channels; ++c) {
      n.mean.push_back(static_cast<float>(a.mean[static_cast<size_t>(c % 3)] / 255.0));
      n.std.push_back(static_cast<float>(a.std[static_cast<size_t>(c % 3)] / 255.0));
    }
    return n;
  }
  const Augment a = eval_augment(cfg);
  a.validate(channels);
  for (int c = 0; c < channels; ++c) {
    n.mean.push_back(at(a.mean, c));
    n.std.push_back(at(a.std, c));
  }
  return n;
}

void training_batch(const RunConfig& cfg, const Data& d, const std::vector<int>& ids, uint64_t stream,
                    uint64_t batch_counter, uint64_t slot_offset, float* out_nchw, int32_t* labels) {
  if (d.imagenet())  // ids of these draws: distinct per (batch, rank slot, image)
    make_imagenet_batch(*d.shards_train, ids, imagenet_train_augment(), cfg.seed, stream,
                        (batch_counter << 20) + slot_offset, out_nchw, labels);
  else
    make_batch(d.train, ids, train_augment(cfg), cfg.seed, stream, batch_counter, out_nchw, labels, slot_offset);
}

/// Normalisation of the dataset (docs/method.md §8.1 for CIFAR-10).
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
    std::string f = init + "/model.h5";
    if (::stat(f.c_str(), &st) != 0) fail_usage(str("--init: ", init, " holds no model.h5 (did its pretrain finish?)"));
    return f;
  }
  return init;
}

int threads_for_rank(const RunConfig& cfg, std::string* note) {
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const int local = Communicator::multi_rank() ? Communicator::world().local_size() : 1;
  const int share = std::max(1, cores / local);
  if (cfg.threads <= 0) return share;
  if (local > 1 && cfg.threads > share) {
    // OpenMP threads spin: oversubscribed ranks run ~20× slower, never faster
    if (note)
      *note = str("threads: ", cfg.threads, " per rank × ", local, " ranks on ", cores, " cores oversubscribes ",
                  Communicator::world().host(), "; using ", share, " per rank");
    return share;
  }
  return cfg.threads;
}

std::unique_ptr<Backend> backend_for(const RunConfig& cfg) {
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
  // one rank per GPU: the node-local rank picks the device (docs/design.md §7)
  if (cfg.device == "cuda") cuda_select_device(Communicator::multi_rank() ? Communicator::world().local_rank() : 0);
#endif
  return make_backend(cfg.device == "cuda" ? Device::CUDA : Device::CPU, threads_for_rank(cfg, nullptr),
                      gpu_math_from(cfg.gpu_math));
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

std::string structural_fields(const RunConfig& cfg, const char* stage, int world_size) {
  const std::string st(stage);
  return str("stage=", stage, ";seed=", cfg.seed, ";dataset=", cfg.dataset, ";batch=", cfg.batch, ";split=", cfg.split,
             ";w-steps=", cfg.w_steps, ";lambda-steps=", cfg.lambda_steps, ";world_size=", world_size,
             st == "retrain" ? str(";cutout=", cfg.cutout) : std::string(),
             st == "search"
                 ? str(";prune=", PruneSchedule::from(cfg.prune, cfg.prune_dense_epochs, cfg.prune_every).to_string())
                 : std::string());
}

namespace {
std::map<std::string, std::string> parse_structural(const std::string& s) {
  std::map<std::string, std::string> m;
  std::stringstream ss(s);
  std::string kv;
  while (std::getline(ss, kv, ';')) {
    const size_t e = kv.find('=');
    if (e != std::string::npos) m[kv.substr(0, e)] = kv.substr(e + 1);
  }
  return m;
}
}  // namespace

std::string structural_field(const std::string& s, const std::string& key) {
  auto m = parse_structural(s);
  auto it = m.find(key);
  return it == m.end() ? std::string() : it->second;
}

int checkpoint_world_size(const RunConfig& cfg, const std::string& path, const std::string& was, int world) {
  const std::string w = structural_field(was, "world_size");
  int then = 0;
  try {
    then = std::stoi(w);
  } catch (const std::exception&) {
    throw Error(kExitCheckpoint, str(path, ": world_size: '", w, "' is not a number (corrupt checkpoint)"));
  }
  if (then < 1) throw Error(kExitCheckpoint, str(path, ": world_size: ", then, " is not a world size"));
  if (then != world && !cfg.allow_world_size_change)
    throw Error(kExitCheckpoint, str(path, ": world_size: checkpoint=", then, " now=", world,
                                     " (resume with the same number of ranks, or add --allow-world-size-change)"));
  return then;
}

int64_t rescale_step(int64_t t, int world_then, int world, int cycle) {
  DSO_CHECK(world_then > 0 && world > 0 && cycle > 0 && t >= 0, "rescale_step");
  const int64_t ph = t % cycle;
  const double cycles = static_cast<double>(t - ph) / cycle * world_then / world;
  return static_cast<int64_t>(std::llround(cycles)) * cycle + ph;
}

std::string world_change_note(int world_then, int world) {
  return str("world size changed from ", world_then, " to ", world,
             " ranks: each epoch continues from the samples it has taken (none skipped or repeated) and the "
             "step counter is rescaled to the new global batch; the run is no longer bit-continuous with the "
             "uninterrupted one");
}

void check_structural(const std::string& path, const std::string& was, const std::string& now,
                      const std::vector<std::string>& ignore) {
  auto a = parse_structural(was), b = parse_structural(now);
  // fields added later: what a checkpoint written before them did
  if (b.count("prune") && !a.count("prune")) a["prune"] = "step";
  for (const auto& kv : b)
    if (std::find(ignore.begin(), ignore.end(), kv.first) == ignore.end() && a[kv.first] != kv.second)
      throw Error(kExitCheckpoint, str(path, ": ", kv.first, ": checkpoint=", a[kv.first], " now=", kv.second));
}

std::string resume_checkpoint(const RunConfig& cfg, std::string (*read)(const std::string&, const char*),
                              const std::function<void(const std::string&, const std::string&)>& check,
                              const std::function<void(const std::string&)>& load, std::string* skipped) {
  auto unusable = [&](const std::string& c, const Error& e) {
    if (cfg.strict_resume || e.code() != kExitCheckpoint) throw e;
    *skipped += str("checkpoint ", c, " unusable (", e.what(), "); trying an older one\n");
  };
  for (const std::string& c : checkpoint_candidates(cfg.out)) {
    std::string was;
    try {
      was = read(c, "structural");
    } catch (const Error& e) {
      unusable(c, e);
      continue;
    }
    check(c, was);  // a changed structural field is fatal whatever the file
    try {
      load(c);
      return c;
    } catch (const Error& e) {
      unusable(c, e);
    }
  }
  if (!skipped->empty()) throw Error(kExitCheckpoint, str(cfg.out, "/ckpt: no usable checkpoint"));
  return "";
}

/// DIR/run.lock: one writer per output folder.  Holds "pid host"; a lock whose
/// process is gone (same host) is stale and taken over.

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

/// Keeps what the resumed run will not write again: the first `lines` lines
/// (checkpoint counter metrics_lines), or for older checkpoints the lines of
/// steps ≤ step; never a "final" event (the resumed stage writes its own).
void truncate_metrics(const std::string& out, int64_t step, int64_t lines) {
  const std::string path = out + "/metrics.jsonl", tmp = path + ".tmp";
  std::ifstream in(path);
  if (!in) return;
  std::ofstream o(tmp, std::ios::trunc);
  std::string line;
  for (int64_t i = 0; std::getline(in, line); ++i) {
    if (lines >= 0 && i >= lines) break;
    if (line.find("\"event\":\"final\"") != std::string::npos) continue;
    const size_t k = line.find("\"step\":");
    if (lines < 0 && k != std::string::npos && std::stoll(line.substr(k + 7)) > step) continue;
    o << line << "\n";
  }
  o.close();
  std::rename(tmp.c_str(), path.c_str());
}

Resumed resume_stage(const RunConfig& cfg, int world, bool root, const std::string& structural,
                     std::string (*read)(const std::string&, const char*),
                     const std::function<void(const std::string&, TrainState*)>& load) {
  Resumed r;
  r.world_then = world;
  if (!cfg.resume) return r;
  std::string skipped;
  r.path = resume_checkpoint(
      cfg, read,
      [&](const std::string& c, const std::string& was) {
        checkpoint_world_size(cfg, c, was, world);
        check_structural(c, was, structural, {"world_size"});
      },
      [&](const std::string& c) { load(c, &r.state); }, &skipped);
  // what the resumed run will write again goes (a finished stage writes nothing)
  if (root && !r.finished()) truncate_metrics(cfg.out, r.step(), r.counter("metrics_lines", -1));
  if (!skipped.empty()) r.notes.push_back(skipped.substr(0, skipped.size() - 1));
  r.notes.push_back(r.loaded() ? str("resumed from ", r.path, " (step ", r.step(), ")")
                               : str("--resume: no checkpoint in ", cfg.out, "/ckpt; starting from the beginning"));
  if (!r.loaded()) return r;
  // the world size of the checkpoint actually loaded (a candidate refused for
  // another reason may have been a different one)
  r.world_then = checkpoint_world_size(cfg, r.path, read(r.path, "structural"), world);
  if (r.world_then != world) {
    r.notes.push_back("warning: " + world_change_note(r.world_then, world));
    // the old run's checkpoints count other steps: all but the one loaded move
    // aside now, that one after the first checkpoint of this run
    r.aside_pending = true;
    const std::string note = root ? set_aside_checkpoints(cfg.out, r.path, r.world_then, r.step()) : "";
    if (!note.empty()) r.notes.push_back(note);
  }
  return r;
}

std::string Resumed::after_checkpoint(const std::string& out, const std::string& ckpt) {
  if (!aside_pending) return "";
  aside_pending = false;
  return set_aside_checkpoints(out, ckpt, world_then, step());
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

void average_bn_stats(Communicator& comm, Backend& be, std::vector<BnStats>& stats) {
  if (comm.size() == 1) return;
  std::vector<float> buf;
  for (BnStats& s : stats)
    for (Tensor* t : {&s.mean, &s.var}) {
      buf.resize(static_cast<size_t>(t->numel()));
      be.download(*t, buf.data());
      comm.sum(buf.data(), t->numel());
      for (float& v : buf) v /= static_cast<float>(comm.size());
      be.upload(buf.data(), *t);
    }
}

uint64_t params_hash(Backend& be, std::vector<Param>& params) {
  uint64_t h = 1469598103934665603ull;
  std::vector<float> buf;
  for (Param& p : params) {
    buf.resize(static_cast<size_t>(p.value.numel()));
    be.download(p.value, buf.data());
    h = hash_bytes(buf.data(), buf.size() * sizeof(float), h);
  }
  return h;
}

RunLock::RunLock(const std::string& dir) : path_(dir + "/run.lock") {
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

RunLock::~RunLock() {
  if (held_) ::unlink(path_.c_str());
}

}  // namespace dsonas
