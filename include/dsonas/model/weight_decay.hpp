// weight_decay.hpp — which parameters get weight decay, by their hierarchical name
// (docs/method.md §4.2), in each training phase.  A model concern (the names are the
// model's), used by the optimiser and by Network::weight_decays().
#pragma once
#include <string>  // defines: std::string

namespace dsonas {

/// The three training phases; they differ in which parameters get weight decay.
enum class Phase { Pretrain, Search, Retrain };
const char* phase_name(Phase p);

/**
 * @brief Weight decay for a parameter, by its hierarchical name (docs/method.md §4.2).
 *
 * Names are '/'-separated paths, e.g. "s1/u2/l3/o1/pw/weight", "s1/u1/out/bn/gamma",
 * "head/fc/bias".  The rule looks at the last component only:
 *   - Search: wd for "weight"; 0 for everything else (BN γ, β, bias, λ).
 *   - Pretrain / Retrain: wd for "weight" or "gamma"; 0 for β, bias, λ.
 * Any name with a component starting with "lambda" (λ tensors) gets 0 in every
 * phase, whatever its last component.
 */
float weight_decay_for(const std::string& name, Phase phase, float wd);

}  // namespace dsonas
