// test_arch_json.cpp — reading an architecture back (Architecture::from_json): byte-for-
// byte round trips, one named error per malformed field, check_fits against a config's
// space, structural differences, width selection for a MAC / parameter budget and the
// hand-made baseline; and the JSON writer they are printed with (core/json).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/core/json.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/search_space.hpp"
#include "test_util.hpp"

using namespace dsonas;
using dsonas_test::usage_error;

namespace {

/// Block s1/u1 of the tiny space (L = 3): l1/o1 → out; l1/o3 → l2/o2 → out;
/// in + l2/o2 → l3/o4 → out.  s2/u1 empty; the reduction keeps its 1×1 branch.
Architecture pattern_arch() {
  const SearchSpace sp = SearchSpace::preset_named("tiny");
  const BlockLayout b = sp.block_layout();
  std::vector<float> v(static_cast<size_t>(sp.total_lambda()), 0.f);
  const int o = sp.block_lambda_offset(0, 0);
  v[o + b.after_offset() + b.after_index(1, 1)] = 1.f;
  v[o + b.row_offset(2, 2) + b.input_index(1, 3)] = .5f;
  v[o + b.after_offset() + b.after_index(2, 2)] = .3f;
  v[o + b.row_offset(3, 4)] = .2f;
  v[o + b.row_offset(3, 4) + b.input_index(2, 2)] = .1f;
  v[o + b.after_offset() + b.after_index(3, 4)] = .4f;
  v[sp.reduction_lambda_offset(0)] = .8f;
  return Architecture::from_lambda(sp, v.data(), nullptr);
}

Architecture random_arch(SearchSpace sp, uint64_t seed, double zero_frac) {
  Rng r(seed, 17);
  std::vector<float> v(static_cast<size_t>(sp.total_lambda()));
  for (float& x : v) x = r.uniform() < zero_frac ? 0.f : 0.1f + r.uniform();
  return Architecture::from_lambda(sp, v.data(), nullptr);
}

/// text with the first occurrence of `from` replaced (the test fails if absent).
std::string edit(const std::string& text, const std::string& from, const std::string& to) {
  const size_t p = text.find(from);
  EXPECT_NE(p, std::string::npos) << "pattern not in the JSON: " << from;
  if (p == std::string::npos) return text;
  return text.substr(0, p) + to + text.substr(p + from.size());
}

}  // namespace

TEST(ArchJson, RoundTripIsByteForByte) {
  std::vector<Architecture> archs;
  archs.push_back(pattern_arch());
  archs.back().source = "runs/x/search/model.h5 \"quoted\" \\ tab\t é";
  archs.back().stage = "search";
  archs.back().step = 1234567890123;
  archs.back().extra_warnings = {"source is a pretrain model", "another one"};
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    SearchSpace sp = SearchSpace::preset_named(seed % 2 ? "tiny" : "fmnist");
    sp.share = seed > 2;
    archs.push_back(random_arch(sp, seed, 0.3));
  }
  // both reduction λ = 0 (lambda_zero, restored from its warning), empty blocks, collapse
  archs.push_back(random_arch(SearchSpace::preset_named("tiny"), 9, 1.0));
  ASSERT_TRUE(archs.back().reductions()[0].lambda_zero);
  archs.push_back(Architecture::baseline(SearchSpace::preset_named("cifar10")).at_width(20));
  SearchSpace in = SearchSpace::preset_named("imagenet");
  archs.push_back(random_arch(in, 5, 0.5));
  for (const Architecture& a : archs) {
    const std::string j = a.to_json();
    const Architecture b = Architecture::from_json(j, "arch.json");
    EXPECT_EQ(b.to_json(), j);
    EXPECT_EQ(a.structural_difference(b), "");
    EXPECT_EQ(b.source, a.source);
    EXPECT_EQ(b.stage, a.stage);
    EXPECT_EQ(b.step, a.step);
    EXPECT_EQ(b.extra_warnings, a.extra_warnings);
    ASSERT_EQ(b.reductions().size(), a.reductions().size());
    for (size_t r = 0; r < a.reductions().size(); ++r) {
      EXPECT_EQ(b.reductions()[r].lambda_zero, a.reductions()[r].lambda_zero);
      EXPECT_EQ(b.reductions()[r].out_height, a.reductions()[r].out_height);
    }
    ASSERT_EQ(b.blocks().size(), a.blocks().size());
    for (size_t k = 0; k < a.blocks().size(); ++k) {
      EXPECT_EQ(b.blocks()[k].ops.size(), a.blocks()[k].ops.size());
      EXPECT_EQ(b.blocks()[k].empty, a.blocks()[k].empty);
    }
    EXPECT_DOUBLE_EQ(b.macs(), a.macs());
    EXPECT_DOUBLE_EQ(b.params(), a.params());
  }
  // Insignificant whitespace does not matter; the structure is all that counts.
  const std::string j = archs[0].to_json();
  std::string compact;
  bool in_str = false;
  for (size_t i = 0; i < j.size(); ++i) {
    const char c = j[i];
    if (c == '"' && (i == 0 || j[i - 1] != '\\')) in_str = !in_str;
    if (!in_str && (c == ' ' || c == '\n')) continue;
    compact += c;
  }
  EXPECT_EQ(Architecture::from_json(compact, "a.json").to_json(), j);
}

