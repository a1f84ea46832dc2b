// cpu_corr_avx512.cpp — the stride-1 plane kernels with AVX-512: the correlation
// (depthwise conv forward and backward-data, pooling forward, average-pool
// backward; the 8-wide AVX2 form is corr_plane in cpu_plane_kernels.hpp) and the
// max-pool backward (8-wide form: maxpool_bwd_plane_s1 in cpu_pooling.cpp).
//
// Flattened rows: the padded plane has the tight row stride Wp = Wo + K − 1, and
// output position j = oh·Wp + ow reads P[j + kh·Wp + kw] — the same formula for
// every j, so 16 consecutive positions are one vector whatever rows they fall in.
// Positions with ow ≥ Wo are computed too and dropped when the rows are copied
// out; at these planes' sizes (28, 14, 7 columns) that wastes less than rows of
// 16-wide vectors would (a 7-wide row in a 16-lane vector wastes 9 lanes, here
// K − 1 = 2 or 4 of every Wp).  Each output is one chain over the taps in
// (kh, kw) order — FMA from zero, or x > a ? x : a from −inf — exactly as
// corr_plane forms it, so both give the same bits.
//
// Vertical reuse: vectors of positions j and j + Wp (the same columns one row
// lower) read the same input rows shifted by one, so they are formed together
// and every input vector is loaded once for both (as corr_block2 does).
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cstring>
#include <limits>

#include "cpu_backend.hpp"
#include "dsonas/core/error.hpp"

namespace dsonas {
namespace cpu {

#ifdef DSO_HAVE_AVX512

namespace {

/// Every lane: the maskz forms of valignd and vmaxps with this mask are the
/// plain instructions (GCC drops the mask); the plain intrinsics' "undefined"
/// source operand trips GCC 12's -Wmaybe-uninitialized.
constexpr __mmask16 kAll = 0xFFFF;

/// Lanes kw .. kw+15 of the 32 lanes lo:hi (valignd; kw < 16 a constant
/// after unrolling, dispatched by the switch).
DSO_AVX512 inline __m512 shift_lanes(__m512 lo, __m512 hi, int kw) {
  const __m512i a = _mm512_castps_si512(lo), b = _mm512_castps_si512(hi);
  switch (kw) {
    case 0: return lo;
    case 1: return _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(kAll, b, a, 1));
    case 2: return _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(kAll, b, a, 2));
    case 3: return _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(kAll, b, a, 3));
    case 4: return _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(kAll, b, a, 4));
    case 5: return _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(kAll, b, a, 5));
    default: return _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(kAll, b, a, 6));
  }
}

/// NV vectors at positions j + 16v (a) and j + Wp + 16v (b, when PAIR), all
/// K² taps.  Each input row is loaded as NV + 1 vectors; the K column shifts
/// are made in registers (a 64-byte load at any offset but 0 mod 16 spans two
/// cache lines and costs two loads).
template <int K, bool MAX, int NV, bool PAIR>
DSO_AVX512 inline void flat_block(const float* __restrict P, int64_t Wp, const __m512* w, float* __restrict T,
                                  int64_t j) {
  static_assert(K <= 7, "shift_lanes covers kw < 7");
  const __m512 init = MAX ? _mm512_set1_ps(-std::numeric_limits<float>::infinity()) : _mm512_setzero_ps();
  __m512 a[NV], b[NV];
  for (int v = 0; v < NV; ++v) a[v] = b[v] = init;
  for (int r = 0; r < (PAIR ? K + 1 : K); ++r) {  // input row r: tap row r of a, r − 1 of b
    const float* row = P + j + r * Wp;
    __m512 X[NV + 1];
    for (int v = 0; v <= NV; ++v) X[v] = _mm512_loadu_ps(row + 16 * v);
    for (int kw = 0; kw < K; ++kw)
      for (int v = 0; v < NV; ++v) {
        const __m512 x = shift_lanes(X[v], X[v + 1], kw);
        if (MAX) {  // vmaxps(x, a) is x > a ? x : a, the 8-wide form's rule, NaN and ±0 included
          if (r < K) a[v] = _mm512_maskz_max_ps(kAll, x, a[v]);
          if (PAIR && r > 0) b[v] = _mm512_maskz_max_ps(kAll, x, b[v]);
        } else {
          if (r < K) a[v] = _mm512_fmadd_ps(w[r * K + kw], x, a[v]);
          if (PAIR && r > 0) b[v] = _mm512_fmadd_ps(w[(r - 1) * K + kw], x, b[v]);
        }
      }
  }
  for (int v = 0; v < NV; ++v) {
    _mm512_storeu_ps(T + j + 16 * v, a[v]);
    if (PAIR) _mm512_storeu_ps(T + j + Wp + 16 * v, b[v]);
  }
}

