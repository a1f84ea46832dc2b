// cpu_conv.cpp — convolution and pooling kernels of CpuBackend.
//
//  * depthwise: a direct kernel per (c,n) plane.  For each output row and each
//    kernel tap the valid output-column range is precomputed (tap_range), so
//    the inner loop is branch-free and contiguous for stride 1 (vectorised);
//    the borders are handled by the clipped ranges and the clipped tap rows.
//  * 1×1 stride 1 pad 0 dense: one GEMM [Cout,Cin]×[Cin,N·H·W] split into fixed
//    column blocks (ColPart) across threads; own AVX-512 kernels
//    (cpu_gemm1x1.cpp) for up to 64 output channels where the CPU has them,
//    OpenBLAS otherwise.
//  * other dense convs: im2col per image + GEMM (images across threads).
//  * filter gradients: fixed chunks of columns/images, one partial per chunk,
//    partials summed in chunk order (deterministic, thread-count independent).
//  * threads: cpu_pool.hpp (par_for), not OpenMP.
#include <cblas.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "cpu_backend.hpp"
#include "cpu_pool.hpp"
#include "dsonas/core/error.hpp"

namespace dsonas {
using namespace cpu;

namespace {

struct Geom {
  int Cin, Cout, N, H, W, Ho, Wo, k, s, p;
};

void check_conv_desc(const ConvDesc& d) {
  DSO_CHECK(d.k >= 1 && d.stride >= 1 && d.pad >= 0, "bad conv desc k=", d.k, " s=", d.stride,
            " p=", d.pad);
  DSO_CHECK(d.groups == 1 || (d.groups == d.cin && d.cin == d.cout),
            "conv: groups must be 1 or cin==cout (depthwise), got groups=", d.groups,
            " cin=", d.cin, " cout=", d.cout);
}

Geom conv_geom(const ConvDesc& d, const Tensor& x, const Tensor& y, const Tensor& w) {
  check_conv_desc(d);
  DSO_CHECK(x.ndim() == 4 && y.ndim() == 4, "conv: activations must be 4-D, got ",
            shape_str(x.shape()), " and ", shape_str(y.shape()));
  Geom g;
  g.Cin = static_cast<int>(x.dim(0));
  g.N = static_cast<int>(x.dim(1));
  g.H = static_cast<int>(x.dim(2));
  g.W = static_cast<int>(x.dim(3));
  g.Cout = static_cast<int>(y.dim(0));
  g.Ho = static_cast<int>(y.dim(2));
  g.Wo = static_cast<int>(y.dim(3));
  g.k = d.k;
  g.s = d.stride;
  g.p = d.pad;
  DSO_CHECK(g.Cin == d.cin && g.Cout == d.cout && y.dim(1) == g.N && g.Ho == d.out_size(g.H) &&
                g.Wo == d.out_size(g.W) && g.Ho > 0 && g.Wo > 0,
            "conv shapes: x ", shape_str(x.shape()), " y ", shape_str(y.shape()), " desc cin=",
            d.cin, " cout=", d.cout, " k=", d.k, " s=", d.stride, " p=", d.pad);
  DSO_CHECK(w.numel() == shape_numel(d.weight_shape()), "conv weight ", shape_str(w.shape()),
            " expected ", shape_str(d.weight_shape()));
  return g;
}

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

// ---- depthwise ---------------------------------------------------------------

void dw_fwd_plane(const float* __restrict x, const float* __restrict w, float* __restrict y,
                  const Geom& g, const TapRanges& tr, float alpha, float beta, float* __restrict acc) {
  const int k = g.k, s = g.s, p = g.p, W = g.W, Wo = g.Wo;
  for (int oh = 0; oh < g.Ho; ++oh) {
    for (int ow = 0; ow < Wo; ++ow) acc[ow] = 0.f;
    int kh0, kh1;
    kh_range(oh, s, p, g.H, k, kh0, kh1);
    for (int kh = kh0; kh < kh1; ++kh) {
      const float* __restrict xr = x + static_cast<int64_t>(oh * s - p + kh) * W;
      for (int kw = 0; kw < k; ++kw) {
        const float wv = w[kh * k + kw];
        const int lo = tr.lo[static_cast<size_t>(kw)], hi = tr.hi[static_cast<size_t>(kw)];
        const int off = kw - p;
        if (s == 1) {
          const float* __restrict xs = xr + off;
          for (int ow = lo; ow < hi; ++ow) acc[ow] += wv * xs[ow];
        } else {
          for (int ow = lo; ow < hi; ++ow) acc[ow] += wv * xr[ow * s + off];
        }
      }
    }
    store_scaled(y + static_cast<int64_t>(oh) * Wo, acc, Wo, alpha, beta);
  }
}

void dw_bwd_data_plane(const float* __restrict dy, const float* __restrict w, float* __restrict dx,
                       const Geom& g, const TapRanges& tr, float alpha, float beta,
                       float* __restrict buf) {
  const int k = g.k, s = g.s, p = g.p, W = g.W, Wo = g.Wo;
  const int64_t HW = static_cast<int64_t>(g.H) * W;
  for (int64_t i = 0; i < HW; ++i) buf[i] = 0.f;
  for (int oh = 0; oh < g.Ho; ++oh) {
    int kh0, kh1;
    kh_range(oh, s, p, g.H, k, kh0, kh1);
    const float* __restrict dyr = dy + static_cast<int64_t>(oh) * Wo;
    for (int kh = kh0; kh < kh1; ++kh) {
      float* __restrict br = buf + static_cast<int64_t>(oh * s - p + kh) * W;
      for (int kw = 0; kw < k; ++kw) {
        const float wv = w[kh * k + kw];
        const int lo = tr.lo[static_cast<size_t>(kw)], hi = tr.hi[static_cast<size_t>(kw)];
        const int off = kw - p;
        if (s == 1) {
          float* __restrict bs = br + off;
          for (int ow = lo; ow < hi; ++ow) bs[ow] += wv * dyr[ow];
        } else {
          for (int ow = lo; ow < hi; ++ow) br[ow * s + off] += wv * dyr[ow];
        }
      }
    }
  }
  store_scaled(dx, buf, HW, alpha, beta);
}

/// Adds the k·k tap gradients of one plane into dacc (double).
void dw_bwd_filter_plane(const float* __restrict x, const float* __restrict dy, const Geom& g,
                         const TapRanges& tr, double* __restrict dacc, float* __restrict tmp) {
  const int k = g.k, s = g.s, p = g.p, W = g.W, Wo = g.Wo;
  const int taps = k * k;
  for (int64_t i = 0; i < static_cast<int64_t>(taps) * Wo; ++i) tmp[i] = 0.f;
  for (int oh = 0; oh < g.Ho; ++oh) {
    int kh0, kh1;
    kh_range(oh, s, p, g.H, k, kh0, kh1);
    const float* __restrict dyr = dy + static_cast<int64_t>(oh) * Wo;
    for (int kh = kh0; kh < kh1; ++kh) {
      const float* __restrict xr = x + static_cast<int64_t>(oh * s - p + kh) * W;
      for (int kw = 0; kw < k; ++kw) {
        float* __restrict t = tmp + static_cast<int64_t>(kh * k + kw) * Wo;
        const int lo = tr.lo[static_cast<size_t>(kw)], hi = tr.hi[static_cast<size_t>(kw)];
        const int off = kw - p;
        if (s == 1) {
          const float* __restrict xs = xr + off;
          for (int ow = lo; ow < hi; ++ow) t[ow] += dyr[ow] * xs[ow];
        } else {
          for (int ow = lo; ow < hi; ++ow) t[ow] += dyr[ow] * xr[ow * s + off];
        }
      }
    }
  }
  for (int t = 0; t < taps; ++t) dacc[t] += sum_d(tmp + static_cast<int64_t>(t) * Wo, Wo);
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
/// Ho×Wo from an h×w plane padded by `pad` (rows Ho+k−1, row stride Wp).
struct PadGeom {
  int Hp, Wp, pad;
  PadGeom(int Ho, int Wo, int k, int pad_) : Hp(Ho + k - 1), Wp(round8(Wo) + 8 + k - 1), pad(pad_) {}
  size_t size() const { return static_cast<size_t>(Hp) * static_cast<size_t>(Wp); }
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
      st8(out, v * alpha + ld8(out) * beta);
    return;
  }
  float t[8];
  st8(t, v);
  for (int i = 0; i < n; ++i) out[i] = beta == 0.f ? alpha * t[i] : alpha * t[i] + beta * out[i];
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
  for (int v = 0; v < NV; ++v) st8(row + c[v], acc[v] * alpha + old[v] * beta);
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
        for (int v = 0; v < NV; ++v) acc[v] += wv * ld8(src[v] + ro + kw);
      }
    }
  }
}

