// lr_schedule.cpp — the four schedules of docs/method.md §4.5 and their factory.
#include "dsonas/optim/lr_schedule.hpp"

#include <cmath>  // defines: std::cos, std::isfinite

#include "dsonas/core/error.hpp"  // defines: fail_usage, DSO_CHECK, str

namespace dsonas {
namespace {

constexpr const char* kField = "optim.lr-schedule";
constexpr double kPi = 3.14159265358979323846;

/// Strict parse of a non-negative decimal integer (no sign, no spaces, ≤ 1e12).
bool parse_uint(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 12) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    const size_t p = s.find(sep, start);
    parts.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return parts;
}

void check_rate(double v, const char* field) {
  if (!std::isfinite(v) || v < 0.0) fail_usage(str(field, ": must be a finite rate >= 0 (got ", v, ")"));
}

[[noreturn]] void bad_spec(const std::string& spec, const std::string& why) {
  fail_usage(str(kField, ": bad schedule '", spec, "': ", why,
                 " (expected constant, step:E1,E2,..., cosine[:T0[,T_mult]] or warmup-linear[:W])"));
}

}  // namespace

// ---- Constant ------------------------------------------------------------------
std::string ConstantLr::describe() const { return str("constant(", base_, ")"); }

// ---- Step ----------------------------------------------------------------------
StepLr::StepLr(double base, std::vector<int64_t> boundaries_steps, double factor)
    : base_(base), factor_(factor), bounds_(std::move(boundaries_steps)) {
  for (size_t i = 1; i < bounds_.size(); ++i) DSO_CHECK(bounds_[i] > bounds_[i - 1], "step boundaries must increase");
}

double StepLr::lr(int64_t t) const {
  double lr = base_;
  for (int64_t b : bounds_)
    if (t >= b) lr *= factor_;
  return lr;
}

std::string StepLr::describe() const {
  std::string b;
  for (size_t i = 0; i < bounds_.size(); ++i) b += str(i ? "," : "", bounds_[i]);
  return str("step(", base_, "; x", factor_, " at steps ", b, ")");
}

// ---- SGDR cosine ---------------------------------------------------------------
CosineLr::CosineLr(double lr_min, double lr_max, int t0_epochs, int t_mult, int64_t epoch_size)
    : lr_min_(lr_min), lr_max_(lr_max), t0_(t0_epochs), t_mult_(t_mult), epoch_size_(epoch_size) {
  DSO_CHECK(t0_ >= 1 && t_mult_ >= 1 && epoch_size_ >= 1, "cosine parameters");
}

int64_t CosineLr::cycle_start(int c) const {
  int64_t start = 0, len = t0_;
  for (int i = 0; i < c; ++i) {
    start += len;
    len *= t_mult_;
  }
  return start;
}

double CosineLr::lr(int64_t t) const {
  if (t < 0) t = 0;
  const int64_t epoch = t / epoch_size_;  // piecewise constant per epoch
  int64_t start = 0, len = t0_;
  while (epoch >= start + len) {
    start += len;
    len *= t_mult_;
  }
  const double e = static_cast<double>(epoch - start), T = static_cast<double>(len);
  return lr_min_ + 0.5 * (lr_max_ - lr_min_) * (1.0 + std::cos(kPi * e / T));
}

std::string CosineLr::describe() const {
  return str("cosine(", lr_min_, "..", lr_max_, "; T0=", t0_, " T_mult=", t_mult_, " epoch=", epoch_size_, " steps)");
}

// ---- Warm-up + linear decay ----------------------------------------------------
WarmupLinearLr::WarmupLinearLr(double lr_start, double lr_peak, int warmup_epochs, int total_epochs, int64_t epoch_size)
    : start_(lr_start),
      peak_(lr_peak),
      warm_steps_(static_cast<int64_t>(warmup_epochs) * epoch_size),
      total_steps_(static_cast<int64_t>(total_epochs) * epoch_size) {
  DSO_CHECK(warm_steps_ >= 0 && total_steps_ > warm_steps_, "warm-up parameters");
}