/// alpha·t + beta·old for one vector.  The 8-wide form (store_block,
/// store_lanes) writes fma(acc, alpha, old·beta): old·beta rounded first; so
/// does this (CorrAvx512MatchesAvx2 checks it with alpha, beta that are not
/// powers of two).
DSO_AVX512 inline __m512 scaled(__m512 t, __m512 old, __m512 va, __m512 vb, float alpha, float beta) {
  if (beta == 0.f) return alpha == 1.f ? t : _mm512_mul_ps(t, va);
  return _mm512_fmadd_ps(t, va, _mm512_mul_ps(old, vb));
}

/// out[0..n) = alpha·t + beta·out.  Rows of n ≥ 16: full vectors at 0, 16, …
/// and n − 16 (overlapping its neighbour; its old values are read before any
/// store, so the overlapped cells get the same bits twice); shorter rows: one
/// masked vector.
DSO_AVX512 inline void store_row(float* __restrict out, const float* __restrict t, int n, float alpha, float beta) {
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const __m512 z = _mm512_setzero_ps();
  if (n < 16) {
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
    const __m512 old = beta == 0.f ? z : _mm512_maskz_loadu_ps(m, out);
    _mm512_mask_storeu_ps(out, m, scaled(_mm512_maskz_loadu_ps(m, t), old, va, vb, alpha, beta));
    return;
  }
  const int last = n - 16;
  const __m512 rl =
      scaled(_mm512_loadu_ps(t + last), beta == 0.f ? z : _mm512_loadu_ps(out + last), va, vb, alpha, beta);
  for (int i = 0; i < last; i += 16)
    _mm512_storeu_ps(out + i,
                     scaled(_mm512_loadu_ps(t + i), beta == 0.f ? z : _mm512_loadu_ps(out + i), va, vb, alpha, beta));
  _mm512_storeu_ps(out + last, rl);
}

/// out (rows × cols) = alpha·T + beta·out, T of row stride W (rows·W + 16
/// floats, then rows·cols + 16 of scratch).
DSO_AVX512 inline void store_plane(float* out, float* T, int64_t W, int rows, int cols, float alpha, float beta) {
  if (cols >= 16) {
    for (int r = 0; r < rows; ++r)
      store_row(out + static_cast<int64_t>(r) * cols, T + static_cast<int64_t>(r) * W, cols, alpha, beta);
    return;
  }
  // Short rows: gathered into one contiguous run first (each row a full
  // vector store, the next row overwriting the excess), then scaled into out
  // with full vectors.  Row by row, masked loads and stores of out that
  // overlap the previous row's store measured 1.3–1.6× slower with beta ≠ 0.
  float* C = T + rows * W + 16;
  for (int r = 0; r < rows; ++r) _mm512_storeu_ps(C + static_cast<int64_t>(r) * cols, _mm512_loadu_ps(T + r * W));
  store_row(out, C, rows * cols, alpha, beta);
}

