// cpu_conv.cpp — convolution kernels of CpuBackend (pooling: cpu_pooling.cpp).
//
//  * depthwise: a direct kernel per (c,n) plane.  Stride 1 (forward, and
//    backward-data as the flipped correlation): PlaneCorr (cpu_plane_kernels.hpp)
//    over a padded copy of the plane, AVX-512 (cpu_corr_avx512.cpp) or 8-wide,
//    bit-identical.  Other strides: for each output row and each kernel tap the
//    valid output-column range is precomputed (tap_range), so the inner loop is
//    branch-free; the borders are handled by the clipped ranges and tap rows.
//  * 1×1 stride 1 pad 0 dense: one GEMM [Cout,Cin]×[Cin,N·H·W] split into fixed
//    column blocks (ColPart) across threads; own AVX-512 kernels
//    (cpu_gemm1x1.cpp) for up to 64 output channels where the CPU has them,
//    OpenBLAS otherwise.
//  * other dense convs: im2col per image + GEMM (images across threads).
//  * filter gradients: fixed chunks of columns/images, one partial per chunk,
//    partials summed in chunk order (deterministic, thread-count independent).
//  * threads: cpu_thread_pool.hpp (par_for), not OpenMP.
#include <cblas.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "cpu_backend.hpp"
#include "cpu_plane_kernels.hpp"
#include "cpu_thread_pool.hpp"
#include "dsonas/core/error.hpp"

