// test_backend_cpu.cpp — CpuBackend against naive references (naive_ref.hpp),
// finite differences (gradcheck.hpp), alpha/beta semantics and determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "../../src/backend/cpu/cpu_backend.hpp"  // the AVX-512 kernel switch (avx512_allow)
#include "../../src/backend/cpu/cpu_thread_pool.hpp"
#include "gradcheck.hpp"
#include "naive_ref.hpp"
#include "test_util.hpp"

namespace dsonas {
namespace {

using Vec = std::vector<float>;
using test::check_gradient;
using test::GradCheckOptions;

Vec rand_vec(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Vec v(n);
  for (auto& e : v) e = u(g);
  return v;
}

Tensor make(Backend& be, const Shape& s, const Vec& v) {
  Tensor t = be.alloc(s);
  EXPECT_EQ(static_cast<size_t>(t.numel()), v.size());
  be.upload(v.data(), t);
  return t;
}

Vec get(Backend& be, const Tensor& t) {
  Vec v(static_cast<size_t>(t.numel()));
  be.download(t, v.data());
  return v;
}

Vec get_nchw(Backend& be, const Tensor& t) {
  Vec v(static_cast<size_t>(t.numel()));
  be.act_to_nchw(t, v.data());
  return v;
}

void fill_nan(Backend& be, Tensor& t) { be.fill(t, std::numeric_limits<float>::quiet_NaN()); }

void expect_close(const Vec& got, const Vec& want, double atol, double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = atol + rtol * std::fabs(static_cast<double>(want[i]));
    if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= tol)) {
      if (bad++ < 5) ADD_FAILURE() << what << ": [" << i << "] got " << got[i] << " want " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

/// |got − want| ≤ tol (element-wise), the tolerances from naive_ref.hpp's error model.
void expect_within(const Vec& got, const Vec& want, const std::vector<double>& tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_EQ(tol.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= tol[i]) && bad++ < 5)
      ADD_FAILURE() << what << ": [" << i << "] got " << got[i] << " want " << want[i] << " (bound " << tol[i] << ")";
  EXPECT_EQ(bad, 0) << what;
}

/// Tolerances for out = alpha·Σ(n products) + beta·prior against a double reference:
/// |alpha|·(the sum's bound over `mag`) + 3u·(|alpha·sum| + |beta·prior|) (the scaling,
/// the addition and the reference's rounding to float) + `carried` (the prior's own
/// error, when it was itself a computed result).
std::vector<double> sum_tol(int64_t n, const Vec& mag, const Vec& sum, float alpha = 1.f, float beta = 0.f,
                            const Vec* prior = nullptr, const std::vector<double>* carried = nullptr) {
  std::vector<double> t(mag.size());
  const double u = ref::kUnitRoundoff;
  for (size_t i = 0; i < t.size(); ++i) {
    const double p = prior ? std::fabs(beta * static_cast<double>((*prior)[i])) : 0.0;
    t[i] = std::fabs(alpha) * ref::sum_bound(n, mag[i]) + 3 * u * (std::fabs(alpha * static_cast<double>(sum[i])) + p) +
           (carried ? std::fabs(beta) * (*carried)[i] : 0.0);
  }
  return t;
}

Vec lin(float a, const Vec& x, float b, const Vec& y) {
  Vec r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = a * x[i] + b * y[i];
  return r;
}

bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class CpuBackendTest : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> be = make_backend(Device::CPU, dsonas_test::test_threads());
};

// ---- basics -------------------------------------------------------------------------------

TEST_F(CpuBackendTest, Identity) {
  EXPECT_EQ(be->device(), Device::CPU);
  EXPECT_EQ(be->threads(), dsonas_test::test_threads());
  EXPECT_FALSE(be->name().empty());
  auto be0 = make_backend(Device::CPU, 0);
  EXPECT_GE(be0->threads(), 1);
}

TEST_F(CpuBackendTest, CudaWithoutAGpuFailsAsUsage) {
  // without CUDA compiled in: "built without CUDA"; with it but no device (CI):
  // "--device cuda: no usable GPU (…)"; both usage errors (exit 2)
  try {
    auto g = make_backend(Device::CUDA, 1);
    GTEST_SKIP() << "a GPU is present (" << g->name() << "): the no-GPU error cannot be provoked here";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitUsage);
    const std::string m = e.what();
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
    EXPECT_NE(m.find("--device cuda: no usable GPU"), std::string::npos) << m;
#else
    EXPECT_NE(m.find("without CUDA"), std::string::npos) << m;
#endif
  }
}

TEST_F(CpuBackendTest, GpuMathNamesAndCpuRefusal) {
  EXPECT_EQ(gpu_math_from("fp32"), GpuMath::FP32);
  EXPECT_EQ(gpu_math_from("tf32"), GpuMath::TF32);
  EXPECT_EQ(gpu_math_from("bf16"), GpuMath::BF16);
  for (GpuMath m : {GpuMath::FP32, GpuMath::TF32, GpuMath::BF16}) EXPECT_EQ(gpu_math_from(gpu_math_name(m)), m);
  try {
    gpu_math_from("fp16", "gpu-math");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitUsage);
    EXPECT_NE(std::string(e.what()).find("gpu-math: 'fp16' (expected fp32, tf32 or bf16)"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(make_backend(Device::CPU, 1, GpuMath::FP32)->device(), Device::CPU);
  for (GpuMath m : {GpuMath::TF32, GpuMath::BF16}) {
    try {
      make_backend(Device::CPU, 1, m);
      FAIL() << "expected an Error for " << gpu_math_name(m) << " on the CPU";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), kExitUsage);
      EXPECT_NE(std::string(e.what()).find(str("--gpu-math ", gpu_math_name(m), ": only --device cuda")),
                std::string::npos)
          << e.what();
    }
  }
}

TEST_F(CpuBackendTest, MemoryAndLayout) {
  const int N = 2, C = 3, H = 5, W = 7;
  Vec x = rand_vec(static_cast<size_t>(N) * C * H * W, 1);
  Tensor t = be->act_from_nchw(x.data(), N, C, H, W);
  ASSERT_EQ(t.shape(), (Shape{C, N, H, W}));
  // element (c,n,h,w) at ((c*N+n)*H+h)*W+w
  Vec raw = get(*be, t);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w)
          ASSERT_EQ(raw[static_cast<size_t>(((c * N + n) * H + h) * W + w)],
                    x[static_cast<size_t>(((n * C + c) * H + h) * W + w)]);
  EXPECT_TRUE(same_bits(get_nchw(*be, t), x));
  Tensor u = be->alloc(t.shape());
  be->copy(t, u);
  EXPECT_TRUE(same_bits(get(*be, u), raw));
  be->fill(u, 2.5f);
  for (float v : get(*be, u)) ASSERT_EQ(v, 2.5f);
  Tensor big = be->alloc({100000});
  be->fill(big, -1.f);
  for (float v : get(*be, big)) ASSERT_EQ(v, -1.f);
}

