// test_network.cpp — the retrain-time Network (docs/method.md §2.3–2.4, §6.3) and its
// backend primitives: label-smoothed cross-entropy, counter-based dropout and
// per-sample scaling against naive references and finite differences; MACs and
// parameters against the Architecture's §11.1 counts; parameter names against the
// Supergraph's; the whole network's gradient by finite differences (aux head, label
// smoothing, then dropout and drop-path at a fixed step); drop-path and dropout
// statistics; equality with the Supergraph at λ = 1; HDF5 save / load / inspect.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/core/version.hpp"
#include "dsonas/io/model_file.hpp"
#include "dsonas/io/network_file.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/network.hpp"
#include "dsonas/model/supergraph.hpp"
#include "dsonas/optim/optimizer.hpp"
#include "dsonas/model/prune.hpp"
#include "dsonas/run/inspect.hpp"
#include "gradcheck.hpp"
#include "kink_backend.hpp"
#include "test_util.hpp"

using namespace dsonas;
using dsonas_test::TempDir;
using dsonas_test::usage_error;

namespace {

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

std::vector<float> host(Backend& be, const Tensor& t) {
  std::vector<float> h(static_cast<size_t>(t.numel()));
  be.download(t, h.data());
  return h;
}

Tensor upload(Backend& be, const std::vector<float>& h, const Shape& s) {
  Tensor t = be.alloc(s);
  be.upload(h.data(), t);
  return t;
}

std::vector<float> randn(size_t n, uint64_t seed, double sigma = 1.0) {
  Rng r(seed, 3);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(sigma * r.normal());
  return v;
}

template <class F>
double fd4(F&& f, double h) {
  return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h);
}

/// The tiny space (L = 3, N = 4, widths 4/8) on 12×12 inputs: 6×6 after the reduction,
/// big enough for the aux head's 5×5 pooling.
SearchSpace aux_space() {
  SearchSpace s = SearchSpace::preset_named("tiny");
  s.in_height = s.in_width = 12;
  return s;
}

Architecture random_arch(const SearchSpace& sp, uint64_t seed, double zero_frac) {
  Rng r(seed, 17);
  std::vector<float> v(static_cast<size_t>(sp.total_lambda()));
  for (float& x : v) x = r.uniform() < zero_frac ? 0.f : 0.1f + r.uniform();
  return Architecture::from_lambda(sp, v.data(), nullptr);
}

/// A random architecture whose blocks exercise every code path: a multi-input op, a
/// single-input op at level ≥ 2, an op alive only as an internal node, an empty-free net.
Architecture rich_arch(const SearchSpace& sp) {
  for (uint64_t seed = 1; seed < 200; ++seed) {
    const Architecture a = random_arch(sp, seed, 0.45);
    bool multi = false, single = false, internal = false, empty = false;
    for (const ArchBlock& b : a.blocks()) {
      empty = empty || b.empty;
      for (const ArchOp& o : b.ops) {
        multi = multi || o.inputs.size() > 1;
        single = single || (o.level > 1 && o.inputs.size() == 1);
        internal = internal || !o.output;
      }
    }
    if (multi && single && internal && !empty) return a;
  }
  ADD_FAILURE() << "no random architecture with every feature";
  return random_arch(sp, 1, 0.45);
}

double objective(Network& net, const Batch& b, int64_t step, double progress) {
  const NetStepResult r = net.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, step, progress);
  return (r.loss_sum + net.options().aux_weight * r.aux_loss_sum) / b.n;
}

constexpr uint64_t kDropoutStream = 0x64726f706f7574ull;  // backend.hpp

}  // namespace

// ---- backend primitives ----------------------------------------------------------------

TEST(NetworkPrimitives, SoftmaxXentSmoothedHandValues) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  const std::vector<float> z = {1.f, 2.f, 3.f, -1.f, 0.5f, 0.25f};
  const std::vector<int32_t> lab = {0, 1};
  Tensor logits = upload(*be, z, {2, 3}), dz = be->alloc({2, 3});
  double loss = 0;
  int64_t hits = 0;
  be->softmax_xent_smoothed(logits, lab.data(), 0.1f, 0.5f, dz, &loss, &hits);
  // MXNet smooth_alpha: q = 0.9 on the label, 0.1/(3−1) = 0.05 on each other class.
  const double lse0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  const double lse1 = std::log(std::exp(-1.0) + std::exp(0.5) + std::exp(0.25));
  const double l0 = lse0 - (0.9 * 1 + 0.05 * 2 + 0.05 * 3);
  const double l1 = lse1 - (0.05 * -1 + 0.9 * 0.5 + 0.05 * 0.25);
  EXPECT_NEAR(loss, l0 + l1, 1e-9);
  EXPECT_EQ(hits, 1);  // row 0: argmax 2 ≠ 0; row 1: argmax 1 = label
  const double q[2][3] = {{0.9, 0.05, 0.05}, {0.05, 0.9, 0.05}};
  const double lse[2] = {lse0, lse1};
  const std::vector<float> g = host(*be, dz);
  for (int n = 0; n < 2; ++n)
    for (int k = 0; k < 3; ++k)
      EXPECT_NEAR(g[static_cast<size_t>(3 * n + k)],
                  0.5 * (std::exp(z[static_cast<size_t>(3 * n + k)] - lse[n]) - q[n][k]), 1e-7);

  // smoothing 0 is softmax_xent exactly
  Tensor d0 = be->alloc({2, 3}), d1 = be->alloc({2, 3});
  double s0 = 0, s1 = 0;
  int64_t c0 = 0, c1 = 0;
  be->softmax_xent_smoothed(logits, lab.data(), 0.f, 0.25f, d0, &s0, &c0);
  be->softmax_xent(logits, lab.data(), 0.25f, d1, &s1, &c1);
  EXPECT_EQ(s0, s1);
  EXPECT_EQ(c0, c1);
  EXPECT_EQ(host(*be, d0), host(*be, d1));

  // finite differences of Σ CE in the logits
  const int N = 5, K = 7;
  std::vector<float> zz = randn(N * K, 4, 2.0);
  std::vector<int32_t> ll = {0, 6, 3, 3, 1};
  Tensor zt = upload(*be, zz, {N, K}), dt = be->alloc({N, K});
  be->softmax_xent_smoothed(zt, ll.data(), 0.2f, 1.f, dt, nullptr, nullptr);
  const std::vector<float> ana = host(*be, dt);
  auto f = [&] {
    be->upload(zz.data(), zt);
    double s = 0;
    be->softmax_xent_smoothed(zt, ll.data(), 0.2f, 1.f, dt, &s, nullptr);
    return s;
  };
  const test::GradCheckResult res = test::check_gradient(zz.data(), zz.size(), ana.data(), f);
  EXPECT_TRUE(res.ok()) << res.summary();

  const std::vector<int32_t> bad = {0, 3};
  EXPECT_NE(usage_error([&] {
              be->softmax_xent_smoothed(logits, bad.data(), 0.1f, 1.f, dz, nullptr, nullptr);
            }).find("label 3 at index 1"),
            std::string::npos);
}