template <int K, bool MAX>
DSO_AVX512 void corr_flat(const float* P, int Wp, const float* wt, float* out, int Ho, int Wo, float alpha, float beta,
                          float* T) {
  __m512 w[MAX ? 1 : K * K];
  if (!MAX)
    for (int t = 0; t < K * K; ++t) w[t] = _mm512_set1_ps(wt[t]);
  constexpr int NV = K <= 3 ? 4 : 2;
  const int64_t W = Wp;
  const int64_t span = static_cast<int64_t>(Ho) * W;  // positions 0 .. span−1
  // Row pairs: band [2m·Wp, (2m+1)·Wp) as a, the next row as b.  Vectors may
  // overrun the band into b's row (or beyond): those lanes get correct values
  // too, rewritten with the same bits by b.  Pairs only where a row is close
  // to whole vectors (Wp = 32, 30: 28-wide planes with K = 5, 3; Wp = 16:
  // 14-wide with K = 3); otherwise (Wp = 18, 11, 9) the band's last vector
  // would be mostly overrun, and flat vectors over all positions do less work.
  const int64_t lanes = (W + 15) / 16 * 16;
  int64_t oh = 0;
  if (8 * (lanes - W) <= W)
    for (; oh + 2 <= Ho; oh += 2) {
      int64_t j = oh * W;
      const int64_t e = j + W;
      for (; j + 16 * NV <= e; j += 16 * NV) flat_block<K, MAX, NV, true>(P, W, w, T, j);
      for (; j < e; j += 16) flat_block<K, MAX, 1, true>(P, W, w, T, j);
    }
  int64_t j = oh * W;
  for (; j + 16 * NV <= span; j += 16 * NV) flat_block<K, MAX, NV, false>(P, W, w, T, j);
  for (; j < span; j += 16) flat_block<K, MAX, 1, false>(P, W, w, T, j);
  store_plane(out, T, W, Ho, Wo, alpha, beta);
}

// ---- max-pool backward, stride 1 ----------------------------------------------
//
// The 8-wide form is maxpool_bwd_plane_s1 (cpu_pooling.cpp); the same two passes,
// flattened, with the same operations in the same order.  Pass 1: per output,
// the code kh·K+kw of the first maximum of its window (strict >).  Pass 2: per
// input cell, Σ over the K² reversed taps (a, b) of dy where the code there
// names this cell, in (a, b) order.

/// Pass 1 for NV vectors at position j of the padded x plane (stride Wp).
template <int K, int NV>
DSO_AVX512 inline void code_block(const float* __restrict P, int64_t Wp, float* __restrict CT, int64_t j) {
  __m512 best[NV], code[NV];
  for (int v = 0; v < NV; ++v) best[v] = code[v] = _mm512_setzero_ps();  // set by tap 0; for the compiler
  for (int r = 0; r < K; ++r) {
    __m512 X[NV + 1];
    for (int v = 0; v <= NV; ++v) X[v] = _mm512_loadu_ps(P + j + r * Wp + 16 * v);
    for (int kw = 0; kw < K; ++kw) {
      const int t = r * K + kw;
      const __m512 tv = _mm512_set1_ps(static_cast<float>(t));
      for (int v = 0; v < NV; ++v) {
        const __m512 x = shift_lanes(X[v], X[v + 1], kw);
        if (t == 0) {
          best[v] = x;
          code[v] = _mm512_setzero_ps();
        } else {
          const __mmask16 gt = _mm512_cmp_ps_mask(x, best[v], _CMP_GT_OQ);
          best[v] = _mm512_mask_mov_ps(best[v], gt, x);
          code[v] = _mm512_mask_mov_ps(code[v], gt, tv);
        }
      }
    }
  }
  for (int v = 0; v < NV; ++v) _mm512_storeu_ps(CT + j + 16 * v, code[v]);
}

/// Pass 2 for NV vectors at position i of the padded code and dy planes (stride Wc).
template <int K, int NV>
DSO_AVX512 inline void gather_block(const float* __restrict C, const float* __restrict D, int64_t Wc,
                                    float* __restrict T, int64_t i) {
  __m512 acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = _mm512_setzero_ps();
  for (int a = 0; a < K; ++a) {  // a = K−1−kh
    __m512 Cv[NV + 1], Dv[NV + 1];
    for (int v = 0; v <= NV; ++v) {
      Cv[v] = _mm512_loadu_ps(C + i + a * Wc + 16 * v);
      Dv[v] = _mm512_loadu_ps(D + i + a * Wc + 16 * v);
    }
    for (int b = 0; b < K; ++b) {  // b = K−1−kw
      const __m512 want = _mm512_set1_ps(static_cast<float>((K - 1 - a) * K + (K - 1 - b)));
      for (int v = 0; v < NV; ++v) {
        const __mmask16 eq = _mm512_cmp_ps_mask(shift_lanes(Cv[v], Cv[v + 1], b), want, _CMP_EQ_OQ);
        acc[v] = _mm512_add_ps(acc[v], _mm512_maskz_mov_ps(eq, shift_lanes(Dv[v], Dv[v + 1], b)));
      }
    }
  }
  for (int v = 0; v < NV; ++v) _mm512_storeu_ps(T + i + 16 * v, acc[v]);
}

