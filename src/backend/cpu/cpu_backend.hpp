// cpu_backend.hpp — private to src/backend/cpu: the CPU implementation of
// Backend (OpenBLAS sgemm for the GEMM-shaped convolutions, own OpenMP kernels
// for everything else) and the small helpers its .cpp files share.
//
// Determinism: every reduction is cut into chunks whose boundaries depend only
// on the problem size (never on the thread count or on timing); per-chunk
// partial results are combined in chunk order.  So results are bit-identical
// between runs and also between thread counts.
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"

namespace dsonas {

std::unique_ptr<Backend> make_cpu_backend(int threads);

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads);
  Device device() const override { return Device::CPU; }
  std::string name() const override;
  int threads() const override { return nt_; }

  void fill(Tensor& t, float v) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void upload(const float* host, Tensor& dst) override;
  void download(const Tensor& src, float* host) override;
  Tensor act_from_nchw(const float* host, int n, int c, int h, int w) override;
  void act_to_nchw(const Tensor& act, float* host) override;

  void conv_forward(const ConvDesc& d, const Tensor& x, const Tensor& w, Tensor& y, float alpha, float beta) override;
  void conv_backward_data(const ConvDesc& d, const Tensor& dy, const Tensor& w, Tensor& dx, float alpha,
                          float beta) override;
  void conv_backward_filter(const ConvDesc& d, const Tensor& x, const Tensor& dy, Tensor& dw, float alpha,
                            float beta) override;

  void pool_forward(const PoolDesc& d, const Tensor& x, Tensor& y) override;
  void pool_backward(const PoolDesc& d, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                     float beta) override;

  void bn_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& run_mean, Tensor& run_var,
                        float momentum, float eps, Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                        bool relu) override;
  void bn_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& run_mean,
                        const Tensor& run_var, float eps, Tensor& y, bool relu) override;
  void bn_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                   const Tensor& save_invstd, Tensor& dx, Tensor* dgamma, Tensor* dbeta, bool relu,
                   float beta_dx) override;

  void wsum_forward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                    const std::vector<Tensor*>& ys) override;
  void wsum_backward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                     const std::vector<const Tensor*>& dys, const std::vector<Tensor*>& dxs, float* dlam) override;

  void concat_scaled_columns(const std::vector<const Tensor*>& ws, const float* scale, Tensor& out) override;
  void concat_scaled_columns_backward(const std::vector<const Tensor*>& ws, const float* scale, const Tensor& m,
                                      const std::vector<Tensor*>& dws, const std::vector<float*>& dscale) override;
  void axpy(float alpha, const Tensor& x, Tensor& y) override;
  void add(const Tensor& a, const Tensor& b, Tensor& y) override;
  void dot_accumulate(const Tensor& a, const Tensor& b, float* out) override;
  void clip(Tensor& g, float lo, float hi) override;
  bool all_finite(const Tensor& t) override;
  double sum_squares(const Tensor& t) override;

  void global_avg_pool_forward(const Tensor& x, Tensor& y) override;
  void global_avg_pool_backward(const Tensor& dy, Tensor& dx, float beta) override;
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override;
  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* db) override;
  void softmax_xent(const Tensor& logits, const int32_t* labels, float grad_scale, Tensor& dlogits, double* loss_sum,
                    int64_t* correct) override;

  void nag_update(Tensor& w, const Tensor& g, Tensor& m, float lr, float momentum, float wd) override;

  // retraining primitives (cpu_retrain.cpp)
  void softmax_xent_smoothed(const Tensor& logits, const int32_t* labels, float smoothing, float grad_scale,
                             Tensor& dlogits, double* loss_sum, int64_t* correct) override;
  void dropout_apply(const Tensor& x, float p, uint64_t key, int64_t index_base, Tensor& y) override;
  void scale_samples(const Tensor& x, int groups, const float* scale, Tensor& y, float beta) override;

 private:
  int nt_;
};

