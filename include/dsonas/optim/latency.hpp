// latency.hpp — adaptive latency penalty factors (docs/method.md §5.3).
//
// Every search epoch the factors r_e ∈ [0.5, 1] of the shared block's λ are
// recomputed from timings of the RETRAIN network:
//   1. copy λ, apply §6.1 (Architecture::from_lambda does), code = [λ_e > 0]
//      over the shared block's entries in flat order (level-2 rows, level-3 rows,
//      level-4 rows, then λ_after — the 124-bit code of §5.3 for L = N = 4);
//   2. for every set bit i: the network of the code with bit i cleared, at the
//      retrain width, batch 1, forward only, random weights, timed on the run's
//      own backend: T_i = mean of iterations warmup+1 .. iters of `iters`
//      forwards.  Timings are cached by (code with bit i cleared) across epochs;
//   3. over the set bits: s_i = −T_i, s ← (s − min s)/(max(s − min s) + 1e-9),
//      r_i = 0.5 + 0.5·s_i; unset bits and every entry outside the shared block
//      (reductions) get r = 1.  The edge whose removal gives the fastest network
//      gets the strongest penalty.
// The trainer uses γ_e = γ·r_e.  Data parallel: the bits to time are dealt out
// over the ranks (bit k of the set list to rank k mod world) and the timings
// summed, so every rank gets the same factors.  Timings are not reproducible
// run to run, so a search with this penalty is not bit-exact across runs; the
// factors in use are saved in checkpoints so a resume continues with them.
// Only the share space (one λ segment for every block) is supported, as in the
// paper; the full space is refused with exit 2.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/model/search_space.hpp"

namespace dsonas {

class LatencyPenalty {
 public:
  /// width: retrain stem width (0: the space's); iters > warmup ≥ 0.
  LatencyPenalty(const SearchSpace& space, int width, int iters, int warmup, Backend& be);

  /// The set bits of λ's code after §6.1 (indices into the flat λ).
  std::vector<int> live_bits(const float* lam, const uint8_t* mask) const;
  /// Times the removal of every bit in `bits` whose index in the list is ≡ part
  /// (mod parts); the others are 0 (the caller sums over ranks).  Cached.
  std::vector<double> time_removals(const float* lam, const uint8_t* mask, const std::vector<int>& bits, int part,
                                    int parts);
  /// Factors for the whole flat λ from the timings of `bits`.
  std::vector<float> factors(const std::vector<int>& bits, const std::vector<double>& t) const;
  int64_t timed() const { return timed_; }
  int64_t cached() const { return cached_; }
  int width() const { return width_; }

 private:
  double time_code(const std::vector<float>& lam, const std::vector<uint8_t>& mask);
  SearchSpace space_;
  int width_, iters_, warmup_;
  Backend& be_;
  std::map<std::string, double> cache_;
  int64_t timed_ = 0, cached_ = 0;
};

}  // namespace dsonas