/// As corr_block for two output rows at once (a: row oh, b: row oh+1): each
/// input vector is loaded once for both rows.  Every output still sums its
/// taps in (kh, kw) order, so results equal corr_block's bit for bit.
template <int K, int NV, CorrOp OP>
inline void corr_block2(const float* const* src, int64_t Wp, const float* __restrict wt, v8f* a,
                        v8f* b) {
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
          if (r < K) a[v] += splat8(wt[r * K + kw]) * x;
          if (r > 0) b[v] += splat8(wt[(r - 1) * K + kw]) * x;
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
void corr_plane(const float* __restrict P, int Wp, const float* __restrict wt, float* __restrict out,
                int Ho, int Wo, float alpha, float beta) {
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
      for_row_blocks(Wo, CorrRowBlk2<K, OP>{P + static_cast<int64_t>(oh) * Wp, wt,
                                            out + static_cast<int64_t>(oh) * Wo, Wp, Wo, alpha, beta});
  for (; oh < Ho; ++oh)
    for_row_blocks(Wo, CorrRowBlk<K, OP>{P + static_cast<int64_t>(oh) * Wp, wt,
                                         out + static_cast<int64_t>(oh) * Wo, Wp, alpha, beta});
}

template <CorrOp OP>
void corr_plane_k(int k, const float* P, int Wp, const float* wt, float* out, int Ho, int Wo,
                  float alpha, float beta) {
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

/// acc[tap] += Σ_{oh,ow} dy[oh][ow]·P[oh+kh][ow+kw]; dy padded to row stride
/// Wr = round8(Wo) with zero tail lanes.
/// Kernel rows kh ∈ [KH0, KH0+R) only: R·K accumulators, kept ≤ 12 so they
/// stay in the 16 vector registers (K = 5 with all 25 taps at once spilled).
/// Each tap still sums its terms in (oh, ob) order, so the split does not
/// change any result.
template <int K, int KH0, int R>
inline void corr_grad_rows(const float* __restrict P, int Wp, const float* __restrict dyp, int Wr, int Ho,
                           double* __restrict dacc) {
  v8f acc[R * K];
  for (int t = 0; t < R * K; ++t) acc[t] = splat8(0.f);
  for (int oh = 0; oh < Ho; ++oh)
    for (int ob = 0; ob < Wr; ob += 8) {
      const v8f dv = ld8(dyp + static_cast<int64_t>(oh) * Wr + ob);
      for (int r = 0; r < R; ++r) {
        const float* row = P + static_cast<int64_t>(oh + KH0 + r) * Wp + ob;
        for (int kw = 0; kw < K; ++kw) acc[r * K + kw] += dv * ld8(row + kw);
      }
    }
  for (int t = 0; t < R * K; ++t) {
    float l[8];
    st8(l, acc[t]);
    dacc[KH0 * K + t] += ((static_cast<double>(l[0]) + l[1]) + (static_cast<double>(l[2]) + l[3])) +
                         ((static_cast<double>(l[4]) + l[5]) + (static_cast<double>(l[6]) + l[7]));
  }
}

template <int K, int KH0>
inline void corr_grad_from(const float* P, int Wp, const float* dyp, int Wr, int Ho, double* dacc) {
  if constexpr (KH0 < K) {
    constexpr int R0 = 12 / K < 1 ? 1 : 12 / K;
    constexpr int R = R0 < K - KH0 ? R0 : K - KH0;
    corr_grad_rows<K, KH0, R>(P, Wp, dyp, Wr, Ho, dacc);
    corr_grad_from<K, KH0 + R>(P, Wp, dyp, Wr, Ho, dacc);
  }
}

template <int K>
void corr_grad_plane(const float* __restrict P, int Wp, const float* __restrict dyp, int Wr, int Ho,
                     double* __restrict dacc) {
  if constexpr (K * K <= 12)
    corr_grad_rows<K, 0, K>(P, Wp, dyp, Wr, Ho, dacc);
  else
    corr_grad_from<K, 0>(P, Wp, dyp, Wr, Ho, dacc);
}

void corr_grad_plane_k(int k, const float* P, int Wp, const float* dyp, int Wr, int Ho, double* dacc) {
  switch (k) {
    case 1: corr_grad_plane<1>(P, Wp, dyp, Wr, Ho, dacc); break;
    case 2: corr_grad_plane<2>(P, Wp, dyp, Wr, Ho, dacc); break;
    case 3: corr_grad_plane<3>(P, Wp, dyp, Wr, Ho, dacc); break;
    case 4: corr_grad_plane<4>(P, Wp, dyp, Wr, Ho, dacc); break;
    case 5: corr_grad_plane<5>(P, Wp, dyp, Wr, Ho, dacc); break;
    case 6: corr_grad_plane<6>(P, Wp, dyp, Wr, Ho, dacc); break;
    case 7: corr_grad_plane<7>(P, Wp, dyp, Wr, Ho, dacc); break;
    default: DSO_CHECK(false, "corr_grad_plane: k=", k, " has no fast path");
  }
}

/// Fast path applies: stride 1, k ≤ kFastMaxK, pad ≤ k−1 (so the flipped
/// transposed conv has a non-negative pad).
inline bool fast_s1(int k, int s, int p) { return s == 1 && k <= kFastMaxK && p <= k - 1; }

/// h×w planes copied into rows of stride round8(w) whose tail lanes stay zero
/// (written once, like PaddedPlane's border).
class ZeroTailRows {
 public:
  ZeroTailRows(int h, int w) : h_(h), w_(w), wr_(round8(w)), buf_(static_cast<size_t>(h) * static_cast<size_t>(round8(w)), 0.f) {}
  void load(const float* __restrict src) {
    for (int r = 0; r < h_; ++r)
      copy_run(src + static_cast<int64_t>(r) * w_, buf_.data() + static_cast<int64_t>(r) * wr_, w_);
  }
  const float* data() const { return buf_.data(); }
  int stride() const { return wr_; }

 private:
  int h_, w_, wr_;
  std::vector<float> buf_;
};

/// Per-thread buffers of the stride-1 max-pool backward (see below).
struct MaxPoolBwdBufs {
  PaddedPlane x, code, dy;
  MaxPoolBwdBufs(int k, int H, int W, int Ho, int Wo, int p)
      : x(PadGeom(Ho, Wo, k, p), H, W, -std::numeric_limits<float>::infinity()),
        code(PadGeom(H, W, k, k - 1 - p), Ho, Wo, -1.f),
        dy(PadGeom(H, W, k, k - 1 - p), Ho, Wo, 0.f) {}
};

/// Max-pool backward, pass 1 for NV vectors of output row oh: the code
/// kh·K+kw of the first maximum in window order (forward scan, strict >).
template <int K>
struct MaxCodeBlk {
  const float* P;
  float* crow;
  int Wp, oh;
  template <int NV>
  void run(const int* c) const {
    v8f best[NV], code[NV];
    const float* r0 = P + static_cast<int64_t>(oh) * Wp;
    for (int v = 0; v < NV; ++v) {
      best[v] = ld8(r0 + c[v]);
      code[v] = splat8(0.f);
    }
    for (int t = 1; t < K * K; ++t) {
      const float* row = P + static_cast<int64_t>(oh + t / K) * Wp + t % K;
      const v8f tv = splat8(static_cast<float>(t));
      for (int v = 0; v < NV; ++v) {
        const v8f xv = ld8(row + c[v]);
        const auto gt = xv > best[v];
        best[v] = gt ? xv : best[v];
        code[v] = gt ? tv : code[v];
      }
    }
    for (int v = 0; v < NV; ++v) st8(crow + c[v], code[v]);
  }
};
/// Pass 2 for NV vectors of input row ih: the gather.
template <int K>
struct MaxGatherBlk {
  const float* Cp;
  const float* Dp;
  float* dxrow;
  int Wc, ih;
  float beta;
  template <int NV>
  void run(const int* c) const {
    v8f acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = splat8(0.f);
    for (int a = 0; a < K; ++a) {  // a = K−1−kh
      const int64_t off = static_cast<int64_t>(ih + a) * Wc;
      for (int b = 0; b < K; ++b) {  // b = K−1−kw
        const v8f want = splat8(static_cast<float>((K - 1 - a) * K + (K - 1 - b)));
        for (int v = 0; v < NV; ++v) {
          const int64_t o = off + c[v] + b;
          acc[v] += ld8(Cp + o) == want ? ld8(Dp + o) : splat8(0.f);
        }
      }
    }
    store_block<NV>(dxrow, c, acc, 1.f, beta);
  }
};

/// Max-pool backward for one plane, stride 1.  Pass 1: per output, the code
/// kh·K+kw of the first maximum in window order (a forward scan with strict >,
/// so ties keep the earliest cell; recomputed from x, max is exact so it
/// matches y), written as full vectors into the interior of the padded code
/// plane (border −1, never matches).  Pass 2, a gather per input vector:
/// dx(ih,iw) = Σ_taps [code(o) == tap]·dy(o), o = (ih+p−kh, iw+p−kw).
template <int K>
void maxpool_bwd_plane_s1(const float* __restrict x, const float* __restrict dy, float* __restrict dx,
                          int H, int W, int Ho, int Wo, int p, float beta, MaxPoolBwdBufs& B) {
  B.x.load(x);
  B.dy.load(dy);
  const int q = K - 1 - p;  // pad of the code/dy planes for the gather
  const float* P = B.x.data();
  const int Wp = B.x.stride();
  float* Cp = B.code.data();
  const float* Dp = B.dy.data();
  const int Wc = B.code.stride();
  for (int oh = 0; oh < Ho; ++oh) {
    float* crow = Cp + static_cast<int64_t>(oh + q) * Wc + q;
    if (Wo >= 8) {
      for_row_blocks(Wo, MaxCodeBlk<K>{P, crow, Wp, oh});
    } else {
      float tmp[8];
      const int c0 = 0;
      MaxCodeBlk<K>{P, tmp, Wp, oh}.template run<1>(&c0);
      for (int i = 0; i < Wo; ++i) crow[i] = tmp[i];
    }
  }
  for (int ih = 0; ih < H; ++ih) {
    float* dxrow = dx + static_cast<int64_t>(ih) * W;
    if (W >= 8) {
      for_row_blocks(W, MaxGatherBlk<K>{Cp, Dp, dxrow, Wc, ih, beta});
    } else {
      float tmp[8];
      const int c0 = 0;
      MaxGatherBlk<K>{Cp, Dp, tmp, Wc, ih, 0.f}.template run<1>(&c0);
      for (int i = 0; i < W; ++i) dxrow[i] = beta == 0.f ? tmp[i] : tmp[i] + beta * dxrow[i];
    }
  }
}

void maxpool_bwd_plane_s1_k(int k, const float* x, const float* dy, float* dx, int H, int W, int Ho,
                            int Wo, int p, float beta, MaxPoolBwdBufs& B) {
  switch (k) {
    case 1: maxpool_bwd_plane_s1<1>(x, dy, dx, H, W, Ho, Wo, p, beta, B); break;
    case 2: maxpool_bwd_plane_s1<2>(x, dy, dx, H, W, Ho, Wo, p, beta, B); break;
    case 3: maxpool_bwd_plane_s1<3>(x, dy, dx, H, W, Ho, Wo, p, beta, B); break;
    case 4: maxpool_bwd_plane_s1<4>(x, dy, dx, H, W, Ho, Wo, p, beta, B); break;
    case 5: maxpool_bwd_plane_s1<5>(x, dy, dx, H, W, Ho, Wo, p, beta, B); break;
    case 6: maxpool_bwd_plane_s1<6>(x, dy, dx, H, W, Ho, Wo, p, beta, B); break;
    case 7: maxpool_bwd_plane_s1<7>(x, dy, dx, H, W, Ho, Wo, p, beta, B); break;
    default: DSO_CHECK(false, "maxpool_bwd_plane_s1: k=", k, " has no fast path");
  }
}

// ---- im2col ------------------------------------------------------------------

/// col[(ci·k+kh)·k+kw][oh·Wo+ow] for image n.
void im2col(const float* __restrict x, int n, const Geom& g, const TapRanges& tr,
            float* __restrict col) {
  const int k = g.k, s = g.s, p = g.p, Wo = g.Wo;
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * Wo;
  for (int ci = 0; ci < g.Cin; ++ci) {
    const float* xp = x + (static_cast<int64_t>(ci) * g.N + n) * g.H * g.W;
    for (int kh = 0; kh < k; ++kh)
      for (int kw = 0; kw < k; ++kw) {
        float* __restrict dst = col + ((static_cast<int64_t>(ci) * k + kh) * k + kw) * HoWo;
        const int lo = tr.lo[static_cast<size_t>(kw)], hi = tr.hi[static_cast<size_t>(kw)];
        const int off = kw - p;
        for (int oh = 0; oh < g.Ho; ++oh) {
          float* __restrict drow = dst + static_cast<int64_t>(oh) * Wo;
          const int ih = oh * s - p + kh;
          if (ih < 0 || ih >= g.H) {
            for (int ow = 0; ow < Wo; ++ow) drow[ow] = 0.f;
            continue;
          }
          const float* __restrict xr = xp + static_cast<int64_t>(ih) * g.W;
          for (int ow = 0; ow < lo; ++ow) drow[ow] = 0.f;
          if (s == 1) {
            for (int ow = lo; ow < hi; ++ow) drow[ow] = xr[ow + off];
          } else {
            for (int ow = lo; ow < hi; ++ow) drow[ow] = xr[ow * s + off];
          }
          for (int ow = hi; ow < Wo; ++ow) drow[ow] = 0.f;
        }
      }
  }
}

/// img[ci][ih][iw] += col (img zeroed by the caller).
void col2im(const float* __restrict col, const Geom& g, const TapRanges& tr, float* __restrict img) {
  const int k = g.k, s = g.s, p = g.p, Wo = g.Wo;
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * Wo;
  const int64_t HW = static_cast<int64_t>(g.H) * g.W;
  for (int ci = 0; ci < g.Cin; ++ci) {
    float* ip = img + ci * HW;
    for (int kh = 0; kh < k; ++kh)
      for (int kw = 0; kw < k; ++kw) {
        const float* __restrict src = col + ((static_cast<int64_t>(ci) * k + kh) * k + kw) * HoWo;
        const int lo = tr.lo[static_cast<size_t>(kw)], hi = tr.hi[static_cast<size_t>(kw)];
        const int off = kw - p;
        for (int oh = 0; oh < g.Ho; ++oh) {
          const int ih = oh * s - p + kh;
          if (ih < 0 || ih >= g.H) continue;
          const float* __restrict srow = src + static_cast<int64_t>(oh) * Wo;
          float* __restrict ir = ip + static_cast<int64_t>(ih) * g.W;
          if (s == 1) {
            float* __restrict is = ir + off;
            for (int ow = lo; ow < hi; ++ow) is[ow] += srow[ow];
          } else {
            for (int ow = lo; ow < hi; ++ow) ir[ow * s + off] += srow[ow];
          }
        }
      }
  }
}

/// Column partition of the 1×1 GEMMs [·, cols]: near-equal blocks of whole
/// 16-column units, about kColBlock columns each, their number rounded up to a
/// multiple of 4 (when there are that many units) so that 1, 2 and 4 threads
/// get equal shares — with plain 2048-column blocks a stage-3 tensor
/// (3136 columns) split 2048/1088 between two threads and its filter gradient
/// ran on one.  Fixed by cols alone, so results do not depend on the thread
/// count.  Also the chunks of the filter-gradient partial sums.
constexpr int64_t kColBlock = 2048;
struct ColPart {
  int64_t cols, units, nb;
  explicit ColPart(int64_t c) : cols(c), units(ceil_div(c, 16)) {
    nb = ceil_div(c, kColBlock);
    if (units >= 4) nb = std::min(units, ceil_div(nb, 4) * 4);
    nb = std::max<int64_t>(1, std::min(nb, units));
  }
  int64_t begin(int64_t b) const { return std::min(cols, (units * b / nb) * 16); }
};

/// Which 1×1 GEMMs take the AVX-512 kernels (cpu_gemm1x1.cpp): all columns in
/// whole 16-column tiles and at most 64 output channels.  Measured on the bench
/// shapes (one thread, EPYC Zen 4): 256→16 F/D/G 4.9/4.5/6.7 ms against
/// OpenBLAS's 11.4/11.2/12.3; 512→32 4.2/4.0/5.6 against 6.7/6.6/6.1;
/// 1024→64 4.3/3.8/5.2 against 5.4/5.4/5.4; the per-op 16→16 ones 0.42/0.56
/// against 0.77/0.79.
enum class G1 { F, D, G };
bool use_avx512_1x1(G1 kind, int cout, int cin, int64_t cols) {
  if (cols % 16 != 0 || !avx512_available()) return false;
  switch (kind) {
    case G1::F: return cout % 16 == 0 && cout <= 64;
    case G1::D: return cout <= 64;
    case G1::G: return cout <= 64;
  }
  return false;
}

/// Wᵀ of a [M, K] row-major matrix ([K][M]).
std::vector<float> transposed(const float* w, int M, int K) {
  std::vector<float> t(static_cast<size_t>(M) * K);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) t[static_cast<size_t>(k) * M + m] = w[static_cast<size_t>(m) * K + k];
  return t;
}

void sum_partials(const std::vector<float>& parts, int64_t nparts, int64_t len, float alpha,
                  float beta, float* out) {
  for (int64_t i = 0; i < len; ++i) {
    float s = 0.f;
    for (int64_t c = 0; c < nparts; ++c) s += parts[static_cast<size_t>(c * len + i)];
    out[i] = beta == 0.f ? alpha * s : alpha * s + beta * out[i];
  }
}

}  // namespace