TEST_F(CpuBackendTest, Elementwise) {
  for (size_t n : {size_t(37), size_t(70001)}) {
    Vec a = rand_vec(n, 2), b = rand_vec(n, 3);
    Tensor ta = make(*be, {static_cast<int64_t>(n)}, a), tb = make(*be, {static_cast<int64_t>(n)}, b);
    Tensor ty = be->alloc({static_cast<int64_t>(n)});
    be->add(ta, tb, ty);
    expect_close(get(*be, ty), lin(1, a, 1, b), 0, 0, "add");
    be->axpy(-0.5f, ta, tb);
    expect_close(get(*be, tb), lin(-0.5f, a, 1, b), 1e-7, 1e-6, "axpy");
    be->upload(b.data(), tb);
    float acc = 1.5f;
    be->dot_accumulate(ta, tb, &acc);
    EXPECT_NEAR(acc, 1.5 + test::dot(a, b), 1e-4 * (1 + std::sqrt(static_cast<double>(n))));
    EXPECT_NEAR(be->sum_squares(ta), test::dot(a, a), 1e-9 * static_cast<double>(n));
    be->copy(ta, ty);
    be->clip(ty, -0.25f, 0.5f);
    Vec c = get(*be, ty);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(c[i], std::min(0.5f, std::max(-0.25f, a[i])));
    EXPECT_TRUE(be->all_finite(ta));
    Vec bad = a;
    bad[n - 1] = std::numeric_limits<float>::infinity();
    be->upload(bad.data(), ty);
    EXPECT_FALSE(be->all_finite(ty));
    bad[n - 1] = 0.f;
    bad[n / 2] = std::numeric_limits<float>::quiet_NaN();
    be->upload(bad.data(), ty);
    EXPECT_FALSE(be->all_finite(ty));
    bad[n / 2] = -std::numeric_limits<float>::infinity();
    be->upload(bad.data(), ty);
    EXPECT_FALSE(be->all_finite(ty));
  }
}

// ---- convolution ------------------------------------------------------------------------------

struct ConvCase {
  int cin, cout, k, s, p, groups, N, H, W;
};

std::string conv_name(const ConvCase& c) {
  return str("cin", c.cin, " cout", c.cout, " k", c.k, " s", c.s, " p", c.p, " g", c.groups, " N", c.N, " H", c.H, " W",
             c.W);
}

void PrintTo(const ConvCase& c, std::ostream* os) { *os << conv_name(c); }

class ConvTest : public CpuBackendTest, public ::testing::WithParamInterface<ConvCase> {};

