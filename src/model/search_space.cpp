// search_space.cpp — presets, validation, λ offsets and JSON of SearchSpace.
#include "dsonas/model/search_space.hpp"

#include <sstream>

#include "dsonas/core/error.hpp"

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
  return str("{\"preset\":\"", preset, "\",\"levels\":", levels, ",\"ops\":[", ops_s,
             "],\"input\":[", in_channels, ",", in_height, ",", in_width, "],\"classes\":", classes,
             ",\"stem\":\"", stem == StemKind::Conv3 ? "conv3" : "imagenet2x",
             "\",\"stem_channels\":", stem_channels, ",\"normal_units\":[", units_s,
             "],\"widths\":[", widths_s, "],\"share\":", share ? "true" : "false",
             ",\"total_lambda\":", total_lambda(), "}");
}

namespace {

/// The raw text of `"key":value` in a flat JSON object (value: number, string,
/// bool or a flat array).
std::string json_value(const std::string& js, const std::string& key, const std::string& source) {
  const std::string pat = "\"" + key + "\":";
  const size_t k = js.find(pat);
  if (k == std::string::npos) throw Error(kExitCheckpoint, str(source, ": space JSON has no \"", key, "\""));
  size_t b = k + pat.size(), e = b;
  if (e < js.size() && js[e] == '[') {
    e = js.find(']', e);
    if (e == std::string::npos) throw Error(kExitCheckpoint, str(source, ": bad space JSON at ", key));
    return js.substr(b + 1, e - b - 1);
  }
  while (e < js.size() && js[e] != ',' && js[e] != '}') ++e;
  std::string v = js.substr(b, e - b);
  if (v.size() >= 2 && v.front() == '"') v = v.substr(1, v.size() - 2);
  return v;
}

std::vector<std::string> json_list(const std::string& raw) {
  std::vector<std::string> out;
  std::stringstream ss(raw);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    if (tok.size() >= 2 && tok.front() == '"') tok = tok.substr(1, tok.size() - 2);
    if (!tok.empty()) out.push_back(tok);
  }
  return out;
}

}  // namespace

SearchSpace SearchSpace::from_json(const std::string& js, const std::string& source) {
  SearchSpace s;
  try {
    s.preset = json_value(js, "preset", source);
    s.levels = std::stoi(json_value(js, "levels", source));
    s.ops.clear();
    for (const std::string& o : json_list(json_value(js, "ops", source))) s.ops.push_back(parse_op(o, source));
    std::vector<std::string> in = json_list(json_value(js, "input", source));
    if (in.size() != 3) throw Error(kExitCheckpoint, str(source, ": space input must have 3 numbers"));
    s.in_channels = std::stoi(in[0]);
    s.in_height = std::stoi(in[1]);
    s.in_width = std::stoi(in[2]);
    s.classes = std::stoi(json_value(js, "classes", source));
    s.stem = json_value(js, "stem", source) == "imagenet2x" ? StemKind::ImageNet2x : StemKind::Conv3;
    s.stem_channels = std::stoi(json_value(js, "stem_channels", source));
    s.normal_units.clear();
    for (const std::string& u : json_list(json_value(js, "normal_units", source))) s.normal_units.push_back(std::stoi(u));
    s.widths.clear();
    for (const std::string& w : json_list(json_value(js, "widths", source))) s.widths.push_back(std::stoi(w));
    s.share = json_value(js, "share", source) == "true";
  } catch (const std::logic_error&) {
    throw Error(kExitCheckpoint, str(source, ": malformed space JSON"));
  }
  try {
    s.validate();
  } catch (const Error& e) {
    throw Error(kExitCheckpoint, str(source, ": ", e.what()));
  }
  return s;
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
    s.in_channels = 1; s.in_height = 8; s.in_width = 8; s.classes = 3;
    s.stem_channels = 4; s.normal_units = {1, 1}; s.widths = {4, 8};
    return s;
  }
  if (name == "cifar10") {  // ALGORITHM.md §2.1: C = 48, depth 110 → 8 normal units per stage
    s.in_channels = 3; s.in_height = 32; s.in_width = 32; s.classes = 10;
    s.stem_channels = 48; s.normal_units = {8, 8, 8}; s.widths = {48, 96, 192};
    return s;
  }
  if (name == "imagenet") {  // ALGORITHM.md §2.2: C = 28, units [3,3,14,7] → 2,2,13,6 normal
    s.in_channels = 3; s.in_height = 224; s.in_width = 224; s.classes = 1000;
    s.stem = StemKind::ImageNet2x; s.stem_channels = 28;
    s.normal_units = {2, 2, 13, 6}; s.widths = {28, 56, 112, 224};
    return s;
  }
  fail_usage(str("space.preset: unknown preset '", name,
                 "' (expected fmnist, bench_fmnist, cifar10, imagenet or tiny)"));
}

}  // namespace dsonas
