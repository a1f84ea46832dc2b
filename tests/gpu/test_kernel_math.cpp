// test_kernel_math.cpp — the CUDA backend's arithmetic, checked on the host.
//
// The CUDA kernels are thin loops around the functions of
// src/backend/cuda/kernel_math.hpp (per-element bodies, GEMM plans, BN
// finalisers, the softmax row, the λ-sum launch plans).  These tests run those
// functions on the CPU over every index — and every GEMM plan through a host
// SGEMM with cuBLAS's exact semantics — and compare with CpuBackend.  They need
// no GPU and run on every machine: what they cannot check is the CUDA runtime,
// cuBLAS and cuDNN themselves (test_backend_cuda.cpp does, on a GPU).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "gpu_test_util.hpp"

namespace dsonas {
namespace {

using gputest::expect_close;
using gputest::host_sgemm;
using gputest::lin;
using gputest::rand_vec;
using gputest::Vec;

class KernelMath : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> cpu = make_backend(Device::CPU, 2);
  Tensor make(const Shape& s, const Vec& v) {
    Tensor t = cpu->alloc(s);
    EXPECT_EQ(static_cast<size_t>(t.numel()), v.size());
    cpu->upload(v.data(), t);
    return t;
  }
  static Vec get(const Tensor& t) { return Vec(t.data(), t.data() + t.numel()); }
};

// ---- hashing and layout ---------------------------------------------------------------

TEST_F(KernelMath, Mix64AndDropoutMatchHost) {
  std::mt19937_64 g(7);
  for (int i = 0; i < 1000; ++i) {
    const uint64_t a = g(), b = g(), c = g();
    ASSERT_EQ(km::mix64(a, b, c), mix64(a, b, c));
    ASSERT_EQ(km::splitmix64(a), splitmix64(a));
  }
  const int64_t n = 3001;
  Vec x = rand_vec(static_cast<size_t>(n), 3);
  Tensor tx = make({n}, x), ty = cpu->alloc({n});
  const float p = 0.3f;
  const uint64_t key = 0x1234abcdull;
  const int64_t base = 777;
  cpu->dropout_apply(tx, p, key, base, ty);
  const float keep = 1.f - p, inv = 1.f / keep;
  Vec want = get(ty);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(km::dropout_elem(x[static_cast<size_t>(i)], keep, inv, key, base, i), want[static_cast<size_t>(i)]) << i;
}

TEST_F(KernelMath, LayoutConversion) {
  const int N = 3, C = 4, H = 5, W = 6;
  const int64_t HW = H * W, total = int64_t(N) * C * HW;
  Vec x = rand_vec(static_cast<size_t>(total), 1);
  Tensor t = cpu->act_from_nchw(x.data(), N, C, H, W);
  const Vec cnhw = get(t);
  for (int64_t e = 0; e < total; ++e) {
    ASSERT_EQ(cnhw[static_cast<size_t>(e)], x[static_cast<size_t>(km::cnhw_src_in_nchw(e, C, N, HW))]) << e;
    ASSERT_EQ(x[static_cast<size_t>(e)], cnhw[static_cast<size_t>(km::nchw_src_in_cnhw(e, C, N, HW))]) << e;
  }
}

// ---- convolutions ------------------------------------------------------------------------------

struct ConvCase {
  int cin, cout, k, s, p, groups, N, H, W;
};

void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << "cin" << c.cin << " cout" << c.cout << " k" << c.k << " s" << c.s << " p" << c.p << " g" << c.groups << " N"
      << c.N << " H" << c.H << " W" << c.W;
}

km::Geom geom_of(const ConvCase& c) {
  ConvDesc d{c.cin, c.cout, c.k, c.s, c.p, c.groups};
  km::Geom g;
  g.C = c.cin;
  g.Cout = c.cout;
  g.N = c.N;
  g.H = c.H;
  g.W = c.W;
  g.Ho = d.out_size(c.H);
  g.Wo = d.out_size(c.W);
  g.k = c.k;
  g.s = c.s;
  g.p = c.p;
  return g;
}

class ConvMath : public KernelMath, public ::testing::WithParamInterface<ConvCase> {};

