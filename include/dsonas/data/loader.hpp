// loader.hpp — training batches with a prefetch thread, and an evaluation iterator.
//
// Design (docs/design.md §3):
//  * A Loader owns a Sampler and an Augment; batch k's data is a pure function
//    of the sampler state before it (indices from the permutation, augmentation
//    keyed by the global batch number and the rank's slot offset), so prefetch
//    on/off, thread counts and restarts cannot change what next() returns.
//  * Prefetch: one std::thread produces batches into a bounded queue (depth 2
//    by default) guarded by a mutex + condition variables; buffers are recycled
//    (next() swaps the caller's Batch with the queued one).  An exception in
//    the producer is handed to the consumer and rethrown by next().
//  * state() is the state after the last batch returned (what a checkpoint
//    written after consuming it saves); restore() stops the producer, drops
//    the queue and restarts from the given state.  The destructor stops and
//    joins the producer even if it is blocked on a full queue.
//  * The ImageSet is borrowed and must outlive the Loader / EvalIterator.
//  * Batch::data is a HostVector (host_memory.hpp): its storage comes from the
//    host-memory hook, i.e. pinned memory while a CUDA backend exists, so the
//    trainer's upload is a direct DMA; the buffers are recycled, so a loader
//    allocates only its first batches (and after restore()).
//  * BatchSource / EvalSource are the contracts a training loop needs; Loader
//    and EvalIterator (in-memory sets) and ShardLoader / ShardEvalIterator
//    (ImageNet shards, imagenet_loader.hpp) implement them, so the loop can
//    hold either behind a pointer.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "dsonas/data/augment.hpp"
#include "dsonas/data/dataset.hpp"
#include "dsonas/core/host_memory.hpp"
#include "dsonas/data/sampler.hpp"

namespace dsonas {

struct Batch {
  int n = 0, c = 0, h = 0, w = 0;
  HostVector<float> data;       ///< n·c·h·w, NCHW, normalised (pinned on a GPU run)
  std::vector<int32_t> labels;  ///< n
  SamplerState state_before;    ///< sampler state before this batch
  SamplerState state_after;     ///< sampler state after it
  int64_t global_step = 0;      ///< global batch number (epoch·steps_per_epoch + position)
  bool epoch_end = false;       ///< this was the last batch of its epoch
  std::vector<int> indices;     ///< sample indices (into the set) of the n images
};

/// Endless shuffled training batches with a resumable position.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// The next batch (blocks until it is ready).
  virtual void next(Batch& b) = 0;
  /// State after the last batch returned (= before the next one).
  virtual SamplerState state() const = 0;
  /// Continue from `s` as an uninterrupted source would (fail_usage if invalid).
  virtual void restore(const SamplerState& s) = 0;
  virtual int64_t steps_per_epoch() const = 0;
};

/// One pass over a fixed list in order, in batches (the last may be smaller).
class EvalSource {
 public:
  virtual ~EvalSource() = default;
  /// false when the list is exhausted (b untouched).
  virtual bool next(Batch& b) = 0;
  virtual void reset() = 0;
  virtual int64_t num_batches() const = 0;
  virtual size_t size() const = 0;
};

class Loader : public BatchSource {
 public:
  /// aug_seed/aug_stream key the augmentation draws (independent of the
  /// sampler's shuffling stream).  depth = prefetch queue length (≥ 1).
  Loader(const ImageSet& set, Sampler sampler, Augment aug, uint64_t aug_seed, uint64_t aug_stream,
         bool prefetch = true, int depth = 2);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// The next batch (blocks until the producer has it).
  void next(Batch& b) override;
  /// State after the last batch returned (= before the next one).
  SamplerState state() const override;
  /// Continue from `s` as an uninterrupted loader would.
  void restore(const SamplerState& s) override;

  int64_t steps_per_epoch() const override { return steps_per_epoch_; }
  bool prefetching() const { return prefetch_; }

 private:
  void produce(Batch& b);  // one batch from sampler_ (producer side)
  void start();
  void stop();
  void worker();

  const ImageSet* set_;
  Sampler sampler_;  // producer-owned while the thread runs
  Augment aug_;
  uint64_t aug_seed_, aug_stream_;
  bool prefetch_;
  int depth_;
  int64_t steps_per_epoch_;
  std::vector<int> idx_;  // producer scratch

  SamplerState consumer_state_;
  mutable std::mutex mu_;
  std::condition_variable cv_not_full_, cv_not_empty_;
  std::deque<Batch> queue_;
  std::vector<Batch> free_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

/// Goes over a whole index list in order, in batches of `batch` (the last one
/// may be smaller), with normalisation only (pad, flip and cutout are ignored).
class EvalIterator : public EvalSource {
 public:
  EvalIterator(const ImageSet& set, std::vector<int> indices, int batch, Augment norm);
  /// false when the list is exhausted (b untouched).
  bool next(Batch& b) override;
  void reset() override { pos_ = 0; }
  int64_t num_batches() const override;
  size_t size() const override { return indices_.size(); }

 private:
  const ImageSet* set_;
  std::vector<int> indices_;
  int batch_;
  Augment norm_;
  size_t pos_ = 0;
  std::vector<int> idx_;
};

}  // namespace dsonas
