// test_backend_cuda.cpp — CudaBackend against CpuBackend, method by method, on
// random inputs; a whole Supergraph train_step CPU vs CUDA; run-to-run bit
// reproducibility on the GPU.  Every test needs a GPU and says "no CUDA device"
// (GTEST_SKIP) where there is none.
//
// Tolerances (both backends are FP32 with double reductions; they differ only
// in summation order and FMA contraction):
//   exact (0)              copies, layout, fill, add, clip, dropout, scaling,
//                          max pooling, concatenation, the running statistics'
//                          inputs where no sum is involved
//   1e-6 abs + 1e-5 rel    elementwise arithmetic (axpy, NAG, pooling, GAP, BN infer)
//   2e-5·max|want| abs     convolutions, BN backward, linear (long sums, whose
//     + 1e-4 rel           rounding scales with the tensor's magnitude)
//   1e-5 abs + 1e-5 rel    BN train outputs, λ-weighted sums
//   reductions             |got − want| ≤ 1e-5·(1 + √n) (dλ, dot) or 1e-9 rel
//                          (sum of squares, in double on both sides)
//   whole train_step       loss 1e-4 rel; logits 1e-3 abs; flat gradient
//                          ‖g_cuda − g_cpu‖₂ ≤ 1e-3·‖g_cpu‖₂ and elementwise
//                          ≤ 2e-3·‖g_cpu‖∞ + 1e-2·|g_cpu|
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/dist/communicator.hpp"
#include "dsonas/dist/nccl.hpp"
#include "dsonas/io/model_file.hpp"
#include "dsonas/io/network_file.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/network.hpp"
#include "dsonas/model/supergraph.hpp"
#include "dsonas/model/prune.hpp"
#include "../../src/backend/cuda/cuda_status.hpp"
#include "gpu_test_util.hpp"

namespace dsonas {
namespace {

using gputest::expect_close;
using gputest::expect_close_max;
using gputest::lin;
using gputest::rand_vec;
using gputest::same_bits;
using gputest::Vec;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

/// Sets an environment variable for the lifetime of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      had_ = true;
      old_ = old;
    }
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_.c_str(), old_.c_str(), 1);
    else
      unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

class CudaVsCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_GPU();
    cpu = make_backend(Device::CPU, 0);
    gpu = make_backend(Device::CUDA, 1);
  }
  std::unique_ptr<Backend> cpu, gpu;

  static Tensor put(Backend& be, const Shape& s, const Vec& v) {
    Tensor t = be.alloc(s);
    EXPECT_EQ(static_cast<size_t>(t.numel()), v.size());
    be.upload(v.data(), t);
    return t;
  }
  static Vec get(Backend& be, const Tensor& t) {
    Vec v(static_cast<size_t>(t.numel()));
    be.download(t, v.data());
    return v;
  }
  Tensor g(const Shape& s, const Vec& v) { return put(*gpu, s, v); }
  Tensor c(const Shape& s, const Vec& v) { return put(*cpu, s, v); }
  Vec gv(const Tensor& t) { return get(*gpu, t); }
  Vec cv(const Tensor& t) { return get(*cpu, t); }
  Tensor gnan(const Shape& s) {
    Tensor t = gpu->alloc(s);
    gpu->fill(t, kNaN);
    return t;
  }
};

// ---- identity, memory, layout ----------------------------------------------------------------

TEST_F(CudaVsCpu, IdentityAndAllocator) {
  EXPECT_EQ(gpu->device(), Device::CUDA);
  EXPECT_EQ(gpu->threads(), 1);
  EXPECT_NE(gpu->name().find("cuda("), std::string::npos) << gpu->name();
  std::cout << "[ INFO     ] " << gpu->name() << std::endl;
  const size_t before = allocator(Device::CUDA).in_use();
  {
    Tensor t = gpu->alloc({1000});
    EXPECT_GE(allocator(Device::CUDA).in_use(), before + 4000);
    EXPECT_GE(allocator(Device::CUDA).peak(), before + 4000);
  }
  EXPECT_EQ(allocator(Device::CUDA).in_use(), before);
}

TEST_F(CudaVsCpu, MemoryAndLayout) {
  const int N = 3, C = 5, H = 7, W = 9;
  Vec x = rand_vec(static_cast<size_t>(N) * C * H * W, 1);
  Tensor tg = gpu->act_from_nchw(x.data(), N, C, H, W);
  Tensor tc = cpu->act_from_nchw(x.data(), N, C, H, W);
  ASSERT_EQ(tg.shape(), (Shape{C, N, H, W}));
  EXPECT_TRUE(same_bits(gv(tg), cv(tc))) << "CNHW storage";
  Vec back(x.size());
  gpu->act_to_nchw(tg, back.data());
  EXPECT_TRUE(same_bits(back, x)) << "act_to_nchw round trip";
  Tensor u = gpu->alloc(tg.shape());
  gpu->copy(tg, u);
  EXPECT_TRUE(same_bits(gv(u), gv(tg)));
  gpu->fill(u, 2.5f);
  for (float v : gv(u)) ASSERT_EQ(v, 2.5f);
  Tensor big = gpu->alloc({3000017});
  gpu->fill(big, -1.f);
  for (float v : gv(big)) ASSERT_EQ(v, -1.f);
  // views: a slice of a flat buffer, as the gradient views are
  Tensor flat = gpu->alloc({100});
  gpu->fill(flat, 0.f);
  Tensor view = flat.view(37, {10});
  gpu->fill(view, 3.f);
  Vec f = gv(flat);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(f[static_cast<size_t>(i)], (i >= 37 && i < 47) ? 3.f : 0.f) << i;
  // empty tensors are fine everywhere
  Tensor e = gpu->alloc({0});
  gpu->fill(e, 1.f);
  gpu->copy(e, e);
  EXPECT_TRUE(gpu->all_finite(e));
  EXPECT_EQ(gpu->sum_squares(e), 0.0);
  gpu->synchronize();
}

TEST_F(CudaVsCpu, Elementwise) {
  for (size_t n : {size_t(1), size_t(37), size_t(70001), size_t(1 << 20) + 3}) {
    SCOPED_TRACE(n);
    const int64_t ni = static_cast<int64_t>(n);
    Vec a = rand_vec(n, 2), b = rand_vec(n, 3);
    Tensor ga = g({ni}, a), gb = g({ni}, b), gy = gnan({ni});
    gpu->add(ga, gb, gy);
    expect_close(gv(gy), lin(1, a, 1, b), 0, 0, "add");
    gpu->axpy(-0.5f, ga, gb);
    expect_close(gv(gb), lin(-0.5f, a, 1, b), 1e-7, 1e-6, "axpy");
    gpu->upload(b.data(), gb);
    Tensor acc = g({1}, {1.5f});
    gpu->dot_accumulate(ga, gb, acc.data());
    float cacc = 1.5f;
    Tensor ca = c({ni}, a), cb = c({ni}, b);
    cpu->dot_accumulate(ca, cb, &cacc);
    EXPECT_NEAR(gv(acc)[0], cacc, 1e-5 * (1 + std::sqrt(static_cast<double>(n))));
    EXPECT_NEAR(gpu->sum_squares(ga), cpu->sum_squares(ca), 1e-9 * (1 + cpu->sum_squares(ca)));
    gpu->copy(ga, gy);
    gpu->clip(gy, -0.25f, 0.5f);
    Vec cl = gv(gy);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(cl[i], std::min(0.5f, std::max(-0.25f, a[i])));
    EXPECT_TRUE(gpu->all_finite(ga));
    for (float bad : {std::numeric_limits<float>::infinity(), kNaN, -std::numeric_limits<float>::infinity()}) {
      Vec v = a;
      v[n - 1 - n / 3] = bad;
      gpu->upload(v.data(), gy);
      EXPECT_FALSE(gpu->all_finite(gy)) << bad;
    }
    // NAG, two steps, against the CPU
    Vec w = rand_vec(n, 4), gr = rand_vec(n, 5), m(n, 0.f);
    Tensor gw = g({ni}, w), gg = g({ni}, gr), gm = g({ni}, m), cw = c({ni}, w), cg = c({ni}, gr), cm = c({ni}, m);
    for (int s = 0; s < 2; ++s) {
      gpu->nag_update(gw, gg, gm, 0.1f, 0.9f, 1e-4f);
      cpu->nag_update(cw, cg, cm, 0.1f, 0.9f, 1e-4f);
    }
    expect_close(gv(gw), cv(cw), 1e-6, 1e-5, "nag w");
    expect_close(gv(gm), cv(cm), 1e-6, 1e-5, "nag m");
    expect_close(gv(gg), gr, 0, 0, "nag leaves g");
  }
}

// ---- convolution ------------------------------------------------------------------------------------

struct ConvCase {
  int cin, cout, k, s, p, groups, N, H, W;
};

/// How the CUDA backend is told to convolve (environment at construction).
enum class Path { Auto, Gemm, Cudnn, DwCudnn };
const char* path_name(Path p) {
  return p == Path::Auto ? "auto" : p == Path::Gemm ? "gemm" : p == Path::Cudnn ? "cudnn" : "dw-cudnn";
}

struct ConvParam {
  ConvCase c;
  Path path;
};

void PrintTo(const ConvParam& p, std::ostream* os) {
  const ConvCase& c = p.c;
  *os << "cin" << c.cin << " cout" << c.cout << " k" << c.k << " s" << c.s << " p" << c.p << " g" << c.groups << " N"
      << c.N << " H" << c.H << " W" << c.W << " path " << path_name(p.path);
}