TEST(NetworkPrimitives, DropoutMatchesReferenceAndStatistics) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  const int R = 64, C = 50;
  const std::vector<float> xh = randn(R * C, 1);
  Tensor x = upload(*be, xh, {R, C}), y = be->alloc({R, C});
  const uint64_t key = 0x1234abcdull;
  be->dropout_apply(x, 0.4f, key, 100, y);
  const std::vector<float> yh = host(*be, y);
  const float keep = 1.f - 0.4f;
  int dropped = 0;
  for (int i = 0; i < R * C; ++i) {  // the documented mask, computed naively
    const float u = static_cast<float>(mix64(key, kDropoutStream, static_cast<uint64_t>(100 + i)) >> 40) / 16777216.0f;
    const float want = u < keep ? xh[static_cast<size_t>(i)] * (1.f / keep) : 0.f;
    ASSERT_EQ(yh[static_cast<size_t>(i)], want) << i;
    dropped += !(u < keep);
  }
  EXPECT_GT(dropped, 0);
  // in place, and the index base addresses the same mask: rows 2.. are rows 2.. of the whole
  Tensor z = upload(*be, xh, {R, C});
  be->dropout_apply(z, 0.4f, key, 100, z);
  EXPECT_EQ(host(*be, z), yh);
  Tensor part = x.view(2 * C, {R - 2, C}), ypart = be->alloc({R - 2, C});
  be->dropout_apply(part, 0.4f, key, 100 + 2 * C, ypart);
  EXPECT_EQ(host(*be, ypart), std::vector<float>(yh.begin() + 2 * C, yh.end()));
  // another key, another mask; p = 0 is the identity
  Tensor y2 = be->alloc({R, C});
  be->dropout_apply(x, 0.4f, key + 1, 100, y2);
  EXPECT_NE(host(*be, y2), yh);
  be->dropout_apply(x, 0.f, key, 100, y2);
  EXPECT_EQ(host(*be, y2), xh);

  // statistics: drop rate p, kept values 1/(1 − p), mean 1 (inverted dropout)
  const int64_t M = 200000;
  Tensor ones = be->alloc({M});
  be->fill(ones, 1.f);
  Tensor out = be->alloc({M});
  be->dropout_apply(ones, 0.4f, 77, 0, out);
  int64_t zeros = 0;
  double sum = 0;
  for (float v : host(*be, out)) {
    if (v == 0.f)
      ++zeros;
    else
      EXPECT_EQ(v, 1.f / 0.6f);
    sum += v;
  }
  EXPECT_NEAR(static_cast<double>(zeros) / M, 0.4, 0.006);  // 5σ
  EXPECT_NEAR(sum / M, 1.0, 0.01);

  // gradient: the backward is the same call on dy
  std::vector<float> xs = randn(30, 5), r = randn(30, 6);
  Tensor xt = upload(*be, xs, {30}), yt = be->alloc({30}), rt = upload(*be, r, {30}), gt = be->alloc({30});
  be->dropout_apply(rt, 0.5f, 9, 3, gt);
  const std::vector<float> ana = host(*be, gt);
  auto f = [&] {
    be->upload(xs.data(), xt);
    be->dropout_apply(xt, 0.5f, 9, 3, yt);
    return test::dot(r, host(*be, yt));
  };
  const test::GradCheckResult res = test::check_gradient(xs.data(), xs.size(), ana.data(), f);
  EXPECT_TRUE(res.ok()) << res.summary();
}

TEST(NetworkPrimitives, ScaleSamplesMatchesReference) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  const int C = 6, N = 4, H = 3, W = 2, G = 3;
  const std::vector<float> xh = randn(C * N * H * W, 1), sc = randn(G * N, 2), y0 = randn(C * N * H * W, 3);
  Tensor x = upload(*be, xh, {C, N, H, W}), y = be->alloc({C, N, H, W});
  be->scale_samples(x, G, sc.data(), y);
  std::vector<float> got = host(*be, y);
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < H * W; ++i) {
        const size_t e = static_cast<size_t>((c * N + n) * H * W + i);
        ASSERT_EQ(got[e], sc[static_cast<size_t>((c / (C / G)) * N + n)] * xh[e]);
      }
  Tensor acc = upload(*be, y0, {C, N, H, W});
  be->scale_samples(x, G, sc.data(), acc, 0.5f);
  got = host(*be, acc);
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < H * W; ++i) {
        const size_t e = static_cast<size_t>((c * N + n) * H * W + i);
        ASSERT_FLOAT_EQ(got[e], sc[static_cast<size_t>((c / (C / G)) * N + n)] * xh[e] + 0.5f * y0[e]);
      }
  Tensor inplace = upload(*be, xh, {C, N, H, W});
  be->scale_samples(inplace, G, sc.data(), inplace);
  EXPECT_EQ(host(*be, inplace), host(*be, y));

  std::vector<float> xs = xh;
  const std::vector<float> r = randn(xs.size(), 7);
  Tensor rt = upload(*be, r, {C, N, H, W}), gt = be->alloc({C, N, H, W});
  be->scale_samples(rt, G, sc.data(), gt);
  const std::vector<float> ana = host(*be, gt);
  auto f = [&] {
    be->upload(xs.data(), x);
    be->scale_samples(x, G, sc.data(), y);
    return test::dot(r, host(*be, y));
  };
  const test::GradCheckResult res = test::check_gradient(xs.data(), xs.size(), ana.data(), f);
  EXPECT_TRUE(res.ok()) << res.summary();
}

