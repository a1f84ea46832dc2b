// test_lambda_step.cpp — the λ-step (optim/lambda_step.hpp): the step schedule is
// exactly APG-NAG followed by §6.1 pruning; the reference schedule (docs/method.md
// §6.2) keeps a λ at 0 wired between rebuilds, where it receives gradients and can
// revive, and at a rebuild removes it with its momentum; the rebuild times; the
// schedule's names and checkpoint form.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/model/search_space.hpp"
#include "dsonas/optim/lambda_step.hpp"
#include "dsonas/optim/optimizer.hpp"
#include "dsonas/optim/penalty.hpp"
#include "dsonas/model/prune.hpp"
#include "test_util.hpp"

using namespace dsonas;
using ::testing::HasSubstr;

namespace {

SearchSpace tiny() { return SearchSpace::preset_named("tiny"); }

PruneSchedule reference(int e, int p) { return PruneSchedule::from("reference", e, p); }

/// An entry of the first block's λ_after (an output branch of a level-1 op): zeroing
/// it leaves the op alive through its consumers, so §6.1 keeps every other entry.
int after_entry(const SearchSpace& sp) { return sp.block_layout().after_offset(); }

}  // namespace

TEST(LambdaStep, StepScheduleIsApgThenPruneAll) {
  const SearchSpace sp = tiny();
  const size_t T = static_cast<size_t>(sp.total_lambda());
  LambdaStepper st(sp, 0.01f, PenaltyMode::None, 2.0, 0.9f, PruneSchedule(), 8, 1, 1);
  std::vector<float> lam(T, 1.f), ref_lam(T, 1.f), ref_v(T, 0.f), ref_before;
  std::vector<uint8_t> mask(T, 1), ref_mask(T, 1);
  std::vector<float> g(T);
  for (int s = 0; s < 6; ++s) {
    for (size_t e = 0; e < T; ++e) g[e] = 0.3f * static_cast<float>((e * 7 + s * 3) % 11) - 0.5f;
    const int64_t t = 2 * s + 1;
    st.step(lam, mask, g.data(), 0.1f, t);
    const std::vector<float> gam = penalty_gamma(sp, ref_lam, &ref_mask, 0.01f, PenaltyMode::None);
    ref_before = ref_lam;
    apg_nag_step(ref_lam.data(), ref_v.data(), g.data(), gam.data(), ref_mask.data(), T, static_cast<float>(0.1f * 2.0),
                 0.9f);
    prune_all(sp, ref_lam, ref_mask, &ref_v, &ref_before);
    ASSERT_EQ(lam, ref_lam) << "step " << s;
    ASSERT_EQ(mask, ref_mask) << "step " << s;
    ASSERT_EQ(st.momentum(), ref_v) << "step " << s;
  }
}

TEST(LambdaStep, RebuildTimes) {
  const SearchSpace sp = tiny();
  // 1:1 alternation, 8 steps per epoch (λ-steps at odd t), dense for 3 epochs, every 2
  LambdaStepper a(sp, 0.01f, PenaltyMode::None, 1.0, 0.9f, reference(3, 2), 8, 1, 1);
  std::vector<int64_t> due;
  for (int64_t t = 1; t < 80; t += 2)
    if (a.rebuild_due(t)) due.push_back(t);
  EXPECT_EQ(due, (std::vector<int64_t>{25, 41, 57, 73})) << "the first λ-step of epochs 3, 5, 7, 9 (0-based)";
  // 4:1 (λ-steps at t ≡ 4 mod 5), 10 steps per epoch, no dense phase, every epoch
  LambdaStepper b(sp, 0.01f, PenaltyMode::None, 1.0, 0.9f, reference(0, 1), 10, 4, 1);
  due.clear();
  for (int64_t t = 4; t < 50; t += 5)
    if (b.rebuild_due(t)) due.push_back(t);
  EXPECT_EQ(due, (std::vector<int64_t>{4, 14, 24, 34, 44}));
  // 1:2 (two λ-steps per cycle): only the first λ-step of the epoch rebuilds
  LambdaStepper c(sp, 0.01f, PenaltyMode::None, 1.0, 0.9f, reference(1, 1), 6, 1, 2);
  due.clear();
  for (int64_t t = 0; t < 24; ++t)
    if (t % 3 != 0 && c.rebuild_due(t)) due.push_back(t);
  EXPECT_EQ(due, (std::vector<int64_t>{7, 13, 19}));
  LambdaStepper s(sp, 0.01f, PenaltyMode::None, 1.0, 0.9f, PruneSchedule(), 8, 1, 1);
  for (int64_t t = 1; t < 80; t += 2) EXPECT_FALSE(s.rebuild_due(t));
}