class ConvCuda : public CudaVsCpu, public ::testing::WithParamInterface<ConvParam> {
 protected:
  void SetUp() override {
    REQUIRE_GPU();
    cpu = make_backend(Device::CPU, 0);
    const Path path = GetParam().path;
    ScopedEnv conv("DSONAS_CUDA_CONV", path == Path::Gemm ? "gemm" : path == Path::Cudnn ? "cudnn" : "auto");
    ScopedEnv dw("DSONAS_CUDA_DW", path == Path::DwCudnn ? "cudnn" : "own");
    gpu = make_backend(Device::CUDA, 1);
  }
};

TEST_P(ConvCuda, MatchesCpu) {
  const ConvCase cc = GetParam().c;
  ConvDesc d;
  d.cin = cc.cin;
  d.cout = cc.cout;
  d.k = cc.k;
  d.stride = cc.s;
  d.pad = cc.p;
  d.groups = cc.groups;
  const int N = cc.N, H = cc.H, W = cc.W, Ho = d.out_size(H), Wo = d.out_size(W);
  const Shape xs{cc.cin, N, H, W}, ys{cc.cout, N, Ho, Wo};
  Vec x = rand_vec(static_cast<size_t>(shape_numel(xs)), 11),
      w = rand_vec(static_cast<size_t>(shape_numel(d.weight_shape())), 12),
      dy = rand_vec(static_cast<size_t>(shape_numel(ys)), 13), y0 = rand_vec(dy.size(), 14),
      dx0 = rand_vec(x.size(), 15), dw0 = rand_vec(w.size(), 16);
  Tensor cx = c(xs, x), cw = c(d.weight_shape(), w), cdy = c(ys, dy);
  Tensor gx = g(xs, x), gw = g(d.weight_shape(), w), gdy = g(ys, dy);
  // atol relative to the largest |value|: long sums (the filter gradient sums
  // N·Ho·Wo products) carry rounding errors that scale with the tensor's magnitude
  const double frac = 2e-5, rtol = 1e-4;
  try {
    // forward: beta = 0 overwrites NaN garbage; then alpha/beta
    Tensor cy = cpu->alloc(ys), gy = gnan(ys);
    cpu->conv_forward(d, cx, cw, cy, 1.f, 0.f);
    gpu->conv_forward(d, gx, gw, gy, 1.f, 0.f);
    expect_close_max(gv(gy), cv(cy), frac, rtol, "conv_forward");
    Tensor cy2 = c(ys, y0), gy2 = g(ys, y0);
    cpu->conv_forward(d, cx, cw, cy2, 0.5f, 2.f);
    gpu->conv_forward(d, gx, gw, gy2, 0.5f, 2.f);
    expect_close_max(gv(gy2), cv(cy2), frac, rtol, "conv_forward alpha/beta");
    // backward data
    Tensor cdx = cpu->alloc(xs), gdx = gnan(xs);
    cpu->conv_backward_data(d, cdy, cw, cdx, 1.f, 0.f);
    gpu->conv_backward_data(d, gdy, gw, gdx, 1.f, 0.f);
    expect_close_max(gv(gdx), cv(cdx), frac, rtol, "conv_backward_data");
    Tensor cdx2 = c(xs, dx0), gdx2 = g(xs, dx0);
    cpu->conv_backward_data(d, cdy, cw, cdx2, -2.f, 0.5f);
    gpu->conv_backward_data(d, gdy, gw, gdx2, -2.f, 0.5f);
    expect_close_max(gv(gdx2), cv(cdx2), frac, rtol, "conv_backward_data alpha/beta");
    // backward filter
    Tensor cdw = cpu->alloc(d.weight_shape()), gdw = gnan(d.weight_shape());
    cpu->conv_backward_filter(d, cx, cdy, cdw, 1.f, 0.f);
    gpu->conv_backward_filter(d, gx, gdy, gdw, 1.f, 0.f);
    expect_close_max(gv(gdw), cv(cdw), frac, rtol, "conv_backward_filter");
    Tensor cdw2 = c(d.weight_shape(), dw0), gdw2 = g(d.weight_shape(), dw0);
    cpu->conv_backward_filter(d, cx, cdy, cdw2, 2.f, 1.f);
    gpu->conv_backward_filter(d, gx, gdy, gdw2, 2.f, 1.f);
    expect_close_max(gv(gdw2), cv(cdw2), frac, rtol, "conv_backward_filter alpha/beta");
    // run to run: bit-identical
    Tensor gy3 = gnan(ys), gdx3 = gnan(xs), gdw3 = gnan(d.weight_shape());
    gpu->conv_forward(d, gx, gw, gy3, 1.f, 0.f);
    gpu->conv_backward_data(d, gdy, gw, gdx3, 1.f, 0.f);
    gpu->conv_backward_filter(d, gx, gdy, gdw3, 1.f, 0.f);
    EXPECT_TRUE(same_bits(gv(gy3), gv(gy))) << "forward not reproducible";
    EXPECT_TRUE(same_bits(gv(gdx3), gv(gdx))) << "backward-data not reproducible";
    EXPECT_TRUE(same_bits(gv(gdw3), gv(gdw))) << "backward-filter not reproducible";
  } catch (const Error& e) {
    // Forced cuDNN (DSONAS_CUDA_CONV=cudnn / DSONAS_CUDA_DW=cudnn) on a shape
    // cuDNN refuses — no deterministic algorithm from the heuristics, or a
    // refusal when run (cuDNN 9: a NOT_SUPPORTED sub-code or a misaligned
    // pointer) — is not a failure of dsonas: auto mode takes the GEMM path for
    // it, which the Auto and Gemm instances of this shape test.
    const std::string msg = e.what();
    if ((GetParam().path == Path::Cudnn || GetParam().path == Path::DwCudnn) &&
        msg.find(cuda::kCudnnRefusedTag) != std::string::npos)
      GTEST_SKIP() << "cuDNN refuses this strided CNHW shape (auto mode uses the GEMM path): " << msg;
    throw;
  }
}

std::vector<ConvParam> conv_params() {
  const std::vector<ConvCase> cases = {
      {3, 3, 3, 1, 1, 3, 2, 5, 7},        // depthwise 3x3
      {3, 3, 5, 1, 2, 3, 2, 5, 7},        // depthwise 5x5
      {3, 3, 3, 2, 1, 3, 2, 7, 9},        // depthwise 3x3 stride 2
      {4, 4, 5, 2, 2, 4, 2, 5, 7},        // depthwise 5x5 stride 2
      {3, 3, 3, 1, 0, 3, 1, 4, 6},        // depthwise, no pad
      {2, 2, 7, 1, 3, 2, 2, 9, 17},       // depthwise 7x7 (generic-k kernel)
      {2, 2, 1, 1, 0, 2, 2, 5, 7},        // depthwise 1x1
      {16, 16, 3, 1, 1, 16, 16, 28, 28},  // depthwise bench-size (several reduction chunks)
      {32, 32, 5, 1, 2, 32, 13, 14, 14},  // depthwise 5x5, odd batch
      {3, 4, 1, 1, 0, 1, 2, 5, 7},        // pointwise (cuBLAS)
      {48, 48, 1, 1, 0, 1, 7, 13, 11},    // pointwise, odd sizes
      {3, 4, 1, 2, 0, 1, 2, 5, 7},        // 1x1 stride 2
      {3, 4, 3, 1, 1, 1, 2, 5, 7},        // 3x3 dense
      {3, 4, 3, 2, 1, 1, 2, 5, 7},        // 3x3 stride 2 odd
      {2, 5, 3, 2, 1, 1, 3, 8, 6},        // 3x3 stride 2 even
      {1, 16, 3, 1, 1, 1, 16, 28, 28},    // the fmnist stem
      {16, 32, 3, 2, 1, 1, 9, 14, 14},    // reduction branch 3x3 s2
      {16, 32, 1, 2, 0, 1, 9, 14, 14},    // reduction branch 1x1 s2
  };
  std::vector<ConvParam> r;
  for (const ConvCase& c : cases) {
    r.push_back({c, Path::Auto});
    if (c.groups == 1 && !(c.k == 1 && c.s == 1 && c.p == 0)) {
      r.push_back({c, Path::Gemm});
      r.push_back({c, Path::Cudnn});
    }
    if (c.groups > 1) r.push_back({c, Path::DwCudnn});
  }
  return r;
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConvCuda, ::testing::ValuesIn(conv_params()));

TEST_F(CudaVsCpu, ConvRejectsBadShapes) {
  ConvDesc d{3, 4, 3, 1, 1, 1};
  Tensor x = gpu->alloc({3, 2, 5, 5}), w = gpu->alloc({4, 3, 3, 3}), y = gpu->alloc({4, 2, 4, 5});
  EXPECT_THROW(gpu->conv_forward(d, x, w, y), Error);
  ConvDesc grp{4, 4, 3, 1, 1, 2};
  Tensor x4 = gpu->alloc({4, 2, 5, 5}), w4 = gpu->alloc({4, 2, 3, 3}), y4 = gpu->alloc({4, 2, 5, 5});
  EXPECT_THROW(gpu->conv_forward(grp, x4, w4, y4), Error);
  Tensor host = cpu->alloc({3, 2, 5, 5}), y5 = gpu->alloc({4, 2, 5, 5});
  EXPECT_THROW(gpu->conv_forward(d, host, w, y5), Error) << "a CPU tensor passed to the CUDA backend";
}

// ---- pooling ----------------------------------------------------------------------------------------

struct PoolCase {
  bool max;
  int k, s, p, H, W;
};

void PrintTo(const PoolCase& c, std::ostream* os) {
  *os << (c.max ? "max" : "avg") << " k" << c.k << " s" << c.s << " p" << c.p << " H" << c.H << " W" << c.W;
}

