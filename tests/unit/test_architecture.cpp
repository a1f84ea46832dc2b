// test_architecture.cpp — the derived architecture (docs/method.md §6.3) on hand-made
// λ patterns of the tiny space (L = 3, N = 4, stages 4 and 8 wide, 8×8 input):
// exactly the expected live ops / inputs / outputs, empty blocks and collapse
// warnings, §11.1 MAC / param counts checked by hand, share mode, width scaling,
// deterministic JSON bytes and one DOT cluster per block.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dsonas/model/architecture.hpp"
#include "dsonas/model/search_space.hpp"
#include "dsonas/model/prune.hpp"

using namespace dsonas;

namespace {

/// Flat λ of a space, with named accessors into normal block (s, u) (0-based) and reductions.
struct Lam {
  SearchSpace sp;
  BlockLayout b;
  std::vector<float> v;
  explicit Lam(const SearchSpace& s) : sp(s), b(s.block_layout()), v(static_cast<size_t>(s.total_lambda()), 0.0f) {}
  float& in(int s, int u, int l, int j) { return v[sp.block_lambda_offset(s, u) + b.row_offset(l, j)]; }
  float& edge(int s, int u, int l, int j, int lp, int jp) {
    return v[sp.block_lambda_offset(s, u) + b.row_offset(l, j) + b.input_index(lp, jp)];
  }
  float& after(int s, int u, int l, int j) {
    return v[sp.block_lambda_offset(s, u) + b.after_offset() + b.after_index(l, j)];
  }
  float& red(int s, int k) { return v[sp.reduction_lambda_offset(s) + k]; }
};

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

/// Block s1/u1: l1/o1 → out; l1/o3 → l2/o2 → out; in + l2/o2 → l3/o4 → out.
/// Dead on purpose: l2/o1 (input but no output), l3/o1 (output but no input).
/// Block s2/u1: nothing (empty).  Reduction: only the 1×1 branch.
Lam pattern() {
  Lam L(SearchSpace::preset_named("tiny"));
  L.after(0, 0, 1, 1) = 1.0f;
  L.edge(0, 0, 2, 2, 1, 3) = 0.5f;
  L.after(0, 0, 2, 2) = 0.3f;
  L.in(0, 0, 3, 4) = 0.2f;
  L.edge(0, 0, 3, 4, 2, 2) = 0.1f;
  L.after(0, 0, 3, 4) = 0.4f;
  L.in(0, 0, 2, 1) = 0.7f;     // dead: no path to the output
  L.after(0, 0, 3, 1) = 1.0f;  // dead: no input
  L.red(0, 0) = 0.8f;
  return L;
}

}  // namespace

TEST(Architecture, SurvivingOpsInputsOutputsExactly) {
  Lam L = pattern();
  const std::vector<float> before = L.v;
  const Architecture a = Architecture::from_lambda(L.sp, L.v.data(), nullptr);
  EXPECT_EQ(L.v, before) << "from_lambda must not modify the caller's λ";
  ASSERT_EQ(a.blocks().size(), 2u);
  const ArchBlock& b = a.blocks()[0];
  EXPECT_EQ(b.name, "s1/u1");
  EXPECT_TRUE(b.id_conv);
  EXPECT_FALSE(b.empty);
  ASSERT_EQ(b.ops.size(), 4u);
  struct E {
    int l, j;
    OpKind t;
    std::vector<std::string> in;
    bool out;
  };
  const std::vector<E> want = {{1, 1, OpKind::Sep3, {"in"}, true},
                               {1, 3, OpKind::Max3, {"in"}, false},
                               {2, 2, OpKind::Sep5, {"l1/o3"}, true},
                               {3, 4, OpKind::Avg3, {"in", "l2/o2"}, true}};
  for (size_t k = 0; k < want.size(); ++k) {
    const ArchOp& o = b.ops[k];
    EXPECT_EQ(o.level, want[k].l) << k;
    EXPECT_EQ(o.op, want[k].j) << k;
    EXPECT_EQ(o.type, want[k].t) << k;
    std::vector<std::string> names;
    for (int i : o.inputs) names.push_back(a.input_name(i));
    EXPECT_EQ(names, want[k].in) << k;
    EXPECT_EQ(o.output, want[k].out) << k;
  }
  const std::string js = a.to_json();
  EXPECT_NE(js.find(R"({"level": 1, "op": 1, "type": "sep3", "inputs": ["in"], "output": true})"), std::string::npos)
      << js;
  EXPECT_NE(js.find(R"({"level": 1, "op": 3, "type": "max3", "inputs": ["in"], "output": false})"), std::string::npos);
  EXPECT_NE(js.find(R"({"level": 2, "op": 2, "type": "sep5", "inputs": ["l1/o3"], "output": true})"),
            std::string::npos);
  EXPECT_NE(js.find(R"({"level": 3, "op": 4, "type": "avg3", "inputs": ["in", "l2/o2"], "output": true})"),
            std::string::npos);
  EXPECT_EQ(count(js, R"("level": )"), 4u) << "only live ops are listed";
  EXPECT_NE(js.find(R"("format": "dsonas-architecture")"), std::string::npos);
  EXPECT_NE(js.find(R"("format_version": 1)"), std::string::npos);
  EXPECT_NE(js.find(R"("branches": ["1x1"])"), std::string::npos);
  EXPECT_NE(js.find(R"("per_type": {"sep3": 1, "sep5": 1, "max3": 1, "avg3": 1})"), std::string::npos) << js;
  EXPECT_NE(js.find(R"("per_level": {"l1": 2, "l2": 1, "l3": 1})"), std::string::npos);
  ASSERT_EQ(a.reductions().size(), 1u);
  EXPECT_TRUE(a.reductions()[0].branch[0]);
  EXPECT_FALSE(a.reductions()[0].branch[1]);
}

