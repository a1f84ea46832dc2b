// search_space.cpp — presets, validation, λ offsets and JSON of SearchSpace.
#include "dsonas/model/search_space.hpp"

#include <sstream>

#include "dsonas/core/error.hpp"
#include "dsonas/core/json.hpp"

namespace dsonas {

const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::Sep3: return "sep3";
    case OpKind::Sep5: return "sep5";
    case OpKind::Max3: return "max3";
    case OpKind::Avg3: return "avg3";
  }
  return "?";
}

OpKind parse_op(const std::string& s, const std::string& field) {
  if (s == "sep3") return OpKind::Sep3;
  if (s == "sep5") return OpKind::Sep5;
  if (s == "max3") return OpKind::Max3;
  if (s == "avg3") return OpKind::Avg3;
  fail_usage(str(field, ": unknown op '", s, "' (expected sep3, sep5, max3 or avg3)"));
}

int BlockLayout::row_offset(int l, int j) const {
  DSO_CHECK(l >= 2 && l <= L && j >= 1 && j <= N, "row_offset(", l, ",", j, ")");
  int off = 0;
  for (int lp = 2; lp < l; ++lp) off += N * in_len(lp);
  return off + (j - 1) * in_len(l);
}

int SearchSpace::num_normal_blocks() const {
  int n = 0;
  for (int u : normal_units) n += u;
  return n;
}

int SearchSpace::block_lambda_offset(int s, int u) const {
  if (share) return 0;
  const int bs = block_layout().size();
  int off = 0;
  for (int sp = 0; sp < s; ++sp) off += normal_units[sp] * bs + 2;
  return off + u * bs;
}

int SearchSpace::reduction_lambda_offset(int s) const {
  const int bs = block_layout().size();
  if (share) return bs + 2 * s;
  int off = 0;
  for (int sp = 0; sp <= s; ++sp) off += normal_units[sp] * bs;
  return off + 2 * s;
}

int SearchSpace::total_lambda() const {
  const int bs = block_layout().size();
  return (share ? bs : num_normal_blocks() * bs) + 2 * num_reductions();
}

int SearchSpace::stage_height(int s) const {
  int h = stem == StemKind::ImageNet2x ? (in_height + 1) / 2 : in_height;
  if (stem == StemKind::ImageNet2x) h = (h + 1) / 2;
  for (int i = 0; i < s; ++i) h = (h + 1) / 2;  // 1×1 s2 pad 0 and 3×3 s2 pad 1 agree: ceil(h/2)
  return h;
}

int SearchSpace::stage_width(int s) const {
  int w = stem == StemKind::ImageNet2x ? (in_width + 1) / 2 : in_width;
  if (stem == StemKind::ImageNet2x) w = (w + 1) / 2;
  for (int i = 0; i < s; ++i) w = (w + 1) / 2;
  return w;
}

void SearchSpace::validate() const {
  if (levels < 1) fail_usage(str("space.levels: must be >= 1 (got ", levels, ")"));
  if (ops.empty()) fail_usage("space.ops: at least one op is needed");
  if (in_channels < 1 || in_height < 1 || in_width < 1)
    fail_usage(str("space.input: bad shape ", in_channels, "x", in_height, "x", in_width));
  if (classes < 2) fail_usage(str("space.classes: must be >= 2 (got ", classes, ")"));
  if (stem_channels < 1) fail_usage(str("space.stem-channels: must be >= 1 (got ", stem_channels, ")"));
  if (normal_units.empty()) fail_usage("space.units: at least one stage is needed");
  if (widths.size() != normal_units.size())
    fail_usage(str("space.widths: ", widths.size(), " widths for ", normal_units.size(), " stages"));
  for (size_t s = 0; s < normal_units.size(); ++s) {
    if (normal_units[s] < 1) fail_usage(str("space.units: stage ", s + 1, " has no normal unit"));
    if (widths[s] < 1) fail_usage(str("space.widths: stage ", s + 1, " width must be >= 1"));
  }
  if (stage_height(stages() - 1) < 1 || stage_width(stages() - 1) < 1)
    fail_usage("space: input too small for the number of stages");
}

std::string SearchSpace::to_json() const {
  std::string ops_s, units_s, widths_s;
  for (size_t i = 0; i < ops.size(); ++i) ops_s += str(i ? "," : "", "\"", op_name(ops[i]), "\"");
  for (size_t i = 0; i < normal_units.size(); ++i) units_s += str(i ? "," : "", normal_units[i]);
  for (size_t i = 0; i < widths.size(); ++i) widths_s += str(i ? "," : "", widths[i]);
  return str("{\"preset\":", json_quote(preset), ",\"levels\":", levels, ",\"ops\":[", ops_s, "],\"input\":[",
             in_channels, ",", in_height, ",", in_width, "],\"classes\":", classes, ",\"stem\":\"",
             stem == StemKind::Conv3 ? "conv3" : "imagenet2x", "\",\"stem_channels\":", stem_channels,
             ",\"normal_units\":[", units_s, "],\"widths\":[", widths_s, "],\"share\":", share ? "true" : "false",
             ",\"total_lambda\":", total_lambda(), "}");
}

namespace {
constexpr int64_t kMaxDim = 1 << 16;
}  // namespace

