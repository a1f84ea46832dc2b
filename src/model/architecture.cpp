// architecture.cpp — the derived network of ALGORITHM.md §6.3: structure from
// pruned λ, §11.1 MAC / parameter counts, collapse warnings, JSON and DOT.
//
// Design note.  Topology comes from prune_all + block_topology + reduction_topology
// (optim/prune.hpp), so derive, the search's live plan and inspect agree by
// construction.  The JSON is produced by a tiny ordered value tree (below) whose
// printer is fully deterministic: only integers, strings and booleans appear, keys
// keep insertion order, and every number is an exact integer (MACs and params are
// integral by construction).
#include "dsonas/model/architecture.hpp"

#include <cmath>
#include <cstdio>
#include <sstream>
#include <utility>

#include "dsonas/core/error.hpp"
#include "dsonas/optim/prune.hpp"

namespace dsonas {
namespace {

// ---- a minimal ordered JSON value and its printer ----------------------------------
struct J {
  enum Kind { Int, Str, Bool, Arr, Obj } kind = Obj;
  int64_t i = 0;
  std::string s;
  bool b = false;
  std::vector<J> arr;
  std::vector<std::pair<std::string, J>> obj;

  static J num(int64_t v) { J j; j.kind = Int; j.i = v; return j; }
  static J num_d(double v) { return num(static_cast<int64_t>(std::llround(v))); }
  static J text(const std::string& v) { J j; j.kind = Str; j.s = v; return j; }
  static J boolean(bool v) { J j; j.kind = Bool; j.b = v; return j; }
  static J array() { J j; j.kind = Arr; return j; }
  static J object() { J j; j.kind = Obj; return j; }
  J& add(const std::string& key, J v) { obj.emplace_back(key, std::move(v)); return *this; }
  J& push(J v) { arr.push_back(std::move(v)); return *this; }

  bool scalar() const { return kind == Int || kind == Str || kind == Bool; }
  /// Printed on one line: scalars, arrays of scalars, objects of those.
  bool flat() const {
    if (scalar()) return true;
    if (kind == Arr) {
      for (const J& e : arr)
        if (!e.scalar()) return false;
      return true;
    }
    for (const auto& kv : obj)
      if (!(kv.second.scalar() || (kv.second.kind == Arr && kv.second.flat()))) return false;
    return true;
  }
};

std::string quote(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      case '\r': o += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += static_cast<char>(c);
        }
    }
  }
  return o + "\"";
}

void print_inline(const J& v, std::string& out) {
  switch (v.kind) {
    case J::Int: out += std::to_string(v.i); return;
    case J::Str: out += quote(v.s); return;
    case J::Bool: out += v.b ? "true" : "false"; return;
    case J::Arr:
      out += "[";
      for (size_t k = 0; k < v.arr.size(); ++k) {
        if (k) out += ", ";
        print_inline(v.arr[k], out);
      }
      out += "]";
      return;
    case J::Obj:
      out += "{";
      for (size_t k = 0; k < v.obj.size(); ++k) {
        if (k) out += ", ";
        out += quote(v.obj[k].first) + ": ";
        print_inline(v.obj[k].second, out);
      }
      out += "}";
      return;
  }
}