TEST_P(ConvTest, MatchesNaiveAndFiniteDifferences) {
  const ConvCase cc = GetParam();
  SCOPED_TRACE(conv_name(cc));
  ConvDesc d;
  d.cin = cc.cin;
  d.cout = cc.cout;
  d.k = cc.k;
  d.stride = cc.s;
  d.pad = cc.p;
  d.groups = cc.groups;
  const ref::Conv rd{cc.cin, cc.cout, cc.k, cc.s, cc.p, cc.groups};
  const int N = cc.N, H = cc.H, W = cc.W, Ho = d.out_size(H), Wo = d.out_size(W);
  Vec x = rand_vec(static_cast<size_t>(N) * cc.cin * H * W, 11);
  Vec w = rand_vec(static_cast<size_t>(shape_numel(d.weight_shape())), 12);
  Vec dy = rand_vec(static_cast<size_t>(N) * cc.cout * Ho * Wo, 13);
  Tensor tx = be->act_from_nchw(x.data(), N, cc.cin, H, W);
  Tensor tw = make(*be, d.weight_shape(), w);
  Tensor tdy = be->act_from_nchw(dy.data(), N, cc.cout, Ho, Wo);
  // Error model (naive_ref.hpp): each output is a sum of at most n products, bounded
  // through the same reference run on |x|, |w|, |dy|.
  const Vec ax = ref::abs_of(x), aw = ref::abs_of(w), ady = ref::abs_of(dy);
  const int64_t n_fwd = static_cast<int64_t>(rd.cin_per_group()) * cc.k * cc.k;
  const int64_t n_data = static_cast<int64_t>(rd.cout_per_group()) * cc.k * cc.k;
  const int64_t n_filter = static_cast<int64_t>(N) * Ho * Wo;

  // forward, beta = 0 overwrites NaN garbage
  Tensor ty = be->alloc({cc.cout, N, Ho, Wo});
  fill_nan(*be, ty);
  be->conv_forward(d, tx, tw, ty);
  const Vec yref = ref::conv_fwd(rd, x, w, N, H, W), ymag = ref::conv_fwd(rd, ax, aw, N, H, W);
  expect_within(get_nchw(*be, ty), yref, sum_tol(n_fwd, ymag, yref), "conv_forward");
  // alpha/beta
  Vec y0 = rand_vec(yref.size(), 14);
  Tensor ty2 = be->act_from_nchw(y0.data(), N, cc.cout, Ho, Wo);
  be->conv_forward(d, tx, tw, ty2, 0.5f, 2.f);
  expect_within(get_nchw(*be, ty2), lin(0.5f, yref, 2.f, y0), sum_tol(n_fwd, ymag, yref, 0.5f, 2.f, &y0),
                "conv_forward alpha/beta");

  // backward data
  Tensor tdx = be->alloc(tx.shape());
  fill_nan(*be, tdx);
  be->conv_backward_data(d, tdy, tw, tdx);
  const Vec dxref = ref::conv_bwd_data(rd, dy, w, N, H, W), dxmag = ref::conv_bwd_data(rd, ady, aw, N, H, W);
  expect_within(get_nchw(*be, tdx), dxref, sum_tol(n_data, dxmag, dxref), "conv_backward_data");
  Vec dx0 = rand_vec(dxref.size(), 15);
  Tensor tdx2 = be->act_from_nchw(dx0.data(), N, cc.cin, H, W);
  be->conv_backward_data(d, tdy, tw, tdx2, 1.f, 1.f);
  const Vec dx1 = lin(1.f, dxref, 1.f, dx0);
  const std::vector<double> tol1 = sum_tol(n_data, dxmag, dxref, 1.f, 1.f, &dx0);
  expect_within(get_nchw(*be, tdx2), dx1, tol1, "conv_backward_data beta=1");
  be->conv_backward_data(d, tdy, tw, tdx2, -2.f, 0.5f);
  expect_within(get_nchw(*be, tdx2), lin(-2.f, dxref, 0.5f, dx1),
                sum_tol(n_data, dxmag, dxref, -2.f, 0.5f, &dx1, &tol1), "conv_backward_data alpha/beta");

  // backward filter
  Tensor tdw = be->alloc(tw.shape());
  fill_nan(*be, tdw);
  be->conv_backward_filter(d, tx, tdy, tdw);
  const Vec dwref = ref::conv_bwd_filter(rd, x, dy, N, H, W), dwmag = ref::conv_bwd_filter(rd, ax, ady, N, H, W);
  expect_within(get(*be, tdw), dwref, sum_tol(n_filter, dwmag, dwref), "conv_backward_filter");
  Vec dw0 = rand_vec(dwref.size(), 16);
  Tensor tdw2 = make(*be, tw.shape(), dw0);
  be->conv_backward_filter(d, tx, tdy, tdw2, 2.f, 1.f);
  expect_within(get(*be, tdw2), lin(2.f, dwref, 1.f, dw0), sum_tol(n_filter, dwmag, dwref, 2.f, 1.f, &dw0),
                "conv_backward_filter alpha/beta");

  // finite differences of L = <dy, conv(x, w)> (small cases only)
  if (x.size() <= 2000) {
    Tensor tyf = be->alloc({cc.cout, N, Ho, Wo});
    auto loss = [&] {
      be->conv_forward(d, tx, tw, tyf);
      return test::dot(dy, get_nchw(*be, tyf));
    };
    GradCheckOptions o;
    o.max_coords = 60;
    // gradient wrt x, in CNHW order like tx's storage
    Vec gx = get(*be, tdx);
    auto rx = check_gradient(tx.data(), gx.size(), gx.data(), loss, o);
    EXPECT_TRUE(rx.ok()) << "dx: " << rx.summary();
    Vec gw = get(*be, tdw);
    auto rw = check_gradient(tw.data(), gw.size(), gw.data(), loss, o);
    EXPECT_TRUE(rw.ok()) << "dw: " << rw.summary();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvTest,
    ::testing::Values(ConvCase{3, 3, 3, 1, 1, 3, 2, 5, 7},     // depthwise 3x3
                      ConvCase{3, 3, 5, 1, 2, 3, 2, 5, 7},     // depthwise 5x5
                      ConvCase{3, 3, 3, 2, 1, 3, 2, 7, 9},     // depthwise 3x3 stride 2
                      ConvCase{4, 4, 5, 2, 2, 4, 2, 5, 7},     // depthwise 5x5 stride 2
                      ConvCase{3, 3, 3, 1, 0, 3, 1, 4, 6},     // depthwise, no pad
                      ConvCase{3, 3, 3, 1, 2, 3, 2, 5, 7},     // depthwise, pad k-1
                      ConvCase{2, 2, 7, 1, 3, 2, 2, 9, 17},    // depthwise 7x7
                      ConvCase{2, 2, 1, 1, 0, 2, 2, 5, 7},     // depthwise 1x1
                      ConvCase{3, 4, 1, 1, 0, 1, 2, 5, 7},     // pointwise
                      ConvCase{3, 4, 1, 2, 0, 1, 2, 5, 7},     // 1x1 stride 2
                      ConvCase{3, 4, 3, 1, 1, 1, 2, 5, 7},     // 3x3 dense
                      ConvCase{3, 4, 3, 2, 1, 1, 2, 5, 7},     // 3x3 stride 2 odd
                      ConvCase{2, 5, 3, 2, 1, 1, 3, 8, 6},     // 3x3 stride 2 even
                      ConvCase{5, 6, 1, 1, 0, 1, 6, 28, 28},   // pointwise, several column blocks/chunks
                      ConvCase{4, 3, 3, 2, 1, 1, 13, 12, 12},  // dense, several image chunks
                      ConvCase{4, 6, 1, 2, 0, 1, 13, 9, 9},    // 1x1 s2, several chunks
                      ConvCase{6, 6, 5, 1, 2, 6, 5, 28, 28},   // depthwise, bench-like
                      ConvCase{2, 2, 3, 1, 1, 2, 2, 5, 37},    // depthwise, rows of 5 vectors (overlap)
                      ConvCase{2, 2, 5, 1, 2, 2, 2, 4, 45},    // depthwise 5x5, rows of 6 vectors
                      // 1x1 with N·H·W a multiple of 16: the AVX-512 kernels where the CPU has them
                      ConvCase{48, 16, 1, 1, 0, 1, 4, 8, 8},     // 16 outputs (F, D, G)
                      ConvCase{24, 32, 1, 1, 0, 1, 2, 4, 8},     // 32 outputs: two row groups
                      ConvCase{7, 21, 1, 1, 0, 1, 3, 4, 4},      // 21 outputs: every kernel with a tail group
                      ConvCase{12, 100, 1, 1, 0, 1, 1, 4, 4}));  // 100 outputs: 7 row groups, the last of 4

TEST_F(CpuBackendTest, ConvDeterministicAndThreadIndependent) {
  auto be1 = make_backend(Device::CPU, dsonas_test::other_threads());
  struct C {
    ConvDesc d;
    int N, H, W;
  };
  std::vector<C> cases;
  ConvDesc dw{16, 16, 3, 1, 1, 16}, pw{16, 16, 1, 1, 0, 1}, dn{8, 16, 3, 2, 1, 1};
  cases.push_back({dw, 16, 28, 28});
  cases.push_back({pw, 16, 28, 28});
  cases.push_back({dn, 16, 16, 16});
  for (const C& c : cases) {
    const int Ho = c.d.out_size(c.H), Wo = c.d.out_size(c.W);
    Tensor x = make(*be, {c.d.cin, c.N, c.H, c.W}, rand_vec(static_cast<size_t>(c.d.cin) * c.N * c.H * c.W, 21));
    Tensor dy = make(*be, {c.d.cout, c.N, Ho, Wo}, rand_vec(static_cast<size_t>(c.d.cout) * c.N * Ho * Wo, 22));
    Tensor w = make(*be, c.d.weight_shape(), rand_vec(static_cast<size_t>(shape_numel(c.d.weight_shape())), 23));
    Tensor dw1 = be->alloc(w.shape()), dw2 = be->alloc(w.shape()), dw3 = be->alloc(w.shape());
    be->conv_backward_filter(c.d, x, dy, dw1);
    be->conv_backward_filter(c.d, x, dy, dw2);
    be1->conv_backward_filter(c.d, x, dy, dw3);
    EXPECT_TRUE(same_bits(get(*be, dw1), get(*be, dw2)));
    EXPECT_TRUE(same_bits(get(*be, dw1), get(*be, dw3))) << be->threads() << " vs " << be1->threads() << " threads";
    Tensor y1 = be->alloc(dy.shape()), y2 = be->alloc(dy.shape());
    be->conv_forward(c.d, x, w, y1);
    be1->conv_forward(c.d, x, w, y2);
    EXPECT_TRUE(same_bits(get(*be, y1), get(*be, y2)))
        << "forward, " << be->threads() << " vs " << be1->threads() << " threads";
  }
}

// The stride-1 plane kernels have two forms: the flattened AVX-512 kernels
// (cpu_corr_avx512.cpp) and the 8-wide ones (corr_plane, maxpool_bwd_plane_s1).
// Both sum every output's taps in the same order with FMA (or take the max with
// strict >, or gather by argmax code in the same order), so they must agree bit
// for bit: depthwise forward and backward-data, max and average pooling forward
// and backward (max also with many ties), with alpha/beta, on plane sizes that
// hit every edge case (rows shorter than 8 and 16, odd row counts, rows of
// several vectors, 1×1 planes).
TEST_F(CpuBackendTest, CorrAvx512MatchesAvx2) {
  if (!cpu::avx512_available()) GTEST_SKIP() << "no AVX-512 on this CPU (or DSONAS_CPU_AVX512=0): one form only";
  struct Shape2 {
    int H, W;
  };
  const std::vector<Shape2> planes = {{28, 28}, {14, 14}, {7, 7}, {5, 7}, {9, 17}, {6, 45}, {1, 1}, {2, 3}, {16, 16}};
  const int C = 3, N = 2;
  uint32_t seed = 300;
  for (const Shape2& pl : planes)
    for (int k : {1, 2, 3, 5, 7})
      for (int p : {k / 2, k - 1, 0}) {
        ConvDesc d{C, C, k, 1, p, C};
        const int Ho = d.out_size(pl.H), Wo = d.out_size(pl.W);
        if (Ho < 1 || Wo < 1) continue;
        SCOPED_TRACE(str("plane ", pl.H, "x", pl.W, " k", k, " p", p));
        const Vec xv = rand_vec(static_cast<size_t>(C) * N * pl.H * pl.W, ++seed);
        const Vec dyv = rand_vec(static_cast<size_t>(C) * N * Ho * Wo, ++seed);
        const Vec wv = rand_vec(static_cast<size_t>(C) * k * k, ++seed);
        const Vec y0 = rand_vec(dyv.size(), ++seed), dx0 = rand_vec(xv.size(), ++seed);
        Tensor x = make(*be, {C, N, pl.H, pl.W}, xv), dy = make(*be, {C, N, Ho, Wo}, dyv),
               w = make(*be, {C, 1, k, k}, wv);
        std::vector<Vec> out[2];
        for (int z = 0; z < 2; ++z) {
          cpu::avx512_allow(z == 0);
          for (auto [alpha, beta] :
               {std::pair<float, float>{1.f, 0.f}, {0.7f, 0.3f}, {1.f, 1.f}, {1.f, 0.6f}, {-1.3f, 0.f}}) {
            Tensor y = make(*be, dy.shape(), y0), dx = make(*be, x.shape(), dx0);
            be->conv_forward(d, x, w, y, alpha, beta);
            be->conv_backward_data(d, dy, w, dx, alpha, beta);
            out[z].push_back(get(*be, y));
            out[z].push_back(get(*be, dx));
          }
          for (PoolKind kind : {PoolKind::Max, PoolKind::Avg}) {
            PoolDesc pd;
            pd.kind = kind;
            pd.k = k;
            pd.stride = 1;
            pd.pad = p;
            Tensor y = be->alloc(dy.shape());
            be->pool_forward(pd, x, y);
            out[z].push_back(get(*be, y));
            for (float beta : {0.f, 1.f, 0.3f}) {
              Tensor dx = make(*be, x.shape(), dx0);
              be->pool_backward(pd, x, y, dy, dx, beta);
              out[z].push_back(get(*be, dx));
            }
          }
          {  // max pooling with many ties (values −0, +0, 1, 2): the first maximum takes the gradient
            PoolDesc pd;
            pd.k = k;
            pd.stride = 1;
            pd.pad = p;
            Vec tv(xv.size());
            for (size_t i = 0; i < tv.size(); ++i) {
              const uint32_t q = (static_cast<uint32_t>(i) * 2654435761u >> 7) % 4;
              tv[i] = q == 0 ? -0.f : static_cast<float>(q - 1);
            }
            Tensor xt = make(*be, x.shape(), tv), y = be->alloc(dy.shape()), dx = make(*be, x.shape(), dx0);
            be->pool_forward(pd, xt, y);
            be->pool_backward(pd, xt, y, dy, dx, 1.f);
            out[z].push_back(get(*be, y));
            out[z].push_back(get(*be, dx));
          }
        }
        cpu::avx512_allow(true);
        ASSERT_EQ(out[0].size(), out[1].size());
        for (size_t i = 0; i < out[0].size(); ++i) EXPECT_TRUE(same_bits(out[0][i], out[1][i])) << "result " << i;
      }
}

// The kernels' thread pool (cpu_thread_pool.hpp): every chunk runs exactly once,
// jobs back to back (workers arriving late must not take chunks of a later
// job), nested calls run serially, and an exception in a chunk reaches the
// caller after the job's other chunks have run.  The last round has fewer
// threads than the pool has workers by then: those must not take chunks (their
// tid would index past per-thread scratch).
TEST(CpuPool, ChunksOnceNestedAndExceptions) {
  for (int nt : {1, 2, 3, 2}) {
    SCOPED_TRACE(nt);
    std::vector<int> hits(997, 0);
    for (int rep = 0; rep < 2000; ++rep) {
      const int64_t n = 1 + rep % 97;
      cpu::par_for(nt, n, [&](int64_t i, int tid) {
        EXPECT_GE(tid, 0);
        EXPECT_LT(tid, nt);
        ++hits[static_cast<size_t>(i)];
      });
    }
    int64_t want_total = 0;
    for (int rep = 0; rep < 2000; ++rep) want_total += 1 + rep % 97;
    int64_t total = 0;
    for (size_t i = 0; i < hits.size(); ++i) {
      int want = 0;
      for (int rep = 0; rep < 2000; ++rep) want += static_cast<int64_t>(i) < 1 + rep % 97;
      EXPECT_EQ(hits[i], want) << i;
      total += hits[i];
    }
    EXPECT_EQ(total, want_total);
    // nested
    std::vector<int64_t> sums(64, 0);
    cpu::par_for(nt, 64, [&](int64_t i, int) {
      int64_t s = 0;
      cpu::par_for(nt, 10, [&](int64_t j, int) { s += j; });
      sums[static_cast<size_t>(i)] = s;
    });
    for (int64_t v : sums) EXPECT_EQ(v, 45);
    // exceptions
    std::vector<int> done(50, 0);
    EXPECT_THROW(cpu::par_for(nt, 50,
                              [&](int64_t i, int) {
                                done[static_cast<size_t>(i)] = 1;
                                if (i == 7) throw std::runtime_error("chunk 7");
                              }),
                 std::runtime_error);
    for (int v : done) EXPECT_EQ(v, 1);
  }
}

// The AVX-512 1×1 kernels (cpu_gemm1x1.cpp) against the OpenBLAS path on the
// bench's block-output shapes (256 -> 16 and 16 -> 16 channels, 28×28), on widths
// that are not multiples of 16 (a retrain width chosen for a MAC target: 27, 54,
// 108; 18 -> 100), and thread-count independence of both.
TEST_F(CpuBackendTest, Gemm1x1Avx512MatchesBlas) {
  if (!cpu::avx512_available()) GTEST_SKIP() << "no AVX-512 on this CPU";
  auto be1 = make_backend(Device::CPU, dsonas_test::other_threads());
  const std::pair<int, int> shapes[] = {{256, 16}, {16, 16}, {27, 27}, {54, 54}, {108, 108}, {18, 100}};
  for (const auto& [cin, cout] : shapes) {
    SCOPED_TRACE(str("cin ", cin, ", cout ", cout));
    ConvDesc d{cin, cout, 1, 1, 0, 1};
    const int N = cin * cout > 4096 ? 2 : 6, H = 28, W = 28;
    Tensor x = make(*be, {cin, N, H, W}, rand_vec(static_cast<size_t>(cin) * N * H * W, 31));
    Tensor dy = make(*be, {cout, N, H, W}, rand_vec(static_cast<size_t>(cout) * N * H * W, 32));
    Tensor w = make(*be, d.weight_shape(), rand_vec(static_cast<size_t>(cout) * cin, 33));
    Vec out[2][3], out1[3];
    for (int blas = 0; blas < 2; ++blas) {
      cpu::avx512_allow(blas == 0);
      for (int t = 0; t < (blas ? 1 : 2); ++t) {
        Backend& b = t ? *be1 : *be;
        Vec* o = t ? out1 : out[blas];
        Tensor y = b.alloc(dy.shape()), dx = b.alloc(x.shape()), dw = b.alloc(w.shape());
        b.conv_forward(d, x, w, y);
        b.conv_backward_data(d, dy, w, dx);
        b.conv_backward_filter(d, x, dy, dw);
        o[0] = get(b, y);
        o[1] = get(b, dx);
        o[2] = get(b, dw);
      }
    }
    cpu::avx512_allow(true);
    // Two float results of the same sums differ by at most twice the error model's
    // bound (naive_ref.hpp); the magnitudes Σ|a·b| are the products of |W|, |X|, |dY|
    // (CNHW: X is [cin, N·H·W], dY [cout, N·H·W], W [cout, cin]).
    const int64_t P = static_cast<int64_t>(N) * H * W;
    auto absmm = [](const Vec& A, bool ta, const Vec& B, bool tb, int64_t M, int64_t K, int64_t Nn) {
      Vec C(static_cast<size_t>(M * Nn));
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < Nn; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < K; ++k)
            acc += std::fabs(static_cast<double>(A[static_cast<size_t>(ta ? k * M + i : i * K + k)])) *
                   std::fabs(B[static_cast<size_t>(tb ? j * K + k : k * Nn + j)]);
          C[static_cast<size_t>(i * Nn + j)] = static_cast<float>(acc);
        }
      return C;
    };
    const Vec hx = get(*be, x), hdy = get(*be, dy), hw = get(*be, w);
    const Vec mag_y = absmm(hw, false, hx, false, cout, cin, P), mag_dx = absmm(hw, true, hdy, false, cin, cout, P),
              mag_dw = absmm(hdy, false, hx, true, cout, P, cin);
    auto twice = [](std::vector<double> t) {
      for (double& v : t) v *= 2;
      return t;
    };
    expect_within(out[0][0], out[1][0], twice(sum_tol(cin, mag_y, out[1][0])), "forward");
    expect_within(out[0][1], out[1][1], twice(sum_tol(cout, mag_dx, out[1][1])), "backward data");
    expect_within(out[0][2], out[1][2], twice(sum_tol(P, mag_dw, out[1][2])), "backward filter");
    for (int q = 0; q < 3; ++q)
      EXPECT_TRUE(same_bits(out[0][q], out1[q]))
          << q << ": " << be->threads() << " vs " << be1->threads() << " threads";
  }
}

