// run_common.hpp — what every training command shares (pretrain, search,
// retrain, bench): the rank-aware console/log/metrics output, data loading,
// the output folder and its lock, checkpoint file names, retention and
// resume candidates, stop signals and the job deadline.
//
// Ranks: every rank logs to DIR/log.rank<r>; rank 0 alone prints to the
// console and writes DIR/metrics.jsonl, checkpoints, model files and the λ
// trajectory (the other ranks wait for its commit, docs/design.md §7).
#pragma once
#include <chrono>
#include <csignal>
#include <functional>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/data/augment.hpp"
#include "dsonas/data/dataset.hpp"
#include "dsonas/data/imagenet.hpp"
#include "dsonas/data/loader.hpp"
#include "dsonas/io/checkpoint.hpp"     // ckpt_name, checkpoint_candidates, prune_checkpoints, …
#include "dsonas/io/model_file.hpp"     // TrainState
#include "dsonas/model/supergraph.hpp"  // Param, BnStats
#include "dsonas/run/config.hpp"

namespace dsonas {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Streams of the counter-based RNG (core/rng.hpp).
constexpr uint64_t kStreamSplit = 11, kStreamW = 21, kStreamLam = 22, kStreamAugW = 31, kStreamAugLam = 32,
                   kStreamBn = 41, kStreamDrop = 51;

/// printf of one number.
std::string fmt(const char* f, double v);
/// The median (0 for none).
double median_of(std::vector<double> v);
/// "[1.000,2.500]": a JSON list of numbers with 3 decimals (bench step times).
std::string json_list(const std::vector<double>& v);
/// The end of `dsonas bench` (search or retrain steps): the per-primitive table of
/// `profiled` (a profiling backend, or null), the JSON on stdout and in --bench.json.
void report_bench(const RunConfig& cfg, Backend* profiled, const std::string& json);

/// "45s", "4m10s", "2h03m", "3d04h": a duration for a log line (negative: "?").
std::string human_duration(double seconds);

/// The clock of a training stage's log lines and metrics: the elapsed time of this
/// invocation, an estimate of the time left (the steps left at this invocation's mean
/// step time, checkpoints included; where the stage may stop early — a search's
/// target sparsity or settled mask — an upper bound, shown "≤"), and the time left
/// before the job's deadline (--deadline, SLURM_JOB_END_TIME) when one is set.
class StageClock {
 public:
  /// first_step: the step this invocation starts from (a resumed run: its checkpoint's).
  StageClock(int64_t first_step, int64_t total_steps, double deadline_epoch, bool may_stop_early);
  double elapsed() const { return seconds_since(t0_); }
  /// Seconds left after `done` steps (done > first_step), or −1 before any step.
  double eta(int64_t done) const;
  /// "  elapsed 1m05s  left ~4m10s  deadline in 2h03m" (the last part only with a deadline).
  std::string text(int64_t done) const;
  /// ",\"time_s\":65.000,\"eta_s\":250.0[,\"eta_is_bound\":true][,\"deadline_in_s\":7380]"
  std::string json(int64_t done) const;