/// Depthwise kernels' element functions (runtime k and compile-time k) against CpuBackend.
template <int KK>
void check_depthwise(const km::Geom& g, const Vec& x, const Vec& w, const Vec& dy, const Vec& yref, const Vec& dxref,
                     const Vec& dwref) {
  Vec y(yref.size()), dx(dxref.size()), dw(dwref.size());
  for (int64_t e = 0; e < static_cast<int64_t>(y.size()); ++e)
    y[static_cast<size_t>(e)] = km::dw_fwd_elem<KK>(x.data(), w.data(), g, e);
  for (int64_t e = 0; e < static_cast<int64_t>(dx.size()); ++e)
    dx[static_cast<size_t>(e)] = km::dw_bwd_data_elem<KK>(dy.data(), w.data(), g, e);
  const int taps = g.k * g.k;
  const int64_t Q = static_cast<int64_t>(g.N) * g.Ho * g.Wo;
  for (int c = 0; c < g.C; ++c)
    for (int t = 0; t < taps; ++t) {
      double s = 0;
      for (int64_t q = 0; q < Q; ++q) s += km::dw_filter_term(x.data(), dy.data(), g, c, t, q);
      dw[static_cast<size_t>(c * taps + t)] = static_cast<float>(s);
    }
  const std::string tag = KK ? " (compile-time k)" : " (runtime k)";
  expect_close(y, yref, 1e-5, 1e-4, "depthwise forward" + tag);
  expect_close(dx, dxref, 1e-5, 1e-4, "depthwise backward-data" + tag);
  expect_close(dw, dwref, 1e-4, 1e-4, "depthwise backward-filter" + tag);
}