// ---- structure ----------------------------------------------------------------------------

TEST(NetworkCounts, MacsAndParamsEqualTheArchitecture) {
  auto be = make_backend(Device::CPU, 1);
  std::vector<Architecture> archs;
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    archs.push_back(random_arch(SearchSpace::preset_named("tiny"), seed, 0.2 * static_cast<double>(seed)));
    SearchSpace fm = SearchSpace::preset_named("fmnist");
    fm.share = seed == 2;
    archs.push_back(random_arch(fm, seed, 0.4));
  }
  archs.push_back(random_arch(SearchSpace::preset_named("tiny"), 4, 1.0));  // everything pruned
  archs.push_back(Architecture::baseline(SearchSpace::preset_named("fmnist")));
  archs.push_back(Architecture::baseline(SearchSpace::preset_named("cifar10")).at_width(8));
  archs.push_back(random_arch(SearchSpace::preset_named("imagenet"), 2, 0.5).at_width(6));
  for (int C : {4, 8, 12, 24}) archs.push_back(archs[1].at_width(C));
  for (const Architecture& a : archs) {
    Network net(a, *be, 1);
    EXPECT_DOUBLE_EQ(net.macs(), a.macs()) << a.space().preset << " C=" << a.space().stem_channels;
    EXPECT_DOUBLE_EQ(net.params_count(), a.params()) << a.space().preset << " C=" << a.space().stem_channels;
    EXPECT_EQ(net.aux_params_count(), 0.0);
    double n = 0;
    for (const Param& p : net.params()) n += static_cast<double>(p.value.numel());
    EXPECT_EQ(n, static_cast<double>(net.num_weights()));
  }
  // The aux head adds its own parameters only (it is dropped after training).
  NetworkOptions o;
  o.aux_head = true;
  Network aux(archs[1], *be, 1, o);
  EXPECT_DOUBLE_EQ(aux.params_count(), archs[1].params());
  EXPECT_DOUBLE_EQ(aux.macs(), archs[1].macs());
  const double F = 64, K = 10;  // fmnist: 64 channels, 7×7 after the last reduction
  EXPECT_DOUBLE_EQ(aux.aux_params_count(), 2 * F + F * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * K + K);
}

TEST(NetworkStructure, NamesShapesAndWeightDecay) {
  auto be = make_backend(Device::CPU, 1);
  const SearchSpace sp = SearchSpace::preset_named("tiny");
  Supergraph g(sp, *be, 1);
  const std::vector<float> ones(static_cast<size_t>(sp.total_lambda()), 1.f);
  for (const Architecture& a : {Architecture::from_lambda(sp, ones.data(), nullptr), random_arch(sp, 2, 0.4)}) {
    Network net(a, *be, 1);
    for (Param& p : net.params()) {
      Param& q = g.param(p.name);                             // same name in the Supergraph...
      EXPECT_EQ(p.value.shape(), q.value.shape()) << p.name;  // ...and the same shape
      EXPECT_FALSE(p.frozen) << p.name;
      EXPECT_TRUE(p.grad.defined() && p.momentum.defined()) << p.name;
    }
  }
  Network dense(Architecture::from_lambda(sp, ones.data(), nullptr), *be, 1);
  EXPECT_EQ(dense.params().size(), g.params().size()) << "λ = 1: every Supergraph tensor exists";
  const std::vector<float> wd = dense.weight_decays(1e-4f);
  ASSERT_EQ(wd.size(), dense.params().size());
  for (size_t i = 0; i < wd.size(); ++i) {
    const std::string& n = dense.params()[i].name;
    const bool decay =
        n.size() >= 6 && (n.compare(n.size() - 6, 6, "weight") == 0 || n.compare(n.size() - 5, 5, "gamma") == 0);
    EXPECT_EQ(wd[i], decay ? 1e-4f : 0.f) << n;
  }
  EXPECT_EQ(wd[static_cast<size_t>(&dense.param("s1/u1/l2/o1/bn/gamma") - dense.params().data())], 1e-4f)
      << "op-BN γ is learned and decayed in retraining (§4.2)";
  EXPECT_EQ(wd[static_cast<size_t>(&dense.param("head/fc/bias") - dense.params().data())], 0.f);
  EXPECT_EQ(wd[static_cast<size_t>(&dense.param("s1/u1/out/bn/beta") - dense.params().data())], 0.f);
}

// ---- equivalence with the Supergraph at λ = 1 -------------------------------------------

class NetworkEquivalence : public ::testing::TestWithParam<bool> {};