// ---- convolution ---------------------------------------------------------------

void CpuBackend::conv_forward(const ConvDesc& d, const Tensor& x, const Tensor& w, Tensor& y,
                              float alpha, float beta) {
  const Geom g = conv_geom(d, x, y, w);
  const bool par = std::max(x.numel(), y.numel()) >= kParMin;
  const float* xp = x.data();
  const float* wp = w.data();
  float* yp = y.data();
  const int64_t HW = static_cast<int64_t>(g.H) * g.W, HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  if (d.depthwise() && fast_s1(g.k, g.s, g.p)) {
    const PadGeom pg(g.Ho, g.Wo, g.k, g.p);
    const int64_t planes = static_cast<int64_t>(g.Cin) * g.N;
    const int nt = par ? nt_ : 1;
    PerThread<PaddedPlane> Ps(nt);
    par_for(nt, planes, [&](int64_t pl, int tid) {
      PaddedPlane& P = Ps.get(tid, pg, g.H, g.W, 0.f);
      const int c = static_cast<int>(pl / g.N);
      P.load(xp + pl * HW);
      corr_plane_k<CorrOp::Fma>(g.k, P.data(), P.stride(), wp + static_cast<int64_t>(c) * g.k * g.k,
                                yp + pl * HoWo, g.Ho, g.Wo, alpha, beta);
    });
    return;
  }
  if (d.depthwise()) {
    const TapRanges tr(g.k, g.s, g.p, g.W, g.Wo);
    const int64_t planes = static_cast<int64_t>(g.Cin) * g.N;
    const int nt = par ? nt_ : 1;
    PerThread<std::vector<float>> accs(nt);
    par_for(nt, planes, [&](int64_t pl, int tid) {
      std::vector<float>& acc = accs.get(tid, static_cast<size_t>(g.Wo));
      const int c = static_cast<int>(pl / g.N);
      dw_fwd_plane(xp + pl * HW, wp + static_cast<int64_t>(c) * g.k * g.k, yp + pl * HoWo, g, tr,
                   alpha, beta, acc.data());
    });
    return;
  }
  if (g.k == 1 && g.s == 1 && g.p == 0) {
    const int64_t cols = static_cast<int64_t>(g.N) * HW;
    const ColPart cp(cols);
    if (use_avx512_1x1(G1::F, g.Cout, g.Cin, cols)) {
      const std::vector<float> wt = transposed(wp, g.Cout, g.Cin);
      par_for(par ? nt_ : 1, cp.nb, [&](int64_t b, int) {
        const int64_t j0 = cp.begin(b), nc = cp.begin(b + 1) - j0;
        if (nc > 0) gemm1x1_f_avx512(g.Cout, g.Cin, nc, wt.data(), xp + j0, cols, yp + j0, cols, alpha, beta);
      });
      return;
    }
    par_for(par ? nt_ : 1, cp.nb, [&](int64_t b, int) {
      const int64_t j0 = cp.begin(b), nc = cp.begin(b + 1) - j0;
      if (nc <= 0) return;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.Cout, static_cast<int>(nc), g.Cin,
                  alpha, wp, g.Cin, xp + j0, static_cast<int>(cols), beta, yp + j0,
                  static_cast<int>(cols));
    });
    return;
  }
  const int CKK = g.Cin * g.k * g.k;
  const TapRanges tr(g.k, g.s, g.p, g.W, g.Wo);
  const int ldy = static_cast<int>(static_cast<int64_t>(g.N) * HoWo);
  const int nt = par ? nt_ : 1;
  PerThread<std::vector<float>> cols(nt);
  par_for(nt, g.N, [&](int64_t n, int tid) {
    std::vector<float>& col = cols.get(tid, static_cast<size_t>(CKK * HoWo));
    im2col(xp, static_cast<int>(n), g, tr, col.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.Cout, static_cast<int>(HoWo), CKK,
                alpha, wp, CKK, col.data(), static_cast<int>(HoWo), beta, yp + n * HoWo, ldy);
  });
}