TEST_P(ConvMath, ElementFunctionsAndGemmPlansMatchCpu) {
  const ConvCase cc = GetParam();
  const ConvDesc d{cc.cin, cc.cout, cc.k, cc.s, cc.p, cc.groups};
  const km::Geom g = geom_of(cc);
  const int64_t HoWo = int64_t(g.Ho) * g.Wo, HW = int64_t(g.H) * g.W;
  Vec x = rand_vec(static_cast<size_t>(cc.cin) * cc.N * HW, 11);
  Vec w = rand_vec(static_cast<size_t>(shape_numel(d.weight_shape())), 12);
  Vec dy = rand_vec(static_cast<size_t>(cc.cout) * cc.N * HoWo, 13);
  Tensor tx = make({cc.cin, cc.N, cc.H, cc.W}, x), tw = make(d.weight_shape(), w),
         tdy = make({cc.cout, cc.N, g.Ho, g.Wo}, dy);
  Tensor ty = cpu->alloc(tdy.shape()), tdx = cpu->alloc(tx.shape()), tdw = cpu->alloc(tw.shape());
  cpu->conv_forward(d, tx, tw, ty);
  cpu->conv_backward_data(d, tdy, tw, tdx);
  cpu->conv_backward_filter(d, tx, tdy, tdw);
  const Vec yref = get(ty), dxref = get(tdx), dwref = get(tdw);

  if (d.depthwise()) {
    check_depthwise<0>(g, x, w, dy, yref, dxref, dwref);
    if (cc.k == 3) check_depthwise<3>(g, x, w, dy, yref, dxref, dwref);
    if (cc.k == 5) check_depthwise<5>(g, x, w, dy, yref, dxref, dwref);
    if (cc.k == 7) check_depthwise<7>(g, x, w, dy, yref, dxref, dwref);
    return;
  }

  const float alpha = 0.75f, beta = 0.5f;
  const Vec y0 = rand_vec(yref.size(), 14), dx0 = rand_vec(dxref.size(), 15), dw0 = rand_vec(dwref.size(), 16);
  if (cc.k == 1 && cc.s == 1 && cc.p == 0) {
    // the whole-batch GEMMs of the 1×1 path
    const int cols = static_cast<int>(int64_t(cc.N) * HW);
    Vec y = y0, dx = dx0, dw = dw0;
    host_sgemm(km::gemm_conv1x1_fwd(cc.cin, cc.cout, cols), alpha, x.data(), w.data(), beta, y.data());
    host_sgemm(km::gemm_conv1x1_bwd_data(cc.cin, cc.cout, cols), alpha, dy.data(), w.data(), beta, dx.data());
    host_sgemm(km::gemm_conv1x1_bwd_filter(cc.cin, cc.cout, cols), alpha, x.data(), dy.data(), beta, dw.data());
    expect_close(y, lin(alpha, yref, beta, y0), 1e-5, 1e-4, "1x1 forward plan");
    expect_close(dx, lin(alpha, dxref, beta, dx0), 1e-5, 1e-4, "1x1 backward-data plan");
    expect_close(dw, lin(alpha, dwref, beta, dw0), 1e-4, 1e-4, "1x1 backward-filter plan");
  }
  // the im2col + GEMM path, in chunks of `per` images (1, 2 and all of them)
  const int64_t CKK = int64_t(cc.cin) * cc.k * cc.k;
  for (int per : {1, 2, cc.N}) {
    SCOPED_TRACE(testing::Message() << per << " images per chunk");
    Vec y = y0, dx = dx0, dw = dw0;
    for (int n0 = 0; n0 < cc.N; n0 += per) {
      const int nc = std::min(per, cc.N - n0);
      const int64_t cols = HoWo * nc;
      Vec col(static_cast<size_t>(CKK * cols));
      for (int64_t q = 0; q < static_cast<int64_t>(col.size()); ++q)
        col[static_cast<size_t>(q)] = km::im2col_elem(x.data(), g, n0, nc, q);
      host_sgemm(km::gemm_im2col_fwd(g, n0, nc), alpha, col.data(), w.data(), beta, y.data());
      host_sgemm(km::gemm_im2col_bwd_filter(g, n0, nc), alpha, col.data(), dy.data(), n0 == 0 ? beta : 1.f, dw.data());
      Vec colg(col.size(), std::numeric_limits<float>::quiet_NaN());
      host_sgemm(km::gemm_im2col_bwd_data(g, n0, nc), 1.f, dy.data(), w.data(), 0.f, colg.data());
      const int64_t total = int64_t(cc.cin) * nc * HW;
      std::vector<bool> seen(dx.size(), false);
      for (int64_t e = 0; e < total; ++e) {
        int64_t dst = -1;
        const float v = km::col2im_elem(colg.data(), g, nc, e, &dst, n0);
        ASSERT_GE(dst, 0);
        ASSERT_LT(dst, static_cast<int64_t>(dx.size()));
        ASSERT_FALSE(seen[static_cast<size_t>(dst)]) << "col2im writes an element twice";
        seen[static_cast<size_t>(dst)] = true;
        dx[static_cast<size_t>(dst)] = alpha * v + beta * dx[static_cast<size_t>(dst)];
      }
    }
    expect_close(y, lin(alpha, yref, beta, y0), 1e-5, 1e-4, "im2col forward");
    expect_close(dx, lin(alpha, dxref, beta, dx0), 1e-5, 1e-4, "im2col backward-data");
    expect_close(dw, lin(alpha, dwref, beta, dw0), 1e-4, 1e-4, "im2col backward-filter");
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConvMath,
                         ::testing::Values(ConvCase{3, 3, 3, 1, 1, 3, 2, 5, 7},    // depthwise 3x3
                                           ConvCase{3, 3, 5, 1, 2, 3, 2, 5, 7},    // depthwise 5x5
                                           ConvCase{3, 3, 3, 2, 1, 3, 2, 7, 9},    // depthwise 3x3 stride 2
                                           ConvCase{4, 4, 5, 2, 2, 4, 2, 5, 7},    // depthwise 5x5 stride 2
                                           ConvCase{3, 3, 3, 1, 0, 3, 1, 4, 6},    // depthwise, no pad
                                           ConvCase{3, 3, 3, 1, 2, 3, 2, 5, 7},    // depthwise, pad k-1
                                           ConvCase{2, 2, 7, 1, 3, 2, 2, 9, 17},   // depthwise 7x7
                                           ConvCase{2, 2, 1, 1, 0, 2, 2, 5, 7},    // depthwise 1x1
                                           ConvCase{5, 5, 3, 2, 1, 5, 3, 8, 6},    // depthwise stride 2, even sizes
                                           ConvCase{3, 4, 1, 1, 0, 1, 2, 5, 7},    // pointwise
                                           ConvCase{3, 4, 1, 2, 0, 1, 2, 5, 7},    // 1x1 stride 2
                                           ConvCase{3, 4, 3, 1, 1, 1, 2, 5, 7},    // 3x3 dense
                                           ConvCase{3, 4, 3, 2, 1, 1, 3, 5, 7},    // 3x3 stride 2 odd
                                           ConvCase{2, 5, 3, 2, 1, 1, 3, 8, 6},    // 3x3 stride 2 even
                                           ConvCase{4, 3, 5, 1, 2, 1, 3, 6, 5}));  // 5x5 dense

// ---- linear -------------------------------------------------------------------------------------

TEST_F(KernelMath, LinearPlansMatchCpu) {
  const int N = 5, I = 7, O = 3;
  Vec x = rand_vec(N * I, 111), w = rand_vec(O * I, 112), b = rand_vec(O, 113), r = rand_vec(N * O, 114);
  Tensor tx = make({N, I}, x), tw = make({O, I}, w), tb = make({O}, b), tr = make({N, O}, r);
  Tensor ty = cpu->alloc({N, O}), tdx = cpu->alloc({N, I}), tdw = cpu->alloc({O, I}), tdb = cpu->alloc({O});
  cpu->linear_forward(tx, tw, tb, ty);
  cpu->linear_backward(tx, tw, tr, &tdx, &tdw, &tdb);
  Vec y(static_cast<size_t>(N * O));
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o) y[static_cast<size_t>(n * O + o)] = b[static_cast<size_t>(o)];
  host_sgemm(km::gemm_linear_fwd(N, I, O), 1.f, w.data(), x.data(), 1.f, y.data());
  expect_close(y, get(ty), 1e-6, 1e-5, "linear forward plan");
  Vec dx(static_cast<size_t>(N * I), std::numeric_limits<float>::quiet_NaN()),
      dw(static_cast<size_t>(O * I), std::numeric_limits<float>::quiet_NaN());
  host_sgemm(km::gemm_linear_bwd_data(N, I, O), 1.f, w.data(), r.data(), 0.f, dx.data());
  host_sgemm(km::gemm_linear_bwd_weight(N, I, O), 1.f, x.data(), r.data(), 0.f, dw.data());
  expect_close(dx, get(tdx), 1e-6, 1e-5, "linear backward-data plan");
  expect_close(dw, get(tdw), 1e-6, 1e-5, "linear backward-weight plan");
}

