// cpu_backend.cpp — CpuBackend: memory, batch-norm, λ-weighted sums,
// elementwise ops, the head and the optimiser.  Convolution and pooling live
// in cpu_conv.cpp.
#include "cpu_backend.hpp"
#include "cpu_pool.hpp"

#include <cblas.h>
#include <omp.h>

#ifdef __x86_64__
#include <immintrin.h>
#endif

#include <cmath>
#include <cstring>

#include "dsonas/core/error.hpp"

namespace dsonas {
using namespace cpu;

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

CpuBackend::CpuBackend(int threads) : nt_(threads > 0 ? threads : omp_get_num_procs()) {
  openblas_set_num_threads(1);  // we parallelise around the GEMMs ourselves
  omp_set_num_threads(nt_);
}

std::string CpuBackend::name() const { return str("cpu(openblas+openmp, ", nt_, " threads)"); }

namespace {

void check_same(const Tensor& a, const Tensor& b, const char* what) {
  DSO_CHECK(a.numel() == b.numel(), what, ": element counts differ: ", shape_str(a.shape()), " vs ",
            shape_str(b.shape()));
}

}  // namespace

// ---- memory ----------------------------------------------------------------------

void CpuBackend::fill(Tensor& t, float v) {
  float* p = t.data();
  const int64_t n = t.numel();
  par_range(n >= kParMin ? nt_ : 1, n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) p[i] = v;
  });
}

void CpuBackend::copy(const Tensor& src, Tensor& dst) {
  check_same(src, dst, "copy");
  if (src.data() != dst.data() && src.numel() > 0)
    std::memcpy(dst.data(), src.data(), src.bytes());
}

void CpuBackend::upload(const float* host, Tensor& dst) {
  if (dst.numel() > 0) std::memcpy(dst.data(), host, dst.bytes());
}

void CpuBackend::download(const Tensor& src, float* host) {
  if (src.numel() > 0) std::memcpy(host, src.data(), src.bytes());
}

Tensor CpuBackend::act_from_nchw(const float* host, int n, int c, int h, int w) {
  Tensor t = alloc({c, n, h, w});
  float* p = t.data();
  const int64_t hw = static_cast<int64_t>(h) * w;
  for (int ci = 0; ci < c; ++ci)
    for (int ni = 0; ni < n; ++ni)
      std::memcpy(p + (static_cast<int64_t>(ci) * n + ni) * hw,
                  host + (static_cast<int64_t>(ni) * c + ci) * hw, static_cast<size_t>(hw) * sizeof(float));
  return t;
}

void CpuBackend::act_to_nchw(const Tensor& act, float* host) {
  DSO_CHECK(act.ndim() == 4, "act_to_nchw: not 4-D: ", shape_str(act.shape()));
  const int64_t c = act.dim(0), n = act.dim(1), hw = act.dim(2) * act.dim(3);
  const float* p = act.data();
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t ni = 0; ni < n; ++ni)
      std::memcpy(host + (ni * c + ci) * hw, p + (ci * n + ni) * hw, static_cast<size_t>(hw) * sizeof(float));
}

// ---- batch-norm ---------------------------------------------------------------------