TEST(ArchJson, EveryMalformedFieldIsNamed) {
  const std::string j = pattern_arch().to_json();
  struct Case {
    std::string from, to, want;  // want: the message after "arch.json: "
  };
  const std::vector<Case> cases = {
      {"\"format\": \"dsonas-architecture\"", "\"format\": \"dsonas-model\"",
       "format: expected \"dsonas-architecture\""},
      {"\"format\": \"dsonas-architecture\"", "\"format\": 7", "format: expected a string"},
      {"\"format_version\": 1", "\"format_version\": 2", "format_version: version 2 is not supported"},
      {"\"format_version\": 1", "\"format_version\": 1.0", "format_version: expected an integer, got 1.0"},
      {"\"source\": \"\",", "", "source: missing"},
      {"\"step\": 0", "\"step\": \"0\"", "step: expected an integer, got a string"},
      {"\"levels\": 3", "\"levels\": 0", "space.levels: expected an integer in [1, 16], got 0"},
      {"\"levels\": 3", "\"levels\": true", "space.levels: expected an integer, got a boolean"},
      {"\"ops\": [\"sep3\", \"sep5\"", "\"ops\": [\"sep3\", \"sep7\"", "space.ops[1]: unknown op 'sep7'"},
      {"\"input\": [1, 8, 8]", "\"input\": [1, 8]", "space.input: expected [channels, height, width], got 2 numbers"},
      {"\"input\": [1, 8, 8]", "\"input\": [1, \"8\", 8]", "space.input: expected an array of integers"},
      {"\"stem\": \"conv3\"", "\"stem\": \"conv7\"", "space.stem: expected \"conv3\" or \"imagenet2x\""},
      {"\"widths\": [4, 8]", "\"widths\": [5, 10]", "space.widths[0]: the stage-1 width must equal stem_channels (4)"},
      {"\"widths\": [4, 8]", "\"widths\": [4]", "space.widths: expected 2 widths (one per stage), got 1"},
      {"\"total_lambda\": 138", "\"total_lambda\": 137", "space.total_lambda: 137 does not match the space (138)"},
      {"\"total_lambda\": 138\n  }", "\"total_lambda\": 138, \"depth\": 3\n  }", "space.depth: unknown field"},
      {"  \"share\": false,\n  \"blocks\"", "  \"share\": true,\n  \"blocks\"", "share: expected false (space.share)"},
      {"\"name\": \"s1/u1\"", "\"name\": \"s1/u2\"", "blocks[0].name: expected \"s1/u1\", got \"s1/u2\""},
      {"\"stage\": 1,\n      \"unit\": 1", "\"stage\": 2,\n      \"unit\": 1", "blocks[0].stage: expected 1"},
      {"\"channels\": 4", "\"channels\": 5", "blocks[0].channels: expected 4 (the space's stage width), got 5"},
      {"\"height\": 8", "\"height\": 9", "blocks[0].height: expected 8"},
      {"\"shortcut\": \"id_conv\"", "\"shortcut\": \"identity\"", "blocks[0].shortcut: expected \"id_conv\""},
      {"\"empty\": false", "\"empty\": true", "blocks[0].empty: expected false"},
      {"\"empty\": true, \"ops\": []", "\"empty\": false, \"ops\": []", "blocks[1].empty: expected true"},
      {"\"ops\": []", "\"ops\": {}", "blocks[1].ops: expected an array of ops"},
      {"\"ops\": []}", "\"ops\": [], \"extra\": 1}", "blocks[1].extra: unknown field"},
      {"\"inputs\": [\"in\", \"l2/o2\"]", "\"inputs\": [0, 6]",
       "blocks[0].ops[3].inputs: expected an array of input names"},
      {"\"inputs\": [\"in\", \"l2/o2\"]", "\"inputs\": [\"l2/o2\", \"in\"]",
       "blocks[0].ops[3].inputs: inputs must be sorted"},
      {"\"inputs\": [\"in\", \"l2/o2\"]", "\"inputs\": [\"in\", \"in\"]",
       "blocks[0].ops[3].inputs: inputs must be sorted"},
      {"\"inputs\": [\"in\", \"l2/o2\"]", "\"inputs\": [\"in\", \"l2/o1\"]",
       "blocks[0].ops[3].inputs: \"l2/o1\" is not an earlier op"},
      {"\"inputs\": [\"in\", \"l2/o2\"]", "\"inputs\": [\"in\", \"l3/o1\"]",
       "blocks[0].ops[3].inputs: \"l3/o1\" is not an earlier op"},
      {"\"inputs\": [\"in\", \"l2/o2\"]", "\"inputs\": [\"in\", \"l02/o2\"]",
       "blocks[0].ops[3].inputs: \"l02/o2\" is not an input name"},
      {"\"inputs\": [\"in\", \"l2/o2\"]", "\"inputs\": []", "blocks[0].ops[3].inputs: an op needs at least one input"},
      {"\"type\": \"sep3\", \"inputs\": [\"in\"]", "\"type\": \"sep3\", \"inputs\": [\"l1/o1\"]",
       "blocks[0].ops[0].inputs: a level-1 op reads the block input only"},
      {"\"type\": \"sep5\"", "\"type\": \"sep3\"",
       "blocks[0].ops[2].type: expected \"sep5\" (op 2 of the space), got \"sep3\""},
      {"\"level\": 2, \"op\": 2", "\"level\": 1, \"op\": 2", "blocks[0].ops[2]: l1/o2 is out of order or repeated"},
      {"\"level\": 3, \"op\": 4", "\"level\": 4, \"op\": 4",
       "blocks[0].ops[3].level: expected an integer in [1, 3], got 4"},
      {"\"inputs\": [\"in\"], \"output\": true", "\"inputs\": [\"in\"], \"output\": false",
       "blocks[0].ops[0]: l1/o1 feeds neither the block output nor a later op"},
      {"\"output\": true}", "\"output\": 1}", "blocks[0].ops[0].output: expected true or false, got a number"},
      {"\"output\": true}", "\"output\": true, \"output\": true}", "blocks[0].ops[0].output: appears more than once"},
      {"\"branches\": [\"1x1\"]", "\"branches\": [\"2x2\"]",
       "reductions[0].branches: expected [\"1x1\"], [\"3x3\"] or"},
      {"\"branches\": [\"1x1\"]", "\"branches\": []", "reductions[0].branches: expected [\"1x1\"], [\"3x3\"] or"},
      {"\"out_channels\": 8", "\"out_channels\": 16", "reductions[0].out_channels: expected 8"},
      {"\"ops\": 4,", "\"ops\": 5,", "survivors.ops: 5 does not match the blocks (4 live ops)"},
      {"\"sep3\": 1, \"sep5\": 1", "\"sep3\": 2, \"sep5\": 1",
       "survivors.per_type.sep3: 2 does not match the blocks (1)"},
      {"\"l1\": 2, ", "", "survivors.per_level: expected 3 entries, got 2"},
      {"\"macs\": 18712", "\"macs\": 18713", "macs: 18713 does not match the architecture (18712)"},
      {"\"params_full\": 3519", "\"params_full\": \"3519\"", "params_full: expected an integer, got a string"},
      {"\"warnings\": [", "\"warnings\": [3, ", "warnings: expected an array of strings"},
      {"\"reductions\": [\n", "\"reductions\": [\n    {\"name\": \"s2/red\"},\n", "reductions: expected 1 reductions"},
  };
  for (const Case& c : cases) {
    const std::string bad = edit(j, c.from, c.to);
    const std::string msg = usage_error([&] { Architecture::from_json(bad, "arch.json"); });
    EXPECT_EQ(msg.rfind("arch.json: " + c.want, 0), 0u) << "got: " << msg << "\nwant: arch.json: " << c.want;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  }
  // Missing top-level sections, wrong top-level type.
  EXPECT_EQ(usage_error([&] { Architecture::from_json("[]", "a.json"); }),
            "a.json: (top level): expected an object, got an array");
  EXPECT_EQ(usage_error([&] { Architecture::from_json("{}", "a.json"); }), "a.json: format: missing");
}

