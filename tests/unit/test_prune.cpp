// test_prune.cpp — §6.1 dead-op rule on hand-made λ patterns, its properties on random
// patterns, the live mask and reduction rule of prune_all, BlockTopology, λ counts and
// live/full MAC counts.
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <vector>

#include "dsonas/model/search_space.hpp"
#include "dsonas/model/prune.hpp"

using namespace dsonas;

namespace {

/// One normal block's λ with named accessors (1-based l, j as in docs/method.md).
struct Blk {
  BlockLayout b;
  std::vector<float> lam;
  explicit Blk(int L = 4, int N = 4) : b{L, N}, lam(static_cast<size_t>(b.size()), 0.0f) {}
  float& in(int l, int j) { return lam[b.row_offset(l, j)]; }  // edge from the block input
  float& edge(int l, int j, int lp, int jp) { return lam[b.row_offset(l, j) + b.input_index(lp, jp)]; }
  float& after(int l, int j) { return lam[b.after_offset() + b.after_index(l, j)]; }
  float row_sum(int l, int j) const {
    float s = 0;
    for (int i = 0; i < b.in_len(l); ++i) s += lam[b.row_offset(l, j) + i];
    return s;
  }
  void prune() { prune_block(lam.data(), b); }
  BlockTopology topo() const { return block_topology(lam.data(), nullptr, b); }
};

/// Independent reference: op alive ⇔ positive path input → op → output (recursive).
std::vector<std::vector<bool>> reference_alive(const Blk& k) {
  const BlockLayout& b = k.b;
  const float* lam = k.lam.data();
  std::function<bool(int, int)> reach = [&](int l, int j) -> bool {
    if (l == 1) return true;
    const int row = b.row_offset(l, j);
    if (lam[row] > 0) return true;
    for (int lp = 1; lp < l; ++lp)
      for (int jp = 1; jp <= b.N; ++jp)
        if (lam[row + b.input_index(lp, jp)] > 0 && reach(lp, jp)) return true;
    return false;
  };
  std::function<bool(int, int)> out = [&](int l, int j) -> bool {
    if (lam[b.after_offset() + b.after_index(l, j)] > 0) return true;
    for (int m = l + 1; m <= b.L; ++m)
      for (int n = 1; n <= b.N; ++n)
        if (lam[b.row_offset(m, n) + b.input_index(l, j)] > 0 && out(m, n)) return true;
    return false;
  };
  std::vector<std::vector<bool>> a(b.L + 1, std::vector<bool>(b.N + 1, false));
  for (int l = 1; l <= b.L; ++l)
    for (int j = 1; j <= b.N; ++j) a[l][j] = reach(l, j) && out(l, j);
  return a;
}

void expect_all_zero_except(const Blk& k, const std::vector<int>& keep, const char* what) {
  for (int e = 0; e < k.b.size(); ++e) {
    bool kept = false;
    for (int x : keep) kept |= x == e;
    if (!kept) {
      EXPECT_EQ(k.lam[e], 0.0f) << what << ": entry " << e;
    }
  }
}

}  // namespace

// ---- λ counts -------------------------------------------------------------------------
TEST(LambdaCount, PresetsAndFormula) {
  EXPECT_EQ((BlockLayout{4, 4}.size()), 124);
  EXPECT_EQ((BlockLayout{4, 4}.edges()), 108);
  EXPECT_EQ(SearchSpace::preset_named("fmnist").total_lambda(), 748);
  EXPECT_EQ(SearchSpace::preset_named("cifar10").total_lambda(), 2980);
  SearchSpace cs = SearchSpace::preset_named("cifar10");
  cs.share = true;
  EXPECT_EQ(cs.total_lambda(), 128);
  EXPECT_EQ(SearchSpace::preset_named("imagenet").total_lambda(), 2858);
  SearchSpace is = SearchSpace::preset_named("imagenet");
  is.share = true;
  EXPECT_EQ(is.total_lambda(), 130);
  // General formula: edges = N(L−1) + N²L(L−1)/2, λ_after = NL.  L = 3, N = 2: 4 + 12 + 6 = 22.
  EXPECT_EQ((BlockLayout{3, 2}.size()), 22);
}

