// cpu_gemm1x1.cpp — AVX-512 kernels for the channel-mixing GEMMs of 1×1
// convolutions on CNHW activations, for a column block of n columns:
//
//   F  Y[M, n]  = alpha·W[M, K]·X[K, n] + beta·Y         (forward)
//   D  dX[K, n] = alpha·W[M, K]ᵀ·dY[M, n] + beta·dX      (backward data)
//   G  P[M, K]  = dY[M, n]·X[K, n]ᵀ                       (filter-gradient partial)
//
// Why not OpenBLAS here: in CNHW a channel is one row of N·H·W floats; for the
// 28×28 stage (N·H·W = 50176) every row starts at the same address modulo
// 4 KiB, so a GEMM that walks K rows in a column tile keeps evicting its own
// lines from the 8-way L1 and cannot be prefetched as K streams.  With only
// M = 16 output channels OpenBLAS reached 30–36 GFLOP/s per core on these
// shapes.  These kernels keep a whole 16-row × 16-column output tile (F), or
// the 16-row input tile (D), in zmm registers so that every line of the big
// operand is touched exactly once per tile, and prefetch the rows of the tile
// a few tiles ahead (F).  G streams X rows sequentially.
//
// Each output column of F and D is computed with the same instruction
// sequence whatever the block it falls in (k or m ascending, one FMA chain
// per output), so results do not depend on the column partition or the
// thread count.  G sums each (m, k) over the block in 16 lanes (column mod
// 16), the lanes then added in a fixed tree — fixed for a given block.
//
// Runtime dispatch: used only when avx512_available() (cpu_backend.hpp).
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <vector>

#include "cpu_backend.hpp"