namespace {

struct BnDims {
  int64_t C, M;
};

BnDims bn_dims(const Tensor& x, const Tensor& y, const Tensor& gamma, const Tensor& beta) {
  DSO_CHECK(x.ndim() == 4, "bn: x must be 4-D, got ", shape_str(x.shape()));
  BnDims d{x.dim(0), x.dim(1) * x.dim(2) * x.dim(3)};
  DSO_CHECK(y.numel() == x.numel() && gamma.numel() == d.C && beta.numel() == d.C,
            "bn shapes: x ", shape_str(x.shape()), " y ", shape_str(y.shape()), " gamma ",
            shape_str(gamma.shape()), " beta ", shape_str(beta.shape()));
  return d;
}

/// y = [relu](x·scale + shift) over one channel.
inline void bn_apply(const float* __restrict x, float* __restrict y, int64_t M, float scale,
                     float shift, bool relu) {
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

void CpuBackend::bn_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                  Tensor& run_mean, Tensor& run_var, float momentum, float eps,
                                  Tensor& y, Tensor& save_mean, Tensor& save_invstd, bool relu) {
  const BnDims d = bn_dims(x, y, gamma, beta);
  const bool par = x.numel() >= kParMin;
  DSO_CHECK(run_mean.numel() == d.C && run_var.numel() == d.C && save_mean.numel() == d.C &&
                save_invstd.numel() == d.C,
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

void CpuBackend::bn_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                  const Tensor& run_mean, const Tensor& run_var, float eps,
                                  Tensor& y, bool relu) {
  const BnDims d = bn_dims(x, y, gamma, beta);
  const bool par = x.numel() >= kParMin;
  DSO_CHECK(run_mean.numel() == d.C && run_var.numel() == d.C,
            "bn_forward_infer: statistics tensors must have C=", d.C, " elements");
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

void CpuBackend::bn_backward(const Tensor& x, const Tensor& y, const Tensor& dy,
                             const Tensor& gamma, const Tensor& save_mean,
                             const Tensor& save_invstd, Tensor& dx, Tensor* dgamma, Tensor* dbeta,
                             bool relu, float beta_dx) {
  const BnDims d = bn_dims(x, y, gamma, gamma);
  const bool par = x.numel() >= kParMin;
  DSO_CHECK(dy.numel() == x.numel() && dx.numel() == x.numel() && save_mean.numel() == d.C &&
                save_invstd.numel() == d.C,
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
    const float c0 = static_cast<float>(-k * sg / static_cast<double>(M) +
                                        k * sgxhat * invstd * mean / static_cast<double>(M));
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

// ---- λ-weighted sums ---------------------------------------------------------------------

namespace {

/// Spatial block of the weighted sums (the parallel unit and the unit of the
/// dλ partial sums; fixed, so results do not depend on the thread count).
/// Inside a block, sub-blocks of kWsSub floats keep every input and output
/// run in L1 while all J outputs are formed: each input is read from memory
/// once for all J outputs.
constexpr int64_t kWsBlock = 2048;
constexpr int64_t kWsSub = 512;

int64_t wsum_numel(int J, int K, const uint8_t* live, const std::vector<const Tensor*>& xs,
                   const char* what) {
  DSO_CHECK(J >= 0 && K >= 0 && static_cast<int64_t>(xs.size()) == K, what, ": xs has ",
            xs.size(), " entries, K=", K);
  int64_t n = -1;
  for (int j = 0; j < J; ++j)
    for (int k = 0; k < K; ++k) {
      if (!live[j * K + k]) continue;
      const Tensor* t = xs[static_cast<size_t>(k)];
      DSO_CHECK(t != nullptr, what, ": live input ", k, " is null");
      if (n < 0) n = t->numel();
      DSO_CHECK(t->numel() == n, what, ": inputs differ in size");
    }
  return n;
}

/// y[i] = Σ_q l[q]·x[q][off+i] for i < len (nq ≥ 1; q ascending).
void wsum_run(float* __restrict y, const float* const* x, const float* l, int nq, int64_t off,
              int64_t len) {
  int64_t i = 0;
  for (; i + 32 <= len; i += 32) {
    const float* x0 = x[0] + off + i;
    const v8f l0 = splat8(l[0]);
    v8f a0 = l0 * ld8(x0), a1 = l0 * ld8(x0 + 8), a2 = l0 * ld8(x0 + 16), a3 = l0 * ld8(x0 + 24);
    for (int q = 1; q < nq; ++q) {
      const float* xq = x[q] + off + i;
      const v8f lq = splat8(l[q]);
      a0 += lq * ld8(xq);
      a1 += lq * ld8(xq + 8);
      a2 += lq * ld8(xq + 16);
      a3 += lq * ld8(xq + 24);
    }
    st8(y + i, a0);
    st8(y + i + 8, a1);
    st8(y + i + 16, a2);
    st8(y + i + 24, a3);
  }
  for (; i + 8 <= len; i += 8) {
    v8f a = splat8(l[0]) * ld8(x[0] + off + i);
    for (int q = 1; q < nq; ++q) a += splat8(l[q]) * ld8(x[q] + off + i);
    st8(y + i, a);
  }
  for (; i < len; ++i) {
    float a = l[0] * x[0][off + i];
    for (int q = 1; q < nq; ++q) a += l[q] * x[q][off + i];
    y[i] = a;
  }
}

/// d[i] += Σ_q l[q]·g[q][off+i] for i < len (q ascending).
void wsum_acc_run(float* __restrict d, const float* const* g, const float* l, int nq, int64_t off,
                  int64_t len) {
  int64_t i = 0;
  for (; i + 32 <= len; i += 32) {
    v8f a0 = ld8(d + i), a1 = ld8(d + i + 8), a2 = ld8(d + i + 16), a3 = ld8(d + i + 24);
    for (int q = 0; q < nq; ++q) {
      const float* gq = g[q] + off + i;
      const v8f lq = splat8(l[q]);
      a0 += lq * ld8(gq);
      a1 += lq * ld8(gq + 8);
      a2 += lq * ld8(gq + 16);
      a3 += lq * ld8(gq + 24);
    }
    st8(d + i, a0);
    st8(d + i + 8, a1);
    st8(d + i + 16, a2);
    st8(d + i + 24, a3);
  }
  for (; i + 8 <= len; i += 8) {
    v8f a = ld8(d + i);
    for (int q = 0; q < nq; ++q) a += splat8(l[q]) * ld8(g[q] + off + i);
    st8(d + i, a);
  }
  for (; i < len; ++i) {
    float a = d[i];
    for (int q = 0; q < nq; ++q) a += l[q] * g[q][off + i];
    d[i] = a;
  }
}

/// Σ a[i]·b[i] over a short run: 4×8 float lanes, combined in double.
double dot_run(const float* __restrict a, const float* __restrict b, int64_t len) {
  v8f s0 = splat8(0.f), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= len; i += 32) {
    s0 += ld8(a + i) * ld8(b + i);
    s1 += ld8(a + i + 8) * ld8(b + i + 8);
    s2 += ld8(a + i + 16) * ld8(b + i + 16);
    s3 += ld8(a + i + 24) * ld8(b + i + 24);
  }
  for (; i + 8 <= len; i += 8) s0 += ld8(a + i) * ld8(b + i);
  const v8f s = (s0 + s1) + (s2 + s3);
  float l[8];
  st8(l, s);
  double r = ((static_cast<double>(l[0]) + l[1]) + (static_cast<double>(l[2]) + l[3])) +
             ((static_cast<double>(l[4]) + l[5]) + (static_cast<double>(l[6]) + l[7]));
  for (; i < len; ++i) r += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return r;
}

/// The live terms of one output (forward) or one input gradient (backward).
struct WsRow {
  float* out = nullptr;
  std::vector<const float*> src;
  std::vector<float> lam;
};

// ---- AVX-512 form of the sums ----------------------------------------------------
//
// All tensors of a block start at the same address modulo 4 KiB (the caching
// allocator's blocks; and the op outputs are slices of one hcat whose stage-1
// slices are 4 KiB multiples apart), so the L1 sets that hold a sub-block of
// 13 inputs and 4 outputs overflow and the "every input stays in L1 for all J
// outputs" plan of wsum_run/wsum_acc_run reads each line several times.  The
// AVX-512 kernels instead load each 64-byte line exactly once, one 16-float
// column of every source at a time, and form all outputs from those registers
// (one thread, J = 4, K = 13, a 28×28-stage tensor: forward 2.9 ms against
// 3.7 ms, backward without dλ 4.1 against 5.7 ms).  Terms are added in the
// same (k or j ascending) order, each output starting from −0 (forward:
// −0 + l·x = l·x exactly) or from its old value (backward).  With dλ wanted
// (λ-steps) the backward keeps the AVX2 path: its dot products re-read the
// sub-block anyway, and both the AVX-512 gradient loop after them and a fused
// column-by-column AVX-512 kernel (dλ and dx per column) measured slower
// (9.3–9.9 against 7.1–8.0 ms).

/// A set of WsRows in dense form for the AVX-512 kernel: the distinct sources
/// in ascending order of their index (k forward, j backward), and per row one
/// coefficient and one lane mask (all or none) per source, so each row still
/// adds its terms in ascending index order.
struct WsPlan {
  std::vector<const float*> src;
  std::vector<float*> out;
  std::vector<float> coef;         // [row][source]
  std::vector<uint16_t> mask;      // [row][source]: 0xFFFF live, 0 not a term of the row
  /// rows[r] lists its terms as (source index, λ), indices ascending.
  WsPlan(const std::vector<float*>& outs, const std::vector<std::vector<std::pair<int, float>>>& rows,
         const std::vector<const float*>& by_index) {
    std::vector<int> pos(by_index.size(), -1);
    for (const auto& r : rows)
      for (const auto& t : r) pos[static_cast<size_t>(t.first)] = 0;
    for (size_t i = 0; i < by_index.size(); ++i)
      if (pos[i] == 0) {
        pos[i] = static_cast<int>(src.size());
        src.push_back(by_index[i]);
      }
    out = outs;
    const size_t ns = src.size();
    coef.assign(rows.size() * ns, 0.f);
    mask.assign(rows.size() * ns, 0);
    for (size_t r = 0; r < rows.size(); ++r)
      for (const auto& t : rows[r]) {
        const size_t q = r * ns + static_cast<size_t>(pos[static_cast<size_t>(t.first)]);
        coef[q] = t.second;
        mask[q] = 0xFFFF;
      }
  }
};
constexpr int kWsMaxSrc = 16;

#ifdef DSO_HAVE_AVX512
/// Over [i0, i1): out_r = Σ_s coef·src_s (acc = false) or out_r += Σ (acc = true),
/// NS sources held in registers.
template <int NS>
DSO_AVX512 void wsum_zt(const WsPlan& p, bool acc, int64_t i0, int64_t i1) {
  const int nr = static_cast<int>(p.out.size());
  const float* const* S = p.src.data();
  const float* cf = p.coef.data();
  const uint16_t* mk = p.mask.data();
  for (int64_t i = i0; i < i1; i += 16) {
    const __mmask16 m = i + 16 <= i1 ? static_cast<__mmask16>(0xFFFF)
                                     : static_cast<__mmask16>((1u << (i1 - i)) - 1u);
    __m512 xv[NS];
    for (int t = 0; t < NS; ++t) xv[t] = _mm512_maskz_loadu_ps(m, S[t] + i);
    for (int r = 0; r < nr; ++r) {
      float* o = p.out[static_cast<size_t>(r)] + i;
      __m512 a = acc ? _mm512_maskz_loadu_ps(m, o) : _mm512_set1_ps(-0.f);
      for (int t = 0; t < NS; ++t)
        a = _mm512_mask3_fmadd_ps(_mm512_set1_ps(cf[r * NS + t]), xv[t], a, mk[r * NS + t]);
      _mm512_mask_storeu_ps(o, m, a);
    }
  }
}

void wsum_z(const WsPlan& p, bool acc, int64_t i0, int64_t i1) {
  switch (p.src.size()) {
#define DSO_WS(n) \
  case n: wsum_zt<n>(p, acc, i0, i1); break;
    DSO_WS(1) DSO_WS(2) DSO_WS(3) DSO_WS(4) DSO_WS(5) DSO_WS(6) DSO_WS(7) DSO_WS(8)
    DSO_WS(9) DSO_WS(10) DSO_WS(11) DSO_WS(12) DSO_WS(13) DSO_WS(14) DSO_WS(15) DSO_WS(16)
#undef DSO_WS
    default: break;
  }
}
#else
void wsum_z(const WsPlan&, bool, int64_t, int64_t) {}
#endif


}  // namespace

void CpuBackend::wsum_forward(int J, int K, const float* lam, const uint8_t* live,
                              const std::vector<const Tensor*>& xs,
                              const std::vector<Tensor*>& ys) {
  DSO_CHECK(static_cast<int64_t>(ys.size()) == J, "wsum_forward: ys has ", ys.size(),
            " entries, J=", J);
  int64_t n = wsum_numel(J, K, live, xs, "wsum_forward");
  for (int j = 0; j < J; ++j) {
    if (!ys[static_cast<size_t>(j)]) continue;
    if (n < 0) n = ys[static_cast<size_t>(j)]->numel();
    DSO_CHECK(ys[static_cast<size_t>(j)]->numel() == n, "wsum_forward: output ", j, " has ",
              ys[static_cast<size_t>(j)]->numel(), " elements, inputs ", n);
  }
  if (n <= 0) return;
  std::vector<WsRow> rows;  // live outputs, with their live inputs in k order
  std::vector<float*> dead;  // outputs with no live input: zeros
  for (int j = 0; j < J; ++j) {
    Tensor* y = ys[static_cast<size_t>(j)];
    if (!y) continue;
    WsRow r;
    r.out = y->data();
    for (int k = 0; k < K; ++k)
      if (live[j * K + k]) {
        r.src.push_back(xs[static_cast<size_t>(k)]->data());
        r.lam.push_back(lam[j * K + k]);
      }
    if (r.src.empty())
      dead.push_back(r.out);
    else
      rows.push_back(std::move(r));
  }
  const int64_t nb = ceil_div(n, kWsBlock);
  std::unique_ptr<WsPlan> plan;
  if (avx512_available()) {
    std::vector<float*> outs;
    std::vector<std::vector<std::pair<int, float>>> terms;
    std::vector<const float*> by_k(static_cast<size_t>(K), nullptr);
    for (int k = 0; k < K; ++k)
      if (xs[static_cast<size_t>(k)]) by_k[static_cast<size_t>(k)] = xs[static_cast<size_t>(k)]->data();
    for (int j = 0; j < J; ++j) {
      Tensor* y = ys[static_cast<size_t>(j)];
      if (!y) continue;
      std::vector<std::pair<int, float>> t;
      for (int k = 0; k < K; ++k)
        if (live[j * K + k]) t.push_back({k, lam[j * K + k]});
      if (t.empty()) continue;
      outs.push_back(y->data());
      terms.push_back(std::move(t));
    }
    plan = std::make_unique<WsPlan>(outs, terms, by_k);
    if (plan->src.size() > static_cast<size_t>(kWsMaxSrc)) plan.reset();
  }
  if (plan) {
    par_for(n >= kParMin ? nt_ : 1, nb, [&](int64_t b, int) {
      const int64_t b0 = b * kWsBlock, b1 = std::min(n, b0 + kWsBlock);
      wsum_z(*plan, false, b0, b1);
      for (float* y : dead) std::memset(y + b0, 0, static_cast<size_t>(b1 - b0) * sizeof(float));
    });
    return;
  }
  par_for(n >= kParMin ? nt_ : 1, nb, [&](int64_t b, int) {
    const int64_t b0 = b * kWsBlock, b1 = std::min(n, b0 + kWsBlock);
    for (int64_t i0 = b0; i0 < b1; i0 += kWsSub) {
      const int64_t len = std::min(kWsSub, b1 - i0);
      for (const WsRow& r : rows)
        wsum_run(r.out + i0, r.src.data(), r.lam.data(), static_cast<int>(r.src.size()), i0, len);
    }
    for (float* y : dead) std::memset(y + b0, 0, static_cast<size_t>(b1 - b0) * sizeof(float));
  });
}

void CpuBackend::wsum_backward(int J, int K, const float* lam, const uint8_t* live,
                               const std::vector<const Tensor*>& xs,
                               const std::vector<const Tensor*>& dys,
                               const std::vector<Tensor*>& dxs, float* dlam) {
  DSO_CHECK(static_cast<int64_t>(dys.size()) == J && static_cast<int64_t>(dxs.size()) == K,
            "wsum_backward: dys has ", dys.size(), " entries (J=", J, "), dxs ", dxs.size(),
            " (K=", K, ")");
  int64_t n = -1;
  struct Pair {
    const float* dy;
    const float* x;
    int idx;  // j·K + k
  };
  std::vector<Pair> pairs;     // dλ wanted, in (j,k) order
  std::vector<WsRow> grads;    // per k with a dx: dx_k += Σ_j λ_jk·dy_j
  for (int k = 0; k < K; ++k) {
    Tensor* dxt = dxs[static_cast<size_t>(k)];
    WsRow r;
    for (int j = 0; j < J; ++j) {
      if (!live[j * K + k]) continue;
      const Tensor* dyt = dys[static_cast<size_t>(j)];
      DSO_CHECK(dyt != nullptr, "wsum_backward: dys[", j, "] is null but (", j, ",", k, ") is live");
      if (n < 0) n = dyt->numel();
      DSO_CHECK(dyt->numel() == n, "wsum_backward: gradients differ in size");
      if (dxt) {
        DSO_CHECK(dxt->numel() == n, "wsum_backward: dxs[", k, "] has the wrong size");
        r.src.push_back(dyt->data());
        r.lam.push_back(lam[j * K + k]);
      }
    }
    if (!r.src.empty()) {
      r.out = dxt->data();
      grads.push_back(std::move(r));
    }
  }
  if (dlam)
    for (int j = 0; j < J; ++j)
      for (int k = 0; k < K; ++k) {
        if (!live[j * K + k]) continue;
        const Tensor* xt = xs[static_cast<size_t>(k)];
        DSO_CHECK(xt != nullptr && xt->numel() == n, "wsum_backward: xs[", k,
                  "] is null or of the wrong size");
        pairs.push_back({dys[static_cast<size_t>(j)]->data(), xt->data(), j * K + k});
      }
  if (n <= 0) return;
  const int64_t nb = ceil_div(n, kWsBlock);
  const size_t np = pairs.size();
  std::vector<double> part(static_cast<size_t>(nb) * np);
  std::unique_ptr<WsPlan> plan;
  if (avx512_available() && !grads.empty() && pairs.empty()) {
    std::vector<float*> outs;
    std::vector<std::vector<std::pair<int, float>>> terms;
    std::vector<const float*> by_j(static_cast<size_t>(J), nullptr);
    for (int j = 0; j < J; ++j)
      if (dys[static_cast<size_t>(j)]) by_j[static_cast<size_t>(j)] = dys[static_cast<size_t>(j)]->data();
    for (int k = 0; k < K; ++k) {
      Tensor* dxt = dxs[static_cast<size_t>(k)];
      if (!dxt) continue;
      std::vector<std::pair<int, float>> t;
      for (int j = 0; j < J; ++j)
        if (live[j * K + k]) t.push_back({j, lam[j * K + k]});
      if (t.empty()) continue;
      outs.push_back(dxt->data());
      terms.push_back(std::move(t));
    }
    plan = std::make_unique<WsPlan>(outs, terms, by_j);
    if (plan->src.size() > static_cast<size_t>(kWsMaxSrc)) plan.reset();
  }
  const bool z = static_cast<bool>(plan) && np == 0;  // see "AVX-512 form of the sums"
  par_for(n >= kParMin ? nt_ : 1, nb, [&](int64_t b, int) {
    const int64_t b0 = b * kWsBlock, b1 = std::min(n, b0 + kWsBlock);
    double* pb = part.data() + static_cast<size_t>(b) * np;
    for (size_t q = 0; q < np; ++q) pb[q] = 0.0;
    for (int64_t i0 = b0; i0 < b1; i0 += kWsSub) {
      const int64_t len = std::min(kWsSub, b1 - i0);
      for (size_t q = 0; q < np; ++q) pb[q] += dot_run(pairs[q].dy + i0, pairs[q].x + i0, len);
      if (z) {
        wsum_z(*plan, true, i0, i0 + len);
        continue;
      }
      for (const WsRow& r : grads)
        wsum_acc_run(r.out + i0, r.src.data(), r.lam.data(), static_cast<int>(r.src.size()), i0, len);
    }
  });
  for (size_t q = 0; q < np; ++q) {
    double s = 0;
    for (int64_t b = 0; b < nb; ++b) s += part[static_cast<size_t>(b) * np + q];
    float& dst = dlam[pairs[q].idx];
    dst = static_cast<float>(static_cast<double>(dst) + s);
  }
}

// ---- elementwise ------------------------------------------------------------------------

void CpuBackend::axpy(float alpha, const Tensor& x, Tensor& y) {
  check_same(x, y, "axpy");
  const float* __restrict xp = x.data();
  float* __restrict yp = y.data();
  const int64_t n = x.numel();
  par_range(n >= kParMin ? nt_ : 1, n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) yp[i] += alpha * xp[i];
  });
}

void CpuBackend::add(const Tensor& a, const Tensor& b, Tensor& y) {
  check_same(a, y, "add");
  check_same(b, y, "add");
  const float* ap = a.data();
  const float* bp = b.data();
  float* yp = y.data();
  const int64_t n = y.numel();
  par_range(n >= kParMin ? nt_ : 1, n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) yp[i] = ap[i] + bp[i];
  });
}

