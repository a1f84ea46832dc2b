// penalty.hpp — budget-aware sparsity strength γ_e per λ entry (docs/method.md §5).
//
// Design note.  The APG step (optimizer.hpp) takes a per-entry γ_e.  This module
// fills that vector for the whole flat λ from the base γ, the current λ (before
// the update), the live mask and a mode:
//
//   None                γ_e = γ everywhere.
//   AdaptiveFlopsProxy  §5.1 code proxy, one factor per normal block:
//                         count = #conv ops at level 1 (always counted)
//                               + #{conv ops (l ≥ 2, j) with Σ λ(l,j) > 0}
//                               + #{k : λ_after[k] > 0}
//                         γ_b = γ·(count + 1)/(total + 1),
//                         total = (#conv op types)·L + N·L (24 for L = N = 4).
//   AdaptiveFlopsExact  §5.1 exact variant: γ_b = γ·MAC_b/MAC_full with
//                         (K²F + F²)·HW per live sep conv (level 1 always live)
//                         and F²·HW per live output conv, F, H, W of the
//                         block's stage; HW cancels, F does not.  No "+1".
//   AdaptiveMac         §5.2 fixed factors by the type of the op that RECEIVES
//                         the edge; λ_after entries get the "after" factor.
//
// Reduction entries always get the base γ.  Share mode: the one shared block;
// the exact variant then uses the width F of stage 0 (the first stage the shared
// block is used in).  This is a choice, not from the paper: the normalised cost
// depends on the stage only through F (HW cancels), and one number is needed.
// "Live" for counting means mask bit set and λ > 0 (a masked entry is 0 anyway).
#pragma once
#include <cstdint>  // defines: uint8_t
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include "dsonas/model/search_space.hpp"  // defines: SearchSpace, OpKind

namespace dsonas {

/// AdaptiveLatency (§5.3): penalty_gamma() gives the base γ; the trainer
/// multiplies by the factors of optim/latency.hpp, re-timed every epoch.
enum class PenaltyMode { None, AdaptiveFlopsProxy, AdaptiveFlopsExact, AdaptiveMac, AdaptiveLatency };

/// "none", "adaptive-flops", "adaptive-flops-exact", "adaptive-mac", "adaptive-latency"; bad strings
/// fail with exit 2 naming `field`.
PenaltyMode parse_penalty_mode(const std::string& s, const std::string& field = "optim.penalty");
const char* penalty_mode_name(PenaltyMode m);

/**
 * @brief §5.2 memory-access factors: MAC_x / MAC_sep(5) at H = W = 16, F = 96, with
 * MAC_sep(K) = 4HWF + K²F + F², MAC_pool = 2HWF, MAC_after = 2HWF + F.
 * Gives sep3 0.986, sep5 1.000, max/avg pool 0.447, λ_after 0.448.
 */
double adaptive_mac_factor(OpKind receiving_op);
double adaptive_mac_after_factor();

/// The factor (≤ 1) that multiplies γ for the normal block whose λ starts at `lam`
/// (mask: the same block's bits, or nullptr).  `stage` picks F for the exact mode.
/// Mode None → 1; AdaptiveMac has no per-block factor → 1 (see penalty_gamma).
double block_penalty_factor(const SearchSpace& space, const float* lam, const uint8_t* mask, int stage,
                            PenaltyMode mode);

/**
 * @brief Fills γ_e for the whole flat λ (space.total_lambda() entries).
 * @param lam    current λ, before the update
 * @param mask   live mask or nullptr (all live)
 * @param gamma  base γ (≥ 0)
 * @param out    γ_e, total_lambda() entries
 */
void penalty_gamma(const SearchSpace& space, const float* lam, const uint8_t* mask, float gamma, PenaltyMode mode,
                   float* out);
std::vector<float> penalty_gamma(const SearchSpace& space, const std::vector<float>& lam,
                                 const std::vector<uint8_t>* mask, float gamma, PenaltyMode mode);

}  // namespace dsonas
