// stats.cpp — see stats.hpp.
#include "dsonas/core/stats.hpp"

#include <boost/math/distributions/fisher_f.hpp>
#include <boost/math/distributions/students_t.hpp>
#include <cmath>
#include <numeric>

namespace dsonas {
namespace {

double mean_of(const std::vector<double>& x) {
  return x.empty() ? 0.0 : std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size());
}

double var_of(const std::vector<double>& x, double m) {  // sample variance (n − 1)
  if (x.size() < 2) return 0.0;
  double s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return s / static_cast<double>(x.size() - 1);
}

}  // namespace

GroupStats group_stats(const std::vector<double>& x, double level) {
  GroupStats g;
  g.n = static_cast<int>(x.size());
  g.mean = mean_of(x);
  g.sd = std::sqrt(var_of(x, g.mean));
  g.ci_lo = g.ci_hi = g.mean;
  if (g.n >= 2) {
    const boost::math::students_t dist(g.n - 1);
    const double h = boost::math::quantile(dist, 0.5 + level / 2) * g.sd / std::sqrt(static_cast<double>(g.n));
    g.ci_lo = g.mean - h;
    g.ci_hi = g.mean + h;
  }
  return g;
}

WelchTest welch_test(const std::vector<double>& a, const std::vector<double>& b, double level) {
  WelchTest w;
  const double ma = mean_of(a), mb = mean_of(b);
  w.diff = ma - mb;
  const double na = static_cast<double>(a.size()), nb = static_cast<double>(b.size());
  if (a.size() < 2 || b.size() < 2) return w;
  const double va = var_of(a, ma), vb = var_of(b, mb);
  const double qa = va / na, qb = vb / nb, se2 = qa + qb;
  if (!(se2 > 0)) return w;
  w.valid = true;
  const double se = std::sqrt(se2);
  w.t = w.diff / se;
  w.df = se2 * se2 / (qa * qa / (na - 1) + qb * qb / (nb - 1));
  const boost::math::students_t dist(w.df);
  w.p = 2 * boost::math::cdf(boost::math::complement(dist, std::fabs(w.t)));
  const double h = boost::math::quantile(dist, 0.5 + level / 2) * se;
  w.ci_lo = w.diff - h;
  w.ci_hi = w.diff + h;
  const double pooled = std::sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2));
  const double J = 1 - 3 / (4 * (na + nb) - 9);  // Hedges' small-sample correction
  w.hedges_g = pooled > 0 ? J * w.diff / pooled : 0;
  return w;
}

Anova one_way_anova(const std::vector<std::vector<double>>& groups) {
  Anova a;
  double n = 0, k = 0, total = 0;
  for (const std::vector<double>& g : groups) {
    if (g.empty()) continue;
    n += static_cast<double>(g.size());
    k += 1;
    total += std::accumulate(g.begin(), g.end(), 0.0);
  }
  if (n - k < 1) return a;
  const double grand = total / n;
  double ssb = 0, ssw = 0;
  for (const std::vector<double>& g : groups) {
    if (g.empty()) continue;
    const double m = mean_of(g);
    ssb += static_cast<double>(g.size()) * (m - grand) * (m - grand);
    for (double v : g) ssw += (v - m) * (v - m);
  }
  a.df_between = k - 1;
  a.df_within = n - k;
  const double msw = ssw / a.df_within;
  a.within_sd = std::sqrt(msw);
  if (k < 2 || !(msw > 0)) return a;
  a.valid = true;
  a.F = (ssb / a.df_between) / msw;
  const boost::math::fisher_f dist(a.df_between, a.df_within);
  a.p = boost::math::cdf(boost::math::complement(dist, a.F));
  return a;
}

}  // namespace dsonas
