// test_optim.cpp — host NAG / APG-NAG against hand-computed values, the weight-decay
// name rule, clipping, lr schedules, and the §5 penalty factors.
//
// Every expected number is worked out in the comments next to it (double
// arithmetic; the code runs in float, hence the 1e-6 tolerances).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/model/search_space.hpp"
#include "dsonas/optim/lr_schedule.hpp"
#include "dsonas/optim/optimizer.hpp"
#include "dsonas/optim/penalty.hpp"

using namespace dsonas;

namespace {
constexpr float kTol = 1e-6f;

/// Runs f and returns the Error's code and message (fails the test if nothing is thrown).
template <class F>
std::pair<int, std::string> error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  ADD_FAILURE() << "no dsonas::Error thrown";
  return {-1, ""};
}
}  // namespace

// ---- NAG ------------------------------------------------------------------------------
TEST(Nag, HandComputedTwoSteps) {
  // η = 0.1, μ = 0.9.  Entry 0: w = 1, g = 0.5 both steps, wd = 0.01.
  //   step 1: g' = 0.5 + 0.01·1 = 0.51; m = 0.51; w = 1 − 0.1·(0.51 + 0.9·0.51) = 1 − 0.0969 = 0.9031
  //   step 2: g' = 0.5 + 0.01·0.9031 = 0.509031; m = 0.9·0.51 + 0.509031 = 0.968031
  //           w = 0.9031 − 0.1·(0.509031 + 0.9·0.968031) = 0.9031 − 0.13802589 = 0.76507411
  // Entry 1: w = 2, g = −1 both steps, same wd:
  //   step 1: g' = −1 + 0.02 = −0.98; m = −0.98; w = 2 − 0.1·(−0.98 − 0.882) = 2.1862
  //   step 2: g' = −1 + 0.021862 = −0.978138; m = −0.882 − 0.978138 = −1.860138
  //           w = 2.1862 − 0.1·(−0.978138 − 1.6741242) = 2.1862 + 0.26522622 = 2.45142622
  std::vector<float> w = {1.0f, 2.0f}, m = {0.0f, 0.0f};
  const std::vector<float> g = {0.5f, -1.0f};
  nag_step(w.data(), g.data(), m.data(), 2, 0.1f, 0.9f, 0.01f);
  EXPECT_NEAR(w[0], 0.9031f, kTol);
  EXPECT_NEAR(m[0], 0.51f, kTol);
  EXPECT_NEAR(w[1], 2.1862f, kTol);
  EXPECT_NEAR(m[1], -0.98f, kTol);
  nag_step(w.data(), g.data(), m.data(), 2, 0.1f, 0.9f, 0.01f);
  EXPECT_NEAR(w[0], 0.76507411f, kTol);
  EXPECT_NEAR(m[0], 0.968031f, kTol);
  EXPECT_NEAR(w[1], 2.45142622f, kTol);
  EXPECT_NEAR(m[1], -1.860138f, kTol);
  EXPECT_EQ(g[0], 0.5f);  // the gradient is not modified
}

TEST(Nag, NoDecayNoMomentumIsSgd) {
  std::vector<float> w = {3.0f}, m = {0.0f};
  const float g = 2.0f;
  nag_step(w.data(), &g, m.data(), 1, 0.25f, 0.0f, 0.0f);  // w = 3 − 0.25·2 = 2.5
  EXPECT_FLOAT_EQ(w[0], 2.5f);
}

