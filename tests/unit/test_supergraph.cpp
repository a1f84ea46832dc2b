// test_supergraph.cpp — the whole search network: structure and names, the
// gradient in W and λ by finite differences, the pruned execution plan against
// the dense computation, determinism, and that training lowers the loss.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/model/supergraph.hpp"
#include "dsonas/optim/optimizer.hpp"
#include "dsonas/model/prune.hpp"
#include "kink_backend.hpp"
#include "test_util.hpp"

using namespace dsonas;

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

double loss_of(Supergraph& g, const Batch& b) {
  StepResult r = g.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, false, false);
  return r.loss_sum / b.n;
}

/// 4th-order central difference: (−f(2h) + 8f(h) − 8f(−h) + f(−2h)) / 12h.
template <class F>
double fd4(F&& f, double h) {
  return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h);
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

}  // namespace

TEST(Supergraph, LambdaCountsAndNames) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  SearchSpace fm = SearchSpace::preset_named("fmnist");
  Supergraph g(fm, *be, 1);
  EXPECT_EQ(g.lambda().size(), 748u);
  EXPECT_EQ(fm.block_layout().size(), 124);
  std::set<std::string> names;
  for (const Param& p : g.params()) names.insert(p.name);
  for (const char* n : {"stem/conv/weight", "s1/u1/l1/o1/dw/weight", "s1/u1/l1/o1/pw/weight", "s1/u1/l4/o2/dw/weight",
                        "s1/u1/l3/o3/bn/beta", "s1/u1/out/c16/weight", "s1/u1/out/bn/gamma", "s1/u1/id/conv/weight",
                        "s1/red/b1/conv/weight", "s3/u2/out/c01/weight", "head/fc/weight", "head/fc/bias"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_FALSE(names.count("s1/u2/id/conv/weight"));
  EXPECT_FALSE(names.count("s3/red/b0/conv/weight"));   // no reduction after the last stage
  EXPECT_TRUE(g.param("s1/u1/l2/o1/bn/gamma").frozen);  // op BN γ fixed (§1.1)
  EXPECT_TRUE(g.param("s1/u1/id/bn/gamma").frozen);
  EXPECT_TRUE(g.param("s1/red/b0/bn/gamma").frozen);
  EXPECT_FALSE(g.param("s1/u1/out/bn/gamma").frozen);  // block-output, stem, head γ learned
  EXPECT_FALSE(g.param("stem/bn/gamma").frozen);
  EXPECT_FALSE(g.param("head/bn/gamma").frozen);
  int rows = 0;
  for (const LambdaGroup& grp : g.lambda_groups()) rows += grp.size;
  EXPECT_EQ(rows, 748);
  EXPECT_EQ(g.lambda_groups().front().name, "s1/u1/lambda/l2/o1");
  EXPECT_EQ(g.lambda_groups().front().size, 5);

  SearchSpace c10 = SearchSpace::preset_named("cifar10");
  EXPECT_EQ(c10.total_lambda(), 2980);
  c10.share = true;
  EXPECT_EQ(c10.total_lambda(), 128);
}

TEST(Supergraph, InitFollowsAlgorithm9) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  SearchSpace sp = SearchSpace::preset_named("fmnist");
  Supergraph g(sp, *be, 3);
  // pointwise 16→16: σ = sqrt(2/(16·1·1)); depthwise 5×5 on 16: σ = sqrt(2/(16·25))
  auto stdev = [&](const std::string& n) {
    std::vector<float> h = host(*be, g.param(n).value);
    double s = 0;
    for (float v : h) s += double(v) * v;
    return std::sqrt(s / h.size());
  };
  double pw = 0;
  for (int l = 1; l <= 4; ++l)
    for (int j = 1; j <= 2; ++j) pw += stdev("s1/u1/l" + std::to_string(l) + "/o" + std::to_string(j) + "/pw/weight");
  EXPECT_NEAR(pw / 8, std::sqrt(2.0 / 16), 0.03);
  EXPECT_NEAR(stdev("s1/u1/l1/o2/dw/weight"), std::sqrt(2.0 / 400), 0.02);
  EXPECT_NEAR(stdev("head/fc/weight"), 0.01, 0.002);
  for (float v : host(*be, g.param("head/fc/bias").value)) EXPECT_EQ(v, 0.f);
  for (float v : host(*be, g.param("s1/u1/out/bn/gamma").value)) EXPECT_EQ(v, 1.f);
  for (float v : g.lambda()) EXPECT_EQ(v, 1.f);
}