void CpuBackend::conv_backward_data(const ConvDesc& d, const Tensor& dy, const Tensor& w,
                                    Tensor& dx, float alpha, float beta) {
  const Geom g = conv_geom(d, dx, dy, w);
  const bool par = std::max(dx.numel(), dy.numel()) >= kParMin;
  const float* dyp = dy.data();
  const float* wp = w.data();
  float* dxp = dx.data();
  const int64_t HW = static_cast<int64_t>(g.H) * g.W, HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  if (d.depthwise() && fast_s1(g.k, g.s, g.p)) {
    // Transposed stride-1 conv = correlation of dy with the flipped kernel, pad k−1−p.
    const int kk = g.k * g.k;
    std::vector<float> wf(static_cast<size_t>(g.Cin * kk));
    for (int c = 0; c < g.Cin; ++c)
      for (int t = 0; t < kk; ++t) wf[static_cast<size_t>(c * kk + t)] = wp[c * kk + kk - 1 - t];
    const PadGeom pg(g.H, g.W, g.k, g.k - 1 - g.p);
    const int64_t planes = static_cast<int64_t>(g.Cin) * g.N;
    const int nt = par ? nt_ : 1;
    PerThread<PaddedPlane> Ps(nt);
    par_for(nt, planes, [&](int64_t pl, int tid) {
      PaddedPlane& P = Ps.get(tid, pg, g.Ho, g.Wo, 0.f);
      const int c = static_cast<int>(pl / g.N);
      P.load(dyp + pl * HoWo);
      corr_plane_k<CorrOp::Fma>(g.k, P.data(), P.stride(), wf.data() + static_cast<int64_t>(c) * kk,
                                dxp + pl * HW, g.H, g.W, alpha, beta);
    });
    return;
  }
  if (d.depthwise()) {
    const TapRanges tr(g.k, g.s, g.p, g.W, g.Wo);
    const int64_t planes = static_cast<int64_t>(g.Cin) * g.N;
    const int nt = par ? nt_ : 1;
    PerThread<std::vector<float>> bufs(nt);
    par_for(nt, planes, [&](int64_t pl, int tid) {
      std::vector<float>& buf = bufs.get(tid, static_cast<size_t>(HW));
      const int c = static_cast<int>(pl / g.N);
      dw_bwd_data_plane(dyp + pl * HoWo, wp + static_cast<int64_t>(c) * g.k * g.k, dxp + pl * HW,
                        g, tr, alpha, beta, buf.data());
    });
    return;
  }
  if (g.k == 1 && g.s == 1 && g.p == 0) {
    const int64_t cols = static_cast<int64_t>(g.N) * HW;
    const ColPart cp(cols);
    if (use_avx512_1x1(G1::D, g.Cout, g.Cin, cols)) {
      const std::vector<float> wt = transposed(wp, g.Cout, g.Cin);
      const int nt = par ? nt_ : 1;
      // 64-byte aligned per-thread tiles of 16·Cout floats
      std::vector<float> tiles(static_cast<size_t>(nt) * 16 * g.Cout + 16);
      float* t0 = tiles.data() + (16 - (reinterpret_cast<uintptr_t>(tiles.data()) / sizeof(float)) % 16) % 16;
      par_for(nt, cp.nb, [&](int64_t b, int tid) {
        const int64_t j0 = cp.begin(b), nc = cp.begin(b + 1) - j0;
        if (nc > 0)
          gemm1x1_d_avx512(g.Cout, g.Cin, nc, wt.data(), dyp + j0, cols, dxp + j0, cols, alpha, beta,
                           t0 + static_cast<int64_t>(tid) * 16 * g.Cout);
      });
      return;
    }
    par_for(par ? nt_ : 1, cp.nb, [&](int64_t b, int) {
      const int64_t j0 = cp.begin(b), nc = cp.begin(b + 1) - j0;
      if (nc <= 0) return;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.Cin, static_cast<int>(nc), g.Cout,
                  alpha, wp, g.Cin, dyp + j0, static_cast<int>(cols), beta, dxp + j0,
                  static_cast<int>(cols));
    });
    return;
  }
  const int CKK = g.Cin * g.k * g.k;
  const TapRanges tr(g.k, g.s, g.p, g.W, g.Wo);
  const int ldy = static_cast<int>(static_cast<int64_t>(g.N) * HoWo);
  const int nt = par ? nt_ : 1;
  struct Scratch {
    std::vector<float> col, img;
    Scratch(size_t a, size_t b) : col(a), img(b) {}
  };
  PerThread<Scratch> scr(nt);
  par_for(nt, g.N, [&](int64_t n, int tid) {
    Scratch& S = scr.get(tid, static_cast<size_t>(CKK * HoWo), static_cast<size_t>(g.Cin * HW));
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CKK, static_cast<int>(HoWo), g.Cout, 1.f,
                wp, CKK, dyp + n * HoWo, ldy, 0.f, S.col.data(), static_cast<int>(HoWo));
    std::fill(S.img.begin(), S.img.end(), 0.f);
    col2im(S.col.data(), g, tr, S.img.data());
    for (int ci = 0; ci < g.Cin; ++ci)
      store_scaled(dxp + (static_cast<int64_t>(ci) * g.N + n) * HW, S.img.data() + ci * HW, HW,
                   alpha, beta);
  });
}

