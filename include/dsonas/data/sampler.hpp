// sampler.hpp — epoch-wise shuffled batches of indices, sharded over ranks.
//
// Design (docs/design.md §3, §7):
//  * Epoch e visits a permutation of the index list that is a pure function of
//    (seed, stream, e) (Fisher–Yates driven by the counter-based Rng), so any
//    rank, any thread and any restarted process computes the same order.
//  * Data parallel: global batch = per-rank batch B × world.  Global batch g of
//    an epoch is entries [g·B·world, (g+1)·B·world) of the permutation; rank r
//    takes the slice [r·B, (r+1)·B) of it.  world=2 slices are therefore
//    disjoint and their union (rank 0 first) is the world=1 batch of size 2B.
//  * Partial global batch policy: DROPPED.  An epoch has
//    steps_per_epoch() = floor(n / (B·world)) batches; the remaining
//    n mod (B·world) samples of that epoch's permutation are skipped (they land
//    elsewhere in the next epoch's permutation).  Every batch has exactly B
//    samples on every rank, which keeps BN statistics and allreduce uniform.
//  * State = (epoch, position, offset): position = global batches already
//    taken in the epoch since offset, the number of samples of the epoch's
//    permutation consumed before them (0 except in an epoch resumed under
//    another world size, see reshard()).  Global batch g of such an epoch is
//    entries [offset + g·B·world, offset + (g+1)·B·world); the epoch has
//    steps_in_epoch(offset) = floor((n - offset) / (B·world)) batches and the
//    next epoch starts at offset 0.  Three plain integers for the checkpoint;
//    set_state() resumes exactly.
//  * The global batch number epoch·steps_per_epoch() + offset/(B·world) +
//    position (global_step()) also keys the augmentation random numbers
//    (loader.hpp), so the data of a step depends on nothing but the state.
//  * A different world size gives a different batch sequence for the same
//    state.  reshard() maps a state of one world size to another without
//    skipping or repeating a sample of the epoch: the samples already taken
//    (offset + position·B·world_then) become the new offset.
#pragma once
#include <cstdint>
#include <vector>

namespace dsonas {

struct SamplerState {
  int64_t epoch = 0;     ///< epochs completed
  int64_t position = 0;  ///< global batches taken in the current epoch (since offset)
  int64_t offset = 0;    ///< samples of this epoch's permutation taken before position 0
  bool operator==(const SamplerState& o) const {
    return epoch == o.epoch && position == o.position && offset == o.offset;
  }
  bool operator!=(const SamplerState& o) const { return !(*this == o); }
};

class Sampler {
 public:
  Sampler() = default;
  /// indices: the list to iterate (e.g. Split::first).  batch: per-rank batch.
  /// shuffle=false visits the list in its given order every epoch.
  /// fail_usage if the list holds fewer samples than one global batch.
  Sampler(std::vector<int> indices, int batch, int rank, int world, uint64_t seed, uint64_t stream,
          bool shuffle = true);

  /// Per-rank indices of the next batch; advances.  *epoch_ended (if given) is
  /// set to true when this batch was the last of its epoch (the state then
  /// points at the start of the next epoch).
  std::vector<int> next(bool* epoch_ended = nullptr);
  /// Same, into a caller-owned vector (no allocation once sized).
  void next(std::vector<int>& out, bool* epoch_ended = nullptr);

  SamplerState state() const { return state_; }
  /// Resume; offset must be in [0, size()) and position in
  /// [0, steps_in_epoch(offset)) (fail_usage otherwise).
  void set_state(const SamplerState& s);
  /// fail_usage naming the state unless set_state(s) would accept it.
  void check_state(const SamplerState& s) const;
  /// Global batches in an epoch whose first `offset` samples were taken before.
  int64_t steps_in_epoch(int64_t offset) const;

  /// The state, for world size `world` and per-rank batch `batch`, that
  /// continues a state `s` taken with world size `world_then` (same batch,
  /// same index list of n samples): the samples taken so far in the epoch,
  /// s.offset + s.position·batch·world_then, become the offset, so no sample
  /// of the epoch is skipped or repeated.  If fewer than one new global batch
  /// remains, that rest is the epoch's dropped partial batch and the state
  /// moves to the start of the next epoch.
  static SamplerState reshard(const SamplerState& s, int64_t n, int batch, int world_then, int world);

  /// The order of epoch e (pure function of seed, stream, e).
  std::vector<int> permutation(int64_t epoch) const;

  int64_t steps_per_epoch() const { return steps_; }
  /// Global batch number of the current state, unique across epochs:
  /// epoch·steps_per_epoch() + offset/(batch·world) + position.
  int64_t global_step() const {
    return state_.epoch * steps_ + state_.offset / (static_cast<int64_t>(batch_) * world_) + state_.position;
  }
  int batch() const { return batch_; }
  int rank() const { return rank_; }
  int world() const { return world_; }
  size_t size() const { return indices_.size(); }
  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }

 private:
  const std::vector<int>& cached_permutation(int64_t epoch);

  std::vector<int> indices_;
  int batch_ = 0, rank_ = 0, world_ = 1;
  uint64_t seed_ = 0, stream_ = 0;
  bool shuffle_ = true;
  int64_t steps_ = 0;        // steps of an epoch at offset 0
  int64_t epoch_steps_ = 0;  // steps of the current epoch (steps_in_epoch(state_.offset))
  SamplerState state_;
  std::vector<int> perm_;
  int64_t perm_epoch_ = -1;
};

}  // namespace dsonas