double WarmupLinearLr::lr(int64_t t) const {
  if (t < 0) t = 0;
  if (t < warm_steps_) return start_ + (peak_ - start_) * static_cast<double>(t) / static_cast<double>(warm_steps_);
  const double lr =
      peak_ - peak_ * static_cast<double>(t - warm_steps_) / static_cast<double>(total_steps_ - warm_steps_);
  return lr > 0.0 ? lr : 0.0;
}

std::string WarmupLinearLr::describe() const {
  return str("warmup-linear(", start_, "->", peak_, " over ", warm_steps_, " steps, ->0 at ", total_steps_, ")");
}

// ---- Factory -------------------------------------------------------------------
std::unique_ptr<LrSchedule> make_lr_schedule(const std::string& spec, const LrParams& p) {
  check_rate(p.base_lr, "optim.lr");
  if (p.epoch_size < 1) fail_usage(str("optim.epoch-size: must be >= 1 (got ", p.epoch_size, ")"));

  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  const bool has_args = colon != std::string::npos;
  std::vector<int64_t> args;
  if (has_args) {
    for (const std::string& a : split(spec.substr(colon + 1), ',')) {
      int64_t v = 0;
      if (!parse_uint(a, &v)) bad_spec(spec, str("'", a, "' is not a non-negative integer"));
      args.push_back(v);
    }
  }

  if (kind == "constant") {
    if (has_args) bad_spec(spec, "constant takes no arguments");
    return std::make_unique<ConstantLr>(p.base_lr);
  }
  if (kind == "step") {
    if (!has_args) bad_spec(spec, "step needs its boundary epochs, e.g. step:30,60,90");
    std::vector<int64_t> steps;
    for (size_t i = 0; i < args.size(); ++i) {
      if (i > 0 && args[i] <= args[i - 1]) bad_spec(spec, "boundaries must strictly increase");
      steps.push_back(args[i] * p.epoch_size);
    }
    return std::make_unique<StepLr>(p.base_lr, steps);
  }
  if (kind == "cosine") {
    check_rate(p.lr_min, "optim.lr-min");
    if (p.lr_min > p.base_lr) fail_usage(str("optim.lr-min: ", p.lr_min, " is above optim.lr ", p.base_lr));
    if (args.size() > 2) bad_spec(spec, "cosine takes at most T0,T_mult");
    const int64_t t0 = args.size() > 0 ? args[0] : 10;
    const int64_t tm = args.size() > 1 ? args[1] : 2;
    if (t0 < 1 || t0 > 1000000) bad_spec(spec, "T0 must be in 1..1000000 epochs");
    if (tm < 1 || tm > 100) bad_spec(spec, "T_mult must be in 1..100");
    return std::make_unique<CosineLr>(p.lr_min, p.base_lr, static_cast<int>(t0), static_cast<int>(tm), p.epoch_size);
  }
  if (kind == "warmup-linear") {
    check_rate(p.warmup_lr, "optim.warmup-lr");
    if (args.size() > 1) bad_spec(spec, "warmup-linear takes at most the warm-up epochs");
    const int64_t w = args.empty() ? p.warmup_epochs : args[0];
    if (w < 0) fail_usage(str("optim.warmup-epochs: must be >= 0 (got ", w, ")"));
    if (p.total_epochs < 1 || p.total_epochs <= w)
      fail_usage(str("optim.epochs: must exceed the ", w, " warm-up epochs (got ", p.total_epochs, ")"));
    return std::make_unique<WarmupLinearLr>(p.warmup_lr, p.base_lr, static_cast<int>(w), p.total_epochs, p.epoch_size);
  }
  bad_spec(spec, str("unknown kind '", kind, "'"));
}

}  // namespace dsonas