// ---- §6.1 hand-made patterns ----------------------------------------------------------
TEST(PruneBlock, FullyAliveUnchanged) {
  Blk k;
  std::fill(k.lam.begin(), k.lam.end(), 1.0f);
  const auto before = k.lam;
  k.prune();
  EXPECT_EQ(k.lam, before);
  const BlockTopology t = k.topo();
  EXPECT_EQ(t.live_ops(), 16);
  EXPECT_EQ(t.live_edges(), 108);
  EXPECT_EQ(t.live_branches(), 16);
  EXPECT_FALSE(t.block_empty);
  EXPECT_EQ(t.live_inputs(4, 2), 13);
}

TEST(PruneBlock, InternalNodeWithoutAfterIsAlive) {
  // (1,1) has λ_after = 0 but feeds (2,1), which reaches the output: both alive.
  // (1,2): λ_after = 0 and no consumer → dead (nothing to zero).
  Blk k;
  k.edge(2, 1, 1, 1) = 0.5f;
  k.after(2, 1) = 0.3f;
  k.prune();
  EXPECT_EQ(k.edge(2, 1, 1, 1), 0.5f);
  EXPECT_EQ(k.after(2, 1), 0.3f);
  expect_all_zero_except(k, {k.b.row_offset(2, 1) + k.b.input_index(1, 1), k.b.after_offset() + k.b.after_index(2, 1)},
                         "internal");
  const BlockTopology t = k.topo();
  EXPECT_TRUE(t.alive(1, 1));
  EXPECT_TRUE(t.alive(2, 1));
  EXPECT_FALSE(t.alive(1, 2));
  EXPECT_EQ(t.live_ops(), 2);
  EXPECT_TRUE(t.edge_live[1][0][k.b.input_index(1, 1)]);
  EXPECT_FALSE(t.edge_live[1][0][0]);
  EXPECT_TRUE(t.after_live[k.b.after_index(2, 1)]);
  EXPECT_FALSE(t.after_live[k.b.after_index(1, 1)]);
  EXPECT_EQ(t.live_inputs(2, 1), 1);
  EXPECT_FALSE(t.block_empty);
}

TEST(PruneBlock, ZeroInputRowKillsOpAndCleansConsumers) {
  // (2,2): zero input row but λ_after = 0.7 → dead: λ_after zeroed, and its entries in
  // its consumers (3,1) and (4,1) zeroed.  (3,1) keeps its block-input edge and lives;
  // (4,1) had (2,2) as its only input → dies in the same pass (row now zero).
  Blk k;
  k.after(2, 2) = 0.7f;
  k.in(3, 1) = 0.2f;
  k.edge(3, 1, 2, 2) = 0.4f;
  k.after(3, 1) = 0.1f;
  k.edge(4, 1, 2, 2) = 0.9f;
  k.after(4, 1) = 0.5f;
  k.prune();
  EXPECT_EQ(k.after(2, 2), 0.0f);
  EXPECT_EQ(k.edge(3, 1, 2, 2), 0.0f);
  EXPECT_EQ(k.in(3, 1), 0.2f);
  EXPECT_EQ(k.after(3, 1), 0.1f);
  EXPECT_EQ(k.edge(4, 1, 2, 2), 0.0f);
  EXPECT_EQ(k.after(4, 1), 0.0f);
  expect_all_zero_except(k, {k.b.row_offset(3, 1), k.b.after_offset() + k.b.after_index(3, 1)}, "zero row");
  const BlockTopology t = k.topo();
  EXPECT_EQ(t.live_ops(), 1);
  EXPECT_TRUE(t.alive(3, 1));
}