TEST_F(CpuBackendTest, ConvRejectsBadShapes) {
  ConvDesc d{3, 4, 3, 1, 1, 1};
  Tensor x = be->alloc({3, 2, 5, 5}), w = be->alloc({4, 3, 3, 3}), y = be->alloc({4, 2, 4, 5});
  EXPECT_THROW(be->conv_forward(d, x, w, y), Error);
  ConvDesc g{4, 4, 3, 1, 1, 2};
  Tensor x4 = be->alloc({4, 2, 5, 5}), w4 = be->alloc({4, 2, 3, 3}), y4 = be->alloc({4, 2, 5, 5});
  EXPECT_THROW(be->conv_forward(g, x4, w4, y4), Error);
}

// ---- pooling ----------------------------------------------------------------------------------

struct PoolCase {
  bool max;
  int k, s, p, H, W;
};

void PrintTo(const PoolCase& c, std::ostream* os) {
  *os << (c.max ? "max" : "avg") << " k" << c.k << " s" << c.s << " p" << c.p << " H" << c.H << " W" << c.W;
}

class PoolTest : public CpuBackendTest, public ::testing::WithParamInterface<PoolCase> {};

TEST_P(PoolTest, MatchesNaiveAndFiniteDifferences) {
  const PoolCase pc = GetParam();
  SCOPED_TRACE(str(pc.max ? "max" : "avg", " k", pc.k, " s", pc.s, " p", pc.p, " H", pc.H, " W", pc.W));
  PoolDesc d;
  d.kind = pc.max ? PoolKind::Max : PoolKind::Avg;
  d.k = pc.k;
  d.stride = pc.s;
  d.pad = pc.p;
  const ref::Pool rd{pc.max, pc.k, pc.s, pc.p};
  const int N = 2, C = 3, H = pc.H, W = pc.W, Ho = d.out_size(H), Wo = d.out_size(W), P = N * C;
  Vec x = rand_vec(static_cast<size_t>(P) * H * W, 31);
  Vec dy = rand_vec(static_cast<size_t>(P) * Ho * Wo, 32);
  Tensor tx = be->act_from_nchw(x.data(), N, C, H, W);
  Tensor ty = be->alloc({C, N, Ho, Wo});
  fill_nan(*be, ty);
  be->pool_forward(d, tx, ty);
  expect_close(get_nchw(*be, ty), ref::pool_fwd(rd, x, P, H, W), 1e-6, 1e-5, "pool_forward");
  Tensor tdy = be->act_from_nchw(dy.data(), N, C, Ho, Wo);
  Tensor tdx = be->alloc(tx.shape());
  fill_nan(*be, tdx);
  be->pool_backward(d, tx, ty, tdy, tdx);
  const Vec dxref = ref::pool_bwd(rd, x, dy, P, H, W);
  expect_close(get_nchw(*be, tdx), dxref, 1e-6, 1e-5, "pool_backward");
  Vec dx0 = rand_vec(dxref.size(), 33);
  Tensor tdx2 = be->act_from_nchw(dx0.data(), N, C, H, W);
  be->pool_backward(d, tx, ty, tdy, tdx2, 1.f);
  expect_close(get_nchw(*be, tdx2), lin(1, dxref, 1, dx0), 1e-6, 1e-5, "pool_backward beta=1");

  // Ties: values from {0,1,2} make many; gradient goes to the first max (h, then w).
  Vec xt(x.size());
  std::mt19937 g(34);
  for (auto& v : xt) v = static_cast<float>(g() % 3);
  Tensor txt = be->act_from_nchw(xt.data(), N, C, H, W);
  be->pool_forward(d, txt, ty);
  be->pool_backward(d, txt, ty, tdy, tdx);
  expect_close(get_nchw(*be, tdx), ref::pool_bwd(rd, xt, dy, P, H, W), 1e-6, 1e-5, "pool_backward ties");

  // Finite differences with kink skipping (argmax changes).
  be->pool_backward(d, tx, ty, tdy, tdx);  // ty is stale but only used for max: recompute
  be->pool_forward(d, tx, ty);
  be->pool_backward(d, tx, ty, tdy, tdx);
  Tensor tyf = be->alloc(ty.shape());
  auto loss = [&] {
    be->pool_forward(d, tx, tyf);
    return test::dot(dy, get_nchw(*be, tyf));
  };
  test::StateFn state = nullptr;
  if (pc.max)
    state = [&] {
      Vec xn = get_nchw(*be, tx);
      std::vector<int> am = ref::pool_argmax(rd, xn, P, H, W);
      std::vector<uint8_t> s(am.size() * sizeof(int));
      std::memcpy(s.data(), am.data(), s.size());
      return s;
    };
  GradCheckOptions o;
  o.h = 1e-3;
  o.max_coords = 150;
  Vec gx = get(*be, tdx);
  auto r = check_gradient(tx.data(), gx.size(), gx.data(), loss, o, state);
  EXPECT_TRUE(r.ok()) << r.summary();
}