// ---- APG-NAG --------------------------------------------------------------------------
// η = 0.1, μ = 0.9.  Order: v ← μv; z ← λ − ηg; z ← S_{ηγ}(z); v ← z − λ + v;
// λ ← z + μv; λ ← max(0, λ).
TEST(ApgNag, HandComputedThreeSteps) {
  // e0: λ = 1, γ = 0.01 (ηγ = 0.001), g = 0.5, 0.5, −1
  //   s1: v = 0; z = 1 − 0.05 = 0.95 → 0.949; v = 0.949 − 1 + 0 = −0.051;
  //       λ = 0.949 + 0.9·(−0.051) = 0.9031
  //   s2: v = −0.0459; z = 0.9031 − 0.05 = 0.8531 → 0.8521; v = 0.8521 − 0.9031 − 0.0459 = −0.0969;
  //       λ = 0.8521 − 0.08721 = 0.76489
  //   s3: v = −0.08721; z = 0.76489 + 0.1 = 0.86489 → 0.86389; v = 0.86389 − 0.76489 − 0.08721 = 0.01179;
  //       λ = 0.86389 + 0.010611 = 0.874501
  // e1: λ = 0, γ = 0.1 (ηγ = 0.01), g = 0.05, −0.3, 0.5
  //   s1: z = 0 − 0.005 = −0.005, |z| ≤ 0.01 → z = 0 exactly (soft-threshold); v = 0; λ = 0
  //   s2: z = 0 + 0.03 = 0.03 → 0.02; v = 0.02 − 0 + 0 = 0.02; λ = 0.02 + 0.018 = 0.038 (revives)
  //   s3: v = 0.018; z = 0.038 − 0.05 = −0.012 → −0.002; v = −0.002 − 0.038 + 0.018 = −0.022;
  //       λ = −0.002 − 0.0198 = −0.0218 → clamp 0
  // e2: λ = 0.1, γ = 0.01, g = 0.9, 0, 0   (clamp with z > 0: z + μv < 0)
  //   s1: z = 0.1 − 0.09 = 0.01 → 0.009; v = 0.009 − 0.1 = −0.091; λ = 0.009 − 0.0819 = −0.0729 → 0
  //   s2: v = −0.0819; z = 0 → 0; v = 0 − 0 − 0.0819 = −0.0819; λ = −0.07371 → 0
  //   s3: v = −0.07371; λ = −0.066339 → 0; v is NOT clamped: −0.07371
  // e3: masked, λ = v = 0, g = −5: stays exactly 0, 0.
  // e4: masked with stale values λ = 0.7, v = 0.3: forced to exactly 0, 0.
  // e5: like e0 but γ = 0.5 (ηγ = 0.05): per-entry γ
  //   s1: z = 0.95 → 0.9; v = −0.1; λ = 0.9 − 0.09 = 0.81
  //   s2: v = −0.09; z = 0.76 → 0.71; v = 0.71 − 0.81 − 0.09 = −0.19; λ = 0.71 − 0.171 = 0.539
  //   s3: v = −0.171; z = 0.639 → 0.589; v = 0.589 − 0.539 − 0.171 = −0.121; λ = 0.589 − 0.1089 = 0.4801
  std::vector<float> lam = {1.0f, 0.0f, 0.1f, 0.0f, 0.7f, 1.0f};
  std::vector<float> v = {0, 0, 0, 0, 0.3f, 0};
  const std::vector<float> gam = {0.01f, 0.1f, 0.01f, 0.01f, 0.01f, 0.5f};
  const std::vector<uint8_t> mask = {1, 1, 1, 0, 0, 1};
  const std::vector<std::vector<float>> grads = {{0.5f, 0.05f, 0.9f, -5.0f, 1.0f, 0.5f},
                                                 {0.5f, -0.3f, 0.0f, -5.0f, 1.0f, 0.5f},
                                                 {-1.0f, 0.5f, 0.0f, -5.0f, 1.0f, -1.0f}};
  const float exp_lam[3][6] = {{0.9031f, 0.0f, 0.0f, 0, 0, 0.81f},
                               {0.76489f, 0.038f, 0.0f, 0, 0, 0.539f},
                               {0.874501f, 0.0f, 0.0f, 0, 0, 0.4801f}};
  const float exp_v[3][6] = {{-0.051f, 0.0f, -0.091f, 0, 0, -0.1f},
                             {-0.0969f, 0.02f, -0.0819f, 0, 0, -0.19f},
                             {0.01179f, -0.022f, -0.07371f, 0, 0, -0.121f}};
  for (int s = 0; s < 3; ++s) {
    apg_nag_step(lam.data(), v.data(), grads[s].data(), gam.data(), mask.data(), 6, 0.1f, 0.9f);
    for (int e = 0; e < 6; ++e) {
      EXPECT_NEAR(lam[e], exp_lam[s][e], kTol) << "step " << s + 1 << " entry " << e;
      EXPECT_NEAR(v[e], exp_v[s][e], kTol) << "step " << s + 1 << " entry " << e;
    }
    // Exact zeros, not merely small numbers.
    if (s == 0) {
      EXPECT_EQ(lam[1], 0.0f);
    }
    EXPECT_EQ(lam[2], 0.0f);
    EXPECT_EQ(lam[3], 0.0f);
    EXPECT_EQ(v[3], 0.0f);
    EXPECT_EQ(lam[4], 0.0f);
    EXPECT_EQ(v[4], 0.0f);
    for (int e = 0; e < 6; ++e) EXPECT_FALSE(std::signbit(lam[e])) << "λ must be +0, not −0";
  }
}