// A Network built from the live structure of λ ∈ {0, 1} (all ones, or a random pruned
// pattern), with the Supergraph's weights, computes what the Supergraph computes with
// those λ (γ = 1 in both): logits, loss, every weight gradient, and after the step the
// BN running statistics (inference logits).
TEST_P(NetworkEquivalence, SameNumbersAsTheSupergraph) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  SearchSpace sp = SearchSpace::preset_named("tiny");
  sp.normal_units = {2, 1};  // an identity shortcut too
  Supergraph g(sp, *be, 5);
  std::vector<float> lam(static_cast<size_t>(sp.total_lambda()), 1.f);
  std::vector<uint8_t> mask(lam.size(), 1);
  if (GetParam()) {
    Rng r(8, 1);
    for (float& l : lam) l = r.uniform() < 0.35 ? 0.f : 1.f;
    for (int s = 0; s < sp.num_reductions(); ++s) lam[static_cast<size_t>(sp.reduction_lambda_offset(s))] = 1.f;
    prune_all(sp, lam, mask);
    for (size_t i = 0; i < lam.size(); ++i) ASSERT_TRUE(mask[i] ? lam[i] == 1.f : lam[i] == 0.f);
  }
  g.lambda() = lam;
  g.mask() = mask;
  g.rebuild_plan();
  const Architecture a = Architecture::from_lambda(sp, lam.data(), mask.data());
  if (GetParam()) {
    EXPECT_LT(a.live_ops(), 3 * 4 * 3);
    bool internal = false;
    for (const ArchBlock& b : a.blocks())
      for (const ArchOp& o : b.ops) internal = internal || !o.output;
    EXPECT_TRUE(internal) << "the pattern should keep an op alive only as an internal node";
  }
  Network net(a, *be, 77);
  for (Param& p : net.params()) be->copy(g.param(p.name).value, p.value);
  const Batch b = random_batch(sp, 6, 3);
  const StepResult rg = g.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, false);
  const NetStepResult rn = net.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 0, 0.0);
  EXPECT_NEAR(rn.loss_sum, rg.loss_sum, 1e-5 * std::fabs(rg.loss_sum));
  EXPECT_EQ(rn.correct, rg.correct);
  const std::vector<float> lg = g.last_logits(), ln = net.last_logits();
  ASSERT_EQ(lg.size(), ln.size());
  for (size_t i = 0; i < lg.size(); ++i) EXPECT_NEAR(ln[i], lg[i], 1e-5f * (1 + std::fabs(lg[i]))) << i;
  int compared = 0;
  for (Param& p : net.params()) {
    Param& q = g.param(p.name);
    if (q.frozen) continue;  // γ fixed to 1 in the Supergraph: no gradient there
    const std::vector<float> gn = host(*be, p.grad), gg = host(*be, q.grad);
    for (size_t i = 0; i < gn.size(); ++i)
      ASSERT_NEAR(gn[i], gg[i], 1e-5f + 1e-4f * std::fabs(gg[i])) << p.name << "[" << i << "]";
    ++compared;
  }
  EXPECT_GT(compared, 20);
  std::vector<float> eg, en;
  g.eval_batch(b.x.data(), b.y.data(), b.n, &eg);
  net.eval_batch(b.x.data(), b.y.data(), b.n, &en);
  for (size_t i = 0; i < eg.size(); ++i) EXPECT_NEAR(en[i], eg[i], 1e-5f * (1 + std::fabs(eg[i]))) << i;
}
INSTANTIATE_TEST_SUITE_P(AllLiveAndPruned, NetworkEquivalence, ::testing::Values(false, true));

// ---- gradient ---------------------------------------------------------------------------

class NetworkGrad : public ::testing::TestWithParam<bool> {};

// The whole network's gradient (aux head on, label smoothing 0.1) against 4th-order
// finite differences of the objective, 3 random coordinates of every parameter tensor.
// With the parameter set, dropout and drop-path are on at a fixed step: their masks are
// pure functions of (seed, step, site, sample), so the objective is deterministic.
//
// Kinks: the objective is evaluated through KinkSignatureBackend with the ReLU masks and
// max-pool winners frozen at the point where the gradient was taken (kink_backend.hpp),
// so every finite difference is of one smooth function whose derivative at that point
// is the one backward computes.  No coordinate is skipped and which ones are checked
// does not depend on float rounding (an earlier version skipped coordinates whose secant
// slopes jumped; that count moved with the OpenBLAS kernel and tripped its quota).
//
// Error model for the tolerance |analytic − numeric| ≤ atol + rtol·|numeric|:
//  * rounding: the objective is computed to ε ≤ 4·u·|f| (u = 2⁻²⁴; checked below by
//    the spread of f about a straight line over steps of 2e-6, where the frozen
//    objective is linear to ~1e-12 — measured ≈ 3e-8 ≈ 0.3·u·|f|, 2026-12-07, under
//    three OpenBLAS kernels and both SIMD paths); the difference quotient's weights sum
//    to 18/12, so rounding moves it by ≤ 1.5·ε/h = 5.6e-5 at h = 1e-2 → atol 6e-5;
//  * truncation: O(h⁴·f⁽⁵⁾) of a smooth function, covered by rtol = 2 %.
TEST_P(NetworkGrad, FiniteDifferences) {
  auto cpu = make_backend(Device::CPU, dsonas_test::test_threads());
  dsonas_test::KinkSignatureBackend kinks(*cpu);
  Backend* be = &kinks;
  using Mode = dsonas_test::KinkSignatureBackend::Mode;
  const SearchSpace sp = aux_space();
  const Architecture a = rich_arch(sp);
  NetworkOptions o;
  o.aux_head = true;
  o.aux_mid_channels = 5;
  o.aux_out_channels = 6;
  o.label_smoothing = 0.1;
  const bool drop = GetParam();
  if (drop) {
    o.drop_path = 0.9;
    o.dropout = 0.3;
  }
  Network net(a, *be, 3, o);
  {  // the aux classifier starts at zero (§9): give it weights so that the aux path has gradients
    Param& w = net.param("aux/fc/weight");
    be->upload(randn(static_cast<size_t>(w.value.numel()), 21, 0.1).data(), w.value);
  }
  const Batch b = random_batch(sp, 6, 4);
  const int64_t step = 11;
  const double progress = 1.0;
  if (drop) {  // the step really drops paths
    int zeros = 0, kept_scaled = 0;
    for (const Network::DropPathSite& s : net.drop_path_sites())
      for (float v : net.drop_path_scales(s.name, s.block, step, progress, b.n, 0)) {
        zeros += v == 0.f;
        kept_scaled += v > 1.f;
      }
    EXPECT_GT(zeros, 0);
    EXPECT_GT(kept_scaled, 0);
  }
  kinks.set_mode(Mode::Record);
  const double f0 = objective(net, b, step, progress);
  std::vector<std::vector<float>> grads;
  for (Param& p : net.params()) grads.push_back(host(*be, p.grad));
  int relu_units = 0, relu_on = 0;
  kinks.set_mode(Mode::Replay);
  ASSERT_EQ(objective(net, b, step, progress), f0) << "the forward pass with its own kinks replayed is the same pass";
  ASSERT_TRUE(kinks.replay_complete());
  for (int32_t v : kinks.signature()) relu_units += v == 0 || v == 1, relu_on += v == 1;
  EXPECT_GT(relu_on, relu_units / 4) << "the ReLUs pass a good share of their units";
  EXPECT_LT(relu_on, relu_units * 3 / 4) << "and block a good share";

  const double u = std::ldexp(1.0, -24), eps = 4 * u * std::fabs(f0);
  const double h = 1e-2, atol = 1.5 * eps / h, rtol = 2e-2;
  Rng r(5, 6);
  int checked = 0, significant = 0, tensors = 0;
  double noise = 0;
  for (size_t pi = 0; pi < net.params().size(); ++pi) {
    Param& p = net.params()[pi];
    std::vector<float> w = host(*be, p.value);
    std::set<size_t> coords;  // distinct coordinates (all of a tensor with fewer)
    while (coords.size() < std::min<size_t>(3, w.size())) coords.insert(r.below(static_cast<uint32_t>(w.size())));
    for (size_t k : coords) {
      const float w0 = w[k];
      auto f = [&](double d) {  // returns the applied step too (w0 + d rounded to float)
        w[k] = w0 + static_cast<float>(d);
        const double applied = static_cast<double>(w[k]) - w0;
        be->upload(w.data(), p.value);
        kinks.start_pass();
        const double v = objective(net, b, step, progress);
        w[k] = w0;
        be->upload(w.data(), p.value);
        return std::make_pair(applied, v);
      };
      if (pi % 8 == 0 && k == *coords.begin()) {  // the rounding model: spread about a line
        std::vector<std::pair<double, double>> pts;
        for (int j = -8; j <= 8; ++j) pts.push_back(f(j * 2e-6));
        double mx = 0, my = 0, sxy = 0, sxx = 0;
        for (const auto& q : pts) mx += q.first / pts.size(), my += q.second / pts.size();
        for (const auto& q : pts) sxy += (q.first - mx) * (q.second - my), sxx += (q.first - mx) * (q.first - mx);
        for (const auto& q : pts) noise = std::max(noise, std::fabs(q.second - my - sxy / sxx * (q.first - mx)));
      }
      const double num = (-f(2 * h).second + 8 * f(h).second - 8 * f(-h).second + f(-2 * h).second) / (12 * h);
      const double an = grads[pi][k];
      EXPECT_NEAR(an, num, atol + rtol * std::fabs(num)) << p.name << "[" << k << "]";
      ++checked;
      significant += std::fabs(num) > 10 * atol;
    }
    tensors += !coords.empty();
  }
  EXPECT_LE(noise, eps) << "the objective's rounding exceeds the error model (4 u |f|)";
  EXPECT_GT(noise, 0.0) << "the rounding probe saw no rounding at all";
  EXPECT_EQ(tensors, static_cast<int>(net.params().size())) << "every tensor has checked coordinates";
  EXPECT_GE(significant * 2, checked) << "most checked derivatives must be far above the tolerance";
  EXPECT_TRUE(net.has_param("aux/conv2/weight"));
}
INSTANTIATE_TEST_SUITE_P(PlainAndDropping, NetworkGrad, ::testing::Values(false, true));

