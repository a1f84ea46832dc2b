// cpu_plane_kernels.hpp — the per-plane kernels that the convolution (cpu_conv.cpp)
// and pooling (cpu_pooling.cpp) files of CpuBackend share: the valid tap ranges of
// a k×k window, and the stride-1 fast path (padded planes, register-blocked 8-wide
// correlation).  Private to src/backend/cpu; its definitions have internal linkage
// (an unnamed namespace), so each of the two files compiles them exactly as when
// they were one file.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_backend.hpp"  // tap_range, v8f
#include "dsonas/core/error.hpp"

namespace dsonas {
namespace cpu {
namespace {

/// Valid [lo,hi) output-column range per kernel column kw.
struct TapRanges {
  std::vector<int> lo, hi;
  TapRanges(int k, int s, int p, int W, int Wo) : lo(static_cast<size_t>(k)), hi(static_cast<size_t>(k)) {
    for (int kw = 0; kw < k; ++kw) tap_range(kw, s, p, W, Wo, lo[static_cast<size_t>(kw)], hi[static_cast<size_t>(kw)]);
  }
};

inline void kh_range(int oh, int s, int p, int H, int k, int& kh0, int& kh1) {
  int base = oh * s - p;
  kh0 = std::max(0, -base);
  kh1 = std::min(k, H - base);
}

// ---- stride-1 fast path: padded planes + register-blocked 8-wide vectors ---------
//
// The plane is read through a padded copy (zeros, or −inf for max pooling), so
// the inner loops have no borders at all; each output vector of 8 columns
// keeps its accumulator in a register across all k·k taps.  A transposed
// stride-1 conv is the same correlation on dy with the kernel flipped and pad
// k−1−p, so backward-data reuses the forward kernel.
//
// Cost notes: the padded buffer is per thread and its border is written once
// per call (PaddedPlane); each plane then costs only an interior row copy.
// Rows of n ≥ 8 outputs are covered by vectors starting at 0, 8, … and n−8
// (the last overlaps its neighbour when 8 ∤ n), so every store is a full
// vector store; the overlapped columns receive bit-identical values.

inline int round8(int v) { return (v + 7) / 8 * 8; }

/// Max kernel size with a compiled fast path.
constexpr int kFastMaxK = 7;

/// Padded-plane geometry for a stride-1 correlation with kernel k producing
/// Ho×Wo from an h×w plane padded by `pad` (rows Ho+k−1, row stride Wp): the
/// 8-wide kernels' rows (round8(Wo) + 8 + k − 1) or, tight(), the flattened
/// AVX-512 kernel's (Wo + k − 1; cpu_corr_avx512.cpp).  The buffer has k + 32
/// floats of slack after the last row: the flattened kernel's last vectors
/// read up to k + 15 floats past it.
struct PadGeom {
  int Hp, Wp, pad, k;
  PadGeom(int Ho, int Wo, int k_, int pad_) : Hp(Ho + k_ - 1), Wp(round8(Wo) + 8 + k_ - 1), pad(pad_), k(k_) {}
  static PadGeom tight(int Ho, int Wo, int k_, int pad_) {
    PadGeom g(Ho, Wo, k_, pad_);
    g.Wp = Wo + k_ - 1;
    return g;
  }
  size_t size() const { return static_cast<size_t>(Hp) * static_cast<size_t>(Wp) + static_cast<size_t>(k) + 32; }
};

/// d[0..n) = s[0..n): 8-wide, the last vector overlapping (n ≥ 8).
inline void copy_run(const float* __restrict s, float* __restrict d, int n) {
  if (n < 8) {
    for (int i = 0; i < n; ++i) d[i] = s[i];
    return;
  }
  int i = 0;
  for (; i + 8 <= n; i += 8) st8(d + i, ld8(s + i));
  if (i < n) st8(d + n - 8, ld8(s + n - 8));
}

/// A per-thread padded copy of h×w planes.  The buffer starts as all fill
/// value; load() writes only the interior cells, which are the same for every
/// plane of a call, so the border never needs rewriting.
class PaddedPlane {
 public:
  PaddedPlane(const PadGeom& pg, int h, int w, float fillv) : pg_(pg), buf_(pg.size(), fillv) {
    rows_ = std::max(0, std::min(h, pg.Hp - pg.pad));
    cols_ = std::max(0, std::min(w, pg.Wp - pg.pad));
    w_ = w;
  }
  void load(const float* __restrict src) {
    float* d = buf_.data() + static_cast<int64_t>(pg_.pad) * pg_.Wp + pg_.pad;
    for (int r = 0; r < rows_; ++r)
      copy_run(src + static_cast<int64_t>(r) * w_, d + static_cast<int64_t>(r) * pg_.Wp, cols_);
  }
  const float* data() const { return buf_.data(); }
  float* data() { return buf_.data(); }
  int stride() const { return pg_.Wp; }