namespace cpu {

// v8f values are passed between inline helpers of these .cpp files only;
// the ABI note GCC gives for builds without AVX is irrelevant here.
#pragma GCC diagnostic ignored "-Wpsabi"

/// 8 floats (one AVX register with -march=x86-64-v3; GCC lowers it to two
/// SSE registers on plainer targets).  Unaligned loads/stores via memcpy.
typedef float v8f __attribute__((vector_size(32)));
inline v8f ld8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void st8(float* p, const v8f& v) { std::memcpy(p, &v, sizeof(v)); }
inline v8f splat8(float f) { return v8f{f, f, f, f, f, f, f, f}; }
/// a·b + c rounded once where the target has FMA (every x86-64-v3 build): the
/// kernels that must agree bit for bit with their AVX-512 twins say so
/// explicitly instead of relying on how the compiler contracts a·b + c (a
/// -march=native build contracted the 7×7 correlation differently).
inline v8f fma8(const v8f& a, const v8f& b, const v8f& c) {
#if defined(__FMA__) && defined(__x86_64__)
  return reinterpret_cast<v8f>(
      _mm256_fmadd_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b), reinterpret_cast<__m256>(c)));
#else
  return a * b + c;
#endif
}

/// Elements per reduction chunk (fixed: independent of the thread count).
constexpr int64_t kRedChunk = 4096;
/// Below this many elements an elementwise loop runs on one thread.
constexpr int64_t kParMin = 1 << 15;
/// Elements per chunk of the parallel elementwise loops.
constexpr int64_t kElemGrain = 1 << 14;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Σ a[i] in double with 8 independent lanes (vectorisable; fixed order).
inline double sum_d(const float* __restrict a, int64_t n) {
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) l[j] += static_cast<double>(a[i + j]);
  double s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; i < n; ++i) s += static_cast<double>(a[i]);
  return s;
}

