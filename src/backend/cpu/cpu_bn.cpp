// cpu_bn.cpp — CpuBackend batch-norm: training forward (batch statistics), inference
// forward (running statistics), backward; fused ReLU (the CUDA twin: cuda_bn.cu).
#include "cpu_backend.hpp"
#include "cpu_thread_pool.hpp"

#include <omp.h>

#ifdef __x86_64__
#include <immintrin.h>
#endif

#include <cmath>
#include <cstring>

#include "dsonas/core/error.hpp"

namespace dsonas {
using namespace cpu;

// ---- batch-norm ---------------------------------------------------------------------

namespace {

struct BnDims {
  int64_t C, M;
};

BnDims bn_dims(const Tensor& x, const Tensor& y, const Tensor& gamma, const Tensor& beta) {
  DSO_CHECK(x.ndim() == 4, "bn: x must be 4-D, got ", shape_str(x.shape()));
  BnDims d{x.dim(0), x.dim(1) * x.dim(2) * x.dim(3)};
  DSO_CHECK(y.numel() == x.numel() && gamma.numel() == d.C && beta.numel() == d.C, "bn shapes: x ",
            shape_str(x.shape()), " y ", shape_str(y.shape()), " gamma ", shape_str(gamma.shape()), " beta ",
            shape_str(beta.shape()));
  return d;
}

/// y = [relu](x·scale + shift) over one channel.
inline void bn_apply(const float* __restrict x, float* __restrict y, int64_t M, float scale, float shift, bool relu) {
  if (relu) {
    for (int64_t i = 0; i < M; ++i) {
      const float v = x[i] * scale + shift;
      y[i] = v > 0.f ? v : 0.f;
    }
  } else {
    for (int64_t i = 0; i < M; ++i) y[i] = x[i] * scale + shift;
  }
}

/// Σx and Σx² in double, 16 lanes (four independent 4-double chains per sum;
/// the former 8-lane loop was bound by its add latency, BN forward ran at ~60%
/// of the bandwidth of BN backward).  Fixed order, so deterministic.
typedef double v4d __attribute__((vector_size(32)));
inline v4d cvt4(const float* p) {
  return v4d{static_cast<double>(p[0]), static_cast<double>(p[1]), static_cast<double>(p[2]),
             static_cast<double>(p[3])};
}
inline void sum_sumsq(const float* __restrict a, int64_t n, double& s1, double& s2) {
  v4d p[4] = {}, q[4] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int c = 0; c < 4; ++c) {
      const v4d v = cvt4(a + i + 4 * c);
      p[c] += v;
      q[c] += v * v;
    }
  const v4d ps = (p[0] + p[1]) + (p[2] + p[3]), qs = (q[0] + q[1]) + (q[2] + q[3]);
  s1 = (ps[0] + ps[1]) + (ps[2] + ps[3]);
  s2 = (qs[0] + qs[1]) + (qs[2] + qs[3]);
  for (; i < n; ++i) {
    const double v = static_cast<double>(a[i]);
    s1 += v;
    s2 += v * v;
  }
}

}  // namespace

void CpuBackend::bn_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& run_mean,
                                  Tensor& run_var, float momentum, float eps, Tensor& y, Tensor& save_mean,
                                  Tensor& save_invstd, bool relu) {
  const BnDims d = bn_dims(x, y, gamma, beta);
  const bool par = x.numel() >= kParMin;
  DSO_CHECK(run_mean.numel() == d.C && run_var.numel() == d.C && save_mean.numel() == d.C && save_invstd.numel() == d.C,
            "bn_forward_train: statistics tensors must have C=", d.C, " elements");
  DSO_CHECK(d.M > 0, "bn_forward_train: empty batch");
  const float* xp = x.data();
  float* yp = y.data();
  const float* gp = gamma.data();
  const float* bp = beta.data();
  float* rm = run_mean.data();
  float* rv = run_var.data();
  float* sm = save_mean.data();
  float* si = save_invstd.data();
  const int64_t M = d.M;
  const double unbias = M > 1 ? static_cast<double>(M) / static_cast<double>(M - 1) : 1.0;
  par_for(par ? nt_ : 1, d.C, [&](int64_t c, int) {
    const float* xc = xp + c * M;
    double s1, s2;
    sum_sumsq(xc, M, s1, s2);
    const double mean = s1 / static_cast<double>(M);
    double var = s2 / static_cast<double>(M) - mean * mean;
    if (var < 0) var = 0;
    const double invstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    const double scale = static_cast<double>(gp[c]) * invstd;
    const double shift = static_cast<double>(bp[c]) - mean * scale;
    bn_apply(xc, yp + c * M, M, static_cast<float>(scale), static_cast<float>(shift), relu);
    sm[c] = static_cast<float>(mean);
    si[c] = static_cast<float>(invstd);
    rm[c] = static_cast<float>(momentum * static_cast<double>(rm[c]) + (1.0 - momentum) * mean);
    rv[c] = static_cast<float>(momentum * static_cast<double>(rv[c]) + (1.0 - momentum) * var * unbias);
  });
}