class SupergraphGrad : public ::testing::TestWithParam<bool> {};

// The model's gradient in λ and in W against 4th-order finite differences of the
// loss, on the tiny space with random λ and some pruned entries (full and share).
// The loss is evaluated with its ReLU masks and max-pool winners frozen at the point
// where the gradient was taken (kink_backend.hpp): every difference is of one smooth
// function, whose derivative there is the one backward computes, so no step crosses a
// kink whatever the float rounding of the BLAS kernel or SIMD path.
TEST_P(SupergraphGrad, FiniteDifferences) {
  auto cpu = make_backend(Device::CPU, dsonas_test::test_threads());
  dsonas_test::KinkSignatureBackend kinks(*cpu);
  Backend* be = &kinks;
  using Mode = dsonas_test::KinkSignatureBackend::Mode;
  SearchSpace sp = SearchSpace::preset_named("tiny");
  sp.share = GetParam();
  Supergraph g(sp, *be, 7);
  randomize_lambda(g, 11, 0.15);
  Batch b = random_batch(sp, 6, 3);
  kinks.set_mode(Mode::Record);
  const double f0 = g.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true).loss_sum / b.n;
  std::vector<float> dlam = host(*be, g.lambda_grad());
  std::vector<std::vector<float>> grads;
  for (Param& p : g.params()) grads.push_back(p.frozen ? std::vector<float>() : host(*be, p.grad));
  kinks.set_mode(Mode::Replay);
  ASSERT_EQ(loss_of(g, b), f0) << "the forward pass with its own kinks replayed is the same pass";
  ASSERT_TRUE(kinks.replay_complete());
  auto loss = [&] {
    kinks.start_pass();
    return loss_of(g, b);
  };
  // Tolerance atol + 2 %·|numeric|: the objective is computed to ε ≤ 4·u·|f| (u = 2⁻²⁴;
  // the rounding model of test_network.cpp's NetworkGrad, which measures it), the
  // difference quotient's weights sum to 18/12, so rounding moves it by ≤ 1.5·ε/h; the
  // 2 % covers the O(h⁴) truncation of a smooth function.
  const double eps = 4 * std::ldexp(1.0, -24) * std::fabs(f0);

  // λ: every live entry
  int checked = 0, bad = 0;
  for (size_t i = 0; i < g.lambda().size(); ++i) {
    if (!g.mask()[i]) {
      EXPECT_EQ(dlam[i], 0.f) << "masked λ " << i << " has a gradient";
      continue;
    }
    const float l0 = g.lambda()[i];
    const double h = 1e-2;
    double num = fd4(
        [&](double d) {
          g.lambda()[i] = l0 + static_cast<float>(d);
          double v = loss();
          g.lambda()[i] = l0;
          return v;
        },
        h);
    ++checked;
    const double tol = 1.5 * eps / h + 2e-2 * std::fabs(num);
    if (std::fabs(num - dlam[i]) > tol) {
      ++bad;
      ADD_FAILURE() << "λ[" << i << "]: analytic " << dlam[i] << " numeric " << num;
    }
  }
  EXPECT_GT(checked, 20);
  EXPECT_EQ(bad, 0);

  // W: a directional derivative along a random direction per parameter tensor
  Rng r(5, 6);
  int nparams = 0;
  for (size_t pi = 0; pi < g.params().size(); ++pi) {
    Param& p = g.params()[pi];
    if (p.frozen) continue;
    std::vector<float> w0 = host(*be, p.value), dir(w0.size());
    double analytic = 0;
    for (size_t k = 0; k < dir.size(); ++k) {
      dir[k] = static_cast<float>(r.normal());
      analytic += double(dir[k]) * grads[pi][k];
    }
    auto f = [&](double h) {
      std::vector<float> w(w0);
      for (size_t k = 0; k < w.size(); ++k) w[k] += static_cast<float>(h) * dir[k];
      be->upload(w.data(), p.value);
      double v = loss();
      be->upload(w0.data(), p.value);
      return v;
    };
    const double h = 3e-3, num = fd4(f, h);
    EXPECT_NEAR(analytic, num, 1.5 * eps / h + 2e-2 * std::fabs(num)) << p.name;
    ++nparams;
  }
  EXPECT_GT(nparams, 30);
}
INSTANTIATE_TEST_SUITE_P(FullAndShare, SupergraphGrad, ::testing::Values(false, true));

