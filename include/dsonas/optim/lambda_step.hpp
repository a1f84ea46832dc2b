// lambda_step.hpp — the DSO-NAS λ-step: budget-aware γ, APG-NAG with the
// non-negativity clamp, and the pruning schedule (docs/method.md §4.3, §5, §6.1–6.2).
//
// Two pruning schedules (search.prune):
//  * step       (the default, and the only one before 2026-12-07): §6.1 and the live
//               mask are applied after every λ-step, so a λ that reaches 0 leaves the
//               plan at once and can never come back.
//  * reference  (the official code, §6.2): the supergraph runs dense (no entry leaves
//               the plan) for the first E epochs; then at the first λ-step of epoch E,
//               E + P, E + 2P, … it is rebuilt — §6.1 and mask &= (λ > 0), the APG
//               momentum of every entry leaving the plan set to 0.  Between rebuilds a
//               λ at 0 stays wired: it keeps receiving gradients and may revive.
// A "revival" is an entry that was exactly 0 before a λ-step and is > 0 after it.
//
// The stepper is a pure function of (its state, λ, mask, dλ, lr, t), so a run that
// resumes from a checkpoint of (λ, mask, momentum, counters) continues bit for bit.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsonas/model/search_space.hpp"
#include "dsonas/optim/penalty.hpp"

namespace dsonas {

struct PruneSchedule {
  enum class Kind { Step, Reference } kind = Kind::Step;
  int dense_epochs = 5;  ///< reference: E, epochs on the dense supergraph (≥ 0)
  int every = 5;         ///< reference: P, epochs between rebuilds (≥ 1)

  /// "step", or "reference:E:P" (the structural field of checkpoints).
  std::string to_string() const;
  /// Parses search.prune (+ the two numbers); exit 2 naming `field` on a bad value.
  static PruneSchedule from(const std::string& kind, int dense_epochs, int every,
                            const std::string& field = "search.prune");
  /// Parses to_string()'s form ("" = a checkpoint from before schedules: "step").
  static PruneSchedule parse(const std::string& s, const std::string& source);
  bool operator==(const PruneSchedule& o) const {
    return kind == o.kind && (kind == Kind::Step || (dense_epochs == o.dense_epochs && every == o.every));
  }
};

struct LambdaStepResult {
  bool mask_changed = false;  ///< the plan must be rebuilt
  bool rebuilt = false;       ///< reference schedule: a rebuild happened at this step
  int64_t pruned = 0;         ///< entries that left the plan at this step
  int64_t revived = 0;        ///< entries 0 before the step and > 0 after it
};

class LambdaStepper {
 public:
  /// space: the λ layout; gamma: base γ; mode: the budget-aware factor (§5);
  /// lambda_lr_mult: λ lr = weight lr × this; momentum μ; epoch_steps: steps per
  /// epoch; w_steps / lambda_steps: the alternation (a λ-step is step t with
  /// t mod (w+λ) ≥ w).
  LambdaStepper(const SearchSpace& space, float gamma, PenaltyMode mode, double lambda_lr_mult, float momentum,
                PruneSchedule schedule, int64_t epoch_steps, int w_steps, int lambda_steps);

  /// One λ-step at global step t (0-based) with weight lr `lr`: lam, mask and the
  /// momentum are updated in place; grad is the reduced (and clipped) dλ.  gamma_scale
  /// (may be null) multiplies γ_e per entry (the §5.3 latency factors).
  LambdaStepResult step(std::vector<float>& lam, std::vector<uint8_t>& mask, const float* grad, float lr, int64_t t,
                        const float* gamma_scale = nullptr);

  /// True if the λ-step at step t rebuilds under the reference schedule.
  bool rebuild_due(int64_t t) const;

  std::vector<float>& momentum() { return v_; }
  const std::vector<float>& momentum() const { return v_; }
  const PruneSchedule& schedule() const { return schedule_; }

 private:
  const SearchSpace& space_;
  float gamma_;
  double lr_mult_;
  float mom_;
  PenaltyMode mode_;
  PruneSchedule schedule_;
  int64_t epoch_steps_;
  int w_steps_, lambda_steps_;
  std::vector<float> v_, gamma_e_, before_;
};

}  // namespace dsonas