void CpuBackend::dot_accumulate(const Tensor& a, const Tensor& b, float* out) {
  check_same(a, b, "dot_accumulate");
  const int64_t n = a.numel(), nc = ceil_div(n, kRedChunk);
  std::vector<double> part(static_cast<size_t>(nc));
  const float* ap = a.data();
  const float* bp = b.data();
  par_for(n >= kParMin ? nt_ : 1, nc, [&](int64_t c, int) {
    const int64_t i0 = c * kRedChunk;
    part[static_cast<size_t>(c)] = dot_d(ap + i0, bp + i0, std::min(kRedChunk, n - i0));
  });
  double s = 0;
  for (double v : part) s += v;
  *out = static_cast<float>(static_cast<double>(*out) + s);
}

void CpuBackend::clip(Tensor& g, float lo, float hi) {
  float* p = g.data();
  const int64_t n = g.numel();
  par_range(n >= kParMin ? nt_ : 1, n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float v = p[i];
      v = v < lo ? lo : v;
      p[i] = v > hi ? hi : v;
    }
  });
}

bool CpuBackend::all_finite(const Tensor& t) {
  const float* p = t.data();
  const int64_t n = t.numel(), nc = ceil_div(n, kRedChunk);
  std::vector<uint8_t> bad(static_cast<size_t>(nc), 0);
  par_for(n >= kParMin ? nt_ : 1, nc, [&](int64_t c, int) {
    const int64_t i0 = c * kRedChunk, i1 = std::min(n, i0 + kRedChunk);
    int b = 0;
    for (int64_t i = i0; i < i1; ++i) b |= !(p[i] - p[i] == 0.f);  // NaN/Inf give NaN
    bad[static_cast<size_t>(c)] = static_cast<uint8_t>(b);
  });
  for (uint8_t b : bad)
    if (b) return false;
  return true;
}