TEST(PruneBlock, ChainDeadnessPropagatesForward) {
  // (2,1) has no input; (3,1) takes only (2,1); (4,1) takes only (3,1).  All three have
  // λ_after > 0, so pass 1 gives all of them need > 0 ((2,1) is reset by its zero row),
  // and pass 2 kills them one after the other from values zeroed earlier in the pass.
  // Independent path (1,3) → (4,2) → output survives.
  Blk k;
  k.after(2, 1) = 1.0f;
  k.edge(3, 1, 2, 1) = 0.6f;
  k.after(3, 1) = 1.0f;
  k.edge(4, 1, 3, 1) = 0.7f;
  k.after(4, 1) = 1.0f;
  k.edge(4, 2, 1, 3) = 0.25f;
  k.after(4, 2) = 0.125f;
  k.prune();
  EXPECT_EQ(k.row_sum(3, 1), 0.0f);
  EXPECT_EQ(k.row_sum(4, 1), 0.0f);
  EXPECT_EQ(k.after(2, 1), 0.0f);
  EXPECT_EQ(k.after(3, 1), 0.0f);
  EXPECT_EQ(k.after(4, 1), 0.0f);
  EXPECT_EQ(k.edge(4, 2, 1, 3), 0.25f);
  EXPECT_EQ(k.after(4, 2), 0.125f);
  expect_all_zero_except(k, {k.b.row_offset(4, 2) + k.b.input_index(1, 3), k.b.after_offset() + k.b.after_index(4, 2)},
                         "chain");
  const BlockTopology t = k.topo();
  EXPECT_EQ(t.live_ops(), 2);
  EXPECT_TRUE(t.alive(1, 3));
  EXPECT_TRUE(t.alive(4, 2));
}

TEST(PruneBlock, LevelOneOpWithoutConsumersOrAfterDies) {
  // (1,4): λ_after = 0; its only consumer (2,3) has λ_after = 0 and no consumer, so
  // need(2,3) = 0 → (2,3) dies (whole row, including its block-input edge, zeroed), and
  // then need(1,4) = 0 → (1,4) dies.  (1,1) with λ_after > 0 survives alone.
  Blk k;
  k.edge(2, 3, 1, 4) = 0.6f;
  k.in(2, 3) = 0.8f;
  k.after(1, 1) = 1.0f;
  k.prune();
  EXPECT_EQ(k.edge(2, 3, 1, 4), 0.0f);
  EXPECT_EQ(k.in(2, 3), 0.0f);
  expect_all_zero_except(k, {k.b.after_offset() + k.b.after_index(1, 1)}, "level 1");
  const BlockTopology t = k.topo();
  EXPECT_EQ(t.live_ops(), 1);
  EXPECT_TRUE(t.alive(1, 1));
  EXPECT_FALSE(t.alive(1, 4));
}

TEST(PruneBlock, EverythingDeadGivesEmptyBlock) {
  // Every edge positive but no λ_after: nothing reaches the output.
  Blk k;
  for (int e = 0; e < k.b.edges(); ++e) k.lam[e] = 0.5f;
  k.prune();
  for (float x : k.lam) EXPECT_EQ(x, 0.0f);
  const BlockTopology t = k.topo();
  EXPECT_TRUE(t.block_empty);
  EXPECT_EQ(t.live_ops(), 0);
  EXPECT_EQ(t.live_edges(), 0);
  EXPECT_EQ(t.live_branches(), 0);
}

TEST(PruneBlock, GeneralLN) {
  // L = 3, N = 2 (22 entries): (3,2) fed by (2,1) fed by input; (2,2) fed by (1,2), no
  // output → dies with its row; (1,2) then dead too.
  Blk k(3, 2);
  k.in(2, 1) = 1.0f;
  k.edge(3, 2, 2, 1) = 1.0f;
  k.after(3, 2) = 1.0f;
  k.edge(2, 2, 1, 2) = 1.0f;
  k.prune();
  EXPECT_EQ(k.in(2, 1), 1.0f);
  EXPECT_EQ(k.edge(3, 2, 2, 1), 1.0f);
  EXPECT_EQ(k.edge(2, 2, 1, 2), 0.0f);
  const BlockTopology t = k.topo();
  EXPECT_EQ(t.live_ops(), 2);
  EXPECT_TRUE(t.alive(2, 1));
  EXPECT_TRUE(t.alive(3, 2));
  EXPECT_FALSE(t.alive(1, 1));  // level-1 ops without use are not alive
}

