// optimizer.hpp — host reference updates: NAG for weights, APG-NAG for λ and
// elementwise gradient clipping (the weight-decay rule by parameter name, with the
// training phases, is model/weight_decay.hpp).
//
// Design note.  Everything here works on plain float arrays on the host.  The
// production weight update on device tensors lives in the backend; nag_step()
// below is the reference it is tested against.  The λ update is small (at most
// a few thousand entries) and is always done on the host, on every rank, from
// identical inputs, so every rank gets bit-identical λ (docs/method.md §4).
//
// Live mask.  Every λ entry has a persistent uint8 live bit (docs/method.md §6.2):
// a masked entry (bit 0) is an edge removed from the execution plan.  It is held
// at exactly λ = 0, v = 0 and is skipped by the update.  A null mask = all live.
#pragma once
#include <cstddef>  // defines: size_t
#include <cstdint>  // defines: uint8_t
#include <string>   // defines: std::string

#include "dsonas/model/weight_decay.hpp"  // defines: Phase, weight_decay_for

namespace dsonas {

/**
 * @brief NAG step, MXNet flavour (docs/method.md §4.2), host reference.
 *
 * Per element, with g the (rescaled, optionally clipped) gradient:
 * @f[ g' = g + \mathrm{wd}\,w,\quad m \leftarrow \mu m + g',\quad
 *     w \leftarrow w - \eta\,(g' + \mu m). @f]
 * g is not modified.  m starts at zero.
 */
void nag_step(float* w, const float* g, float* m, size_t n, float lr, float mom, float wd);

/**
 * @brief APG-NAG proximal update of λ with non-negativity (docs/method.md §4.3).
 *
 * Accelerated proximal gradient with Nesterov momentum, as in DSO-NAS (Zhang,
 * Huang & Wang, "You Only Search Once: Single Shot Neural Architecture Search via
 * Direct Sparse Optimization", arXiv 1811.01567, Eq. 6–8) and Huang & Wang,
 * "Data-Driven Sparse Structure Selection for Deep Neural Networks" (ECCV 2018),
 * plus a final clamp.  Per live entry e, in exactly this order:
 * @f{align*}{
 *   v &\leftarrow \mu v \\
 *   z &\leftarrow \lambda - \eta g \\
 *   z &\leftarrow \mathcal{S}_{\eta\gamma_e}(z) = \mathrm{sign}(z)\max(0, |z| - \eta\gamma_e) \\
 *   v &\leftarrow z - \lambda + v \\
 *   \lambda &\leftarrow z + \mu v \\
 *   \lambda &\leftarrow \max(0, \lambda)
 * @f}
 * The clamp acts on λ only; v is not clamped.  The soft-threshold and the clamp
 * produce exact zeros, which pruning tests with == 0.
 *
 * @param lam      λ, n entries, updated in place
 * @param v        momentum buffer, n entries (starts at 0), updated in place
 * @param g        gradient of the loss w.r.t. λ (rescaled and clipped)
 * @param gamma_e  per-entry sparsity strength γ_e (see penalty.hpp)
 * @param mask     persistent live mask (1 = live) or nullptr for all live;
 *                 masked entries are set to exactly λ = 0, v = 0 and not updated
 * @param lr       η (the same schedule as the weights)
 * @param mom      μ (0.9)
 */
void apg_nag_step(float* lam, float* v, const float* g, const float* gamma_e, const uint8_t* mask, size_t n, float lr,
                  float mom);

/// Same with one γ for every entry.
void apg_nag_step(float* lam, float* v, const float* g, float gamma, const uint8_t* mask, size_t n, float lr,
                  float mom);

/// Elementwise clip of g to [−c, c] in place (docs/method.md §4.1: c = 2, search only).
/// NaN stays NaN (the caller's finiteness check must see it).  c must be > 0.
void clip_elementwise(float* g, size_t n, float c);

}  // namespace dsonas