TEST(ApgNag, SoftThresholdGivesExactZeroWithoutClamp) {
  // Dyadic numbers, so the float arithmetic is exact: η = 0.5, μ = 0.5.
  // a: λ = 0.25, v = 0.5, g = 0.25, γ = 0.25 (ηγ = 0.125)
  //    v = 0.25; z = 0.25 − 0.125 = 0.125; |z| − 0.125 = 0 → z = 0;
  //    v = 0 − 0.25 + 0.25 = 0; λ = 0 + 0.5·0 = 0: exact zero, no clamp needed.
  // b: λ = 0.25, v = 0, g = 0.25, γ = 0.5 (ηγ = 0.25)
  //    v = 0; z = 0.125 → 0; v = 0 − 0.25 = −0.25; λ = 0 − 0.125 → clamp 0.
  float lam[2] = {0.25f, 0.25f}, v[2] = {0.5f, 0.0f};
  const float g[2] = {0.25f, 0.25f}, gam[2] = {0.25f, 0.5f};
  apg_nag_step(lam, v, g, gam, nullptr, 2, 0.5f, 0.5f);
  EXPECT_EQ(lam[0], 0.0f);
  EXPECT_EQ(v[0], 0.0f);
  EXPECT_EQ(lam[1], 0.0f);
  EXPECT_EQ(v[1], -0.25f);
}

TEST(ApgNag, ScalarGammaMatchesVector) {
  std::vector<float> l1 = {1.0f, 0.3f, 0.0f}, l2 = l1, v1(3, 0.0f), v2(3, 0.0f);
  const std::vector<float> g = {0.2f, 1.5f, -0.4f}, gam(3, 0.02f);
  for (int s = 0; s < 4; ++s) {
    apg_nag_step(l1.data(), v1.data(), g.data(), gam.data(), nullptr, 3, 0.1f, 0.9f);
    apg_nag_step(l2.data(), v2.data(), g.data(), 0.02f, nullptr, 3, 0.1f, 0.9f);
  }
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(v1, v2);
}

TEST(ApgNag, ZeroGammaZeroMomentumIsProjectedSgd) {
  // μ = 0, γ = 0: λ ← max(0, λ − ηg): 0.5 − 0.1·2 = 0.3; 0.1 − 0.1·3 < 0 → 0.
  float lam[2] = {0.5f, 0.1f}, v[2] = {0, 0};
  const float g[2] = {2.0f, 3.0f};
  apg_nag_step(lam, v, g, 0.0f, nullptr, 2, 0.1f, 0.0f);
  EXPECT_NEAR(lam[0], 0.3f, kTol);
  EXPECT_EQ(lam[1], 0.0f);
}

// ---- clipping ------------------------------------------------------------------------
TEST(Clip, Elementwise) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> g = {-3.0f, -2.0f, -1.5f, 0.0f, 1.99f,
                          2.0f,  7.0f,  inf,   -inf, std::numeric_limits<float>::quiet_NaN()};
  clip_elementwise(g.data(), g.size(), 2.0f);
  const std::vector<float> want = {-2.0f, -2.0f, -1.5f, 0.0f, 1.99f, 2.0f, 2.0f, 2.0f, -2.0f};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(g[i], want[i]) << i;
  EXPECT_TRUE(std::isnan(g[9]));  // NaN must reach the finiteness check
}