// ---- properties on random patterns ----------------------------------------------------
TEST(PruneBlock, RandomPatternsIdempotentAndPathComplete) {
  std::mt19937 rng(12345);
  std::uniform_real_distribution<float> val(0.01f, 1.0f), coin(0.0f, 1.0f);
  const int shapes[][2] = {{4, 4}, {3, 2}, {2, 3}, {5, 2}, {1, 3}, {4, 1}};
  const float p_zero[] = {0.2f, 0.5f, 0.75f, 0.9f, 0.97f};
  int cases = 0, nonempty = 0, partially = 0;
  for (const auto& sh : shapes)
    for (float pz : p_zero)
      for (int rep = 0; rep < 60; ++rep, ++cases) {
        Blk k(sh[0], sh[1]);
        for (float& x : k.lam) x = coin(rng) < pz ? 0.0f : val(rng);
        const Blk orig = k;
        const auto ref = reference_alive(orig);
        const BlockTopology t_orig = orig.topo();
        k.prune();
        const BlockLayout& b = k.b;
        // 1. Idempotent.
        Blk again = k;
        again.prune();
        ASSERT_EQ(again.lam, k.lam) << "not idempotent, case " << cases;
        // 2. An entry survives iff it was positive and joins two alive nodes (the block
        //    input counts as alive); otherwise it is zeroed.
        for (int l = 2; l <= b.L; ++l)
          for (int j = 1; j <= b.N; ++j)
            for (int i = 0; i < b.in_len(l); ++i) {
              const int e = b.row_offset(l, j) + i;
              const bool prod = i == 0 || ref[1 + (i - 1) / b.N][1 + (i - 1) % b.N];
              const float want = ref[l][j] && prod ? orig.lam[e] : 0.0f;
              ASSERT_EQ(k.lam[e], want) << "case " << cases << " edge (" << l << "," << j << ")[" << i << "]";
            }
        for (int l = 1; l <= b.L; ++l)
          for (int j = 1; j <= b.N; ++j) {
            const int e = b.after_offset() + b.after_index(l, j);
            ASSERT_EQ(k.lam[e], ref[l][j] ? orig.lam[e] : 0.0f);
          }
        // 3. Every surviving op (§6.1 "exists": level ≥ 2 non-zero row; level 1 with
        //    λ_after or a consumer entry > 0) has a positive path input → output, and the
        //    topology from the unpruned and the pruned λ agree with the reference.
        const auto ref_after = reference_alive(k);
        const BlockTopology t = k.topo();
        bool any = false;
        for (int l = 1; l <= b.L; ++l)
          for (int j = 1; j <= b.N; ++j) {
            bool exists;
            if (l > 1) {
              exists = k.row_sum(l, j) > 0;
            } else {
              float s = k.after(1, j);
              for (int m = 2; m <= b.L; ++m)
                for (int n = 1; n <= b.N; ++n) s += k.edge(m, n, 1, j);
              exists = s > 0;
            }
            ASSERT_EQ(exists, static_cast<bool>(ref_after[l][j])) << "case " << cases;
            ASSERT_EQ(ref_after[l][j], ref[l][j]);
            ASSERT_EQ(t.alive(l, j), ref[l][j]);
            ASSERT_EQ(t_orig.alive(l, j), ref[l][j]);
            any |= ref[l][j];
          }
        ASSERT_EQ(t.edge_live, t_orig.edge_live);
        ASSERT_EQ(t.after_live, t_orig.after_live);
        ASSERT_EQ(t.block_empty, !any);
        nonempty += any;
        partially += any && t.live_ops() < b.L * b.N;
      }
  // The generator must exercise both outcomes.
  EXPECT_GT(nonempty, cases / 4);
  EXPECT_GT(partially, cases / 4);
  EXPECT_LT(nonempty, cases);
}

// ---- topology with a mask ----------------------------------------------------------------
TEST(Topology, MaskedEntriesAreNotEdges) {
  // (2,1) fed only by (1,1) through an entry whose mask bit is 0 → unreachable → dead,
  // even though λ > 0 and λ_after > 0.  (3,1) fed by input and (2,1) → alive, one input.
  Blk k;
  std::vector<uint8_t> mask(k.b.size(), 1);
  k.edge(2, 1, 1, 1) = 0.5f;
  mask[k.b.row_offset(2, 1) + k.b.input_index(1, 1)] = 0;
  k.after(2, 1) = 0.5f;
  k.in(3, 1) = 0.5f;
  k.edge(3, 1, 2, 1) = 0.5f;
  k.edge(3, 1, 1, 2) = 0.5f;
  k.after(3, 1) = 0.5f;
  const BlockTopology t = block_topology(k.lam.data(), mask.data(), k.b);
  EXPECT_FALSE(t.alive(2, 1));
  EXPECT_FALSE(t.alive(1, 1));
  EXPECT_TRUE(t.alive(1, 2));
  EXPECT_TRUE(t.alive(3, 1));
  EXPECT_EQ(t.live_inputs(3, 1), 2);  // block input and (1,2); not the dead (2,1)
  EXPECT_FALSE(t.edge_live[2][0][k.b.input_index(2, 1)]);
  EXPECT_FALSE(t.after_live[k.b.after_index(2, 1)]);
  EXPECT_EQ(t.live_branches(), 1);
}

