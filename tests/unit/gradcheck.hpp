// gradcheck.hpp — reusable finite-difference gradient checker for the tests.
//
// For a scalar loss L(x) (usually the random projection <r, f(x)>) and an
// analytic gradient g, every checked coordinate i compares g[i] with the
// 4th-order central difference
//     (−L(x+2h) + 8·L(x+h) − 8·L(x−h) + L(x−2h)) / (12h)
// evaluated in double (the step actually applied is the float-rounded one).
// Pass:  |num − g| ≤ atol + rtol·max(|num|, |g|).
//
// Kinks (ReLU at 0, max-pool ties, ...): the caller may give `state`, a
// discrete signature of the forward pass (the ReLU mask, the argmax of every
// window).  A coordinate whose signature at x±h or x±2h differs from the one at
// x is skipped (as Caffe's GradientChecker does with its kink handling), since
// the finite difference straddles a non-differentiable point there.
//
// Usage:
//   auto loss = [&]{ run forward on the current x; return <r, y>; };
//   GradCheckResult res = check_gradient(x_ptr, n, analytic_ptr, loss, opts, state);
//   EXPECT_TRUE(res.ok()) << res.summary();
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace dsonas {
namespace test {

struct GradCheckOptions {
  double h = 1e-2;
  double atol = 1e-3;
  double rtol = 5e-3;
  /// Check at most this many coordinates (random subset, fixed seed); 0 = all.
  size_t max_coords = 0;
  uint64_t seed = 12345;
  /// Fail if more than this fraction of the coordinates had to be skipped.
  double max_skip_fraction = 0.5;
};

struct GradCheckResult {
  size_t checked = 0, skipped = 0, failed = 0;
  double max_abs_err = 0;
  std::string failures;  // the first few, one per line
  bool ok(double max_skip_fraction = 0.5) const {
    return failed == 0 && checked > 0 &&
           static_cast<double>(skipped) <= max_skip_fraction * static_cast<double>(checked + skipped);
  }
  std::string summary() const {
    std::ostringstream os;
    os << "checked " << checked << ", skipped " << skipped << " (kinks), failed " << failed << ", max |err| "
       << max_abs_err << "\n"
       << failures;
    return os.str();
  }
};

using LossFn = std::function<double()>;
using StateFn = std::function<std::vector<uint8_t>()>;

/// x: the n parameters the loss reads (perturbed in place, restored after).
inline GradCheckResult check_gradient(float* x, size_t n, const float* analytic, const LossFn& loss,
                                      const GradCheckOptions& o = GradCheckOptions(), const StateFn& state = nullptr) {
  GradCheckResult r;
  std::vector<size_t> coords(n);
  for (size_t i = 0; i < n; ++i) coords[i] = i;
  if (o.max_coords > 0 && o.max_coords < n) {
    std::mt19937_64 rng(o.seed);
    std::shuffle(coords.begin(), coords.end(), rng);
    coords.resize(o.max_coords);
    std::sort(coords.begin(), coords.end());
  }
  std::vector<uint8_t> s0;
  if (state) s0 = state();
  int nfail_listed = 0;
  for (size_t i : coords) {
    const float x0 = x[i];
    const float hf = static_cast<float>(o.h);
    const float xs[4] = {x0 + 2 * hf, x0 + hf, x0 - hf, x0 - 2 * hf};
    double L[4];
    bool kink = false;
    for (int q = 0; q < 4; ++q) {
      x[i] = xs[q];
      L[q] = loss();
      if (state && state() != s0) kink = true;
    }
    x[i] = x0;
    if (kink) {
      ++r.skipped;
      continue;
    }
    // Steps as actually applied after float rounding (symmetric to ~1e-7·|x|).
    const double h1 = (static_cast<double>(xs[1]) - static_cast<double>(xs[2])) / 2.0;
    const double h2 = (static_cast<double>(xs[0]) - static_cast<double>(xs[3])) / 4.0;
    const double hh = 0.5 * (h1 + h2);
    const double num = (-L[0] + 8.0 * L[1] - 8.0 * L[2] + L[3]) / (12.0 * hh);
    const double ana = analytic[i];
    const double err = std::fabs(num - ana);
    r.max_abs_err = std::max(r.max_abs_err, err);
    ++r.checked;
    if (err > o.atol + o.rtol * std::max(std::fabs(num), std::fabs(ana))) {
      ++r.failed;
      if (nfail_listed++ < 8) {
        std::ostringstream os;
        os << "  coord " << i << ": numeric " << num << " analytic " << ana << "\n";
        r.failures += os.str();
      }
    }
  }
  if (state) {
    // Leave the caller's forward state as it was.
    (void)loss();
  }
  return r;
}

/// <a, b> in double.
inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

}  // namespace test
}  // namespace dsonas