// ---- weight decay rule ---------------------------------------------------------------
TEST(WeightDecay, NameTable) {
  struct Row {
    const char* name;
    bool pretrain, search, retrain;  // decayed?
  };
  const Row rows[] = {
      {"s1/u2/l3/o1/pw/weight", true, true, true},  // pointwise conv
      {"s1/u2/l3/o1/dw/weight", true, true, true},  // depthwise conv
      {"s1/u2/out/k5/weight", true, true, true},    // 1×1 output conv
      {"s2/u1/id/conv/weight", true, true, true},   // id_conv
      {"s1/red/b1/conv/weight", true, true, true},  // reduction conv
      {"stem/conv1/weight", true, true, true},
      {"head/fc/weight", true, true, true},
      {"aux/fc/weight", true, true, true},
      {"weight", true, true, true},               // bare name
      {"s1/u1/out/bn/gamma", true, false, true},  // BN γ: decayed except in search
      {"stem/bn1/gamma", true, false, true},
      {"head/bn/gamma", true, false, true},
      {"s1/u2/l3/o1/bn/gamma", true, false, true},
      {"s1/u1/out/bn/beta", false, false, false},
      {"stem/bn1/beta", false, false, false},
      {"head/fc/bias", false, false, false},
      {"aux/fc/bias", false, false, false},
      {"lambda", false, false, false},
      {"lambda/s1/u1", false, false, false},
      {"s1/u1/lambda_after", false, false, false},
      {"lambda/weight", false, false, false},  // λ never, whatever the suffix
      {"s1/u1/out/bn/running_mean", false, false, false},
      {"s1/u1/out/bn/weightx", false, false, false},
      {"s1/u1/conv_weight", false, false, false},  // MXNet-style '_weight' is not our naming
      {"", false, false, false},
  };
  const float wd = 1e-4f;
  for (const Row& r : rows) {
    EXPECT_EQ(weight_decay_for(r.name, Phase::Pretrain, wd), r.pretrain ? wd : 0.0f) << r.name;
    EXPECT_EQ(weight_decay_for(r.name, Phase::Search, wd), r.search ? wd : 0.0f) << r.name;
    EXPECT_EQ(weight_decay_for(r.name, Phase::Retrain, wd), r.retrain ? wd : 0.0f) << r.name;
  }
  EXPECT_STREQ(phase_name(Phase::Search), "search");
}

// ---- lr schedules --------------------------------------------------------------------
TEST(LrSchedule, StepBoundaries) {
  LrParams p;
  p.base_lr = 0.1;
  p.epoch_size = 10;
  auto s = make_lr_schedule("step:30,60,90", p);  // steps 300, 600, 900
  EXPECT_DOUBLE_EQ(s->lr(0), 0.1);
  EXPECT_DOUBLE_EQ(s->lr(299), 0.1);
  EXPECT_NEAR(s->lr(300), 0.01, 1e-15);
  EXPECT_NEAR(s->lr(599), 0.01, 1e-15);
  EXPECT_NEAR(s->lr(600), 0.001, 1e-15);
  EXPECT_NEAR(s->lr(900), 1e-4, 1e-15);
  EXPECT_NEAR(s->lr(100000), 1e-4, 1e-15);
  // CIFAR search: boundaries at epochs 120/180/220, epoch_size 390: a 120-epoch run of
  // 392 steps/epoch (47 040 steps) passes step 46 800 → 0.01 for the last 240 steps.
  p.epoch_size = 390;
  auto c = make_lr_schedule("step:120,180,220", p);
  EXPECT_DOUBLE_EQ(c->lr(46799), 0.1);
  EXPECT_NEAR(c->lr(46800), 0.01, 1e-15);
  StepLr direct(1.0, {5, 7});
  EXPECT_DOUBLE_EQ(direct.lr(4), 1.0);
  EXPECT_NEAR(direct.lr(5), 0.1, 1e-15);
  EXPECT_NEAR(direct.lr(7), 0.01, 1e-15);
}

TEST(LrSchedule, Constant) {
  LrParams p;
  p.base_lr = 0.05;
  auto s = make_lr_schedule("constant", p);
  EXPECT_DOUBLE_EQ(s->lr(0), 0.05);
  EXPECT_DOUBLE_EQ(s->lr(123456789), 0.05);
}

