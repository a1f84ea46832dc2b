// test_stats.cpp — the study's statistics (core/stats.hpp) against values computed
// independently with SciPy 1.10.1 (Debian's python3-scipy):
//   stats.ttest_ind(a, b, equal_var=False), the Welch–Satterthwaite df,
//   stats.t.ppf(0.975, df) for the intervals, Hedges' g = J·d with the pooled sd,
//   stats.f_oneway(*groups) and the pooled within-group sd √(SS_within / (n − k)).
// (tests/python/test_study.py repeats the comparison live on a study's report.)
#include <gtest/gtest.h>

#include <vector>

#include "dsonas/core/stats.hpp"

using namespace dsonas;

TEST(Stats, WelchAgainstScipy) {
  // the three fmnist.cfg seeds of the README: found vs hand-made
  const std::vector<double> a = {93.91, 93.59, 93.79}, b = {93.72, 93.49, 93.40};
  const WelchTest w = welch_test(a, b);
  ASSERT_TRUE(w.valid);
  EXPECT_NEAR(w.t, 1.6994689988937812, 1e-12);
  EXPECT_NEAR(w.df, 3.998301284176126, 1e-12);
  EXPECT_NEAR(w.p, 0.16448763211767004, 1e-10);
  EXPECT_NEAR(w.ci_lo, -0.14370373684039373, 1e-10);
  EXPECT_NEAR(w.ci_hi, 0.5970370701737127, 1e-10);
  EXPECT_NEAR(w.hedges_g, 1.1100885015915503, 1e-12);
  EXPECT_NEAR(w.diff, (93.91 + 93.59 + 93.79 - 93.72 - 93.49 - 93.40) / 3, 1e-12);
  const WelchTest u = welch_test({87.48, 87.06, 87.71, 87.2, 86.9}, {87.44, 87.20, 86.49});
  EXPECT_NEAR(u.t, 0.7079033143584333, 1e-12);
  EXPECT_NEAR(u.p, 0.5289343988508368, 1e-10);
  // swapping the groups flips the sign, not the p-value
  const WelchTest s = welch_test(b, a);
  EXPECT_NEAR(s.t, -w.t, 1e-12);
  EXPECT_NEAR(s.p, w.p, 1e-12);
}

TEST(Stats, GroupAgainstScipy) {
  const GroupStats g = group_stats({93.91, 93.59, 93.79});
  EXPECT_EQ(g.n, 3);
  EXPECT_NEAR(g.mean, (93.91 + 93.59 + 93.79) / 3, 1e-12);
  EXPECT_NEAR(g.sd, 0.16165807537309235, 1e-12);
  EXPECT_NEAR(g.ci_lo, 93.36175241187496, 1e-10);
  EXPECT_NEAR(g.ci_hi, 94.16491425479171, 1e-10);
}

TEST(Stats, TooFewValuesAreNotATest) {
  const GroupStats one = group_stats({91.0});
  EXPECT_EQ(one.sd, 0);
  EXPECT_EQ(one.ci_lo, 91.0);
  EXPECT_FALSE(welch_test({1.0}, {2.0, 3.0}).valid);
  EXPECT_FALSE(welch_test({1.0, 1.0}, {2.0, 2.0}).valid) << "no variance at all";
  EXPECT_EQ(welch_test({1.0}, {2.0, 3.0}).p, 1.0);
}

TEST(Stats, AnovaAgainstScipy) {
  const Anova a = one_way_anova({{93.01, 93.22, 92.88}, {93.55, 93.10, 93.34}, {92.9, 93.4, 93.0, 93.2}});
  ASSERT_TRUE(a.valid);
  EXPECT_NEAR(a.F, 1.5606520090977558, 1e-10);
  EXPECT_NEAR(a.p, 0.27511577574722695, 1e-10);
  EXPECT_EQ(a.df_between, 2);
  EXPECT_EQ(a.df_within, 7);
  EXPECT_NEAR(a.within_sd, 0.20968229936422178, 1e-12);
  // the four random architectures of the 6-seed Fashion-MNIST study (README)
  const Anova r = one_way_anova({{90.31, 90.48, 90.2, 90.38, 90.54, 90.84},
                                 {90.54, 90.05, 90.39, 90.36, 90.66, 90.43},
                                 {90.73, 90.75, 90.66, 90.18, 90.75, 90.25},
                                 {90.7, 90.42, 90.21, 90.22, 90.79, 90.38},
                                 {}});
  EXPECT_NEAR(r.F, 0.41821197045077374, 1e-10);
  EXPECT_NEAR(r.p, 0.7418735997195833, 1e-10);
  EXPECT_EQ(r.df_within, 20) << "an empty group is left out";
}

TEST(Stats, AnovaNeedsGroupsAndSpread) {
  const Anova one = one_way_anova({{1.0, 2.0, 3.0}});
  EXPECT_FALSE(one.valid);
  EXPECT_NEAR(one.within_sd, 1.0, 1e-12) << "the pooled sd of a single group is its sd";
  EXPECT_FALSE(one_way_anova({{1.0}, {2.0}}).valid) << "no within-group degrees of freedom";
  EXPECT_FALSE(one_way_anova({{1.0, 1.0}, {2.0, 2.0}}).valid) << "no spread within the groups";
  EXPECT_FALSE(one_way_anova({}).valid);
}
