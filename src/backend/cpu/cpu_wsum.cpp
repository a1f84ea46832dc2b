// cpu_wsum.cpp — CpuBackend λ-weighted sums of a block (forward, backward with dλ) and
// the λ-scaled concatenation of the block output's 1×1 weights (the CUDA twin:
// cuda_wsum.cu).
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

// ---- λ-weighted sums ---------------------------------------------------------------------

namespace {

/// Spatial block of the weighted sums (the parallel unit and the unit of the
/// dλ partial sums; fixed, so results do not depend on the thread count).
/// Inside a block, sub-blocks of kWsSub floats keep every input and output
/// run in L1 while all J outputs are formed: each input is read from memory
/// once for all J outputs.
constexpr int64_t kWsBlock = 2048;
constexpr int64_t kWsSub = 512;

int64_t wsum_numel(int J, int K, const uint8_t* live, const std::vector<const Tensor*>& xs, const char* what) {
  DSO_CHECK(J >= 0 && K >= 0 && static_cast<int64_t>(xs.size()) == K, what, ": xs has ", xs.size(), " entries, K=", K);
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
void wsum_run(float* __restrict y, const float* const* x, const float* l, int nq, int64_t off, int64_t len) {
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
void wsum_acc_run(float* __restrict d, const float* const* g, const float* l, int nq, int64_t off, int64_t len) {
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
  std::vector<float> coef;     // [row][source]
  std::vector<uint16_t> mask;  // [row][source]: 0xFFFF live, 0 not a term of the row
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
    const __mmask16 m = i + 16 <= i1 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (i1 - i)) - 1u);
    __m512 xv[NS];
    for (int t = 0; t < NS; ++t) xv[t] = _mm512_maskz_loadu_ps(m, S[t] + i);
    for (int r = 0; r < nr; ++r) {
      float* o = p.out[static_cast<size_t>(r)] + i;
      __m512 a = acc ? _mm512_maskz_loadu_ps(m, o) : _mm512_set1_ps(-0.f);
      for (int t = 0; t < NS; ++t) a = _mm512_mask3_fmadd_ps(_mm512_set1_ps(cf[r * NS + t]), xv[t], a, mk[r * NS + t]);
      _mm512_mask_storeu_ps(o, m, a);
    }
  }
}

void wsum_z(const WsPlan& p, bool acc, int64_t i0, int64_t i1) {
  switch (p.src.size()) {
    // (clang-format cannot lay out these macro cases)
    // clang-format off
#define DSO_WS(n) case n: wsum_zt<n>(p, acc, i0, i1); break;
    DSO_WS(1) DSO_WS(2) DSO_WS(3) DSO_WS(4) DSO_WS(5) DSO_WS(6) DSO_WS(7) DSO_WS(8)
    DSO_WS(9) DSO_WS(10) DSO_WS(11) DSO_WS(12) DSO_WS(13) DSO_WS(14) DSO_WS(15) DSO_WS(16)
#undef DSO_WS
    default: break;
    // clang-format on
  }
}
#else
void wsum_z(const WsPlan&, bool, int64_t, int64_t) {}
#endif

}  // namespace

void CpuBackend::wsum_forward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                              const std::vector<Tensor*>& ys) {
  DSO_CHECK(static_cast<int64_t>(ys.size()) == J, "wsum_forward: ys has ", ys.size(), " entries, J=", J);
  int64_t n = wsum_numel(J, K, live, xs, "wsum_forward");
  for (int j = 0; j < J; ++j) {
    if (!ys[static_cast<size_t>(j)]) continue;
    if (n < 0) n = ys[static_cast<size_t>(j)]->numel();
    DSO_CHECK(ys[static_cast<size_t>(j)]->numel() == n, "wsum_forward: output ", j, " has ",
              ys[static_cast<size_t>(j)]->numel(), " elements, inputs ", n);
  }
  if (n <= 0) return;
  std::vector<WsRow> rows;   // live outputs, with their live inputs in k order
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
                               const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& dys,
                               const std::vector<Tensor*>& dxs, float* dlam) {
  DSO_CHECK(static_cast<int64_t>(dys.size()) == J && static_cast<int64_t>(dxs.size()) == K, "wsum_backward: dys has ",
            dys.size(), " entries (J=", J, "), dxs ", dxs.size(), " (K=", K, ")");
  int64_t n = -1;
  struct Pair {
    const float* dy;
    const float* x;
    int idx;  // j·K + k
  };
  std::vector<Pair> pairs;   // dλ wanted, in (j,k) order
  std::vector<WsRow> grads;  // per k with a dx: dx_k += Σ_j λ_jk·dy_j
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
        DSO_CHECK(xt != nullptr && xt->numel() == n, "wsum_backward: xs[", k, "] is null or of the wrong size");
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

}  // namespace dsonas