SearchSpace SearchSpace::from_json_value(const JsonValue& v, const std::string& path, const std::string& file,
                                         int code) {
  JsonObject o(v, path, file, code);
  SearchSpace sp;
  sp.preset = o.text("preset");
  sp.levels = static_cast<int>(o.i64("levels", 1, 16));
  sp.ops.clear();
  {
    const std::vector<std::string> ops = o.string_array("ops", "an array of op names");
    if (ops.empty() || ops.size() > 16) o.bad(o.field("ops"), str("expected 1 to 16 op names, got ", ops.size()));
    for (size_t j = 0; j < ops.size(); ++j) {
      try {
        sp.ops.push_back(parse_op(ops[j], str(o.file(), ": ", o.field("ops"), "[", j, "]")));
      } catch (const Error& e) {
        throw Error(code, e.what());
      }
    }
  }
  const std::vector<int64_t> in = o.int_array("input", 1, kMaxDim);
  if (in.size() != 3) o.bad(o.field("input"), str("expected [channels, height, width], got ", in.size(), " numbers"));
  sp.in_channels = static_cast<int>(in[0]);
  sp.in_height = static_cast<int>(in[1]);
  sp.in_width = static_cast<int>(in[2]);
  sp.classes = static_cast<int>(o.i64("classes", 2, 1 << 20));
  const std::string stem = o.text("stem");
  if (stem == "conv3")
    sp.stem = StemKind::Conv3;
  else if (stem == "imagenet2x")
    sp.stem = StemKind::ImageNet2x;
  else
    o.bad(o.field("stem"), str("expected \"conv3\" or \"imagenet2x\", got \"", stem, "\""));
  sp.stem_channels = static_cast<int>(o.i64("stem_channels", 1, kMaxDim));
  sp.normal_units.clear();
  for (int64_t u : o.int_array("normal_units", 1, 1024)) sp.normal_units.push_back(static_cast<int>(u));
  if (sp.normal_units.empty() || sp.normal_units.size() > 16)
    o.bad(o.field("normal_units"), str("expected 1 to 16 stages, got ", sp.normal_units.size()));
  sp.widths.clear();
  for (int64_t w : o.int_array("widths", 1, kMaxDim)) sp.widths.push_back(static_cast<int>(w));
  if (sp.widths.size() != sp.normal_units.size())
    o.bad(o.field("widths"),
          str("expected ", sp.normal_units.size(), " widths (one per stage), got ", sp.widths.size()));
  if (sp.widths[0] != sp.stem_channels)
    o.bad(o.field("widths") + "[0]",
          str("the stage-1 width must equal stem_channels (", sp.stem_channels, "), got ", sp.widths[0]));
  if (sp.stem == StemKind::ImageNet2x && sp.stem_channels < 2)
    o.bad(o.field("stem_channels"), "the imagenet2x stem needs at least 2 channels");
  sp.share = o.boolean("share");
  try {
    sp.validate();
  } catch (const Error& e) {
    throw Error(code, str(o.file(), ": ", e.what()));
  }
  const int64_t tl = o.i64("total_lambda", 0, INT64_MAX);
  if (tl != sp.total_lambda())
    o.bad(o.field("total_lambda"), str(tl, " does not match the space (", sp.total_lambda(), ")"));
  o.finish();
  return sp;
}

SearchSpace SearchSpace::from_json(const std::string& js, const std::string& source) {
  return from_json_value(parse_json(js, source, kExitCheckpoint), "space", source, kExitCheckpoint);
}

SearchSpace SearchSpace::preset_named(const std::string& name) {
  SearchSpace s;
  s.preset = name;
  if (name == "fmnist" || name == "bench_fmnist") {
    // Issue 2 §8: 1×28×28, stem 3×3 → 16, 3 stages × 2 normal units, widths 16/32/64.
    return s;
  }
  if (name == "tiny") {  // for tests: 2 stages, 1 unit each, L = 3
    s.levels = 3;
    s.in_channels = 1;
    s.in_height = 8;
    s.in_width = 8;
    s.classes = 3;
    s.stem_channels = 4;
    s.normal_units = {1, 1};
    s.widths = {4, 8};
    return s;
  }
  if (name == "cifar10") {  // docs/method.md §2.1: C = 48, depth 110 → 8 normal units per stage
    s.in_channels = 3;
    s.in_height = 32;
    s.in_width = 32;
    s.classes = 10;
    s.stem_channels = 48;
    s.normal_units = {8, 8, 8};
    s.widths = {48, 96, 192};
    return s;
  }
  if (name == "imagenet") {  // docs/method.md §2.2: C = 28, units [3,3,14,7] → 2,2,13,6 normal
    s.in_channels = 3;
    s.in_height = 224;
    s.in_width = 224;
    s.classes = 1000;
    s.stem = StemKind::ImageNet2x;
    s.stem_channels = 28;
    s.normal_units = {2, 2, 13, 6};
    s.widths = {28, 56, 112, 224};
    return s;
  }
  fail_usage(
      str("space.preset: unknown preset '", name, "' (expected fmnist, bench_fmnist, cifar10, imagenet or tiny)"));
}

}  // namespace dsonas