class PoolCuda : public CudaVsCpu, public ::testing::WithParamInterface<PoolCase> {};

TEST_P(PoolCuda, MatchesCpu) {
  const PoolCase pc = GetParam();
  PoolDesc d;
  d.kind = pc.max ? PoolKind::Max : PoolKind::Avg;
  d.k = pc.k;
  d.stride = pc.s;
  d.pad = pc.p;
  const int N = 3, C = 5, Ho = d.out_size(pc.H), Wo = d.out_size(pc.W);
  const Shape xs{C, N, pc.H, pc.W}, ys{C, N, Ho, Wo};
  for (int ties = 0; ties < 2; ++ties) {
    SCOPED_TRACE(ties ? "ties" : "random");
    Vec x = rand_vec(static_cast<size_t>(shape_numel(xs)), 31);
    if (ties) {
      std::mt19937 r(34);
      for (auto& v : x) v = static_cast<float>(r() % 3);
    }
    Vec dy = rand_vec(static_cast<size_t>(shape_numel(ys)), 32), dx0 = rand_vec(x.size(), 33);
    Tensor cx = c(xs, x), gx = g(xs, x), cy = cpu->alloc(ys), gy = gnan(ys), cdy = c(ys, dy), gdy = g(ys, dy);
    cpu->pool_forward(d, cx, cy);
    gpu->pool_forward(d, gx, gy);
    expect_close(gv(gy), cv(cy), pc.max ? 0 : 1e-6, pc.max ? 0 : 1e-5, "pool_forward");
    Tensor cdx = cpu->alloc(xs), gdx = gnan(xs);
    cpu->pool_backward(d, cx, cy, cdy, cdx, 0.f);
    gpu->pool_backward(d, gx, gy, gdy, gdx, 0.f);
    expect_close(gv(gdx), cv(cdx), 1e-6, 1e-5, "pool_backward");
    Tensor cdx2 = c(xs, dx0), gdx2 = g(xs, dx0);
    cpu->pool_backward(d, cx, cy, cdy, cdx2, 1.f);
    gpu->pool_backward(d, gx, gy, gdy, gdx2, 1.f);
    expect_close(gv(gdx2), cv(cdx2), 1e-6, 1e-5, "pool_backward beta=1");
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, PoolCuda,
                         ::testing::Values(PoolCase{true, 3, 1, 1, 5, 7}, PoolCase{false, 3, 1, 1, 5, 7},
                                           PoolCase{true, 3, 2, 1, 7, 9}, PoolCase{false, 3, 2, 1, 8, 6},
                                           PoolCase{true, 2, 2, 0, 6, 8}, PoolCase{false, 5, 1, 2, 9, 11},
                                           PoolCase{true, 3, 1, 1, 28, 28}, PoolCase{false, 3, 1, 1, 28, 28},
                                           PoolCase{true, 3, 1, 1, 5, 37}));

// ---- batch-norm -------------------------------------------------------------------------------------

class BnCuda : public CudaVsCpu, public ::testing::WithParamInterface<bool> {};

TEST_P(BnCuda, MatchesCpuAndIsReproducible) {
  const bool relu = GetParam();
  for (auto dims : {std::vector<int>{3, 2, 5, 7}, std::vector<int>{16, 8, 28, 28}, std::vector<int>{7, 3, 1, 1}}) {
    const int C = dims[0], N = dims[1], H = dims[2], W = dims[3];
    SCOPED_TRACE(testing::Message() << "C" << C << " N" << N << " H" << H << " W" << W);
    const Shape xs{C, N, H, W};
    const size_t n = static_cast<size_t>(shape_numel(xs));
    Vec x = rand_vec(n, 41, -2.f, 3.f), gamma = rand_vec(static_cast<size_t>(C), 42, 0.5f, 1.5f),
        beta = rand_vec(static_cast<size_t>(C), 43), rm0 = rand_vec(static_cast<size_t>(C), 44),
        rv0 = rand_vec(static_cast<size_t>(C), 45, 0.5f, 2.f), r = rand_vec(n, 46), dx0 = rand_vec(n, 47);
    const float mom = 0.9f, eps = 2e-5f;
    const Shape cs{C};
    Tensor cx = c(xs, x), cg = c(cs, gamma), cb = c(cs, beta), crm = c(cs, rm0), crv = c(cs, rv0), cy = cpu->alloc(xs),
           csm = cpu->alloc(cs), csi = cpu->alloc(cs);
    Tensor gx = g(xs, x), gg = g(cs, gamma), gb = g(cs, beta), grm = g(cs, rm0), grv = g(cs, rv0), gy = gnan(xs),
           gsm = gnan(cs), gsi = gnan(cs);
    cpu->bn_forward_train(cx, cg, cb, crm, crv, mom, eps, cy, csm, csi, relu);
    gpu->bn_forward_train(gx, gg, gb, grm, grv, mom, eps, gy, gsm, gsi, relu);
    expect_close(gv(gy), cv(cy), 1e-5, 1e-5, "bn train y");
    expect_close(gv(gsm), cv(csm), 1e-6, 1e-6, "bn save_mean");
    expect_close(gv(gsi), cv(csi), 1e-6, 1e-6, "bn save_invstd");
    expect_close(gv(grm), cv(crm), 1e-6, 1e-6, "bn run_mean");
    expect_close(gv(grv), cv(crv), 1e-6, 1e-6, "bn run_var");
    Tensor cyi = cpu->alloc(xs), gyi = gnan(xs);
    cpu->bn_forward_infer(cx, cg, cb, crm, crv, eps, cyi, relu);
    gpu->bn_forward_infer(gx, gg, gb, grm, grv, eps, gyi, relu);
    expect_close(gv(gyi), cv(cyi), 1e-6, 1e-5, "bn infer");
    // backward: from the CPU's forward output, so both see the same ReLU mask
    Tensor gyc = g(xs, cv(cy)), csmv = c(cs, cv(csm)), gsmc = g(cs, cv(csm)), gsic = g(cs, cv(csi));
    Tensor cr = c(xs, r), gr = g(xs, r), cdx = cpu->alloc(xs), gdx = gnan(xs), cdg = cpu->alloc(cs),
           cdb = cpu->alloc(cs), gdg = gnan(cs), gdb = gnan(cs);
    cpu->bn_backward(cx, cy, cr, cg, csm, csi, cdx, &cdg, &cdb, relu, 0.f);
    gpu->bn_backward(gx, gyc, gr, gg, gsmc, gsic, gdx, &gdg, &gdb, relu, 0.f);
    expect_close_max(gv(gdx), cv(cdx), 2e-5, 1e-4, "bn backward dx");
    expect_close_max(gv(gdg), cv(cdg), 2e-5, 1e-4, "bn backward dgamma");
    expect_close_max(gv(gdb), cv(cdb), 2e-5, 1e-4, "bn backward dbeta");
    Tensor cdx2 = c(xs, dx0), gdx2 = g(xs, dx0);
    cpu->bn_backward(cx, cy, cr, cg, csm, csi, cdx2, nullptr, nullptr, relu, 1.f);
    gpu->bn_backward(gx, gyc, gr, gg, gsmc, gsic, gdx2, nullptr, nullptr, relu, 1.f);
    expect_close_max(gv(gdx2), cv(cdx2), 2e-5, 1e-4, "bn backward beta_dx=1, null dgamma/dbeta");
    // reproducible
    Tensor grm2 = g(cs, rm0), grv2 = g(cs, rv0), gy2 = gnan(xs), gsm2 = gnan(cs), gsi2 = gnan(cs), gdx3 = gnan(xs),
           gdg2 = gnan(cs), gdb2 = gnan(cs);
    gpu->bn_forward_train(gx, gg, gb, grm2, grv2, mom, eps, gy2, gsm2, gsi2, relu);
    gpu->bn_backward(gx, gyc, gr, gg, gsmc, gsic, gdx3, &gdg2, &gdb2, relu, 0.f);
    EXPECT_TRUE(same_bits(gv(gy2), gv(gy)));
    EXPECT_TRUE(same_bits(gv(grv2), gv(grv)));
    EXPECT_TRUE(same_bits(gv(gdx3), gv(gdx)));
    EXPECT_TRUE(same_bits(gv(gdg2), gv(gdg)));
    EXPECT_TRUE(same_bits(gv(gdb2), gv(gdb)));
  }
}

INSTANTIATE_TEST_SUITE_P(Relu, BnCuda, ::testing::Values(true, false));

// ---- λ-weighted sums ---------------------------------------------------------------------------------

TEST_F(CudaVsCpu, Wsum) {
  struct Case {
    int J, K;
    int64_t n;
  };
  for (const Case& cs : {Case{3, 5, 1000}, Case{3, 5, 70001}, Case{4, 13, 100352}, Case{11, 40, 3001}}) {
    const int J = cs.J, K = cs.K;
    const int64_t n = cs.n;
    SCOPED_TRACE(testing::Message() << "J=" << J << " K=" << K << " n=" << n);
    Vec lam = rand_vec(static_cast<size_t>(J * K), 61);
    std::mt19937 r(62);
    std::vector<uint8_t> live(static_cast<size_t>(J * K));
    for (auto& v : live) v = (r() % 4) != 0;
    for (int k = 0; k < K; ++k) live[static_cast<size_t>(1 * K + k)] = 0;  // row 1 dead: its output null
    for (int j = 0; j < J; ++j) live[static_cast<size_t>(j * K + 3)] = 0;  // input 3 dead: null
    std::vector<Tensor> cx, gx, cy, gy, cdy, gdy, cdx, gdx;
    std::vector<const Tensor*> cxs, gxs, cdys, gdys;
    std::vector<Tensor*> cys, gys, cdxs, gdxs;
    for (int k = 0; k < K; ++k) {
      const Vec xv = rand_vec(static_cast<size_t>(n), 100 + static_cast<uint32_t>(k)),
                d0 = rand_vec(static_cast<size_t>(n), 300 + static_cast<uint32_t>(k));
      cx.push_back(c({n}, xv));
      gx.push_back(g({n}, xv));
      cdx.push_back(c({n}, d0));
      gdx.push_back(g({n}, d0));
    }
    for (int j = 0; j < J; ++j) {
      const Vec dv = rand_vec(static_cast<size_t>(n), 200 + static_cast<uint32_t>(j));
      cy.push_back(cpu->alloc({n}));
      gy.push_back(gnan({n}));
      cdy.push_back(c({n}, dv));
      gdy.push_back(g({n}, dv));
    }
    for (int k = 0; k < K; ++k) {
      cxs.push_back(k == 3 ? nullptr : &cx[static_cast<size_t>(k)]);
      gxs.push_back(k == 3 ? nullptr : &gx[static_cast<size_t>(k)]);
      cdxs.push_back(k == 2 ? nullptr : &cdx[static_cast<size_t>(k)]);
      gdxs.push_back(k == 2 ? nullptr : &gdx[static_cast<size_t>(k)]);
    }
    for (int j = 0; j < J; ++j) {
      cys.push_back(j == 1 ? nullptr : &cy[static_cast<size_t>(j)]);
      gys.push_back(j == 1 ? nullptr : &gy[static_cast<size_t>(j)]);
      cdys.push_back(j == 1 ? nullptr : &cdy[static_cast<size_t>(j)]);
      gdys.push_back(j == 1 ? nullptr : &gdy[static_cast<size_t>(j)]);
    }
    cpu->wsum_forward(J, K, lam.data(), live.data(), cxs, cys);
    gpu->wsum_forward(J, K, lam.data(), live.data(), gxs, gys);
    for (int j = 0; j < J; ++j)
      if (j != 1)
        expect_close(gv(gy[static_cast<size_t>(j)]), cv(cy[static_cast<size_t>(j)]), 1e-5, 1e-5,
                     str("wsum_forward row ", j));
    // a live output row whose every input is dead gives zeros (not garbage)
    {
      std::vector<uint8_t> lz(live.size(), 0);
      Tensor z = gnan({n});
      std::vector<Tensor*> zs(static_cast<size_t>(J), nullptr);
      zs[0] = &z;
      gpu->wsum_forward(J, K, lam.data(), lz.data(), gxs, zs);
      for (float v : gv(z)) ASSERT_EQ(v, 0.f);
    }
    const Vec dlam0 = rand_vec(static_cast<size_t>(J * K), 90);
    Tensor gdlam = g({J * K}, dlam0);
    Vec cdlam = dlam0;
    cpu->wsum_backward(J, K, lam.data(), live.data(), cxs, cdys, cdxs, cdlam.data());
    gpu->wsum_backward(J, K, lam.data(), live.data(), gxs, gdys, gdxs, gdlam.data());
    const Vec gdl = gv(gdlam);
    for (int q = 0; q < J * K; ++q) {
      if (!live[static_cast<size_t>(q)]) {
        EXPECT_EQ(gdl[static_cast<size_t>(q)], dlam0[static_cast<size_t>(q)]) << "dead λ " << q << " changed";
      } else {
        EXPECT_NEAR(gdl[static_cast<size_t>(q)], cdlam[static_cast<size_t>(q)],
                    1e-5 * (1 + std::sqrt(static_cast<double>(n))))
            << q;
      }
    }
    for (int k = 0; k < K; ++k)
      expect_close(gv(gdx[static_cast<size_t>(k)]), cv(cdx[static_cast<size_t>(k)]), 1e-5, 1e-5,
                   str("wsum_backward dx ", k));
    // null dlam is allowed; dλ is reproducible bit for bit
    gpu->wsum_backward(J, K, lam.data(), live.data(), gxs, gdys, std::vector<Tensor*>(static_cast<size_t>(K), nullptr),
                       nullptr);
    Tensor gdlam2 = g({J * K}, dlam0);
    gpu->wsum_backward(J, K, lam.data(), live.data(), gxs, gdys, std::vector<Tensor*>(static_cast<size_t>(K), nullptr),
                       gdlam2.data());
    EXPECT_TRUE(same_bits(gv(gdlam2), gdl)) << "dλ not reproducible";
  }
}

// ---- the block output's concatenation -------------------------------------------------------------

TEST_F(CudaVsCpu, ConcatScaledColumns) {
  for (int J : {3, 70}) {
    SCOPED_TRACE(J);
    const int O = 6, I = 5;
    Vec scale = rand_vec(static_cast<size_t>(J), 9);
    scale[1] = 0.f;
    std::vector<Tensor> cw, gw, cdw, gdw;
    std::vector<const Tensor*> cws, gws;
    std::vector<Tensor*> cdws, gdws;
    for (int j = 0; j < J; ++j) {
      const Vec wv = rand_vec(O * I, 10 + static_cast<uint32_t>(j)),
                d0 = rand_vec(O * I, 500 + static_cast<uint32_t>(j));
      cw.push_back(c({O, I, 1, 1}, wv));
      gw.push_back(g({O, I, 1, 1}, wv));
      cdw.push_back(c({O, I, 1, 1}, d0));
      gdw.push_back(g({O, I, 1, 1}, d0));
    }
    for (int j = 0; j < J; ++j) {
      cws.push_back(&cw[static_cast<size_t>(j)]);
      gws.push_back(&gw[static_cast<size_t>(j)]);
      cdws.push_back(j == 2 ? nullptr : &cdw[static_cast<size_t>(j)]);
      gdws.push_back(j == 2 ? nullptr : &gdw[static_cast<size_t>(j)]);
    }
    Tensor co = cpu->alloc({O, J * I, 1, 1}), go = gnan({O, J * I, 1, 1});
    cpu->concat_scaled_columns(cws, scale.data(), co);
    gpu->concat_scaled_columns(gws, scale.data(), go);
    expect_close(gv(go), cv(co), 0, 0, "concat_scaled_columns");
    const Vec m = rand_vec(static_cast<size_t>(O * J * I), 77), ds0 = rand_vec(static_cast<size_t>(J), 78);
    Tensor cm = c({O, J * I, 1, 1}, m), gm = g({O, J * I, 1, 1}, m), gds = g({J}, ds0);
    Vec cds = ds0;
    std::vector<float*> cdsp, gdsp;
    for (int j = 0; j < J; ++j) {
      cdsp.push_back(j == 4 ? nullptr : &cds[static_cast<size_t>(j)]);
      gdsp.push_back(j == 4 ? nullptr : gds.data() + j);
    }
    cpu->concat_scaled_columns_backward(cws, scale.data(), cm, cdws, cdsp);
    gpu->concat_scaled_columns_backward(gws, scale.data(), gm, gdws, gdsp);
    for (int j = 0; j < J; ++j)
      expect_close(gv(gdw[static_cast<size_t>(j)]), cv(cdw[static_cast<size_t>(j)]), 1e-6, 1e-5, str("concat dws ", j));
    expect_close(gv(gds), cds, 1e-5, 1e-5, "concat dscale");
  }
}

// ---- head ----------------------------------------------------------------------------------------------

TEST_F(CudaVsCpu, GlobalAvgPoolAndLinear) {
  const int N = 5, C = 7, H = 6, W = 7;
  const Shape xs{C, N, H, W};
  Vec x = rand_vec(static_cast<size_t>(shape_numel(xs)), 101), dy = rand_vec(N * C, 102), dx0 = rand_vec(x.size(), 103);
  Tensor cx = c(xs, x), gx = g(xs, x), cy = cpu->alloc({N, C}), gy = gnan({N, C});
  cpu->global_avg_pool_forward(cx, cy);
  gpu->global_avg_pool_forward(gx, gy);
  expect_close(gv(gy), cv(cy), 1e-6, 1e-6, "global_avg_pool_forward");
  Tensor cdy = c({N, C}, dy), gdy = g({N, C}, dy), cdx = c(xs, dx0), gdx = g(xs, dx0);
  cpu->global_avg_pool_backward(cdy, cdx, 1.f);
  gpu->global_avg_pool_backward(gdy, gdx, 1.f);
  expect_close(gv(gdx), cv(cdx), 1e-6, 1e-6, "global_avg_pool_backward beta=1");
  Tensor gdx2 = gnan(xs), cdx2 = cpu->alloc(xs);
  cpu->global_avg_pool_backward(cdy, cdx2, 0.f);
  gpu->global_avg_pool_backward(gdy, gdx2, 0.f);
  expect_close(gv(gdx2), cv(cdx2), 0, 0, "global_avg_pool_backward");

  for (auto nio : {std::vector<int>{5, 7, 3}, std::vector<int>{64, 256, 10}, std::vector<int>{3, 1, 1000}}) {
    const int n = nio[0], I = nio[1], O = nio[2];
    SCOPED_TRACE(testing::Message() << "N" << n << " I" << I << " O" << O);
    Vec lx = rand_vec(static_cast<size_t>(n * I), 111), lw = rand_vec(static_cast<size_t>(O * I), 112),
        lb = rand_vec(static_cast<size_t>(O), 113), lr = rand_vec(static_cast<size_t>(n * O), 114);
    Tensor clx = c({n, I}, lx), glx = g({n, I}, lx), clw = c({O, I}, lw), glw = g({O, I}, lw), clb = c({O}, lb),
           glb = g({O}, lb), cly = cpu->alloc({n, O}), gly = gnan({n, O});
    cpu->linear_forward(clx, clw, clb, cly);
    gpu->linear_forward(glx, glw, glb, gly);
    expect_close_max(gv(gly), cv(cly), 1e-5, 1e-5, "linear_forward");
    Tensor clr = c({n, O}, lr), glr = g({n, O}, lr);
    Tensor cldx = cpu->alloc({n, I}), gldx = gnan({n, I}), cldw = cpu->alloc({O, I}), gldw = gnan({O, I}),
           cldb = cpu->alloc({O}), gldb = gnan({O});
    cpu->linear_backward(clx, clw, clr, &cldx, &cldw, &cldb);
    gpu->linear_backward(glx, glw, glr, &gldx, &gldw, &gldb);
    expect_close_max(gv(gldx), cv(cldx), 1e-5, 1e-5, "linear_backward dx");
    expect_close_max(gv(gldw), cv(cldw), 1e-5, 1e-5, "linear_backward dw");
    expect_close_max(gv(gldb), cv(cldb), 1e-5, 1e-5, "linear_backward db");
    gpu->linear_backward(glx, glw, glr, nullptr, nullptr, nullptr);
  }
}

TEST_F(CudaVsCpu, SoftmaxXentPlainAndSmoothed) {
  for (auto nk : {std::pair<int, int>{4, 5}, std::pair<int, int>{64, 10}, std::pair<int, int>{7, 1000}}) {
    const int N = nk.first, K = nk.second;
    SCOPED_TRACE(testing::Message() << "N" << N << " K" << K);
    Vec z = rand_vec(static_cast<size_t>(N * K), 121, -3.f, 3.f);
    z[0] = 5.f;
    if (N > 2) {
      z[static_cast<size_t>(2 * K + 1)] = 100.f;  // large logits
      z[static_cast<size_t>(2 * K + 3)] = 100.f;  // tie: the first counts
    }
    std::vector<int32_t> lab(static_cast<size_t>(N));
    for (int n = 0; n < N; ++n) lab[static_cast<size_t>(n)] = (n * 7 + 1) % K;
    lab[0] = 0;
    if (N > 2) lab[2] = 1;
    Tensor cz = c({N, K}, z), gz = g({N, K}, z), cdz = cpu->alloc({N, K}), gdz = gnan({N, K});
    for (float sm : {0.f, 0.1f}) {
      SCOPED_TRACE(sm);
      double cl = 0.25, gl = 0.25;
      int64_t ch = 7, gh = 7;
      if (sm == 0.f) {
        cpu->softmax_xent(cz, lab.data(), 0.5f, cdz, &cl, &ch);
        gpu->softmax_xent(gz, lab.data(), 0.5f, gdz, &gl, &gh);
      } else {
        cpu->softmax_xent_smoothed(cz, lab.data(), sm, 0.5f, cdz, &cl, &ch);
        gpu->softmax_xent_smoothed(gz, lab.data(), sm, 0.5f, gdz, &gl, &gh);
      }
      EXPECT_NEAR(gl, cl, 1e-9 * (1 + std::fabs(cl)));
      EXPECT_EQ(gh, ch);
      expect_close(gv(gdz), cv(cdz), 1e-7, 1e-6, "dlogits");
    }
    gpu->softmax_xent(gz, lab.data(), 1.f, gdz, nullptr, nullptr);
  }
  // bad labels: exit 2 naming index and value
  std::vector<int32_t> bad = {0, 1, 5, 2};
  Tensor gz = g({4, 5}, rand_vec(20, 1)), gdz = gpu->alloc({4, 5});
  double l = 0;
  int64_t h = 0;
  for (int smoothed = 0; smoothed < 2; ++smoothed) {
    try {
      if (smoothed)
        gpu->softmax_xent_smoothed(gz, bad.data(), 0.1f, 1.f, gdz, &l, &h);
      else
        gpu->softmax_xent(gz, bad.data(), 1.f, gdz, &l, &h);
      FAIL() << "expected an Error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), kExitUsage);
      const std::string msg = e.what();
      EXPECT_NE(msg.find("label 5"), std::string::npos) << msg;
      EXPECT_NE(msg.find("index 2"), std::string::npos) << msg;
    }
  }
}

// ---- retraining primitives ------------------------------------------------------------------------------

TEST_F(CudaVsCpu, DropoutAndScaleSamples) {
  for (int64_t n : {int64_t(1), int64_t(1001), int64_t(300007)}) {
    Vec x = rand_vec(static_cast<size_t>(n), 5);
    for (float p : {0.f, 0.2f, 0.9f}) {
      SCOPED_TRACE(testing::Message() << "n" << n << " p" << p);
      Tensor cx = c({n}, x), gx = g({n}, x), cy = cpu->alloc({n}), gy = gnan({n});
      cpu->dropout_apply(cx, p, 0xfeedull, 12345, cy);
      gpu->dropout_apply(gx, p, 0xfeedull, 12345, gy);
      expect_close(gv(gy), cv(cy), 0, 0, "dropout_apply");
      gpu->dropout_apply(gx, p, 0xfeedull, 12345, gx);  // in place
      expect_close(gv(gx), cv(cy), 0, 0, "dropout_apply in place");
    }
  }
  for (auto dims : {std::vector<int>{6, 3, 2, 3}, std::vector<int>{64, 64, 8, 8}, std::vector<int>{4, 600, 2, 2}}) {
    const int C = dims[0], N = dims[1], H = dims[2], W = dims[3];
    const Shape xs{C, N, H, W};
    Vec x = rand_vec(static_cast<size_t>(shape_numel(xs)), 6), y0 = rand_vec(x.size(), 7);
    for (int groups : {1, 2, C}) {
      SCOPED_TRACE(testing::Message() << "C" << C << " N" << N << " groups " << groups);
      Vec s = rand_vec(static_cast<size_t>(groups * N), 8);
      s[0] = 0.f;
      Tensor cx = c(xs, x), gx = g(xs, x), cy = c(xs, y0), gy = g(xs, y0), gy0 = gnan(xs), cy0 = cpu->alloc(xs);
      cpu->scale_samples(cx, groups, s.data(), cy0, 0.f);
      gpu->scale_samples(gx, groups, s.data(), gy0, 0.f);
      expect_close(gv(gy0), cv(cy0), 0, 0, "scale_samples");
      cpu->scale_samples(cx, groups, s.data(), cy, 0.5f);
      gpu->scale_samples(gx, groups, s.data(), gy, 0.5f);
      expect_close(gv(gy), cv(cy), 1e-7, 1e-6, "scale_samples beta (FMA contraction may differ)");
      gpu->scale_samples(gx, groups, s.data(), gx, 0.f);
      expect_close(gv(gx), cv(cy0), 0, 0, "scale_samples in place");
    }
  }
}

// ---- the whole search network ------------------------------------------------------------------------------

struct Batch {
  std::vector<float> x;
  std::vector<int32_t> y;
  int n = 0;
};

Batch random_batch(const SearchSpace& sp, int n, uint64_t seed) {
  Batch b;
  b.n = n;
  b.x.resize(static_cast<size_t>(n) * sp.in_channels * sp.in_height * sp.in_width);
  b.y.resize(static_cast<size_t>(n));
  Rng r(seed, 99);
  for (float& v : b.x) v = static_cast<float>(r.normal());
  for (int32_t& v : b.y) v = static_cast<int32_t>(r.below(static_cast<uint32_t>(sp.classes)));
  return b;
}

void randomize_lambda(Supergraph& g, uint64_t seed, double zero_frac) {
  Rng r(seed, 5);
  for (float& l : g.lambda()) {
    l = 0.5f + r.uniform();
    if (r.uniform() < zero_frac) l = 0.f;
  }
  prune_all(g.space(), g.lambda(), g.mask());
  g.rebuild_plan();
}

struct StepOut {
  double loss = 0;
  int64_t correct = 0;
  Vec logits, grad, stats;
};

StepOut run_step(Backend& be, const SearchSpace& sp, const Batch& b, bool prune, bool recompute) {
  Supergraph g(sp, be, 17);
  if (prune) randomize_lambda(g, 3, 0.25);
  g.set_recompute(recompute);
  StepResult r = g.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true);
  StepOut o;
  o.loss = r.loss_sum;
  o.correct = r.correct;
  o.logits = g.last_logits();
  o.grad.resize(static_cast<size_t>(g.flat_grad().numel()));
  be.download(g.flat_grad(), o.grad.data());
  for (BnStats& s : g.bn_stats())
    for (const Tensor* t : {&s.mean, &s.var}) {
      Vec h(static_cast<size_t>(t->numel()));
      be.download(*t, h.data());
      o.stats.insert(o.stats.end(), h.begin(), h.end());
    }
  return o;
}