void CpuBackend::conv_backward_filter(const ConvDesc& d, const Tensor& x, const Tensor& dy,
                                      Tensor& dw, float alpha, float beta) {
  const Geom g = conv_geom(d, x, dy, dw);
  const bool par = std::max(x.numel(), dy.numel()) >= kParMin;
  const float* xp = x.data();
  const float* dyp = dy.data();
  float* dwp = dw.data();
  const int64_t HW = static_cast<int64_t>(g.H) * g.W, HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  if (d.depthwise() && fast_s1(g.k, g.s, g.p)) {
    // Each channel's k·k taps belong to one thread; sum over n in order.
    const PadGeom pg(g.Ho, g.Wo, g.k, g.p);
    const int taps = g.k * g.k;
    const int nt = par ? nt_ : 1;
    struct Scratch {
      PaddedPlane P;
      ZeroTailRows D;
      std::vector<double> dacc;
      std::vector<float> res;
      Scratch(const PadGeom& pg_, const Geom& g_, int taps_)
          : P(pg_, g_.H, g_.W, 0.f), D(g_.Ho, g_.Wo), dacc(static_cast<size_t>(taps_)), res(static_cast<size_t>(taps_)) {}
    };
    PerThread<Scratch> scr(nt);
    par_for(nt, g.Cin, [&](int64_t c, int tid) {
      Scratch& S = scr.get(tid, pg, g, taps);
      std::fill(S.dacc.begin(), S.dacc.end(), 0.0);
      for (int n = 0; n < g.N; ++n) {
        const int64_t pl = c * g.N + n;
        S.P.load(xp + pl * HW);
        S.D.load(dyp + pl * HoWo);
        corr_grad_plane_k(g.k, S.P.data(), S.P.stride(), S.D.data(), S.D.stride(), g.Ho, S.dacc.data());
      }
      for (int t = 0; t < taps; ++t) S.res[static_cast<size_t>(t)] = static_cast<float>(S.dacc[static_cast<size_t>(t)]);
      store_scaled(dwp + c * taps, S.res.data(), taps, alpha, beta);
    });
    return;
  }
  if (d.depthwise()) {
    // Each channel's k·k taps belong to one thread; sum over n in order.
    const TapRanges tr(g.k, g.s, g.p, g.W, g.Wo);
    const int taps = g.k * g.k;
    const int nt = par ? nt_ : 1;
    struct Scratch {
      std::vector<float> tmp;
      std::vector<double> dacc;
      std::vector<float> res;
      Scratch(int taps_, int Wo) : tmp(static_cast<size_t>(taps_ * Wo)), dacc(static_cast<size_t>(taps_)), res(static_cast<size_t>(taps_)) {}
    };
    PerThread<Scratch> scr(nt);
    par_for(nt, g.Cin, [&](int64_t c, int tid) {
      Scratch& S = scr.get(tid, taps, g.Wo);
      std::fill(S.dacc.begin(), S.dacc.end(), 0.0);
      for (int n = 0; n < g.N; ++n) {
        const int64_t pl = c * g.N + n;
        dw_bwd_filter_plane(xp + pl * HW, dyp + pl * HoWo, g, tr, S.dacc.data(), S.tmp.data());
      }
      for (int t = 0; t < taps; ++t) S.res[static_cast<size_t>(t)] = static_cast<float>(S.dacc[static_cast<size_t>(t)]);
      store_scaled(dwp + c * taps, S.res.data(), taps, alpha, beta);
    });
    return;
  }
  if (g.k == 1 && g.s == 1 && g.p == 0) {
    // dW[Cout,Cin] = dY[Cout,cols]·X[Cin,cols]ᵀ, cols cut into fixed chunks
    // (ColPart); one partial per chunk, summed in chunk order.
    const int64_t cols = static_cast<int64_t>(g.N) * HW;
    const ColPart cp(cols);
    const int64_t nch = cp.nb;
    const int64_t len = static_cast<int64_t>(g.Cout) * g.Cin;
    std::vector<float> parts(static_cast<size_t>(nch * len));
    const bool z = use_avx512_1x1(G1::G, g.Cout, g.Cin, cols);
    par_for(par ? nt_ : 1, nch, [&](int64_t b, int) {
      const int64_t j0 = cp.begin(b), nc = cp.begin(b + 1) - j0;
      if (nc <= 0) {
        std::fill(parts.begin() + b * len, parts.begin() + (b + 1) * len, 0.f);
        return;
      }
      if (z) {
        gemm1x1_g_avx512(g.Cout, g.Cin, nc, dyp + j0, cols, xp + j0, cols, parts.data() + b * len);
        return;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.Cout, g.Cin, static_cast<int>(nc), 1.f,
                  dyp + j0, static_cast<int>(cols), xp + j0, static_cast<int>(cols), 0.f,
                  parts.data() + b * len, g.Cin);
    });
    sum_partials(parts, nch, len, alpha, beta, dwp);
    return;
  }
  // im2col path: chunks of whole images.
  const int CKK = g.Cin * g.k * g.k;
  const TapRanges tr(g.k, g.s, g.p, g.W, g.Wo);
  const int ldy = static_cast<int>(static_cast<int64_t>(g.N) * HoWo);
  // 8 chunks of whole images (fixed; balanced for 1, 2, 4 and 8 threads)
  const int64_t per = ceil_div(g.N, std::min<int64_t>(g.N, 8));
  const int64_t nch = ceil_div(g.N, per);
  const int64_t len = static_cast<int64_t>(g.Cout) * CKK;
  std::vector<float> parts(static_cast<size_t>(nch * len));
  const int nt = par ? nt_ : 1;
  PerThread<std::vector<float>> cols(nt);
  par_for(nt, nch, [&](int64_t b, int tid) {
    std::vector<float>& col = cols.get(tid, static_cast<size_t>(CKK * HoWo));
    const int n0 = static_cast<int>(b * per), n1 = static_cast<int>(std::min<int64_t>(g.N, (b + 1) * per));
    for (int n = n0; n < n1; ++n) {
      im2col(xp, n, g, tr, col.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.Cout, CKK, static_cast<int>(HoWo),
                  1.f, dyp + n * HoWo, ldy, col.data(), static_cast<int>(HoWo),
                  n == n0 ? 0.f : 1.f, parts.data() + b * len, CKK);
    }
  });
  sum_partials(parts, nch, len, alpha, beta, dwp);
}

