// test_random_arch.cpp — random architectures of the same cost (model/random_arch.hpp):
// every sample is valid (a fixed point of §6.1 that reads back through the strict
// JSON reader), has the found architecture's live λ entries per block and reductions,
// its MACs within ±2 % at the chosen width; the same seed gives the same bytes,
// another seed another architecture.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/random_arch.hpp"
#include "dsonas/model/prune.hpp"

using namespace dsonas;

namespace {

/// A "found" architecture: a random sparse λ (as a search leaves it) on a preset space.
Architecture found_like(bool share, uint64_t seed, const char* preset = "tiny") {
  SearchSpace sp = SearchSpace::preset_named(preset);
  sp.share = share;
  Rng r(seed, 31);
  std::vector<float> lam(static_cast<size_t>(sp.total_lambda()));
  for (float& x : lam) x = r.uniform() < 0.75f ? 0.f : 0.2f + r.uniform();
  Architecture a = Architecture::from_lambda(sp, lam.data(), nullptr);
  a.source = "test";
  return a;
}

}  // namespace

TEST(RandomArch, SamplesAreValidAndOfTheSameCost) {
  for (const char* preset : {"tiny", "fmnist"}) {
    for (bool share : {false, true}) {
      SCOPED_TRACE(str(preset, share ? " share" : " full"));
      const Architecture found = found_like(share, 3, preset);
      const std::vector<int> K = live_entries_per_block(found);
      ASSERT_EQ(K.size(), share ? 1u : static_cast<size_t>(found.space().num_normal_blocks()));
      for (int i = 0; i < (std::string(preset) == "tiny" ? 4 : 1); ++i) {
        const RandomArch r = sample_random_like(found, 11, i);
        const Architecture& a = r.arch;
        EXPECT_EQ(live_entries_per_block(a), K) << i;
        EXPECT_NEAR(a.macs(), found.macs(), 0.02 * found.macs()) << i;
        EXPECT_EQ(a.space().stem_channels, r.width);
        // a fixed point of §6.1: pruning the drawn λ changes nothing, and from_lambda gives the same network
        std::vector<float> lam = r.lambda;
        std::vector<uint8_t> mask(lam.size(), 1);
        prune_all(found.space(), lam, mask);
        EXPECT_EQ(lam, r.lambda) << i;
        const Architecture again =
            Architecture::from_lambda(scale_width(found.space(), r.width), r.lambda.data(), nullptr);
        EXPECT_EQ(again.structural_difference(a), "") << i;
        // reductions as searched
        ASSERT_EQ(a.reductions().size(), found.reductions().size());
        for (size_t s = 0; s < a.reductions().size(); ++s)
          for (int b = 0; b < 2; ++b) EXPECT_EQ(a.reductions()[s].branch[b], found.reductions()[s].branch[b]);
        // the strict reader takes it back unchanged
        EXPECT_EQ(Architecture::from_json(a.to_json(), "random.json").to_json(), a.to_json());
        EXPECT_EQ(a.stage, "random");
      }
    }
  }
}

TEST(RandomArch, DeterministicBySeedAndIndex) {
  const Architecture found = found_like(false, 5);
  const std::string a = sample_random_like(found, 1, 0).arch.to_json();
  EXPECT_EQ(sample_random_like(found, 1, 0).arch.to_json(), a) << "same seed, same bytes";
  std::set<std::string> seen{a};
  for (uint64_t seed : {2, 3})
    EXPECT_TRUE(seen.insert(sample_random_like(found, seed, 0).arch.to_json()).second) << "seed " << seed;
  for (int i : {1, 2}) EXPECT_TRUE(seen.insert(sample_random_like(found, 1, i).arch.to_json()).second) << "index " << i;
}

TEST(RandomArch, ATargetAndATolerance) {
  const Architecture found = found_like(false, 7);
  RandomArchOptions o;
  o.target_macs = 3 * found.macs();
  o.tolerance = 0.01;
  const RandomArch r = sample_random_like(found, 1, 0, o);
  EXPECT_NEAR(r.arch.macs(), o.target_macs, 0.01 * o.target_macs);
  EXPECT_GT(r.width, found.space().stem_channels);
  EXPECT_EQ(live_entries_per_block(r.arch), live_entries_per_block(found));
}