class SupergraphCuda : public CudaVsCpu, public ::testing::WithParamInterface<std::tuple<bool, bool, bool>> {};

TEST_P(SupergraphCuda, TrainStepMatchesCpu) {
  SearchSpace sp = SearchSpace::preset_named("tiny");
  sp.share = std::get<0>(GetParam());
  const bool prune = std::get<1>(GetParam()), recompute = std::get<2>(GetParam());
  const Batch b = random_batch(sp, 8, 3);
  const StepOut oc = run_step(*cpu, sp, b, prune, recompute);
  const StepOut og = run_step(*gpu, sp, b, prune, recompute);
  EXPECT_NEAR(og.loss, oc.loss, 1e-4 * std::fabs(oc.loss));
  EXPECT_EQ(og.correct, oc.correct);
  expect_close(og.logits, oc.logits, 1e-3, 1e-3, "logits");
  expect_close(og.stats, oc.stats, 1e-4, 1e-3, "BN running statistics");
  ASSERT_EQ(og.grad.size(), oc.grad.size());
  double d2 = 0, n2 = 0, ninf = 0;
  for (size_t i = 0; i < oc.grad.size(); ++i) {
    const double d = static_cast<double>(og.grad[i]) - oc.grad[i];
    d2 += d * d;
    n2 += static_cast<double>(oc.grad[i]) * oc.grad[i];
    ninf = std::max(ninf, std::fabs(static_cast<double>(oc.grad[i])));
  }
  EXPECT_LE(std::sqrt(d2), 1e-3 * std::sqrt(n2)) << "‖g_cuda − g_cpu‖₂ / ‖g_cpu‖₂ = " << std::sqrt(d2 / n2);
  expect_close(og.grad, oc.grad, 2e-3 * ninf, 1e-2, "flat gradient");
}