 private:
  PadGeom pg_;
  std::vector<float> buf_;
  int rows_ = 0, cols_ = 0, w_ = 0;
};

/// out[0..n) = alpha·v + beta·out (n ≤ 8 lanes).
inline void store_lanes(float* out, const v8f& v, int n, float alpha, float beta) {
  if (n >= 8) {
    if (beta == 0.f)
      st8(out, alpha == 1.f ? v : v * alpha);
    else
      st8(out, fma8(v, splat8(alpha), ld8(out) * beta));
    return;
  }
  float t[8];
  st8(t, v);
  for (int i = 0; i < n; ++i) out[i] = beta == 0.f ? alpha * t[i] : std::fma(alpha, t[i], beta * out[i]);
}

/// Start column of vector v of a row of n ≥ 8 outputs (see the cost notes).
inline int vec_start(int v, int n) { return std::min(8 * v, n - 8); }

/// row[c[v]..c[v]+8) = alpha·acc[v] + beta·row for v < NV.  All old values are
/// read before any store, so vectors that overlap inside the block get
/// identical results.
template <int NV>
inline void store_block(float* __restrict row, const int* c, const v8f* acc, float alpha, float beta) {
  if (beta == 0.f) {
    if (alpha == 1.f)
      for (int v = 0; v < NV; ++v) st8(row + c[v], acc[v]);
    else
      for (int v = 0; v < NV; ++v) st8(row + c[v], acc[v] * alpha);
    return;
  }
  v8f old[NV];
  for (int v = 0; v < NV; ++v) old[v] = ld8(row + c[v]);
  for (int v = 0; v < NV; ++v) st8(row + c[v], fma8(acc[v], splat8(alpha), old[v] * beta));
}

/// Calls blk.template run<NV>(c) over the vectors of a row of n ≥ 8 outputs,
/// in blocks of ≤ 4.  The first block takes nv mod 4 vectors, so the
/// overlapping last vector always shares a block with the one it overlaps.
template <class Blk>
inline void for_row_blocks(int n, Blk&& blk) {
  const int nv = (n + 7) / 8;
  int c[4] = {0, 0, 0, 0};
  int v = nv % 4;
  for (int i = 0; i < v; ++i) c[i] = vec_start(i, n);
  if (v == 1) blk.template run<1>(c);
  if (v == 2) blk.template run<2>(c);
  if (v == 3) blk.template run<3>(c);
  for (; v < nv; v += 4) {
    for (int i = 0; i < 4; ++i) c[i] = vec_start(v + i, n);
    blk.template run<4>(c);
  }
}

enum class CorrOp { Fma, Max };

/// NV output vectors whose windows start at src[v] (row oh of the padded
/// plane, the vector's first column): acc[v] = Σ_taps w·P (or max).
template <int K, int NV, CorrOp OP>
inline void corr_block(const float* const* src, int64_t Wp, const float* __restrict wt, v8f* acc) {
  for (int v = 0; v < NV; ++v)
    acc[v] = OP == CorrOp::Max ? splat8(-std::numeric_limits<float>::infinity()) : splat8(0.f);
  for (int kh = 0; kh < K; ++kh) {
    const int64_t ro = kh * Wp;
    for (int kw = 0; kw < K; ++kw) {
      if (OP == CorrOp::Max) {
        for (int v = 0; v < NV; ++v) {
          const v8f x = ld8(src[v] + ro + kw);
          acc[v] = x > acc[v] ? x : acc[v];
        }
      } else {
        const v8f wv = splat8(wt[kh * K + kw]);
        for (int v = 0; v < NV; ++v) acc[v] = fma8(wv, ld8(src[v] + ro + kw), acc[v]);
      }
    }
  }
}

/// As corr_block for two output rows at once (a: row oh, b: row oh+1): each
/// input vector is loaded once for both rows.  Every output still sums its
/// taps in (kh, kw) order, so results equal corr_block's bit for bit.
template <int K, int NV, CorrOp OP>
inline void corr_block2(const float* const* src, int64_t Wp, const float* __restrict wt, v8f* a, v8f* b) {
  for (int v = 0; v < NV; ++v)
    a[v] = b[v] = OP == CorrOp::Max ? splat8(-std::numeric_limits<float>::infinity()) : splat8(0.f);
  for (int r = 0; r <= K; ++r) {  // input row oh + r: tap row r of a, r−1 of b
    const int64_t ro = r * Wp;
    for (int kw = 0; kw < K; ++kw) {
      for (int v = 0; v < NV; ++v) {
        const v8f x = ld8(src[v] + ro + kw);
        if (OP == CorrOp::Max) {
          if (r < K) a[v] = x > a[v] ? x : a[v];
          if (r > 0) b[v] = x > b[v] ? x : b[v];
        } else {
          if (r < K) a[v] = fma8(splat8(wt[r * K + kw]), x, a[v]);
          if (r > 0) b[v] = fma8(splat8(wt[(r - 1) * K + kw]), x, b[v]);
        }
      }
    }
  }
}

/// Two rows (oh, oh+1) of output vectors; see corr_block2.
template <int K, CorrOp OP>
struct CorrRowBlk2 {
  const float* prow;  // row oh of the padded plane
  const float* wt;
  float* orow;  // output row oh; row oh+1 follows at orow + Wo
  int64_t Wp;
  int Wo;
  float alpha, beta;
  template <int NV>
  void run(const int* c) const {
    const float* src[NV];
    for (int v = 0; v < NV; ++v) src[v] = prow + c[v];
    v8f a[NV], b[NV];
    corr_block2<K, NV, OP>(src, Wp, wt, a, b);
    store_block<NV>(orow, c, a, alpha, beta);
    store_block<NV>(orow + Wo, c, b, alpha, beta);
  }
};

/// One block of output vectors of row oh: correlate, then store.
template <int K, CorrOp OP>
struct CorrRowBlk {
  const float* prow;  // row oh of the padded plane
  const float* wt;
  float* orow;
  int64_t Wp;
  float alpha, beta;
  template <int NV>
  void run(const int* c) const {
    const float* src[NV];
    for (int v = 0; v < NV; ++v) src[v] = prow + c[v];
    v8f acc[NV];
    corr_block<K, NV, OP>(src, Wp, wt, acc);
    store_block<NV>(orow, c, acc, alpha, beta);
  }
};

/// out (Ho×Wo) = alpha·corr(P, wt) + beta·out, P padded as PadGeom(Ho,Wo,K,·).
template <int K, CorrOp OP>
void corr_plane(const float* __restrict P, int Wp, const float* __restrict wt, float* __restrict out, int Ho, int Wo,
                float alpha, float beta) {
  if (Wo < 8) {  // one partial vector per row
    for (int oh = 0; oh < Ho; ++oh) {
      v8f acc;
      const float* src = P + static_cast<int64_t>(oh) * Wp;
      corr_block<K, 1, OP>(&src, Wp, wt, &acc);
      store_lanes(out + static_cast<int64_t>(oh) * Wo, acc, Wo, alpha, beta);
    }
    return;
  }
  int oh = 0;
  // Two rows at a time only while 2·4 accumulators and the K² weights fit the
  // 16 vector registers (K ≤ 3); larger kernels spill and get slower (K = 5
  // with the weights re-broadcast next to their use measured 1.6 against
  // 1.0 ms too).
  if (K <= 3)
    for (; oh + 2 <= Ho; oh += 2)
      for_row_blocks(Wo, CorrRowBlk2<K, OP>{P + static_cast<int64_t>(oh) * Wp, wt, out + static_cast<int64_t>(oh) * Wo,
                                            Wp, Wo, alpha, beta});
  for (; oh < Ho; ++oh)
    for_row_blocks(Wo, CorrRowBlk<K, OP>{P + static_cast<int64_t>(oh) * Wp, wt, out + static_cast<int64_t>(oh) * Wo, Wp,
                                         alpha, beta});
}

template <CorrOp OP>
void corr_plane_k(int k, const float* P, int Wp, const float* wt, float* out, int Ho, int Wo, float alpha, float beta) {
  switch (k) {
    case 1: corr_plane<1, OP>(P, Wp, wt, out, Ho, Wo, alpha, beta); break;
    case 2: corr_plane<2, OP>(P, Wp, wt, out, Ho, Wo, alpha, beta); break;
    case 3: corr_plane<3, OP>(P, Wp, wt, out, Ho, Wo, alpha, beta); break;
    case 4: corr_plane<4, OP>(P, Wp, wt, out, Ho, Wo, alpha, beta); break;
    case 5: corr_plane<5, OP>(P, Wp, wt, out, Ho, Wo, alpha, beta); break;
    case 6: corr_plane<6, OP>(P, Wp, wt, out, Ho, Wo, alpha, beta); break;
    case 7: corr_plane<7, OP>(P, Wp, wt, out, Ho, Wo, alpha, beta); break;
    default: DSO_CHECK(false, "corr_plane: k=", k, " has no fast path");
  }
}

/// Fast path applies: stride 1, k ≤ kFastMaxK, pad ≤ k−1 (so the flipped
/// transposed conv has a non-negative pad).
inline bool fast_s1(int k, int s, int p) { return s == 1 && k <= kFastMaxK && p <= k - 1; }

/// One thread's stride-1 plane correlation: out (Ho×Wo) = alpha·corr(P, wt) +
/// beta·out, P the h×w source placed at (pad, pad) in a plane of fill value
/// fillv.  The flattened AVX-512 kernel (corr_flat_avx512) where
/// avx512_available() at construction and rows are wider than 8, the 8-wide
/// corr_plane otherwise (a 7-wide plane fills 7/8 of its lanes, and was as
/// fast as the flattened kernel, whose per-plane costs dominate there).  Both
/// form every output as one chain over the taps in (kh, kw) order (FMA from 0,
/// or max with strict > from −inf) and scale it the same way, so the two paths
/// give the same bits (test_backend_cpu: CorrAvx512MatchesAvx2).
class PlaneCorr {
 public:
  PlaneCorr(int k, int Ho, int Wo, int pad, int h, int w, float fillv)
      : k_(k),
        Ho_(Ho),
        Wo_(Wo),
        flat_(avx512_available() && Wo > 8),
        P_(flat_ ? PadGeom::tight(Ho, Wo, k, pad) : PadGeom(Ho, Wo, k, pad), h, w, fillv),
        T_(flat_ ? corr_flat_scratch(k, Ho, Wo) : 0) {}
  /// Loads the source plane src (h×w) and correlates it.
  void run(CorrOp op, const float* src, const float* wt, float* out, float alpha, float beta) {
    P_.load(src);
    if (flat_)
      corr_flat_avx512(k_, op == CorrOp::Max, P_.data(), P_.stride(), wt, out, Ho_, Wo_, alpha, beta, T_.data());
    else if (op == CorrOp::Max)
      corr_plane_k<CorrOp::Max>(k_, P_.data(), P_.stride(), wt, out, Ho_, Wo_, alpha, beta);
    else
      corr_plane_k<CorrOp::Fma>(k_, P_.data(), P_.stride(), wt, out, Ho_, Wo_, alpha, beta);
  }

 private:
  int k_, Ho_, Wo_;
  bool flat_;
  PaddedPlane P_;
  std::vector<float> T_;
};

}  // namespace
}  // namespace cpu
}  // namespace dsonas
