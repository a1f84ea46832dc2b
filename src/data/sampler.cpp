// sampler.cpp — see sampler.hpp (partial global batch dropped; state = (epoch, position)).
#include <algorithm>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/data/sampler.hpp"  // defines: Sampler

namespace dsonas {
namespace {
const uint64_t kPermTag = hash_name("data.sampler.permutation");
}

Sampler::Sampler(std::vector<int> indices, int batch, int rank, int world, uint64_t seed, uint64_t stream, bool shuffle)
    : indices_(std::move(indices)),
      batch_(batch),
      rank_(rank),
      world_(world),
      seed_(seed),
      stream_(stream),
      shuffle_(shuffle) {
  if (batch < 1) fail_usage(str("data: batch size must be >= 1, got ", batch));
  if (world < 1 || rank < 0 || rank >= world)
    fail_usage(str("data: rank ", rank, " is not in [0, world size ", world, ")"));
  const int64_t global = static_cast<int64_t>(batch) * world;
  steps_ = epoch_steps_ = static_cast<int64_t>(indices_.size()) / global;
  if (steps_ < 1)
    fail_usage(str("data: ", indices_.size(), " samples are fewer than one global batch (", batch, " per rank x ",
                   world, " ranks = ", global, ")"));
}

std::vector<int> Sampler::permutation(int64_t epoch) const {
  std::vector<int> p = indices_;
  if (!shuffle_) return p;
  Rng r(seed_, mix64(stream_, kPermTag, static_cast<uint64_t>(epoch)));
  for (size_t i = p.size(); i > 1; --i) std::swap(p[i - 1], p[r.below(static_cast<uint32_t>(i))]);
  return p;
}

const std::vector<int>& Sampler::cached_permutation(int64_t epoch) {
  if (perm_epoch_ != epoch) {
    perm_ = permutation(epoch);
    perm_epoch_ = epoch;
  }
  return perm_;
}

void Sampler::next(std::vector<int>& out, bool* epoch_ended) {
  DSO_CHECK(steps_ > 0, "sampler used before construction");
  const std::vector<int>& p = cached_permutation(state_.epoch);
  const size_t base = static_cast<size_t>(state_.offset) + static_cast<size_t>(state_.position) * batch_ * world_ +
                      static_cast<size_t>(rank_) * batch_;
  out.assign(p.begin() + base, p.begin() + base + batch_);
  bool ended = false;
  if (++state_.position == epoch_steps_) {
    ++state_.epoch;
    state_.position = 0;
    state_.offset = 0;
    epoch_steps_ = steps_;
    ended = true;
  }
  if (epoch_ended) *epoch_ended = ended;
}

std::vector<int> Sampler::next(bool* epoch_ended) {
  std::vector<int> out;
  next(out, epoch_ended);
  return out;
}

int64_t Sampler::steps_in_epoch(int64_t offset) const {
  const int64_t n = static_cast<int64_t>(indices_.size());
  if (offset < 0 || offset >= n) return 0;
  return (n - offset) / (static_cast<int64_t>(batch_) * world_);
}

void Sampler::check_state(const SamplerState& s) const {
  const int64_t n = static_cast<int64_t>(indices_.size());
  if (s.epoch < 0 || s.offset < 0 || s.offset >= n || s.position < 0 || s.position >= steps_in_epoch(s.offset))
    fail_usage(str("data: sampler state (epoch ", s.epoch, ", position ", s.position, ", offset ", s.offset,
                   ") is invalid for ", n, " samples in global batches of ", batch_, " x ", world_,
                   ": offset must be in [0, ", n, ") and position in [0, ",
                   std::max<int64_t>(steps_in_epoch(s.offset), 1), ")"));
}

void Sampler::set_state(const SamplerState& s) {
  check_state(s);
  state_ = s;
  epoch_steps_ = steps_in_epoch(s.offset);
}

SamplerState Sampler::reshard(const SamplerState& s, int64_t n, int batch, int world_then, int world) {
  DSO_CHECK(n > 0 && batch > 0 && world_then > 0 && world > 0, "reshard(n=", n, ", batch=", batch, ")");
  SamplerState r;
  r.epoch = s.epoch;
  r.position = 0;
  r.offset = s.offset + s.position * static_cast<int64_t>(batch) * world_then;
  if (n - r.offset < static_cast<int64_t>(batch) * world) {  // only the dropped partial batch is left
    r.epoch += 1;
    r.offset = 0;
  }
  return r;
}

}  // namespace dsonas