// ---- pooling -----------------------------------------------------------------

namespace {

struct PoolGeom {
  int H, W, Ho, Wo, k, s, p;
  int64_t planes;
};

PoolGeom pool_geom(const PoolDesc& d, const Tensor& x, const Tensor& y) {
  DSO_CHECK(d.k >= 1 && d.stride >= 1 && d.pad >= 0 && d.pad < d.k, "bad pool desc k=", d.k,
            " s=", d.stride, " p=", d.pad);
  DSO_CHECK(x.ndim() == 4 && y.ndim() == 4 && x.dim(0) == y.dim(0) && x.dim(1) == y.dim(1) &&
                y.dim(2) == d.out_size(static_cast<int>(x.dim(2))) &&
                y.dim(3) == d.out_size(static_cast<int>(x.dim(3))),
            "pool shapes: x ", shape_str(x.shape()), " y ", shape_str(y.shape()));
  PoolGeom g;
  g.H = static_cast<int>(x.dim(2));
  g.W = static_cast<int>(x.dim(3));
  g.Ho = static_cast<int>(y.dim(2));
  g.Wo = static_cast<int>(y.dim(3));
  g.k = d.k;
  g.s = d.stride;
  g.p = d.pad;
  g.planes = x.dim(0) * x.dim(1);
  return g;
}

void maxpool_fwd_plane(const float* __restrict x, float* __restrict y, const PoolGeom& g,
                       const TapRanges& tr) {
  const int k = g.k, s = g.s, p = g.p, W = g.W, Wo = g.Wo;
  for (int oh = 0; oh < g.Ho; ++oh) {
    float* __restrict yr = y + static_cast<int64_t>(oh) * Wo;
    for (int ow = 0; ow < Wo; ++ow) yr[ow] = -std::numeric_limits<float>::infinity();
    int kh0, kh1;
    kh_range(oh, s, p, g.H, k, kh0, kh1);
    for (int kh = kh0; kh < kh1; ++kh) {
      const float* __restrict xr = x + static_cast<int64_t>(oh * s - p + kh) * W;
      for (int kw = 0; kw < k; ++kw) {
        const int lo = tr.lo[static_cast<size_t>(kw)], hi = tr.hi[static_cast<size_t>(kw)];
        const int off = kw - p;
        if (s == 1) {
          const float* __restrict xs = xr + off;
          for (int ow = lo; ow < hi; ++ow) yr[ow] = xs[ow] > yr[ow] ? xs[ow] : yr[ow];
        } else {
          for (int ow = lo; ow < hi; ++ow) {
            const float v = xr[ow * s + off];
            yr[ow] = v > yr[ow] ? v : yr[ow];
          }
        }
      }
    }
  }
}

void avgpool_fwd_plane(const float* __restrict x, float* __restrict y, const PoolGeom& g,
                       const TapRanges& tr) {
  const int k = g.k, s = g.s, p = g.p, W = g.W, Wo = g.Wo;
  const float inv = 1.f / static_cast<float>(k * k);
  for (int oh = 0; oh < g.Ho; ++oh) {
    float* __restrict yr = y + static_cast<int64_t>(oh) * Wo;
    for (int ow = 0; ow < Wo; ++ow) yr[ow] = 0.f;
    int kh0, kh1;
    kh_range(oh, s, p, g.H, k, kh0, kh1);
    for (int kh = kh0; kh < kh1; ++kh) {
      const float* __restrict xr = x + static_cast<int64_t>(oh * s - p + kh) * W;
      for (int kw = 0; kw < k; ++kw) {
        const int lo = tr.lo[static_cast<size_t>(kw)], hi = tr.hi[static_cast<size_t>(kw)];
        const int off = kw - p;
        if (s == 1) {
          const float* __restrict xs = xr + off;
          for (int ow = lo; ow < hi; ++ow) yr[ow] += xs[ow];
        } else {
          for (int ow = lo; ow < hi; ++ow) yr[ow] += xr[ow * s + off];
        }
      }
    }
    for (int ow = 0; ow < Wo; ++ow) yr[ow] *= inv;
  }
}

void maxpool_bwd_plane(const float* __restrict x, const float* __restrict y,
                       const float* __restrict dy, float* __restrict buf, const PoolGeom& g,
                       const TapRanges& tr, int* __restrict code) {
  const int k = g.k, s = g.s, p = g.p, W = g.W, Wo = g.Wo;
  for (int oh = 0; oh < g.Ho; ++oh) {
    const float* __restrict yr = y + static_cast<int64_t>(oh) * Wo;
    const float* __restrict dyr = dy + static_cast<int64_t>(oh) * Wo;
    for (int ow = 0; ow < Wo; ++ow) code[ow] = -1;
    int kh0, kh1;
    kh_range(oh, s, p, g.H, k, kh0, kh1);
    // Walk the window backwards so the last match written is the first max.
    for (int kh = kh1 - 1; kh >= kh0; --kh) {
      const float* __restrict xr = x + static_cast<int64_t>(oh * s - p + kh) * W;
      for (int kw = k - 1; kw >= 0; --kw) {
        const int lo = tr.lo[static_cast<size_t>(kw)], hi = tr.hi[static_cast<size_t>(kw)];
        const int off = kw - p;
        const int c = kh * k + kw;
        if (s == 1) {
          const float* __restrict xs = xr + off;
          for (int ow = lo; ow < hi; ++ow) code[ow] = xs[ow] == yr[ow] ? c : code[ow];
        } else {
          for (int ow = lo; ow < hi; ++ow) code[ow] = xr[ow * s + off] == yr[ow] ? c : code[ow];
        }
      }
    }
    for (int ow = 0; ow < Wo; ++ow) {
      const int c = code[ow];
      if (c < 0) continue;
      const int kh = c / k, kw = c - kh * k;
      buf[static_cast<int64_t>(oh * s - p + kh) * W + ow * s - p + kw] += dyr[ow];
    }
  }
}

void avgpool_bwd_plane(const float* __restrict dy, float* __restrict buf, const PoolGeom& g,
                       const TapRanges& tr) {
  const int k = g.k, s = g.s, p = g.p, W = g.W, Wo = g.Wo;
  const float inv = 1.f / static_cast<float>(k * k);
  for (int oh = 0; oh < g.Ho; ++oh) {
    int kh0, kh1;
    kh_range(oh, s, p, g.H, k, kh0, kh1);
    const float* __restrict dyr = dy + static_cast<int64_t>(oh) * Wo;
    for (int kh = kh0; kh < kh1; ++kh) {
      float* __restrict br = buf + static_cast<int64_t>(oh * s - p + kh) * W;
      for (int kw = 0; kw < k; ++kw) {
        const int lo = tr.lo[static_cast<size_t>(kw)], hi = tr.hi[static_cast<size_t>(kw)];
        const int off = kw - p;
        if (s == 1) {
          float* __restrict bs = br + off;
          for (int ow = lo; ow < hi; ++ow) bs[ow] += inv * dyr[ow];
        } else {
          for (int ow = lo; ow < hi; ++ow) br[ow * s + off] += inv * dyr[ow];
        }
      }
    }
  }
}

}  // namespace