// ---- drop-path and dropout ----------------------------------------------------------------

TEST(NetworkDropPath, LayerScheduleKeepRateAndScaling) {
  auto be = make_backend(Device::CPU, 1);
  NetworkOptions o;
  o.drop_path = 0.5;
  const Architecture a = Architecture::baseline(SearchSpace::preset_named("cifar10")).at_width(8);
  Network net(a, *be, 1, o);
  // docs/method.md §2.4: p_final = 0.5·(n+1)/112, n = 36(s−1) + 4(u−1).
  EXPECT_NEAR(net.drop_path_final(0), 0.5 * 1 / 112, 1e-15);     // s1u1: 0.0045
  EXPECT_NEAR(net.drop_path_final(7), 0.5 * 29 / 112, 1e-15);    // s1u8: 0.129
  EXPECT_NEAR(net.drop_path_final(8), 0.5 * 37 / 112, 1e-15);    // s2u1: 0.165
  EXPECT_NEAR(net.drop_path_final(23), 0.5 * 101 / 112, 1e-15);  // s3u8: 0.451
  // chains have single-input ops: one site per block, its output branch
  ASSERT_EQ(net.drop_path_sites().size(), 24u);
  EXPECT_EQ(net.drop_path_sites()[0].name, "s1/u1/out/c13");
  EXPECT_EQ(net.drop_path_sites()[23].name, "s3/u8/out/c13");
  EXPECT_EQ(net.drop_path_sites()[23].block, 23);

  const std::string site = net.drop_path_sites()[23].name;
  const int M = 200000;
  for (double progress : {1.0, 0.5, 2.0}) {
    const double p = 0.5 * 101 / 112 * std::min(progress, 1.0);
    const std::vector<float> s = net.drop_path_scales(site, 23, 40, progress, M, 0);
    int zeros = 0;
    double sum = 0;
    for (float v : s) {
      if (v == 0.f)
        ++zeros;
      else
        ASSERT_EQ(v, static_cast<float>(1.0 / (1.0 - p)));
      sum += v;
    }
    EXPECT_NEAR(static_cast<double>(zeros) / M, p, 0.006) << progress;  // > 5σ
    EXPECT_NEAR(sum / M, 1.0, 0.01) << progress;
  }
  for (float v : net.drop_path_scales(site, 23, 40, 0.0, 1000, 0)) ASSERT_EQ(v, 1.f);  // progress 0: identity
  const std::vector<float> s1 = net.drop_path_scales(site, 23, 40, 1.0, 150, 0);
  EXPECT_EQ(net.drop_path_scales(site, 23, 40, 1.0, 150, 0), s1) << "a pure function of its key";
  EXPECT_NE(net.drop_path_scales(site, 23, 41, 1.0, 150, 0), s1) << "another step";
  EXPECT_NE(net.drop_path_scales(net.drop_path_sites()[22].name, 23, 40, 1.0, 150, 0), s1) << "another site";
  const std::vector<float> tail = net.drop_path_scales(site, 23, 40, 1.0, 50, 100);  // samples 100..149 (another rank)
  EXPECT_EQ(tail, std::vector<float>(s1.begin() + 100, s1.end()));
  Network other_seed(a, *be, 2, o);
  EXPECT_NE(other_seed.drop_path_scales(site, 23, 40, 1.0, 150, 0), s1);
}