TEST(LrSchedule, SgdrRestarts) {
  LrParams p;
  p.base_lr = 0.05;  // lr_max
  p.lr_min = 1e-4;
  p.epoch_size = 390;
  auto s = make_lr_schedule("cosine", p);  // T0 = 10, T_mult = 2
  const double mx = 0.05, mn = 1e-4;
  auto at_epoch = [&](int64_t e) { return s->lr(e * 390); };
  EXPECT_DOUBLE_EQ(at_epoch(0), mx);
  // Mid-cycle: epoch 5 of the first 10-epoch cycle: cos(π/2) = 0 → mn + ½(mx − mn) = 0.02505
  EXPECT_NEAR(at_epoch(5), 0.02505, 1e-12);
  // Restarts at 10, 30, 70, 150, 310 (and 630 = end of the 6th cycle).
  const int64_t restarts[] = {10, 30, 70, 150, 310, 630};
  int64_t len = 10;
  for (int64_t r : restarts) {
    EXPECT_DOUBLE_EQ(at_epoch(r), mx) << "restart at epoch " << r;
    // last epoch of the previous cycle: e = T − 1 → mn + ½Δ(1 + cos(π(T−1)/T)), > mn
    const double last = mn + 0.5 * (mx - mn) * (1.0 + std::cos(M_PI * (len - 1) / len));
    EXPECT_NEAR(at_epoch(r - 1), last, 1e-12) << "epoch " << r - 1;
    EXPECT_GT(at_epoch(r - 1), mn);
    EXPECT_LT(at_epoch(r - 1), at_epoch(r));
    len *= 2;
  }
  // Second cycle, epoch 20 = 10 epochs into a 20-epoch cycle → midpoint again.
  EXPECT_NEAR(at_epoch(20), 0.02505, 1e-12);
  // Piecewise constant within an epoch: recomputed only at multiples of epoch_size.
  EXPECT_DOUBLE_EQ(s->lr(3 * 390 + 1), at_epoch(3));
  EXPECT_DOUBLE_EQ(s->lr(3 * 390 + 389), at_epoch(3));
  EXPECT_NE(s->lr(4 * 390), at_epoch(3));
  CosineLr direct(mn, mx, 10, 2, 390);
  EXPECT_EQ(direct.cycle_start(0), 0);
  EXPECT_EQ(direct.cycle_start(4), 150);
  EXPECT_EQ(direct.cycle_start(6), 630);
  // Explicit T0, T_mult in the string.
  auto s2 = make_lr_schedule("cosine:5,1", p);
  EXPECT_DOUBLE_EQ(s2->lr(5 * 390), mx);
  EXPECT_DOUBLE_EQ(s2->lr(10 * 390), mx);
}

TEST(LrSchedule, WarmupLinear) {
  // ImageNet retrain: 0.1 → 0.5 over 5 epochs (6255 steps), then to 0 at epoch 240
  // (300 240 steps), decreasing by 0.5/293 985 per step.
  LrParams p;
  p.base_lr = 0.5;
  p.warmup_lr = 0.1;
  p.epoch_size = 1251;
  p.warmup_epochs = 5;
  p.total_epochs = 240;
  auto s = make_lr_schedule("warmup-linear", p);
  EXPECT_DOUBLE_EQ(s->lr(0), 0.1);
  EXPECT_NEAR(s->lr(1), 0.1 + 0.4 / 6255, 1e-15);  // +0.4/(5·1251) per step
  EXPECT_NEAR(s->lr(1251), 0.18, 1e-12);           // 0.1 + 0.4·1251/6255
  EXPECT_NEAR(s->lr(6254), 0.5 - 0.4 / 6255, 1e-12);
  EXPECT_DOUBLE_EQ(s->lr(6255), 0.5);
  EXPECT_NEAR(s->lr(6256), 0.5 - 0.5 / 293985, 1e-15);
  EXPECT_NEAR(s->lr(6255 + 293985 / 5), 0.4, 1e-12);  // 293985 = 5·58797
  EXPECT_NEAR(s->lr(300240), 0.0, 1e-15);
  EXPECT_EQ(s->lr(400000), 0.0);                     // floor at 0
  auto s3 = make_lr_schedule("warmup-linear:3", p);  // explicit warm-up epochs
  EXPECT_DOUBLE_EQ(s3->lr(3 * 1251), 0.5);
  auto s0 = make_lr_schedule("warmup-linear:0", p);  // no warm-up
  EXPECT_DOUBLE_EQ(s0->lr(0), 0.5);
}

TEST(LrSchedule, BadStringsRejected) {
  LrParams p;
  const char* bad[] = {"",
                       "step",
                       "step:",
                       "step:30,20",
                       "step:30,30",
                       "step:a",
                       "step:-5",
                       "step:30,,60",
                       "step: 30",
                       "linear",
                       "Constant",
                       "constant:3",
                       "cosine:0",
                       "cosine:10,0",
                       "cosine:10,2,3",
                       "cosine:x",
                       "warmup-linear:x",
                       "warmup-linear:1,2",
                       "warmup-linear:240",
                       "step:1.5"};
  for (const char* b : bad) {
    auto [code, msg] = error_of([&] { make_lr_schedule(b, p); });
    EXPECT_EQ(code, kExitUsage) << b;
    EXPECT_NE(msg.find("optim."), std::string::npos) << b << ": " << msg;
    if (std::string(b) != "warmup-linear:240") {  // that one names optim.epochs
      EXPECT_NE(msg.find("optim.lr-schedule"), std::string::npos) << b << ": " << msg;
    }
  }
}

