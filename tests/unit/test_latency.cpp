// test_latency.cpp — adaptive latency factors (docs/method.md §5.3) against
// hand-computed values; live bits after §6.1; the timing cache.
#include <gtest/gtest.h>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/optim/latency.hpp"

using namespace dsonas;

namespace {

SearchSpace tiny_share() {
  SearchSpace s = SearchSpace::preset_named("tiny");
  s.share = true;
  return s;
}

TEST(Latency, FactorsFollowTheFormula) {
  auto be = make_backend(Device::CPU, 1);
  LatencyPenalty lp(tiny_share(), 0, 3, 1, *be);
  // s_i = −T_i normalised to [0,1]: the fastest network without its edge → r = 1,
  // the slowest → 0.5; linear in between; everything else 1.
  const std::vector<int> bits = {3, 7, 20};
  const std::vector<double> t = {2e-3, 1e-3, 1.5e-3};
  const std::vector<float> r = lp.factors(bits, t);
  ASSERT_EQ(r.size(), static_cast<size_t>(tiny_share().total_lambda()));
  EXPECT_NEAR(r[3], 0.5, 1e-6);
  EXPECT_NEAR(r[7], 1.0, 1e-6);
  EXPECT_NEAR(r[20], 0.75, 1e-6);
  for (size_t e = 0; e < r.size(); ++e)
    if (e != 3 && e != 7 && e != 20) {
      EXPECT_EQ(r[e], 1.f) << e;
    }
  // equal timings: 0/(0 + 1e-9) → every set bit 0.5
  const std::vector<float> q = lp.factors({1, 2}, {1e-3, 1e-3});
  EXPECT_NEAR(q[1], 0.5, 1e-6);
  EXPECT_NEAR(q[2], 0.5, 1e-6);
}

TEST(Latency, LiveBitsAfterTheDeadOpRule) {
  const SearchSpace sp = tiny_share();
  auto be = make_backend(Device::CPU, 1);
  LatencyPenalty lp(sp, 0, 3, 1, *be);
  const BlockLayout b = sp.block_layout();
  std::vector<float> lam(static_cast<size_t>(sp.total_lambda()), 1.f);
  // every bit of the shared block is live when all λ = 1
  std::vector<int> all = lp.live_bits(lam.data(), nullptr);
  EXPECT_EQ(static_cast<int>(all.size()), b.size());
  // op (L, 1) loses its output branch and every input: it is dead, and so are
  // the edges that would feed it
  for (int i = 0; i < b.in_len(b.L); ++i) lam[static_cast<size_t>(b.row_offset(b.L, 1) + i)] = 0.f;
  lam[static_cast<size_t>(b.after_offset() + b.after_index(b.L, 1))] = 0.f;
  std::vector<int> some = lp.live_bits(lam.data(), nullptr);
  EXPECT_EQ(some.size(), all.size() - static_cast<size_t>(b.in_len(b.L)) - 1);
  for (int e : some) EXPECT_GT(lam[static_cast<size_t>(e)], 0.f);
}

TEST(Latency, TimingsAreCachedByCodeAndDealtOutByPart) {
  const SearchSpace sp = tiny_share();
  auto be = make_backend(Device::CPU, 1);
  LatencyPenalty lp(sp, 0, 3, 1, *be);
  std::vector<float> lam(static_cast<size_t>(sp.total_lambda()), 1.f);
  const std::vector<int> bits = lp.live_bits(lam.data(), nullptr);
  std::vector<double> even = lp.time_removals(lam.data(), nullptr, bits, 0, 2);
  for (size_t k = 0; k < bits.size(); ++k) {
    if (k % 2 == 0)
      EXPECT_GT(even[k], 0.0) << k;
    else
      EXPECT_EQ(even[k], 0.0) << k;
  }
  const int64_t timed = lp.timed();
  EXPECT_EQ(timed, static_cast<int64_t>((bits.size() + 1) / 2));
  std::vector<double> again = lp.time_removals(lam.data(), nullptr, bits, 0, 2);
  EXPECT_EQ(lp.timed(), timed) << "a second epoch with the same code must not re-time";
  EXPECT_EQ(again, even);
}

TEST(Latency, FullSpaceAndBadIterationsRefused) {
  auto be = make_backend(Device::CPU, 1);
  try {
    LatencyPenalty lp(SearchSpace::preset_named("tiny"), 0, 3, 1, *be);
    FAIL() << "full space accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitUsage);
    EXPECT_NE(std::string(e.what()).find("share"), std::string::npos);
  }
  EXPECT_THROW(LatencyPenalty(tiny_share(), 0, 3, 3, *be), Error);
}

}  // namespace