TEST(Architecture, EmptyBlockIsShortcutOnlyWithWarning) {
  Lam L = pattern();
  const Architecture a = Architecture::from_lambda(L.sp, L.v.data(), nullptr);
  const ArchBlock& b = a.blocks()[1];
  EXPECT_EQ(b.name, "s2/u1");
  EXPECT_TRUE(b.empty);
  EXPECT_TRUE(b.ops.empty());
  const std::string js = a.to_json();
  EXPECT_NE(js.find(R"("name": "s2/u1")"), std::string::npos);
  EXPECT_NE(js.find(R"("empty": true)"), std::string::npos);
  bool warned = false;
  for (const std::string& w : a.warnings())
    warned = warned || w.find("s2/u1: no live output branch") != std::string::npos;
  EXPECT_TRUE(warned);
  EXPECT_NE(js.find("s2/u1: no live output branch; the block is reduced to its shortcut (id_conv)"), std::string::npos);
}

TEST(Architecture, MacsAndParamsOfOneDerivedBlockByHand) {
  Lam L = pattern();
  const Architecture a = Architecture::from_lambda(L.sp, L.v.data(), nullptr);
  // tiny: 1×8×8 input, stem 3×3 → 4; s1: F = 4, 8×8; s2: F = 8, 4×4; 3 classes.
  // s1/u1 MACs: sep3 (9·4+16)·64 = 3328, sep5 (25·4+16)·64 = 7424, 3 branches 3·16·64 = 3072,
  //             id_conv 16·64 = 1024 → 14848.
  // rest: stem 9·1·4·64 = 2304, s2/u1 (empty) id_conv 64·16 = 1024, red 1×1 4·8·16 = 512, FC 8·3 = 24.
  EXPECT_DOUBLE_EQ(a.macs(), 14848.0 + 2304 + 1024 + 512 + 24);
  // params: s1/u1 sep3 36+16+8, max3 8, sep5 100+16+8, avg3 8, branches 3·16 + out BN 8,
  //         id_conv 16+8 → 280; stem 36+8; s2/u1 id_conv 64+16; red 32+16; head BN 16 + FC 24+3.
  EXPECT_DOUBLE_EQ(a.params(), 280.0 + 44 + 80 + 48 + 43);
  // The same MACs as the search's live count on the pruned λ.
  std::vector<float> lam = L.v;
  std::vector<uint8_t> mask(lam.size(), 1);
  prune_all(L.sp, lam, mask);
  EXPECT_DOUBLE_EQ(a.macs(), live_macs(L.sp, lam.data(), mask.data()));
  EXPECT_EQ(a.live_ops(), 4);
}