 private:
  Clock::time_point t0_;
  int64_t first_, total_;
  double deadline_;
  bool bound_;
};

/// Steps per epoch of a training stage whose W-half loader has `w_loader_steps` per epoch:
/// a search interleaves (w-steps + lambda-steps) steps per w-steps W-batches.
int64_t stage_epoch_steps(const RunConfig& cfg, int64_t w_loader_steps, bool search);
/// The steps a training stage runs: max-steps, or its epochs at `epoch_steps`; at least 1.
int64_t stage_total_steps(const RunConfig& cfg, int64_t epoch_steps);

/// What a training stage tells the pipeline's clock when it starts (or resumes).
struct StageWork {
  int64_t global_batch = 0;  ///< images per step, all ranks
  double macs = 0;           ///< forward MACs per image of the stage's model as it starts
  int64_t w_images = 0;      ///< images of the W-half (pretrain, search; 0 in a retrain)
  int64_t train_images = 0;  ///< images of the whole training set
};

/// The whole pipeline's time left, shown in every log line of its stages ("pipeline
/// left ~…") and in their metrics (`pipeline_eta_s`); only `dsonas pipeline` creates
/// one (active() is null otherwise).  The time left is the running stage's own estimate
/// plus a prediction for each stage still ahead: its steps, planned from its resolved
/// configuration and the dataset sizes the running stage reported (as the stage itself
/// will plan them), times images per step times MACs per image of its model, at the
/// running stage's measured seconds per image·MAC.  The model of a retrain is the
/// search's current live MACs until the found network's retrain runs; the baseline is
/// retrained at the found network's MACs.  Speed per MAC differs between the supergraph
/// and a derived network, so the prediction for stages of another kind is rough until
/// one of that kind has run: the same stage kind (pretrain → search, found → baseline)
/// predicts well.
class PipelineClock {
 public:
  enum Stage { kPretrain = 0, kSearch, kRetrain, kBaseline, kStages };
  /// cfg[s]: the resolved configuration of stage s (null: the stage does not run).
  PipelineClock(const RunConfig* const (&cfg)[kStages], int world);
  ~PipelineClock();
  PipelineClock(const PipelineClock&) = delete;
  PipelineClock& operator=(const PipelineClock&) = delete;
  static PipelineClock* active();
  /// The pipeline enters stage s.
  void begin(Stage s);
  /// The running stage's work (run_stage tells it, where it creates the StageClock).
  void started(const StageWork& w);
  /// The search's live MACs now: the prediction of the found network's size.
  void note_live_macs(double macs) { live_macs_ = macs; }
  /// Seconds the stages after the running one will take at sec_per_step of the running
  /// one; −1 while unknown (no step timed yet, or no stage has reported its work).
  double after_current(double sec_per_step) const;
  /// The steps stage s will run (its max-steps, or its epochs at the reported dataset sizes).
  int64_t planned_steps(Stage s) const;

 private:
  const RunConfig* cfg_[kStages];
  int world_;
  Stage current_ = kPretrain;
  StageWork work_[kStages] = {};
  bool reported_[kStages] = {};
  int64_t w_images_ = 0, train_images_ = 0;
  double live_macs_ = 0;
};

/// Console (rank 0), DIR/log.rank<r> (every rank), DIR/metrics.jsonl (rank 0).
class Output {
 public:
  Output(const std::string& dir, bool progress, int rank = 0);
  ~Output();
  void line(const std::string& s);
  void metrics(const std::string& json);
  /// Lines in DIR/metrics.jsonl (rank 0: those it found plus those it wrote).
  int64_t metrics_lines() const { return metrics_lines_; }
  /// Live status: overwritten in place on a TTY (and logged), else a plain line.
  void progress(const std::string& s);