// A pruned plan (dead ops and edges not computed) gives the same logits and the
// same gradients on live entries as the dense computation with the zero λ.
TEST(Supergraph, PrunedPlanMatchesDense) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  SearchSpace sp = SearchSpace::preset_named("tiny");
  Supergraph a(sp, *be, 9), d(sp, *be, 9);
  randomize_lambda(a, 4, 0.4);
  d.lambda() = a.lambda();
  std::fill(d.mask().begin(), d.mask().end(), 1);
  d.rebuild_plan();
  EXPECT_LT(a.live_ops(), d.live_ops());
  Batch b = random_batch(sp, 5, 8);
  a.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true);
  d.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true);
  std::vector<float> la = a.last_logits(), ld = d.last_logits();
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], ld[i], 1e-5f * (1 + std::fabs(ld[i])));
  std::vector<float> ga = host(*be, a.lambda_grad()), gd = host(*be, d.lambda_grad());
  for (size_t i = 0; i < ga.size(); ++i)
    if (a.mask()[i]) {
      EXPECT_NEAR(ga[i], gd[i], 1e-4f * (1 + std::fabs(gd[i]))) << i;
    }
}

TEST(Supergraph, DeterministicForFixedThreads) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  SearchSpace sp = SearchSpace::preset_named("tiny");
  Batch b = random_batch(sp, 8, 2);
  std::vector<float> g1, g2, l1, l2;
  for (int rep = 0; rep < 2; ++rep) {
    Supergraph g(sp, *be, 21);
    randomize_lambda(g, 3, 0.2);
    g.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true);
    (rep ? g2 : g1) = host(*be, g.flat_grad());
    (rep ? l2 : l1) = g.last_logits();
  }
  ASSERT_EQ(g1.size(), g2.size());
  EXPECT_EQ(0, std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(l1.data(), l2.data(), l1.size() * sizeof(float)));
}

TEST(Supergraph, TrainingLowersTheLoss) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  SearchSpace sp = SearchSpace::preset_named("tiny");
  Supergraph g(sp, *be, 1);
  Batch b = random_batch(sp, 16, 1);
  const double first = loss_of(g, b);
  for (int s = 0; s < 30; ++s) {
    g.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, false);
    for (Param& p : g.params())
      if (!p.frozen) be->nag_update(p.value, p.grad, p.momentum, 0.05f, 0.9f, 0.f);
  }
  EXPECT_LT(loss_of(g, b), 0.5 * first);
}