double CpuBackend::sum_squares(const Tensor& t) {
  const int64_t n = t.numel(), nc = ceil_div(n, kRedChunk);
  std::vector<double> part(static_cast<size_t>(nc));
  const float* p = t.data();
  par_for(n >= kParMin ? nt_ : 1, nc, [&](int64_t c, int) {
    const int64_t i0 = c * kRedChunk;
    part[static_cast<size_t>(c)] = dot_d(p + i0, p + i0, std::min(kRedChunk, n - i0));
  });
  double s = 0;
  for (double v : part) s += v;
  return s;
}

// ---- head --------------------------------------------------------------------------------

void CpuBackend::global_avg_pool_forward(const Tensor& x, Tensor& y) {
  DSO_CHECK(x.ndim() == 4, "global_avg_pool: x must be 4-D, got ", shape_str(x.shape()));
  const int64_t C = x.dim(0), N = x.dim(1), HW = x.dim(2) * x.dim(3);
  DSO_CHECK(y.numel() == N * C, "global_avg_pool: y ", shape_str(y.shape()), " for x ",
            shape_str(x.shape()));
  const float* xp = x.data();
  float* yp = y.data();
  par_for(C * N * HW >= kParMin ? nt_ : 1, C * N, [&](int64_t pl, int) {
    const int64_t c = pl / N, n = pl % N;
    yp[n * C + c] = static_cast<float>(sum_d(xp + pl * HW, HW) / static_cast<double>(HW));
  });
}