// ---- pooling ------------------------------------------------------------------------------------

struct PoolCase {
  bool max;
  int k, s, p, H, W;
};

void PrintTo(const PoolCase& c, std::ostream* os) {
  *os << (c.max ? "max" : "avg") << " k" << c.k << " s" << c.s << " p" << c.p << " H" << c.H << " W" << c.W;
}

class PoolMath : public KernelMath, public ::testing::WithParamInterface<PoolCase> {};

TEST_P(PoolMath, ElementFunctionsMatchCpu) {
  const PoolCase pc = GetParam();
  PoolDesc d;
  d.kind = pc.max ? PoolKind::Max : PoolKind::Avg;
  d.k = pc.k;
  d.stride = pc.s;
  d.pad = pc.p;
  const int N = 2, C = 3;
  km::Geom g;
  g.C = g.Cout = C;
  g.N = N;
  g.H = pc.H;
  g.W = pc.W;
  g.Ho = d.out_size(pc.H);
  g.Wo = d.out_size(pc.W);
  g.k = pc.k;
  g.s = pc.s;
  g.p = pc.p;
  for (int ties = 0; ties < 2; ++ties) {
    SCOPED_TRACE(ties ? "many ties" : "random");
    Vec x = rand_vec(static_cast<size_t>(C) * N * pc.H * pc.W, 31);
    if (ties) {
      std::mt19937 r(34);
      for (auto& v : x) v = static_cast<float>(r() % 3);
    }
    Vec dy = rand_vec(static_cast<size_t>(C) * N * g.Ho * g.Wo, 32);
    Tensor tx = make({C, N, pc.H, pc.W}, x), tdy = make({C, N, g.Ho, g.Wo}, dy);
    Tensor ty = cpu->alloc(tdy.shape()), tdx = cpu->alloc(tx.shape());
    cpu->pool_forward(d, tx, ty);
    cpu->pool_backward(d, tx, ty, tdy, tdx, 0.f);
    Vec y(dy.size()), dx(x.size());
    std::vector<int> am(dy.size());
    for (int64_t e = 0; e < static_cast<int64_t>(y.size()); ++e) {
      y[static_cast<size_t>(e)] = km::pool_fwd_elem(x.data(), g, pc.max, e);
      am[static_cast<size_t>(e)] = km::pool_argmax_elem(x.data(), g, e);
    }
    for (int64_t e = 0; e < static_cast<int64_t>(dx.size()); ++e)
      dx[static_cast<size_t>(e)] = km::pool_bwd_elem(dy.data(), am.data(), g, pc.max, e);
    expect_close(y, get(ty), 1e-6, 1e-5, "pool forward");
    expect_close(dx, get(tdx), 1e-6, 1e-5, "pool backward");
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, PoolMath,
                         ::testing::Values(PoolCase{true, 3, 1, 1, 5, 7}, PoolCase{false, 3, 1, 1, 5, 7},
                                           PoolCase{true, 3, 2, 1, 7, 9}, PoolCase{false, 3, 2, 1, 8, 6},
                                           PoolCase{true, 2, 2, 0, 6, 8}, PoolCase{false, 5, 1, 2, 9, 11},
                                           PoolCase{true, 5, 2, 2, 9, 10}, PoolCase{true, 3, 1, 0, 4, 4},
                                           PoolCase{true, 3, 1, 1, 5, 37}));

// ---- batch-norm ---------------------------------------------------------------------------------

TEST_F(KernelMath, BatchNormFinalisersMatchCpu) {
  const int C = 5, N = 3, H = 6, W = 7;
  const int64_t M = int64_t(N) * H * W;
  for (bool relu : {true, false}) {
    SCOPED_TRACE(relu ? "relu" : "no relu");
    Vec x = rand_vec(static_cast<size_t>(C * M), 41, -2.f, 3.f), gamma = rand_vec(C, 42, 0.5f, 1.5f),
        beta = rand_vec(C, 43), dy = rand_vec(x.size(), 44), rm0 = rand_vec(C, 45), rv0 = rand_vec(C, 46, 0.5f, 2.f);
    const float mom = 0.9f, eps = 2e-5f;
    Tensor tx = make({C, N, H, W}, x), tg = make({C}, gamma), tb = make({C}, beta), trm = make({C}, rm0),
           trv = make({C}, rv0), ty = cpu->alloc(tx.shape()), tsm = cpu->alloc({C}), tsi = cpu->alloc({C});
    cpu->bn_forward_train(tx, tg, tb, trm, trv, mom, eps, ty, tsm, tsi, relu);
    Vec y(x.size()), rm = rm0, rv = rv0, sm(C), si(C), sc(C), sh(C);
    for (int c = 0; c < C; ++c) {
      double s1 = 0, s2 = 0;
      for (int64_t i = 0; i < M; ++i) {
        const double v = x[static_cast<size_t>(c * M + i)];
        s1 += v;
        s2 += v * v;
      }
      km::bn_train_finalize(s1, s2, M, gamma[c], beta[c], mom, eps, &rm[c], &rv[c], &sm[c], &si[c], &sc[c], &sh[c]);
      for (int64_t i = 0; i < M; ++i)
        y[static_cast<size_t>(c * M + i)] = km::bn_apply_elem(x[static_cast<size_t>(c * M + i)], sc[c], sh[c], relu);
    }
    expect_close(y, get(ty), 1e-5, 1e-5, "bn train y");
    expect_close(rm, get(trm), 1e-6, 1e-6, "bn running mean");
    expect_close(rv, get(trv), 1e-6, 1e-6, "bn running var");
    expect_close(sm, get(tsm), 1e-6, 1e-6, "bn save mean");
    expect_close(si, get(tsi), 1e-6, 1e-6, "bn save invstd");

    Tensor tyi = cpu->alloc(tx.shape());
    cpu->bn_forward_infer(tx, tg, tb, trm, trv, eps, tyi, relu);
    Vec yi(x.size());
    for (int c = 0; c < C; ++c) {
      float a, b;
      km::bn_infer_coef(gamma[c], beta[c], rm[c], rv[c], eps, &a, &b);
      for (int64_t i = 0; i < M; ++i)
        yi[static_cast<size_t>(c * M + i)] = km::bn_apply_elem(x[static_cast<size_t>(c * M + i)], a, b, relu);
    }
    expect_close(yi, get(tyi), 1e-6, 1e-6, "bn infer");

    Tensor tdy = make(tx.shape(), dy), tdx = cpu->alloc(tx.shape()), tdg = cpu->alloc({C}), tdb = cpu->alloc({C});
    cpu->bn_backward(tx, ty, tdy, tg, tsm, tsi, tdx, &tdg, &tdb, relu, 0.f);
    const Vec yv = get(ty);
    Vec dx(x.size()), dg(C), db(C);
    for (int c = 0; c < C; ++c) {
      double sg = 0, sgx = 0;
      for (int64_t i = 0; i < M; ++i) {
        const size_t e = static_cast<size_t>(c * M + i);
        const double gv = km::bn_masked_grad(dy[e], yv[e], relu);
        sg += gv;
        sgx += gv * x[e];
      }
      float a, b, c0;
      km::bn_backward_finalize(sg, sgx, M, gamma[c], sm[c], si[c], &dg[c], &db[c], &a, &b, &c0);
      for (int64_t i = 0; i < M; ++i) {
        const size_t e = static_cast<size_t>(c * M + i);
        dx[e] = a * km::bn_masked_grad(dy[e], yv[e], relu) + b * x[e] + c0;
      }
    }
    expect_close(dx, get(tdx), 1e-5, 1e-4, "bn backward dx");
    expect_close(dg, get(tdg), 1e-4, 1e-5, "bn backward dgamma");
    expect_close(db, get(tdb), 1e-4, 1e-5, "bn backward dbeta");
  }
}

// ---- softmax cross-entropy -----------------------------------------------------------------------

TEST_F(KernelMath, SoftmaxRowMatchesCpu) {
  const int N = 6, K = 7;
  Vec z = rand_vec(N * K, 121, -3.f, 3.f);
  z[2 * K + 1] = 100.f;
  z[2 * K + 3] = 100.f;  // tie: first max counts
  std::vector<int32_t> lab = {0, 4, 1, 2, 6, 3};
  Tensor tz = make({N, K}, z), tdz = cpu->alloc({N, K});
  for (float sm : {0.f, 0.1f}) {
    SCOPED_TRACE(sm);
    double loss = 0;
    int64_t hits = 0;
    if (sm == 0.f)
      cpu->softmax_xent(tz, lab.data(), 0.5f, tdz, &loss, &hits);
    else
      cpu->softmax_xent_smoothed(tz, lab.data(), sm, 0.5f, tdz, &loss, &hits);
    Vec dz(z.size());
    double l = 0;
    int64_t h = 0;
    for (int n = 0; n < N; ++n) {
      int hit = 0;
      l += km::softmax_xent_row(z.data() + n * K, K, lab[static_cast<size_t>(n)], sm != 0.f, 1.0 - sm,
                                static_cast<double>(sm) / (K - 1), 0.5f, dz.data() + n * K, &hit);
      h += hit;
    }
    EXPECT_NEAR(l, loss, 1e-9 * (1 + std::fabs(loss)));
    EXPECT_EQ(h, hits);
    expect_close(dz, get(tdz), 1e-7, 1e-6, "softmax dlogits");
  }
}

// ---- λ-weighted sums: the launch plans -------------------------------------------------------------

/// Runs a plan the way the kernel does (one "thread" per element index).
void run_plan(const std::vector<km::WsArgs>& plan, int64_t n) {
  for (const km::WsArgs& a : plan)
    for (int64_t i = 0; i < n; ++i) km::wsum_elem(a, i);
}

TEST_F(KernelMath, WsumPlansMatchCpu) {
  // J and K beyond one launch (8 outputs, 32 inputs) exercise the grouping.
  for (auto jk : {std::pair<int, int>{3, 5}, std::pair<int, int>{11, 40}, std::pair<int, int>{9, 70}}) {
    const int J = jk.first, K = jk.second;
    SCOPED_TRACE(testing::Message() << "J=" << J << " K=" << K);
    const int64_t n = 257;
    Vec lam = rand_vec(static_cast<size_t>(J * K), 61);
    std::mt19937 r(62);
    std::vector<uint8_t> live(static_cast<size_t>(J * K));
    for (auto& v : live) v = (r() % 3) != 0;
    for (int k = 0; k < K; ++k) live[static_cast<size_t>(1 * K + k)] = 0;  // row 1 dead
    for (int j = 0; j < J; ++j) live[static_cast<size_t>(j * K + 3)] = 0;  // column 3 dead
    std::vector<Tensor> tx(static_cast<size_t>(K)), ty(static_cast<size_t>(J)), tdy(static_cast<size_t>(J)),
        tdx(static_cast<size_t>(K));
    std::vector<Vec> hy(static_cast<size_t>(J)), hdx(static_cast<size_t>(K));
    std::vector<const Tensor*> xs(static_cast<size_t>(K)), dys(static_cast<size_t>(J));
    std::vector<Tensor*> ys(static_cast<size_t>(J)), dxs(static_cast<size_t>(K));
    std::vector<const float*> xin(static_cast<size_t>(K)), dyin(static_cast<size_t>(J));
    for (int k = 0; k < K; ++k) {
      tx[static_cast<size_t>(k)] = make({n}, rand_vec(static_cast<size_t>(n), 100 + static_cast<uint32_t>(k)));
      xs[static_cast<size_t>(k)] = k == 3 ? nullptr : &tx[static_cast<size_t>(k)];
      xin[static_cast<size_t>(k)] = tx[static_cast<size_t>(k)].data();
      const Vec d0 = rand_vec(static_cast<size_t>(n), 300 + static_cast<uint32_t>(k));
      tdx[static_cast<size_t>(k)] = make({n}, d0);
      hdx[static_cast<size_t>(k)] = d0;
      dxs[static_cast<size_t>(k)] = k == 2 ? nullptr : &tdx[static_cast<size_t>(k)];
    }
    for (int j = 0; j < J; ++j) {
      ty[static_cast<size_t>(j)] = cpu->alloc({n});
      ys[static_cast<size_t>(j)] = &ty[static_cast<size_t>(j)];
      hy[static_cast<size_t>(j)] = Vec(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
      tdy[static_cast<size_t>(j)] = make({n}, rand_vec(static_cast<size_t>(n), 200 + static_cast<uint32_t>(j)));
      dys[static_cast<size_t>(j)] = j == 1 ? nullptr : &tdy[static_cast<size_t>(j)];
      dyin[static_cast<size_t>(j)] = tdy[static_cast<size_t>(j)].data();
    }
    cpu->wsum_forward(J, K, lam.data(), live.data(), xs, ys);
    cpu->wsum_backward(J, K, lam.data(), live.data(), xs, dys, dxs, nullptr);
    // forward rows as CudaBackend::wsum_forward builds them
    std::vector<km::WsRow> rows;
    for (int j = 0; j < J; ++j) {
      km::WsRow row;
      row.out = hy[static_cast<size_t>(j)].data();
      for (int k = 0; k < K; ++k)
        if (live[static_cast<size_t>(j * K + k)]) row.terms.emplace_back(k, lam[static_cast<size_t>(j * K + k)]);
      if (row.terms.empty())
        std::fill(hy[static_cast<size_t>(j)].begin(), hy[static_cast<size_t>(j)].end(), 0.f);
      else
        rows.push_back(row);
    }
    const auto plan = km::wsum_plan(rows, xin);
    if (K > km::kWsIn || J > km::kWsOut) {
      EXPECT_GT(plan.size(), 1u);
    }
    run_plan(plan, n);
    for (int j = 0; j < J; ++j)
      expect_close(hy[static_cast<size_t>(j)], get(ty[static_cast<size_t>(j)]), 1e-6, 1e-5, "wsum forward");
    // backward dx rows
    std::vector<km::WsRow> brows;
    for (int k = 0; k < K; ++k) {
      if (k == 2) continue;
      km::WsRow row;
      row.out = hdx[static_cast<size_t>(k)].data();
      row.accumulate = true;
      for (int j = 0; j < J; ++j)
        if (live[static_cast<size_t>(j * K + k)]) row.terms.emplace_back(j, lam[static_cast<size_t>(j * K + k)]);
      if (!row.terms.empty()) brows.push_back(row);
    }
    run_plan(km::wsum_plan(brows, dyin), n);
    for (int k = 0; k < K; ++k)
      if (k != 2)
        expect_close(hdx[static_cast<size_t>(k)], get(tdx[static_cast<size_t>(k)]), 1e-6, 1e-5, "wsum backward dx");
  }
}

// ---- concatenation and per-sample scaling ------------------------------------------------------------

TEST_F(KernelMath, ConcatIndexAndScaleIndexMatchCpu) {
  for (int J : {3, 70}) {
    SCOPED_TRACE(J);
    const int O = 4, I = 5;
    std::vector<Tensor> w(static_cast<size_t>(J));
    std::vector<const Tensor*> ws;
    Vec scale = rand_vec(static_cast<size_t>(J), 9);
    scale[1] = 0.f;
    for (int j = 0; j < J; ++j) {
      w[static_cast<size_t>(j)] = make({O, I, 1, 1}, rand_vec(O * I, 10 + static_cast<uint32_t>(j)));
      ws.push_back(&w[static_cast<size_t>(j)]);
    }
    Tensor out = cpu->alloc({O, J * I, 1, 1});
    cpu->concat_scaled_columns(ws, scale.data(), out);
    Vec got(static_cast<size_t>(O * J * I), std::numeric_limits<float>::quiet_NaN());
    for (int j0 = 0; j0 < J; j0 += km::kCat) {
      km::CatArgs a;
      std::memset(&a, 0, sizeof(a));
      a.j0 = j0;
      a.jn = std::min(km::kCat, J - j0);
      for (int jj = 0; jj < a.jn; ++jj) {
        a.w[jj] = w[static_cast<size_t>(j0 + jj)].data();
        a.s[jj] = scale[static_cast<size_t>(j0 + jj)];
      }
      for (int64_t e = 0; e < int64_t(O) * a.jn * I; ++e) {
        int64_t jj, wi, ci;
        km::concat_index(a, e, I, J, &jj, &wi, &ci);
        got[static_cast<size_t>(ci)] = a.s[jj] == 0.f ? 0.f : a.s[jj] * a.w[jj][wi];
      }
    }
    expect_close(got, get(out), 0, 0, "concat_scaled_columns");
  }
  const int C = 6, N = 3, H = 2, W = 3;
  for (int groups : {1, 2, 3, 6}) {
    Vec x = rand_vec(static_cast<size_t>(C * N * H * W), 5), s = rand_vec(static_cast<size_t>(groups * N), 6);
    Tensor tx = make({C, N, H, W}, x), ty = cpu->alloc(tx.shape());
    cpu->scale_samples(tx, groups, s.data(), ty, 0.f);
    Vec y(x.size());
    for (int64_t e = 0; e < static_cast<int64_t>(x.size()); ++e)
      y[static_cast<size_t>(e)] =
          s[static_cast<size_t>(km::scale_index(e, N, H * W, C / groups))] * x[static_cast<size_t>(e)];
    expect_close(y, get(ty), 0, 0, "scale_samples");
  }
}

}  // namespace
}  // namespace dsonas

