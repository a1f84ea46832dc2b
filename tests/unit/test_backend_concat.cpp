// test_backend_concat.cpp — Backend::concat_scaled_columns and its backward
// (the block output's λ-scaled 1×1 convolutions as one GEMM) against a naive
// reference and by finite differences of L = <r, out>.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/rng.hpp"
#include "test_util.hpp"

using namespace dsonas;

namespace {

struct ConcatCase {
  int O = 5, I = 3, J = 4;
  std::vector<std::vector<float>> w;  // J × [O, I]
  std::vector<float> scale;           // J
  std::vector<float> r;               // [O, J·I]
  ConcatCase() {
    Rng g(3, 4);
    w.assign(J, std::vector<float>(static_cast<size_t>(O * I)));
    for (auto& wj : w)
      for (float& v : wj) v = static_cast<float>(g.normal());
    scale = {0.7f, 0.f, 1.3f, 0.25f};  // one column block switched off
    r.resize(static_cast<size_t>(O * J * I));
    for (float& v : r) v = static_cast<float>(g.normal());
  }
  /// Naive reference: out[o, j·I + i] = scale[j]·w[j][o, i].
  std::vector<float> reference() const {
    std::vector<float> out(static_cast<size_t>(O * J * I));
    for (int o = 0; o < O; ++o)
      for (int j = 0; j < J; ++j)
        for (int i = 0; i < I; ++i) out[o * J * I + j * I + i] = scale[j] * w[j][o * I + i];
    return out;
  }
  double loss(const std::vector<float>& out) const {
    double l = 0;
    for (size_t k = 0; k < out.size(); ++k) l += double(r[k]) * out[k];
    return l;
  }
};

}  // namespace

TEST(BackendConcat, ForwardMatchesReference) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  ConcatCase s;
  std::vector<Tensor> wt;
  std::vector<const Tensor*> ws;
  for (auto& wj : s.w) {
    wt.push_back(be->alloc({s.O, s.I, 1, 1}));
    be->upload(wj.data(), wt.back());
  }
  for (auto& t : wt) ws.push_back(&t);
  Tensor out = be->alloc({s.O, s.J * s.I, 1, 1});
  be->fill(out, std::nanf(""));  // must be overwritten, scale 0 included
  be->concat_scaled_columns(ws, s.scale.data(), out);
  std::vector<float> got(static_cast<size_t>(out.numel()));
  be->download(out, got.data());
  std::vector<float> ref = s.reference();
  for (size_t k = 0; k < ref.size(); ++k) EXPECT_FLOAT_EQ(got[k], ref[k]) << k;
}

TEST(BackendConcat, BackwardByFiniteDifferences) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  ConcatCase s;
  std::vector<Tensor> wt, dwt;
  std::vector<const Tensor*> ws;
  std::vector<Tensor*> dws;
  Tensor ds = be->alloc({s.J});
  be->fill(ds, 0.5f);  // accumulates (+=)
  std::vector<float*> dscale;
  for (int j = 0; j < s.J; ++j) {
    wt.push_back(be->alloc({s.O, s.I, 1, 1}));
    be->upload(s.w[j].data(), wt.back());
    dwt.push_back(be->alloc({s.O, s.I, 1, 1}));
    be->fill(dwt.back(), 1.f);  // accumulates (+=)
  }
  for (int j = 0; j < s.J; ++j) {
    ws.push_back(&wt[j]);
    dws.push_back(j == 3 ? nullptr : &dwt[j]);  // null target skipped
    dscale.push_back(ds.data() + j);
  }
  Tensor m = be->alloc({s.O, s.J * s.I, 1, 1});
  be->upload(s.r.data(), m);  // ∂L/∂out = r
  be->concat_scaled_columns_backward(ws, s.scale.data(), m, dws, dscale);
  std::vector<float> dsh(static_cast<size_t>(s.J));
  be->download(ds, dsh.data());
  const double h = 1e-2;
  for (int j = 0; j < s.J; ++j) {
    ConcatCase p = s, q = s;
    p.scale[j] += static_cast<float>(h);
    q.scale[j] -= static_cast<float>(h);
    const double num = (s.loss(p.reference()) - s.loss(q.reference())) / (2 * h);  // linear in scale: exact
    EXPECT_NEAR(dsh[j] - 0.5, num, 1e-4 * (1 + std::fabs(num))) << "dscale " << j;
    if (j == 3) continue;
    std::vector<float> dw(static_cast<size_t>(s.O * s.I));
    be->download(dwt[j], dw.data());
    for (int k = 0; k < s.O * s.I; ++k) {
      ConcatCase a = s, b = s;
      a.w[j][k] += static_cast<float>(h);
      b.w[j][k] -= static_cast<float>(h);
      const double nw = (s.loss(a.reference()) - s.loss(b.reference())) / (2 * h);
      EXPECT_NEAR(dw[k] - 1.0, nw, 1e-4 * (1 + std::fabs(nw))) << "dw " << j << "," << k;
    }
  }
  std::vector<float> untouched(static_cast<size_t>(s.O * s.I));
  be->download(dwt[3], untouched.data());
  for (float v : untouched) EXPECT_EQ(v, 1.f);
}