INSTANTIATE_TEST_SUITE_P(Shapes, PoolTest,
                         ::testing::Values(PoolCase{true, 3, 1, 1, 5, 7}, PoolCase{false, 3, 1, 1, 5, 7},
                                           PoolCase{true, 3, 2, 1, 5, 7}, PoolCase{false, 3, 2, 1, 5, 7},
                                           PoolCase{true, 2, 2, 0, 5, 7}, PoolCase{false, 2, 2, 0, 6, 4},
                                           PoolCase{true, 3, 2, 0, 7, 5}, PoolCase{false, 5, 1, 2, 6, 7},
                                           PoolCase{true, 5, 2, 2, 9, 6}, PoolCase{true, 5, 1, 2, 6, 7},
                                           PoolCase{true, 2, 1, 0, 5, 9}, PoolCase{false, 2, 1, 1, 4, 11},
                                           PoolCase{true, 3, 1, 1, 28, 28}, PoolCase{true, 3, 1, 0, 9, 17},
                                           PoolCase{true, 3, 1, 1, 5, 37}, PoolCase{false, 3, 1, 1, 6, 45}));

// ---- batch-norm ------------------------------------------------------------------------------

class BnTest : public CpuBackendTest, public ::testing::WithParamInterface<bool> {};

TEST_P(BnTest, TrainInferBackward) {
  const bool relu = GetParam();
  SCOPED_TRACE(relu ? "relu" : "no relu");
  const int N = 2, C = 3, H = 5, W = 7, HW = H * W, M = N * HW;
  const float eps = 2e-5f, mom = 0.9f;
  Vec x = rand_vec(static_cast<size_t>(N) * C * HW, 41, -1.f, 2.f);
  for (int n = 0; n < N; ++n)  // give channel 2 an offset and scale
    for (int i = 0; i < HW; ++i)
      x[static_cast<size_t>((n * C + 2) * HW + i)] = 3.f + 4.f * x[static_cast<size_t>((n * C + 2) * HW + i)];
  Vec gamma = {1.f, 0.5f, -1.5f}, beta = {0.1f, -0.2f, 0.3f};
  Vec rm0 = {0.5f, -0.5f, 1.f}, rv0 = {1.f, 2.f, 0.5f};
  Tensor tx = be->act_from_nchw(x.data(), N, C, H, W);
  Tensor tg = make(*be, {C}, gamma), tb = make(*be, {C}, beta);
  Tensor trm = make(*be, {C}, rm0), trv = make(*be, {C}, rv0);
  Tensor ty = be->alloc(tx.shape()), tsm = be->alloc({C}), tsi = be->alloc({C});
  fill_nan(*be, ty);
  be->bn_forward_train(tx, tg, tb, trm, trv, mom, eps, ty, tsm, tsi, relu);
  std::vector<double> m, v;
  Vec yref = ref::bn_train(x, gamma, beta, N, C, HW, eps, relu, &m, &v);
  expect_close(get_nchw(*be, ty), yref, 1e-5, 1e-5, "bn_forward_train");
  Vec sm = get(*be, tsm), si = get(*be, tsi), rm = get(*be, trm), rv = get(*be, trv);
  for (int c = 0; c < C; ++c) {
    EXPECT_NEAR(sm[static_cast<size_t>(c)], m[static_cast<size_t>(c)], 1e-6);
    EXPECT_NEAR(si[static_cast<size_t>(c)], 1.0 / std::sqrt(v[static_cast<size_t>(c)] + eps), 1e-5);
    EXPECT_NEAR(rm[static_cast<size_t>(c)], mom * rm0[static_cast<size_t>(c)] + (1 - mom) * m[static_cast<size_t>(c)],
                1e-6);
    EXPECT_NEAR(rv[static_cast<size_t>(c)],
                mom * rv0[static_cast<size_t>(c)] + (1 - mom) * v[static_cast<size_t>(c)] * M / (M - 1.0), 1e-5);
  }

  // inference
  Tensor tyi = be->alloc(tx.shape());
  be->bn_forward_infer(tx, tg, tb, trm, trv, eps, tyi, relu);
  expect_close(get_nchw(*be, tyi), ref::bn_infer(x, gamma, beta, rm, rv, N, C, HW, eps, relu), 1e-5, 1e-5,
               "bn_forward_infer");

  // backward by finite differences of L = <r, y> wrt x, gamma, beta
  Vec r = rand_vec(x.size(), 42);
  Tensor tr = be->act_from_nchw(r.data(), N, C, H, W);
  Tensor tdx = be->alloc(tx.shape()), tdg = be->alloc({C}), tdb = be->alloc({C});
  fill_nan(*be, tdx);
  be->bn_backward(tx, ty, tr, tg, tsm, tsi, tdx, &tdg, &tdb, relu, 0.f);
  Tensor srm = be->alloc({C}), srv = be->alloc({C}), sy = be->alloc(tx.shape()), ssm = be->alloc({C}),
         ssi = be->alloc({C});
  auto loss = [&] {
    be->bn_forward_train(tx, tg, tb, srm, srv, mom, eps, sy, ssm, ssi, relu);
    return test::dot(r, get_nchw(*be, sy));
  };
  test::StateFn state = nullptr;
  if (relu)
    state = [&] {
      be->bn_forward_train(tx, tg, tb, srm, srv, mom, eps, sy, ssm, ssi, relu);
      Vec yy = get(*be, sy);
      std::vector<uint8_t> s(yy.size());
      for (size_t i = 0; i < yy.size(); ++i) s[i] = yy[i] > 0.f;
      return s;
    };
  GradCheckOptions o;
  o.h = 1e-3;
  Vec gx = get(*be, tdx), gg = get(*be, tdg), gb = get(*be, tdb);
  auto rx = check_gradient(tx.data(), gx.size(), gx.data(), loss, o, state);
  EXPECT_TRUE(rx.ok()) << "dx: " << rx.summary();
  auto rg = check_gradient(tg.data(), gg.size(), gg.data(), loss, o, state);
  EXPECT_TRUE(rg.ok()) << "dgamma: " << rg.summary();
  auto rb = check_gradient(tb.data(), gb.size(), gb.data(), loss, o, state);
  EXPECT_TRUE(rb.ok()) << "dbeta: " << rb.summary();

  // beta_dx = 1 accumulates; null dgamma/dbeta allowed
  Vec dx0 = rand_vec(x.size(), 43);
  Tensor tdx2 = make(*be, tx.shape(), dx0);
  be->bn_backward(tx, ty, tr, tg, tsm, tsi, tdx2, nullptr, nullptr, relu, 1.f);
  expect_close(get(*be, tdx2), lin(1, gx, 1, dx0), 1e-6, 1e-5, "bn_backward beta_dx=1");
}