namespace dsonas {
namespace {

// The reference rounding of the --gpu-math tests (gpu_test_util.hpp), on
// values whose TF32 / bfloat16 roundings are known.
TEST(GpuMathHost, RoundMantissaToNearestEven) {
  using gputest::round_mantissa;
  const float e7 = std::ldexp(1.f, -7), e8 = std::ldexp(1.f, -8), e10 = std::ldexp(1.f, -10),
              e11 = std::ldexp(1.f, -11);
  EXPECT_EQ(round_mantissa(1.f + e7, 7), 1.f + e7);               // representable
  EXPECT_EQ(round_mantissa(1.f + e8, 7), 1.f);                    // tie, to even (down)
  EXPECT_EQ(round_mantissa(1.f + e7 + e8, 7), 1.f + 2 * e7);      // tie, to even (up)
  EXPECT_EQ(round_mantissa(1.f + e8 + e11, 7), 1.f + e7);         // above the tie
  EXPECT_EQ(round_mantissa(-(1.f + e8 + e11), 7), -(1.f + e7));   // sign kept
  EXPECT_EQ(round_mantissa(1.f + e11, 10), 1.f);                  // TF32 tie, down
  EXPECT_EQ(round_mantissa(1.f + e10 + e11, 10), 1.f + 2 * e10);  // TF32 tie, up
  EXPECT_EQ(round_mantissa(2.f - e8 / 2, 7), 2.f);                // carry into the exponent
  EXPECT_EQ(round_mantissa(3.14159265f, 23), 3.14159265f);
  EXPECT_EQ(round_mantissa(3.14159265f, 7), 3.140625f);  // bfloat16(π) = 0x4049
  EXPECT_TRUE(std::isinf(round_mantissa(std::numeric_limits<float>::infinity(), 7)));
  EXPECT_TRUE(std::isnan(round_mantissa(std::numeric_limits<float>::quiet_NaN(), 7)));
  // relative error at most 2^-(bits+1) on random values
  const Vec v = rand_vec(10000, 77, -1e3f, 1e3f);
  for (int bits : {7, 10})
    for (float x : v)
      ASSERT_LE(std::fabs(static_cast<double>(round_mantissa(x, bits)) - x), std::ldexp(std::fabs(x), -(bits + 1)))
          << x << " bits " << bits;
}

}  // namespace
}  // namespace dsonas