// ---- prune_all: mask, momentum, reductions, share ----------------------------------------
TEST(PruneAll, MaskAndMomentumFollowZeros) {
  const SearchSpace sp = SearchSpace::preset_named("fmnist");
  const BlockLayout b = sp.block_layout();
  const int n = sp.total_lambda();
  std::vector<float> lam(n, 1.0f), v(n, 0.25f);
  std::vector<uint8_t> mask(n, 1);
  const int blk = sp.block_lambda_offset(1, 1);
  // Block (1,1): a single zero edge (not structural), and op (2,3) loses its whole row.
  const int lone = blk + b.row_offset(4, 4) + 3;
  lam[lone] = 0.0f;
  for (int i = 0; i < b.in_len(2); ++i) lam[blk + b.row_offset(2, 3) + i] = 0.0f;
  // A stale entry: mask 0 but λ > 0 (must be forced to 0).
  const int stale = sp.block_lambda_offset(2, 0) + 17;
  mask[stale] = 0;
  prune_all(sp, lam, mask, &v);
  for (int e = 0; e < n; ++e) {
    EXPECT_EQ(mask[e] != 0, lam[e] > 0.0f) << e;
    EXPECT_EQ(v[e], mask[e] ? 0.25f : 0.0f) << e;
  }
  EXPECT_EQ(mask[lone], 0);
  EXPECT_EQ(lam[stale], 0.0f);
  EXPECT_EQ(lam[blk + b.after_offset() + b.after_index(2, 3)], 0.0f);
  for (int m = 3; m <= 4; ++m)
    for (int j = 1; j <= 4; ++j) EXPECT_EQ(mask[blk + b.row_offset(m, j) + b.input_index(2, 3)], 0);
  // Other blocks untouched.
  for (int e = 0; e < b.size(); ++e) EXPECT_EQ(mask[sp.block_lambda_offset(0, 0) + e], 1);
  const ZeroCount zc = count_zero(lam.data(), lam.size());
  EXPECT_EQ(zc.total, 748);
  // zeros: row (2,3) 5 + its λ_after 1 + its 8 consumer entries + the lone edge + stale
  EXPECT_EQ(zc.zero, 5 + 1 + 8 + 1 + 1);
}