INSTANTIATE_TEST_SUITE_P(Relu, BnTest, ::testing::Values(true, false));

TEST_F(CpuBackendTest, BnDeterministicAndThreadIndependent) {
  auto be1 = make_backend(Device::CPU, dsonas_test::other_threads());
  const int C = 16, N = 8, H = 28, W = 28;
  const size_t n = static_cast<size_t>(C) * N * H * W;
  Tensor x = make(*be, {C, N, H, W}, rand_vec(n, 51));
  Tensor dy = make(*be, {C, N, H, W}, rand_vec(n, 52));
  Tensor g = make(*be, {C}, rand_vec(C, 53)), b = make(*be, {C}, rand_vec(C, 54));
  Vec outs[3][5];
  Backend* bes[3] = {be.get(), be.get(), be1.get()};
  for (int t = 0; t < 3; ++t) {
    Tensor rm = be->alloc({C}), rv = be->alloc({C}), y = be->alloc(x.shape()), sm = be->alloc({C}), si = be->alloc({C}),
           dx = be->alloc(x.shape()), dg = be->alloc({C}), db = be->alloc({C});
    be->fill(rm, 0.f);
    be->fill(rv, 1.f);
    bes[t]->bn_forward_train(x, g, b, rm, rv, 0.9f, 2e-5f, y, sm, si, true);
    bes[t]->bn_backward(x, y, dy, g, sm, si, dx, &dg, &db, true, 0.f);
    outs[t][0] = get(*be, y);
    outs[t][1] = get(*be, rv);
    outs[t][2] = get(*be, dx);
    outs[t][3] = get(*be, dg);
    outs[t][4] = get(*be, db);
  }
  for (int q = 0; q < 5; ++q) {
    EXPECT_TRUE(same_bits(outs[0][q], outs[1][q])) << q;
    EXPECT_TRUE(same_bits(outs[0][q], outs[2][q]))
        << q << " (" << be->threads() << " vs " << be1->threads() << " threads)";
  }
}

