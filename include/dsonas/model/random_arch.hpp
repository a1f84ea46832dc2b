// random_arch.hpp — random architectures of the same cost as a found one: the
// control the paper compares DSO-NAS with ("random structures", docs/method.md §10.3).
//
// A sample follows the found architecture's rules:
//  * per normal block (share mode: the one shared block) the same number K of live
//    λ entries (input edges of level ≥ 2 ops plus output branches) as the found
//    block, at uniformly random positions of the block's λ layout, and a fixed
//    point of the §6.1 rule: a draw that §6.1 would change (an entry on a dead op)
//    or that leaves a block empty where the found one is not, is redrawn;
//  * the reductions' branches as searched (copied from the found architecture);
//  * the stem width C chosen for the target MACs (width_for_target), accepted only
//    if its MACs are within ±tolerance of the target; otherwise the whole sample is
//    redrawn.
// So a sample is uniform over the architectures with those per-block entry counts
// whose MACs at some width fall within the tolerance.  Deterministic: sample k of
// seed s depends on (s, k) only.
#pragma once
#include <cstdint>
#include <vector>

#include "dsonas/model/architecture.hpp"

namespace dsonas {

struct RandomArchOptions {
  double target_macs = 0;       ///< ≤ 0: the found architecture's own MACs
  double tolerance = 0.02;      ///< |MACs − target| ≤ tolerance·target
  int64_t max_draws = 1 << 24;  ///< per block and per width attempt; exceeded → exit 2
};

struct RandomArch {
  Architecture arch;          ///< at the chosen width
  std::vector<float> lambda;  ///< the drawn 0/1 λ pattern (from_lambda of it is arch's topology)
  int width = 0;              ///< its stem width C
  int64_t block_redraws = 0;  ///< block draws refused (not a §6.1 fixed point / empty)
  int64_t width_redraws = 0;  ///< whole samples refused (no width within the tolerance)
};

/// Live λ entries of every normal block of `a` (share mode: one entry, the shared block).
std::vector<int> live_entries_per_block(const Architecture& a);

/// Sample `index` (0-based) of stream `seed`, like `found`.
RandomArch sample_random_like(const Architecture& found, uint64_t seed, int index,
                              const RandomArchOptions& opt = RandomArchOptions());

}  // namespace dsonas