/// Objects are multi-line unless all their members are scalars; an array is one
/// line when it holds only scalars (and fits in 100 characters); a "flat" element
/// of an array (e.g. one op: scalars and scalar arrays) is printed on one line.
void print_pretty(const J& v, int depth, std::string& out) {
  const std::string pad(static_cast<size_t>(2 * (depth + 1)), ' '), end(static_cast<size_t>(2 * depth), ' ');
  if (v.kind == J::Arr) {
    if (v.arr.empty()) return print_inline(v, out);
    if (v.flat()) {  // scalars: one line unless long (e.g. several warnings)
      std::string line;
      print_inline(v, line);
      if (line.size() <= 100) {
        out += line;
        return;
      }
    }
    out += "[\n";
    for (size_t k = 0; k < v.arr.size(); ++k) {
      out += pad;
      if (v.arr[k].flat()) print_inline(v.arr[k], out);
      else print_pretty(v.arr[k], depth + 1, out);
      out += k + 1 < v.arr.size() ? ",\n" : "\n";
    }
    out += end + "]";
    return;
  }
  if (v.kind == J::Obj) {
    bool scalars = true;  // an object of scalars only (e.g. per-type counts): one line
    for (const auto& kv : v.obj) scalars = scalars && kv.second.scalar();
    if (scalars) return print_inline(v, out);
    out += "{\n";
    for (size_t k = 0; k < v.obj.size(); ++k) {
      out += pad + quote(v.obj[k].first) + ": ";
      print_pretty(v.obj[k].second, depth + 1, out);
      out += k + 1 < v.obj.size() ? ",\n" : "\n";
    }
    out += end + "}";
    return;
  }
  print_inline(v, out);
}

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
      ArchBlock blk;
      blk.stage = s + 1;
      blk.unit = u + 1;
      blk.name = str("s", s + 1, "/u", u + 1);
      blk.channels = space.widths[s];
      blk.height = space.stage_height(s);
      blk.width = space.stage_width(s);
      blk.id_conv = u == 0;
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
      ArchReduction r;
      r.stage = s + 1;
      r.name = str("s", s + 1, "/red");
      r.in_channels = space.widths[s];
      r.out_channels = space.widths[s + 1];
      r.out_height = space.stage_height(s + 1);
      r.out_width = space.stage_width(s + 1);
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
    for (const ArchOp& o : blk.ops)
      if (op_is_conv(o.type)) {
        const double k = op_kernel(o.type);
        macs += (k * k * F + F * F) * hw;
      }
    macs += blk.live_branches() * F * F * hw;
    if (blk.id_conv) macs += F * F * hw;
  }
  for (const ArchReduction& r : reductions_) {
    const double out = static_cast<double>(r.out_channels) * r.out_height * r.out_width;
    if (r.branch[0]) macs += 1.0 * r.in_channels * out;
    if (r.branch[1]) macs += 9.0 * r.in_channels * out;
  }
  macs += static_cast<double>(sp.widths.back()) * sp.classes;
  return macs;
}