TEST(ArchJson, SyntaxErrorsNameLineAndColumn) {
  const std::string j = pattern_arch().to_json();
  struct Case {
    std::string text, want;
  };
  const std::vector<Case> cases = {
      {j.substr(0, j.find("\"blocks\": ") + 10), "unexpected end of text (a value was expected)"},  // truncated
      {j + "x", "unexpected text after the JSON value"},
      {edit(j, "\"step\": 0,", "\"step\": 0,,"), "line 6, column 13: expected a string key"},
      {edit(j, "\"step\": 0", "\"step\": 01"), "expected ',' or '}' in an object"},
      {edit(j, "\"stage\": \"\"", "\"stage\": \"\\q\""), "line 5, column 15: bad escape '\\q'"},
      {edit(j, "\"stage\": \"\"", "\"stage\": \"\\ud800\""), "unpaired surrogate"},
      {edit(j, "\"stage\": \"\"", "\"stage\": \"a\nb\""), "control character inside a string"},
      {edit(j, "\"macs\": 18712", "\"macs\": -"), "bad number"},
      {edit(j, "\"macs\": 18712", "\"macs\": nul"), "unexpected character 'n'"},
      {"", "line 1, column 1: unexpected end of text"},
      {std::string(100, '[') + std::string(100, ']'), "nesting deeper than 64 levels"},
  };
  for (const Case& c : cases) {
    const std::string msg = usage_error([&] { Architecture::from_json(c.text, "arch.json"); });
    EXPECT_EQ(msg.rfind("arch.json: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(c.want), std::string::npos) << "got: " << msg << "\nwant: " << c.want;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // Escapes decode: \u00e9 and a surrogate pair become UTF-8.
  const Architecture a =
      Architecture::from_json(edit(j, "\"stage\": \"\"", "\"stage\": \"\\u00e9\\ud83d\\ude00\\/\""), "a.json");
  EXPECT_EQ(a.stage, "\xc3\xa9\xf0\x9f\x98\x80/");
}

TEST(ArchJson, CheckFitsComparesTheStructuralFields) {
  const Architecture a = pattern_arch();
  SearchSpace cfg = SearchSpace::preset_named("tiny");
  a.check_fits(cfg, "arch.json");
  SearchSpace wide = scale_width(cfg, 12);  // widths may differ, and so may share
  wide.share = true;
  a.check_fits(wide, "arch.json");
  struct Case {
    void (*change)(SearchSpace&);
    const char* want;
  };
  const Case cases[] = {
      {[](SearchSpace& s) { s.levels = 4; }, "arch.json: levels: arch=3 config=4"},
      {[](SearchSpace& s) { s.ops.pop_back(); }, "arch.json: N: arch=4 config=3"},
      {[](SearchSpace& s) { std::swap(s.ops[0], s.ops[1]); },
       "arch.json: ops: arch=sep3,sep5,max3,avg3 config=sep5,sep3,max3,avg3"},
      {[](SearchSpace& s) { s.stem = StemKind::ImageNet2x; }, "arch.json: stem: arch=conv3 config=imagenet2x"},
      {[](SearchSpace& s) {
         s.normal_units = {1, 1, 1};
         s.widths = {4, 8, 16};
       },
       "arch.json: stages: arch=2 config=3"},
      {[](SearchSpace& s) {
         s.normal_units = {1, 2};
       },
       "arch.json: normal_units: arch=1,1 config=1,2"},
      {[](SearchSpace& s) { s.in_channels = 3; }, "arch.json: input: arch=1x8x8 config=3x8x8"},
      {[](SearchSpace& s) { s.in_width = 10; }, "arch.json: input: arch=1x8x8 config=1x8x10"},
      {[](SearchSpace& s) { s.classes = 10; }, "arch.json: classes: arch=3 config=10"},
  };
  for (const Case& c : cases) {
    SearchSpace s = cfg;
    c.change(s);
    EXPECT_EQ(usage_error([&] { a.check_fits(s, "arch.json"); }), c.want);
  }
}

TEST(ArchJson, StructuralDifferenceNamesTheFirstField) {
  const Architecture a = pattern_arch();
  EXPECT_EQ(a.structural_difference(a), "");
  Architecture b = a;
  b.source = "elsewhere";
  b.extra_warnings.push_back("w");
  EXPECT_EQ(a.structural_difference(b), "") << "provenance and warnings do not matter";
  EXPECT_EQ(a.structural_difference(a.at_width(8)), "space.stem_channels: this=4 other=8");
  const std::string j = a.to_json();
  auto variant = [&](const std::string& from, const std::string& to) {
    return Architecture::from_json(edit(j, from, to), "v.json");
  };
  const Architecture c = variant("\"inputs\": [\"in\", \"l2/o2\"]", "\"inputs\": [\"l2/o2\"]");
  EXPECT_EQ(a.structural_difference(c, "file", "now"), "blocks[0].ops[3].inputs: file=[in, l2/o2] now=[l2/o2]");
  // dropping l3/o4's output also removes the op (it would feed nothing) — a different op count
  const Architecture d = random_arch(SearchSpace::preset_named("tiny"), 3, 0.3);
  EXPECT_NE(a.structural_difference(d), "");
  EXPECT_EQ(a.structural_difference(d).rfind("blocks[", 0), 0u) << a.structural_difference(d);
}

TEST(ArchJson, AtWidthIsTheSameTopologyRederived) {
  const SearchSpace sp = SearchSpace::preset_named("fmnist");
  Rng r(3, 1);
  std::vector<float> lam(static_cast<size_t>(sp.total_lambda()));
  for (float& x : lam) x = r.uniform() < 0.4 ? 0.f : r.uniform();
  Architecture a = Architecture::from_lambda(sp, lam.data(), nullptr);
  a.source = "s";
  a.extra_warnings = {"w"};
  for (int C : {4, 16, 24, 40}) {
    Architecture want = Architecture::from_lambda(scale_width(sp, C), lam.data(), nullptr);
    want.source = "s";
    want.extra_warnings = {"w"};
    EXPECT_EQ(a.at_width(C).to_json(), want.to_json()) << C;
  }
  EXPECT_EQ(a.at_width(0).to_json(), a.to_json());
  EXPECT_EQ(a.at_width(24).at_width(16).to_json(), a.to_json());
}

TEST(ArchJson, WidthForTargetIsTheClosestWidth) {
  for (const char* preset : {"fmnist", "cifar10", "imagenet"}) {
    const SearchSpace sp = SearchSpace::preset_named(preset);
    const Architecture a = random_arch(sp, 7, 0.5);
    for (CostKind kind : {CostKind::Macs, CostKind::Params}) {
      auto cost = [&](int C) { return kind == CostKind::Macs ? a.at_width(C).macs() : a.at_width(C).params(); };
      const int lo = sp.stem == StemKind::ImageNet2x ? 2 : 1;
      std::vector<double> costs(121, 0.0);
      for (int C = lo; C <= 120; ++C) costs[static_cast<size_t>(C)] = cost(C);
      for (double target : {cost(lo) * 0.5, cost(7) * 1.01, 0.5 * (cost(20) + cost(21)), cost(33), cost(64) * 0.99,
                            0.5 * (cost(99) + cost(100)) + 1.0}) {
        int best = lo;  // exhaustive: closest, ties to the smaller width
        for (int C = lo; C <= 120; ++C)
          if (std::fabs(costs[static_cast<size_t>(C)] - target) < std::fabs(costs[static_cast<size_t>(best)] - target))
            best = C;
        EXPECT_EQ(width_for_target(a, target, kind), best) << preset << " target " << target;
      }
    }
  }
  // The paper's CIFAR setting: C for ≈ 3.0 M parameters (§2.1).
  const Architecture b = Architecture::baseline(SearchSpace::preset_named("cifar10"));
  const int C = width_for_target(b, 3.0e6, CostKind::Params);
  EXPECT_LE(std::fabs(b.at_width(C).params() - 3.0e6), std::fabs(b.at_width(C + 1).params() - 3.0e6));
  EXPECT_LE(std::fabs(b.at_width(C).params() - 3.0e6), std::fabs(b.at_width(C - 1).params() - 3.0e6));
  EXPECT_NE(usage_error([&] { width_for_target(b, 0.0, CostKind::Macs); }).find("--target-macs"), std::string::npos);
  EXPECT_NE(usage_error([&] { width_for_target(b, -1.0, CostKind::Params); }).find("--target-params"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { width_for_target(b, NAN, CostKind::Params); }).find("--target-params"),
            std::string::npos);
  EXPECT_NE(usage_error([&] { width_for_target(b, 1e30, CostKind::Macs); }).find("beyond reach"), std::string::npos);
}

TEST(ArchJson, BaselineIsAChainOfSep3) {
  SearchSpace sp = SearchSpace::preset_named("fmnist");
  for (bool share : {false, true}) {
    sp.share = share;
    const Architecture a = Architecture::baseline(sp);
    EXPECT_EQ(a.source, "baseline");
    ASSERT_EQ(a.blocks().size(), 6u);
    for (const ArchBlock& b : a.blocks()) {
      ASSERT_EQ(b.ops.size(), 4u) << b.name;
      EXPECT_FALSE(b.empty);
      for (int l = 1; l <= 4; ++l) {
        const ArchOp& o = b.ops[static_cast<size_t>(l - 1)];
        EXPECT_EQ(o.level, l);
        EXPECT_EQ(o.op, 1);
        EXPECT_EQ(o.type, OpKind::Sep3);
        EXPECT_EQ(o.inputs, std::vector<int>{l == 1 ? 0 : 1 + 4 * (l - 2)});  // level l−1's sep3
        EXPECT_EQ(o.output, l == 4);
      }
    }
    for (const ArchReduction& r : a.reductions()) EXPECT_TRUE(r.branch[0] && r.branch[1]);
    // MACs by hand (§11.1): stem 9·16·784; per block of width F on H×W:
    // 4 sep3 (9F + F²)·HW + one branch F²·HW + id_conv F²·HW in the first unit.
    auto block = [](double F, double hw, bool first) {
      return (4 * (9 * F + F * F) + F * F + (first ? F * F : 0)) * hw;
    };
    const double hand = 9.0 * 16 * 784 + block(16, 784, true) + block(16, 784, false) + block(32, 196, true) +
                        block(32, 196, false) + block(64, 49, true) + block(64, 49, false) + 10.0 * 16 * 32 * 196 +
                        10.0 * 32 * 64 * 49 + 64.0 * 10;
    EXPECT_DOUBLE_EQ(a.macs(), hand);
    EXPECT_TRUE(a.warnings().empty());
  }
  const Architecture m = Architecture::baseline(SearchSpace::preset_named("tiny"), OpKind::Max3);
  for (const ArchBlock& b : m.blocks())
    for (const ArchOp& o : b.ops) {
      EXPECT_EQ(o.op, 3);
      EXPECT_EQ(o.type, OpKind::Max3);
    }
  SearchSpace no_sep3 = SearchSpace::preset_named("tiny");
  no_sep3.ops = {OpKind::Sep5, OpKind::Max3};
  EXPECT_EQ(usage_error([&] { Architecture::baseline(no_sep3); }),
            "baseline: the space's ops (sep5,max3) do not include sep3");
}

// The JSON writer of core/json (what architecture files are printed with): the
// layout rules, quoting, and reading back what it wrote.
TEST(JsonWriter, LayoutQuotingAndRoundTrip) {
  using J = JsonValue;
  J scalars = J::object();
  scalars.add("a", J::integer(-3)).add("b", J::boolean(true)).add("c", J::string("x\"y\n"));
  EXPECT_EQ(json_pretty(scalars), "{\"a\": -3, \"b\": true, \"c\": \"x\\\"y\\n\"}") << "an object of scalars: one line";
  J arr = J::array();
  for (int i = 0; i < 3; ++i) arr.push(J::integer(i));
  J op = J::object();
  op.add("level", J::integer(2)).add("inputs", J::array().push(J::string("in")).push(J::string("l1/o1")));
  J ops = J::array();
  ops.push(op).push(op);
  J root = J::object();
  root.add("ints", arr).add("ops", ops).add("empty", J::array()).add("none", J());
  const std::string want =
      "{\n"
      "  \"ints\": [0, 1, 2],\n"
      "  \"ops\": [\n"
      "    {\"level\": 2, \"inputs\": [\"in\", \"l1/o1\"]},\n"
      "    {\"level\": 2, \"inputs\": [\"in\", \"l1/o1\"]}\n"
      "  ],\n"
      "  \"empty\": [],\n"
      "  \"none\": null\n"
      "}";
  EXPECT_EQ(json_pretty(root), want);
  EXPECT_EQ(json_inline(root),
            "{\"ints\": [0, 1, 2], \"ops\": [{\"level\": 2, \"inputs\": [\"in\", \"l1/o1\"]}, {\"level\": 2, "
            "\"inputs\": [\"in\", \"l1/o1\"]}], \"empty\": [], \"none\": null}");
  // a scalar array longer than 100 characters: one element a line
  J words = J::array();
  for (int i = 0; i < 12; ++i) words.push(J::string("warning number " + std::to_string(i)));
  const std::string w = json_pretty(words);
  EXPECT_EQ(std::count(w.begin(), w.end(), '\n'), 13);
  // what it writes reads back to the same tree (and prints the same again)
  const JsonValue back = parse_json(json_pretty(root), "written.json");
  EXPECT_EQ(json_pretty(back), want);
  EXPECT_EQ(parse_json(json_pretty(scalars), "s.json").obj[2].second.text, "x\"y\n");
}