void CpuBackend::global_avg_pool_backward(const Tensor& dy, Tensor& dx, float beta) {
  DSO_CHECK(dx.ndim() == 4, "global_avg_pool_backward: dx must be 4-D");
  const int64_t C = dx.dim(0), N = dx.dim(1), HW = dx.dim(2) * dx.dim(3);
  DSO_CHECK(dy.numel() == N * C, "global_avg_pool_backward: dy ", shape_str(dy.shape()));
  const float* dyp = dy.data();
  float* dxp = dx.data();
  const float inv = 1.f / static_cast<float>(HW);
  par_for(C * N * HW >= kParMin ? nt_ : 1, C * N, [&](int64_t pl, int) {
    const int64_t c = pl / N, n = pl % N;
    const float v = dyp[n * C + c] * inv;
    float* __restrict d = dxp + pl * HW;
    if (beta == 0.f)
      for (int64_t i = 0; i < HW; ++i) d[i] = v;
    else
      for (int64_t i = 0; i < HW; ++i) d[i] = v + beta * d[i];
  });
}

void CpuBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  DSO_CHECK(x.ndim() == 2 && w.ndim() == 2 && x.dim(1) == w.dim(1) && b.numel() == w.dim(0) &&
                y.numel() == x.dim(0) * w.dim(0),
            "linear shapes: x ", shape_str(x.shape()), " w ", shape_str(w.shape()), " b ",
            shape_str(b.shape()), " y ", shape_str(y.shape()));
  const int N = static_cast<int>(x.dim(0)), I = static_cast<int>(x.dim(1)),
            O = static_cast<int>(w.dim(0));
  float* yp = y.data();
  const float* bp = b.data();
  for (int n = 0; n < N; ++n) std::memcpy(yp + static_cast<int64_t>(n) * O, bp, static_cast<size_t>(O) * sizeof(float));
  if (N > 0 && O > 0 && I > 0)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, O, I, 1.f, x.data(), I, w.data(), I,
                1.f, yp, O);
}

