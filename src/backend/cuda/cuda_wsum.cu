// cuda_wsum.cu — the λ-weighted sums of the supergraph's edges and the
// block output's λ-scaled weight concatenation, on CUDA.
//
// λ and the live mask are host arrays; each launch receives its share of them
// (≤ kWsOut outputs × ≤ kWsIn inputs: pointers, λ, live bit masks) as one
// __grid_constant__ kernel argument, so nothing is uploaded and nothing
// synchronises.  Larger J/K run as several launches: output groups re-read the
// inputs, input groups accumulate in k order.  Every element of an output is
// formed by one thread summing its live inputs in ascending k, as the CPU does.
// dλ_jk = <dy_j, x_k> and the concatenation's dscale use the deterministic
// two-pass reduction (double partials) and are added to the device floats as
// float(double(old) + Σ), like CpuBackend.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cuda_backend.cuh"

namespace dsonas {
using cuda::check_dev;

namespace {

constexpr int kPairs = 64;  // dλ pairs per reduction launch
using km::kCat;

__global__ void wsum_kernel(const __grid_constant__ km::WsArgs a, int64_t n) { GRID_STRIDE(i, n) km::wsum_elem(a, i); }

/// Runs the rows over n elements; `in` maps input index → device pointer.
void run_rows(const std::vector<km::WsRow>& rows, const std::vector<const float*>& in, int64_t n) {
  for (const km::WsArgs& a : km::wsum_plan(rows, in)) {
    wsum_kernel<<<cuda::grid_for(n), cuda::kThreads>>>(a, n);
    KERNEL_CHECK("wsum");
  }
}

struct PairTerm {
  const float* a[kPairs];
  const float* b[kPairs];
  __device__ cuda::Vals<1> operator()(int seg, int64_t i) const {
    return {{static_cast<double>(a[seg][i]) * static_cast<double>(b[seg][i])}};
  }
};

/// dlam[idx] = float(double(dlam[idx]) + Σ).
struct PairFin {
  float* dlam;
  int idx[kPairs];
  __device__ void operator()(int seg, const cuda::Vals<1>& v) const {
    float& d = dlam[idx[seg]];
    d = static_cast<float>(static_cast<double>(d) + v.v[0]);
  }
};

}  // namespace

void CudaBackend::wsum_forward(int J, int K, const float* lam, const uint8_t* live,
                               const std::vector<const Tensor*>& xs, const std::vector<Tensor*>& ys) {
  DSO_CHECK(J >= 0 && K >= 0 && static_cast<int64_t>(xs.size()) == K, "wsum_forward: xs has ", xs.size(),
            " entries, K=", K);
  DSO_CHECK(static_cast<int64_t>(ys.size()) == J, "wsum_forward: ys has ", ys.size(), " entries, J=", J);
  int64_t n = -1;
  for (int j = 0; j < J; ++j)
    for (int k = 0; k < K; ++k) {
      if (!live[j * K + k]) continue;
      const Tensor* t = xs[static_cast<size_t>(k)];
      DSO_CHECK(t != nullptr, "wsum_forward: live input ", k, " is null");
      if (n < 0) n = t->numel();
      DSO_CHECK(t->numel() == n, "wsum_forward: inputs differ in size");
      check_dev(*t, "wsum_forward");
    }
  for (int j = 0; j < J; ++j) {
    const Tensor* y = ys[static_cast<size_t>(j)];
    if (!y) continue;
    if (n < 0) n = y->numel();
    DSO_CHECK(y->numel() == n, "wsum_forward: output ", j, " has ", y->numel(), " elements, inputs ", n);
    check_dev(*y, "wsum_forward");
  }
  if (n <= 0) return;
  std::vector<const float*> in(static_cast<size_t>(K), nullptr);
  for (int k = 0; k < K; ++k)
    if (xs[static_cast<size_t>(k)]) in[static_cast<size_t>(k)] = xs[static_cast<size_t>(k)]->data();
  std::vector<km::WsRow> rows;
  for (int j = 0; j < J; ++j) {
    Tensor* y = ys[static_cast<size_t>(j)];
    if (!y) continue;
    km::WsRow r;
    r.out = y->data();
    for (int k = 0; k < K; ++k)
      if (live[j * K + k]) r.terms.emplace_back(k, lam[j * K + k]);
    if (r.terms.empty())  // a row without live entries gives zeros
      CUDA_CHECK(cudaMemsetAsync(y->data(), 0, y->bytes(), 0));
    else
      rows.push_back(std::move(r));
  }
  run_rows(rows, in, n);
}

void CudaBackend::wsum_backward(int J, int K, const float* lam, const uint8_t* live,
                                const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& dys,
                                const std::vector<Tensor*>& dxs, float* dlam) {
  DSO_CHECK(static_cast<int64_t>(dys.size()) == J && static_cast<int64_t>(dxs.size()) == K, "wsum_backward: dys has ",
            dys.size(), " entries (J=", J, "), dxs ", dxs.size(), " (K=", K, ")");
  int64_t n = -1;
  std::vector<const float*> dyp(static_cast<size_t>(J), nullptr);
  std::vector<km::WsRow> rows;  // per k with a dx: dx_k += Σ_j λ_jk·dy_j
  for (int k = 0; k < K; ++k) {
    Tensor* dxt = dxs[static_cast<size_t>(k)];
    km::WsRow r;
    r.accumulate = true;
    for (int j = 0; j < J; ++j) {
      if (!live[j * K + k]) continue;
      const Tensor* dyt = dys[static_cast<size_t>(j)];
      DSO_CHECK(dyt != nullptr, "wsum_backward: dys[", j, "] is null but (", j, ",", k, ") is live");
      if (n < 0) n = dyt->numel();
      DSO_CHECK(dyt->numel() == n, "wsum_backward: gradients differ in size");
      check_dev(*dyt, "wsum_backward");
      dyp[static_cast<size_t>(j)] = dyt->data();
      if (dxt) {
        DSO_CHECK(dxt->numel() == n, "wsum_backward: dxs[", k, "] has the wrong size");
        check_dev(*dxt, "wsum_backward");
        r.terms.emplace_back(j, lam[j * K + k]);
      }
    }
    if (!r.terms.empty()) {
      r.out = dxt->data();
      rows.push_back(std::move(r));
    }
  }
  struct Pair {
    const float* dy;
    const float* x;
    int idx;
  };
  std::vector<Pair> pairs;  // dλ wanted, in (j,k) order
  if (dlam)
    for (int j = 0; j < J; ++j)
      for (int k = 0; k < K; ++k) {
        if (!live[j * K + k]) continue;
        const Tensor* xt = xs[static_cast<size_t>(k)];
        DSO_CHECK(xt != nullptr && xt->numel() == n, "wsum_backward: xs[", k, "] is null or of the wrong size");
        check_dev(*xt, "wsum_backward");
        pairs.push_back({dys[static_cast<size_t>(j)]->data(), xt->data(), j * K + k});
      }
  if (n <= 0) return;
  run_rows(rows, dyp, n);
  for (size_t p0 = 0; p0 < pairs.size(); p0 += kPairs) {
    const size_t p1 = std::min(pairs.size(), p0 + kPairs);
    PairTerm term;
    PairFin fin;
    std::memset(&term, 0, sizeof(term));
    std::memset(&fin, 0, sizeof(fin));
    fin.dlam = dlam;
    for (size_t q = p0; q < p1; ++q) {
      term.a[q - p0] = pairs[q].dy;
      term.b[q - p0] = pairs[q].x;
      fin.idx[q - p0] = pairs[q].idx;
    }
    reduce<1>(static_cast<int>(p1 - p0), n, term, fin, "wsum_backward dlam");
  }
}

// ---- λ-scaled concatenation of the block output's 1×1 weights ------------------------------

namespace {

/// out[o, (j0+jj)·I + i] = s_jj·w_jj[o, i] (0 when s_jj == 0).
__global__ void concat_kernel(const __grid_constant__ km::CatArgs a, float* __restrict out, int64_t total, int64_t I,
                              int64_t J) {
  GRID_STRIDE(e, total) {
    int64_t jj, wi, ci;
    km::concat_index(a, e, I, J, &jj, &wi, &ci);
    const float sj = a.s[jj];
    out[ci] = sj == 0.f ? 0.f : sj * a.w[jj][wi];
  }
}

/// dw_jj[o, i] += s_jj·m[o, (j0+jj)·I + i] for the non-null dw.
__global__ void concat_bwd_kernel(const __grid_constant__ km::CatArgs a, const float* __restrict m, int64_t total,
                                  int64_t I, int64_t J) {
  GRID_STRIDE(e, total) {
    int64_t jj, wi, ci;
    km::concat_index(a, e, I, J, &jj, &wi, &ci);
    float* dw = a.dw[jj];
    if (dw) dw[wi] += a.s[jj] * m[ci];
  }
}

/// Σ_{o,i} w_jj[o,i]·m[o, (j0+jj)·I + i] for segment jj (term index q = o·I + i).
struct CatDotTerm {
  const float* w[kCat];
  const float* m;
  int64_t I, J;
  int j0;
  __device__ cuda::Vals<1> operator()(int jj, int64_t q) const {
    const int64_t o = q / I, i = q - o * I;
    return {{static_cast<double>(w[jj][q]) * static_cast<double>(m[o * J * I + (j0 + jj) * I + i])}};
  }
};

/// *dscale[jj] += float(Σ) (CpuBackend: `*ds += static_cast<float>(acc)`).
struct CatScaleFin {
  float* ds[kCat];
  __device__ void operator()(int jj, const cuda::Vals<1>& v) const {
    if (ds[jj]) *ds[jj] += static_cast<float>(v.v[0]);
  }
};

}  // namespace

void CudaBackend::concat_scaled_columns(const std::vector<const Tensor*>& ws, const float* scale, Tensor& out) {
  const int64_t J = static_cast<int64_t>(ws.size());
  DSO_CHECK(J > 0 && out.numel() > 0, "concat_scaled_columns: empty");
  const int64_t O = ws[0]->dim(0), I = ws[0]->numel() / O;
  DSO_CHECK(out.numel() == O * J * I, "concat_scaled_columns: out ", shape_str(out.shape()));
  check_dev(out, "concat_scaled_columns");
  for (int64_t j = 0; j < J; ++j) {
    DSO_CHECK(ws[static_cast<size_t>(j)]->numel() == O * I, "concat_scaled_columns: weight ", j);
    check_dev(*ws[static_cast<size_t>(j)], "concat_scaled_columns");
  }
  for (int64_t j0 = 0; j0 < J; j0 += kCat) {
    km::CatArgs a;
    std::memset(&a, 0, sizeof(a));
    a.j0 = static_cast<int>(j0);
    a.jn = static_cast<int>(std::min<int64_t>(kCat, J - j0));
    for (int jj = 0; jj < a.jn; ++jj) {
      a.w[jj] = ws[static_cast<size_t>(j0 + jj)]->data();
      a.s[jj] = scale[j0 + jj];
    }
    const int64_t total = O * a.jn * I;
    if (total == 0) continue;
    concat_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(a, out.data(), total, I, J);
    KERNEL_CHECK("concat_scaled_columns");
  }
}

void CudaBackend::concat_scaled_columns_backward(const std::vector<const Tensor*>& ws, const float* scale,
                                                 const Tensor& m, const std::vector<Tensor*>& dws,
                                                 const std::vector<float*>& dscale) {
  const int64_t J = static_cast<int64_t>(ws.size());
  DSO_CHECK(J > 0, "concat_scaled_columns_backward: empty");
  const int64_t O = ws[0]->dim(0), I = ws[0]->numel() / O;
  DSO_CHECK(m.numel() == O * J * I, "concat_scaled_columns_backward: m ", shape_str(m.shape()));
  check_dev(m, "concat_scaled_columns_backward");
  for (int64_t j = 0; j < J; ++j) {
    DSO_CHECK(ws[static_cast<size_t>(j)]->numel() == O * I, "concat_scaled_columns_backward: weight ", j);
    check_dev(*ws[static_cast<size_t>(j)], "concat_scaled_columns_backward");
    if (j < static_cast<int64_t>(dws.size()) && dws[static_cast<size_t>(j)]) {
      DSO_CHECK(dws[static_cast<size_t>(j)]->numel() == O * I, "concat_scaled_columns_backward: dws[", j, "]");
      check_dev(*dws[static_cast<size_t>(j)], "concat_scaled_columns_backward");
    }
  }
  if (O * I == 0) return;
  for (int64_t j0 = 0; j0 < J; j0 += kCat) {
    const int jn = static_cast<int>(std::min<int64_t>(kCat, J - j0));
    km::CatArgs a;
    std::memset(&a, 0, sizeof(a));
    a.j0 = static_cast<int>(j0);
    a.jn = jn;
    bool any_dw = false;
    CatDotTerm term;
    CatScaleFin fin;
    std::memset(&term, 0, sizeof(term));
    std::memset(&fin, 0, sizeof(fin));
    term.m = m.data();
    term.I = I;
    term.J = J;
    term.j0 = static_cast<int>(j0);
    bool any_ds = false;
    for (int jj = 0; jj < jn; ++jj) {
      const size_t j = static_cast<size_t>(j0 + jj);
      a.w[jj] = ws[j]->data();
      a.s[jj] = scale[j];
      a.dw[jj] = (j < dws.size() && dws[j]) ? dws[j]->data() : nullptr;
      any_dw = any_dw || a.dw[jj] != nullptr;
      term.w[jj] = ws[j]->data();
      fin.ds[jj] = j < dscale.size() ? dscale[j] : nullptr;
      any_ds = any_ds || fin.ds[jj] != nullptr;
    }
    // dscale first: it reads the weights, which the caller's dws never alias
    if (any_ds) reduce<1>(jn, O * I, term, fin, "concat_scaled_columns_backward dscale");
    if (any_dw) {
      const int64_t total = O * jn * I;
      concat_bwd_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(a, m.data(), total, I, J);
      KERNEL_CHECK("concat_scaled_columns_backward");
    }
  }
}

}  // namespace dsonas