template <int K>
DSO_AVX512 void maxpool_bwd_flat(const float* P, int Wp, float* C, const float* D, int Wc, int q, float* dx, int H,
                                 int W, int Ho, int Wo, float beta, float* T) {
  constexpr int NV = 2;
  const int64_t span1 = static_cast<int64_t>(Ho) * Wp;
  int64_t j = 0;
  for (; j + 16 * NV <= span1; j += 16 * NV) code_block<K, NV>(P, Wp, T, j);
  for (; j < span1; j += 16) code_block<K, 1>(P, Wp, T, j);
  for (int oh = 0; oh < Ho; ++oh)
    std::memcpy(C + static_cast<int64_t>(q + oh) * Wc + q, T + static_cast<int64_t>(oh) * Wp,
                sizeof(float) * static_cast<size_t>(Wo));
  const int64_t span2 = static_cast<int64_t>(H) * Wc;
  int64_t i = 0;
  for (; i + 16 * NV <= span2; i += 16 * NV) gather_block<K, NV>(C, D, Wc, T, i);
  for (; i < span2; i += 16) gather_block<K, 1>(C, D, Wc, T, i);
  store_plane(dx, T, Wc, H, W, 1.f, beta);
}

}  // namespace

DSO_AVX512 void maxpool_bwd_flat_avx512(int k, const float* P, int Wp, float* C, const float* D, int Wc, int q,
                                        float* dx, int H, int W, int Ho, int Wo, float beta, float* T) {
  switch (k) {
    case 1: maxpool_bwd_flat<1>(P, Wp, C, D, Wc, q, dx, H, W, Ho, Wo, beta, T); break;
    case 2: maxpool_bwd_flat<2>(P, Wp, C, D, Wc, q, dx, H, W, Ho, Wo, beta, T); break;
    case 3: maxpool_bwd_flat<3>(P, Wp, C, D, Wc, q, dx, H, W, Ho, Wo, beta, T); break;
    case 4: maxpool_bwd_flat<4>(P, Wp, C, D, Wc, q, dx, H, W, Ho, Wo, beta, T); break;
    case 5: maxpool_bwd_flat<5>(P, Wp, C, D, Wc, q, dx, H, W, Ho, Wo, beta, T); break;
    case 6: maxpool_bwd_flat<6>(P, Wp, C, D, Wc, q, dx, H, W, Ho, Wo, beta, T); break;
    case 7: maxpool_bwd_flat<7>(P, Wp, C, D, Wc, q, dx, H, W, Ho, Wo, beta, T); break;
    default: DSO_CHECK(false, "maxpool_bwd_flat_avx512: k=", k, " has no fast path");
  }
}

DSO_AVX512 void corr_flat_avx512(int k, bool max_op, const float* P, int Wp, const float* wt, float* out, int Ho,
                                 int Wo, float alpha, float beta, float* T) {
#define DSO_CORR_FLAT_CASE(KK)                                      \
  case KK:                                                          \
    if (max_op)                                                     \
      corr_flat<KK, true>(P, Wp, wt, out, Ho, Wo, alpha, beta, T);  \
    else                                                            \
      corr_flat<KK, false>(P, Wp, wt, out, Ho, Wo, alpha, beta, T); \
    break;
  switch (k) {
    DSO_CORR_FLAT_CASE(1)
    DSO_CORR_FLAT_CASE(2)
    DSO_CORR_FLAT_CASE(3)
    DSO_CORR_FLAT_CASE(4)
    DSO_CORR_FLAT_CASE(5)
    DSO_CORR_FLAT_CASE(6)
    DSO_CORR_FLAT_CASE(7)
    default: DSO_CHECK(false, "corr_flat_avx512: k=", k, " has no fast path");
  }
#undef DSO_CORR_FLAT_CASE
}

#else  // no AVX-512 code on this target: never dispatched (avx512_available() is false)
void corr_flat_avx512(int, bool, const float*, int, const float*, float*, int, int, float, float, float*) {}
void maxpool_bwd_flat_avx512(int, const float*, int, float*, const float*, int, int, float*, int, int, int, int, float,
                             float*) {}
#endif

}  // namespace cpu
}  // namespace dsonas