double Architecture::params() const {
  const SearchSpace& sp = space_;
  const double C = sp.stem_channels, cin = sp.in_channels;
  double p = 0.0;
  if (sp.stem == StemKind::Conv3) {
    p += 9.0 * cin * C + 2.0 * C;
  } else {
    const double half = sp.stem_channels / 2;
    p += 9.0 * cin * half + 2.0 * half + 9.0 * half * C + 2.0 * C;
  }
  for (const ArchBlock& blk : blocks_) {
    const double F = blk.channels;
    for (const ArchOp& o : blk.ops) {
      if (op_is_conv(o.type)) {
        const double k = op_kernel(o.type);
        p += k * k * F + F * F;
      }
      p += 2.0 * F;  // the op's BN
    }
    const int br = blk.live_branches();
    if (br > 0) p += br * F * F + 2.0 * F;  // output 1×1 convs + block-output BN
    if (blk.id_conv) p += F * F + 2.0 * F;
  }
  for (const ArchReduction& r : reductions_) {
    const double fi = r.in_channels, fo = r.out_channels;
    if (r.branch[0]) p += 1.0 * fi * fo + 2.0 * fo;
    if (r.branch[1]) p += 9.0 * fi * fo + 2.0 * fo;
  }
  const double last = sp.widths.back();
  p += 2.0 * last + last * sp.classes + sp.classes;  // head BN, FC with bias
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
    for (OpKind k : sp.ops) ops.push(J::text(op_name(k)));
    for (int u : sp.normal_units) units.push(J::num(u));
    for (int wd : sp.widths) widths.push(J::num(wd));
    input.push(J::num(sp.in_channels)).push(J::num(sp.in_height)).push(J::num(sp.in_width));
    space.add("preset", J::text(sp.preset))
        .add("levels", J::num(sp.levels))
        .add("ops", ops)
        .add("input", input)
        .add("classes", J::num(sp.classes))
        .add("stem", J::text(sp.stem == StemKind::Conv3 ? "conv3" : "imagenet2x"))
        .add("stem_channels", J::num(sp.stem_channels))
        .add("normal_units", units)
        .add("widths", widths)
        .add("share", J::boolean(sp.share))
        .add("total_lambda", J::num(sp.total_lambda()));
  }
  J blocks = J::array();
  for (const ArchBlock& blk : blocks_) {
    J ops = J::array();
    for (const ArchOp& o : blk.ops) {
      J in = J::array();
      for (int i : o.inputs) in.push(J::text(input_name(i)));
      ops.push(J::object()
                   .add("level", J::num(o.level))
                   .add("op", J::num(o.op))
                   .add("type", J::text(op_name(o.type)))
                   .add("inputs", in)
                   .add("output", J::boolean(o.output)));
    }
    blocks.push(J::object()
                    .add("name", J::text(blk.name))
                    .add("stage", J::num(blk.stage))
                    .add("unit", J::num(blk.unit))
                    .add("channels", J::num(blk.channels))
                    .add("height", J::num(blk.height))
                    .add("width", J::num(blk.width))
                    .add("shortcut", J::text(blk.id_conv ? "id_conv" : "identity"))
                    .add("empty", J::boolean(blk.empty))
                    .add("ops", ops));
  }
  J reds = J::array();
  for (const ArchReduction& r : reductions_) {
    J br = J::array();
    if (r.branch[0]) br.push(J::text("1x1"));
    if (r.branch[1]) br.push(J::text("3x3"));
    reds.push(J::object()
                  .add("name", J::text(r.name))
                  .add("in_channels", J::num(r.in_channels))
                  .add("out_channels", J::num(r.out_channels))
                  .add("branches", br));
  }
  J per_type = J::object(), per_level = J::object();
  const std::vector<int64_t> pt = survivors_per_type(), pl = survivors_per_level();
  for (size_t j = 0; j < pt.size(); ++j) per_type.add(op_name(sp.ops[j]), J::num(pt[j]));
  for (size_t l = 0; l < pl.size(); ++l) per_level.add(str("l", l + 1), J::num(pl[l]));
  J survivors = J::object();
  survivors.add("ops", J::num(live_ops()))
      .add("of", J::num(static_cast<int64_t>(sp.num_normal_blocks()) * sp.levels * sp.N()))
      .add("per_type", per_type)
      .add("per_level", per_level);
  J warn = J::array();
  for (const std::string& s : warnings()) warn.push(J::text(s));

  J root = J::object();
  root.add("format", J::text("dsonas-architecture"))
      .add("format_version", J::num(1))
      .add("source", J::text(source))
      .add("stage", J::text(stage))
      .add("step", J::num(step))
      .add("space", space)
      .add("share", J::boolean(sp.share))
      .add("blocks", blocks)
      .add("reductions", reds)
      .add("survivors", survivors)
      .add("macs", J::num_d(macs()))
      .add("params", J::num_d(params()))
      .add("macs_full", J::num_d(macs_full()))
      .add("params_full", J::num_d(params_full()))
      .add("warnings", warn);
  std::string out;
  print_pretty(root, 0, out);
  return out + "\n";
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
    << "  stem [shape=box, label=\"stem "
    << (sp.stem == StemKind::Conv3 ? "3×3 conv" : "2 × 3×3 conv s2") << " → " << sp.stem_channels << "\"];\n"
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
          const std::string src = i == 0 ? id + "_in" : str(id, "_", "l", 1 + (i - 1) / sp.N(), "_o", 1 + (i - 1) % sp.N());
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
        if (r.branch[k]) d << "  " << prev << " -> " << id << "_b" << k << ";\n  " << id << "_b" << k << " -> " << id << "_sum;\n";
      prev = id + "_sum";
    }
  }
  d << "  head [shape=box, label=\"BN → ReLU → GAP → FC " << sp.widths.back() << "→" << sp.classes << "\"];\n"
    << "  " << prev << " -> head;\n"
    << "}\n";
  return d.str();
}

}  // namespace dsonas
