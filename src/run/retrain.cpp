// retrain.cpp — `dsonas retrain` and `dsonas eval` (design in run/retrain.hpp).
//
// The retrain loop is the search loop's little sibling: one kind of step (NAG on
// every parameter, BN γ decayed, docs/method.md §4.2), the whole training set
// (no W/λ split), and the same machinery around it from run_common: rank-aware
// output, run lock, checkpoint files with retention and fallback, signals and
// the deadline agreed over the ranks, bit-exact resume.
#include "dsonas/run/retrain.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/fault.hpp"
#include "dsonas/data/cifar.hpp"
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

namespace dsonas {
namespace {

bool file_exists(const std::string& p, bool* dir = nullptr) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return false;
  if (dir) *dir = S_ISDIR(st.st_mode);
  return true;
}

std::string read_text(const std::string& path, const char* field) {
  bool dir = false;
  if (!file_exists(path, &dir)) fail_usage(str(field, ": ", path, " does not exist"));
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
  if (file_exists(p, &dir) && dir) fail_usage(str("--logits: ", p, " is a folder"));
  const size_t slash = p.find_last_of('/');
  const std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  if (!file_exists(parent, &dir) || !dir) fail_usage(str("--logits: ", p, ": folder ", parent, " does not exist"));
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

int run_retrain(const RunConfig& cfg) {
  const char* stage = "retrain";
  Communicator& comm = Communicator::world();
  const int world = comm.size(), rank = comm.rank();
  const bool root = comm.root();
  // 1. everything that can fail on bad input, before anything is written
  std::string how;
  const Architecture arch = retrain_architecture(cfg, &how);
  const NetworkOptions opt = network_options(cfg);
  Data data = load_data(cfg);
  std::string threads_note;
  threads_for_rank(cfg, &threads_note);
  std::unique_ptr<Backend> be = backend_for(cfg);
  Network net(arch, *be, cfg.seed, opt);
  const std::vector<int> train_idx = all_indices(data.train_size());
  const int64_t global_batch = static_cast<int64_t>(cfg.batch) * world;
  if (static_cast<int64_t>(train_idx.size()) < global_batch)
    fail_usage(str("data.batch: ", cfg.batch, " × ", world, " ranks is larger than the training set"));
  Augment aug = train_augment(cfg);
  aug.cutout = cfg.cutout;
  aug.validate(cfg.space.in_channels);
  const double deadline = deadline_epoch(cfg);
  std::unique_ptr<RunLock> lock;
  if (root) {
    prepare_out_dir(cfg.out, cfg.resume);
    lock.reset(new RunLock(cfg.out));
  }
  comm.barrier();
  install_stop_handlers();
  const std::string structural = structural_fields(cfg, stage, world);

  Resumed res = resume_stage(cfg, world, root, structural, read_root_attr,
                             [&](const std::string& c, TrainState* st) { load_network_file(c, net, st); });
  TrainState& rs = res.state;
  const std::string& resumed_from = res.path;
  const int world_then = res.world_then;

  Output out(cfg.out, cfg.progress, rank);
  for (const std::string& l : res.notes) out.line(l);
  if (!resumed_from.empty() && rs.counters["finished"]) {
    out.line("retrain had already finished; nothing to do");
    return kExitOk;
  }
  out.line(str(
      "dsonas retrain: ", cfg.arch == "baseline" ? str("hand-made baseline (", cfg.baseline_op, " chains)") : cfg.arch,
      " at ", how, ": ", fmt("%.2fM", net.macs() / 1e6), " MACs, ", fmt("%.3fM", net.params_count() / 1e6),
      " parameters, ", arch.live_ops(), " ops"));
  out.line(cfg.resolved);
  if (root) {
    std::ofstream(cfg.out + "/config.resolved.cfg") << cfg.resolved;
    const std::string j = arch.to_json();
    write_file_atomically(cfg.out + "/arch.json", j.data(), j.size());
  }
  if (!threads_note.empty()) out.line("note: " + threads_note);

  std::unique_ptr<BatchSource> loaderp = train_source(cfg, data, train_idx, rank, world, kStreamW, kStreamAugW, &aug);
  BatchSource& loader = *loaderp;
  const int64_t epoch_steps = loader.steps_per_epoch();
  const int64_t total = stage_total_steps(cfg, epoch_steps);
  LrParams lp;
  lp.base_lr = cfg.lr;
  lp.epoch_size = std::max<int64_t>(1, epoch_steps);
  lp.total_epochs =
      std::max(1, static_cast<int>(std::ceil(static_cast<double>(total) / static_cast<double>(epoch_steps))));
  std::unique_ptr<LrSchedule> sched = make_lr_schedule(cfg.lr_schedule, lp);
  const std::vector<float> wds = net.weight_decays(static_cast<float>(cfg.wd));
  out.line(str("train ", train_idx.size(), " images, test ", data.test_size(), "; ", epoch_steps, " steps per epoch, ",
               total, " steps; ", world, " rank", world > 1 ? "s" : "", " × batch ", cfg.batch, " = global batch ",
               global_batch, "; backend ", be->name(), " with ", be->threads(), " threads; ", net.num_weights(),
               " weights"));

  GradReducer red(comm, *be, net.flat_grad(),
                  std::max<int64_t>(1, static_cast<int64_t>(cfg.bucket_mb * (1 << 20) / 4)));
  Batch batch;
  double win_loss = 0, win_time = 0, win_aux = 0;
  int64_t win_correct = 0, win_n = 0;
  int64_t t = 0;
  if (!resumed_from.empty()) {
    auto& k = rs.counters;
    t = k["step"];
    if (root) {
      win_correct = k["win_correct"];
      win_n = k["win_n"];
      win_loss = rs.reals["win_loss"];
      win_aux = rs.reals["win_aux"];
    }
    win_time = rs.reals["win_time"];
    SamplerState s{k["epoch"], k["position"], k["offset"]};
    if (world_then != world) {  // re-shard (none skipped or repeated) and rescale the step counter
      s = Sampler::reshard(s, static_cast<int64_t>(train_idx.size()), cfg.batch, world_then, world);
      t = rescale_step(t, world_then, world, 1);
      out.line(str("step counter rescaled for the new global batch: ", k["step"], " steps of ",
                   int64_t(cfg.batch) * world_then, " -> ", t, " steps of ", global_batch));
    }
    loader.restore(s);
  }
  NetworkFileInfo info;
  info.stage = stage;
  info.seed = cfg.seed;
  info.config = cfg.resolved;
  info.structural = structural;
  info.world_size = world;
  Clock::time_point last_ckpt = Clock::now();
  double max_step_s = 0;
  auto checkpoint = [&](int64_t step, bool finished) {
    average_bn_stats(comm, net.backend(), net.bn_stats());
    if (world > 1) comm.check_same(params_hash(net.backend(), net.params()), "the weights", step);
    double w[4] = {win_loss, static_cast<double>(win_correct), static_cast<double>(win_n), win_aux};
    comm.sum(w, 4);
    win_loss = root ? w[0] : 0;
    win_correct = root ? static_cast<int64_t>(w[1]) : 0;
    win_n = root ? static_cast<int64_t>(w[2]) : 0;
    win_aux = root ? w[3] : 0;
    const std::string name = ckpt_name(step);
    if (root) {
      TrainState ts;
      auto& k = ts.counters;
      k["step"] = step;
      k["finished"] = finished;
      k["win_correct"] = win_correct;
      k["win_n"] = win_n;
      k["metrics_lines"] = out.metrics_lines();
      ts.reals["win_loss"] = win_loss;
      ts.reals["win_aux"] = win_aux;
      ts.reals["win_time"] = win_time;
      const SamplerState s = loader.state();
      k["epoch"] = s.epoch;
      k["position"] = s.position;
      k["offset"] = s.offset;
      info.step = step;
      const std::string dir = cfg.out + "/ckpt";
      if (::mkdir(dir.c_str(), 0775) != 0 && errno != EEXIST)
        throw Error(kExitInternal, str("cannot create ", dir, ": ", std::strerror(errno)));
      save_network_file(dir + "/" + name, net, info, &ts);
      write_latest_pointer(cfg.out, name, step);
      const std::string note = res.after_checkpoint(cfg.out, dir + "/" + name);
      if (!note.empty()) out.line(note);
      prune_checkpoints(cfg.out, cfg.keep_last, cfg.keep_every);
    }
    comm.barrier();
    last_ckpt = Clock::now();
    return str(cfg.out, "/ckpt/", name);
  };

  const auto t_start = Clock::now();
  const StageClock clock(t, total, deadline, false);
  if (PipelineClock* pc = PipelineClock::active())
    pc->started({global_batch, net.macs(), 0, static_cast<int64_t>(train_idx.size())});
  const int64_t W = net.num_weights();
  const float scale = 1.f / static_cast<float>(global_batch);
  for (; t < total; ++t) {
    double flags[3] = {
        g_stop_signal ? static_cast<double>(g_stop_signal) : 0.0,
        deadline > 0 && static_cast<double>(std::time(nullptr)) + cfg.deadline_margin + 2 * max_step_s >= deadline
            ? 1.0
            : 0.0,
        cfg.checkpoint_secs > 0 && t > 0 && seconds_since(last_ckpt) >= cfg.checkpoint_secs ? 1.0 : 0.0};
    comm.sum(flags, 3);
    if (flags[0] > 0 || flags[1] > 0) {
      const std::string path = checkpoint(t, false);
      out.line(str(stage, flags[0] > 0 ? ": signal" : ": deadline", " at step ", t, ": checkpoint ", path,
                   " written; exiting with ", int(kExitRequeue), " (resume with --resume)"));
      return kExitRequeue;
    }
    if (flags[2] > 0) checkpoint(t, false);
    const auto t0 = Clock::now();
    loader.next(batch);
    if (fault_active("nan-grad", t + 1, rank)) batch.data[0] = std::numeric_limits<float>::quiet_NaN();
    const double progress = std::min(1.0, static_cast<double>(t + 1) / static_cast<double>(total));
    NetStepResult r = net.train_step(batch.data.data(), batch.labels.data(), batch.n, scale, t, progress,
                                     static_cast<int64_t>(rank) * cfg.batch);
    if (!std::isfinite(r.loss_sum))
      fail_numerical(str("step ", t + 1, ": non-finite loss ", r.loss_sum, " on rank ", rank));
    if (!be->all_finite(net.flat_grad())) {
      for (Param& p : net.params())
        if (!be->all_finite(p.grad))
          fail_numerical(str("step ", t + 1, ": non-finite gradient in ", p.name, " on rank ", rank,
                             " (found before the reduction)"));
    }
    red.begin(0, W);
    red.finish();
    const float lr = static_cast<float>(sched->lr(t));
    for (size_t i = 0; i < net.params().size(); ++i) {
      Param& p = net.params()[i];
      be->nag_update(p.value, p.grad, p.momentum, lr, static_cast<float>(cfg.momentum), wds[i]);
    }
    be->synchronize();  // a GPU step's NAG kernels count in its own time
    const double secs = seconds_since(t0);
    max_step_s = std::max(max_step_s, secs);
    win_loss += r.loss_sum;
    win_aux += r.aux_loss_sum;
    win_correct += r.correct;
    win_n += r.n;
    win_time += secs;
    const bool last = t + 1 == total;
    if ((t + 1) % cfg.log_every == 0 || last) {
      double w[4] = {win_loss, static_cast<double>(win_correct), static_cast<double>(win_n), win_aux};
      comm.sum(w, 4);
      const double ips = win_time > 0 ? w[2] / win_time : 0;
      const double epoch = static_cast<double>(t + 1) / static_cast<double>(epoch_steps);
      out.metrics(str("{\"stage\":\"retrain\",\"step\":", t + 1, ",\"epoch\":", fmt("%.4f", epoch), ",\"lr\":",
                      fmt("%.6g", lr), ",\"loss\":", fmt("%.6f", w[0] / w[2]), ",\"acc\":", fmt("%.5f", w[1] / w[2]),
                      opt.aux_head ? str(",\"aux_loss\":", fmt("%.6f", w[3] / w[2])) : std::string(),
                      ",\"img_per_s\":", fmt("%.2f", ips), clock.json(t + 1), "}"));
      out.progress(str("retrain epoch ", fmt("%.2f", epoch), " step ", t + 1, "/", total, "  ", fmt("%.1f", ips),
                       " img/s  loss ", fmt("%.4f", w[0] / w[2]), "  acc ", fmt("%.3f", w[1] / w[2]), "  lr ",
                       fmt("%.4g", lr), clock.text(t + 1)));
      win_loss = win_time = win_aux = 0;
      win_correct = win_n = 0;
    }
    if (cfg.checkpoint_every > 0 && (t + 1) % cfg.checkpoint_every == 0 && t + 1 < total) checkpoint(t + 1, false);
    fault_point("kill-after-step", t + 1, rank);
    fault_point("signal-after-step", t + 1, rank);
  }
  average_bn_stats(comm, net.backend(), net.bn_stats());
  const Counts c = evaluate_net(cfg, comm, net, data, true, all_indices(data.test_size()), false);
  const double acc = c.n > 0 ? c.top1 / c.n : 0, top5 = c.n > 0 ? c.top5 / c.n : 0;
  out.metrics(str("{\"stage\":\"retrain\",\"event\":\"final\",\"step\":", t,
                  ",\"test_loss\":", fmt("%.6f", c.n > 0 ? c.loss / c.n : 0), ",\"test_acc\":", fmt("%.5f", acc),
                  ",\"test_top5\":", fmt("%.5f", top5), ",\"macs\":", fmt("%.0f", net.macs()), ",\"params\":",
                  fmt("%.0f", net.params_count()), ",\"time_s\":", fmt("%.3f", seconds_since(t_start)), "}"));
  info.step = t;
  if (root) save_network_file(cfg.out + "/network.h5", net, info);
  checkpoint(t, true);
  out.line(str("retrain done: test acc ", fmt("%.4f", acc), " (top-5 ", fmt("%.4f", top5), ", ",
               static_cast<int64_t>(c.n), " images), ", fmt("%.2fM", net.macs() / 1e6), " MACs, ",
               fmt("%.3fM", net.params_count() / 1e6), " parameters; network in ", cfg.out, "/network.h5"));
  return kExitOk;
}

EvalSummary evaluate_network_file(const RunConfig& cfg_in) {
  Communicator& comm = Communicator::world();
  bool dir = false;
  if (!file_exists(cfg_in.run_dir, &dir)) fail_usage(str("--run: ", cfg_in.run_dir, " does not exist"));
  const std::string file = dir ? cfg_in.run_dir + "/network.h5" : cfg_in.run_dir;
  const size_t slash = cfg_in.run_dir.rfind('/');
  const std::string run = dir ? cfg_in.run_dir : slash == std::string::npos ? "." : cfg_in.run_dir.substr(0, slash);
  if (!file_exists(file))
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