void CpuBackend::pool_forward(const PoolDesc& d, const Tensor& x, Tensor& y) {
  const PoolGeom g = pool_geom(d, x, y);
  const bool par = x.numel() >= kParMin;
  const TapRanges tr(g.k, g.s, g.p, g.W, g.Wo);
  const float* xp = x.data();
  float* yp = y.data();
  const int64_t HW = static_cast<int64_t>(g.H) * g.W, HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const bool mx = d.kind == PoolKind::Max;
  if (fast_s1(g.k, g.s, g.p)) {
    const PadGeom pg(g.Ho, g.Wo, g.k, g.p);
    const std::vector<float> wt(static_cast<size_t>(g.k * g.k), 1.f / static_cast<float>(g.k * g.k));
    const int nt = par ? nt_ : 1;
    PerThread<PaddedPlane> Ps(nt);
    par_for(nt, g.planes, [&](int64_t pl, int tid) {
      PaddedPlane& P = Ps.get(tid, pg, g.H, g.W, mx ? -std::numeric_limits<float>::infinity() : 0.f);
      P.load(xp + pl * HW);
      if (mx)
        corr_plane_k<CorrOp::Max>(g.k, P.data(), P.stride(), nullptr, yp + pl * HoWo, g.Ho, g.Wo, 1.f, 0.f);
      else
        corr_plane_k<CorrOp::Fma>(g.k, P.data(), P.stride(), wt.data(), yp + pl * HoWo, g.Ho, g.Wo, 1.f, 0.f);
    });
    return;
  }
  par_for(par ? nt_ : 1, g.planes, [&](int64_t pl, int) {
    if (mx)
      maxpool_fwd_plane(xp + pl * HW, yp + pl * HoWo, g, tr);
    else
      avgpool_fwd_plane(xp + pl * HW, yp + pl * HoWo, g, tr);
  });
}