// A λ-step (λ gradients only) takes shortcuts: the block-output λ_after
// gradients come from dot products <dhcat_k, h_k>/λ_k instead of the
// weight-gradient GEMM, and the first block's input gradient and the stem's
// backward are skipped.  Its λ gradients must equal those of a full step (to
// rounding), its weight gradients stay zero, and it must not depend on the
// thread count or on per-block recomputation.  Covers full and shared λ, two
// blocks in the first stage (only the very first skips its input gradient),
// and a live branch whose λ is too small to divide by (GEMM fallback).
TEST(Supergraph, LambdaStepMatchesFullStep) {
  auto be2 = make_backend(Device::CPU, dsonas_test::test_threads());
  auto be1 = make_backend(Device::CPU, dsonas_test::other_threads());
  for (int variant = 0; variant < 4; ++variant) {
    SearchSpace sp = SearchSpace::preset_named("tiny");
    sp.share = variant == 1;
    if (variant == 2) sp.normal_units = {2, 1};
    Batch b = random_batch(sp, 5, 30 + variant);
    std::vector<float> full, lam[3];
    int64_t nw = 0;
    for (int rep = 0; rep < 4; ++rep) {
      Backend& be = rep == 2 ? *be1 : *be2;
      Supergraph g(sp, be, 13);
      randomize_lambda(g, 17 + variant, 0.2);
      if (variant == 3) {  // a live λ_after too small for the division: GEMM path
        const BlockLayout lay = sp.block_layout();
        for (size_t i = 0; i < g.lambda().size(); ++i)
          if (g.mask()[i] && static_cast<int>(i) >= lay.after_offset() &&
              static_cast<int>(i) < lay.after_offset() + lay.N * sp.levels) {
            g.lambda()[i] = 1e-25f;
            break;
          }
      }
      g.set_recompute(rep == 3);
      nw = g.num_weights();
      g.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, rep == 0, true);
      std::vector<float> fg = host(be, g.flat_grad());
      if (rep == 0) {
        full = fg;
        continue;
      }
      for (int64_t i = 0; i < nw; ++i) ASSERT_EQ(fg[static_cast<size_t>(i)], 0.f) << "weight gradient " << i;
      lam[rep - 1].assign(fg.begin() + nw, fg.end());
    }
    int checked = 0;
    for (size_t i = 0; i < lam[0].size(); ++i) {
      const float f = full[static_cast<size_t>(nw) + i];
      EXPECT_NEAR(lam[0][i], f, 1e-5f + 1e-4f * std::fabs(f)) << "variant " << variant << " λ " << i;
      checked += f != 0.f;
    }
    EXPECT_GT(checked, 10) << variant;
    EXPECT_EQ(0, std::memcmp(lam[0].data(), lam[1].data(), lam[0].size() * sizeof(float)))
        << be2->threads() << " vs " << be1->threads() << " threads, variant " << variant;
    EXPECT_EQ(0, std::memcmp(lam[0].data(), lam[2].data(), lam[0].size() * sizeof(float)))
        << "recompute, variant " << variant;
  }
}

// Per-block recomputation changes memory, not numbers: logits, every gradient
// and the BN running statistics are bit-identical.
TEST(Supergraph, RecomputeIsBitIdentical) {
  auto be = make_backend(Device::CPU, dsonas_test::test_threads());
  SearchSpace sp = SearchSpace::preset_named("tiny");
  sp.normal_units = {2, 2};
  Batch b = random_batch(sp, 6, 12);
  std::vector<float> grads[2], logits[2], stats[2];
  for (int rep = 0; rep < 2; ++rep) {
    Supergraph g(sp, *be, 5);
    randomize_lambda(g, 6, 0.2);
    g.set_recompute(rep == 1);
    g.train_step(b.x.data(), b.y.data(), b.n, 1.f / b.n, true, true);
    grads[rep] = host(*be, g.flat_grad());
    logits[rep] = g.last_logits();
    for (BnStats& s : g.bn_stats())
      for (const Tensor* t : {&s.mean, &s.var})
        for (float v : host(*be, *t)) stats[rep].push_back(v);
  }
  EXPECT_EQ(0, std::memcmp(grads[0].data(), grads[1].data(), grads[0].size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * sizeof(float)));
  ASSERT_EQ(stats[0].size(), stats[1].size());
  EXPECT_EQ(0, std::memcmp(stats[0].data(), stats[1].data(), stats[0].size() * sizeof(float)));
}

TEST(SearchSpaceJson, RoundTripsEveryPreset) {
  for (const char* p : {"fmnist", "tiny", "cifar10", "imagenet"}) {
    for (bool share : {false, true}) {
      SearchSpace s = SearchSpace::preset_named(p);
      s.share = share;
      SearchSpace t = SearchSpace::from_json(s.to_json(), "test");
      EXPECT_EQ(t.to_json(), s.to_json()) << p;
    }
  }
  try {
    SearchSpace::from_json("{\"preset\":\"x\"}", "file.h5");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitCheckpoint);
    EXPECT_NE(std::string(e.what()).find("file.h5"), std::string::npos);
  }
}
