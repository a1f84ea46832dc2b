// stage.hpp — the one loop of every training stage (pretrain, search, retrain).
//
// run_stage() owns what the stages share: the output folder and its lock, the
// stop handlers, --resume (candidates, fallback, world-size change, the stage's
// counters back), the console/log/metrics output, the window of training
// statistics between two metrics lines, the stop requests agreed over the ranks
// (signal, job deadline, checkpoint timer), the checkpoint lifecycle (the ranks
// agree, rank 0 writes the file, `latest`, set-aside, retention, the others wait)
// and the order of the final steps.  A Stage plugs in what is its own: its model
// and data, one step, its metrics line, its state in a checkpoint and its end.
//
// Order of one step t (0-based; steps are named t + 1 in the logs):
//   stop requests → [checkpoint and exit 3 | timer checkpoint] → Stage::step →
//   window → metrics line (every log-every steps, the last, a stop) →
//   Stage::after_step → checkpoint-every → fault points → stop: leave the loop.
// After the loop: "stopped after" line → Stage::finish (evaluation, the model file)
// → the final checkpoint (finished = 1) → Stage::done.
#pragma once
#include <cstdint>
#include <string>

#include "dsonas/io/model_file.hpp"  // TrainState
#include "dsonas/run/config.hpp"
#include "dsonas/run/run_common.hpp"

namespace dsonas {

class Communicator;

/// Training statistics between two metrics lines: per rank while training; at a
/// checkpoint summed over the ranks onto rank 0, which carries them on (and so
/// does a resumed run).  The times are rank 0's own.
struct StatsWindow {
  double loss = 0, aux = 0;     // sums of the per-image losses (aux: the auxiliary head's)
  int64_t correct = 0, n = 0;   // top-1 hits, images
  double time = 0, reduce = 0;  // seconds of the steps, and of those spent waiting for the reduction
  /// Loss, top-1 hits, images and aux loss summed over the ranks (every rank gets them).
  struct Totals {
    double loss = 0, correct = 0, n = 0, aux = 0;
  };
  Totals global(Communicator& comm) const;
  /// The window summed over the ranks onto rank 0; the other ranks' are zeroed.
  void gather_to_root(Communicator& comm);
  void reset();
  /// Into / out of a checkpoint's state (aux only where the stage has an aux loss).
  void save(TrainState& ts, bool with_aux) const;
  void restore(const Resumed& res, bool root);
};

/// What one Stage::step did on this rank.
struct StageStep {
  double loss_sum = 0, aux_loss_sum = 0;
  int64_t correct = 0, n = 0;
  double seconds = 0, reduce_seconds = 0;
  bool stop = false;        // the stage ends after this step (a search's stop rule)
  std::string stop_reason;  // why (with stop)
};

/// What run_stage shares with its Stage.
struct StageEnv {
  const RunConfig& cfg;
  Communicator& comm;
  int world = 1, rank = 0;
  bool root = true;
  std::string structural;             // fields a resume must not change (structural_fields)
  Output* out = nullptr;              // from Stage::begin on
  const StageClock* clock = nullptr;  // from the first step on
};

/// A training stage as run_stage runs it.
class Stage {
 public:
  virtual ~Stage() = default;
  /// "pretrain", "search", "retrain": log lines, structural fields, file kinds.
  virtual const char* name() const = 0;
  /// Resume: the attribute reader of the stage's file kind, and its loader.
  virtual std::string (*attr_reader() const)(const std::string& path, const char* attr) = 0;
  virtual void load_checkpoint(const std::string& path, TrainState* state) = 0;
  /// After the folder is open and the resume decided: the header lines, the
  /// loaders and the plan; returns the stage's total steps.
  virtual int64_t begin(StageEnv& env) = 0;
  /// A resumed run: the stage's own counters, loaders and optimiser state back
  /// from res.state (written by save_state at world size res.world_then).
  virtual void restore(StageEnv& env, const Resumed& res) = 0;
  /// Steps per W/λ cycle (1 but in a search): a changed world size rescales the
  /// step counter in whole cycles.
  virtual int cycle() const { return 1; }
  /// Once the first step t is known (0, or the resumed one); before the loop.
  virtual void started(StageEnv& env, int64_t t) = 0;
  /// Whether the stage may stop before its step budget (the clock's "≤").
  virtual bool may_stop_early() const { return false; }
  /// What the pipeline's clock is told when the stage starts.
  virtual StageWork work() const = 0;
  /// One step t on this rank's batch.
  virtual StageStep step(StageEnv& env, int64_t t) = 0;
  /// The metrics and progress lines after step t from the window's totals.
  virtual void log(StageEnv& env, int64_t t, const StatsWindow::Totals& w, const StatsWindow& own) = 0;
  /// After step t (and its metrics line): the stage's own periodic work.
  virtual void after_step(StageEnv& env, int64_t t, const StageStep& s, bool last) {}
  /// Before a checkpoint: the replicas agree (hashes, BN statistics averaged).
  virtual void agree(StageEnv& env, int64_t step) = 0;
  /// Rank 0: the stage's own counters into the checkpoint's state.
  virtual void save_state(StageEnv& env, TrainState& st) = 0;
  /// Rank 0: writes the checkpoint file `path` of step `step`.
  virtual void write_checkpoint(StageEnv& env, const std::string& path, int64_t step, const TrainState& st) = 0;
  /// Whether the stage's checkpoints carry the aux-loss window.
  virtual bool aux_window() const { return false; }
  /// After the loop, t steps done: evaluation, final metrics, the model file.
  virtual void finish(StageEnv& env, int64_t t) = 0;
  /// After the final checkpoint: the closing lines.
  virtual void done(StageEnv& env, int64_t t) = 0;
};

/// Runs stage s to its end, or to a checkpoint at a stop request (returns
/// kExitRequeue); kExitOk when done or when it had already finished.
int run_stage(const RunConfig& cfg, Stage& s);

}  // namespace dsonas