void CpuBackend::linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                                 Tensor* dw, Tensor* db) {
  DSO_CHECK(x.ndim() == 2 && w.ndim() == 2 && x.dim(1) == w.dim(1) &&
                dy.numel() == x.dim(0) * w.dim(0),
            "linear_backward shapes: x ", shape_str(x.shape()), " w ", shape_str(w.shape()),
            " dy ", shape_str(dy.shape()));
  const int N = static_cast<int>(x.dim(0)), I = static_cast<int>(x.dim(1)),
            O = static_cast<int>(w.dim(0));
  if (dx) {
    DSO_CHECK(dx->numel() == x.numel(), "linear_backward: dx ", shape_str(dx->shape()));
    if (O == 0) std::memset(dx->data(), 0, dx->bytes());
    else if (N > 0 && I > 0)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, I, O, 1.f, dy.data(), O, w.data(),
                  I, 0.f, dx->data(), I);
  }
  if (dw) {
    DSO_CHECK(dw->numel() == w.numel(), "linear_backward: dw ", shape_str(dw->shape()));
    if (N == 0) std::memset(dw->data(), 0, dw->bytes());
    else if (O > 0 && I > 0)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, N, 1.f, dy.data(), O, x.data(), I,
                  0.f, dw->data(), I);
  }
  if (db) {
    DSO_CHECK(db->numel() == O, "linear_backward: db ", shape_str(db->shape()));
    const float* dyp = dy.data();
    float* dbp = db->data();
    for (int o = 0; o < O; ++o) {
      double s = 0;
      for (int n = 0; n < N; ++n) s += static_cast<double>(dyp[static_cast<int64_t>(n) * O + o]);
      dbp[o] = static_cast<float>(s);
    }
  }
}

