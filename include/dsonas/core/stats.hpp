// stats.hpp — the statistics of a study (run/study.cpp): per group the mean, the
// sample standard deviation and a 95 % confidence interval of the mean (Student's
// t), and between two groups Welch's unequal-variance t-test (t, the
// Welch–Satterthwaite degrees of freedom, the two-sided p-value, the 95 % interval
// of the difference) and Hedges' g.  Student's t distribution comes from
// Boost.Math (students_t, quantile and cdf), not from code of our own.
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

}  // namespace dsonas
