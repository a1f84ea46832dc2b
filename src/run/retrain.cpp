// retrain.cpp — `dsonas retrain` and `dsonas eval` (design in run/retrain.hpp).
//
// Retraining is a stage of run_stage (run/stage.hpp), as pretrain and search
// are: the same folder, lock, resume, output, stop requests and checkpoint
// lifecycle around one kind of step (NAG on every parameter, BN γ decayed,
// docs/method.md §4.2) on the whole training set (no W/λ split).
#include "dsonas/run/retrain.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "dsonas/backend/backend.hpp"
#include "dsonas/backend/profiling.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/fault.hpp"
#include "dsonas/data/augment.hpp"
#include "dsonas/data/cifar.hpp"
#include "dsonas/data/dataset.hpp"
#include "dsonas/data/loader.hpp"
#include "dsonas/data/sampler.hpp"
#include "dsonas/dist/communicator.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "dsonas/io/logits_file.hpp"
#include "dsonas/io/model_file.hpp"
#include "dsonas/io/network_file.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/network.hpp"
#include "dsonas/optim/lr_schedule.hpp"
#include "dsonas/run/run_common.hpp"
#include "dsonas/run/stage.hpp"

namespace dsonas {
namespace {

std::string read_text(const std::string& path, const char* field) {
  bool dir = false;
  if (!path_exists(path, &dir)) fail_usage(str(field, ": ", path, " does not exist"));
  if (dir) fail_usage(str(field, ": ", path, " is a folder, not an architecture JSON"));
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_usage(str(field, ": cannot read ", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

NetworkOptions network_options(const RunConfig& cfg) {
  NetworkOptions o;
  o.dropout = cfg.dropout;
  o.drop_path = cfg.drop_path;
  o.aux_head = cfg.aux_head;
  o.aux_weight = cfg.aux_weight;
  o.label_smoothing = cfg.label_smoothing;
  o.validate();
  return o;
}

struct Counts {
  double loss = 0, top1 = 0, top5 = 0, n = 0;
  std::vector<int64_t> confusion;  // classes × classes, [true][predicted]
};

/// Inference over `idx` of the test (or training) set, each rank a contiguous
/// share, sums reduced.
Counts evaluate_net(const RunConfig& cfg, Communicator& comm, Network& net, const Data& data, bool test_set,
                    const std::vector<int>& idx, bool confusion) {
  const int world = comm.size(), rank = comm.rank(), K = net.space().classes;
  const size_t lo = idx.size() * static_cast<size_t>(rank) / static_cast<size_t>(world);
  const size_t hi = idx.size() * static_cast<size_t>(rank + 1) / static_cast<size_t>(world);
  std::unique_ptr<EvalSource> it = eval_source(
      cfg, data, test_set,
      std::vector<int>(idx.begin() + static_cast<std::ptrdiff_t>(lo), idx.begin() + static_cast<std::ptrdiff_t>(hi)));
  Batch b;
  Counts c;
  if (confusion) c.confusion.assign(static_cast<size_t>(K) * K, 0);
  std::vector<float> logits;
  double s[4] = {0, 0, 0, 0};
  while (it->next(b)) {
    NetStepResult r = net.eval_batch(b.data.data(), b.labels.data(), b.n, &logits);
    s[0] += r.loss_sum;
    s[1] += static_cast<double>(r.correct);
    s[3] += r.n;
    for (int i = 0; i < b.n; ++i) {
      const float* l = logits.data() + static_cast<size_t>(i) * K;
      const int y = b.labels[static_cast<size_t>(i)];
      int above = 0, arg = 0;  // top-5: fewer than 5 classes score higher than the label
      for (int k = 0; k < K; ++k) {
        if (l[k] > l[y]) ++above;
        if (l[k] > l[arg]) arg = k;
      }
      if (above < 5) s[2] += 1;
      if (confusion) ++c.confusion[static_cast<size_t>(y) * K + arg];
    }
  }
  comm.sum(s, 4);
  if (confusion) comm.sum(c.confusion.data(), static_cast<int64_t>(c.confusion.size()));
  c.loss = s[0];
  c.top1 = s[1];
  c.top5 = s[2];
  c.n = s[3];
  return c;
}

/// --logits: refuses (exit 2) a path in a missing folder or naming a folder.
void check_logits_path(const std::string& p) {
  bool dir = false;
  if (path_exists(p, &dir) && dir) fail_usage(str("--logits: ", p, " is a folder"));
  const size_t slash = p.find_last_of('/');
  const std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  if (!path_exists(parent, &dir) || !dir) fail_usage(str("--logits: ", p, ": folder ", parent, " does not exist"));
}

/// --logits: the first K images of the set through the evaluation preprocessing,
/// with and without its normalisation, and the network's logits (io/logits_file.hpp).
void write_logits(const RunConfig& cfg, Network& net, const Data& data, bool test_set, const std::string& file) {
  const SearchSpace& sp = net.space();
  const int total = test_set ? data.test_size() : data.train_size();
  const int K = std::min(cfg.logits_count, total);
  std::vector<int> idx(static_cast<size_t>(K));
  for (int i = 0; i < K; ++i) idx[static_cast<size_t>(i)] = i;
  LogitsRecord r;
  r.source = file;
  r.dataset = cfg.dataset;
  r.data = cfg.eval_data;
  const InputNormalisation norm = input_normalisation(cfg, sp.in_channels);
  r.mean = norm.mean;
  r.std = norm.std;
  r.n = K;
  r.c = sp.in_channels;
  r.h = sp.in_height;
  r.w = sp.in_width;
  r.classes = sp.classes;
  r.index = std::vector<int32_t>(idx.begin(), idx.end());
  std::unique_ptr<EvalSource> raw = eval_source(cfg, data, test_set, idx, true),
                              it = eval_source(cfg, data, test_set, idx);
  Batch a, b;
  std::vector<float> logits;
  while (it->next(b)) {
    DSO_CHECK(raw->next(a) && a.n == b.n, "--logits: the two passes over the images differ");
    net.eval_batch(b.data.data(), b.labels.data(), b.n, &logits);
    r.input.insert(r.input.end(), a.data.begin(), a.data.begin() + static_cast<std::ptrdiff_t>(a.n) * r.c * r.h * r.w);
    r.input_normalised.insert(r.input_normalised.end(), b.data.begin(),
                              b.data.begin() + static_cast<std::ptrdiff_t>(b.n) * r.c * r.h * r.w);
    r.logits.insert(r.logits.end(), logits.begin(), logits.begin() + static_cast<std::ptrdiff_t>(b.n) * r.classes);
    r.labels.insert(r.labels.end(), b.labels.begin(), b.labels.begin() + b.n);
  }
  DSO_CHECK(static_cast<int>(r.labels.size()) == K, "--logits: ", r.labels.size(), " images, expected ", K);
  save_logits_file(cfg.logits_file, r);
}

}  // namespace

Architecture retrain_architecture(const RunConfig& cfg, std::string* how) {
  Architecture a = cfg.arch == "baseline"
                       ? Architecture::baseline(cfg.space, parse_op(cfg.baseline_op, "retrain.baseline-op"))
                       : Architecture::from_json(read_text(cfg.arch, "--arch"), cfg.arch);
  if (cfg.arch != "baseline") a.check_fits(cfg.space, cfg.arch);
  int C = a.space().stem_channels;
  *how = str("its own width ", C);
  if (cfg.target_macs > 0) {
    C = width_for_target(a, cfg.target_macs, CostKind::Macs);
    *how = str("width ", C, " (MACs closest to retrain.target-macs ", fmt("%.4g", cfg.target_macs), ")");
  } else if (cfg.target_params > 0) {
    C = width_for_target(a, cfg.target_params, CostKind::Params);
    *how = str("width ", C, " (parameters closest to retrain.target-params ", fmt("%.4g", cfg.target_params), ")");
  } else if (cfg.retrain_width > 0) {
    C = cfg.retrain_width;
    *how = str("width ", C, " (retrain.width)");
  }
  return a.at_width(C);
}

namespace {

/// Retraining a derived network from scratch as a stage of run_stage: one kind
/// of step (NAG on every parameter), the whole training set (no W/λ split).
class RetrainStage : public Stage {
 public:
  /// Everything that can fail on bad input, before anything is written.
  explicit RetrainStage(const RunConfig& cfg)
      : cfg_(cfg), arch_(retrain_architecture(cfg, &how_)), opt_(network_options(cfg)), data_(load_data(cfg)) {
    threads_for_rank(cfg, &threads_note_);
    be_ = backend_for(cfg);
    net_.reset(new Network(arch_, *be_, cfg.seed, opt_));
    train_idx_ = all_indices(data_.train_size());
    const int world = Communicator::world().size();
    global_batch_ = static_cast<int64_t>(cfg.batch) * world;
    if (static_cast<int64_t>(train_idx_.size()) < global_batch_)
      fail_usage(str("data.batch: ", cfg.batch, " × ", world, " ranks is larger than the training set"));
    aug_ = train_augment(cfg);
    aug_.cutout = cfg.cutout;
    aug_.validate(cfg.space.in_channels);
  }

  const char* name() const override { return "retrain"; }
  std::string (*attr_reader() const)(const std::string&, const char*) override { return read_root_attr; }
  void load_checkpoint(const std::string& path, TrainState* st) override { load_network_file(path, *net_, st); }

  int64_t begin(StageEnv& env) override {
    Output& out = *env.out;
    Network& net = *net_;
    out.line(str("dsonas retrain: ",
                 cfg_.arch == "baseline" ? str("hand-made baseline (", cfg_.baseline_op, " chains)") : cfg_.arch,
                 " at ", how_, ": ", fmt("%.2fM", net.macs() / 1e6), " MACs, ", fmt("%.3fM", net.params_count() / 1e6),
                 " parameters, ", arch_.live_ops(), " ops"));
    out.line(cfg_.resolved);
    if (env.root) {
      std::ofstream(cfg_.out + "/config.resolved.cfg") << cfg_.resolved;
      const std::string j = arch_.to_json();
      write_file_atomically(cfg_.out + "/arch.json", j.data(), j.size());
    }
    if (!threads_note_.empty()) out.line("note: " + threads_note_);
    loader_ = train_source(cfg_, data_, train_idx_, env.rank, env.world, kStreamW, kStreamAugW, &aug_);
    epoch_steps_ = loader_->steps_per_epoch();
    total_ = stage_total_steps(cfg_, epoch_steps_);
    LrParams lp;
    lp.base_lr = cfg_.lr;
    lp.epoch_size = std::max<int64_t>(1, epoch_steps_);
    lp.total_epochs =
        std::max(1, static_cast<int>(std::ceil(static_cast<double>(total_) / static_cast<double>(epoch_steps_))));
    sched_ = make_lr_schedule(cfg_.lr_schedule, lp);
    wds_ = net.weight_decays(static_cast<float>(cfg_.wd));
    out.line(str("train ", train_idx_.size(), " images, test ", data_.test_size(), "; ", epoch_steps_,
                 " steps per epoch, ", total_, " steps; ", env.world, " rank", env.world > 1 ? "s" : "", " × batch ",
                 cfg_.batch, " = global batch ", global_batch_, "; backend ", be_->name(), " with ", be_->threads(),
                 " threads; ", net.num_weights(), " weights"));
    red_.reset(new GradReducer(env.comm, *be_, net.flat_grad(),
                               std::max<int64_t>(1, static_cast<int64_t>(cfg_.bucket_mb * (1 << 20) / 4))));
    return total_;
  }

  void restore(StageEnv& env, const Resumed& res) override {
    SamplerState s{res.counter("epoch"), res.counter("position"), res.counter("offset")};
    if (res.world_then != env.world)  // re-shard: none skipped or repeated
      s = Sampler::reshard(s, static_cast<int64_t>(train_idx_.size()), cfg_.batch, res.world_then, env.world);
    loader_->restore(s);
  }

  void started(StageEnv& env, int64_t /*t*/) override {
    info_.stage = name();
    info_.seed = cfg_.seed;
    info_.config = cfg_.resolved;
    info_.structural = env.structural;
    info_.world_size = env.world;
  }

  StageWork work() const override { return {global_batch_, net_->macs(), 0, static_cast<int64_t>(train_idx_.size())}; }

  StageStep step(StageEnv& env, int64_t t) override {
    Network& net = *net_;
    const auto t0 = Clock::now();
    loader_->next(batch_);
    if (fault_active("nan-grad", t + 1, env.rank)) batch_.data[0] = std::numeric_limits<float>::quiet_NaN();
    const double progress = std::min(1.0, static_cast<double>(t + 1) / static_cast<double>(total_));
    const NetStepResult r =
        net.train_step(batch_.data.data(), batch_.labels.data(), batch_.n, 1.f / static_cast<float>(global_batch_), t,
                       progress, static_cast<int64_t>(env.rank) * cfg_.batch);
    if (!std::isfinite(r.loss_sum))
      fail_numerical(str("step ", t + 1, ": non-finite loss ", r.loss_sum, " on rank ", env.rank));
    if (!be_->all_finite(net.flat_grad())) {
      for (Param& p : net.params())
        if (!be_->all_finite(p.grad))
          fail_numerical(str("step ", t + 1, ": non-finite gradient in ", p.name, " on rank ", env.rank,
                             " (found before the reduction)"));
    }
    red_->begin(0, net.num_weights());
    red_->finish();
    const float lr = static_cast<float>(sched_->lr(t));
    for (size_t i = 0; i < net.params().size(); ++i) {
      Param& p = net.params()[i];
      be_->nag_update(p.value, p.grad, p.momentum, lr, static_cast<float>(cfg_.momentum), wds_[i]);
    }
    be_->synchronize();  // a GPU step's NAG kernels count in its own time
    StageStep s;
    s.loss_sum = r.loss_sum;
    s.aux_loss_sum = r.aux_loss_sum;
    s.correct = r.correct;
    s.n = r.n;
    s.seconds = seconds_since(t0);
    return s;
  }

  void log(StageEnv& env, int64_t t, const StatsWindow::Totals& w, const StatsWindow& own) override {
    const double lr = sched_->lr(t);
    const double ips = own.time > 0 ? w.n / own.time : 0;
    const double epoch = static_cast<double>(t + 1) / static_cast<double>(epoch_steps_);
    env.out->metrics(str("{\"stage\":\"retrain\",\"step\":", t + 1, ",\"epoch\":", fmt("%.4f", epoch),
                         ",\"lr\":", fmt("%.6g", static_cast<float>(lr)), ",\"loss\":", fmt("%.6f", w.loss / w.n),
                         ",\"acc\":", fmt("%.5f", w.correct / w.n),
                         opt_.aux_head ? str(",\"aux_loss\":", fmt("%.6f", w.aux / w.n)) : std::string(),
                         ",\"img_per_s\":", fmt("%.2f", ips), env.clock->json(t + 1), "}"));
    env.out->progress(str("retrain epoch ", fmt("%.2f", epoch), " step ", t + 1, "/", total_, "  ", fmt("%.1f", ips),
                          " img/s  loss ", fmt("%.4f", w.loss / w.n), "  acc ", fmt("%.3f", w.correct / w.n), "  lr ",
                          fmt("%.4g", static_cast<float>(lr)), env.clock->text(t + 1)));
  }

  void agree(StageEnv& env, int64_t step) override {
    average_bn_stats(env.comm, net_->backend(), net_->bn_stats());
    if (env.world > 1) env.comm.check_same(params_hash(net_->backend(), net_->params()), "the weights", step);
  }

  void save_state(StageEnv& /*env*/, TrainState& ts) override {
    const SamplerState s = loader_->state();
    ts.counters["epoch"] = s.epoch;
    ts.counters["position"] = s.position;
    ts.counters["offset"] = s.offset;
  }

  void write_checkpoint(StageEnv& /*env*/, const std::string& path, int64_t step, const TrainState& ts) override {
    info_.step = step;
    save_network_file(path, *net_, info_, &ts);
  }

  bool aux_window() const override { return true; }

  void finish(StageEnv& env, int64_t t) override {
    Network& net = *net_;
    average_bn_stats(env.comm, net.backend(), net.bn_stats());
    const Counts c = evaluate_net(cfg_, env.comm, net, data_, true, all_indices(data_.test_size()), false);
    acc_ = c.n > 0 ? c.top1 / c.n : 0;
    top5_ = c.n > 0 ? c.top5 / c.n : 0;
    n_test_ = static_cast<int64_t>(c.n);
    env.out->metrics(str("{\"stage\":\"retrain\",\"event\":\"final\",\"step\":", t,
                         ",\"test_loss\":", fmt("%.6f", c.n > 0 ? c.loss / c.n : 0),
                         ",\"test_acc\":", fmt("%.5f", acc_), ",\"test_top5\":", fmt("%.5f", top5_),
                         ",\"macs\":", fmt("%.0f", net.macs()), ",\"params\":", fmt("%.0f", net.params_count()),
                         ",\"time_s\":", fmt("%.3f", env.clock->elapsed()), "}"));
    info_.step = t;
    if (env.root) save_network_file(cfg_.out + "/network.h5", net, info_);
  }

  void done(StageEnv& env, int64_t /*t*/) override {
    env.out->line(str("retrain done: test acc ", fmt("%.4f", acc_), " (top-5 ", fmt("%.4f", top5_), ", ", n_test_,
                      " images), ", fmt("%.2fM", net_->macs() / 1e6), " MACs, ",
                      fmt("%.3fM", net_->params_count() / 1e6), " parameters; network in ", cfg_.out, "/network.h5"));
  }

 private:
  const RunConfig& cfg_;
  std::string how_;  // the width and why (a log line)
  const Architecture arch_;
  const NetworkOptions opt_;
  Data data_;
  std::string threads_note_;
  std::unique_ptr<Backend> be_;
  std::unique_ptr<Network> net_;
  std::vector<int> train_idx_;
  Augment aug_;
  std::unique_ptr<BatchSource> loader_;
  std::unique_ptr<LrSchedule> sched_;
  std::unique_ptr<GradReducer> red_;
  std::vector<float> wds_;
  Batch batch_;
  NetworkFileInfo info_;
  int64_t global_batch_ = 0, epoch_steps_ = 0, total_ = 0, n_test_ = 0;
  double acc_ = 0, top5_ = 0;
};

}  // namespace

int run_retrain(const RunConfig& cfg) {
  RetrainStage s(cfg);
  return run_stage(cfg, s);
}

int run_bench_retrain(const RunConfig& cfg) {
  Communicator& comm = Communicator::world();
  if (comm.size() > 1) fail_usage("bench --arch: times one rank's retrain steps; run it without mpirun");
  std::string how;
  const Architecture arch = retrain_architecture(cfg, &how);
  std::unique_ptr<Backend> base = backend_for(cfg);
  std::unique_ptr<Backend> prof = cfg.bench_profile ? make_profiling_backend(*base) : nullptr;
  Backend* be = prof ? prof.get() : base.get();
  Network net(arch, *be, cfg.seed, network_options(cfg));
  const SearchSpace& s = net.space();
  ImageSet data = make_synthetic(cfg.batch, s.in_channels, s.in_height, s.in_width, s.classes, cfg.seed);
  std::vector<float> x(static_cast<size_t>(cfg.batch) * data.image_size());
  std::vector<int32_t> y(static_cast<size_t>(cfg.batch));
  make_batch(data, all_indices(cfg.batch), eval_augment(cfg), cfg.seed, 0, 0, x.data(), y.data());
  const std::vector<float> wds = net.weight_decays(static_cast<float>(cfg.wd));
  auto step = [&](int64_t t) {  // as a retrain step: forward, backward, NAG on every parameter
    const auto t0 = Clock::now();
    net.train_step(x.data(), y.data(), cfg.batch, 1.f / static_cast<float>(cfg.batch), t, 0.5, 0);
    for (size_t i = 0; i < net.params().size(); ++i) {
      Param& p = net.params()[i];
      be->nag_update(p.value, p.grad, p.momentum, static_cast<float>(cfg.lr), static_cast<float>(cfg.momentum), wds[i]);
    }
    be->synchronize();
    return seconds_since(t0) * 1e3;
  };
  const int warm = std::min(2, cfg.bench_steps);
  for (int i = 0; i < warm; ++i) step(i);
  if (prof) profiling_report(*be, 1);  // drop the warm-up
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(cfg.bench_steps));
  for (int i = 0; i < cfg.bench_steps; ++i) ms.push_back(step(warm + i));
  const double med = median_of(ms);
  const std::string json = str(
      "{\"kind\":\"retrain\",\"arch\":\"", cfg.arch, "\",\"width\":", s.stem_channels,
      ",\"macs\":", fmt("%.0f", net.macs()), ",\"params\":", fmt("%.0f", net.params_count()), ",\"batch\":", cfg.batch,
      ",\"backend\":\"", be->name(), "\",\"threads\":", be->threads(), ",\"steps\":", cfg.bench_steps,
      ",\"step_ms_median\":", fmt("%.3f", med), ",\"img_per_s\":", fmt("%.3f", cfg.batch / (med / 1e3)),
      ",\"peak_rss_mb\":", fmt("%.1f", static_cast<double>(peak_rss_kb()) / 1024.0), ",\"step_ms\":", json_list(ms),
      prof ? str(",\"profile\":", profiling_json(*be, cfg.bench_steps)) : std::string(),
      ",\"architecture\":", arch.to_json(), "}");
  report_bench(cfg, prof ? be : nullptr, json);
  return kExitOk;
}

EvalSummary evaluate_network_file(const RunConfig& cfg_in) {
  Communicator& comm = Communicator::world();
  bool dir = false;
  if (!path_exists(cfg_in.run_dir, &dir)) fail_usage(str("--run: ", cfg_in.run_dir, " does not exist"));
  const std::string file = dir ? cfg_in.run_dir + "/network.h5" : cfg_in.run_dir;
  const size_t slash = cfg_in.run_dir.rfind('/');
  const std::string run = dir ? cfg_in.run_dir : slash == std::string::npos ? "." : cfg_in.run_dir.substr(0, slash);
  if (!path_exists(file))
    throw Error(kExitCheckpoint, str("--run: ", cfg_in.run_dir, " holds no network.h5 (did its retrain finish?)"));
  if (!cfg_in.logits_file.empty()) check_logits_path(cfg_in.logits_file);
  RunConfig cfg = cfg_in;
  // the dataset the network was trained on, unless --config says otherwise
  if (cfg.config_file.empty()) {
    auto m = ini_map(read_root_attr(file, "config"));
    if (m.count("data.dataset")) cfg.dataset = m["data.dataset"];
    if (m.count("data.dir")) cfg.data_dir = m["data.dir"];
    if (m.count("seed")) cfg.seed = std::stoull(m["seed"]);
    if (m.count("data.synthetic-train")) cfg.synthetic_train = std::stoi(m["data.synthetic-train"]);
    if (m.count("data.synthetic-test")) cfg.synthetic_test = std::stoi(m["data.synthetic-test"]);
  }
  const Architecture arch = read_network_arch(file);
  cfg.space = arch.space();
  const NetworkOptions opt = NetworkOptions::from_string(read_root_attr(file, "options"), file);
  std::unique_ptr<Backend> be = backend_for(cfg);
  Network net(arch, *be, cfg.seed, opt);
  load_network_file(file, net);
  Data data = load_data(cfg);
  const bool test_set = cfg.eval_data != "train";
  const Counts c =
      evaluate_net(cfg, comm, net, data, test_set, all_indices(test_set ? data.test_size() : data.train_size()), true);
  EvalSummary s;
  s.n = static_cast<int64_t>(c.n);
  s.top1 = c.n > 0 ? c.top1 / c.n : 0;
  s.top5 = c.n > 0 ? c.top5 / c.n : 0;
  s.loss = c.n > 0 ? c.loss / c.n : 0;
  s.macs = net.macs();
  s.params = net.params_count();
  s.out_dir = cfg.out.empty() ? str(run.empty() ? "/" : run, "/eval_", cfg.eval_data) : cfg.out;
  if (!comm.root()) return s;
  if (!cfg.logits_file.empty()) write_logits(cfg, net, data, test_set, file);
  const int K = arch.space().classes;
  std::ostringstream conf, per, js;
  conf << "true\\predicted";
  for (int k = 0; k < K; ++k) conf << "," << k;
  conf << "\n";
  per << "class,images,correct,accuracy\n";
  js << "{\"file\":\"" << file << "\",\"data\":\"" << cfg.eval_data << "\",\"dataset\":\"" << cfg.dataset
     << "\",\"images\":" << s.n << ",\"top1\":" << fmt("%.6f", s.top1) << ",\"top5\":" << fmt("%.6f", s.top5)
     << ",\"loss\":" << fmt("%.6f", s.loss) << ",\"macs\":" << fmt("%.0f", s.macs)
     << ",\"params\":" << fmt("%.0f", s.params) << ",\"per_class_accuracy\":[";
  for (int y = 0; y < K; ++y) {
    conf << y;
    int64_t row = 0;
    for (int k = 0; k < K; ++k) {
      const int64_t v = c.confusion[static_cast<size_t>(y) * K + k];
      conf << "," << v;
      row += v;
    }
    conf << "\n";
    const int64_t hit = c.confusion[static_cast<size_t>(y) * K + y];
    const double a = row ? static_cast<double>(hit) / static_cast<double>(row) : 0;
    per << y << "," << row << "," << hit << "," << fmt("%.6f", a) << "\n";
    js << (y ? "," : "") << fmt("%.6f", a);
  }
  js << "]}\n";
  if (::mkdir(s.out_dir.c_str(), 0775) != 0 && errno != EEXIST)
    fail_usage(str("--out: cannot create ", s.out_dir, ": ", std::strerror(errno)));
  for (auto& f :
       {std::make_pair(std::string("/confusion.csv"), conf.str()),
        std::make_pair(std::string("/per_class.csv"), per.str()), std::make_pair(std::string("/eval.json"), js.str())})
    write_file_atomically(s.out_dir + f.first, f.second.data(), f.second.size());
  return s;
}

int run_eval(const RunConfig& cfg) {
  const EvalSummary s = evaluate_network_file(cfg);
  if (Communicator::world().root())
    std::cout << "eval (" << cfg.eval_data << ", " << s.n << " images): top-1 " << fmt("%.4f", s.top1) << ", top-5 "
              << fmt("%.4f", s.top5) << ", loss " << fmt("%.4f", s.loss) << "; " << fmt("%.2fM", s.macs / 1e6)
              << " MACs, " << fmt("%.3fM", s.params / 1e6) << " parameters; confusion matrix and per-class accuracy in "
              << s.out_dir << "/" << (cfg.logits_file.empty() ? "" : "; inputs and logits of the first images in ")
              << cfg.logits_file << std::endl;
  return kExitOk;
}

}  // namespace dsonas