void CpuBackend::bn_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& run_mean,
                                  const Tensor& run_var, float eps, Tensor& y, bool relu) {
  const BnDims d = bn_dims(x, y, gamma, beta);
  const bool par = x.numel() >= kParMin;
  DSO_CHECK(run_mean.numel() == d.C && run_var.numel() == d.C, "bn_forward_infer: statistics tensors must have C=", d.C,
            " elements");
  const float* xp = x.data();
  float* yp = y.data();
  const float* gp = gamma.data();
  const float* bp = beta.data();
  const float* rm = run_mean.data();
  const float* rv = run_var.data();
  const int64_t M = d.M;
  par_for(par ? nt_ : 1, d.C, [&](int64_t c, int) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(rv[c]) + static_cast<double>(eps));
    const double scale = static_cast<double>(gp[c]) * invstd;
    const double shift = static_cast<double>(bp[c]) - static_cast<double>(rm[c]) * scale;
    bn_apply(xp + c * M, yp + c * M, M, static_cast<float>(scale), static_cast<float>(shift), relu);
  });
}

void CpuBackend::bn_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                             const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor* dgamma,
                             Tensor* dbeta, bool relu, float beta_dx) {
  const BnDims d = bn_dims(x, y, gamma, gamma);
  const bool par = x.numel() >= kParMin;
  DSO_CHECK(
      dy.numel() == x.numel() && dx.numel() == x.numel() && save_mean.numel() == d.C && save_invstd.numel() == d.C,
      "bn_backward shapes: dy ", shape_str(dy.shape()), " dx ", shape_str(dx.shape()));
  DSO_CHECK(!dgamma || dgamma->numel() == d.C, "bn_backward: dgamma must have C elements");
  DSO_CHECK(!dbeta || dbeta->numel() == d.C, "bn_backward: dbeta must have C elements");
  const float* xp = x.data();
  const float* yp = y.data();
  const float* dyp = dy.data();
  const float* gp = gamma.data();
  const float* mp = save_mean.data();
  const float* ip = save_invstd.data();
  float* dxp = dx.data();
  float* dgp = dgamma ? dgamma->data() : nullptr;
  float* dbp = dbeta ? dbeta->data() : nullptr;
  const int64_t M = d.M;
  par_for(par ? nt_ : 1, d.C, [&](int64_t c, int) {
    const float* __restrict xc = xp + c * M;
    const float* __restrict yc = yp + c * M;
    const float* __restrict gc = dyp + c * M;
    float* __restrict dxc = dxp + c * M;
    const double mean = mp[c], invstd = ip[c];
    // sg = Σ g, sgx = Σ g·x with g = dy·[y > 0]: 8 float lanes per run of
    // 256, each run's lanes combined into double accumulators in a fixed order.
    double sg = 0, sgx = 0;
    for (int64_t r0 = 0; r0 < M; r0 += 256) {
      const int64_t r1 = std::min(M, r0 + 256);
      v8f a1 = splat8(0.f), a2 = splat8(0.f);
      int64_t i = r0;
      for (; i + 8 <= r1; i += 8) {
        v8f g = ld8(gc + i);
        if (relu) g = ld8(yc + i) > splat8(0.f) ? g : splat8(0.f);
        a1 += g;
        a2 += g * ld8(xc + i);
      }
      float l1[8], l2[8];
      st8(l1, a1);
      st8(l2, a2);
      for (int j = 0; j < 8; ++j) {
        sg += static_cast<double>(l1[j]);
        sgx += static_cast<double>(l2[j]);
      }
      for (; i < r1; ++i) {
        const float g = relu ? (yc[i] > 0.f ? gc[i] : 0.f) : gc[i];
        sg += static_cast<double>(g);
        sgx += static_cast<double>(g) * static_cast<double>(xc[i]);
      }
    }
    const double sgxhat = invstd * (sgx - mean * sg);  // Σ g·x̂
    if (dgp) dgp[c] = static_cast<float>(sgxhat);
    if (dbp) dbp[c] = static_cast<float>(sg);
    // dx = γ·invstd·(g − sg/M − x̂·sgxhat/M), x̂ = (x − mean)·invstd
    const double k = static_cast<double>(gp[c]) * invstd;
    const float a = static_cast<float>(k);
    const float b = static_cast<float>(-k * sgxhat * invstd / static_cast<double>(M));
    const float c0 =
        static_cast<float>(-k * sg / static_cast<double>(M) + k * sgxhat * invstd * mean / static_cast<double>(M));
    // dx = a·g + b·x + c0
    if (beta_dx == 0.f) {
      for (int64_t q = 0; q < M; ++q) {
        const float g = relu ? (yc[q] > 0.f ? gc[q] : 0.f) : gc[q];
        dxc[q] = a * g + b * xc[q] + c0;
      }
    } else {
      for (int64_t q = 0; q < M; ++q) {
        const float g = relu ? (yc[q] > 0.f ? gc[q] : 0.f) : gc[q];
        dxc[q] = a * g + b * xc[q] + c0 + beta_dx * dxc[q];
      }
    }
  });
}

}  // namespace dsonas