namespace dsonas {
namespace cpu {

namespace {
std::atomic<bool> g_avx512_allowed{true};

bool cpu_has_avx512() {
#ifdef DSO_HAVE_AVX512
  static const bool ok = [] {
    const char* e = std::getenv("DSONAS_CPU_AVX512");
    if (e && e[0] == '0') return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return ok;
#else
  return false;
#endif
}
}  // namespace

bool avx512_available() { return g_avx512_allowed.load(std::memory_order_relaxed) && cpu_has_avx512(); }
void avx512_allow(bool on) { g_avx512_allowed.store(on, std::memory_order_relaxed); }

#ifdef DSO_HAVE_AVX512

namespace {

/// Tiles ahead whose X rows F prefetches.
constexpr int64_t kPfTiles = 8;

DSO_AVX512 inline void store16(float* p, __m512 v, __m512 va, float alpha, float beta) {
  if (beta == 0.f)
    _mm512_storeu_ps(p, alpha == 1.f ? v : _mm512_mul_ps(v, va));
  else
    _mm512_storeu_ps(p, _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(p), _mm512_mul_ps(v, va)));
}

}  // namespace

DSO_AVX512 void gemm1x1_f_avx512(int M, int K, int64_t n, const float* Wt, const float* X, int64_t ldx, float* Y,
                                 int64_t ldy, float alpha, float beta) {
  const __m512 va = _mm512_set1_ps(alpha);
  const int Mp = (M + 15) / 16 * 16;  // Wt's row stride: M rounded up (zero columns)
  for (int64_t c = 0; c < n; c += 16) {
    const bool pf = c + kPfTiles * 16 < n;
    for (int mg = 0; mg < M; mg += 16) {
      __m512 a[16];
      for (int m = 0; m < 16; ++m) a[m] = _mm512_setzero_ps();
      const float* xp = X + c;
      const float* wk = Wt + mg;
      if (pf && mg == 0) {
        for (int k = 0; k < K; ++k) {
          _mm_prefetch(reinterpret_cast<const char*>(xp + k * ldx + kPfTiles * 16), _MM_HINT_T0);
          const __m512 x = _mm512_loadu_ps(xp + k * ldx);
          for (int m = 0; m < 16; ++m) a[m] = _mm512_fmadd_ps(_mm512_set1_ps(wk[k * Mp + m]), x, a[m]);
        }
      } else {
        for (int k = 0; k < K; ++k) {
          const __m512 x = _mm512_loadu_ps(xp + k * ldx);
          for (int m = 0; m < 16; ++m) a[m] = _mm512_fmadd_ps(_mm512_set1_ps(wk[k * Mp + m]), x, a[m]);
        }
      }
      const int rows = std::min(16, M - mg);  // the last group's rows past M (zero weights) are not stored
      for (int m = 0; m < rows; ++m) store16(Y + (mg + m) * ldy + c, a[m], va, alpha, beta);
    }
  }
}

namespace {
template <int R>
DSO_AVX512 inline void d_rows(int M, const float* T, const float* wk, float* out, int64_t ldx, __m512 va, float alpha,
                              float beta) {
  __m512 a[R];
  for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
  for (int m = 0; m < M; ++m) {
    const __m512 t = _mm512_load_ps(T + 16 * m);
    for (int r = 0; r < R; ++r) a[r] = _mm512_fmadd_ps(_mm512_set1_ps(wk[r * M + m]), t, a[r]);
  }
  for (int r = 0; r < R; ++r) store16(out + r * ldx, a[r], va, alpha, beta);
}
}  // namespace

DSO_AVX512 void gemm1x1_d_avx512(int M, int K, int64_t n, const float* Wt, const float* dY, int64_t ldy, float* dX,
                                 int64_t ldx, float alpha, float beta, float* T) {
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t c = 0; c < n; c += 16) {
    // the tile of dY, contiguous (its rows may share L1 sets)
    for (int m = 0; m < M; ++m) _mm512_store_ps(T + 16 * m, _mm512_loadu_ps(dY + m * ldy + c));
    int k = 0;
    for (; k + 4 <= K; k += 4) d_rows<4>(M, T, Wt + k * M, dX + k * ldx + c, ldx, va, alpha, beta);
    for (; k < K; ++k) d_rows<1>(M, T, Wt + k * M, dX + k * ldx + c, ldx, va, alpha, beta);
  }
}

namespace {
/// P[m0+i, k0+j] = Σ_cols dY[m0+i, ·]·X[k0+j, ·] over the block, MR × KR at once.
template <int MR, int KR>
DSO_AVX512 inline void g_tile(int64_t n, const float* dY, int64_t ldy, const float* X, int64_t ldx, float* P, int K) {
  __m512 a[MR][KR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < KR; ++j) a[i][j] = _mm512_setzero_ps();
  for (int64_t c = 0; c < n; c += 16) {
    __m512 y[MR];
    for (int i = 0; i < MR; ++i) y[i] = _mm512_loadu_ps(dY + i * ldy + c);
    for (int j = 0; j < KR; ++j) {
      const __m512 x = _mm512_loadu_ps(X + j * ldx + c);
      for (int i = 0; i < MR; ++i) a[i][j] = _mm512_fmadd_ps(y[i], x, a[i][j]);
    }
  }
  alignas(64) float l[16];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < KR; ++j) {
      _mm512_store_ps(l, a[i][j]);
      float h[8];
      for (int q = 0; q < 8; ++q) h[q] = l[q] + l[q + 8];
      P[i * K + j] = ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
    }
}

template <int MR>
DSO_AVX512 inline void g_rows(int K, int64_t n, const float* dY, int64_t ldy, const float* X, int64_t ldx, float* P,
                              int k0, int k1) {
  int k = k0;
  for (; k + 5 <= k1; k += 5) g_tile<MR, 5>(n, dY, ldy, X + k * ldx, ldx, P + k, K);
  for (; k < k1; ++k) g_tile<MR, 1>(n, dY, ldy, X + k * ldx, ldx, P + k, K);
}
}  // namespace

DSO_AVX512 void gemm1x1_g_avx512(int M, int K, int64_t n, const float* dY, int64_t ldy, const float* X, int64_t ldx,
                                 float* P) {
  // k outer in groups (their X rows come from memory once and stay in L2 for
  // the other m groups), m inner; 4×5 accumulators.
  constexpr int kKGroup = 40;
  for (int k0 = 0; k0 < K; k0 += kKGroup) {
    const int k1 = std::min(K, k0 + kKGroup);
    int m = 0;
    for (; m + 4 <= M; m += 4) g_rows<4>(K, n, dY + m * ldy, ldy, X, ldx, P + m * K, k0, k1);
    for (; m < M; ++m) g_rows<1>(K, n, dY + m * ldy, ldy, X, ldx, P + m * K, k0, k1);
  }
}

#else  // no AVX-512 code on this target: never dispatched (available() is false)
void gemm1x1_f_avx512(int, int, int64_t, const float*, const float*, int64_t, float*, int64_t, float, float) {}
void gemm1x1_d_avx512(int, int, int64_t, const float*, const float*, int64_t, float*, int64_t, float, float, float*) {}
void gemm1x1_g_avx512(int, int, int64_t, const float*, int64_t, const float*, int64_t, float*) {}
#endif

}  // namespace cpu
}  // namespace dsonas
