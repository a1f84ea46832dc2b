// cpu_pooling.cpp — max and average pooling of CpuBackend, forward and backward, one
// (c,n) plane at a time (the CUDA twin: cuda_pooling.cu).  Stride 1 runs the
// padded-plane kernels (cpu_plane_kernels.hpp; AVX-512 forms in
// cpu_corr_avx512.cpp, bit-identical); other strides the clipped-range loops below.
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

/// Per-thread buffers of the stride-1 max-pool backward (see below): the
/// 8-wide kernel's padded planes, or (flat: AVX-512 available and rows wider
/// than 8, as PlaneCorr decides) the flattened kernel's tight ones and its
/// scratch.
struct MaxPoolBwdBufs {
  bool flat;
  PaddedPlane x, code, dy;
  std::vector<float> T;
  static PadGeom geom(bool flat, int Ho, int Wo, int k, int p) {
    return flat ? PadGeom::tight(Ho, Wo, k, p) : PadGeom(Ho, Wo, k, p);
  }
  MaxPoolBwdBufs(int k, int H, int W, int Ho, int Wo, int p)
      : flat(avx512_available() && W > 8 && Wo > 8),
        x(geom(flat, Ho, Wo, k, p), H, W, -std::numeric_limits<float>::infinity()),
        code(geom(flat, H, W, k, k - 1 - p), Ho, Wo, -1.f),
        dy(geom(flat, H, W, k, k - 1 - p), Ho, Wo, 0.f),
        T(flat ? maxpool_bwd_flat_scratch(k, H, W, Ho, Wo) : 0) {}
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
void maxpool_bwd_plane_s1(const float* __restrict x, const float* __restrict dy, float* __restrict dx, int H, int W,
                          int Ho, int Wo, int p, float beta, MaxPoolBwdBufs& B) {
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

void maxpool_bwd_plane_s1_k(int k, const float* x, const float* dy, float* dx, int H, int W, int Ho, int Wo, int p,
                            float beta, MaxPoolBwdBufs& B) {
  if (B.flat) {
    B.x.load(x);
    B.dy.load(dy);
    maxpool_bwd_flat_avx512(k, B.x.data(), B.x.stride(), B.code.data(), B.dy.data(), B.dy.stride(), k - 1 - p, dx, H, W,
                            Ho, Wo, beta, B.T.data());
    return;
  }
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

}  // namespace

// ---- pooling -----------------------------------------------------------------

namespace {

struct PoolGeom {
  int H, W, Ho, Wo, k, s, p;
  int64_t planes;
};

PoolGeom pool_geom(const PoolDesc& d, const Tensor& x, const Tensor& y) {
  DSO_CHECK(d.k >= 1 && d.stride >= 1 && d.pad >= 0 && d.pad < d.k, "bad pool desc k=", d.k, " s=", d.stride,
            " p=", d.pad);
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

void maxpool_fwd_plane(const float* __restrict x, float* __restrict y, const PoolGeom& g, const TapRanges& tr) {
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

void avgpool_fwd_plane(const float* __restrict x, float* __restrict y, const PoolGeom& g, const TapRanges& tr) {
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

void maxpool_bwd_plane(const float* __restrict x, const float* __restrict y, const float* __restrict dy,
                       float* __restrict buf, const PoolGeom& g, const TapRanges& tr, int* __restrict code) {
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

void avgpool_bwd_plane(const float* __restrict dy, float* __restrict buf, const PoolGeom& g, const TapRanges& tr) {
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
    const std::vector<float> wt(static_cast<size_t>(g.k * g.k), 1.f / static_cast<float>(g.k * g.k));
    const int nt = par ? nt_ : 1;
    PerThread<PlaneCorr> Ps(nt);
    par_for(nt, g.planes, [&](int64_t pl, int tid) {
      Ps.get(tid, g.k, g.Ho, g.Wo, g.p, g.H, g.W, mx ? -std::numeric_limits<float>::infinity() : 0.f)
          .run(mx ? CorrOp::Max : CorrOp::Fma, xp + pl * HW, wt.data(), yp + pl * HoWo, 1.f, 0.f);
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

void CpuBackend::pool_backward(const PoolDesc& d, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                               float beta) {
  const PoolGeom g = pool_geom(d, x, y);
  const bool par = x.numel() >= kParMin;
  DSO_CHECK(dy.numel() == y.numel() && dx.numel() == x.numel(), "pool_backward shapes: dy ", shape_str(dy.shape()),
            " dx ", shape_str(dx.shape()));
  const TapRanges tr(g.k, g.s, g.p, g.W, g.Wo);
  const float* xp = x.data();
  const float* yp = y.data();
  const float* dyp = dy.data();
  float* dxp = dx.data();
  const int64_t HW = static_cast<int64_t>(g.H) * g.W, HoWo = static_cast<int64_t>(g.Ho) * g.Wo;
  const bool mx = d.kind == PoolKind::Max;
  if (fast_s1(g.k, g.s, g.p)) {
    // Max: argmax codes recomputed from x (max is exact, so they match y).
    const std::vector<float> wt(static_cast<size_t>(g.k * g.k), 1.f / static_cast<float>(g.k * g.k));
    const int nt = par ? nt_ : 1;
    if (mx) {
      PerThread<MaxPoolBwdBufs> Bs(nt);
      par_for(nt, g.planes, [&](int64_t pl, int tid) {
        MaxPoolBwdBufs& B = Bs.get(tid, g.k, g.H, g.W, g.Ho, g.Wo, g.p);
        maxpool_bwd_plane_s1_k(g.k, xp + pl * HW, dyp + pl * HoWo, dxp + pl * HW, g.H, g.W, g.Ho, g.Wo, g.p, beta, B);
      });
    } else {
      PerThread<PlaneCorr> Ds(nt);
      par_for(nt, g.planes, [&](int64_t pl, int tid) {
        Ds.get(tid, g.k, g.H, g.W, g.k - 1 - g.p, g.Ho, g.Wo, 0.f)
            .run(CorrOp::Fma, dyp + pl * HoWo, wt.data(), dxp + pl * HW, 1.f, beta);
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