void CpuBackend::softmax_xent(const Tensor& logits, const int32_t* labels, float grad_scale,
                              Tensor& dlogits, double* loss_sum, int64_t* correct) {
  DSO_CHECK(logits.ndim() == 2 && dlogits.numel() == logits.numel(), "softmax_xent shapes: logits ",
            shape_str(logits.shape()), " dlogits ", shape_str(dlogits.shape()));
  const int64_t N = logits.dim(0), K = logits.dim(1);
  for (int64_t n = 0; n < N; ++n)
    if (labels[n] < 0 || labels[n] >= K)
      fail_usage(str("softmax_xent: label ", labels[n], " at index ", n, " is outside [0,", K, ")"));
  const float* zp = logits.data();
  float* dp = dlogits.data();
  double loss = 0;
  int64_t hits = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* z = zp + n * K;
    float* dz = dp + n * K;
    int64_t am = 0;
    for (int64_t k = 1; k < K; ++k)
      if (z[k] > z[am]) am = k;
    const double mx = z[am];
    double se = 0;
    for (int64_t k = 0; k < K; ++k) se += std::exp(static_cast<double>(z[k]) - mx);
    const double lse = mx + std::log(se);
    const int32_t lab = labels[n];
    loss += lse - static_cast<double>(z[lab]);
    if (am == lab) ++hits;
    for (int64_t k = 0; k < K; ++k) {
      const double pk = std::exp(static_cast<double>(z[k]) - lse);
      dz[k] = static_cast<float>(grad_scale * (pk - (k == lab ? 1.0 : 0.0)));
    }
  }
  if (loss_sum) *loss_sum += loss;
  if (correct) *correct += hits;
}