namespace dsonas {
using namespace cpu;

namespace {

struct Geom {
  int Cin, Cout, N, H, W, Ho, Wo, k, s, p;
};

void check_conv_desc(const ConvDesc& d) {
  DSO_CHECK(d.k >= 1 && d.stride >= 1 && d.pad >= 0, "bad conv desc k=", d.k, " s=", d.stride, " p=", d.pad);
  DSO_CHECK(d.groups == 1 || (d.groups == d.cin && d.cin == d.cout),
            "conv: groups must be 1 or cin==cout (depthwise), got groups=", d.groups, " cin=", d.cin, " cout=", d.cout);
}

Geom conv_geom(const ConvDesc& d, const Tensor& x, const Tensor& y, const Tensor& w) {
  check_conv_desc(d);
  DSO_CHECK(x.ndim() == 4 && y.ndim() == 4, "conv: activations must be 4-D, got ", shape_str(x.shape()), " and ",
            shape_str(y.shape()));
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
            "conv shapes: x ", shape_str(x.shape()), " y ", shape_str(y.shape()), " desc cin=", d.cin, " cout=", d.cout,
            " k=", d.k, " s=", d.stride, " p=", d.pad);
  DSO_CHECK(w.numel() == shape_numel(d.weight_shape()), "conv weight ", shape_str(w.shape()), " expected ",
            shape_str(d.weight_shape()));
  return g;
}

// ---- depthwise ---------------------------------------------------------------

void dw_fwd_plane(const float* __restrict x, const float* __restrict w, float* __restrict y, const Geom& g,
                  const TapRanges& tr, float alpha, float beta, float* __restrict acc) {
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

void dw_bwd_data_plane(const float* __restrict dy, const float* __restrict w, float* __restrict dx, const Geom& g,
                       const TapRanges& tr, float alpha, float beta, float* __restrict buf) {
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
void dw_bwd_filter_plane(const float* __restrict x, const float* __restrict dy, const Geom& g, const TapRanges& tr,
                         double* __restrict dacc, float* __restrict tmp) {
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

/// h×w planes copied into rows of stride round8(w) whose tail lanes stay zero
/// (written once, like PaddedPlane's border).
class ZeroTailRows {
 public:
  ZeroTailRows(int h, int w)
      : h_(h), w_(w), wr_(round8(w)), buf_(static_cast<size_t>(h) * static_cast<size_t>(round8(w)), 0.f) {}
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

// ---- im2col ------------------------------------------------------------------

/// col[(ci·k+kh)·k+kw][oh·Wo+ow] for image n.
void im2col(const float* __restrict x, int n, const Geom& g, const TapRanges& tr, float* __restrict col) {
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
/// whole 16-column tiles and at most 128 output channels (any number: F's last
/// row group computes zero rows it does not store; F past 64 outputs only up to
/// 256 inputs).  Measured on the bench
/// shapes (one thread, EPYC Zen 4): 256→16 F/D/G 4.9/4.5/6.7 ms against
/// OpenBLAS's 11.4/11.2/12.3; 512→32 4.2/4.0/5.6 against 6.7/6.6/6.1;
/// 1024→64 4.3/3.8/5.2 against 5.4/5.4/5.4; the per-op 16→16 ones 0.42/0.56
/// against 0.77/0.79.  On the hand-made baseline at width 27 (2 threads, per
/// step, 2026-12-08): F 27→27 8.3–9.8 → 5.0–6.0 ms, 54→54 5.8–7.2 → 3.4–3.8,
/// 108→108 4.5–6.1 → 2.4–2.7; D/G 108→108 4.2–5.8/4.9–6.5 → 3.5–3.8/3.6–3.9.  F
/// re-reads the 16-column tile of X (cin × 64 bytes) once per 16 output rows, so
/// past 64 rows it needs the tile in L1: on the CIFAR-10 search's 1536→96 output
/// GEMM it took 244–260 ms per step against OpenBLAS's 202–209, so F with more
/// than 64 outputs is used up to 256 inputs only (D and G: 82–91 against 114–118
/// and 43–45 against 53–55 ms on that shape; they keep it).
enum class G1 { F, D, G };
bool use_avx512_1x1(G1 kind, int cout, int cin, int64_t cols) {
  if (cols % 16 != 0 || !avx512_available()) return false;
  switch (kind) {
    case G1::F: return cout <= 64 || (cout <= 128 && cin <= 256);  // past 64 rows: X's tile must stay in L1
    case G1::D: return cout <= 128;
    case G1::G: return cout <= 128;
  }
  return false;
}

/// Wᵀ of a [M, K] row-major matrix ([K][ld], ld ≥ M; the columns past M zero).
std::vector<float> transposed(const float* w, int M, int K, int ld = 0) {
  if (ld < M) ld = M;
  std::vector<float> t(static_cast<size_t>(ld) * K, 0.f);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) t[static_cast<size_t>(k) * ld + m] = w[static_cast<size_t>(m) * K + k];
  return t;
}

void sum_partials(const std::vector<float>& parts, int64_t nparts, int64_t len, float alpha, float beta, float* out) {
  for (int64_t i = 0; i < len; ++i) {
    float s = 0.f;
    for (int64_t c = 0; c < nparts; ++c) s += parts[static_cast<size_t>(c * len + i)];
    out[i] = beta == 0.f ? alpha * s : alpha * s + beta * out[i];
  }
}

}  // namespace

// ---- convolution ---------------------------------------------------------------

void CpuBackend::conv_forward(const ConvDesc& d, const Tensor& x, const Tensor& w, Tensor& y, float alpha, float beta) {
  const Geom g = conv_geom(d, x, y, w);
  const bool par = std::max(x.numel(), y.numel()) >= kParMin;
  const float* xp = x.data();
  const float* wp = w.data();
  float* yp = y.data();
  const int64_t HW = static_cast<int64_t>(g.H) * g.W, HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  if (d.depthwise() && fast_s1(g.k, g.s, g.p)) {
    const int64_t planes = static_cast<int64_t>(g.Cin) * g.N;
    const int nt = par ? nt_ : 1;
    PerThread<PlaneCorr> Ps(nt);
    par_for(nt, planes, [&](int64_t pl, int tid) {
      const int c = static_cast<int>(pl / g.N);
      Ps.get(tid, g.k, g.Ho, g.Wo, g.p, g.H, g.W, 0.f)
          .run(CorrOp::Fma, xp + pl * HW, wp + static_cast<int64_t>(c) * g.k * g.k, yp + pl * HoWo, alpha, beta);
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
      dw_fwd_plane(xp + pl * HW, wp + static_cast<int64_t>(c) * g.k * g.k, yp + pl * HoWo, g, tr, alpha, beta,
                   acc.data());
    });
    return;
  }
  if (g.k == 1 && g.s == 1 && g.p == 0) {
    const int64_t cols = static_cast<int64_t>(g.N) * HW;
    const ColPart cp(cols);
    if (use_avx512_1x1(G1::F, g.Cout, g.Cin, cols)) {
      const std::vector<float> wt = transposed(wp, g.Cout, g.Cin, (g.Cout + 15) / 16 * 16);
      par_for(par ? nt_ : 1, cp.nb, [&](int64_t b, int) {
        const int64_t j0 = cp.begin(b), nc = cp.begin(b + 1) - j0;
        if (nc > 0) gemm1x1_f_avx512(g.Cout, g.Cin, nc, wt.data(), xp + j0, cols, yp + j0, cols, alpha, beta);
      });
      return;
    }
    par_for(par ? nt_ : 1, cp.nb, [&](int64_t b, int) {
      const int64_t j0 = cp.begin(b), nc = cp.begin(b + 1) - j0;
      if (nc <= 0) return;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.Cout, static_cast<int>(nc), g.Cin, alpha, wp, g.Cin,
                  xp + j0, static_cast<int>(cols), beta, yp + j0, static_cast<int>(cols));
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.Cout, static_cast<int>(HoWo), CKK, alpha, wp, CKK,
                col.data(), static_cast<int>(HoWo), beta, yp + n * HoWo, ldy);
  });
}

void CpuBackend::conv_backward_data(const ConvDesc& d, const Tensor& dy, const Tensor& w, Tensor& dx, float alpha,
                                    float beta) {
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
    const int64_t planes = static_cast<int64_t>(g.Cin) * g.N;
    const int nt = par ? nt_ : 1;
    PerThread<PlaneCorr> Ps(nt);
    par_for(nt, planes, [&](int64_t pl, int tid) {
      const int c = static_cast<int>(pl / g.N);
      Ps.get(tid, g.k, g.H, g.W, g.k - 1 - g.p, g.Ho, g.Wo, 0.f)
          .run(CorrOp::Fma, dyp + pl * HoWo, wf.data() + static_cast<int64_t>(c) * kk, dxp + pl * HW, alpha, beta);
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
      dw_bwd_data_plane(dyp + pl * HoWo, wp + static_cast<int64_t>(c) * g.k * g.k, dxp + pl * HW, g, tr, alpha, beta,
                        buf.data());
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
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.Cin, static_cast<int>(nc), g.Cout, alpha, wp, g.Cin,
                  dyp + j0, static_cast<int>(cols), beta, dxp + j0, static_cast<int>(cols));
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
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CKK, static_cast<int>(HoWo), g.Cout, 1.f, wp, CKK,
                dyp + n * HoWo, ldy, 0.f, S.col.data(), static_cast<int>(HoWo));
    std::fill(S.img.begin(), S.img.end(), 0.f);
    col2im(S.col.data(), g, tr, S.img.data());
    for (int ci = 0; ci < g.Cin; ++ci)
      store_scaled(dxp + (static_cast<int64_t>(ci) * g.N + n) * HW, S.img.data() + ci * HW, HW, alpha, beta);
  });
}

void CpuBackend::conv_backward_filter(const ConvDesc& d, const Tensor& x, const Tensor& dy, Tensor& dw, float alpha,
                                      float beta) {
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
          : P(pg_, g_.H, g_.W, 0.f),
            D(g_.Ho, g_.Wo),
            dacc(static_cast<size_t>(taps_)),
            res(static_cast<size_t>(taps_)) {}
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
      Scratch(int taps_, int Wo)
          : tmp(static_cast<size_t>(taps_ * Wo)), dacc(static_cast<size_t>(taps_)), res(static_cast<size_t>(taps_)) {}
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
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.Cout, g.Cin, static_cast<int>(nc), 1.f, dyp + j0,
                  static_cast<int>(cols), xp + j0, static_cast<int>(cols), 0.f, parts.data() + b * len, g.Cin);
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
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.Cout, CKK, static_cast<int>(HoWo), 1.f, dyp + n * HoWo,
                  ldy, col.data(), static_cast<int>(HoWo), n == n0 ? 0.f : 1.f, parts.data() + b * len, CKK);
    }
  });
  sum_partials(parts, nch, len, alpha, beta, dwp);
}

}  // namespace dsonas
