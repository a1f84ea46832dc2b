// lr_schedule.hpp — learning-rate schedules as pure functions of the global step.
//
// Design note.  docs/method.md §4.5: every schedule is a function of the global
// step count t, which counts weight steps AND λ steps (§10.1 item 2).  Here t is
// 0-based: lr(t) is the rate used by the (t+1)-th update.  (MXNet calls its
// scheduler with num_update = t + 1 and decays when num_update > boundary, which
// is t ≥ boundary below.)  Schedules hold no state, so a resumed run only needs t.
//
// Config strings (field "optim.lr-schedule"):
//   "constant"
//   "step:B1,B2,..."          lr = base·0.1^(#boundaries passed); Bi are EPOCHS,
//                             strictly increasing non-negative integers, converted
//                             to steps with epoch_size (Bi·epoch_size)
//   "cosine[:T0[,T_mult]]"    SGDR between lr_min and base (= lr_max), default 10,2
//   "warmup-linear[:W]"       linear warm-up from warmup_lr to base over W epochs
//                             (default LrParams::warmup_epochs), then linear decay
//                             to 0 at total_epochs, floor 0
#pragma once
#include <cstdint>  // defines: int64_t
#include <memory>   // defines: std::unique_ptr
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

namespace dsonas {

/// Abstract schedule: lr as a pure function of the 0-based global step t.
class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  virtual double lr(int64_t t) const = 0;
  /// One-line description for the resolved-config table, e.g. "step(0.1; 11700,23400)".
  virtual std::string describe() const = 0;
};

class ConstantLr : public LrSchedule {
 public:
  explicit ConstantLr(double base) : base_(base) {}
  double lr(int64_t) const override { return base_; }
  std::string describe() const override;

 private:
  double base_;
};

/// lr = base·0.1^(number of boundaries b with t ≥ b); boundaries in steps.
class StepLr : public LrSchedule {
 public:
  StepLr(double base, std::vector<int64_t> boundaries_steps, double factor = 0.1);
  double lr(int64_t t) const override;
  std::string describe() const override;

 private:
  double base_, factor_;
  std::vector<int64_t> bounds_;
};

/**
 * @brief SGDR cosine with warm restarts (Loshchilov & Hutter), piecewise constant per epoch.
 *
 * With E = ⌊t / epoch_size⌋ and cycles of length T0, T0·T_mult, T0·T_mult², ...
 * (restarts at epochs T0, T0(1+T_mult), ...; 10, 30, 70, 150, 310 for 10, 2),
 * e = E − (start of the current cycle), T = its length:
 * @f[ \mathrm{lr} = \mathrm{lr}_{min} + \tfrac12(\mathrm{lr}_{max} - \mathrm{lr}_{min})
 *     (1 + \cos(\pi e / T)). @f]
 */
class CosineLr : public LrSchedule {
 public:
  CosineLr(double lr_min, double lr_max, int t0_epochs, int t_mult, int64_t epoch_size);
  double lr(int64_t t) const override;
  std::string describe() const override;
  /// Epoch at which cycle c (0-based) starts: 0, T0, T0 + T0·T_mult, ...
  int64_t cycle_start(int c) const;

 private:
  double lr_min_, lr_max_;
  int t0_, t_mult_;
  int64_t epoch_size_;
};

/**
 * @brief Linear warm-up then linear decay, per step (docs/method.md §4.5, ImageNet retrain).
 *
 * W = warmup_epochs·epoch_size, S = total_epochs·epoch_size:
 *   t < W:  lr = lr_start + (lr_peak − lr_start)·t / W
 *   t ≥ W:  lr = max(0, lr_peak − lr_peak·(t − W) / (S − W))
 * (0.1 → 0.5 over 5 epochs, then −0.5/(235·1251) per step to 0 at epoch 240).
 */
class WarmupLinearLr : public LrSchedule {
 public:
  WarmupLinearLr(double lr_start, double lr_peak, int warmup_epochs, int total_epochs, int64_t epoch_size);
  double lr(int64_t t) const override;
  std::string describe() const override;

 private:
  double start_, peak_;
  int64_t warm_steps_, total_steps_;
};

/// Numbers a schedule string does not carry.  Fields are checked by make_lr_schedule.
struct LrParams {
  double base_lr = 0.1;      ///< constant/step: base; cosine: lr_max; warmup-linear: peak
  double lr_min = 1e-4;      ///< cosine floor
  double warmup_lr = 0.1;    ///< warmup-linear: lr at t = 0
  int64_t epoch_size = 390;  ///< steps per epoch (> 0)
  int total_epochs = 240;    ///< warmup-linear: lr reaches 0 here
  int warmup_epochs = 5;     ///< warmup-linear default W
};

/**
 * Builds a schedule from a config string (see the file comment).  Bad strings fail
 * with exit 2 naming "optim.lr-schedule"; bad numbers name their field
 * ("optim.lr", "optim.lr-min", "optim.warmup-lr", "optim.epoch-size",
 * "optim.epochs", "optim.warmup-epochs").
 */
std::unique_ptr<LrSchedule> make_lr_schedule(const std::string& spec, const LrParams& p);

}  // namespace dsonas
