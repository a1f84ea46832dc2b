// prune.hpp — the dead-op rule of docs/method.md §6.1, the persistent live mask of
// §6.2, the block topology the execution plan is built from, and λ / MAC counts.
//
// Design note.  λ is one flat float vector laid out by SearchSpace / BlockLayout
// (normal blocks, then 2 entries per reduction; one shared block in share mode).
// The live mask is a parallel uint8 vector (1 = the entry is an edge in the plan).
//
//   prune_block  §6.1 on one normal block's λ, in place, exactly the two passes as
//                written (pass 2 uses values zeroed earlier in the same pass).
//   prune_all    prune_block on every block (share: once), the reduction rule,
//                then mask &= (λ > 0), and λ = v = 0 wherever the mask is 0.
//   BlockTopology  which ops / edges / output branches exist, from (λ, mask).
//
// An entry is "live" iff its mask bit is set AND λ > 0 ("edges with λ == 0 are not
// built", §6.1).  Reductions add one exception: when both reduction λ are 0 one
// branch is kept (mask 1, λ = 0) so that it can revive (see prune_all), and
// reduction_topology reports it live.
//
// Precondition everywhere: λ ≥ 0 (the APG clamp guarantees it); then "Σ λ == 0"
// and "no entry > 0" coincide.
#pragma once
#include <cstddef>  // defines: size_t
#include <cstdint>  // defines: uint8_t, int64_t
#include <vector>   // defines: std::vector

#include "dsonas/model/search_space.hpp"  // defines: SearchSpace, BlockLayout

namespace dsonas {

/**
 * @brief §6.1 dead-op rule on one normal block, in place.
 *
 * `lam` points at the block's first entry (layout: BlockLayout).  Pass 1 (backward)
 * computes need(l,j) = λ_after(l,j) + Σ over consumers with need > 0 of the edge λ,
 * with need = 0 for an op whose input row sums to 0.  Pass 2 (forward) kills every
 * op with need == 0, or (l ≥ 2) with a zero input row — reading rows already zeroed
 * earlier in the same pass, so "no input" deadness propagates forward — by zeroing
 * its λ_after, the entries of it in every consumer row, and its own row.
 * Afterwards every op with a non-zero entry has a positive path input → output,
 * and a second call changes nothing.
 */
void prune_block(float* lam, const BlockLayout& b);

/**
 * @brief Prunes the whole flat λ and updates the persistent live mask (§6.1, §6.2).
 *
 * 1. prune_block on every normal block (share mode: once, on the shared block);
 * 2. normal entries: mask &= (λ > 0);
 * 3. reduction (2 entries each): a branch whose λ == 0 loses its mask bit, except
 *    when this would leave no branch with its bit set: then, among the branches
 *    whose bit was set, the one whose λ was larger BEFORE the λ step
 *    (`lam_before`, the λ the step started from) keeps its bit with λ = 0 and can
 *    revive.  Tie (or lam_before == nullptr) → the lower branch index (branch 0,
 *    the 1×1 conv).
 * 4. λ = 0 and v = 0 wherever the mask is 0 (v may be nullptr).
 *
 * @param lam         flat λ, space.total_lambda() entries
 * @param mask        live mask, same length, updated in place
 * @param v           APG momentum, same length, or nullptr
 * @param lam_before  λ before the last APG step, same length, or nullptr
 */
void prune_all(const SearchSpace& space, float* lam, uint8_t* mask, float* v, const float* lam_before);
inline void prune_all(const SearchSpace& space, std::vector<float>& lam, std::vector<uint8_t>& mask,
                      std::vector<float>* v = nullptr, const std::vector<float>* lam_before = nullptr) {
  prune_all(space, lam.data(), mask.data(), v ? v->data() : nullptr, lam_before ? lam_before->data() : nullptr);
}

/**
 * @brief The live structure of one normal block: what the execution plan builds.
 *
 * Indices are 0-based: li = l − 1 (level), ji = j − 1 (op), i = index inside the
 * input row of op (l,j) (0 = block input, 1 + N(l'−1) + (j'−1) = op (l',j')),
 * k = N(l−1) + (j−1) for output branches.  Level 1 has an empty edge_live row.
 *
 * From (λ, mask), entry live ⇔ mask bit set and λ > 0.  An op is alive iff it is
 * reachable from the block input through live edges (level-1 ops always are) and
 * reaches the output through live edges and a live λ_after.  On a pruned λ this is
 * §6.1's statement: a level-1 op is alive iff λ_after > 0 or a live consumer
 * edge; a level ≥ 2 op iff its row has a live entry (and then it reaches the
 * output).  edge_live / after_live are the live entries between alive nodes only.
 */
struct BlockTopology {
  int L = 0, N = 0;
  std::vector<std::vector<uint8_t>> op_alive;                // [li][ji]
  std::vector<std::vector<std::vector<uint8_t>>> edge_live;  // [li][ji][i]
  std::vector<uint8_t> after_live;                           // [k]
  bool block_empty = true;                                   // no live output branch