void CpuBackend::pool_backward(const PoolDesc& d, const Tensor& x, const Tensor& y,
                               const Tensor& dy, Tensor& dx, float beta) {
  const PoolGeom g = pool_geom(d, x, y);
  const bool par = x.numel() >= kParMin;
  DSO_CHECK(dy.numel() == y.numel() && dx.numel() == x.numel(), "pool_backward shapes: dy ",
            shape_str(dy.shape()), " dx ", shape_str(dx.shape()));
  const TapRanges tr(g.k, g.s, g.p, g.W, g.Wo);
  const float* xp = x.data();
  const float* yp = y.data();
  const float* dyp = dy.data();
  float* dxp = dx.data();
  const int64_t HW = static_cast<int64_t>(g.H) * g.W, HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const bool mx = d.kind == PoolKind::Max;
  if (fast_s1(g.k, g.s, g.p)) {
    // Max: argmax codes recomputed from x (max is exact, so they match y).
    const PadGeom cg(g.H, g.W, g.k, g.k - 1 - g.p);
    const std::vector<float> wt(static_cast<size_t>(g.k * g.k), 1.f / static_cast<float>(g.k * g.k));
    const int nt = par ? nt_ : 1;
    if (mx) {
      PerThread<MaxPoolBwdBufs> Bs(nt);
      par_for(nt, g.planes, [&](int64_t pl, int tid) {
        MaxPoolBwdBufs& B = Bs.get(tid, g.k, g.H, g.W, g.Ho, g.Wo, g.p);
        maxpool_bwd_plane_s1_k(g.k, xp + pl * HW, dyp + pl * HoWo, dxp + pl * HW, g.H, g.W, g.Ho, g.Wo,
                               g.p, beta, B);
      });
    } else {
      PerThread<PaddedPlane> Ds(nt);
      par_for(nt, g.planes, [&](int64_t pl, int tid) {
        PaddedPlane& D = Ds.get(tid, cg, g.Ho, g.Wo, 0.f);
        D.load(dyp + pl * HoWo);
        corr_plane_k<CorrOp::Fma>(g.k, D.data(), D.stride(), wt.data(), dxp + pl * HW, g.H, g.W, 1.f, beta);
      });
    }
    return;
  }
  const int nt = par ? nt_ : 1;
  struct Scratch {
    std::vector<float> buf;
    std::vector<int> code;
    Scratch(int64_t hw, int wo) : buf(static_cast<size_t>(hw)), code(static_cast<size_t>(wo)) {}
  };
  PerThread<Scratch> scr(nt);
  par_for(nt, g.planes, [&](int64_t pl, int tid) {
    Scratch& S = scr.get(tid, HW, g.Wo);
    std::fill(S.buf.begin(), S.buf.end(), 0.f);
    if (mx)
      maxpool_bwd_plane(xp + pl * HW, yp + pl * HoWo, dyp + pl * HoWo, S.buf.data(), g, tr, S.code.data());
    else
      avgpool_bwd_plane(dyp + pl * HoWo, S.buf.data(), g, tr);
    store_scaled(dxp + pl * HW, S.buf.data(), HW, 1.f, beta);
  });
}

}  // namespace dsonas