TEST(Architecture, AllAliveIsTheDenseSupernet) {
  const SearchSpace sp = SearchSpace::preset_named("tiny");
  const std::vector<float> ones(static_cast<size_t>(sp.total_lambda()), 1.0f);
  const Architecture a = Architecture::from_lambda(sp, ones.data(), nullptr);
  EXPECT_DOUBLE_EQ(a.macs(), full_macs(sp));
  EXPECT_DOUBLE_EQ(a.macs(), a.macs_full());
  EXPECT_EQ(a.live_ops(), 2 * 3 * 4);
  // Hand count, per block of width F (L = 3 levels of sep3, sep5, max3, avg3):
  //   L·[(9F+F²+2F) + (25F+F²+2F) + 2F + 2F] + 12 branches·F² + out BN 2F + id_conv F²+2F
  auto block = [](double F) { return 3 * (2 * F * F + 42 * F) + 12 * F * F + 2 * F + F * F + 2 * F; };
  const double hand = (9 * 4 + 2 * 4)         // stem
                      + block(4) + block(8)   // s1/u1, s2/u1 (first units: id_conv)
                      + (20 * 16 + 8 * 4)     // reduction 4 → 8: 20F² + 8F
                      + (2 * 8 + 8 * 3 + 3);  // head BN + FC with bias
  EXPECT_DOUBLE_EQ(a.params(), hand);
  EXPECT_DOUBLE_EQ(a.params(), 3519.0);
  EXPECT_DOUBLE_EQ(a.params(), a.params_full());
  EXPECT_TRUE(a.warnings().empty());
}

TEST(Architecture, CifarSupernetMatchesReferenceValues) {
  // docs/method.md §11.1: CIFAR supernet C = 48 → 10.0 M params, 1.48 G MACs; C = 24 → 2.6 M, 0.39 G.
  const SearchSpace c48 = SearchSpace::preset_named("cifar10");
  const std::vector<float> ones(static_cast<size_t>(c48.total_lambda()), 1.0f);
  const Architecture a = Architecture::from_lambda(c48, ones.data(), nullptr);
  EXPECT_NEAR(a.params() / 1e6, 10.0, 0.05);
  EXPECT_NEAR(a.macs() / 1e9, 1.48, 0.005);
  const Architecture b = Architecture::from_lambda(scale_width(c48, 24), ones.data(), nullptr);
  EXPECT_NEAR(b.params() / 1e6, 2.6, 0.05);
  EXPECT_NEAR(b.macs() / 1e9, 0.39, 0.005);
}

TEST(Architecture, ShareModeSameTopologyInEveryBlock) {
  SearchSpace sp = SearchSpace::preset_named("tiny");
  sp.share = true;
  sp.normal_units = {2, 2};
  Lam L(sp);
  L.after(0, 0, 1, 2) = 1.0f;
  L.edge(0, 0, 2, 3, 1, 2) = 0.3f;
  L.in(0, 0, 2, 3) = 0.1f;
  L.after(0, 0, 2, 3) = 0.2f;
  L.red(0, 1) = 0.5f;
  const Architecture a = Architecture::from_lambda(sp, L.v.data(), nullptr);
  ASSERT_EQ(a.blocks().size(), 4u);
  for (const ArchBlock& b : a.blocks()) {
    ASSERT_EQ(b.ops.size(), 2u) << b.name;
    EXPECT_EQ(b.ops[0].level, 1);
    EXPECT_EQ(b.ops[0].op, 2);
    EXPECT_EQ(b.ops[1].level, 2);
    EXPECT_EQ(b.ops[1].op, 3);
    EXPECT_EQ(b.ops[1].inputs, (std::vector<int>{0, 2}));
    EXPECT_TRUE(b.ops[1].output);
  }
  EXPECT_EQ(a.blocks()[2].channels, 8);
  EXPECT_EQ(a.blocks()[2].name, "s2/u1");
  EXPECT_TRUE(a.blocks()[2].id_conv);
  EXPECT_FALSE(a.blocks()[3].id_conv);
  EXPECT_EQ(a.survivors_per_type(), (std::vector<int64_t>{0, 4, 4, 0}));
  EXPECT_NE(a.to_json().find(R"("share": true)"), std::string::npos);
  EXPECT_FALSE(a.reductions()[0].branch[0]);
  EXPECT_TRUE(a.reductions()[0].branch[1]);
}

