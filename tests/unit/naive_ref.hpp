// naive_ref.hpp — slow, obviously-correct reference implementations of the
// backend primitives for the unit tests.  Host memory, NCHW activations,
// double accumulation.  Never used by src/.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace dsonas {
namespace ref {

using Vec = std::vector<float>;

// ---- the rounding-error model the kernel comparisons use ------------------------------
//
// A float32 kernel computing s = Σ_{i<n} a_i·b_i, in any order, blocked or not, with or
// without FMA, satisfies (Higham & Mary, "A new approach to probabilistic rounding error
// analysis", SIAM J. Sci. Comput. 2019, Thm 3.1)
//     |ŝ − s| ≤ λ·√n·u·Σ|a_i·b_i|,   u = 2⁻²⁴,
// with probability at least 1 − 2n·exp(−λ²/2) when the rounding errors are independent
// with mean zero; λ = 10 makes that 1 − 4e-22·n.  Σ|a_i·b_i| is the same reference
// computation run on |a| and |b|.  The bound does not depend on the summation order, so
// it holds for every BLAS kernel, SIMD path and thread split; an indexing bug (a term
// missing or doubled) moves the sum by about one |a_i·b_i|, far above it for the sizes
// tested.  The double-precision reference adds u/2·|s| when rounded to float.
constexpr double kUnitRoundoff = 1.0 / (1 << 24);
constexpr double kLambda = 10.0;
inline double sum_bound(int64_t n, double mag) {
  return kLambda * std::sqrt(static_cast<double>(n)) * kUnitRoundoff * mag;
}
inline Vec abs_of(const Vec& v) {
  Vec a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(v[i]);
  return a;
}

inline int64_t idx4(int a, int b, int c, int d, int B, int C, int D) {
  return ((static_cast<int64_t>(a) * B + b) * C + c) * D + d;
}

/// Convolution descriptor (mirrors ConvDesc; groups is 1 or cin == cout).
struct Conv {
  int cin, cout, k, s, p, groups;
  int out(int in) const { return (in + 2 * p - k) / s + 1; }
  int cin_per_group() const { return cin / groups; }
  int cout_per_group() const { return cout / groups; }
};

/// y[N,Cout,Ho,Wo] = conv(x[N,Cin,H,W], w[Cout,Cin/g,k,k]).
inline Vec conv_fwd(const Conv& d, const Vec& x, const Vec& w, int N, int H, int W) {
  const int Ho = d.out(H), Wo = d.out(W), cig = d.cin_per_group(), cog = d.cout_per_group();
  Vec y(static_cast<size_t>(N) * d.cout * Ho * Wo);
  for (int n = 0; n < N; ++n)
    for (int co = 0; co < d.cout; ++co) {
      const int g = co / cog;
      for (int oh = 0; oh < Ho; ++oh)
        for (int ow = 0; ow < Wo; ++ow) {
          double s = 0;
          for (int cl = 0; cl < cig; ++cl)
            for (int kh = 0; kh < d.k; ++kh)
              for (int kw = 0; kw < d.k; ++kw) {
                const int ih = oh * d.s - d.p + kh, iw = ow * d.s - d.p + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int ci = g * cig + cl;
                s += static_cast<double>(x[static_cast<size_t>(idx4(n, ci, ih, iw, d.cin, H, W))]) *
                     w[static_cast<size_t>(idx4(co, cl, kh, kw, cig, d.k, d.k))];
              }
          y[static_cast<size_t>(idx4(n, co, oh, ow, d.cout, Ho, Wo))] = static_cast<float>(s);
        }
    }
  return y;
}

/// dx = conv_transpose(dy, w).
inline Vec conv_bwd_data(const Conv& d, const Vec& dy, const Vec& w, int N, int H, int W) {
  const int Ho = d.out(H), Wo = d.out(W), cig = d.cin_per_group(), cog = d.cout_per_group();
  std::vector<double> dx(static_cast<size_t>(N) * d.cin * H * W, 0.0);
  for (int n = 0; n < N; ++n)
    for (int co = 0; co < d.cout; ++co) {
      const int g = co / cog;
      for (int oh = 0; oh < Ho; ++oh)
        for (int ow = 0; ow < Wo; ++ow) {
          const double gv = dy[static_cast<size_t>(idx4(n, co, oh, ow, d.cout, Ho, Wo))];
          for (int cl = 0; cl < cig; ++cl)
            for (int kh = 0; kh < d.k; ++kh)
              for (int kw = 0; kw < d.k; ++kw) {
                const int ih = oh * d.s - d.p + kh, iw = ow * d.s - d.p + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int ci = g * cig + cl;
                dx[static_cast<size_t>(idx4(n, ci, ih, iw, d.cin, H, W))] +=
                    gv * w[static_cast<size_t>(idx4(co, cl, kh, kw, cig, d.k, d.k))];
              }
        }
    }
  return Vec(dx.begin(), dx.end());
}

/// dw = ∂<dy, conv(x,w)>/∂w.
inline Vec conv_bwd_filter(const Conv& d, const Vec& x, const Vec& dy, int N, int H, int W) {
  const int Ho = d.out(H), Wo = d.out(W), cig = d.cin_per_group(), cog = d.cout_per_group();
  std::vector<double> dw(static_cast<size_t>(d.cout) * cig * d.k * d.k, 0.0);
  for (int n = 0; n < N; ++n)
    for (int co = 0; co < d.cout; ++co) {
      const int g = co / cog;
      for (int oh = 0; oh < Ho; ++oh)
        for (int ow = 0; ow < Wo; ++ow) {
          const double gv = dy[static_cast<size_t>(idx4(n, co, oh, ow, d.cout, Ho, Wo))];
          for (int cl = 0; cl < cig; ++cl)
            for (int kh = 0; kh < d.k; ++kh)
              for (int kw = 0; kw < d.k; ++kw) {
                const int ih = oh * d.s - d.p + kh, iw = ow * d.s - d.p + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int ci = g * cig + cl;
                dw[static_cast<size_t>(idx4(co, cl, kh, kw, cig, d.k, d.k))] +=
                    gv * x[static_cast<size_t>(idx4(n, ci, ih, iw, d.cin, H, W))];
              }
        }
    }
  return Vec(dw.begin(), dw.end());
}

struct Pool {
  bool max;
  int k, s, p;
  int out(int in) const { return (in + 2 * p - k) / s + 1; }
};

/// Pooling over planes (P planes of H×W; layout-agnostic since per plane).
inline Vec pool_fwd(const Pool& d, const Vec& x, int P, int H, int W) {
  const int Ho = d.out(H), Wo = d.out(W);
  Vec y(static_cast<size_t>(P) * Ho * Wo);
  for (int pl = 0; pl < P; ++pl)
    for (int oh = 0; oh < Ho; ++oh)
      for (int ow = 0; ow < Wo; ++ow) {
        double m = -std::numeric_limits<double>::infinity(), s = 0;
        for (int kh = 0; kh < d.k; ++kh)
          for (int kw = 0; kw < d.k; ++kw) {
            const int ih = oh * d.s - d.p + kh, iw = ow * d.s - d.p + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            const double v = x[(static_cast<size_t>(pl) * H + ih) * W + iw];
            if (v > m) m = v;
            s += v;
          }
        y[(static_cast<size_t>(pl) * Ho + oh) * Wo + ow] = static_cast<float>(d.max ? m : s / (d.k * d.k));
      }
  return y;
}

/// Index (in the plane) of the first maximum of each max-pool window, -1 if none.
inline std::vector<int> pool_argmax(const Pool& d, const Vec& x, int P, int H, int W) {
  const int Ho = d.out(H), Wo = d.out(W);
  std::vector<int> am(static_cast<size_t>(P) * Ho * Wo, -1);
  for (int pl = 0; pl < P; ++pl)
    for (int oh = 0; oh < Ho; ++oh)
      for (int ow = 0; ow < Wo; ++ow) {
        float m = -std::numeric_limits<float>::infinity();
        int best = -1;
        for (int kh = 0; kh < d.k; ++kh)
          for (int kw = 0; kw < d.k; ++kw) {
            const int ih = oh * d.s - d.p + kh, iw = ow * d.s - d.p + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            const float v = x[(static_cast<size_t>(pl) * H + ih) * W + iw];
            if (best < 0 || v > m) {
              m = v;
              best = ih * W + iw;
            }
          }
        am[(static_cast<size_t>(pl) * Ho + oh) * Wo + ow] = best;
      }
  return am;
}

inline Vec pool_bwd(const Pool& d, const Vec& x, const Vec& dy, int P, int H, int W) {
  const int Ho = d.out(H), Wo = d.out(W);
  std::vector<double> dx(static_cast<size_t>(P) * H * W, 0.0);
  std::vector<int> am;
  if (d.max) am = pool_argmax(d, x, P, H, W);
  for (int pl = 0; pl < P; ++pl)
    for (int oh = 0; oh < Ho; ++oh)
      for (int ow = 0; ow < Wo; ++ow) {
        const size_t o = (static_cast<size_t>(pl) * Ho + oh) * Wo + ow;
        if (d.max) {
          if (am[o] >= 0) dx[static_cast<size_t>(pl) * H * W + static_cast<size_t>(am[o])] += dy[o];
          continue;
        }
        for (int kh = 0; kh < d.k; ++kh)
          for (int kw = 0; kw < d.k; ++kw) {
            const int ih = oh * d.s - d.p + kh, iw = ow * d.s - d.p + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            dx[(static_cast<size_t>(pl) * H + ih) * W + iw] += dy[o] / (d.k * d.k);
          }
      }
  return Vec(dx.begin(), dx.end());
}

/// Training-mode BN(+ReLU) on NCHW; also returns batch mean and biased var.
inline Vec bn_train(const Vec& x, const Vec& gamma, const Vec& beta, int N, int C, int HW, float eps, bool relu,
                    std::vector<double>* mean_out = nullptr, std::vector<double>* var_out = nullptr) {
  Vec y(x.size());
  const double M = static_cast<double>(N) * HW;
  if (mean_out) mean_out->assign(static_cast<size_t>(C), 0);
  if (var_out) var_out->assign(static_cast<size_t>(C), 0);
  for (int c = 0; c < C; ++c) {
    double s = 0, ss = 0;
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < HW; ++i) s += x[(static_cast<size_t>(n) * C + c) * HW + i];
    const double m = s / M;
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < HW; ++i) {
        const double dv = x[(static_cast<size_t>(n) * C + c) * HW + i] - m;
        ss += dv * dv;
      }
    const double v = ss / M;
    if (mean_out) (*mean_out)[static_cast<size_t>(c)] = m;
    if (var_out) (*var_out)[static_cast<size_t>(c)] = v;
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < HW; ++i) {
        const size_t q = (static_cast<size_t>(n) * C + c) * HW + i;
        double o = gamma[static_cast<size_t>(c)] * (x[q] - m) / std::sqrt(v + eps) + beta[static_cast<size_t>(c)];
        if (relu && o < 0) o = 0;
        y[q] = static_cast<float>(o);
      }
  }
  return y;
}

