// gpu_test_util.hpp — helpers shared by the tests of the CUDA backend
// (tests/gpu): random data, tolerance comparisons, a host SGEMM with cuBLAS's
// column-major semantics, and the "is there a GPU" probe that makes every
// device test say it was skipped.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dsonas/backend/cuda_probe.hpp"
#include "../../src/backend/cuda/kernel_math.hpp"
#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"

namespace dsonas {
namespace gputest {

using Vec = std::vector<float>;

inline Vec rand_vec(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Vec v(n);
  for (auto& e : v) e = u(g);
  return v;
}

/// |got − want| ≤ atol + rtol·|want| elementwise; reports the first few misses.
inline void expect_close(const Vec& got, const Vec& want, double atol, double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double tol = atol + rtol * std::fabs(static_cast<double>(want[i]));
    if (!(d <= tol)) {
      if (bad++ < 5) ADD_FAILURE() << what << ": [" << i << "] got " << got[i] << " want " << want[i];
      if (!(d <= worst)) worst = d;
    }
  }
  EXPECT_EQ(bad, 0) << what << " (" << bad << " of " << got.size() << " outside tolerance, worst |diff| " << worst
                    << ")";
}

/// As expect_close with atol = max(1e-6, frac·max|want|): for results that are
/// long sums, whose rounding error scales with the magnitude of the whole
/// tensor rather than of each element.
inline void expect_close_max(const Vec& got, const Vec& want, double frac, double rtol, const std::string& what) {
  double m = 0;
  for (float v : want) m = std::max(m, std::fabs(static_cast<double>(v)));
  expect_close(got, want, std::max(1e-6, frac * m), rtol, what);
}

inline bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline Vec lin(float a, const Vec& x, float b, const Vec& y) {
  Vec r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = a * x[i] + b * y[i];
  return r;
}

/// C = alpha·op(A)·op(B) + beta·C exactly as cublasSgemm defines it (column-
/// major, offsets of the plan applied; beta == 0: C is not read), in double.
/// Also checks the leading dimensions cuBLAS would reject.
inline void host_sgemm(const km::GemmPlan& p, float alpha, const float* A, const float* B, float beta, float* C) {
  EXPECT_GE(p.lda, std::max(1, p.ta ? p.k : p.m)) << "lda";
  EXPECT_GE(p.ldb, std::max(1, p.tb ? p.n : p.k)) << "ldb";
  EXPECT_GE(p.ldc, std::max(1, p.m)) << "ldc";
  for (int j = 0; j < p.n; ++j)
    for (int i = 0; i < p.m; ++i) {
      double s = 0;
      for (int l = 0; l < p.k; ++l) {
        const float a =
            p.ta ? A[p.a_off + l + static_cast<int64_t>(i) * p.lda] : A[p.a_off + i + static_cast<int64_t>(l) * p.lda];
        const float b =
            p.tb ? B[p.b_off + j + static_cast<int64_t>(l) * p.ldb] : B[p.b_off + l + static_cast<int64_t>(j) * p.ldb];
        s += static_cast<double>(a) * b;
      }
      float& c = C[p.c_off + i + static_cast<int64_t>(j) * p.ldc];
      c = beta == 0.f ? static_cast<float>(alpha * s) : static_cast<float>(alpha * s + beta * static_cast<double>(c));
    }
}

/// x rounded to nearest-even with `bits` explicit mantissa bits (FP32 has 23;
/// TF32 10, bfloat16 7), exponent range unchanged: what a tensor core sees of
/// an FP32 input under --gpu-math tf32 / bf16 if the conversion rounds to
/// nearest.  NaN and infinity pass through.
inline float round_mantissa(float x, int bits) {
  if (!std::isfinite(x) || bits >= 23) return x;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const int drop = 23 - bits;
  const uint32_t half = 1u << (drop - 1), mask = (1u << drop) - 1, rem = u & mask;
  u &= ~mask;
  if (rem > half || (rem == half && (u >> drop & 1u))) u += 1u << drop;  // may carry into the exponent: correct
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

/// True when a CUDA device is usable; *why says why not.
inline bool have_gpu(std::string* why) {
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
  static std::string reason;
  static const bool ok = cuda_device_count(&reason) > 0;
#else
  static const std::string reason = "built without CUDA";
  static const bool ok = false;
#endif
  *why = reason;
  return ok;
}

}  // namespace gputest
}  // namespace dsonas

/// First statement of every test that needs a GPU.
#define REQUIRE_GPU()                                                                            \
  do {                                                                                           \
    std::string dso_why_;                                                                        \
    if (!::dsonas::gputest::have_gpu(&dso_why_)) GTEST_SKIP() << "no CUDA device: " << dso_why_; \
  } while (0)