TEST(Architecture, CollapseWarnings) {
  Lam L(SearchSpace::preset_named("tiny"));
  // s1/u1: only level-1 ops, 3 of 4 pooling overall; s2/u1 one pooling op at level 1.
  L.after(0, 0, 1, 1) = 1.0f;
  L.after(0, 0, 1, 3) = 1.0f;
  L.after(0, 0, 1, 4) = 1.0f;
  L.after(1, 0, 1, 3) = 1.0f;
  // both reduction λ are 0: prune_all keeps branch 0 at λ = 0
  const Architecture a = Architecture::from_lambda(L.sp, L.v.data(), nullptr);
  const std::vector<std::string> w = a.warnings();
  auto has = [&](const std::string& s) {
    for (const std::string& x : w)
      if (x.find(s) != std::string::npos) return true;
    return false;
  };
  EXPECT_TRUE(has("3 of 4 surviving ops (75.0 %) are pooling ops")) << ::testing::PrintToString(w);
  EXPECT_TRUE(has("s1/u1: only level-1 ops survive"));
  EXPECT_TRUE(has("s2/u1: only level-1 ops survive"));
  EXPECT_TRUE(has("s1/red: both branch lambdas are 0; branch 1x1 kept"));
  EXPECT_TRUE(a.reductions()[0].branch[0]);
  // Nothing at all.
  Lam Z(SearchSpace::preset_named("tiny"));
  const Architecture z = Architecture::from_lambda(Z.sp, Z.v.data(), nullptr);
  EXPECT_EQ(z.live_ops(), 0);
  bool none = false;
  for (const std::string& x : z.warnings()) none = none || x.find("no op survives") != std::string::npos;
  EXPECT_TRUE(none);
}

TEST(Architecture, MaskedEntriesAreDead) {
  Lam L = pattern();
  std::vector<uint8_t> mask(L.v.size(), 1);
  // mask off the edge l1/o3 → l2/o2: l2/o2 loses its only input, and so does l1/o3 its consumer
  mask[static_cast<size_t>(L.sp.block_lambda_offset(0, 0) + L.b.row_offset(2, 2) + L.b.input_index(1, 3))] = 0;
  const Architecture a = Architecture::from_lambda(L.sp, L.v.data(), mask.data());
  const ArchBlock& b = a.blocks()[0];
  ASSERT_EQ(b.ops.size(), 2u);
  EXPECT_EQ(b.ops[0].op, 1);
  EXPECT_EQ(b.ops[1].level, 3);
  EXPECT_EQ(b.ops[1].inputs, (std::vector<int>{0}));
}

TEST(Architecture, WidthScaling) {
  const SearchSpace f = SearchSpace::preset_named("fmnist");
  const SearchSpace s = scale_width(f, 24);
  EXPECT_EQ(s.stem_channels, 24);
  EXPECT_EQ(s.widths, (std::vector<int>{24, 48, 96}));
  EXPECT_EQ(scale_width(f, 0).widths, f.widths);
  Lam L = pattern();
  const Architecture a = Architecture::from_lambda(scale_width(L.sp, 8), L.v.data(), nullptr);
  EXPECT_EQ(a.blocks()[0].channels, 8);
  EXPECT_EQ(a.blocks()[1].channels, 16);
  EXPECT_EQ(a.blocks()[0].ops.size(), 4u);
  EXPECT_NE(a.to_json().find(R"("stem_channels": 8)"), std::string::npos);
}

TEST(Architecture, JsonBytesDeterministicAndDotHasOneClusterPerBlock) {
  Lam L = pattern();
  Architecture a = Architecture::from_lambda(L.sp, L.v.data(), nullptr);
  Architecture b = Architecture::from_lambda(L.sp, L.v.data(), nullptr);
  a.source = b.source = "run/\"x\"";
  a.step = b.step = 40;
  const std::string ja = a.to_json(), jb = b.to_json();
  EXPECT_EQ(ja, jb);
  EXPECT_EQ(ja, a.to_json());
  EXPECT_NE(ja.find(R"("source": "run/\"x\"")"), std::string::npos);
  EXPECT_NE(ja.find("\n  \"step\": 40,\n"), std::string::npos) << "2-space indentation";
  const std::string d = a.to_dot();
  EXPECT_EQ(d, b.to_dot());
  EXPECT_EQ(count(d, "subgraph cluster_s1_u1 "), 1u);
  EXPECT_EQ(count(d, "subgraph cluster_s2_u1 "), 1u);
  EXPECT_EQ(count(d, "subgraph cluster_s1_red "), 1u);
  EXPECT_EQ(count(d, "subgraph cluster_"), a.blocks().size() + a.reductions().size());
  EXPECT_EQ(d.rfind("// dsonas-architecture DOT", 0), 0u);
  EXPECT_NE(d.find("s1_u1_l1_o3 -> s1_u1_l2_o2;"), std::string::npos) << d;
  EXPECT_NE(d.find("s1_u1_in -> s1_u1_l3_o4;"), std::string::npos);
  EXPECT_NE(d.find("s1_u1_l2_o2 -> s1_u1_l3_o4;"), std::string::npos);
  EXPECT_EQ(d.find("s1_u1_l1_o3 -> s1_u1_out;"), std::string::npos) << "l1/o3 has no live output";
}