INSTANTIATE_TEST_SUITE_P(ShareXPruneXRecompute, SupergraphCuda,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(), ::testing::Bool()));

TEST_F(CudaVsCpu, TrainStepIsBitReproducible) {
  for (const char* preset : {"tiny", "bench_fmnist"}) {
    SCOPED_TRACE(preset);
    SearchSpace sp = SearchSpace::preset_named(preset);
    const Batch b = random_batch(sp, preset[0] == 't' ? 8 : 32, 4);
    // two identical steps on one supergraph, then a fresh supergraph and backend
    Supergraph g(sp, *gpu, 23);
    randomize_lambda(g, 5, 0.2);
    StepResult r1 = g.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true);
    Vec g1(static_cast<size_t>(g.flat_grad().numel())), g2(g1.size()), g3(g1.size());
    gpu->download(g.flat_grad(), g1.data());
    const Vec l1 = g.last_logits();
    StepResult r2 = g.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true);
    gpu->download(g.flat_grad(), g2.data());
    EXPECT_EQ(r1.loss_sum, r2.loss_sum);
    EXPECT_TRUE(same_bits(g1, g2)) << "two identical train_steps gave different gradients";
    EXPECT_TRUE(same_bits(l1, g.last_logits()));
    auto gpu2 = make_backend(Device::CUDA, 1);
    Supergraph h(sp, *gpu2, 23);
    randomize_lambda(h, 5, 0.2);
    StepResult r3 = h.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true);
    gpu2->download(h.flat_grad(), g3.data());
    EXPECT_EQ(r1.loss_sum, r3.loss_sum);
    EXPECT_TRUE(same_bits(g1, g3)) << "a second backend instance gave different gradients";
  }
}