TEST(PruneAll, ReductionRule) {
  const SearchSpace sp = SearchSpace::preset_named("tiny");  // L = 3, 2 stages, 1 reduction
  const int n = sp.total_lambda();
  ASSERT_EQ(n, 2 * 68 + 2);
  const int r = sp.reduction_lambda_offset(0);
  auto run = [&](float a, float b, uint8_t ma, uint8_t mb, float pa, float pb, bool with_before) {
    std::vector<float> lam(n, 1.0f), v(n, 0.5f), before(n, 1.0f);
    std::vector<uint8_t> mask(n, 1);
    lam[r] = a, lam[r + 1] = b, mask[r] = ma, mask[r + 1] = mb, before[r] = pa, before[r + 1] = pb;
    prune_all(sp, lam.data(), mask.data(), v.data(), with_before ? before.data() : nullptr);
    const ReductionTopology t = reduction_topology(sp, 0, lam.data(), mask.data());
    EXPECT_EQ(t.branch_live[0], mask[r] != 0);
    EXPECT_EQ(t.branch_live[1], mask[r + 1] != 0);
    EXPECT_GE(mask[r] + mask[r + 1], 1);  // a reduction always keeps a branch
    return std::vector<float>{
        static_cast<float>(mask[r]), static_cast<float>(mask[r + 1]), lam[r], lam[r + 1], v[r], v[r + 1]};
  };
  using V = std::vector<float>;
  // Both positive: both live, untouched.
  EXPECT_EQ(run(0.3f, 0.2f, 1, 1, 1, 1, true), (V{1, 1, 0.3f, 0.2f, 0.5f, 0.5f}));
  // One zero: that branch dies (mask 0, v 0).
  EXPECT_EQ(run(0.0f, 0.2f, 1, 1, 1, 1, true), (V{0, 1, 0, 0.2f, 0, 0.5f}));
  EXPECT_EQ(run(0.3f, 0.0f, 1, 1, 1, 1, true), (V{1, 0, 0.3f, 0, 0.5f, 0}));
  // Both zero: the branch larger BEFORE the step stays live at λ = 0 (v kept: can revive).
  EXPECT_EQ(run(0, 0, 1, 1, 0.2f, 0.3f, true), (V{0, 1, 0, 0, 0, 0.5f}));
  EXPECT_EQ(run(0, 0, 1, 1, 0.3f, 0.2f, true), (V{1, 0, 0, 0, 0.5f, 0}));
  // Tie, or no pre-step λ given → branch 0.
  EXPECT_EQ(run(0, 0, 1, 1, 0.2f, 0.2f, true), (V{1, 0, 0, 0, 0.5f, 0}));
  EXPECT_EQ(run(0, 0, 1, 1, 0.2f, 0.3f, false), (V{1, 0, 0, 0, 0.5f, 0}));
  // Branch 0 already pruned, kept branch 1 at 0 (tie in pre-step λ): branch 1 stays;
  // the masked branch 0 is never revived.
  EXPECT_EQ(run(0, 0, 0, 1, 0.0f, 0.0f, true), (V{0, 1, 0, 0, 0, 0.5f}));
  // The kept zero branch revives when λ becomes positive again: both stay/become as mask says.
  EXPECT_EQ(run(0, 0.1f, 0, 1, 0.0f, 0.0f, true), (V{0, 1, 0, 0.1f, 0, 0.5f}));
}

TEST(PruneAll, ShareModePrunesSharedBlockOnce) {
  SearchSpace sp = SearchSpace::preset_named("cifar10");
  sp.share = true;
  const BlockLayout b = sp.block_layout();
  std::vector<float> lam(sp.total_lambda(), 1.0f);
  std::vector<uint8_t> mask(lam.size(), 1);
  for (int k = 0; k < 16; ++k) lam[b.after_offset() + k] = 0.0f;  // shared block: all dead
  prune_all(sp, lam, mask);
  for (int e = 0; e < 124; ++e) EXPECT_EQ(mask[e], 0);
  for (int e = 124; e < 128; ++e) EXPECT_EQ(mask[e], 1);  // reductions live
  const auto ops = live_ops_per_type(sp, lam.data(), mask.data());
  for (auto c : ops) EXPECT_EQ(c, 0);
}

// ---- counts and MACs ---------------------------------------------------------------------
TEST(Counts, LiveOpsPerType) {
  SearchSpace sp = SearchSpace::preset_named("fmnist");
  std::vector<float> lam(sp.total_lambda(), 1.0f);
  auto ops = live_ops_per_type(sp, lam.data(), nullptr);
  ASSERT_EQ(ops.size(), 4u);
  for (auto c : ops) EXPECT_EQ(c, 6 * 4);  // 6 blocks × 4 levels
  sp.share = true;                         // shared topology counted per physical block
  std::vector<float> ls(sp.total_lambda(), 1.0f);
  const BlockLayout b = sp.block_layout();
  for (int l = 1; l <= 4; ++l) ls[b.after_offset() + b.after_index(l, 2)] = 0.0f;  // sep5 unused
  for (int l = 2; l <= 4; ++l)
    for (int j = 1; j <= 4; ++j)
      for (int lp = 1; lp < l; ++lp) ls[b.row_offset(l, j) + b.input_index(lp, 2)] = 0.0f;
  ops = live_ops_per_type(sp, ls.data(), nullptr);
  EXPECT_EQ(ops[0], 24);
  EXPECT_EQ(ops[1], 0);
  EXPECT_EQ(ops[2], 24);
  const ZeroCount z = count_zero(ls.data(), ls.size());
  EXPECT_EQ(z.total, 124 + 4);
  // 4 λ_after of sep5 + its out-edges: 4 consumers at level 2 (from level 1), 4 × 2 at
  // level 3, 4 × 3 at level 4 = 24 → 28 (count_zero counts raw entries, no pruning).
  EXPECT_EQ(z.zero, 4 + 4 + 8 + 12);
}