// ---- λ-weighted sums --------------------------------------------------------------------------

// Both code paths: the AVX-512 kernels where the CPU has them, and AVX2.
TEST_F(CpuBackendTest, WsumForwardBackward) {
  for (int z = 1; z >= 0; --z)
    for (int64_t n : {int64_t(1000), int64_t(70001)}) {
      SCOPED_TRACE(str("n ", n, z ? " (AVX-512 where available)" : " (AVX2)"));
      cpu::avx512_allow(z == 1);
      const int J = 3, K = 5;
      Vec lam = rand_vec(J * K, 61);
      // row 1 dead; input 3 dead everywhere (passed as null); some holes
      std::vector<uint8_t> live = {1, 1, 0, 0, 1,  //
                                   0, 0, 0, 0, 0,  //
                                   1, 0, 1, 0, 1};
      std::vector<Vec> x(K), dy(J);
      std::vector<Tensor> tx(K), ty(J), tdy(J), tdx(K);
      std::vector<const Tensor*> xs(K), dys(J);
      std::vector<Tensor*> ys(J), dxs(K);
      for (int k = 0; k < K; ++k) {
        x[static_cast<size_t>(k)] = rand_vec(static_cast<size_t>(n), 62 + static_cast<uint32_t>(k));
        tx[static_cast<size_t>(k)] = make(*be, {n}, x[static_cast<size_t>(k)]);
        xs[static_cast<size_t>(k)] = k == 3 ? nullptr : &tx[static_cast<size_t>(k)];
      }
      for (int j = 0; j < J; ++j) {
        ty[static_cast<size_t>(j)] = be->alloc({n});
        fill_nan(*be, ty[static_cast<size_t>(j)]);
        ys[static_cast<size_t>(j)] = &ty[static_cast<size_t>(j)];
        dy[static_cast<size_t>(j)] = rand_vec(static_cast<size_t>(n), 70 + static_cast<uint32_t>(j));
        tdy[static_cast<size_t>(j)] = make(*be, {n}, dy[static_cast<size_t>(j)]);
        dys[static_cast<size_t>(j)] = j == 1 ? nullptr : &tdy[static_cast<size_t>(j)];
      }
      be->wsum_forward(J, K, lam.data(), live.data(), xs, ys);
      for (int j = 0; j < J; ++j) {
        Vec want(static_cast<size_t>(n), 0.f);
        for (int k = 0; k < K; ++k)
          if (live[static_cast<size_t>(j * K + k)])
            for (size_t i = 0; i < want.size(); ++i)
              want[i] += lam[static_cast<size_t>(j * K + k)] * x[static_cast<size_t>(k)][i];
        expect_close(get(*be, ty[static_cast<size_t>(j)]), want, 1e-6, 1e-5, str("wsum_forward row ", j));
      }
      // backward: dxs[2] null (skipped), others accumulate; dlam accumulates (+=)
      std::vector<Vec> dx0(K);
      for (int k = 0; k < K; ++k) {
        dx0[static_cast<size_t>(k)] = rand_vec(static_cast<size_t>(n), 80 + static_cast<uint32_t>(k));
        tdx[static_cast<size_t>(k)] = make(*be, {n}, dx0[static_cast<size_t>(k)]);
        dxs[static_cast<size_t>(k)] = k == 2 ? nullptr : &tdx[static_cast<size_t>(k)];
      }
      Vec dlam0 = rand_vec(J * K, 90), dlam = dlam0;
      be->wsum_backward(J, K, lam.data(), live.data(), xs, dys, dxs, dlam.data());
      for (int j = 0; j < J; ++j)
        for (int k = 0; k < K; ++k) {
          const size_t q = static_cast<size_t>(j * K + k);
          const double want =
              dlam0[q] + (live[q] ? test::dot(dy[static_cast<size_t>(j)], x[static_cast<size_t>(k)]) : 0.0);
          EXPECT_NEAR(dlam[q], want, 1e-5 * std::sqrt(static_cast<double>(n)) + 1e-5) << j << "," << k;
          if (!live[q]) {
            EXPECT_EQ(dlam[q], dlam0[q]);
          }
        }
      for (int k = 0; k < K; ++k) {
        Vec want = dx0[static_cast<size_t>(k)];
        if (k != 2)
          for (int j = 0; j < J; ++j)
            if (live[static_cast<size_t>(j * K + k)])
              for (size_t i = 0; i < want.size(); ++i)
                want[i] += lam[static_cast<size_t>(j * K + k)] * dy[static_cast<size_t>(j)][i];
        expect_close(get(*be, tdx[static_cast<size_t>(k)]), want, 1e-6, 1e-5, str("wsum_backward dx ", k));
      }
      // dlam may be null (a W-step: the gradient-only kernel); a dead row's output may be null
      std::vector<Vec> dx1(K);
      for (int k = 0; k < K; ++k) dx1[static_cast<size_t>(k)] = get(*be, tdx[static_cast<size_t>(k)]);
      be->wsum_backward(J, K, lam.data(), live.data(), xs, dys, dxs, nullptr);
      for (int k = 0; k < K; ++k) {
        Vec want = dx1[static_cast<size_t>(k)];
        if (k != 2)
          for (int j = 0; j < J; ++j)
            if (live[static_cast<size_t>(j * K + k)])
              for (size_t i = 0; i < want.size(); ++i)
                want[i] += lam[static_cast<size_t>(j * K + k)] * dy[static_cast<size_t>(j)][i];
        expect_close(get(*be, tdx[static_cast<size_t>(k)]), want, 1e-6, 1e-5, str("wsum_backward (no dλ) dx ", k));
      }
      std::vector<Tensor*> ys2 = ys;
      ys2[1] = nullptr;
      be->wsum_forward(J, K, lam.data(), live.data(), xs, ys2);
      cpu::avx512_allow(true);
    }
}

TEST_F(CpuBackendTest, WsumDlamDeterministicAndThreadIndependent) {
  auto be1 = make_backend(Device::CPU, dsonas_test::other_threads());
  const int J = 4, K = 13;
  const int64_t n = 16 * 8 * 28 * 28;
  Vec lam = rand_vec(J * K, 91);
  std::vector<uint8_t> live(J * K, 1);
  std::vector<Tensor> tx, tdy;
  std::vector<const Tensor*> xs, dys;
  std::vector<Tensor*> dxs(K, nullptr);
  for (int k = 0; k < K; ++k)
    tx.push_back(make(*be, {n}, rand_vec(static_cast<size_t>(n), 100 + static_cast<uint32_t>(k))));
  for (int j = 0; j < J; ++j)
    tdy.push_back(make(*be, {n}, rand_vec(static_cast<size_t>(n), 200 + static_cast<uint32_t>(j))));
  for (auto& t : tx) xs.push_back(&t);
  for (auto& t : tdy) dys.push_back(&t);
  Vec d1(J * K, 0.f), d2(J * K, 0.f), d3(J * K, 0.f);
  be->wsum_backward(J, K, lam.data(), live.data(), xs, dys, dxs, d1.data());
  be->wsum_backward(J, K, lam.data(), live.data(), xs, dys, dxs, d2.data());
  be1->wsum_backward(J, K, lam.data(), live.data(), xs, dys, dxs, d3.data());
  EXPECT_TRUE(same_bits(d1, d2));
  EXPECT_TRUE(same_bits(d1, d3)) << be->threads() << " vs " << be1->threads() << " threads";
}