 private:
  void end_progress();
  std::ofstream log_, metrics_;
  int64_t metrics_lines_ = 0;
  bool console_ = true, tty_ = false, open_ = false;
};

// ---- data ---------------------------------------------------------------------
/// The configured dataset: in memory (fmnist, cifar10, synthetic: `train`,
/// `test`) or ImageNet HDF5 shards read on demand (`shards_train`, and
/// `shards_test` = the val split).  Use the functions below, which hide which.
struct Data {
  ImageSet train, test;
  std::unique_ptr<ImageNetShards> shards_train, shards_test;
  Split split;  // W-half / λ-half of the training set
  bool imagenet() const { return shards_train != nullptr; }
  int train_size() const;
  int test_size() const;
};
/// The configured dataset (checked against the space's input shape and classes)
/// and its W-half / λ-half split.
Data load_data(const RunConfig& cfg);
/// Training batches of `idx` (this rank's slice of each global batch) with the
/// dataset's training augmentation (`aug` overrides it for in-memory sets).
std::unique_ptr<BatchSource> train_source(const RunConfig& cfg, const Data& d, std::vector<int> idx, int rank,
                                          int world, uint64_t sampler_stream, uint64_t aug_stream,
                                          const Augment* aug = nullptr);
/// One pass over `idx` of the training (test_set = false) or test/val set,
/// evaluation preprocessing.  unit_range: the same preprocessing without the
/// normalisation, i.e. pixel values / 255 in [0, 1] (the input of an exported network).
std::unique_ptr<EvalSource> eval_source(const RunConfig& cfg, const Data& d, bool test_set, std::vector<int> idx,
                                        bool unit_range = false);
/// The evaluation normalisation of the configured dataset on the [0, 1] pixel scale,
/// one value per channel: the network sees (pixel / 255 − mean_c) / std_c
/// (eval_augment, or §8.2's ImageNet statistics divided by 255).
struct InputNormalisation {
  std::vector<float> mean, std;
};
InputNormalisation input_normalisation(const RunConfig& cfg, int channels);
/// One training-augmented batch of the training set (BN re-estimation);
/// batch_counter keys the draws, slot_offset = rank·batch.
void training_batch(const RunConfig& cfg, const Data& d, const std::vector<int>& ids, uint64_t stream,
                    uint64_t batch_counter, uint64_t slot_offset, float* out_nchw, int32_t* labels);
/// Normalisation of the dataset (docs/method.md §8.1 for CIFAR-10).
Augment eval_augment(const RunConfig& cfg);
/// The dataset's training augmentation with data.pad / data.flip applied.
Augment train_augment(const RunConfig& cfg);

// ---- folders, lock, backend ---------------------------------------------------
/// Whether a path exists (*is_dir: whether it is a folder).
bool path_exists(const std::string& p, bool* is_dir = nullptr);
/// Creates DIR (and parents) only after every input was checked; refuses a
/// folder that already holds a run unless resuming (exit 2).
void prepare_out_dir(const std::string& dir, bool resume);
/// --init: a run folder (its model.h5) or a model file.
std::string resolve_init(const std::string& init);
/// The backend of --device with this rank's share of the cores.
std::unique_ptr<Backend> backend_for(const RunConfig& cfg);
/// Threads for this rank: --threads, or the node's cores divided by the ranks on
/// the node; a request that oversubscribes the node is cut down (with a note).
int threads_for_rank(const RunConfig& cfg, std::string* note);

/// DIR/run.lock: one writer per output folder.  Holds "pid host"; a lock whose
/// process is gone (same host) is stale and taken over.
class RunLock {
 public:
  explicit RunLock(const std::string& dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  std::string path_;
  bool held_ = false;
};

// ---- signals and deadline -----------------------------------------------------
/// Set by SIGUSR1 / SIGTERM (the handler only sets it).
extern volatile std::sig_atomic_t g_stop_signal;
void install_stop_handlers();
/// Seconds since the epoch of the job's end: --deadline (absolute, or +seconds
/// from now) or SLURM_JOB_END_TIME; 0 when there is none.
double deadline_epoch(const RunConfig& cfg);

// ---- checkpoints ----------------------------------------------------------------
/// "key=value;..." of the fields a resume must not change (retrain: also cutout,
/// which changes the data a resumed retrain would see).
std::string structural_fields(const RunConfig& cfg, const char* stage, int world_size);
/// Refuses a checkpoint whose structural fields differ: "field: checkpoint=A
/// now=B", exit 3.  Fields named in `ignore` are skipped.
void check_structural(const std::string& path, const std::string& was, const std::string& now,
                      const std::vector<std::string>& ignore = {});
/// Value of one field of a structural string ("" if absent).
std::string structural_field(const std::string& s, const std::string& key);
/// The world size a checkpoint was written with; a different one than
/// `world` is refused ("world_size: checkpoint=A now=B", exit 3) unless
/// --allow-world-size-change.  Then the caller re-shards its loaders
/// (Sampler::reshard) and rescales its step counter (rescale_step).
int checkpoint_world_size(const RunConfig& cfg, const std::string& path, const std::string& was, int world);
/// The step counter of a run resumed with another world size: t steps of
/// global batch B·world_then are t·world_then/world steps of B·world (rounded
/// to whole cycles of `cycle` steps; the W/λ phase t mod cycle is kept), so
/// that the lr schedule, epoch count and step budget keep meaning the same data.
int64_t rescale_step(int64_t t, int world_then, int world, int cycle);
/// The warning logged after such a resume.
std::string world_change_note(int world_then, int world);
/// --resume: walks checkpoint_candidates(DIR) best first.  For each, its
/// `structural` attribute is read with `read(path, "structural")` (the file
/// kind's reader) and `check(path, structural)` called — it throws
/// to refuse the run for good (a changed structural field) — then `load(path)`.
/// A file that cannot be read or loaded (exit 3) is skipped with a note in
/// *skipped and the next older one tried, unless --strict-resume.  Returns the
/// path loaded, "" if there was none; exit 3 when every candidate failed.
std::string resume_checkpoint(const RunConfig& cfg, std::string (*read)(const std::string&, const char*),
                              const std::function<void(const std::string&, const std::string&)>& check,
                              const std::function<void(const std::string&)>& load, std::string* skipped);
/// What --resume found for a stage (resume_stage).
struct Resumed {
  TrainState state;                // counters and reals of the checkpoint loaded
  std::string path;                // the checkpoint loaded; "" = none (fresh start)
  int world_then = 1;              // its world size (the current one when none)
  std::vector<std::string> notes;  // lines for the log, in order
  bool loaded() const { return !path.empty(); }
  bool finished() const { return loaded() && counter("finished") != 0; }
  int64_t step() const { return loaded() ? counter("step") : 0; }
  int64_t counter(const std::string& k, int64_t absent = 0) const {
    auto it = state.counters.find(k);
    return it == state.counters.end() ? absent : it->second;
  }
  double real(const std::string& k, double absent = 0) const {
    auto it = state.reals.find(k);
    return it == state.reals.end() ? absent : it->second;
  }
  /// Rank 0, after each committed checkpoint `ckpt` of the resumed run: the
  /// first one moves the checkpoint resumed from aside when the world size
  /// changed (set_aside_checkpoints); returns a line for the log or "".
  std::string after_checkpoint(const std::string& out, const std::string& ckpt);
  bool aside_pending = false;
};
/// A stage's --resume, the same on every rank: walks the candidates
/// (resume_checkpoint: `read` reads a root attribute of the file kind, `load`
/// loads a checkpoint into the model and *state), refuses a changed structural
/// field or world size (unless --allow-world-size-change), and on rank 0 trims
/// metrics.jsonl to what the checkpoint counted (untouched for a finished
/// stage) and, after a world-size change, sets the old run's other checkpoints
/// aside.  Without --resume: nothing loaded.
Resumed resume_stage(const RunConfig& cfg, int world, bool root, const std::string& structural,
                     std::string (*read)(const std::string&, const char*),
                     const std::function<void(const std::string&, TrainState*)>& load);
/// On resume: keeps the first `lines` lines of DIR/metrics.jsonl (the
/// checkpoint's `metrics_lines` counter) or, for checkpoints without it
/// (lines < 0), the lines of steps ≤ step; "final" events are dropped either way.
void truncate_metrics(const std::string& out, int64_t step, int64_t lines = -1);

// ---- data parallel --------------------------------------------------------------
class Communicator;
/// BN running statistics averaged over the ranks (docs/method.md §4.1: statistics are
/// per rank; their running averages are made one before every evaluation and
/// checkpoint, written back, so every rank evaluates and saves the same model).
void average_bn_stats(Communicator& comm, Backend& be, std::vector<BnStats>& stats);
/// FNV-1a hash of every parameter value (checkpoint-time check that replicas agree).
uint64_t params_hash(Backend& be, std::vector<Param>& params);

/// Peak resident memory of this process image (VmHWM), kB.
long peak_rss_kb();

}  // namespace dsonas
