// stage.cpp — run_stage, the loop of every training stage (see stage.hpp).
#include "dsonas/run/stage.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>

#include "dsonas/core/error.hpp"
#include "dsonas/core/fault.hpp"
#include "dsonas/dist/communicator.hpp"

namespace dsonas {

// ---------------------------------------------------------------------------
// the window

StatsWindow::Totals StatsWindow::global(Communicator& comm) const {
  double w[4] = {loss, static_cast<double>(correct), static_cast<double>(n), aux};
  comm.sum(w, 4);
  return {w[0], w[1], w[2], w[3]};
}

void StatsWindow::gather_to_root(Communicator& comm) {
  const Totals t = global(comm);
  const bool root = comm.root();
  loss = root ? t.loss : 0;
  correct = root ? static_cast<int64_t>(t.correct) : 0;
  n = root ? static_cast<int64_t>(t.n) : 0;
  aux = root ? t.aux : 0;
}

void StatsWindow::reset() {
  loss = aux = time = reduce = 0;
  correct = n = 0;
}

void StatsWindow::save(TrainState& ts, bool with_aux) const {
  ts.counters["win_correct"] = correct;
  ts.counters["win_n"] = n;
  ts.reals["win_loss"] = loss;
  ts.reals["win_time"] = time;
  if (with_aux) ts.reals["win_aux"] = aux;
}

void StatsWindow::restore(const Resumed& res, bool root) {
  if (root) {  // the checkpoint holds the window summed over the ranks: rank 0 carries it on
    correct = res.counter("win_correct");
    n = res.counter("win_n");
    loss = res.real("win_loss");
    aux = res.real("win_aux");
  }
  time = res.real("win_time");
}

// ---------------------------------------------------------------------------
// the loop

namespace {

/// The stop requests every rank acts on at the same step.
struct StopRequests {
  bool signal = false, deadline = false, timer = false;
  int sig = 0;
};

StopRequests poll_stop(const RunConfig& cfg, Communicator& comm, int64_t t, double deadline, double max_step_s,
                       double since_ckpt) {
  // Signals, the deadline and the checkpoint timer are seen by each rank at its
  // own moment: one small sum makes every rank act on the same step.  The
  // deadline is near when the margin plus two of the slowest steps so far remain.
  double flags[3] = {
      g_stop_signal ? static_cast<double>(g_stop_signal) : 0.0,
      deadline > 0 && static_cast<double>(std::time(nullptr)) + cfg.deadline_margin + 2 * max_step_s >= deadline ? 1.0
                                                                                                                 : 0.0,
      cfg.checkpoint_secs > 0 && t > 0 && since_ckpt >= cfg.checkpoint_secs ? 1.0 : 0.0};
  comm.sum(flags, 3);
  StopRequests r;
  r.signal = flags[0] > 0;
  r.deadline = flags[1] > 0;
  r.timer = flags[2] > 0;
  r.sig = g_stop_signal ? static_cast<int>(g_stop_signal) : SIGTERM;
  return r;
}

}  // namespace

int run_stage(const RunConfig& cfg, Stage& s) {
  const char* stage = s.name();
  Communicator& comm = Communicator::world();
  StageEnv env{cfg, comm, comm.size(), comm.rank(), comm.root(), std::string(), nullptr, nullptr};
  const double deadline = deadline_epoch(cfg);
  // rank 0 creates the folder and takes the lock; the others wait for it
  std::unique_ptr<RunLock> lock;
  if (env.root) {
    prepare_out_dir(cfg.out, cfg.resume);
    lock.reset(new RunLock(cfg.out));
  }
  comm.barrier();
  install_stop_handlers();
  env.structural = structural_fields(cfg, stage, env.world);

  // resume: the newest checkpoint that loads (or, under --strict-resume, the
  // newest or nothing).  Every rank reads the same files and takes the same
  // decisions; a changed world size is refused unless --allow-world-size-change.
  Resumed res = resume_stage(cfg, env.world, env.root, env.structural, s.attr_reader(),
                             [&](const std::string& c, TrainState* st) { s.load_checkpoint(c, st); });
  Output out(cfg.out, cfg.progress, env.rank);
  env.out = &out;
  for (const std::string& l : res.notes) out.line(l);
  if (res.loaded()) {  // runtime options may change across a resume: say which did
    const auto was = ini_map(read_root_attr(res.path, "config")), now = ini_map(cfg.resolved);
    for (const auto& kv : now) {
      auto it = was.find(kv.first);
      if (it != was.end() && it->second != kv.second)
        out.line(str("changed since the checkpoint: ", kv.first, " = ", it->second, " -> ", kv.second));
    }
  }
  if (res.finished()) {
    out.line(str(stage, " had already finished; nothing to do"));
    return kExitOk;
  }
  const int64_t total = s.begin(env);

  StatsWindow win;
  int64_t t = 0;
  if (res.loaded()) {
    t = res.step();
    win.restore(res, env.root);
    // A checkpoint of another world size (--allow-world-size-change): the stage's
    // loaders continue from the samples their epochs have already taken
    // (Sampler::reshard: none skipped, none repeated), and the step counter is
    // rescaled by the global batch ratio so that the lr schedule, the epoch count
    // and the step budget keep meaning the same amount of data; the W/λ phase of
    // the step is kept.
    s.restore(env, res);
    if (res.world_then != env.world) {
      const int64_t rescaled = rescale_step(t, res.world_then, env.world, s.cycle());
      out.line(str("step counter rescaled for the new global batch: ", t, " steps of ",
                   int64_t(cfg.batch) * res.world_then, " -> ", rescaled, " steps of ",
                   int64_t(cfg.batch) * env.world));
      t = rescaled;
    }
  }
  s.started(env, t);

  Clock::time_point last_ckpt = Clock::now();
  double max_step_s = 0;
  auto checkpoint = [&](int64_t step, bool finished) {
    s.agree(env, step);  // replicas must agree before one of them speaks for all
    win.gather_to_root(comm);
    const std::string name = ckpt_name(step), dir = cfg.out + "/ckpt";
    if (env.root) {
      TrainState ts;
      ts.counters["step"] = step;
      ts.counters["finished"] = finished;
      ts.counters["metrics_lines"] = out.metrics_lines();
      win.save(ts, s.aux_window());
      s.save_state(env, ts);
      if (::mkdir(dir.c_str(), 0775) != 0 && errno != EEXIST)
        throw Error(kExitInternal, str("cannot create ", dir, ": ", std::strerror(errno)));
      s.write_checkpoint(env, dir + "/" + name, step, ts);
      write_latest_pointer(cfg.out, name, step);
      const std::string note = res.after_checkpoint(cfg.out, dir + "/" + name);
      if (!note.empty()) out.line(note);
      prune_checkpoints(cfg.out, cfg.keep_last, cfg.keep_every);
    }
    comm.barrier();  // the others wait for rank 0's commit
    last_ckpt = Clock::now();
    return dir + "/" + name;
  };

  const StageClock clock(t, total, deadline, s.may_stop_early());
  env.clock = &clock;
  if (PipelineClock* pc = PipelineClock::active()) pc->started(s.work());
  std::string stop_reason = "step budget reached";
  for (; t < total; ++t) {
    const StopRequests req = poll_stop(cfg, comm, t, deadline, max_step_s, seconds_since(last_ckpt));
    if (req.signal) {
      const std::string path = checkpoint(t, false);
      out.line(str(stage, ": signal ", req.sig, " (", req.sig == SIGUSR1 ? "SIGUSR1" : "SIGTERM", ") at step ", t,
                   ": checkpoint ", path, " written; exiting with ", int(kExitRequeue), " (resume with --resume)"));
      return kExitRequeue;
    }
    if (req.deadline) {
      const std::string path = checkpoint(t, false);
      out.line(str(stage, ": deadline in ", fmt("%.0f", deadline - static_cast<double>(std::time(nullptr))),
                   " s at step ", t, ": checkpoint ", path, " written; exiting with ", int(kExitRequeue),
                   " (resume with --resume)"));
      return kExitRequeue;
    }
    if (req.timer) checkpoint(t, false);
    const StageStep o = s.step(env, t);
    max_step_s = std::max(max_step_s, o.seconds);
    win.loss += o.loss_sum;
    win.aux += o.aux_loss_sum;
    win.correct += o.correct;
    win.n += o.n;
    win.time += o.seconds;
    win.reduce += o.reduce_seconds;
    if (o.stop) stop_reason = o.stop_reason;
    const bool last = t + 1 == total;
    if ((t + 1) % cfg.log_every == 0 || last || o.stop) {
      s.log(env, t, win.global(comm), win);
      win.reset();
    }
    s.after_step(env, t, o, last);
    if (cfg.checkpoint_every > 0 && (t + 1) % cfg.checkpoint_every == 0 && !o.stop && t + 1 < total)
      checkpoint(t + 1, false);
    fault_point("kill-after-step", t + 1, env.rank);
    fault_point("signal-after-step", t + 1, env.rank);
    if (o.stop) {
      ++t;
      break;
    }
  }
  out.line(str(stage, " stopped after ", t, " steps: ", stop_reason));
  s.finish(env, t);
  checkpoint(t, true);  // also checks that the replicas agree
  s.done(env, t);
  return kExitOk;
}

}  // namespace dsonas