TEST_F(CudaVsCpu, EvalBatchMatchesCpu) {
  SearchSpace sp = SearchSpace::preset_named("tiny");
  const Batch b = random_batch(sp, 8, 9);
  Supergraph gc(sp, *cpu, 31), gg(sp, *gpu, 31);
  gc.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true);  // moves the running statistics
  gg.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true);
  std::vector<float> lc, lg;
  StepResult rc = gc.eval_batch(b.x.data(), b.y.data(), b.n, &lc);
  StepResult rg = gg.eval_batch(b.x.data(), b.y.data(), b.n, &lg);
  EXPECT_NEAR(rg.loss_sum, rc.loss_sum, 1e-4 * std::fabs(rc.loss_sum));
  expect_close(lg, lc, 1e-3, 1e-3, "eval logits");
}

// ---- --gpu-math tf32 | bf16 ---------------------------------------------------------------------------------
// Tensor-core math rounds each GEMM input to p mantissa bits (TF32: 10,
// bfloat16: 7) and accumulates in FP32.  Whatever rounding the conversion uses
// (to nearest, or toward zero), one output of a K-term product then obeys
//   |got − exact| ≤ (2·2^-p + K·2^-23)·Σ_l |a_l·b_l|,
// and FP32 FMA math the same with p = 23.  cuBLAS may still pick a non-tensor
// kernel for a shape ("allows", not "forces"): the test prints what it saw.

class MathCuda : public CudaVsCpu, public ::testing::WithParamInterface<GpuMath> {
 protected:
  void SetUp() override {
    REQUIRE_GPU();
    cpu = make_backend(Device::CPU, 0);
    gpu = make_backend(Device::CUDA, 1);
    gm = make_backend(Device::CUDA, 1, GetParam());
  }
  std::unique_ptr<Backend> gm;
};

/// max over outputs of |got − exact| / Σ|a·b| (the error in units of the
/// product's magnitude); fails the test where the bound `unit` is exceeded.
double worst_rel(const Vec& got, const std::vector<double>& exact, const std::vector<double>& mag, double unit,
                 const std::string& what) {
  double worst = 0;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double r = std::fabs(got[i] - exact[i]) / std::max(mag[i], 1e-30);
    worst = std::max(worst, r);
    if (!(r <= unit) && bad++ < 5)
      ADD_FAILURE() << what << ": [" << i << "] got " << got[i] << " exact " << exact[i] << " (" << r << " > " << unit
                    << ")";
  }
  return worst;
}

TEST_P(MathCuda, PointwiseConvWithinTheFormatsBound) {
  const GpuMath m = GetParam();
  const int p = m == GpuMath::TF32 ? 10 : 7;
  EXPECT_NE(gm->name().find(str("math ", gpu_math_name(m))), std::string::npos) << gm->name();
  EXPECT_NE(gpu->name().find("math fp32"), std::string::npos) << gpu->name();
  ConvDesc d;
  d.cin = 256, d.cout = 96, d.k = 1;
  const int N = 8, H = 12, W = 12;
  const int64_t cols = static_cast<int64_t>(N) * H * W;
  const Shape xs{d.cin, N, H, W}, ys{d.cout, N, H, W};
  const Vec x = rand_vec(static_cast<size_t>(shape_numel(xs)), 21),
            w = rand_vec(static_cast<size_t>(d.cout * d.cin), 22),
            dy = rand_vec(static_cast<size_t>(shape_numel(ys)), 23);
  // exact products and their magnitudes, in double: y = W·X, dx = Wᵀ·dy (CNHW: c·cols + col)
  std::vector<double> y_ex(dy.size()), y_mag(dy.size()), dx_ex(x.size()), dx_mag(x.size());
  for (int co = 0; co < d.cout; ++co)
    for (int ci = 0; ci < d.cin; ++ci) {
      const double wv = w[static_cast<size_t>(co * d.cin + ci)];
      for (int64_t j = 0; j < cols; ++j) {
        const size_t yi = static_cast<size_t>(co * cols + j), xi = static_cast<size_t>(ci * cols + j);
        y_ex[yi] += wv * x[xi];
        y_mag[yi] += std::fabs(wv * x[xi]);
        dx_ex[xi] += wv * dy[yi];
        dx_mag[xi] += std::fabs(wv * dy[yi]);
      }
    }
  auto run = [&](Backend& be, Vec* y, Vec* dx) {
    Tensor tx = put(be, xs, x), tw = put(be, d.weight_shape(), w), tdy = put(be, ys, dy);
    Tensor ty = be.alloc(ys), tdx = be.alloc(xs);
    be.conv_forward(d, tx, tw, ty, 1.f, 0.f);
    be.conv_backward_data(d, tdy, tw, tdx, 1.f, 0.f);
    *y = get(be, ty);
    *dx = get(be, tdx);
  };
  Vec y32, dx32, ym, dxm, ym2, dxm2;
  run(*gpu, &y32, &dx32);
  run(*gm, &ym, &dxm);
  run(*gm, &ym2, &dxm2);
  const double u32 = 2 * std::ldexp(1.0, -23) + d.cin * std::ldexp(1.0, -23);
  const double um = 2 * std::ldexp(1.0, -p) + d.cin * std::ldexp(1.0, -23);
  const double f32 = worst_rel(y32, y_ex, y_mag, u32, "fp32 forward");
  worst_rel(dx32, dx_ex, dx_mag, u32, "fp32 backward-data");
  const double fm = worst_rel(ym, y_ex, y_mag, um, str(gpu_math_name(m), " forward"));
  const double bm = worst_rel(dxm, dx_ex, dx_mag, um, str(gpu_math_name(m), " backward-data"));
  EXPECT_TRUE(same_bits(ym, ym2) && same_bits(dxm, dxm2)) << "the same GEMM twice gave different bits";
  // what happened, for the record: error ≫ FP32's means the inputs were rounded
  std::cout << "[ INFO     ] " << gpu_math_name(m) << ": max |got − exact| / Σ|a·b| forward " << fm
            << ", backward-data " << bm << " (fp32 " << f32 << ", 2^-" << p << " = " << std::ldexp(1.0, -p) << "): "
            << (fm > 16 * std::max(f32, std::ldexp(1.0, -24)) ? "tensor-core rounding seen"
                                                              : "no rounding seen (cuBLAS chose FP32 kernels)")
            << std::endl;
}