TEST(NetworkDropPath, DeterministicAndOffAtProgressZero) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  const SearchSpace sp = aux_space();
  const Architecture a = rich_arch(sp);
  NetworkOptions dp;
  dp.drop_path = 0.9;
  const Batch b = random_batch(sp, 8, 2);
  bool has_edge_site = false;
  {
    Network probe(a, *be, 4, dp);
    for (const Network::DropPathSite& s : probe.drop_path_sites())
      has_edge_site = has_edge_site || s.name.find("/in/") != std::string::npos;
  }
  EXPECT_TRUE(has_edge_site) << "multi-input ops get a site per input edge";
  auto run = [&](const NetworkOptions& o, int64_t step, double progress) {
    Network net(a, *be, 4, o);
    net.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, step, progress);
    return std::make_pair(net.last_logits(), host(*be, net.flat_grad()));
  };
  const auto plain = run(NetworkOptions(), 5, 1.0);
  EXPECT_EQ(run(dp, 5, 0.0), plain) << "p = 0 at progress 0: the plain network, bit for bit";
  const auto d5 = run(dp, 5, 1.0);
  EXPECT_NE(d5.first, plain.first);
  EXPECT_EQ(run(dp, 5, 1.0), d5) << "same step, same masks, same numbers";
  EXPECT_NE(run(dp, 6, 1.0).first, d5.first);
  // inference ignores drop-path and dropout
  NetworkOptions both = dp;
  both.dropout = 0.5;
  Network n0(a, *be, 4), n1(a, *be, 4, both);
  std::vector<float> e0, e1;
  n0.eval_batch(b.x.data(), b.y.data(), b.n, &e0);
  n1.eval_batch(b.x.data(), b.y.data(), b.n, &e1);
  EXPECT_EQ(e0, e1);
}

TEST(NetworkDropout, ChangesTrainingOnlyAndFollowsTheStep) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  const SearchSpace sp = aux_space();
  const Architecture a = rich_arch(sp);
  NetworkOptions o;
  o.dropout = 0.4;
  const Batch b = random_batch(sp, 8, 2);
  Network plain(a, *be, 4), d1(a, *be, 4, o), d2(a, *be, 4, o);
  plain.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 3, 0.0);
  d1.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 3, 0.0);
  d2.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 3, 0.0);
  EXPECT_NE(d1.last_logits(), plain.last_logits());
  EXPECT_EQ(d1.last_logits(), d2.last_logits());
  EXPECT_EQ(host(*be, d1.flat_grad()), host(*be, d2.flat_grad()));
  d2.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 4, 0.0);
  d1.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 3, 0.0);
  EXPECT_NE(d1.last_logits(), d2.last_logits());
  // The classifier's input gradient is zero exactly where the mask dropped a feature:
  // dropped features contribute nothing to head/fc/weight's gradient.
  Network d3(a, *be, 4, o);
  d3.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 9, 0.0);
  const std::vector<float> gw = host(*be, d3.param("head/fc/weight").grad);
  const int C = sp.widths.back(), K = sp.classes;
  int dead_columns = 0;
  for (int c = 0; c < C; ++c) {
    bool all_dropped = true;  // feature c of every sample dropped ⇒ column c of dW is 0
    for (int i = 0; i < b.n; ++i) {
      const uint64_t bits = mix64(d3.dropout_key(9), kDropoutStream, static_cast<uint64_t>(i * C + c));
      all_dropped = all_dropped && !(static_cast<float>(bits >> 40) / 16777216.0f < 0.6f);
    }
    if (!all_dropped) continue;
    ++dead_columns;
    for (int k = 0; k < K; ++k) EXPECT_EQ(gw[static_cast<size_t>(k * C + c)], 0.f);
  }
  (void)dead_columns;  // usually 0 with 8 samples; the check is exact when it happens
}

// ---- loss ---------------------------------------------------------------------------------

TEST(NetworkLoss, LabelSmoothingByHand) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  const SearchSpace sp = aux_space();
  NetworkOptions o;
  o.label_smoothing = 0.1;
  Network net(rich_arch(sp), *be, 2, o);
  const Batch b = random_batch(sp, 7, 9);
  const NetStepResult r = net.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 0, 0.0);
  const std::vector<float>& z = net.last_logits();
  const int K = sp.classes;
  double hand = 0;
  int64_t hits = 0;
  for (int n = 0; n < b.n; ++n) {
    double se = 0, sum = 0;
    int am = 0;
    for (int k = 0; k < K; ++k) {
      se += std::exp(static_cast<double>(z[static_cast<size_t>(n * K + k)]));
      sum += z[static_cast<size_t>(n * K + k)];
      if (z[static_cast<size_t>(n * K + k)] > z[static_cast<size_t>(n * K + am)]) am = k;
    }
    const double zy = z[static_cast<size_t>(n * K + b.y[static_cast<size_t>(n)])];
    hand += std::log(se) - 0.9 * zy - 0.1 / (K - 1) * (sum - zy);
    hits += am == b.y[static_cast<size_t>(n)];
  }
  EXPECT_NEAR(r.loss_sum, hand, 1e-5 * std::fabs(hand));
  EXPECT_EQ(r.correct, hits);
  EXPECT_EQ(r.aux_loss_sum, 0.0);
  // evaluation reports the plain cross-entropy
  std::vector<float> e;
  const NetStepResult re = net.eval_batch(b.x.data(), b.y.data(), b.n, &e);
  double plain = 0;
  for (int n = 0; n < b.n; ++n) {
    double se = 0;
    for (int k = 0; k < K; ++k) se += std::exp(static_cast<double>(e[static_cast<size_t>(n * K + k)]));
    plain += std::log(se) - e[static_cast<size_t>(n * K + b.y[static_cast<size_t>(n)])];
  }
  EXPECT_NEAR(re.loss_sum, plain, 1e-5 * std::fabs(plain));
}

