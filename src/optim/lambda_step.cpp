// lambda_step.cpp — see lambda_step.hpp.
#include "dsonas/optim/lambda_step.hpp"

#include <algorithm>
#include <cstdio>

#include "dsonas/core/error.hpp"
#include "dsonas/optim/optimizer.hpp"
#include "dsonas/model/prune.hpp"

namespace dsonas {

std::string PruneSchedule::to_string() const {
  if (kind == Kind::Step) return "step";
  return str("reference:", dense_epochs, ":", every);
}

PruneSchedule PruneSchedule::from(const std::string& kind, int dense_epochs, int every, const std::string& field) {
  PruneSchedule s;
  if (kind == "step") return s;
  if (kind != "reference") fail_usage(str(field, ": '", kind, "' (expected step or reference)"));
  if (dense_epochs < 0) fail_usage(str(field, "-dense-epochs: must be >= 0 (got ", dense_epochs, ")"));
  if (every < 1) fail_usage(str(field, "-every: must be >= 1 epoch (got ", every, ")"));
  s.kind = Kind::Reference;
  s.dense_epochs = dense_epochs;
  s.every = every;
  return s;
}

PruneSchedule PruneSchedule::parse(const std::string& s, const std::string& source) {
  if (s.empty() || s == "step") return PruneSchedule();
  int e = 0, p = 0, used = 0;
  if (std::sscanf(s.c_str(), "reference:%d:%d%n", &e, &p, &used) != 2 || static_cast<size_t>(used) != s.size() ||
      e < 0 || p < 1)
    throw Error(kExitCheckpoint, str(source, ": prune schedule '", s, "' is not step or reference:E:P"));
  PruneSchedule r;
  r.kind = Kind::Reference;
  r.dense_epochs = e;
  r.every = p;
  return r;
}

LambdaStepper::LambdaStepper(const SearchSpace& space, float gamma, PenaltyMode mode, double lambda_lr_mult,
                             float momentum, PruneSchedule schedule, int64_t epoch_steps, int w_steps, int lambda_steps)
    : space_(space),
      gamma_(gamma),
      lr_mult_(lambda_lr_mult),
      mom_(momentum),
      mode_(mode),
      schedule_(schedule),
      epoch_steps_(std::max<int64_t>(1, epoch_steps)),
      w_steps_(w_steps),
      lambda_steps_(lambda_steps) {
  const size_t T = static_cast<size_t>(space.total_lambda());
  v_.assign(T, 0.f);
  gamma_e_.assign(T, 0.f);
  before_.assign(T, 0.f);
}

bool LambdaStepper::rebuild_due(int64_t t) const {
  if (schedule_.kind != PruneSchedule::Kind::Reference) return false;
  const int64_t e = t / epoch_steps_;
  if (e < schedule_.dense_epochs || (e - schedule_.dense_epochs) % schedule_.every != 0) return false;
  // the first λ-step of epoch e: the λ-step before it lies in an earlier epoch
  const int64_t cycle = w_steps_ + lambda_steps_;
  const int64_t prev = (t % cycle) > w_steps_ ? t - 1 : t - w_steps_ - 1;
  return prev < 0 || prev / epoch_steps_ < e;
}

LambdaStepResult LambdaStepper::step(std::vector<float>& lam, std::vector<uint8_t>& mask, const float* grad, float lr,
                                     int64_t t, const float* gamma_scale) {
  LambdaStepResult r;
  DSO_CHECK(lam.size() == v_.size() && mask.size() == v_.size(), "λ-step sizes ", lam.size(), "/", mask.size(), "/",
            v_.size());
  penalty_gamma(space_, lam.data(), mask.data(), gamma_, mode_, gamma_e_.data());
  if (gamma_scale)
    for (size_t e = 0; e < gamma_e_.size(); ++e) gamma_e_[e] *= gamma_scale[e];
  before_ = lam;
  const std::vector<uint8_t> mask_before = mask;
  apg_nag_step(lam.data(), v_.data(), grad, gamma_e_.data(), mask.data(), lam.size(), static_cast<float>(lr * lr_mult_),
               mom_);
  for (size_t e = 0; e < lam.size(); ++e) r.revived += before_[e] == 0.f && lam[e] > 0.f;
  const bool prune = schedule_.kind == PruneSchedule::Kind::Step || rebuild_due(t);
  if (prune) {
    prune_all(space_, lam.data(), mask.data(), v_.data(), before_.data());
    r.rebuilt = schedule_.kind == PruneSchedule::Kind::Reference;
  }
  for (size_t e = 0; e < mask.size(); ++e) r.pruned += mask_before[e] && !mask[e];
  r.mask_changed = mask != mask_before;
  return r;
}

}  // namespace dsonas