TEST(LrSchedule, BadNumbersRejected) {
  auto expect_field = [](const std::string& spec, const LrParams& p, const std::string& field) {
    auto [code, msg] = error_of([&] { make_lr_schedule(spec, p); });
    EXPECT_EQ(code, kExitUsage);
    EXPECT_NE(msg.find(field), std::string::npos) << msg;
  };
  LrParams p;
  p.base_lr = -0.1;
  expect_field("constant", p, "optim.lr");
  p.base_lr = std::nan("");
  expect_field("step:1", p, "optim.lr");
  p = LrParams{};
  p.lr_min = -1e-4;
  expect_field("cosine", p, "optim.lr-min");
  p.lr_min = 0.5;  // above lr_max = base 0.1
  expect_field("cosine", p, "optim.lr-min");
  p = LrParams{};
  p.epoch_size = 0;
  expect_field("constant", p, "optim.epoch-size");
  p = LrParams{};
  p.warmup_lr = -1;
  expect_field("warmup-linear", p, "optim.warmup-lr");
  p = LrParams{};
  p.total_epochs = 5;  // = warm-up epochs
  expect_field("warmup-linear", p, "optim.epochs");
  p = LrParams{};
  p.warmup_epochs = -1;
  expect_field("warmup-linear", p, "optim.warmup-epochs");
}

// ---- penalty scaling (§5) --------------------------------------------------------------
namespace {
SearchSpace fmnist() { return SearchSpace::preset_named("fmnist"); }
}  // namespace

TEST(Penalty, NoneIsBaseEverywhere) {
  const SearchSpace sp = fmnist();
  std::vector<float> lam(sp.total_lambda(), 0.0f);
  const auto g = penalty_gamma(sp, lam, nullptr, 0.01f, PenaltyMode::None);
  for (float x : g) EXPECT_EQ(x, 0.01f);
}

TEST(Penalty, ProxyFullyAliveIsOne) {
  const SearchSpace sp = fmnist();  // L = N = 4, ops sep3 sep5 max3 avg3
  const std::vector<float> lam(sp.total_lambda(), 1.0f);
  const BlockLayout b = sp.block_layout();
  // count = 2 (level 1) + 6 (levels 2–4) + 16 = 24 → (24+1)/(24+1) = 1
  EXPECT_DOUBLE_EQ(block_penalty_factor(sp, lam.data(), nullptr, 0, PenaltyMode::AdaptiveFlopsProxy), 1.0);
  EXPECT_DOUBLE_EQ(block_penalty_factor(sp, lam.data(), nullptr, 0, PenaltyMode::AdaptiveFlopsExact), 1.0);
  const auto g = penalty_gamma(sp, lam, nullptr, 0.001f, PenaltyMode::AdaptiveFlopsProxy);
  for (float x : g) EXPECT_FLOAT_EQ(x, 0.001f);
  EXPECT_EQ(b.size(), 124);
}