// ---- optimiser ---------------------------------------------------------------------------

void CpuBackend::nag_update(Tensor& w, const Tensor& g, Tensor& m, float lr, float momentum,
                            float wd) {
  check_same(w, g, "nag_update");
  check_same(w, m, "nag_update");
  float* __restrict wp = w.data();
  const float* __restrict gp = g.data();
  float* __restrict mp = m.data();
  const int64_t n = w.numel();
  par_range(n >= kParMin ? nt_ : 1, n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float gg = gp[i] + wd * wp[i];
      const float mm = momentum * mp[i] + gg;
      mp[i] = mm;
      wp[i] = wp[i] - lr * (gg + momentum * mm);
    }
  });
}

// ---------------------------------------------------------------------------
// block output: λ-scaled concatenation of 1×1 conv weights (tiny: O×J·I floats)

void CpuBackend::concat_scaled_columns(const std::vector<const Tensor*>& ws, const float* scale, Tensor& out) {
  const int64_t J = static_cast<int64_t>(ws.size());
  DSO_CHECK(J > 0 && out.numel() > 0, "concat_scaled_columns: empty");
  const int64_t O = ws[0]->dim(0), I = ws[0]->numel() / O;
  DSO_CHECK(out.numel() == O * J * I, "concat_scaled_columns: out ", shape_str(out.shape()));
  float* o = out.data();
  for (int64_t j = 0; j < J; ++j) {
    DSO_CHECK(ws[j]->numel() == O * I, "concat_scaled_columns: weight ", j);
    const float* w = ws[j]->data();
    const float sj = scale[j];
    for (int64_t r = 0; r < O; ++r)
      for (int64_t i = 0; i < I; ++i) o[r * J * I + j * I + i] = sj == 0.f ? 0.f : sj * w[r * I + i];
  }
}

void CpuBackend::concat_scaled_columns_backward(const std::vector<const Tensor*>& ws, const float* scale,
                                                const Tensor& m, const std::vector<Tensor*>& dws,
                                                const std::vector<float*>& dscale) {
  const int64_t J = static_cast<int64_t>(ws.size());
  const int64_t O = ws[0]->dim(0), I = ws[0]->numel() / O;
  DSO_CHECK(m.numel() == O * J * I, "concat_scaled_columns_backward: m ", shape_str(m.shape()));
  const float* mm = m.data();
  for (int64_t j = 0; j < J; ++j) {
    const float* w = ws[j]->data();
    float* dw = (j < static_cast<int64_t>(dws.size()) && dws[j]) ? dws[j]->data() : nullptr;
    float* ds = j < static_cast<int64_t>(dscale.size()) ? dscale[j] : nullptr;
    double acc = 0;
    for (int64_t r = 0; r < O; ++r)
      for (int64_t i = 0; i < I; ++i) {
        const float g = mm[r * J * I + j * I + i];
        if (dw) dw[r * I + i] += scale[j] * g;
        acc += static_cast<double>(w[r * I + i]) * g;
      }
    if (ds) *ds += static_cast<float>(acc);
  }
}

std::string blas_library_config() {
  std::string blas = openblas_get_config();  // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64"
  while (!blas.empty() && (blas.back() == ' ' || blas.back() == '\n')) blas.pop_back();
  return blas;
}

}  // namespace dsonas