TEST(Macs, CifarSupernetIs148G) {
  // docs/method.md §11.1: CIFAR supernet C = 48, all alive: 1.48 G MACs.
  const SearchSpace sp = SearchSpace::preset_named("cifar10");
  const double m = full_macs(sp);
  EXPECT_NEAR(m / 1e9, 1.48, 0.005) << m;
  SearchSpace sh = sp;
  sh.share = true;
  EXPECT_DOUBLE_EQ(full_macs(sh), m);  // same network, shared λ
  // C = 36 → 0.85 G, C = 24 → 0.39 G.
  for (auto [c, want] : {std::pair<int, double>{36, 0.85}, {24, 0.39}}) {
    SearchSpace s2 = sp;
    s2.stem_channels = c;
    s2.widths = {c, 2 * c, 4 * c};
    EXPECT_NEAR(full_macs(s2) / 1e9, want, 0.005) << c;
  }
}

TEST(Macs, ImageNetSupernetIs150G) {
  // docs/method.md §11.1: ImageNet supernet C = 28: 1.50 G MACs.
  const SearchSpace sp = SearchSpace::preset_named("imagenet");
  EXPECT_NEAR(full_macs(sp) / 1e9, 1.50, 0.01) << full_macs(sp);
}

TEST(Macs, LiveMacsFollowTopology) {
  const SearchSpace sp = SearchSpace::preset_named("fmnist");  // 28×28, widths 16/32/64
  const BlockLayout b = sp.block_layout();
  const double full = full_macs(sp);
  // Hand count: stem 9·1·16·784 = 112 896.  Stage s: F, HW = 784, 196, 49.
  //   block = 4·((9F + F²) + (25F + F²))·HW + 16·F²·HW; id_conv F²HW.
  //   reductions: 10·F·2F·(HW/4 at the next stage); FC 64·10.
  auto blockm = [](double F, double hw) { return (4 * (34 * F + 2 * F * F) + 16 * F * F) * hw; };
  const double hand = 112896 + 2 * blockm(16, 784) + 256 * 784 + 2 * blockm(32, 196) + 1024 * 196 + 2 * blockm(64, 49) +
                      4096 * 49 + 10 * 16 * 32 * 196 + 10 * 32 * 64 * 49 + 640;
  EXPECT_DOUBLE_EQ(full, hand);

  std::vector<float> lam(sp.total_lambda(), 1.0f);
  std::vector<uint8_t> mask(lam.size(), 1);
  // Kill block (0,0) entirely (no λ_after): its cost goes, its id_conv stays.
  const int blk = sp.block_lambda_offset(0, 0);
  for (int k = 0; k < 16; ++k) lam[blk + b.after_offset() + k] = 0.0f;
  EXPECT_DOUBLE_EQ(live_macs(sp, lam.data(), mask.data()), full - blockm(16, 784));
  // Reduction 1, branch 1 (3×3) masked: −9·32·64·49.
  mask[sp.reduction_lambda_offset(1) + 1] = 0;
  EXPECT_DOUBLE_EQ(live_macs(sp, lam.data(), mask.data()), full - blockm(16, 784) - 9.0 * 32 * 64 * 49);
  // Block (1,0): only op (1,1) (sep3) → output: (9F + F²)HW + F²HW at F = 32, HW = 196.
  const int blk2 = sp.block_lambda_offset(1, 0);
  for (int e = 0; e < b.size(); ++e) lam[blk2 + e] = 0.0f;
  lam[blk2 + b.after_offset() + b.after_index(1, 1)] = 0.3f;
  EXPECT_DOUBLE_EQ(live_macs(sp, lam.data(), mask.data()),
                   full - blockm(16, 784) - 9.0 * 32 * 64 * 49 - blockm(32, 196) + (9.0 * 32 + 1024 + 1024) * 196);
}