TEST_P(MathCuda, TrainStepNearFp32AndBitReproducible) {
  const GpuMath m = GetParam();
  // first-run bounds, to be tightened from the printed figures: TF32 keeps 3
  // more mantissa bits than bfloat16, so its deviation should be ~8× smaller
  const double loss_tol = m == GpuMath::TF32 ? 1e-2 : 5e-2, grad_tol = m == GpuMath::TF32 ? 5e-2 : 0.25;
  for (const char* preset : {"tiny", "bench_fmnist"}) {
    SCOPED_TRACE(preset);
    SearchSpace sp = SearchSpace::preset_named(preset);
    const Batch b = random_batch(sp, preset[0] == 't' ? 8 : 32, 6);
    const StepOut o32 = run_step(*gpu, sp, b, true, false);
    const StepOut om = run_step(*gm, sp, b, true, false);
    const StepOut om2 = run_step(*gm, sp, b, true, false);
    EXPECT_EQ(om.loss, om2.loss);
    EXPECT_TRUE(same_bits(om.grad, om2.grad)) << "two identical steps under " << gpu_math_name(m) << " differ";
    EXPECT_NEAR(om.loss, o32.loss, loss_tol * std::fabs(o32.loss));
    ASSERT_EQ(om.grad.size(), o32.grad.size());
    double d2 = 0, n2 = 0;
    for (size_t i = 0; i < o32.grad.size(); ++i) {
      const double dd = static_cast<double>(om.grad[i]) - o32.grad[i];
      d2 += dd * dd;
      n2 += static_cast<double>(o32.grad[i]) * o32.grad[i];
    }
    const double rel = std::sqrt(d2 / std::max(n2, 1e-300));
    EXPECT_LE(rel, grad_tol) << "‖g_" << gpu_math_name(m) << " − g_fp32‖₂ / ‖g_fp32‖₂";
    std::cout << "[ INFO     ] " << preset << " " << gpu_math_name(m) << ": loss " << om.loss << " vs fp32 " << o32.loss
              << ", gradient relative L2 deviation " << rel << std::endl;
  }
}

INSTANTIATE_TEST_SUITE_P(TensorCores, MathCuda, ::testing::Values(GpuMath::TF32, GpuMath::BF16),
                         [](const ::testing::TestParamInfo<GpuMath>& i) {
                           return std::string(gpu_math_name(i.param));
                         });

// NCCL plumbing on the one GPU of the test machine (it has no MPI, and NCCL
// refuses two ranks on one device, so the 2-rank sum runs only on a cluster;
// the reducer's 2-rank logic is tested on the CPU, tests/unit/
// test_fake_reducer.cpp).  Every NCCL test has "Nccl" in its name:
// tests/gpu/run_on_gpu.sh runs them in a process of their own, after the
// others, with NCCL_SOCKET_IFNAME=lo and a short cap (NCCL's socket bootstrap
// may hang on a machine without a network):
// a 1-rank communicator, buckets enqueued asynchronously behind work on the
// default stream, then waited for; a sum over one rank leaves the values.
TEST_F(CudaVsCpu, NcclOneRankBucketsInOrder) {
  NcclId id{};
  nccl_get_unique_id(&id);
  NcclComm* comm = nccl_init(id, 0, 1);
  const Vec v = rand_vec(1 << 20, 77);
  Tensor x = g({1 << 20}, v), t = gpu->alloc({1 << 20});
  gpu->add(x, x, t);  // on the default stream, just before the buckets
  for (int64_t lo = (1 << 20) - 300000; lo > -300000; lo -= 300000) {
    const int64_t a = std::max<int64_t>(0, lo);
    nccl_sum_async(comm, t.data() + a, std::min<int64_t>(lo + 300000, 1 << 20) - a);
  }
  nccl_wait(comm);
  Vec want = v;
  for (float& e : want) e *= 2.f;
  EXPECT_TRUE(same_bits(gv(t), want));
  nccl_sum(comm, t.data(), t.numel());
  EXPECT_TRUE(same_bits(gv(t), want));
  nccl_destroy(comm);
}

// GradReducer's buckets through NCCL on one rank: the reducer's bucketing
// (tested for 2 ranks on the CPU with a fake transport, tests/unit/
// test_fake_reducer.cpp) drives ncclAllReduce on the communicator's stream,
// each bucket ordered after the default-stream work that produced it.
class OneRankNccl final : public ReduceTransport {
 public:
  explicit OneRankNccl(NcclComm* c) : c_(c) {}
  void start(float* d, int64_t n) override {
    nccl_sum_async(c_, d, n);
    ++started;
  }
  void wait() override { nccl_wait(c_); }
  int started = 0;

 private:
  NcclComm* c_;
};

TEST_F(CudaVsCpu, NcclOneRankGradReducerBuckets) {
  NcclId id{};
  nccl_get_unique_id(&id);
  NcclComm* comm = nccl_init(id, 0, 1);
  const int64_t n = 1000003;
  const Vec v = rand_vec(static_cast<size_t>(n), 78);
  Tensor x = g({n}, v), flat = gpu->alloc({n});
  OneRankNccl t(comm);
  {
    GradReducer red(t, flat, 300000);
    red.begin(0, n);
    gpu->add(x, x, flat);  // the "backward": on the default stream, just before the hook
    red.ready(n - 300000);
    red.ready(0);
    red.finish();
  }
  EXPECT_EQ(t.started, 4);
  Vec want = v;
  for (float& e : want) e *= 2.f;
  EXPECT_TRUE(same_bits(gv(flat), want));
  nccl_destroy(comm);
}

// ---- review additions ----------------------------------------------------------------------------------------

// cuDNN's plan descriptor is shared by the three directions and each run sets
// its direction's math type on it.  The algorithm (and workspace) chosen for a
// direction must not depend on which direction ran first: two backends that
// call the directions in opposite orders give the same bits, under every
// --gpu-math (before the fix, tf32/bf16 asked the backward heuristics and the
// workspace sizes under the math type the previous direction left behind).
TEST_F(CudaVsCpu, CudnnChoiceIndependentOfCallOrder) {
  ConvDesc d{16, 24, 3, 1, 1, 1};
  const int N = 4, H = 14, W = 14;
  const Shape xs{d.cin, N, H, W}, ys{d.cout, N, H, W};
  const Vec x = rand_vec(static_cast<size_t>(shape_numel(xs)), 31),
            w = rand_vec(static_cast<size_t>(shape_numel(d.weight_shape())), 32),
            dy = rand_vec(static_cast<size_t>(shape_numel(ys)), 33);
  Tensor cx = c(xs, x), cw = c(d.weight_shape(), w), cdy = c(ys, dy), cy = cpu->alloc(ys), cdx = cpu->alloc(xs),
         cdw = cpu->alloc(d.weight_shape());
  cpu->conv_forward(d, cx, cw, cy);
  cpu->conv_backward_data(d, cdy, cw, cdx);
  cpu->conv_backward_filter(d, cx, cdy, cdw);
  for (GpuMath m : {GpuMath::FP32, GpuMath::TF32, GpuMath::BF16}) {
    SCOPED_TRACE(gpu_math_name(m));
    ScopedEnv conv("DSONAS_CUDA_CONV", "auto");
    auto run = [&](bool forward_first, Vec* y, Vec* dx, Vec* dwv) {
      std::unique_ptr<Backend> be = make_backend(Device::CUDA, 1, m);
      Tensor gx = put(*be, xs, x), gw = put(*be, d.weight_shape(), w), gdy = put(*be, ys, dy), gy = be->alloc(ys),
             gdx = be->alloc(xs), gdw = be->alloc(d.weight_shape());
      if (forward_first) {
        be->conv_forward(d, gx, gw, gy);
        be->conv_backward_data(d, gdy, gw, gdx);
        be->conv_backward_filter(d, gx, gdy, gdw);
      } else {
        be->conv_backward_filter(d, gx, gdy, gdw);
        be->conv_backward_data(d, gdy, gw, gdx);
        be->conv_forward(d, gx, gw, gy);
      }
      *y = get(*be, gy);
      *dx = get(*be, gdx);
      *dwv = get(*be, gdw);
    };
    Vec y1, dx1, dw1, y2, dx2, dw2;
    run(true, &y1, &dx1, &dw1);
    run(false, &y2, &dx2, &dw2);
    EXPECT_TRUE(same_bits(y1, y2)) << "forward depends on the call order";
    EXPECT_TRUE(same_bits(dx1, dx2)) << "backward-data depends on the call order";
    EXPECT_TRUE(same_bits(dw1, dw2)) << "backward-filter depends on the call order";
    // tf32 keeps 10 mantissa bits (≈ 1e-3 relative per product), bf16 for cuDNN is tf32 too
    const double frac = m == GpuMath::FP32 ? 2e-5 : 2e-2;
    expect_close_max(y1, cv(cy), frac, 1e-4, "forward");
    expect_close_max(dx1, cv(cdx), frac, 1e-4, "backward-data");
    expect_close_max(dw1, cv(cdw), frac, 1e-4, "backward-filter");
  }
}

// The two-pass reduction runs segments in launches of at most 65535 (gridDim.y):
// GAP over C·N > 65535 planes (ImageNet's last stage: 1024 channels × batch 64
// = 65536) and a depthwise filter gradient with C·k² > 65535 taps take the
// second launch, which writes the partials of the first one again.
TEST_F(CudaVsCpu, ReductionsOverMoreThan65535Segments) {
  {
    const int C = 260, N = 256, H = 2, W = 3;  // 66560 planes
    const Shape xs{C, N, H, W};
    const Vec x = rand_vec(static_cast<size_t>(shape_numel(xs)), 51);
    Tensor cx = c(xs, x), gx = g(xs, x), cy = cpu->alloc({N, C}), gy = gnan({N, C});
    cpu->global_avg_pool_forward(cx, cy);
    gpu->global_avg_pool_forward(gx, gy);
    expect_close(gv(gy), cv(cy), 1e-6, 1e-6, "global_avg_pool_forward, 66560 planes");
  }
  {
    ConvDesc d{1400, 1400, 7, 1, 3, 1400};  // 1400·49 = 68600 filter taps
    const int N = 2, H = 5, W = 4;
    const Shape xs{d.cin, N, H, W};
    const Vec x = rand_vec(static_cast<size_t>(shape_numel(xs)), 52), dy = rand_vec(x.size(), 53),
              dw0 = rand_vec(static_cast<size_t>(shape_numel(d.weight_shape())), 54);
    Tensor cx = c(xs, x), gx = g(xs, x), cdy = c(xs, dy), gdy = g(xs, dy), cdw = c(d.weight_shape(), dw0),
           gdw = g(d.weight_shape(), dw0);
    cpu->conv_backward_filter(d, cx, cdy, cdw, 0.5f, 1.f);
    gpu->conv_backward_filter(d, gx, gdy, gdw, 0.5f, 1.f);
    expect_close_max(gv(gdw), cv(cdw), 2e-5, 1e-4, "depthwise backward-filter, 68600 taps");
  }
}