// A hand-made λ run: an entry driven to 0 between rebuilds stays wired (mask 1),
// keeps receiving gradients and revives; the same entry at 0 when a rebuild comes
// leaves the plan with its momentum zeroed and cannot come back.
TEST(LambdaStep, ReferenceZeroBetweenRebuildsRevivesAndARebuildRemovesIt) {
  const SearchSpace sp = tiny();
  const size_t T = static_cast<size_t>(sp.total_lambda());
  const int e = after_entry(sp);
  // dense for 2 epochs of 8 steps; λ-steps at odd t; rebuilds at t = 17, 33, …
  LambdaStepper st(sp, 0.f, PenaltyMode::None, 1.0, 0.9f, reference(2, 2), 8, 1, 1);
  std::vector<float> lam(T, 1.f), g(T, 0.f);
  std::vector<uint8_t> mask(T, 1);
  g[static_cast<size_t>(e)] = 100.f;  // one large step: λ_e = max(0, 1 − 0.1·100) = 0
  LambdaStepResult r = st.step(lam, mask, g.data(), 0.1f, 1);
  EXPECT_EQ(lam[static_cast<size_t>(e)], 0.f);
  EXPECT_EQ(mask[static_cast<size_t>(e)], 1) << "still wired: no rebuild yet";
  EXPECT_FALSE(r.mask_changed);
  EXPECT_FALSE(r.rebuilt);
  const float v_after_kill = st.momentum()[static_cast<size_t>(e)];
  EXPECT_LT(v_after_kill, 0.f) << "the momentum remembers the push";
  // gradients pulling it back up: it revives (the momentum first has to decay)
  g[static_cast<size_t>(e)] = -20.f;
  int64_t revived = 0;
  int64_t t = 3;
  for (; t < 17 && lam[static_cast<size_t>(e)] == 0.f; t += 2) revived += st.step(lam, mask, g.data(), 0.1f, t).revived;
  EXPECT_GT(lam[static_cast<size_t>(e)], 0.f) << "revived before the first rebuild";
  EXPECT_EQ(revived, 1);
  EXPECT_EQ(mask[static_cast<size_t>(e)], 1);
  // drive it to 0 again just before the rebuild at t = 17
  g[static_cast<size_t>(e)] = 1000.f;
  for (; t < 17; t += 2) st.step(lam, mask, g.data(), 0.1f, t);
  ASSERT_EQ(lam[static_cast<size_t>(e)], 0.f);
  ASSERT_EQ(mask[static_cast<size_t>(e)], 1);
  g[static_cast<size_t>(e)] = 1.f;  // keeps it at 0 through the rebuild step
  r = st.step(lam, mask, g.data(), 0.1f, 17);
  EXPECT_TRUE(r.rebuilt);
  EXPECT_TRUE(r.mask_changed);
  EXPECT_EQ(r.pruned, 1) << "only that entry leaves: its op lives on through its consumers";
  EXPECT_EQ(mask[static_cast<size_t>(e)], 0);
  EXPECT_EQ(lam[static_cast<size_t>(e)], 0.f);
  EXPECT_EQ(st.momentum()[static_cast<size_t>(e)], 0.f) << "the momentum of a pruned entry is zeroed";
  // now nothing brings it back
  g[static_cast<size_t>(e)] = -1000.f;
  for (t = 19; t < 41; t += 2) EXPECT_EQ(st.step(lam, mask, g.data(), 0.1f, t).revived, 0);
  EXPECT_EQ(lam[static_cast<size_t>(e)], 0.f);
  EXPECT_EQ(st.momentum()[static_cast<size_t>(e)], 0.f);
  for (size_t k = 0; k < T; ++k) {
    if (static_cast<int>(k) != e) {
      EXPECT_EQ(mask[k], 1) << k;
    }
  }
}

TEST(LambdaStep, StepScheduleRemovesAZeroAtOnce) {
  const SearchSpace sp = tiny();
  const size_t T = static_cast<size_t>(sp.total_lambda());
  const int e = after_entry(sp);
  LambdaStepper st(sp, 0.f, PenaltyMode::None, 1.0, 0.9f, PruneSchedule(), 8, 1, 1);
  std::vector<float> lam(T, 1.f), g(T, 0.f);
  std::vector<uint8_t> mask(T, 1);
  g[static_cast<size_t>(e)] = 100.f;
  const LambdaStepResult r = st.step(lam, mask, g.data(), 0.1f, 1);
  EXPECT_TRUE(r.mask_changed);
  EXPECT_EQ(r.pruned, 1);
  EXPECT_EQ(mask[static_cast<size_t>(e)], 0);
  EXPECT_EQ(st.momentum()[static_cast<size_t>(e)], 0.f);
}

TEST(LambdaStep, ScheduleNamesAndCheckpointForm) {
  EXPECT_EQ(PruneSchedule().to_string(), "step");
  EXPECT_EQ(reference(5, 5).to_string(), "reference:5:5");
  EXPECT_TRUE(PruneSchedule::parse("reference:5:5", "x") == reference(5, 5));
  EXPECT_TRUE(PruneSchedule::parse("", "x") == PruneSchedule()) << "checkpoints from before schedules";
  EXPECT_TRUE(PruneSchedule::from("step", -3, 0) == PruneSchedule()) << "the numbers do not matter for step";
  EXPECT_FALSE(reference(5, 5) == reference(1, 1));
  EXPECT_THAT(dsonas_test::usage_error([] { PruneSchedule::from("dense", 5, 5); }),
              HasSubstr("search.prune: 'dense' (expected step or reference)"));
  EXPECT_THAT(dsonas_test::usage_error([] { PruneSchedule::from("reference", -1, 5); }),
              HasSubstr("search.prune-dense-epochs: must be >= 0"));
  EXPECT_THAT(dsonas_test::usage_error([] { PruneSchedule::from("reference", 5, 0); }),
              HasSubstr("search.prune-every: must be >= 1"));
  try {
    PruneSchedule::parse("reference:5", "ckpt.h5");
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), kExitCheckpoint);
    EXPECT_THAT(std::string(err.what()), HasSubstr("ckpt.h5: prune schedule 'reference:5'"));
  }
}