TEST(Penalty, ProxyAfterKilling) {
  const SearchSpace sp = fmnist();
  const BlockLayout b = sp.block_layout();
  std::vector<float> lam(sp.total_lambda(), 1.0f);
  std::vector<uint8_t> mask(lam.size(), 1);
  const int blk0 = sp.block_lambda_offset(0, 0), blk1 = sp.block_lambda_offset(0, 1);
  const int blk5 = sp.block_lambda_offset(2, 1);
  // Block (0,0): kill all 16 λ_after → count = 2 + 6 + 0 = 8 → 9/25 = 0.36.
  for (int k = 0; k < 16; ++k) lam[blk0 + b.after_offset() + k] = 0.0f;
  // Block (0,1): zero the whole row of sep3 at level 2 and of sep5 at level 4, and
  // a pooling row (pooling costs 0) → count = 2 + 4 + 16 = 22 → 23/25 = 0.92.
  for (int i = 0; i < b.in_len(2); ++i) lam[blk1 + b.row_offset(2, 1) + i] = 0.0f;
  for (int i = 0; i < b.in_len(4); ++i) lam[blk1 + b.row_offset(4, 2) + i] = 0.0f;
  for (int i = 0; i < b.in_len(3); ++i) lam[blk1 + b.row_offset(3, 3) + i] = 0.0f;
  // Block (2,1): row (3,1) keeps one positive entry but its mask bit is 0; 3 λ_after
  // are masked → count = 2 + 5 + 13 = 20 → 21/25 = 0.84.  (Masked entries count as dead.)
  for (int i = 0; i < b.in_len(3); ++i) mask[blk5 + b.row_offset(3, 1) + i] = 0;
  for (int i = 0; i < b.in_len(3); ++i) lam[blk5 + b.row_offset(3, 1) + i] = i == 2 ? 0.5f : 0.0f;
  for (int k = 0; k < 3; ++k) mask[blk5 + b.after_offset() + k] = 0;
  const auto g = penalty_gamma(sp, lam, &mask, 0.01f, PenaltyMode::AdaptiveFlopsProxy);
  for (int e = 0; e < b.size(); ++e) {
    EXPECT_NEAR(g[blk0 + e], 0.01f * 0.36f, 1e-9);
    EXPECT_NEAR(g[blk1 + e], 0.01f * 0.92f, 1e-9);
    EXPECT_NEAR(g[blk5 + e], 0.01f * 0.84f, 1e-9);
  }
  // Untouched blocks stay at base γ, and reductions are always base γ.
  EXPECT_FLOAT_EQ(g[sp.block_lambda_offset(1, 0)], 0.01f);
  for (int s = 0; s < sp.num_reductions(); ++s) {
    EXPECT_EQ(g[sp.reduction_lambda_offset(s)], 0.01f);
    EXPECT_EQ(g[sp.reduction_lambda_offset(s) + 1], 0.01f);
  }
  // Everything dead: count = 2 (level-1 sep convs always counted) → 3/25.
  std::vector<float> zero(sp.total_lambda(), 0.0f);
  EXPECT_DOUBLE_EQ(block_penalty_factor(sp, zero.data(), nullptr, 0, PenaltyMode::AdaptiveFlopsProxy), 3.0 / 25.0);
}

TEST(Penalty, ProxyGeneralLN) {
  // L = 3, ops {sep3, max3}: total = 1·3 + 2·3 = 9.  Kill λ_after of op 1 at levels 1..3
  // → count = 1 + 2 + 3 = 6 → 7/10.
  SearchSpace sp = SearchSpace::preset_named("tiny");
  sp.ops = {OpKind::Sep3, OpKind::Max3};
  const BlockLayout b = sp.block_layout();
  std::vector<float> lam(sp.total_lambda(), 1.0f);
  for (int l = 1; l <= 3; ++l) lam[b.after_offset() + b.after_index(l, 1)] = 0.0f;
  EXPECT_DOUBLE_EQ(block_penalty_factor(sp, lam.data(), nullptr, 0, PenaltyMode::AdaptiveFlopsProxy), 0.7);
}

TEST(Penalty, ExactMacs) {
  const SearchSpace sp = fmnist();  // widths 16/32/64
  const BlockLayout b = sp.block_layout();
  std::vector<float> lam(sp.total_lambda(), 1.0f);
  const int blk0 = sp.block_lambda_offset(0, 0), blk3 = sp.block_lambda_offset(1, 1);
  for (int k = 0; k < 16; ++k) {
    lam[blk0 + b.after_offset() + k] = 0.0f;
    lam[blk3 + b.after_offset() + k] = 0.0f;
  }
  // F = 16: sep3 9·16 + 256 = 400, sep5 25·16 + 256 = 656; full = 4·(400+656) + 16·256 = 8320;
  // no output conv live → 4224/8320.
  // F = 32: sep3 288 + 1024 = 1312, sep5 800 + 1024 = 1824; full = 4·3136 + 16·1024 = 28928;
  // → 12544/28928.
  const auto g = penalty_gamma(sp, lam, nullptr, 1.0f, PenaltyMode::AdaptiveFlopsExact);
  EXPECT_NEAR(g[blk0 + 7], 4224.0 / 8320.0, 1e-6);
  EXPECT_NEAR(g[blk3 + 100], 12544.0 / 28928.0, 1e-6);
  // Kill also the level-2 sep5 row in block 0: 4224 − 656 = 3568.
  for (int i = 0; i < b.in_len(2); ++i) lam[blk0 + b.row_offset(2, 2) + i] = 0.0f;
  EXPECT_NEAR(block_penalty_factor(sp, lam.data() + blk0, nullptr, 0, PenaltyMode::AdaptiveFlopsExact), 3568.0 / 8320.0,
              1e-12);
  // Share: one block, stage-0 geometry (F = 16).
  SearchSpace sh = fmnist();
  sh.share = true;
  std::vector<float> ls(sh.total_lambda(), 1.0f);
  for (int k = 0; k < 16; ++k) ls[b.after_offset() + k] = 0.0f;
  const auto gs = penalty_gamma(sh, ls, nullptr, 1.0f, PenaltyMode::AdaptiveFlopsExact);
  EXPECT_NEAR(gs[0], 4224.0 / 8320.0, 1e-6);
  EXPECT_EQ(gs[sh.reduction_lambda_offset(0)], 1.0f);
}