  bool alive(int l, int j) const { return op_alive[l - 1][j - 1] != 0; }  // 1-based
  int live_ops() const;
  int live_edges() const;
  int live_branches() const;
  /// Number of live inputs of op (l,j), 1-based (drop-path on inputs needs ≥ 2).
  int live_inputs(int l, int j) const;
};

/// Topology of one normal block from its λ (and mask, nullptr = all set).  lam
/// nullptr: the mask alone (the search's execution plan, where an entry stays wired
/// until it is pruned even at λ = 0: the reference schedule between rebuilds).
BlockTopology block_topology(const float* lam, const uint8_t* mask, const BlockLayout& b);

/// Live branches of the reduction after stage s (0-based): [0] 1×1 s2, [1] 3×3 s2.
/// Live = mask bit set and λ > 0.  If that leaves none, the branch whose mask bit
/// is set stays live (the one prune_all kept at λ = 0); if both or neither bit is
/// set, branch 0.  So a reduction always has at least one live branch.
struct ReductionTopology {
  bool branch_live[2] = {true, true};
};
ReductionTopology reduction_topology(const SearchSpace& space, int s, const float* lam, const uint8_t* mask);

// ---- counts -----------------------------------------------------------------------

/// "delet_num: z/T" (§10.1 item 9): entries exactly 0, and all entries.
struct ZeroCount {
  int64_t zero = 0, total = 0;
};
ZeroCount count_zero(const float* lam, size_t n);

/// Live ops of every normal block of the network, per op index j−1 (size N).  In
/// share mode the shared topology is counted once per physical block, so the
/// maximum is num_normal_blocks·L per op type in both modes.
std::vector<int64_t> live_ops_per_type(const SearchSpace& space, const float* lam, const uint8_t* mask);

/**
 * @brief MACs of the live network (docs/method.md §11.1: conv/FC weights only).
 *
 * Stem (K²·C_in·C·H·W; ImageNet: 9·C_in·(C/2)·H₁W₁ + 9·(C/2)·C·H₂W₂), per normal block
 * Σ_live sep convs (K²F + F²)HW + Σ_live branches F²HW, id_conv F²HW in the first
 * block of each stage (kept even when the block is empty), reductions
 * (1 or 9)·F_in·F_out·H_out·W_out per live branch, FC C_last·classes.  Pooling,
 * BN, λ multiplies cost 0.  Share mode: every physical block uses the shared
 * topology with its own stage geometry.
 */
double live_macs(const SearchSpace& space, const float* lam, const uint8_t* mask);
/// MACs of the stem alone (§11.1): 9·C_in·C·H·W, or the two strided convs of ImageNet.
double stem_macs(const SearchSpace& space);
/// Same with every op, edge, branch alive (the dense supernet).
double full_macs(const SearchSpace& space);

}  // namespace dsonas
