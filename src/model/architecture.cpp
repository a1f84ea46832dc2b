// architecture.cpp — the derived network of docs/method.md §6.3: structure from
// pruned λ, §11.1 MAC / parameter counts, collapse warnings, JSON and DOT.
//
// Design note.  Topology comes from prune_all + block_topology + reduction_topology
// (model/prune.hpp), so derive, the search's live plan and inspect agree by
// construction.  The JSON is produced by a tiny ordered value tree (below) whose
// printer is fully deterministic: only integers, strings and booleans appear, keys
// keep insertion order, and every number is an exact integer (MACs and params are
// integral by construction).
#include "dsonas/model/architecture.hpp"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <utility>

#include "dsonas/core/error.hpp"
#include "dsonas/core/json.hpp"
#include "dsonas/model/cost.hpp"
#include "dsonas/model/prune.hpp"

namespace dsonas {
namespace {

/// Block u of stage s (0-based) without its ops: name, geometry, shortcut.
ArchBlock block_frame(const SearchSpace& sp, int s, int u) {
  ArchBlock blk;
  blk.stage = s + 1;
  blk.unit = u + 1;
  blk.name = str("s", s + 1, "/u", u + 1);
  blk.channels = sp.widths[static_cast<size_t>(s)];
  blk.height = sp.stage_height(s);
  blk.width = sp.stage_width(s);
  blk.id_conv = u == 0;
  return blk;
}

/// The reduction after stage s (0-based) without its branches: name and geometry.
ArchReduction reduction_frame(const SearchSpace& sp, int s) {
  ArchReduction r;
  r.stage = s + 1;
  r.name = str("s", s + 1, "/red");
  r.in_channels = sp.widths[static_cast<size_t>(s)];
  r.out_channels = sp.widths[static_cast<size_t>(s) + 1];
  r.out_height = sp.stage_height(s + 1);
  r.out_width = sp.stage_width(s + 1);
  return r;
}

using J = JsonValue;
J num(int64_t v) { return J::integer(v); }
J num_d(double v) { return J::integer(static_cast<int64_t>(std::llround(v))); }

std::string fixed1(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", x);
  return buf;
}

/// DOT identifier of a block / reduction name: "s1/u2" → "s1_u2".
std::string dot_id(const std::string& name) {
  std::string o = name;
  for (char& c : o)
    if (c == '/') c = '_';
  return o;
}

const char* op_color(OpKind k) {
  switch (k) {
    case OpKind::Sep3: return "#9ecae1";  // conv: blues
    case OpKind::Sep5: return "#4292c6";
    case OpKind::Max3: return "#fdae6b";  // pooling: oranges
    case OpKind::Avg3: return "#fd8d3c";
  }
  return "#ffffff";
}

}  // namespace

// ---- construction ------------------------------------------------------------------
SearchSpace scale_width(const SearchSpace& space, int C) {
  if (C <= 0 || C == space.stem_channels) return space;
  SearchSpace s = space;
  for (int& w : s.widths) {
    const int64_t scaled = static_cast<int64_t>(w) * C / space.stem_channels;
    w = scaled < 1 ? 1 : static_cast<int>(scaled);
  }
  s.stem_channels = C;
  return s;
}

int ArchBlock::live_branches() const {
  int n = 0;
  for (const ArchOp& o : ops) n += o.output;
  return n;
}

Architecture Architecture::from_lambda(const SearchSpace& space, const float* lam, const uint8_t* mask) {
  const size_t total = static_cast<size_t>(space.total_lambda());
  std::vector<float> l(lam, lam + total);
  std::vector<uint8_t> m = mask ? std::vector<uint8_t>(mask, mask + total) : std::vector<uint8_t>(total, 1);
  // Reductions with both λ = 0 on input (before prune_all keeps one at λ = 0).
  std::vector<bool> red_zero;
  for (int s = 0; s < space.num_reductions(); ++s) {
    const int r = space.reduction_lambda_offset(s);
    red_zero.push_back(!((m[r] && l[r] > 0.0f) || (m[r + 1] && l[r + 1] > 0.0f)));
  }
  prune_all(space, l.data(), m.data(), nullptr, nullptr);

  Architecture a;
  a.space_ = space;
  const BlockLayout b = space.block_layout();
  const int N = b.N;
  for (int s = 0; s < space.stages(); ++s) {
    for (int u = 0; u < space.normal_units[s]; ++u) {
      const int off = space.block_lambda_offset(s, u);
      const BlockTopology t = block_topology(l.data() + off, m.data() + off, b);
      ArchBlock blk = block_frame(space, s, u);
      blk.empty = t.block_empty;
      for (int li = 0; li < b.L; ++li)
        for (int ji = 0; ji < N; ++ji) {
          if (!t.op_alive[li][ji]) continue;
          ArchOp op;
          op.level = li + 1;
          op.op = ji + 1;
          op.type = space.ops[ji];
          if (li == 0) {
            op.inputs.push_back(0);
          } else {
            for (size_t i = 0; i < t.edge_live[li][ji].size(); ++i)
              if (t.edge_live[li][ji][i]) op.inputs.push_back(static_cast<int>(i));
          }
          op.output = t.after_live[static_cast<size_t>(b.after_index(li + 1, ji + 1))] != 0;
          blk.ops.push_back(std::move(op));
        }
      a.blocks_.push_back(std::move(blk));
    }
    if (s + 1 < space.stages()) {
      const ReductionTopology rt = reduction_topology(space, s, l.data(), m.data());
      ArchReduction r = reduction_frame(space, s);
      r.branch[0] = rt.branch_live[0];
      r.branch[1] = rt.branch_live[1];
      r.lambda_zero = red_zero[static_cast<size_t>(s)];
      a.reductions_.push_back(r);
    }
  }
  return a;
}

std::string Architecture::input_name(int i) const {
  if (i == 0) return "in";
  const int N = space_.N();
  return str("l", 1 + (i - 1) / N, "/o", 1 + (i - 1) % N);
}

// ---- counts --------------------------------------------------------------------------
double Architecture::macs() const {
  const SearchSpace& sp = space_;
  double macs = stem_macs(sp);
  for (const ArchBlock& blk : blocks_) {
    const double F = blk.channels, hw = static_cast<double>(blk.height) * blk.width;
    for (const ArchOp& o : blk.ops) macs += cost::op_macs(o.type, F, hw);
    macs += blk.live_branches() * cost::pointwise_macs(F, hw);
    if (blk.id_conv) macs += cost::pointwise_macs(F, hw);
  }
  for (const ArchReduction& r : reductions_) {
    const double out_hw = static_cast<double>(r.out_height) * r.out_width;
    for (int i = 0; i < 2; ++i)
      if (r.branch[i]) macs += cost::reduction_branch_macs(i, r.in_channels, r.out_channels, out_hw);
  }
  macs += cost::head_macs(sp.widths.back(), sp.classes);
  return macs;
}

double Architecture::params() const {
  const SearchSpace& sp = space_;
  const double C = sp.stem_channels, cin = sp.in_channels;
  double p = 0.0;
  if (sp.stem == StemKind::Conv3) {
    p += cost::conv_macs(C, cin, 3, 1) + cost::bn_params(C);
  } else {
    const double half = sp.stem_channels / 2;  // integer division, §2.2
    p += cost::conv_macs(half, cin, 3, 1) + cost::bn_params(half) + cost::conv_macs(C, half, 3, 1) + cost::bn_params(C);
  }
  for (const ArchBlock& blk : blocks_) {
    const double F = blk.channels;
    for (const ArchOp& o : blk.ops) p += cost::op_params(o.type, F);
    const int br = blk.live_branches();
    if (br > 0) p += br * cost::pointwise_macs(F, 1) + cost::bn_params(F);  // output 1×1 convs + block-output BN
    if (blk.id_conv) p += cost::pointwise_macs(F, 1) + cost::bn_params(F);
  }
  for (const ArchReduction& r : reductions_)
    for (int i = 0; i < 2; ++i)
      if (r.branch[i]) p += cost::reduction_branch_params(i, r.in_channels, r.out_channels);
  p += cost::head_params(sp.widths.back(), sp.classes);
  return p;
}

double Architecture::macs_full() const {
  const std::vector<float> ones(static_cast<size_t>(space_.total_lambda()), 1.0f);
  return from_lambda(space_, ones.data(), nullptr).macs();
}

double Architecture::params_full() const {
  const std::vector<float> ones(static_cast<size_t>(space_.total_lambda()), 1.0f);
  return from_lambda(space_, ones.data(), nullptr).params();
}

int Architecture::live_ops() const {
  int n = 0;
  for (const ArchBlock& blk : blocks_) n += static_cast<int>(blk.ops.size());
  return n;
}

std::vector<int64_t> Architecture::survivors_per_type() const {
  std::vector<int64_t> c(static_cast<size_t>(space_.N()), 0);
  for (const ArchBlock& blk : blocks_)
    for (const ArchOp& o : blk.ops) ++c[static_cast<size_t>(o.op - 1)];
  return c;
}

std::vector<int64_t> Architecture::survivors_per_level() const {
  std::vector<int64_t> c(static_cast<size_t>(space_.levels), 0);
  for (const ArchBlock& blk : blocks_)
    for (const ArchOp& o : blk.ops) ++c[static_cast<size_t>(o.level - 1)];
  return c;
}

std::vector<std::string> Architecture::warnings() const {
  std::vector<std::string> w;
  const int n = live_ops();
  int pool = 0;
  for (const ArchBlock& blk : blocks_)
    for (const ArchOp& o : blk.ops) pool += !op_is_conv(o.type);
  if (n == 0) {
    w.push_back("collapse: no op survives in any normal block; the network is stem, shortcuts, reductions and head");
  } else if (pool * 10 > n * 6) {
    w.push_back(str("collapse: ", pool, " of ", n, " surviving ops (", fixed1(100.0 * pool / n),
                    " %) are pooling ops (over 60 %)"));
  }
  for (const ArchBlock& blk : blocks_) {
    if (blk.empty) {
      w.push_back(str(blk.name, ": no live output branch; the block is reduced to its shortcut (",
                      blk.id_conv ? "id_conv" : "identity", ")"));
      continue;
    }
    bool deep = false;
    for (const ArchOp& o : blk.ops) deep = deep || o.level > 1;
    if (!deep && space_.levels > 1) w.push_back(str(blk.name, ": only level-1 ops survive"));
  }
  for (const ArchReduction& r : reductions_)
    if (r.lambda_zero)
      w.push_back(str(r.name, ": both branch lambdas are 0; branch ", r.branch[0] ? "1x1" : "3x3",
                      " kept so that the network stays connected"));
  for (const std::string& e : extra_warnings) w.push_back(e);
  return w;
}

// ---- JSON --------------------------------------------------------------------------
std::string Architecture::to_json() const {
  const SearchSpace& sp = space_;
  J space = J::object();
  {
    J ops = J::array(), units = J::array(), widths = J::array(), input = J::array();
    for (OpKind k : sp.ops) ops.push(J::string(op_name(k)));
    for (int u : sp.normal_units) units.push(num(u));
    for (int wd : sp.widths) widths.push(num(wd));
    input.push(num(sp.in_channels)).push(num(sp.in_height)).push(num(sp.in_width));
    space.add("preset", J::string(sp.preset))
        .add("levels", num(sp.levels))
        .add("ops", ops)
        .add("input", input)
        .add("classes", num(sp.classes))
        .add("stem", J::string(sp.stem == StemKind::Conv3 ? "conv3" : "imagenet2x"))
        .add("stem_channels", num(sp.stem_channels))
        .add("normal_units", units)
        .add("widths", widths)
        .add("share", J::boolean(sp.share))
        .add("total_lambda", num(sp.total_lambda()));
  }
  J blocks = J::array();
  for (const ArchBlock& blk : blocks_) {
    J ops = J::array();
    for (const ArchOp& o : blk.ops) {
      J in = J::array();
      for (int i : o.inputs) in.push(J::string(input_name(i)));
      ops.push(J::object()
                   .add("level", num(o.level))
                   .add("op", num(o.op))
                   .add("type", J::string(op_name(o.type)))
                   .add("inputs", in)
                   .add("output", J::boolean(o.output)));
    }
    blocks.push(J::object()
                    .add("name", J::string(blk.name))
                    .add("stage", num(blk.stage))
                    .add("unit", num(blk.unit))
                    .add("channels", num(blk.channels))
                    .add("height", num(blk.height))
                    .add("width", num(blk.width))
                    .add("shortcut", J::string(blk.id_conv ? "id_conv" : "identity"))
                    .add("empty", J::boolean(blk.empty))
                    .add("ops", ops));
  }
  J reds = J::array();
  for (const ArchReduction& r : reductions_) {
    J br = J::array();
    if (r.branch[0]) br.push(J::string("1x1"));
    if (r.branch[1]) br.push(J::string("3x3"));
    reds.push(J::object()
                  .add("name", J::string(r.name))
                  .add("in_channels", num(r.in_channels))
                  .add("out_channels", num(r.out_channels))
                  .add("branches", br));
  }
  J per_type = J::object(), per_level = J::object();
  const std::vector<int64_t> pt = survivors_per_type(), pl = survivors_per_level();
  for (size_t j = 0; j < pt.size(); ++j) per_type.add(op_name(sp.ops[j]), num(pt[j]));
  for (size_t l = 0; l < pl.size(); ++l) per_level.add(str("l", l + 1), num(pl[l]));
  J survivors = J::object();
  survivors.add("ops", num(live_ops()))
      .add("of", num(static_cast<int64_t>(sp.num_normal_blocks()) * sp.levels * sp.N()))
      .add("per_type", per_type)
      .add("per_level", per_level);
  J warn = J::array();
  for (const std::string& s : warnings()) warn.push(J::string(s));

  J root = J::object();
  root.add("format", J::string("dsonas-architecture"))
      .add("format_version", num(1))
      .add("source", J::string(source))
      .add("stage", J::string(stage))
      .add("step", num(step))
      .add("space", space)
      .add("share", J::boolean(sp.share))
      .add("blocks", blocks)
      .add("reductions", reds)
      .add("survivors", survivors)
      .add("macs", num_d(macs()))
      .add("params", num_d(params()))
      .add("macs_full", num_d(macs_full()))
      .add("params_full", num_d(params_full()))
      .add("warnings", warn);
  return json_pretty(root) + "\n";
}

// ---- DOT ---------------------------------------------------------------------------
std::string Architecture::to_dot() const {
  const SearchSpace& sp = space_;
  std::ostringstream d;
  d << "// dsonas-architecture DOT, written by dsonas derive\n"
    << "digraph architecture {\n"
    << "  graph [rankdir=TB, fontname=\"Helvetica\", fontsize=11];\n"
    << "  node [fontname=\"Helvetica\", fontsize=10];\n"
    << "  edge [arrowsize=0.6, fontname=\"Helvetica\", fontsize=9];\n"
    << "  input [shape=plaintext, label=\"input " << sp.in_channels << "×" << sp.in_height << "×" << sp.in_width
    << "\"];\n"
    << "  stem [shape=box, label=\"stem " << (sp.stem == StemKind::Conv3 ? "3×3 conv" : "2 × 3×3 conv s2") << " → "
    << sp.stem_channels << "\"];\n"
    << "  input -> stem;\n";
  std::string prev = "stem";
  size_t bi = 0;
  for (int s = 0; s < sp.stages(); ++s) {
    for (int u = 0; u < sp.normal_units[s]; ++u, ++bi) {
      const ArchBlock& blk = blocks_[bi];
      const std::string id = dot_id(blk.name);
      d << "  subgraph cluster_" << id << " {\n"
        << "    label=\"" << blk.name << " (" << blk.channels << " ch, " << blk.height << "×" << blk.width << ")"
        << (blk.empty ? " shortcut only" : "") << "\";\n"
        << "    style=rounded; color=\"#888888\";\n"
        << "    " << id << "_in [shape=ellipse, label=\"in\"];\n";
      for (const ArchOp& o : blk.ops)
        d << "    " << id << "_l" << o.level << "_o" << o.op << " [shape=box, style=\"filled,rounded\", fillcolor=\""
          << op_color(o.type) << "\", label=\"" << op_name(o.type) << "\\nl" << o.level << "/o" << o.op << "\"];\n";
      if (!blk.empty)
        d << "    " << id << "_out [shape=box, label=\"1×1 conv ×" << blk.live_branches() << " → BN → ReLU\"];\n";
      d << "    " << id << "_add [shape=circle, label=\"+\"];\n"
        << "  }\n";
      d << "  " << prev << " -> " << id << "_in;\n";
      for (const ArchOp& o : blk.ops) {
        const std::string me = str(id, "_l", o.level, "_o", o.op);
        for (int i : o.inputs) {
          const std::string src =
              i == 0 ? id + "_in" : str(id, "_", "l", 1 + (i - 1) / sp.N(), "_o", 1 + (i - 1) % sp.N());
          d << "  " << src << " -> " << me << ";\n";
        }
        if (o.output) d << "  " << me << " -> " << id << "_out;\n";
      }
      if (!blk.empty) d << "  " << id << "_out -> " << id << "_add;\n";
      d << "  " << id << "_in -> " << id << "_add [style=dashed, label=\"" << (blk.id_conv ? "id_conv" : "identity")
        << "\"];\n";
      prev = id + "_add";
    }
    if (s + 1 < sp.stages()) {
      const ArchReduction& r = reductions_[static_cast<size_t>(s)];
      const std::string id = dot_id(r.name);
      d << "  subgraph cluster_" << id << " {\n"
        << "    label=\"" << r.name << " (" << r.in_channels << "→" << r.out_channels << " ch, " << r.out_height << "×"
        << r.out_width << ")\";\n"
        << "    style=dashed; color=\"#888888\";\n";
      if (r.branch[0]) d << "    " << id << "_b0 [shape=box, label=\"1×1 conv s2\"];\n";
      if (r.branch[1]) d << "    " << id << "_b1 [shape=box, label=\"3×3 conv s2\"];\n";
      d << "    " << id << "_sum [shape=circle, label=\"+\"];\n"
        << "  }\n";
      for (int k = 0; k < 2; ++k)
        if (r.branch[k])
          d << "  " << prev << " -> " << id << "_b" << k << ";\n  " << id << "_b" << k << " -> " << id << "_sum;\n";
      prev = id + "_sum";
    }
  }
  d << "  head [shape=box, label=\"BN → ReLU → GAP → FC " << sp.widths.back() << "→" << sp.classes << "\"];\n"
    << "  " << prev << " -> head;\n"
    << "}\n";
  return d.str();
}

// ---- JSON input ----------------------------------------------------------------------
//
// The JSON reader is core/json.hpp (strict field-by-field reading: every error is
// one fail_usage line "FILE: FIELD: message"; syntax errors name line and column).
namespace {

std::string join_ints(const std::vector<int>& v, const char* sep = ",") {
  std::string o;
  for (size_t i = 0; i < v.size(); ++i) o += str(i ? sep : "", v[i]);
  return o;
}

std::string join_ops(const std::vector<OpKind>& v) {
  std::string o;
  for (size_t i = 0; i < v.size(); ++i) o += str(i ? "," : "", op_name(v[i]));
  return o;
}

/// Row index of an input name: "in" → 0, "l{l}/o{j}" → 1 + N(l−1) + (j−1); −1 if malformed.
int parse_input_name(const std::string& s, int N, int* level) {
  if (s == "in") {
    *level = 0;
    return 0;
  }
  int l = 0, j = 0;
  char tail = 0;
  if (std::sscanf(s.c_str(), "l%d/o%d%c", &l, &j, &tail) != 2) return -1;
  if (s != str("l", l, "/o", j)) return -1;  // no leading zeros, signs or spaces
  if (l < 1 || j < 1 || j > N) return -1;
  *level = l;
  return 1 + N * (l - 1) + (j - 1);
}

}  // namespace

namespace {

/// Block u of stage s (blocks[bi] of an architecture JSON), checked against the
/// space and against itself; exit 2 naming the field.
ArchBlock block_from_json(const JsonValue& v, size_t bi, const SearchSpace& sp, int s, int u, const std::string& file) {
  const int L = sp.levels, N = sp.N();
  JsonObject b(v, str("blocks[", bi, "]"), file);
  ArchBlock blk = block_frame(sp, s, u);
  const std::string name = b.text("name");
  if (name != blk.name) b.bad(b.field("name"), str("expected \"", blk.name, "\", got \"", name, "\""));
  auto expect_int = [&](const char* key, int want, const char* why) {
    const int64_t got = b.i64(key, INT64_MIN, INT64_MAX);
    if (got != want) b.bad(b.field(key), str("expected ", want, " (", why, "), got ", got));
  };
  expect_int("stage", blk.stage, "blocks are listed in stage order");
  expect_int("unit", blk.unit, "blocks are listed in unit order");
  expect_int("channels", blk.channels, "the space's stage width");
  expect_int("height", blk.height, "the stage's feature-map height");
  expect_int("width", blk.width, "the stage's feature-map width");
  const std::string sc = b.text("shortcut"), want_sc = blk.id_conv ? "id_conv" : "identity";
  if (sc != want_sc)
    b.bad(b.field("shortcut"), str("expected \"", want_sc, "\" (", blk.id_conv ? "the first" : "not the first",
                                   " unit of its stage), got \"", sc, "\""));
  const bool empty = b.boolean("empty");
  const JsonValue& ops = b.array("ops", "an array of ops");
  std::vector<int> pos_of(static_cast<size_t>(L * N), -1);  // op index → position in blk.ops
  std::vector<uint8_t> consumed;
  for (size_t k = 0; k < ops.arr.size(); ++k) {
    JsonObject o(ops.arr[k], str(b.field("ops"), "[", k, "]"), file);
    ArchOp op;
    op.level = static_cast<int>(o.i64("level", 1, L));
    op.op = static_cast<int>(o.i64("op", 1, N));
    const int idx = N * (op.level - 1) + (op.op - 1);
    if (!blk.ops.empty()) {
      const ArchOp& prev = blk.ops.back();
      if (N * (prev.level - 1) + (prev.op - 1) >= idx)
        o.bad(o.path(), str("l", op.level, "/o", op.op,
                            " is out of order or repeated (ops are listed level-major, "
                            "in op order, once each)"));
    }
    const std::string type = o.text("type");
    op.type = parse_op(type, str(file, ": ", o.field("type")));
    if (op.type != sp.ops[static_cast<size_t>(op.op - 1)])
      o.bad(o.field("type"), str("expected \"", op_name(sp.ops[static_cast<size_t>(op.op - 1)]), "\" (op ", op.op,
                                 " of the space), got \"", type, "\""));
    const std::vector<std::string> inputs = o.string_array("inputs", "an array of input names");
    if (inputs.empty()) o.bad(o.field("inputs"), "an op needs at least one input");
    int last = -1;
    for (const std::string& in : inputs) {
      int lvl = 0;
      const int i = parse_input_name(in, N, &lvl);
      if (i < 0) o.bad(o.field("inputs"), str("\"", in, "\" is not an input name (\"in\" or \"l<level>/o<op>\")"));
      if (op.level == 1 && i != 0) o.bad(o.field("inputs"), "a level-1 op reads the block input only ([\"in\"])");
      if (i > 0 && (lvl >= op.level || pos_of[static_cast<size_t>(i - 1)] < 0))
        o.bad(o.field("inputs"), str("\"", in, "\" is not an earlier op of this block"));
      if (i <= last) o.bad(o.field("inputs"), "inputs must be sorted (\"in\" first, then level-major) without repeats");
      last = i;
      op.inputs.push_back(i);
      if (i > 0) consumed[static_cast<size_t>(pos_of[static_cast<size_t>(i - 1)])] = 1;
    }
    op.output = o.boolean("output");
    o.finish();
    pos_of[static_cast<size_t>(idx)] = static_cast<int>(blk.ops.size());
    blk.ops.push_back(std::move(op));
    consumed.push_back(0);
  }
  for (size_t k = 0; k < blk.ops.size(); ++k)
    if (!blk.ops[k].output && !consumed[k])
      b.bad(str(b.field("ops"), "[", k, "]"),
            str("l", blk.ops[k].level, "/o", blk.ops[k].op, " feeds neither the block output nor a later op"));
  blk.empty = blk.live_branches() == 0;
  if (empty != blk.empty)
    b.bad(b.field("empty"),
          str("expected ", blk.empty ? "true (no op has \"output\": true)" : "false (an op has \"output\": true)"));
  b.finish();
  return blk;
}

}  // namespace

Architecture Architecture::from_json(const std::string& text, const std::string& file) {
  const JsonValue root_v = parse_json(text, file);
  JsonObject root(root_v, "", file);
  const std::string fmt = root.text("format");
  if (fmt != "dsonas-architecture") root.bad("format", str("expected \"dsonas-architecture\", got \"", fmt, "\""));
  const int64_t ver = root.i64("format_version", INT64_MIN, INT64_MAX);
  if (ver != 1) root.bad("format_version", str("version ", ver, " is not supported (this build reads 1)"));

  Architecture a;
  a.source = root.text("source");
  a.stage = root.text("stage");
  a.step = root.i64("step", INT64_MIN, INT64_MAX);
  a.space_ = SearchSpace::from_json_value(root.get("space"), "space", file, kExitUsage);
  const SearchSpace& sp = a.space_;
  const int L = sp.levels, N = sp.N();
  if (root.boolean("share") != sp.share)
    root.bad("share", str("expected ", sp.share ? "true" : "false", " (space.share)"));

  // ---- blocks
  const JsonValue& blocks = root.array("blocks", "an array of blocks");
  if (static_cast<int>(blocks.arr.size()) != sp.num_normal_blocks())
    root.bad("blocks",
             str("expected ", sp.num_normal_blocks(), " blocks (the space's normal units), got ", blocks.arr.size()));
  size_t bi = 0;
  for (int s = 0; s < sp.stages(); ++s)
    for (int u = 0; u < sp.normal_units[s]; ++u, ++bi) {
      a.blocks_.push_back(block_from_json(blocks.arr[bi], bi, sp, s, u, file));
    }

  // ---- reductions
  const JsonValue& reds = root.array("reductions", "an array of reductions");
  if (static_cast<int>(reds.arr.size()) != sp.num_reductions())
    root.bad("reductions", str("expected ", sp.num_reductions(),
                               " reductions (one after every stage but the last), got ", reds.arr.size()));
  for (int s = 0; s < sp.num_reductions(); ++s) {
    JsonObject r(reds.arr[static_cast<size_t>(s)], str("reductions[", s, "]"), file);
    ArchReduction red = reduction_frame(sp, s);
    const std::string name = r.text("name");
    if (name != red.name) r.bad(r.field("name"), str("expected \"", red.name, "\", got \"", name, "\""));
    const int64_t ci = r.i64("in_channels", INT64_MIN, INT64_MAX), co = r.i64("out_channels", INT64_MIN, INT64_MAX);
    if (ci != red.in_channels)
      r.bad(r.field("in_channels"), str("expected ", red.in_channels, " (the space's stage width), got ", ci));
    if (co != red.out_channels)
      r.bad(r.field("out_channels"), str("expected ", red.out_channels, " (the next stage's width), got ", co));
    const std::vector<std::string> br = r.string_array("branches", "an array of branch names");
    const bool ok = br == std::vector<std::string>{"1x1"} || br == std::vector<std::string>{"3x3"} ||
                    br == std::vector<std::string>{"1x1", "3x3"};
    if (!ok) r.bad(r.field("branches"), "expected [\"1x1\"], [\"3x3\"] or [\"1x1\", \"3x3\"]");
    red.branch[0] = br.front() == "1x1";
    red.branch[1] = br.back() == "3x3";
    r.finish();
    a.reductions_.push_back(red);
  }

  // ---- derived fields: must agree with the structure
  {
    JsonObject sv = root.object("survivors");
    const int64_t ops = sv.i64("ops", INT64_MIN, INT64_MAX), of = sv.i64("of", INT64_MIN, INT64_MAX);
    if (ops != a.live_ops())
      sv.bad(sv.field("ops"), str(ops, " does not match the blocks (", a.live_ops(), " live ops)"));
    const int64_t all = static_cast<int64_t>(sp.num_normal_blocks()) * L * N;
    if (of != all) sv.bad(sv.field("of"), str(of, " does not match the space (", all, " ops)"));
    auto per = [&](const std::string& key, const std::vector<int64_t>& want, auto name_of) {
      JsonObject m = sv.object(key);
      const auto& mem = m.value().obj;
      if (mem.size() != want.size()) m.bad(m.path(), str("expected ", want.size(), " entries, got ", mem.size()));
      for (size_t i = 0; i < mem.size(); ++i) {
        const std::string nm = name_of(i);
        if (mem[i].first != nm)
          m.bad(m.path(), str("entry ", i + 1, " must be \"", nm, "\", got \"", mem[i].first, "\""));
        const int64_t got = m.as_i64(mem[i].second, m.field(nm), INT64_MIN, INT64_MAX);
        if (got != want[i]) m.bad(m.field(nm), str(got, " does not match the blocks (", want[i], ")"));
      }
    };
    per("per_type", a.survivors_per_type(), [&](size_t j) { return std::string(op_name(sp.ops[j])); });
    per("per_level", a.survivors_per_level(), [&](size_t l) { return str("l", l + 1); });
    sv.finish();
  }
  auto expect_count = [&](const char* key, double want) {
    const int64_t got = root.i64(key, INT64_MIN, INT64_MAX);
    const int64_t w = static_cast<int64_t>(std::llround(want));
    if (got != w) root.bad(key, str(got, " does not match the architecture (", w, ")"));
  };
  expect_count("macs", a.macs());
  expect_count("params", a.params());
  expect_count("macs_full", a.macs_full());
  expect_count("params_full", a.params_full());

  // ---- warnings: lambda_zero flags, then the extras
  const std::vector<std::string> warn = root.string_array("warnings", "an array of strings");
  for (ArchReduction& r : a.reductions_) {
    const std::string head = r.name + ": both branch lambdas are 0";
    for (const std::string& w : warn)
      if (w.compare(0, head.size(), head) == 0) r.lambda_zero = true;
  }
  const std::vector<std::string> builtin = a.warnings();
  for (const std::string& w : warn) {
    bool known = false;
    for (const std::string& x : builtin) known = known || x == w;
    for (const ArchReduction& r : a.reductions_) {
      const std::string head = r.name + ": both branch lambdas are 0";
      known = known || w.compare(0, head.size(), head) == 0;
    }
    if (!known) a.extra_warnings.push_back(w);
  }
  root.finish();
  return a;
}

// ---- baseline, width, compatibility ------------------------------------------------
Architecture Architecture::baseline(const SearchSpace& space, OpKind kind) {
  space.validate();
  int j = 0;
  for (int k = 0; k < space.N() && j == 0; ++k)
    if (space.ops[static_cast<size_t>(k)] == kind) j = k + 1;
  if (j == 0) fail_usage(str("baseline: the space's ops (", join_ops(space.ops), ") do not include ", op_name(kind)));
  std::vector<float> lam(static_cast<size_t>(space.total_lambda()), 0.0f);
  const BlockLayout b = space.block_layout();
  const int blocks = space.share ? 1 : space.num_normal_blocks();
  for (int bi = 0; bi < blocks; ++bi) {
    // the λ offset of the bi-th block (share: the one shared block)
    int off = 0;
    for (int s = 0, k = 0; s < space.stages(); ++s)
      for (int u = 0; u < space.normal_units[s]; ++u, ++k)
        if (k == bi) off = space.block_lambda_offset(s, u);
    for (int l = 2; l <= b.L; ++l) lam[static_cast<size_t>(off + b.row_offset(l, j) + b.input_index(l - 1, j))] = 1.0f;
    lam[static_cast<size_t>(off + b.after_offset() + b.after_index(b.L, j))] = 1.0f;
  }
  for (int s = 0; s < space.num_reductions(); ++s) {
    lam[static_cast<size_t>(space.reduction_lambda_offset(s))] = 1.0f;
    lam[static_cast<size_t>(space.reduction_lambda_offset(s) + 1)] = 1.0f;
  }
  Architecture a = from_lambda(space, lam.data(), nullptr);
  a.source = "baseline";
  a.stage = "baseline";
  return a;
}

Architecture Architecture::at_width(int C) const {
  Architecture a = *this;
  if (C <= 0 || C == space_.stem_channels) return a;
  a.space_ = scale_width(space_, C);
  for (ArchBlock& b : a.blocks_) b.channels = a.space_.widths[static_cast<size_t>(b.stage - 1)];
  for (ArchReduction& r : a.reductions_) {
    r.in_channels = a.space_.widths[static_cast<size_t>(r.stage - 1)];
    r.out_channels = a.space_.widths[static_cast<size_t>(r.stage)];
  }
  return a;
}

void Architecture::check_fits(const SearchSpace& c, const std::string& file) const {
  const SearchSpace& a = space_;
  auto refuse = [&](const char* field, const std::string& av, const std::string& cv) {
    fail_usage(str(file, ": ", field, ": arch=", av, " config=", cv));
  };
  if (a.levels != c.levels) refuse("levels", str(a.levels), str(c.levels));
  if (a.N() != c.N()) refuse("N", str(a.N()), str(c.N()));
  if (a.ops != c.ops) refuse("ops", join_ops(a.ops), join_ops(c.ops));
  if (a.stem != c.stem)
    refuse("stem", a.stem == StemKind::Conv3 ? "conv3" : "imagenet2x",
           c.stem == StemKind::Conv3 ? "conv3" : "imagenet2x");
  if (a.stages() != c.stages()) refuse("stages", str(a.stages()), str(c.stages()));
  if (a.normal_units != c.normal_units) refuse("normal_units", join_ints(a.normal_units), join_ints(c.normal_units));
  if (a.in_channels != c.in_channels || a.in_height != c.in_height || a.in_width != c.in_width)
    refuse("input", str(a.in_channels, "x", a.in_height, "x", a.in_width),
           str(c.in_channels, "x", c.in_height, "x", c.in_width));
  if (a.classes != c.classes) refuse("classes", str(a.classes), str(c.classes));
}

std::string Architecture::structural_difference(const Architecture& o, const char* this_label,
                                                const char* other_label) const {
  const SearchSpace &a = space_, &b = o.space_;
  auto diff = [&](const std::string& field, const std::string& x, const std::string& y) {
    return str(field, ": ", this_label, "=", x, " ", other_label, "=", y);
  };
  if (a.levels != b.levels) return diff("space.levels", str(a.levels), str(b.levels));
  if (a.ops != b.ops) return diff("space.ops", join_ops(a.ops), join_ops(b.ops));
  if (a.in_channels != b.in_channels || a.in_height != b.in_height || a.in_width != b.in_width)
    return diff("space.input", str(a.in_channels, "x", a.in_height, "x", a.in_width),
                str(b.in_channels, "x", b.in_height, "x", b.in_width));
  if (a.classes != b.classes) return diff("space.classes", str(a.classes), str(b.classes));
  if (a.stem != b.stem)
    return diff("space.stem", a.stem == StemKind::Conv3 ? "conv3" : "imagenet2x",
                b.stem == StemKind::Conv3 ? "conv3" : "imagenet2x");
  if (a.stem_channels != b.stem_channels)
    return diff("space.stem_channels", str(a.stem_channels), str(b.stem_channels));
  if (a.normal_units != b.normal_units)
    return diff("space.normal_units", join_ints(a.normal_units), join_ints(b.normal_units));
  if (a.widths != b.widths) return diff("space.widths", join_ints(a.widths), join_ints(b.widths));
  // Same space: same block and reduction counts and geometry.
  auto inputs = [&](const ArchOp& op) {
    std::string s = "[";
    for (size_t i = 0; i < op.inputs.size(); ++i) s += str(i ? ", " : "", input_name(op.inputs[i]));
    return s + "]";
  };
  for (size_t bi = 0; bi < blocks_.size(); ++bi) {
    const ArchBlock &x = blocks_[bi], &y = o.blocks_[bi];
    const std::string f = str("blocks[", bi, "]");
    if (x.id_conv != y.id_conv)
      return diff(f + ".shortcut", x.id_conv ? "id_conv" : "identity", y.id_conv ? "id_conv" : "identity");
    if (x.ops.size() != y.ops.size()) return diff(f + ".ops", str(x.ops.size(), " ops"), str(y.ops.size(), " ops"));
    for (size_t k = 0; k < x.ops.size(); ++k) {
      const ArchOp &p = x.ops[k], &q = y.ops[k];
      const std::string g = str(f, ".ops[", k, "]");
      if (p.level != q.level || p.op != q.op)
        return diff(g, str("l", p.level, "/o", p.op), str("l", q.level, "/o", q.op));
      if (p.type != q.type) return diff(g + ".type", op_name(p.type), op_name(q.type));
      if (p.inputs != q.inputs) return diff(g + ".inputs", inputs(p), inputs(q));
      if (p.output != q.output) return diff(g + ".output", p.output ? "true" : "false", q.output ? "true" : "false");
    }
  }
  for (size_t r = 0; r < reductions_.size(); ++r) {
    const ArchReduction &x = reductions_[r], &y = o.reductions_[r];
    auto br = [](const ArchReduction& z) {
      return std::string(z.branch[0] && z.branch[1] ? "[1x1, 3x3]" : z.branch[0] ? "[1x1]" : "[3x3]");
    };
    if (x.branch[0] != y.branch[0] || x.branch[1] != y.branch[1])
      return diff(str("reductions[", r, "].branches"), br(x), br(y));
  }
  return "";
}

int width_for_target(const Architecture& arch, double target, CostKind kind) {
  const char* opt = kind == CostKind::Macs ? "--target-macs" : "--target-params";
  if (!(target > 0) || !std::isfinite(target)) fail_usage(str(opt, ": must be a positive number (got ", target, ")"));
  auto cost = [&](int C) {
    const Architecture a = arch.at_width(C);
    return kind == CostKind::Macs ? a.macs() : a.params();
  };
  const int lo = arch.space().stem == StemKind::ImageNet2x ? 2 : 1;
  constexpr int kMaxC = 1 << 20;
  // smallest C with cost(C) ≥ target (cost is non-decreasing in C)
  int hi = lo;
  while (cost(hi) < target) {
    if (hi >= kMaxC)
      fail_usage(str(opt, ": ", target, " is beyond reach (stem width ", kMaxC, " gives ", cost(kMaxC), ")"));
    hi = std::min(kMaxC, 2 * hi);
  }
  int a = lo;
  while (a < hi) {  // invariant: cost(hi) ≥ target
    const int mid = a + (hi - a) / 2;
    if (cost(mid) >= target)
      hi = mid;
    else
      a = mid + 1;
  }
  if (hi > lo && target - cost(hi - 1) <= cost(hi) - target) {
    int below = hi - 1;  // the closest cost is under the target: the smallest width giving it
    while (below > lo && cost(below - 1) == cost(below)) --below;
    return below;
  }
  return hi;
}

}  // namespace dsonas