/// Σ a[i]·b[i] in double, 16 lanes (four independent 4-double chains: an
/// 8-lane single chain was bound by the add latency).
inline double dot_d(const float* __restrict a, const float* __restrict b, int64_t n) {
  typedef double v4d __attribute__((vector_size(32)));
  auto cvt = [](const float* p) {
    return v4d{static_cast<double>(p[0]), static_cast<double>(p[1]), static_cast<double>(p[2]),
               static_cast<double>(p[3])};
  };
  v4d l[4] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int c = 0; c < 4; ++c) l[c] += cvt(a + i + 4 * c) * cvt(b + i + 4 * c);
  const v4d t = (l[0] + l[1]) + (l[2] + l[3]);
  double s = (t[0] + t[1]) + (t[2] + t[3]);
  for (; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

/// Σ a[i]·b[i] for a short run (≤ a few thousand): 16 float lanes, combined
/// in double.  Faster than dot_d; used inside already-chunked reductions.
inline double dot_f(const float* __restrict a, const float* __restrict b, int64_t n) {
  float l[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) l[j] += a[i + j] * b[i + j];
  double s = 0;
  for (int j = 0; j < 16; ++j) s += static_cast<double>(l[j]);
  for (; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

/// Output columns ow whose input column ow·s − p + kw lies in [0, W):
/// [lo, hi).  Lets kernels run a branch-free inner loop per tap.
inline void tap_range(int kw, int s, int p, int W, int Wo, int& lo, int& hi) {
  int a = p - kw;
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  int b = W - 1 + p - kw;
  hi = b < 0 ? 0 : b / s + 1;
  hi = std::min(hi, Wo);
  lo = std::min(lo, hi);
}

/// out = alpha·v + beta·out (beta == 0: out is not read).
inline void store_scaled(float* __restrict out, const float* __restrict v, int64_t n, float alpha, float beta) {
  if (beta == 0.f) {
    if (alpha == 1.f)
      for (int64_t i = 0; i < n; ++i) out[i] = v[i];
    else
      for (int64_t i = 0; i < n; ++i) out[i] = alpha * v[i];
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = alpha * v[i] + beta * out[i];
  }
}

// ---- AVX-512 kernels (cpu_gemm1x1.cpp, cpu_wsum.cpp, cpu_corr_avx512.cpp) ------
// The build targets x86-64-v3 (AVX2); functions marked DSO_AVX512 are compiled
// for AVX-512F as well and called only when avx512_available(): the CPU has
// AVX-512F and neither DSONAS_CPU_AVX512=0 nor avx512_allow(false) (tests)
// turned them off.  Otherwise the AVX2/OpenBLAS paths run.
#if defined(__x86_64__) && defined(__GNUC__)
#define DSO_HAVE_AVX512 1
#define DSO_AVX512 __attribute__((target("avx512f")))
#endif
bool avx512_available();
void avx512_allow(bool on);

// The 1×1 GEMMs: used by conv_forward/backward_data/backward_filter for dense
// 1×1 stride-1 convolutions when avx512_available() and the shape suits (see
// cpu_conv.cpp); otherwise OpenBLAS.  n is a multiple of 16 in all three.
/// Y[M,n] = alpha·W·X + beta·Y with Wt = Wᵀ ([K][Mp], Mp = M rounded up to a
/// multiple of 16, the columns past M zero); rows in groups of 16.
void gemm1x1_f_avx512(int M, int K, int64_t n, const float* Wt, const float* X, int64_t ldx, float* Y, int64_t ldy,
                      float alpha, float beta);
/// dX[K,n] = alpha·Wᵀ·dY + beta·dX with Wt = Wᵀ ([K][M]); T: 64-byte aligned
/// scratch of 16·M floats.
void gemm1x1_d_avx512(int M, int K, int64_t n, const float* Wt, const float* dY, int64_t ldy, float* dX, int64_t ldx,
                      float alpha, float beta, float* T);
/// P[M,K] = dY[M,n]·X[K,n]ᵀ (overwritten).
void gemm1x1_g_avx512(int M, int K, int64_t n, const float* dY, int64_t ldy, const float* X, int64_t ldx, float* P);

// The stride-1 plane correlation (cpu_corr_avx512.cpp; the 8-wide form is
// corr_plane in cpu_plane_kernels.hpp, the caller PlaneCorr): out (Ho×Wo) =
// alpha·corr(P, wt) + beta·out, P a padded plane of the tight row stride
// Wp = Wo + k − 1 (PadGeom::tight), wt k·k weights (unused for max),
// T scratch of corr_flat_scratch(k, Ho, Wo) floats.
void corr_flat_avx512(int k, bool max_op, const float* P, int Wp, const float* wt, float* out, int Ho, int Wo,
                      float alpha, float beta, float* T);
// Max-pool backward of one plane, stride 1 (the 8-wide form: cpu_pooling.cpp):
// dx (H×W) = grad + beta·dx.  P: x in a tight padded plane (PadGeom::tight(Ho,
// Wo, k, p), fill −inf, stride Wp); C, D: tight planes for the gather
// (PadGeom::tight(H, W, k, q = k−1−p), stride Wc), C filled with −1 (its
// interior is written here), D holding dy; T scratch of
// maxpool_bwd_flat_scratch floats.
void maxpool_bwd_flat_avx512(int k, const float* P, int Wp, float* C, const float* D, int Wc, int q, float* dx, int H,
                             int W, int Ho, int Wo, float beta, float* T);
inline size_t maxpool_bwd_flat_scratch(int k, int H, int W, int Ho, int Wo) {
  const size_t a = static_cast<size_t>(Ho) * static_cast<size_t>(Wo + k - 1) + 16;
  const size_t b = static_cast<size_t>(H) * static_cast<size_t>(W + k - 1) + 16 + static_cast<size_t>(H) * W + 16;
  return std::max(a, b);
}
inline size_t corr_flat_scratch(int k, int Ho, int Wo) {
  return static_cast<size_t>(Ho) * static_cast<size_t>(Wo + k - 1) + 16 + static_cast<size_t>(Ho) * Wo + 16;
}

}  // namespace cpu
}  // namespace dsonas
