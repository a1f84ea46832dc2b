// stats.hpp — the statistics of a study (run/study.cpp): per group the mean, the
// sample standard deviation and a 95 % confidence interval of the mean (Student's
// t), and between two groups Welch's unequal-variance t-test (t, the
// Welch–Satterthwaite degrees of freedom, the two-sided p-value, the 95 % interval
// of the difference) and Hedges' g; among several groups the one-way analysis of
// variance (F test) and the pooled within-group standard deviation.  Student's t and
// Fisher's F distributions come from Boost.Math (students_t, fisher_f), not from code
// of our own.
#pragma once
#include <vector>

namespace dsonas {

struct GroupStats {
  int n = 0;
  double mean = 0, sd = 0;      ///< sd: sample standard deviation (n − 1); 0 for n < 2
  double ci_lo = 0, ci_hi = 0;  ///< 95 % interval of the mean (n ≥ 2; else = mean)
};
GroupStats group_stats(const std::vector<double>& x, double level = 0.95);

struct WelchTest {
  double diff = 0;              ///< mean(a) − mean(b)
  double t = 0, df = 0, p = 1;  ///< p: two-sided
  double ci_lo = 0, ci_hi = 0;  ///< interval of the difference at the level given
  double hedges_g = 0;          ///< standardised difference, small-sample corrected
  bool valid = false;           ///< both groups have n ≥ 2 and not both zero variance
};
WelchTest welch_test(const std::vector<double>& a, const std::vector<double>& b, double level = 0.95);

struct Anova {
  double F = 0, df_between = 0, df_within = 0, p = 1;
  double within_sd = 0;  ///< √(within-group mean square): the pooled sd of the groups
  bool valid = false;    ///< ≥ 2 groups, some within-group spread, df_within ≥ 1
};
/// One-way ANOVA of groups (groups with no values are left out); within_sd is
/// reported whenever df_within ≥ 1, also with a single group.
Anova one_way_anova(const std::vector<std::vector<double>>& groups);

}  // namespace dsonas