// ---- head ---------------------------------------------------------------------------------------

TEST_F(CpuBackendTest, GlobalAvgPool) {
  const int N = 2, C = 3, H = 5, W = 7;
  Vec x = rand_vec(static_cast<size_t>(N) * C * H * W, 101);
  Tensor tx = be->act_from_nchw(x.data(), N, C, H, W);
  Tensor ty = be->alloc({N, C});
  be->global_avg_pool_forward(tx, ty);
  Vec want(static_cast<size_t>(N) * C);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) {
      double s = 0;
      for (int i = 0; i < H * W; ++i) s += x[static_cast<size_t>((n * C + c) * H * W + i)];
      want[static_cast<size_t>(n * C + c)] = static_cast<float>(s / (H * W));
    }
  expect_close(get(*be, ty), want, 1e-6, 1e-5, "global_avg_pool_forward");
  Vec dy = rand_vec(want.size(), 102);
  Tensor tdy = make(*be, {N, C}, dy);
  Vec dx0 = rand_vec(x.size(), 103);
  Tensor tdx = be->act_from_nchw(dx0.data(), N, C, H, W);
  be->global_avg_pool_backward(tdy, tdx, 1.f);
  Vec wdx(x.size());
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < H * W; ++i)
        wdx[static_cast<size_t>((n * C + c) * H * W + i)] =
            dy[static_cast<size_t>(n * C + c)] / (H * W) + dx0[static_cast<size_t>((n * C + c) * H * W + i)];
  expect_close(get_nchw(*be, tdx), wdx, 1e-6, 1e-5, "global_avg_pool_backward beta=1");
}

TEST_F(CpuBackendTest, Linear) {
  const int N = 5, I = 7, O = 3;
  Vec x = rand_vec(N * I, 111), w = rand_vec(O * I, 112), b = rand_vec(O, 113), r = rand_vec(N * O, 114);
  Tensor tx = make(*be, {N, I}, x), tw = make(*be, {O, I}, w), tb = make(*be, {O}, b);
  Tensor ty = be->alloc({N, O});
  fill_nan(*be, ty);
  be->linear_forward(tx, tw, tb, ty);
  const Vec yref = ref::linear_fwd(x, w, b, N, I, O);
  expect_within(get(*be, ty), yref,
                sum_tol(I + 1, ref::linear_fwd(ref::abs_of(x), ref::abs_of(w), ref::abs_of(b), N, I, O), yref),
                "linear_forward");
  Tensor tr = make(*be, {N, O}, r);
  Tensor tdx = be->alloc({N, I}), tdw = be->alloc({O, I}), tdb = be->alloc({O});
  fill_nan(*be, tdx);
  fill_nan(*be, tdw);
  fill_nan(*be, tdb);
  be->linear_backward(tx, tw, tr, &tdx, &tdw, &tdb);
  be->linear_backward(tx, tw, tr, nullptr, nullptr, nullptr);
  auto loss = [&] {
    be->linear_forward(tx, tw, tb, ty);
    return test::dot(r, get(*be, ty));
  };
  GradCheckOptions o;
  Vec gx = get(*be, tdx), gw = get(*be, tdw), gb = get(*be, tdb);
  auto r1 = check_gradient(tx.data(), gx.size(), gx.data(), loss, o);
  EXPECT_TRUE(r1.ok()) << r1.summary();
  auto r2 = check_gradient(tw.data(), gw.size(), gw.data(), loss, o);
  EXPECT_TRUE(r2.ok()) << r2.summary();
  auto r3 = check_gradient(tb.data(), gb.size(), gb.data(), loss, o);
  EXPECT_TRUE(r3.ok()) << r3.summary();
}

TEST_F(CpuBackendTest, SoftmaxXent) {
  const int N = 4, K = 5;
  Vec z = rand_vec(N * K, 121, -3.f, 3.f);
  z[static_cast<size_t>(2 * K + 1)] = 100.f;  // large logits: stable
  z[static_cast<size_t>(2 * K + 3)] = 100.f;  // tie: first max (1) counts
  std::vector<int32_t> lab = {0, 4, 1, 2};
  // row 0: make label the argmax
  z[0] = 5.f;
  Tensor tz = make(*be, {N, K}, z), tdz = be->alloc({N, K});
  double loss = 0.25;
  int64_t correct = 7;
  const float scale = 0.5f;
  be->softmax_xent(tz, lab.data(), scale, tdz, &loss, &correct);
  EXPECT_NEAR(loss, 0.25 + ref::xent_sum(z, lab, N, K), 1e-5);
  int64_t want_hits = 0;
  for (int n = 0; n < N; ++n) {
    int am = 0;
    for (int k = 1; k < K; ++k)
      if (z[static_cast<size_t>(n * K + k)] > z[static_cast<size_t>(n * K + am)]) am = k;
    want_hits += am == lab[static_cast<size_t>(n)];
  }
  EXPECT_EQ(correct, 7 + want_hits);
  EXPECT_GE(want_hits, 2);  // rows 0 and 2
  Vec dz = get(*be, tdz);
  // gradient = scale · ∂(Σ CE)/∂z, by finite differences
  Vec zz = z;
  Vec ga(dz.size());
  for (size_t i = 0; i < dz.size(); ++i) ga[i] = dz[i] / scale;
  auto lossfn = [&] { return ref::xent_sum(zz, lab, N, K); };
  auto r = check_gradient(zz.data(), zz.size(), ga.data(), lossfn);
  EXPECT_TRUE(r.ok()) << r.summary();
  // bad label
  std::vector<int32_t> bad = {0, 1, 5, 2};
  try {
    be->softmax_xent(tz, bad.data(), 1.f, tdz, &loss, &correct);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitUsage);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("label 5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("index 2"), std::string::npos) << msg;
  }
  bad[2] = -1;
  EXPECT_THROW(be->softmax_xent(tz, bad.data(), 1.f, tdz, &loss, &correct), Error);
}

// ---- optimiser ------------------------------------------------------------------------------------

TEST_F(CpuBackendTest, NagUpdateTwoSteps) {
  Tensor w = make(*be, {2}, {1.f, -2.f}), g = make(*be, {2}, {0.5f, 0.1f}), m = make(*be, {2}, {0.f, 0.f});
  const float lr = 0.1f, mu = 0.9f, wd = 0.01f;
  be->nag_update(w, g, m, lr, mu, wd);
  // g' = g + wd·w; m = μ·m + g'; w -= lr·(g' + μ·m)
  expect_close(get(*be, m), {0.51f, 0.08f}, 1e-6, 0, "m step 1");
  expect_close(get(*be, w), {0.9031f, -2.0152f}, 1e-6, 0, "w step 1");
  be->nag_update(w, g, m, lr, mu, wd);
  expect_close(get(*be, m), {0.968031f, 0.151848f}, 1e-6, 0, "m step 2");
  expect_close(get(*be, w), {0.76507411f, -2.03685112f}, 1e-6, 0, "w step 2");
  expect_close(get(*be, g), {0.5f, 0.1f}, 0, 0, "g unchanged");
}

}  // namespace
}  // namespace dsonas
