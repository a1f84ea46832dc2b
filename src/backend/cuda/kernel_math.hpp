// kernel_math.hpp — the per-element arithmetic of the CUDA backend's own
// kernels, as plain functions of an index.
//
// Every "map" kernel of src/backend/cuda (one thread per output element) calls
// one of these functions, and so does tests/gpu/test_kernel_math.cpp on the
// host: that test runs them over every index and compares with CpuBackend, so
// the index arithmetic of the kernels is checked on machines without a GPU.
// This header includes no CUDA header: under nvcc the functions are
// __host__ __device__, under a plain C++ compiler they are ordinary inline
// functions.
//
// Layouts (backend.hpp): activations CNHW, plane (c,n) = c·N + n of H·W floats;
// conv weights OIHW; depthwise weights [C,1,k,k].
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#if defined(__CUDACC__)
#define DSO_HD __host__ __device__ __forceinline__
#else
#define DSO_HD inline
#endif

namespace dsonas {
namespace km {

/// Geometry of a convolution or pooling over CNHW activations.
struct Geom {
  int C = 0;     // input channels (= output channels for depthwise / pooling)
  int Cout = 0;  // output channels
  int N = 0, H = 0, W = 0, Ho = 0, Wo = 0, k = 1, s = 1, p = 0;
};

// ---- layout conversion --------------------------------------------------------

/// Source index in NCHW of element e of the CNHW tensor {C,N,H,W}.
DSO_HD int64_t cnhw_src_in_nchw(int64_t e, int64_t C, int64_t N, int64_t HW) {
  const int64_t i = e % HW, pl = e / HW, n = pl % N, c = pl / N;
  return (n * C + c) * HW + i;
}

/// Source index in CNHW of element e of the NCHW tensor [N,C,H,W].
DSO_HD int64_t nchw_src_in_cnhw(int64_t e, int64_t C, int64_t N, int64_t HW) {
  const int64_t i = e % HW, pl = e / HW, c = pl % C, n = pl / C;
  return (c * N + n) * HW + i;
}

// ---- depthwise convolution --------------------------------------------------------

/// Output element e (over C·N·Ho·Wo) of a depthwise convolution, without
/// alpha/beta.  Taps summed in (kh, kw) order in float, as the CPU does.
/// KK > 0: the kernel size as a compile-time constant (must equal g.k);
/// KK = 0: g.k at run time.
template <int KK = 0>
DSO_HD float dw_fwd_elem(const float* x, const float* w, const Geom& g, int64_t e) {
  const int k = KK > 0 ? KK : g.k;
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const int64_t pl = e / HoWo;
  const int r = static_cast<int>(e - pl * HoWo);
  const int oh = r / g.Wo, ow = r - oh * g.Wo;
  const int c = static_cast<int>(pl / g.N);
  const float* xp = x + pl * static_cast<int64_t>(g.H) * g.W;
  const float* wp = w + static_cast<int64_t>(c) * k * k;
  float acc = 0.f;
  for (int kh = 0; kh < k; ++kh) {
    const int ih = oh * g.s - g.p + kh;
    if (ih < 0 || ih >= g.H) continue;
    for (int kw = 0; kw < k; ++kw) {
      const int iw = ow * g.s - g.p + kw;
      if (iw < 0 || iw >= g.W) continue;
      acc += wp[kh * k + kw] * xp[static_cast<int64_t>(ih) * g.W + iw];
    }
  }
  return acc;
}

/// Output row oh of input row ih through tap kh: true and oh set when
/// ih = oh·s − p + kh for an oh in [0, Ho).
DSO_HD bool tap_out(int i, int kt, int s, int p, int O, int& o) {
  const int num = i + p - kt;
  if (num < 0) return false;
  o = num / s;
  return o * s == num && o < O;
}

/// Input-gradient element e (over C·N·H·W) of a depthwise convolution
/// (gather form: every output that read this input adds dy·w).  KK as dw_fwd_elem.
template <int KK = 0>
DSO_HD float dw_bwd_data_elem(const float* dy, const float* w, const Geom& g, int64_t e) {
  const int k = KK > 0 ? KK : g.k;
  const int64_t HW = static_cast<int64_t>(g.H) * g.W;
  const int64_t pl = e / HW;
  const int r = static_cast<int>(e - pl * HW);
  const int ih = r / g.W, iw = r - ih * g.W;
  const int c = static_cast<int>(pl / g.N);
  const float* dyp = dy + pl * static_cast<int64_t>(g.Ho) * g.Wo;
  const float* wp = w + static_cast<int64_t>(c) * k * k;
  float acc = 0.f;
  for (int kh = 0; kh < k; ++kh) {
    int oh;
    if (!tap_out(ih, kh, g.s, g.p, g.Ho, oh)) continue;
    for (int kw = 0; kw < k; ++kw) {
      int ow;
      if (!tap_out(iw, kw, g.s, g.p, g.Wo, ow)) continue;
      acc += wp[kh * k + kw] * dyp[static_cast<int64_t>(oh) * g.Wo + ow];
    }
  }
  return acc;
}

/// One term of the depthwise filter gradient of channel c, tap (kh,kw):
/// position q over N·Ho·Wo.  dw[c][tap] = Σ_q term.
DSO_HD double dw_filter_term(const float* x, const float* dy, const Geom& g, int c, int tap, int64_t q) {
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const int64_t n = q / HoWo;
  const int r = static_cast<int>(q - n * HoWo);
  const int oh = r / g.Wo, ow = r - oh * g.Wo;
  const int kh = tap / g.k, kw = tap - kh * g.k;
  const int ih = oh * g.s - g.p + kh, iw = ow * g.s - g.p + kw;
  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return 0.0;
  const int64_t pl = static_cast<int64_t>(c) * g.N + n;
  return static_cast<double>(dy[pl * HoWo + r]) * static_cast<double>(x[(pl * g.H + ih) * g.W + iw]);
}

// ---- im2col for dense convolutions ---------------------------------------------------

/// Element q of the im2col matrix of images [n0, n0+nc): row (ci·k+kh)·k+kw,
/// column (n−n0)·Ho·Wo + oh·Wo + ow (so a GEMM with it writes CNHW columns).
DSO_HD float im2col_elem(const float* x, const Geom& g, int n0, int nc, int64_t q) {
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const int64_t cols = HoWo * nc;
  const int64_t row = q / cols, col = q - row * cols;
  const int kk = g.k * g.k;
  const int ci = static_cast<int>(row / kk), t = static_cast<int>(row - static_cast<int64_t>(ci) * kk);
  const int kh = t / g.k, kw = t - kh * g.k;
  const int64_t n = n0 + col / HoWo;
  const int r = static_cast<int>(col % HoWo);
  const int oh = r / g.Wo, ow = r - oh * g.Wo;
  const int ih = oh * g.s - g.p + kh, iw = ow * g.s - g.p + kw;
  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return 0.f;
  return x[((static_cast<int64_t>(ci) * g.N + n) * g.H + ih) * g.W + iw];
}

/// col2im in gather form: input-gradient element (ci, n, ih, iw) — e over
/// C·nc·H·W of images [n0, n0+nc), in (ci, n−n0, ih, iw) order — as the sum of
/// the im2col-shaped gradient `col` entries that were read from it.
DSO_HD float col2im_elem(const float* col, const Geom& g, int nc, int64_t e, int64_t* dst_index, int n0) {
  const int64_t HW = static_cast<int64_t>(g.H) * g.W;
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const int64_t cols = HoWo * nc;
  const int64_t pl = e / HW;
  const int r = static_cast<int>(e - pl * HW);
  const int ih = r / g.W, iw = r - ih * g.W;
  const int ci = static_cast<int>(pl / nc), nl = static_cast<int>(pl - static_cast<int64_t>(ci) * nc);
  *dst_index = ((static_cast<int64_t>(ci) * g.N + n0 + nl) * g.H + ih) * g.W + iw;
  float acc = 0.f;
  for (int kh = 0; kh < g.k; ++kh) {
    int oh;
    if (!tap_out(ih, kh, g.s, g.p, g.Ho, oh)) continue;
    for (int kw = 0; kw < g.k; ++kw) {
      int ow;
      if (!tap_out(iw, kw, g.s, g.p, g.Wo, ow)) continue;
      const int64_t row = (static_cast<int64_t>(ci) * g.k + kh) * g.k + kw;
      acc += col[row * cols + static_cast<int64_t>(nl) * HoWo + static_cast<int64_t>(oh) * g.Wo + ow];
    }
  }
  return acc;
}

// ---- pooling --------------------------------------------------------------------------

/// Pooling output element e (over planes·Ho·Wo).  Max: the largest valid
/// input (padding ignored), −inf if none; Avg: Σ valid / k² (count_include_pad).
DSO_HD float pool_fwd_elem(const float* x, const Geom& g, bool is_max, int64_t e) {
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const int64_t pl = e / HoWo;
  const int r = static_cast<int>(e - pl * HoWo);
  const int oh = r / g.Wo, ow = r - oh * g.Wo;
  const float* xp = x + pl * static_cast<int64_t>(g.H) * g.W;
  float m = -__builtin_huge_valf(), s = 0.f;
  for (int kh = 0; kh < g.k; ++kh) {
    const int ih = oh * g.s - g.p + kh;
    if (ih < 0 || ih >= g.H) continue;
    for (int kw = 0; kw < g.k; ++kw) {
      const int iw = ow * g.s - g.p + kw;
      if (iw < 0 || iw >= g.W) continue;
      const float v = xp[static_cast<int64_t>(ih) * g.W + iw];
      m = v > m ? v : m;
      s += v;
    }
  }
  return is_max ? m : s * (1.f / static_cast<float>(g.k * g.k));
}

/// Max pooling: in-plane index ih·W+iw of the first maximal valid input of
/// output e's window (lowest h, then w; strict > so ties keep the first), −1
/// when the window has no valid cell.
DSO_HD int pool_argmax_elem(const float* x, const Geom& g, int64_t e) {
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const int64_t pl = e / HoWo;
  const int r = static_cast<int>(e - pl * HoWo);
  const int oh = r / g.Wo, ow = r - oh * g.Wo;
  const float* xp = x + pl * static_cast<int64_t>(g.H) * g.W;
  int best = -1;
  float m = 0.f;
  for (int kh = 0; kh < g.k; ++kh) {
    const int ih = oh * g.s - g.p + kh;
    if (ih < 0 || ih >= g.H) continue;
    for (int kw = 0; kw < g.k; ++kw) {
      const int iw = ow * g.s - g.p + kw;
      if (iw < 0 || iw >= g.W) continue;
      const int idx = ih * g.W + iw;
      const float v = xp[idx];
      if (best < 0 || v > m) {
        m = v;
        best = idx;
      }
    }
  }
  return best;
}

/// Pooling input-gradient element e (over planes·H·W), gather form, without
/// beta.  Max: Σ dy(o) over the outputs o whose argmax (from pool_argmax_elem,
/// `am` holds them per output) is this cell; Avg: Σ dy(o)/k² over the windows
/// containing it.
DSO_HD float pool_bwd_elem(const float* dy, const int* am, const Geom& g, bool is_max, int64_t e) {
  const int64_t HW = static_cast<int64_t>(g.H) * g.W;
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const int64_t pl = e / HW;
  const int r = static_cast<int>(e - pl * HW);
  const int ih = r / g.W, iw = r - ih * g.W;
  const float* dyp = dy + pl * HoWo;
  const int* amp = is_max ? am + pl * HoWo : nullptr;
  const float inv = 1.f / static_cast<float>(g.k * g.k);
  float acc = 0.f;
  for (int kh = 0; kh < g.k; ++kh) {
    int oh;
    if (!tap_out(ih, kh, g.s, g.p, g.Ho, oh)) continue;
    for (int kw = 0; kw < g.k; ++kw) {
      int ow;
      if (!tap_out(iw, kw, g.s, g.p, g.Wo, ow)) continue;
      const int o = oh * g.Wo + ow;
      if (is_max) {
        if (amp[o] == r) acc += dyp[o];
      } else {
        acc += inv * dyp[o];
      }
    }
  }
  return acc;
}

// ---- batch-norm ---------------------------------------------------------------------------

/// y = [relu](x·scale + shift).
DSO_HD float bn_apply_elem(float x, float scale, float shift, bool relu) {
  const float v = x * scale + shift;
  return relu ? (v > 0.f ? v : 0.f) : v;
}

/// The ReLU-masked gradient g = dy·[y > 0] (or dy without ReLU).
DSO_HD float bn_masked_grad(float dy, float y, bool relu) { return relu ? (y > 0.f ? dy : 0.f) : dy; }

// ---- counter-based random numbers (dropout) ---------------------------------------------

/// splitmix64 / mix64 of core/rng.hpp, callable on the device (the unit test
/// test_kernel_math.cpp checks they equal the host versions bit for bit).
DSO_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

DSO_HD uint64_t mix64(uint64_t seed, uint64_t stream, uint64_t counter) {
  return splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ counter);
}

/// Stream of the dropout hash: ASCII "dropout" (backend.hpp).
constexpr uint64_t kDropoutStream = 0x64726f706f7574ull;

/// Inverted dropout of element i (backend.hpp's dropout_apply):
/// x·(U < keep ? 1/keep : 0), U = (mix64(key, stream, base + i) >> 40)·2⁻²⁴.
DSO_HD float dropout_elem(float x, float keep, float inv, uint64_t key, int64_t index_base, int64_t i) {
  const uint64_t bits = mix64(key, kDropoutStream, static_cast<uint64_t>(index_base + i));
  const float u = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
  return u < keep ? x * inv : 0.f;
}

// ---- GEMM plans -------------------------------------------------------------------------
//
// Every cuBLAS SGEMM of the backend, as data: C = alpha·op(A)·op(B) + beta·C in
// cuBLAS's column-major convention, with element offsets into A, B, C.  A
// row-major [R, S] matrix is a column-major S×R one, so the row-major products
// of the backend become these column-major calls.  tests/gpu/test_kernel_math
// runs each plan through a host SGEMM with cuBLAS's semantics and compares the
// result with CpuBackend, so the argument lists are checked without a GPU.

struct GemmPlan {
  bool ta = false, tb = false;
  int m = 0, n = 0, k = 0, lda = 1, ldb = 1, ldc = 1;
  int64_t a_off = 0, b_off = 0, c_off = 0;
};

/// 1×1 conv, cols = N·H·W: Yᵀ (cols×Cout) = Xᵀ (cols×Cin) · Wᵀ (Cin×Cout).  A=x, B=w, C=y.
inline GemmPlan gemm_conv1x1_fwd(int cin, int cout, int cols) {
  GemmPlan p;
  p.m = cols;
  p.n = cout;
  p.k = cin;
  p.lda = cols;
  p.ldb = cin;
  p.ldc = cols;
  return p;
}
/// dXᵀ (cols×Cin) = dYᵀ (cols×Cout) · W (Cout×Cin).  A=dy, B=w, C=dx.
inline GemmPlan gemm_conv1x1_bwd_data(int cin, int cout, int cols) {
  GemmPlan p;
  p.tb = true;
  p.m = cols;
  p.n = cin;
  p.k = cout;
  p.lda = cols;
  p.ldb = cin;
  p.ldc = cols;
  return p;
}
/// dWᵀ (Cin×Cout) = X (Cin×cols) · dYᵀ (cols×Cout).  A=x, B=dy, C=dw.
inline GemmPlan gemm_conv1x1_bwd_filter(int cin, int cout, int cols) {
  GemmPlan p;
  p.ta = true;
  p.m = cin;
  p.n = cout;
  p.k = cols;
  p.lda = cols;
  p.ldb = cols;
  p.ldc = cin;
  return p;
}
/// im2col conv, images [n0, n0+nc): Yᵀ chunk (cols×Cout, ld N·Ho·Wo) = colᵀ (cols×CKK) · Wᵀ (CKK×Cout).
/// A=col, B=w, C=y.
inline GemmPlan gemm_im2col_fwd(const Geom& g, int n0, int nc) {
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const int ckk = g.C * g.k * g.k, cols = static_cast<int>(HoWo * nc);
  GemmPlan p;
  p.m = cols;
  p.n = g.Cout;
  p.k = ckk;
  p.lda = cols;
  p.ldb = ckk;
  p.ldc = static_cast<int>(HoWo * g.N);
  p.c_off = HoWo * n0;
  return p;
}
/// colᵀ (cols×CKK) = dYᵀ chunk (cols×Cout, ld N·Ho·Wo) · W (Cout×CKK).  A=dy, B=w, C=col.
inline GemmPlan gemm_im2col_bwd_data(const Geom& g, int n0, int nc) {
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const int ckk = g.C * g.k * g.k, cols = static_cast<int>(HoWo * nc);
  GemmPlan p;
  p.tb = true;
  p.m = cols;
  p.n = ckk;
  p.k = g.Cout;
  p.lda = static_cast<int>(HoWo * g.N);
  p.ldb = ckk;
  p.ldc = cols;
  p.a_off = HoWo * n0;
  return p;
}
/// dWᵀ (CKK×Cout) = col (CKK×cols) · dYᵀ chunk (cols×Cout).  A=col, B=dy, C=dw.
inline GemmPlan gemm_im2col_bwd_filter(const Geom& g, int n0, int nc) {
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const int ckk = g.C * g.k * g.k, cols = static_cast<int>(HoWo * nc);
  GemmPlan p;
  p.ta = true;
  p.m = ckk;
  p.n = g.Cout;
  p.k = cols;
  p.lda = cols;
  p.ldb = static_cast<int>(HoWo * g.N);
  p.ldc = ckk;
  p.b_off = HoWo * n0;
  return p;
}
/// Linear y[N,O] (+)= x[N,I]·Wᵀ: yᵀ (O×N) = W (O×I; storage I×O, op T) · xᵀ (I×N).  A=w, B=x, C=y.
inline GemmPlan gemm_linear_fwd(int N, int I, int O) {
  GemmPlan p;
  p.ta = true;
  p.m = O;
  p.n = N;
  p.k = I;
  p.lda = I;
  p.ldb = I;
  p.ldc = O;
  return p;
}
/// dx[N,I] = dy[N,O]·W[O,I]: dxᵀ (I×N) = Wᵀ (I×O) · dyᵀ (O×N).  A=w, B=dy, C=dx.
inline GemmPlan gemm_linear_bwd_data(int N, int I, int O) {
  GemmPlan p;
  p.m = I;
  p.n = N;
  p.k = O;
  p.lda = I;
  p.ldb = O;
  p.ldc = I;
  return p;
}
/// dW[O,I] = dyᵀ[O,N]·x[N,I]: dWᵀ (I×O) = xᵀ (I×N) · dy (N×O; storage O×N, op T).  A=x, B=dy, C=dw.
inline GemmPlan gemm_linear_bwd_weight(int N, int I, int O) {
  GemmPlan p;
  p.tb = true;
  p.m = I;
  p.n = O;
  p.k = N;
  p.lda = I;
  p.ldb = O;
  p.ldc = I;
  return p;
}

// ---- batch-norm finalisers (one channel) -------------------------------------------------

/// From Σx and Σx² (double) of M values: batch statistics, running averages
/// (momentum·run + (1−momentum)·batch, unbiased variance) and the apply
/// coefficients y = x·scale + shift — CpuBackend::bn_forward_train's arithmetic.
DSO_HD void bn_train_finalize(double s1, double s2, int64_t M, float gamma, float beta, float momentum, float eps,
                              float* run_mean, float* run_var, float* save_mean, float* save_invstd, float* scale,
                              float* shift) {
  const double Md = static_cast<double>(M);
  const double mean = s1 / Md;
  double var = s2 / Md - mean * mean;
  if (var < 0) var = 0;
  const double invstd = 1.0 / sqrt(var + static_cast<double>(eps));
  const double sc = static_cast<double>(gamma) * invstd;
  const double sh = static_cast<double>(beta) - mean * sc;
  *scale = static_cast<float>(sc);
  *shift = static_cast<float>(sh);
  *save_mean = static_cast<float>(mean);
  *save_invstd = static_cast<float>(invstd);
  const double unbias = M > 1 ? Md / static_cast<double>(M - 1) : 1.0;
  *run_mean = static_cast<float>(momentum * static_cast<double>(*run_mean) + (1.0 - momentum) * mean);
  *run_var = static_cast<float>(momentum * static_cast<double>(*run_var) + (1.0 - momentum) * var * unbias);
}

/// Inference coefficients from the running statistics.
DSO_HD void bn_infer_coef(float gamma, float beta, float rm, float rv, float eps, float* scale, float* shift) {
  const double invstd = 1.0 / sqrt(static_cast<double>(rv) + static_cast<double>(eps));
  const double sc = static_cast<double>(gamma) * invstd;
  *scale = static_cast<float>(sc);
  *shift = static_cast<float>(static_cast<double>(beta) - static_cast<double>(rm) * sc);
}

/// Backward: from Σg and Σg·x (double), dgamma, dbeta and the coefficients of
/// dx = a·g + b·x + c0 — CpuBackend::bn_backward's arithmetic.
DSO_HD void bn_backward_finalize(double sg, double sgx, int64_t M, float gamma, float save_mean, float save_invstd,
                                 float* dgamma, float* dbeta, float* a, float* b, float* c0) {
  const double Md = static_cast<double>(M);
  const double mean = save_mean, invstd = save_invstd;
  const double sgxhat = invstd * (sgx - mean * sg);  // Σ g·x̂
  *dgamma = static_cast<float>(sgxhat);
  *dbeta = static_cast<float>(sg);
  const double k = static_cast<double>(gamma) * invstd;
  *a = static_cast<float>(k);
  *b = static_cast<float>(-k * sgxhat * invstd / Md);
  *c0 = static_cast<float>(-k * sg / Md + k * sgxhat * invstd * mean / Md);
}

// ---- softmax cross-entropy (one row) -------------------------------------------------------

/// Row z[0..K) with label lab: writes dz = grad_scale·(softmax − q) and returns
/// the loss; *hit = argmax (lowest index on ties) == lab.  smoothed = false:
/// q = one-hot, loss = lse − z_lab (softmax_xent); true: q = on at the label,
/// off elsewhere, loss = lse − on·z_lab − off·(Σz − z_lab) (softmax_xent_smoothed).
DSO_HD double softmax_xent_row(const float* z, int K, int lab, bool smoothed, double on, double off, float grad_scale,
                               float* dz, int* hit) {
  int am = 0;
  for (int k = 1; k < K; ++k)
    if (z[k] > z[am]) am = k;
  const double mx = z[am];
  double se = 0, zsum = 0;
  for (int k = 0; k < K; ++k) {
    se += exp(static_cast<double>(z[k]) - mx);
    if (smoothed) zsum += static_cast<double>(z[k]);
  }
  const double lse = mx + log(se);
  const double zl = static_cast<double>(z[lab]);
  *hit = am == lab ? 1 : 0;
  const double qon = smoothed ? on : 1.0, qoff = smoothed ? off : 0.0;
  for (int k = 0; k < K; ++k) {
    const double pk = exp(static_cast<double>(z[k]) - lse);
    dz[k] = static_cast<float>(static_cast<double>(grad_scale) * (pk - (k == lab ? qon : qoff)));
  }
  return smoothed ? lse - on * zl - off * (zsum - zl) : lse - zl;
}

// ---- λ-weighted sums -----------------------------------------------------------------------

constexpr int kWsOut = 8;  // outputs per launch
constexpr int kWsIn = 32;  // inputs per launch (bits of the live mask)

/// One launch of the weighted-sum kernel: y[r] (=|+=) Σ_q lam[r][q]·x[q] over
/// the bits q of live[r], q ascending.
struct WsArgs {
  float* y[kWsOut];
  const float* x[kWsIn];
  float lam[kWsOut][kWsIn];
  uint32_t live[kWsOut];   // bit q: input q contributes to output r
  int accumulate[kWsOut];  // 1: y += Σ, 0: y = Σ
  int nout, nin;
};

/// Element i of every output of one launch (one thread's work).
DSO_HD void wsum_elem(const WsArgs& a, int64_t i) {
  for (int r = 0; r < a.nout; ++r) {
    const uint32_t m = a.live[r];
    if (m == 0u) continue;
    float acc = a.accumulate[r] ? a.y[r][i] : 0.f;
    for (int q = 0; q < a.nin; ++q)
      if ((m >> q) & 1u) acc += a.lam[r][q] * a.x[q][i];
    a.y[r][i] = acc;
  }
}

/// One output of a weighted sum (host-side description): out (=|+=) Σ λ·in[idx]
/// over its terms, idx ascending.
struct WsRow {
  float* out = nullptr;
  bool accumulate = false;
  std::vector<std::pair<int, float>> terms;  // (input index, λ), ascending index
};

/// The launches computing `rows` with inputs in[idx]: outputs in groups of
/// kWsOut (each group re-reads its inputs), each group's inputs in ascending
/// groups of kWsIn (later input groups accumulate), so every output element
/// sums its terms in ascending input order, as the CPU does.
inline std::vector<WsArgs> wsum_plan(const std::vector<WsRow>& rows, const std::vector<const float*>& in) {
  std::vector<WsArgs> plan;
  for (size_t r0 = 0; r0 < rows.size(); r0 += kWsOut) {
    const size_t r1 = std::min(rows.size(), r0 + static_cast<size_t>(kWsOut));
    std::vector<int> uni;  // inputs used by this output group, ascending
    for (size_t r = r0; r < r1; ++r)
      for (const auto& t : rows[r].terms) uni.push_back(t.first);
    std::sort(uni.begin(), uni.end());
    uni.erase(std::unique(uni.begin(), uni.end()), uni.end());
    std::vector<bool> written(r1 - r0, false);
    for (size_t u0 = 0; u0 < uni.size(); u0 += kWsIn) {
      const size_t u1 = std::min(uni.size(), u0 + static_cast<size_t>(kWsIn));
      WsArgs a;
      std::memset(&a, 0, sizeof(a));
      a.nout = static_cast<int>(r1 - r0);
      a.nin = static_cast<int>(u1 - u0);
      for (size_t q = u0; q < u1; ++q) a.x[q - u0] = in[static_cast<size_t>(uni[q])];
      bool any = false;
      for (size_t r = r0; r < r1; ++r) {
        const size_t lr = r - r0;
        a.y[lr] = rows[r].out;
        for (const auto& t : rows[r].terms) {
          const auto b0 = uni.begin() + static_cast<std::ptrdiff_t>(u0);
          const auto b1 = uni.begin() + static_cast<std::ptrdiff_t>(u1);
          const auto it = std::lower_bound(b0, b1, t.first);
          if (it == b1 || *it != t.first) continue;
          const int q = static_cast<int>(it - b0);
          a.live[lr] |= 1u << q;
          a.lam[lr][q] = t.second;
        }
        a.accumulate[lr] = (rows[r].accumulate || written[lr]) ? 1 : 0;
        if (a.live[lr]) {
          written[lr] = true;
          any = true;
        }
      }
      if (any) plan.push_back(a);
    }
  }
  return plan;
}

// ---- the block output's λ-scaled concatenation --------------------------------------------

constexpr int kCat = 64;  // concatenated weights per launch

struct CatArgs {
  const float* w[kCat];
  float* dw[kCat];  // backward only; may be null
  float s[kCat];
  int j0, jn;
};

/// Element e over O·jn·I of a launch: its weight jj, the index o·I + i into
/// that weight and the index into the concatenation {O, J·I}.
DSO_HD void concat_index(const CatArgs& a, int64_t e, int64_t I, int64_t J, int64_t* jj, int64_t* widx, int64_t* cidx) {
  const int64_t JI = static_cast<int64_t>(a.jn) * I;
  const int64_t o = e / JI, r = e - o * JI;
  *jj = r / I;
  const int64_t i = r - *jj * I;
  *widx = o * I + i;
  *cidx = o * J * I + (a.j0 + *jj) * I + i;
}

// ---- per-(group, sample) scaling ----------------------------------------------------------

/// Index into the scale array of element e of a {C,N,H,W} tensor whose C
/// channels form groups of cg.
DSO_HD int64_t scale_index(int64_t e, int64_t N, int64_t HW, int64_t cg) {
  const int64_t pl = e / HW, c = pl / N, n = pl - c * N;
  return (c / cg) * N + n;
}

// ---- reductions -----------------------------------------------------------------------------

/// Elements per reduction chunk (one CUDA block's share).  Fixed: partitions
/// depend only on the problem size, so results are bit-reproducible.
constexpr int64_t kRedChunk = 4096;
/// Threads per reduction block.
constexpr int kRedThreads = 256;

DSO_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace km
}  // namespace dsonas