TEST(NetworkLoss, AuxHeadWeightedInTheGradient) {
  // The aux head's gradient is 0.4× that of a network whose only loss is the aux loss:
  // scaling aux_weight scales exactly the aux parameters' gradients.
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  const SearchSpace sp = aux_space();
  const Architecture a = rich_arch(sp);
  NetworkOptions o1, o2;
  o1.aux_head = o2.aux_head = true;
  o1.aux_mid_channels = o2.aux_mid_channels = 4;
  o1.aux_out_channels = o2.aux_out_channels = 6;
  o1.aux_weight = 0.4;
  o2.aux_weight = 0.8;
  Network n1(a, *be, 3, o1), n2(a, *be, 3, o2);
  const std::vector<float> w = randn(static_cast<size_t>(n1.param("aux/fc/weight").value.numel()), 3, 0.5);
  be->upload(w.data(), n1.param("aux/fc/weight").value);
  be->upload(w.data(), n2.param("aux/fc/weight").value);
  const Batch b = random_batch(sp, 8, 1);
  const NetStepResult r1 = n1.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 0, 0.0);
  const NetStepResult r2 = n2.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 0, 0.0);
  EXPECT_EQ(r1.aux_loss_sum, r2.aux_loss_sum);
  EXPECT_GT(r1.aux_loss_sum, 0.0);
  EXPECT_EQ(n1.last_aux_logits().size(), static_cast<size_t>(b.n * sp.classes));
  for (const char* name : {"aux/fc/weight", "aux/conv2/weight", "aux/bn/gamma"}) {
    const std::vector<float> g1 = host(*be, n1.param(name).grad), g2 = host(*be, n2.param(name).grad);
    for (size_t i = 0; i < g1.size(); ++i) EXPECT_NEAR(2 * g1[i], g2[i], 1e-6f + 1e-4f * std::fabs(g2[i])) << name;
  }
  EXPECT_EQ(host(*be, n1.param("head/fc/weight").grad), host(*be, n2.param("head/fc/weight").grad))
      << "the main head does not see the aux loss";
}

// ---- checks -------------------------------------------------------------------------------

TEST(NetworkChecks, BadBatchesAndOptions) {
  auto be = make_backend(Device::CPU, 1);
  const SearchSpace sp = aux_space();
  const Architecture a = random_arch(sp, 1, 0.3);
  Network net(a, *be, 1);
  Batch b = random_batch(sp, 4, 1);
  EXPECT_EQ(usage_error([&] { net.train_step(b.x.data(), b.y.data(), 0, 1.f, 0, 0.0); }),
            "batch of 0 images: at least 1 is needed");
  b.y[2] = -1;
  EXPECT_EQ(usage_error([&] { net.train_step(b.x.data(), b.y.data(), b.n, 1.f, 0, 0.0); }),
            "labels[2] = -1 is outside [0, 3)");
  b.y[2] = 3;
  EXPECT_EQ(usage_error([&] { net.eval_batch(b.x.data(), b.y.data(), b.n); }), "labels[2] = 3 is outside [0, 3)");

  struct Bad {
    void (*set)(NetworkOptions&);
    const char* want;
  };
  const Bad bad[] = {
      {[](NetworkOptions& o) { o.dropout = 1.0; }, "retrain.dropout: must be in [0, 1) (got 1)"},
      {[](NetworkOptions& o) { o.drop_path = -0.1; }, "retrain.drop-path: must be in [0, 1) (got -0.1)"},
      {[](NetworkOptions& o) { o.label_smoothing = 1.5; }, "retrain.label-smoothing: must be in [0, 1) (got 1.5)"},
      {[](NetworkOptions& o) { o.aux_weight = -1; }, "retrain.aux-weight: must be a finite number >= 0 (got -1)"},
      {[](NetworkOptions& o) { o.aux_mid_channels = 0; }, "retrain.aux-mid-channels: must be in [1, 65536] (got 0)"},
  };
  for (const Bad& x : bad) {
    NetworkOptions o;
    x.set(o);
    EXPECT_EQ(usage_error([&] { Network n(a, *be, 1, o); }), x.want);
  }
  NetworkOptions aux;
  aux.aux_head = true;
  const Architecture small = random_arch(SearchSpace::preset_named("tiny"), 1, 0.3);  // 4×4 after the reduction
  EXPECT_EQ(usage_error([&] { Network n(small, *be, 1, aux); }),
            "retrain.aux-head: needs a square feature map of at least 6x6 after the last reduction (got 4x4)");
  SearchSpace one = sp;
  one.normal_units = {1};
  one.widths = {4};
  EXPECT_EQ(usage_error([&] { Network n(random_arch(one, 1, 0.3), *be, 1, aux); }),
            "retrain.aux-head: the space has no reduction block to attach the auxiliary head to");

  NetworkOptions o;
  o.dropout = 0.4;
  o.drop_path = 0.25;
  o.aux_head = true;
  o.aux_mid_channels = 17;
  o.label_smoothing = 0.1;
  const NetworkOptions p = NetworkOptions::from_string(o.to_string(), "f.h5");
  EXPECT_EQ(p.to_string(), o.to_string());
  EXPECT_EQ(p.dropout, 0.4);
  EXPECT_EQ(p.aux_mid_channels, 17);
  try {
    NetworkOptions::from_string("dropout=0.4;colour=red", "f.h5");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitCheckpoint);
    EXPECT_EQ(std::string(e.what()), "f.h5: unknown network option 'colour'");
  }
}