inline Vec bn_infer(const Vec& x, const Vec& gamma, const Vec& beta, const Vec& rm, const Vec& rv, int N, int C, int HW,
                    float eps, bool relu) {
  Vec y(x.size());
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < HW; ++i) {
        const size_t q = (static_cast<size_t>(n) * C + c) * HW + i;
        double o = gamma[static_cast<size_t>(c)] * (x[q] - static_cast<double>(rm[static_cast<size_t>(c)])) /
                       std::sqrt(static_cast<double>(rv[static_cast<size_t>(c)]) + eps) +
                   beta[static_cast<size_t>(c)];
        if (relu && o < 0) o = 0;
        y[q] = static_cast<float>(o);
      }
  return y;
}

/// y[N,O] = x[N,I]·wᵀ + b.
inline Vec linear_fwd(const Vec& x, const Vec& w, const Vec& b, int N, int I, int O) {
  Vec y(static_cast<size_t>(N) * O);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o) {
      double s = b[static_cast<size_t>(o)];
      for (int i = 0; i < I; ++i)
        s += static_cast<double>(x[static_cast<size_t>(n) * I + i]) * w[static_cast<size_t>(o) * I + i];
      y[static_cast<size_t>(n) * O + o] = static_cast<float>(s);
    }
  return y;
}

/// Σ_n CE(softmax(z_n), label_n) in double.
inline double xent_sum(const Vec& z, const std::vector<int32_t>& lab, int N, int K) {
  double L = 0;
  for (int n = 0; n < N; ++n) {
    double mx = -1e300;
    for (int k = 0; k < K; ++k) mx = std::max(mx, static_cast<double>(z[static_cast<size_t>(n) * K + k]));
    double se = 0;
    for (int k = 0; k < K; ++k) se += std::exp(z[static_cast<size_t>(n) * K + k] - mx);
    L += mx + std::log(se) - z[static_cast<size_t>(n) * K + static_cast<size_t>(lab[static_cast<size_t>(n)])];
  }
  return L;
}

}  // namespace ref
}  // namespace dsonas