TEST(Penalty, AdaptiveMacFactors) {
  // H = W = 16, F = 96: MAC_sep(3) = 98304 + 864 + 9216 = 108384, MAC_sep(5) = 109920,
  // MAC_pool = 49152, MAC_after = 49248.
  EXPECT_NEAR(adaptive_mac_factor(OpKind::Sep3), 0.986, 5e-4);
  EXPECT_NEAR(adaptive_mac_factor(OpKind::Sep5), 1.000, 5e-4);
  EXPECT_NEAR(adaptive_mac_factor(OpKind::Max3), 0.447, 5e-4);
  EXPECT_NEAR(adaptive_mac_factor(OpKind::Avg3), 0.447, 5e-4);
  EXPECT_NEAR(adaptive_mac_after_factor(), 0.448, 5e-4);
  EXPECT_DOUBLE_EQ(adaptive_mac_factor(OpKind::Sep3), 108384.0 / 109920.0);
  EXPECT_DOUBLE_EQ(adaptive_mac_after_factor(), 49248.0 / 109920.0);

  SearchSpace sp = SearchSpace::preset_named("cifar10");
  sp.share = true;
  const BlockLayout b = sp.block_layout();
  const std::vector<float> lam(sp.total_lambda(), 1.0f);
  const auto g = penalty_gamma(sp, lam, nullptr, 0.001f, PenaltyMode::AdaptiveMac);
  const double f[4] = {108384.0 / 109920.0, 1.0, 49152.0 / 109920.0, 49152.0 / 109920.0};
  for (int l = 2; l <= 4; ++l)
    for (int j = 1; j <= 4; ++j)
      for (int i = 0; i < b.in_len(l); ++i)
        EXPECT_NEAR(g[b.row_offset(l, j) + i], 0.001 * f[j - 1], 1e-9) << l << "," << j;
  for (int k = 0; k < 16; ++k) EXPECT_NEAR(g[b.after_offset() + k], 0.001 * 49248.0 / 109920.0, 1e-9);
  EXPECT_EQ(g[124], 0.001f);  // reductions: base γ
  EXPECT_EQ(g[127], 0.001f);
}

TEST(Penalty, ParseMode) {
  EXPECT_EQ(parse_penalty_mode("none"), PenaltyMode::None);
  EXPECT_EQ(parse_penalty_mode("adaptive-flops"), PenaltyMode::AdaptiveFlopsProxy);
  EXPECT_EQ(parse_penalty_mode("adaptive-flops-exact"), PenaltyMode::AdaptiveFlopsExact);
  EXPECT_EQ(parse_penalty_mode("adaptive-mac"), PenaltyMode::AdaptiveMac);
  auto [code, msg] = error_of([] { parse_penalty_mode("flops", "optim.penalty"); });
  EXPECT_EQ(code, kExitUsage);
  EXPECT_NE(msg.find("optim.penalty"), std::string::npos);
  for (auto m :
       {PenaltyMode::None, PenaltyMode::AdaptiveFlopsProxy, PenaltyMode::AdaptiveFlopsExact, PenaltyMode::AdaptiveMac})
    EXPECT_EQ(parse_penalty_mode(penalty_mode_name(m)), m);
}