TEST(NetworkTraining, LowersTheLoss) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  const SearchSpace sp = aux_space();
  NetworkOptions o;
  o.aux_head = true;
  o.aux_mid_channels = 8;
  o.aux_out_channels = 16;
  Network net(rich_arch(sp), *be, 1, o);
  const Batch b = random_batch(sp, 16, 1);
  const std::vector<float> wd = net.weight_decays(1e-4f);
  const double first = objective(net, b, 0, 0.0);
  for (int s = 0; s < 40; ++s) {
    objective(net, b, s, 0.0);
    for (size_t i = 0; i < net.params().size(); ++i) {
      Param& p = net.params()[i];
      be->nag_update(p.value, p.grad, p.momentum, 0.05f, 0.9f, wd[i]);
    }
  }
  EXPECT_LT(objective(net, b, 40, 0.0), 0.5 * first);
}

// ---- files --------------------------------------------------------------------------------

TEST(NetworkFile, SaveLoadCheckpointAndInspect) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  TempDir dir;
  const SearchSpace sp = aux_space();
  const Architecture arch = rich_arch(sp);
  NetworkOptions o;
  o.aux_head = true;
  o.aux_mid_channels = 4;
  o.aux_out_channels = 6;
  Network a(arch, *be, 1, o);
  const Batch b = random_batch(sp, 6, 1);
  a.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, 0, 0.0);
  for (Param& p : a.params()) be->nag_update(p.value, p.grad, p.momentum, 0.1f, 0.9f, 1e-4f);
  NetworkFileInfo info;
  info.step = 7;
  info.seed = 1;
  info.config = "[retrain]\nepochs = 3\n";
  info.structural = "batch=6";
  const std::string file = dir.file("model.h5"), ckpt = dir.file("step_00000007.h5");
  save_network_file(file, a, info);
  TrainState ts;
  ts.counters["step"] = 7;
  ts.counters["epoch"] = 1;
  ts.reals["loss_sum"] = 2.5;
  save_network_file(ckpt, a, info, &ts);

  auto same = [&](Network& x, Network& y, bool momenta) {
    for (size_t i = 0; i < x.params().size(); ++i) {
      EXPECT_EQ(host(*be, x.params()[i].value), host(*be, y.params()[i].value)) << x.params()[i].name;
      if (momenta) {
        EXPECT_EQ(host(*be, x.params()[i].momentum), host(*be, y.params()[i].momentum)) << x.params()[i].name;
      }
    }
    for (size_t i = 0; i < x.bn_stats().size(); ++i) {
      EXPECT_EQ(host(*be, x.bn_stats()[i].mean), host(*be, y.bn_stats()[i].mean));
      EXPECT_EQ(host(*be, x.bn_stats()[i].var), host(*be, y.bn_stats()[i].var));
    }
  };
  Network c(arch, *be, 99, o);
  load_network_file(file, c);
  same(a, c, false);
  for (Param& p : c.params())
    for (float v : host(*be, p.momentum)) ASSERT_EQ(v, 0.f) << "a network file has no momenta";
  Network d(arch, *be, 99, o);
  TrainState got;
  load_network_file(ckpt, d, &got);
  same(a, d, true);
  EXPECT_EQ(got.counters, ts.counters);
  EXPECT_EQ(got.reals, ts.reals);
  EXPECT_EQ(read_network_arch(file).to_json(), arch.to_json());
  EXPECT_EQ(read_root_attr(file, "dsonas_version"), version_text()) << "network file: which dsonas wrote it";
  EXPECT_EQ(read_root_attr(ckpt, "dsonas_version"), version_text()) << "network checkpoint";

  auto ckpt_error = [&](auto f) {
    try {
      f();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), kExitCheckpoint) << e.what();
      return std::string(e.what());
    }
    ADD_FAILURE() << "no error";
    return std::string();
  };
  EXPECT_EQ(ckpt_error([&] {
              TrainState t;
              load_network_file(file, c, &t);
            }),
            file + ": a network file, not a checkpoint");
  // An evaluation network without the aux head loads the file (extra datasets ignored) ...
  Network eval(arch, *be, 5);
  load_network_file(file, eval);
  std::vector<float> la, le;
  a.eval_batch(b.x.data(), b.y.data(), b.n, &la);
  eval.eval_batch(b.x.data(), b.y.data(), b.n, &le);
  EXPECT_EQ(la, le);
  // ... but a network with an aux head needs its datasets.
  save_network_file(dir.file("noaux.h5"), eval, info);
  EXPECT_EQ(ckpt_error([&] { load_network_file(dir.file("noaux.h5"), c); }),
            dir.file("noaux.h5") + ": missing dataset params/aux/bn/gamma");
  // Another architecture (or width) is refused, the field named.
  Network wide(arch.at_width(8), *be, 1);
  EXPECT_EQ(ckpt_error([&] { load_network_file(file, wide); }), file + ": arch.space.stem_channels: file=4 now=8");
  Network other(random_arch(sp, 1234, 0.5), *be, 1);
  EXPECT_EQ(ckpt_error([&] { load_network_file(file, other); }).rfind(file + ": arch.blocks[", 0), 0u);
  // Not a network file; a truncated one.
  EXPECT_NE(ckpt_error([&] { read_network_arch(dir.file("missing.h5")); }).find("cannot read"), std::string::npos);
  {
    std::ifstream in(file, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream out(dir.file("cut.h5"), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  ckpt_error([&] {
    Network n(arch, *be, 1, o);
    load_network_file(dir.file("cut.h5"), n);
  });

  // inspect
  const std::string desc = describe_network_file(ckpt);
  EXPECT_NE(desc.find("dsonas-network-checkpoint"), std::string::npos) << desc;
  EXPECT_NE(desc.find("step 7"), std::string::npos) << desc;
  EXPECT_NE(desc.find("position: epoch=1 step=7"), std::string::npos) << desc;
  EXPECT_NE(desc.find("in the aux head"), std::string::npos) << desc;
  EXPECT_NE(desc.find(str(arch.live_ops(), " live ops")), std::string::npos) << desc;
  std::string path_arg = file;
  char prog[] = "inspect";
  char* argv[] = {prog, &path_arg[0]};
  testing::internal::CaptureStdout();
  const int rc = run_inspect(2, argv);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find(": dsonas-network\n"), std::string::npos) << out;
  EXPECT_NE(out.find("MACs: "), std::string::npos) << out;
}