// ---- host code on the GPU path (review of src/model, src/io, src/run) ------------------------------------------

/// ‖got − want‖₂ ≤ 1e-3·‖want‖₂ and elementwise within 2e-3·‖want‖∞ + 1e-2·|want|, as for the supergraph step.
void expect_grad_close(const Vec& got, const Vec& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double d2 = 0, n2 = 0, ninf = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    d2 += d * d;
    n2 += static_cast<double>(want[i]) * want[i];
    ninf = std::max(ninf, std::fabs(static_cast<double>(want[i])));
  }
  EXPECT_LE(std::sqrt(d2), 1e-3 * std::sqrt(n2)) << what << ": relative L2 " << std::sqrt(d2 / std::max(n2, 1e-300));
  expect_close(got, want, 2e-3 * ninf, 1e-2, what);
}

Vec bn_stats_of(Backend& be, std::vector<BnStats>& stats) {
  Vec out;
  for (BnStats& s : stats)
    for (const Tensor* t : {&s.mean, &s.var}) {
      Vec h(static_cast<size_t>(t->numel()));
      be.download(*t, h.data());
      out.insert(out.end(), h.begin(), h.end());
    }
  return out;
}

/// The retrain Network (the path `dsonas retrain` / `eval` run with --device cuda) had no
/// device test: two training steps with every retraining extra on (aux head, classifier
/// dropout, drop-path on edges and branches, label smoothing, a rank's sample_base), NAG in
/// between, then inference; CUDA against the CPU.
TEST_F(CudaVsCpu, RetrainNetworkStepsMatchCpu) {
  SearchSpace sp = SearchSpace::preset_named("tiny");
  sp.in_height = sp.in_width = 12;  // 6×6 after the reduction: room for the aux head
  Rng r(11, 17);
  std::vector<float> lam(static_cast<size_t>(sp.total_lambda()));
  for (float& x : lam) x = r.uniform() < 0.3 ? 0.f : 0.1f + r.uniform();
  const Architecture arch = Architecture::from_lambda(sp, lam.data(), nullptr);
  NetworkOptions o;
  o.dropout = 0.3;
  o.drop_path = 0.6;
  o.aux_head = true;
  o.aux_mid_channels = 8;
  o.aux_out_channels = 16;
  o.label_smoothing = 0.1;
  Network nc(arch, *cpu, 5, o), ng(arch, *gpu, 5, o);
  ASSERT_FALSE(ng.drop_path_sites().empty());
  const Batch b1 = random_batch(sp, 8, 12), b2 = random_batch(sp, 8, 13);
  const std::vector<float> wds = nc.weight_decays(1e-4f);
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE(testing::Message() << "step " << step);
    const Batch& b = step ? b2 : b1;
    const NetStepResult rc = nc.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 40 + step, 1.0, 16);
    const NetStepResult rg = ng.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 40 + step, 1.0, 16);
    EXPECT_NEAR(rg.loss_sum, rc.loss_sum, 1e-4 * std::fabs(rc.loss_sum));
    EXPECT_NEAR(rg.aux_loss_sum, rc.aux_loss_sum, 1e-4 * std::fabs(rc.aux_loss_sum));
    EXPECT_EQ(rg.correct, rc.correct);
    expect_close(ng.last_logits(), nc.last_logits(), 1e-3, 1e-3, "logits");
    expect_close(ng.last_aux_logits(), nc.last_aux_logits(), 1e-3, 1e-3, "aux logits");
    expect_grad_close(gv(ng.flat_grad()), cv(nc.flat_grad()), "flat gradient");
    expect_close(bn_stats_of(*gpu, ng.bn_stats()), bn_stats_of(*cpu, nc.bn_stats()), 1e-4, 1e-3,
                 "BN running statistics");
    for (size_t i = 0; i < nc.params().size(); ++i) {  // the optimiser step of `dsonas retrain`
      Param &pc = nc.params()[i], &pg = ng.params()[i];
      cpu->nag_update(pc.value, pc.grad, pc.momentum, 0.1f, 0.9f, wds[i]);
      gpu->nag_update(pg.value, pg.grad, pg.momentum, 0.1f, 0.9f, wds[i]);
    }
  }
  std::vector<float> lc, lg;
  const NetStepResult ec = nc.eval_batch(b1.x.data(), b1.y.data(), b1.n, &lc);
  const NetStepResult eg = ng.eval_batch(b1.x.data(), b1.y.data(), b1.n, &lg);
  EXPECT_NEAR(eg.loss_sum, ec.loss_sum, 1e-4 * std::fabs(ec.loss_sum));
  expect_close(lg, lc, 1e-3, 1e-3, "eval logits");
}

/// Checkpoints of models living on the GPU: every tensor is downloaded before HDF5 writes it
/// and uploaded after it is read.  A CUDA supergraph's checkpoint loads into a CPU one bit
/// for bit (and back into a CUDA one); the same for a retrain Network.
TEST_F(CudaVsCpu, CheckpointsOfDeviceModelsRoundTripBitForBit) {
  char tmpl[] = "/tmp/dsonas_gpu_ckpt_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  auto values = [](Backend& be, std::vector<Param>& ps, bool momentum) {
    Vec out;
    for (Param& p : ps) {
      if (momentum && p.frozen) continue;
      const Tensor& t = momentum ? p.momentum : p.value;
      Vec h(static_cast<size_t>(t.numel()));
      be.download(t, h.data());
      out.insert(out.end(), h.begin(), h.end());
    }
    return out;
  };
  {
    const SearchSpace sp = SearchSpace::preset_named("tiny");
    const Batch b = random_batch(sp, 8, 21);
    Supergraph gg(sp, *gpu, 3);
    randomize_lambda(gg, 7, 0.3);
    gg.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, false);  // moves the running statistics
    for (Param& p : gg.params())
      if (!p.frozen) gpu->nag_update(p.value, p.grad, p.momentum, 0.05f, 0.9f, 1e-4f);
    ModelFileInfo info;
    info.stage = "search";
    info.step = 3;
    TrainState ts;
    ts.lambda_v.assign(gg.lambda().size(), 0.25f);
    ts.counters["step"] = 3;
    const std::string path = dir + "/sg.h5";
    save_model_file(path, gg, info, &ts);
    Supergraph gc(sp, *cpu, 99), gg2(sp, *gpu, 98);
    TrainState tc, tg;
    load_model_file(path, gc, true, &tc);
    load_model_file(path, gg2, true, &tg);
    EXPECT_TRUE(same_bits(values(*cpu, gc.params(), false), values(*gpu, gg.params(), false))) << "parameters";
    EXPECT_TRUE(same_bits(values(*cpu, gc.params(), true), values(*gpu, gg.params(), true))) << "momenta";
    EXPECT_TRUE(same_bits(bn_stats_of(*cpu, gc.bn_stats()), bn_stats_of(*gpu, gg.bn_stats()))) << "BN statistics";
    EXPECT_TRUE(same_bits(values(*gpu, gg2.params(), false), values(*gpu, gg.params(), false))) << "back on the GPU";
    EXPECT_TRUE(same_bits(values(*gpu, gg2.params(), true), values(*gpu, gg.params(), true))) << "momenta on the GPU";
    EXPECT_EQ(gc.lambda(), gg.lambda());
    EXPECT_EQ(gc.mask(), gg.mask());
    EXPECT_EQ(tc.lambda_v, ts.lambda_v);
    std::remove(path.c_str());
  }
  {
    SearchSpace sp = SearchSpace::preset_named("tiny");
    sp.in_height = sp.in_width = 12;
    std::vector<float> ones(static_cast<size_t>(sp.total_lambda()), 1.f);
    NetworkOptions o;
    o.aux_head = true;
    o.aux_mid_channels = 8;
    o.aux_out_channels = 16;
    const Architecture arch = Architecture::from_lambda(sp, ones.data(), nullptr);
    const Batch b = random_batch(sp, 8, 22);
    Network ng(arch, *gpu, 4, o);
    ng.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 0, 0.0);
    for (Param& p : ng.params()) gpu->nag_update(p.value, p.grad, p.momentum, 0.05f, 0.9f, 1e-4f);
    NetworkFileInfo info;
    info.step = 1;
    TrainState ts;
    ts.counters["step"] = 1;
    const std::string path = dir + "/net.h5";
    save_network_file(path, ng, info, &ts);
    Network nc(arch, *cpu, 77, o);
    TrainState tc;
    load_network_file(path, nc, &tc);
    EXPECT_TRUE(same_bits(values(*cpu, nc.params(), false), values(*gpu, ng.params(), false))) << "parameters";
    EXPECT_TRUE(same_bits(values(*cpu, nc.params(), true), values(*gpu, ng.params(), true))) << "momenta";
    EXPECT_TRUE(same_bits(bn_stats_of(*cpu, nc.bn_stats()), bn_stats_of(*gpu, ng.bn_stats()))) << "BN statistics";
    EXPECT_EQ(tc.counters["step"], 1);
    std::remove(path.c_str());
  }
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace dsonas
