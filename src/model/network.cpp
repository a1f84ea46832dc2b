// network.cpp — parameters, forward and backward of the retrain-time network
// (docs/method.md §2, §6.3, §9); see network.hpp.
//
// Design note.  The execution mirrors Supergraph::Impl op for op, so that a
// Network built from an all-live architecture computes exactly what the
// Supergraph computes at λ = 1 (unit test NetworkEquivalence.*):
//  * the plain sums of one level's multi-input ops are one wsum_forward call with
//    unit weights (every input read once for all ops of the level); a
//    single-input op reads its input tensor directly (no copy);
//  * the live output branches' 1×1 convs are one GEMM: the branch ops' outputs
//    are stacked along C (`hcat`, contiguous in CNHW) and the branch weights
//    concatenated (concat_scaled_columns with unit scales), as in the Supergraph;
//  * drop-path multiplies per-sample scalars in: on an input edge before the sum
//    (scale_samples accumulating into the op input), on a branch by scaling the
//    branch's slice of hcat before the GEMM — the same as scaling after the
//    branch's 1×1 conv, since the conv is linear per sample.  The scales are host
//    floats drawn once per step and reused by the backward pass.
// forward() keeps what backward() needs; backward() frees a block's tensors as soon
// as the block is done.
#include "dsonas/model/network.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/model/weight_decay.hpp"
#include "cells.hpp"

namespace dsonas {

namespace {
/// Streams of the mask hashes (ASCII "droppath", "dropout-key").
constexpr uint64_t kDropPathStream = 0x64726f7070617468ull;
constexpr uint64_t kDropoutKeyStream = 0x64726f706b6579ull;

using cells::act_shape;
using cells::bn_bwd;
using cells::bn_fwd;
using cells::BnRef;
using cells::conv_desc;
using cells::Ctx;
using cells::Init;

std::string fmt_double(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

}  // namespace

// ---------------------------------------------------------------------------
// options

void NetworkOptions::validate() const {
  auto frac = [](double v, const char* field) {
    if (!(v >= 0.0 && v < 1.0)) fail_usage(str(field, ": must be in [0, 1) (got ", v, ")"));
  };
  frac(dropout, "retrain.dropout");
  frac(drop_path, "retrain.drop-path");
  frac(label_smoothing, "retrain.label-smoothing");
  if (!(aux_weight >= 0.0) || !std::isfinite(aux_weight))
    fail_usage(str("retrain.aux-weight: must be a finite number >= 0 (got ", aux_weight, ")"));
  if (aux_mid_channels < 1 || aux_mid_channels > (1 << 16))
    fail_usage(str("retrain.aux-mid-channels: must be in [1, 65536] (got ", aux_mid_channels, ")"));
  if (aux_out_channels < 1 || aux_out_channels > (1 << 16))
    fail_usage(str("retrain.aux-out-channels: must be in [1, 65536] (got ", aux_out_channels, ")"));
}

std::string NetworkOptions::to_string() const {
  return str("dropout=", fmt_double(dropout), ";drop_path=", fmt_double(drop_path), ";aux_head=", aux_head ? 1 : 0,
             ";aux_weight=", fmt_double(aux_weight), ";aux_mid_channels=", aux_mid_channels,
             ";aux_out_channels=", aux_out_channels, ";label_smoothing=", fmt_double(label_smoothing));
}

NetworkOptions NetworkOptions::from_string(const std::string& s, const std::string& source) {
  NetworkOptions o;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ';')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) throw Error(kExitCheckpoint, str(source, ": bad network options entry '", item, "'"));
    const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    try {
      size_t used = 0;
      auto whole = [&](size_t u) {
        if (u != v.size()) throw std::invalid_argument(v);
      };
      if (k == "dropout")
        o.dropout = std::stod(v, &used);
      else if (k == "drop_path")
        o.drop_path = std::stod(v, &used);
      else if (k == "aux_head")
        o.aux_head = std::stoi(v, &used) != 0;
      else if (k == "aux_weight")
        o.aux_weight = std::stod(v, &used);
      else if (k == "aux_mid_channels")
        o.aux_mid_channels = std::stoi(v, &used);
      else if (k == "aux_out_channels")
        o.aux_out_channels = std::stoi(v, &used);
      else if (k == "label_smoothing")
        o.label_smoothing = std::stod(v, &used);
      else
        throw Error(kExitCheckpoint, str(source, ": unknown network option '", k, "'"));
      whole(used);
    } catch (const std::logic_error&) {
      throw Error(kExitCheckpoint, str(source, ": bad value '", v, "' for network option ", k));
    }
  }
  try {
    o.validate();
  } catch (const Error& e) {
    throw Error(kExitCheckpoint, str(source, ": ", e.what()));
  }
  return o;
}

// ---------------------------------------------------------------------------
// structure

namespace {

/// What the retrained network knows of an op beyond its place in the block's op
/// graph: where it came from in the architecture and its drop-path sites.
struct NOpInfo {
  int level = 1, op = 1;
  bool output = false;
  std::vector<std::string> in_sites;  // drop-path site of every input (ops with ≥ 2 inputs)
};

struct NBlock : cells::BlockOutput {  // out_w: one per branch
  int s = 0, u = 0, F = 0, H = 0, W = 0;
  std::string name;
  // the live ops, level-major, each reading one node (direct) or its row of its
  // level's plain sum (one wsum call over the level's multi-input ops); the output
  // ops' outputs stacked (graph.stacked, in branch order)
  cells::OpGraph graph;
  std::vector<NOpInfo> info;                 // per op of graph.ops
  std::vector<std::vector<float>> sum_ones;  // level l ≥ 2 → J×K unit coefficients
  std::vector<std::string> branch_sites;
  double p_final = 0;
  // per step
  std::vector<float> branch_scales;  // G·n, branch-major
  Tensor hs;                         // graph.hcat drop-path scaled
  void release() {
    graph.clear_acts();
    graph.dp = false;
    hs = Tensor();
    clear_output();
    branch_scales.clear();
  }
};

/// The plain sums of each level ≥ 2's multi-input ops: one wsum call per level.
void plan_sums(NBlock& b, int L) {
  cells::OpGraph& g = b.graph;
  g.sums.assign(static_cast<size_t>(L - 1), {});
  b.sum_ones.assign(static_cast<size_t>(L - 1), {});
  for (int l = 2; l <= L; ++l) {
    cells::OpGraph::LevelSum& S = g.sums[static_cast<size_t>(l - 2)];
    S.K = 1 + g.level_begin[static_cast<size_t>(l - 1)];
    for (int p = g.level_begin[static_cast<size_t>(l - 1)]; p < g.level_begin[static_cast<size_t>(l)]; ++p)
      if (g.ops[static_cast<size_t>(p)].direct < 0) S.rows.push_back(p);
    S.live.assign(S.rows.size() * static_cast<size_t>(S.K), 0);
    b.sum_ones[static_cast<size_t>(l - 2)].assign(S.live.size(), 1.f);
    for (size_t j = 0; j < S.rows.size(); ++j)
      for (int node : g.ops[static_cast<size_t>(S.rows[j])].in_nodes) {
        DSO_CHECK(node < S.K, "input node ", node, " of a level-", l, " op");
        S.live[j * static_cast<size_t>(S.K) + static_cast<size_t>(node)] = 1;
      }
  }
}

/// The auxiliary head (§2.3) on the last reduction's output: BN + ReLU → 5×5
/// average pool to 2×2 → 1×1 conv → BN + ReLU → 2×2 conv → BN + ReLU → global
/// pool → FC.
struct NAux {
  bool on = false;
  int F = 0, H = 0, W = 0, stride = 1;
  BnRef bn, bn1, bn2;
  int w1 = -1, w2 = -1, fc_w = -1, fc_b = -1;
  Tensor x, hb, mean, inv;  // input, BN + ReLU of it, the BN's batch mean and inverse std
  Tensor p;                 // 5×5 average pool → 2×2
  cells::ConvBn a1, a2;     // 1×1 conv → BN, 2×2 conv → BN
  Tensor pooled, logits;
  void clear_acts() {
    x = hb = mean = inv = p = pooled = logits = Tensor();
    a1.clear();
    a2.clear();
  }
  void build(cells::ParamBuilder& pb, const SearchSpace& sp, const NetworkOptions& o) {
    if (sp.stages() < 2)
      fail_usage("retrain.aux-head: the space has no reduction block to attach the auxiliary head to");
    on = true;
    F = sp.widths.back();
    H = sp.stage_height(sp.stages() - 1);
    W = sp.stage_width(sp.stages() - 1);
    if (H != W || H < 6)
      fail_usage(str("retrain.aux-head: needs a square feature map of at least 6x6 after the last reduction (got ", H,
                     "x", W, ")"));
    stride = H - 5;  // 5×5 windows at the two corners: a 2×2 output
    bn = pb.add_bn("aux/bn", F);
    w1 = pb.conv_w("aux/conv1/weight", o.aux_mid_channels, F, 1, 4);
    bn1 = pb.add_bn("aux/bn1", o.aux_mid_channels);
    w2 = pb.conv_w("aux/conv2/weight", o.aux_out_channels, o.aux_mid_channels, 2, 1);
    bn2 = pb.add_bn("aux/bn2", o.aux_out_channels);
    fc_w = pb.add("aux/fc/weight", {sp.classes, o.aux_out_channels}, Init::Zero);  // §9: zeros
    fc_b = pb.add("aux/fc/bias", {sp.classes}, Init::Zero);
  }
};

}  // namespace

struct Network::Impl {
  cells::Stem stem;
  std::vector<NBlock> blocks;
  std::vector<cells::Reduction> reds;
  cells::Head head;
  NAux aux;
};

Network::Network(const Architecture& arch, Backend& backend, uint64_t seed, const NetworkOptions& opt)
    : arch_(arch), be_(backend), seed_(seed), opt_(opt), impl_(new Impl) {
  opt_.validate();
  const SearchSpace& sp = arch_.space();
  sp.validate();
  Impl& I = *impl_;
  const int L = sp.levels, N = sp.N();
  const int C = sp.stem_channels;
  if (sp.widths[0] != C) fail_usage(str("space.widths: stage 1 width ", sp.widths[0], " must equal stem-channels ", C));
  DSO_CHECK(static_cast<int>(arch_.blocks().size()) == sp.num_normal_blocks() &&
                static_cast<int>(arch_.reductions().size()) == sp.num_reductions(),
            "architecture does not match its space");

  cells::ParamBuilder pb(be_, params_, param_index_, bn_);
  I.stem.build(pb, sp);

  // drop-path layer indices (docs/method.md §2.4, generalised): a stage holds
  // units + 1 slots (the last one the reduction's), L layers each.
  int slots = 0;
  for (int u : sp.normal_units) slots += u + 1;
  const double depth = static_cast<double>(L) * slots + 2.0;

  size_t bi = 0;
  int slot_base = 0;
  for (int s = 0; s < sp.stages(); ++s) {
    const int F = sp.widths[s], H = sp.stage_height(s), W = sp.stage_width(s);
    const double hw = static_cast<double>(H) * W;
    for (int u = 0; u < sp.normal_units[s]; ++u, ++bi) {
      const ArchBlock& ab = arch_.blocks()[bi];
      DSO_CHECK(ab.channels == F && ab.height == H && ab.width == W, "block ", ab.name, " geometry");
      NBlock b;
      cells::place_block(b, sp, s, u);
      b.first = ab.id_conv;
      b.name = ab.name;
      const double n_layer = static_cast<double>(L) * (slot_base + u);
      b.p_final = opt_.drop_path * (n_layer + 1.0) / (depth + 2.0);
      const std::string pre = ab.name + "/";
      std::vector<int> pos_of(static_cast<size_t>(L * N), -1);
      cells::OpGraph& g = b.graph;
      g.level_begin.assign(static_cast<size_t>(L + 1), 0);
      for (const ArchOp& ao : ab.ops) {
        cells::OpGraph::Slot o;
        NOpInfo info;
        info.level = ao.level;
        info.op = ao.op;
        info.output = ao.output;
        DSO_CHECK(ao.type == sp.ops[static_cast<size_t>(ao.op - 1)], ab.name, " op type");
        const std::string opre = str(pre, "l", ao.level, "/o", ao.op, "/");
        o.op.build(pb, opre, ao.type, F, hw, false);
        for (int i : ao.inputs) {
          int node = 0;
          if (i > 0) {
            DSO_CHECK(pos_of[static_cast<size_t>(i - 1)] >= 0, ab.name, ": input ", arch_.input_name(i), " of l",
                      ao.level, "/o", ao.op, " is not a live op");
            node = 1 + pos_of[static_cast<size_t>(i - 1)];
          }
          o.in_nodes.push_back(node);
          if (ao.inputs.size() > 1) info.in_sites.push_back(str(opre, "in/", arch_.input_name(i)));
        }
        DSO_CHECK(!o.in_nodes.empty() && (ao.level > 1 || o.in_nodes == std::vector<int>{0}), ab.name, " op inputs");
        if (o.in_nodes.size() == 1) o.direct = o.in_nodes[0];  // level 1, or one input: read as it is
        pos_of[static_cast<size_t>(N * (ao.level - 1) + ao.op - 1)] = static_cast<int>(g.ops.size());
        for (int l = ao.level; l <= L; ++l) g.level_begin[static_cast<size_t>(l)] = static_cast<int>(g.ops.size()) + 1;
        g.ops.push_back(std::move(o));
        b.info.push_back(std::move(info));
      }
      for (int l = 1; l <= L; ++l)  // levels without ops start where the previous ended
        g.level_begin[static_cast<size_t>(l)] =
            std::max(g.level_begin[static_cast<size_t>(l)], g.level_begin[static_cast<size_t>(l - 1)]);
      std::vector<int> ks;  // the branches' output indices k
      for (size_t p = 0; p < g.ops.size(); ++p) {
        const NOpInfo& info = b.info[p];
        if (!info.output) continue;
        ks.push_back(N * (info.level - 1) + (info.op - 1));
        g.stacked.push_back(static_cast<int>(p));
        b.branch_sites.push_back(pre + "out/" + cells::out_conv_name(ks.back()));
      }
      DSO_CHECK(g.stacked.empty() == ab.empty, ab.name, " empty flag");
      b.build(pb, pre, F, hw, ks, !ks.empty(), false);
      plan_sums(b, L);
      for (const NOpInfo& info : b.info)
        for (const std::string& site : info.in_sites) sites_.push_back({site, static_cast<int>(bi)});
      for (const std::string& site : b.branch_sites) sites_.push_back({site, static_cast<int>(bi)});
      I.blocks.push_back(std::move(b));
    }
    slot_base += sp.normal_units[s] + 1;
    if (s + 1 < sp.stages()) {
      const ArchReduction& ar = arch_.reductions()[static_cast<size_t>(s)];
      DSO_CHECK(ar.in_channels == F && ar.out_channels == sp.widths[static_cast<size_t>(s) + 1] &&
                    (ar.branch[0] || ar.branch[1]),
                ar.name);
      cells::Reduction r;
      r.build(pb, sp, s, ar.name + "/", ar.branch, false);
      I.reds.push_back(r);
    }
  }
  I.head.build(pb, sp);

  // auxiliary head (§2.3) on the last reduction's output
  size_t aux_first = std::numeric_limits<size_t>::max();  // its parameters come last
  if (opt_.aux_head) {
    aux_first = params_.size();
    pb.count_macs = false;  // training only: not part of the network's cost
    I.aux.build(pb, sp, opt_);
  }
  macs_ = pb.macs();

  // values (§9), gradients (one flat buffer), momenta, counts
  int64_t total = 0;
  for (size_t i = 0; i < params_.size(); ++i) total += shape_numel(pb.shape(i));
  flat_grad_ = be_.alloc({total});
  be_.fill(flat_grad_, 0.f);
  int64_t off = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    const Shape& sh = pb.shape(i);
    const int64_t n = shape_numel(sh);
    (i >= aux_first ? aux_params_count_ : params_count_) += static_cast<double>(n);
    p.value = be_.alloc(sh);
    be_.upload(pb.initial_values(i, seed).data(), p.value);
    p.grad = flat_grad_.view(off, sh);
    off += n;
    p.momentum = be_.alloc(sh);
    be_.fill(p.momentum, 0.f);
  }
}

Network::~Network() = default;

Param& Network::param(const std::string& name) {
  auto it = param_index_.find(name);
  if (it == param_index_.end()) fail_usage(str("no parameter named '", name, "'"));
  return params_[static_cast<size_t>(it->second)];
}

std::vector<float> Network::weight_decays(float wd) const {
  std::vector<float> out;
  out.reserve(params_.size());
  for (const Param& p : params_) out.push_back(weight_decay_for(p.name, Phase::Retrain, wd));
  return out;
}

double Network::drop_path_final(int block) const {
  DSO_CHECK(block >= 0 && block < static_cast<int>(impl_->blocks.size()), "block ", block);
  return impl_->blocks[static_cast<size_t>(block)].p_final;
}

std::vector<float> Network::drop_path_scales(const std::string& site, int block, int64_t step, double progress, int n,
                                             int64_t sample_base) const {
  const double t = std::min(1.0, std::max(0.0, progress));
  const double p = drop_path_final(block) * t;
  std::vector<float> out(static_cast<size_t>(n), 1.f);
  if (!(p > 0.0)) return out;
  const double keep = 1.0 - p;
  const float inv = static_cast<float>(1.0 / keep);
  const uint64_t key = mix64(seed_, hash_name(site.c_str()), static_cast<uint64_t>(step));
  for (int i = 0; i < n; ++i) {
    const uint64_t bits = mix64(key, kDropPathStream, static_cast<uint64_t>(sample_base + i));
    const double u = static_cast<double>(bits >> 40) * (1.0 / 16777216.0);
    out[static_cast<size_t>(i)] = u < keep ? inv : 0.f;
  }
  return out;
}

uint64_t Network::dropout_key(int64_t step) const {
  return mix64(seed_, kDropoutKeyStream ^ hash_name("head/dropout"), static_cast<uint64_t>(step));
}

// ---------------------------------------------------------------------------
// forward / backward

namespace {

struct NetFwd {
  Network& net;
  Network::Impl& I;
  Ctx c;
  int64_t step = 0;
  double progress = 0;
  int64_t sample_base = 0;

  const SearchSpace& sp() const { return net.space(); }

  Tensor conv(const ConvDesc& d, const Tensor& x, int w) { return cells::conv(c, d, x, w); }

  // ---- normal block ------------------------------------------------------------
  /// Drop-path scales of this step (training, p > 0), else graph.dp = false.
  void draw_drop_path(NBlock& b, int bi, int n) {
    cells::OpGraph& g = b.graph;
    g.dp = c.train && b.p_final * std::min(1.0, std::max(0.0, progress)) > 0.0;
    if (!g.dp) return;
    for (size_t p = 0; p < g.ops.size(); ++p) {
      cells::OpGraph::Slot& o = g.ops[p];
      o.in_scales.clear();
      for (const std::string& site : b.info[p].in_sites)
        o.in_scales.push_back(net.drop_path_scales(site, bi, step, progress, n, sample_base));
    }
    b.branch_scales.clear();
    for (const std::string& site : b.branch_sites) {
      const std::vector<float> s = net.drop_path_scales(site, bi, step, progress, n, sample_base);
      b.branch_scales.insert(b.branch_scales.end(), s.begin(), s.end());
    }
  }

  std::vector<const float*> sum_ones(const NBlock& b) const {
    std::vector<const float*> v;
    for (const std::vector<float>& o : b.sum_ones) v.push_back(o.data());
    return v;
  }

  Tensor normal_forward(NBlock& b, int bi, const Tensor& x) {
    const int n = static_cast<int>(x.dim(1));
    draw_drop_path(b, bi, n);
    cells::OpGraph& g = b.graph;
    g.forward(c, b.F, b.H, b.W, x, sum_ones(b));
    const int G = static_cast<int>(g.stacked.size());
    std::vector<const Tensor*> ws;
    for (int w : b.out_w) ws.push_back(&c.P[w].value);
    const std::vector<float> ones(static_cast<size_t>(G), 1.f);
    const Tensor* in = G > 0 ? &g.hcat : nullptr;
    if (G > 0 && g.dp) {  // drop-path on every branch (scaling its input = scaling its 1×1 conv's output)
      b.hs = c.be.alloc(g.hcat.shape());
      c.be.scale_samples(g.hcat, G, b.branch_scales.data(), b.hs);
      in = &b.hs;
    }
    Tensor out = b.forward(c, b.F, g.x, in, ws, ones.data());
    if (!c.train) b.release();
    return out;
  }

  Tensor normal_backward(NBlock& b, const Tensor& dout) {
    const int F = b.F;
    cells::OpGraph& g = b.graph;
    const int G = static_cast<int>(g.stacked.size());
    Tensor dy;
    Tensor dx = b.backward(c, F, g.x, dout, G > 0, true, &dy);
    if (G == 0) {
      b.release();
      return dx;
    }

    // ∂/∂(stacked branch inputs) in one GEMM; the per-op gradients are views of it
    const ConvDesc dcat = conv_desc(G * F, F, 1, 1, 0);
    Tensor dhcat = c.be.alloc(g.hcat.shape());
    c.be.conv_backward_data(dcat, dy, b.wcat, dhcat);
    {
      Tensor M = c.be.alloc(b.wcat.shape());
      c.be.conv_backward_filter(dcat, g.dp ? b.hs : g.hcat, dy, M, 1.f, 0.f);
      std::vector<const Tensor*> ws;
      std::vector<Tensor*> dws;
      for (int w : b.out_w) {
        ws.push_back(&c.P[w].value);
        dws.push_back(&c.P[w].grad);
      }
      const std::vector<float> ones(static_cast<size_t>(G), 1.f);
      c.be.concat_scaled_columns_backward(ws, ones.data(), M, dws,
                                          std::vector<float*>(static_cast<size_t>(G), nullptr));
    }
    if (g.dp) c.be.scale_samples(dhcat, G, b.branch_scales.data(), dhcat);
    dy = Tensor();
    b.wcat = b.hs = Tensor();
    g.backward(c, F, dhcat, dx, sum_ones(b), std::vector<float*>(b.sum_ones.size(), nullptr), true);
    b.release();
    return dx;
  }

  /// The head's dropout this step (§2.4).
  cells::Dropout dropout() const {
    return {static_cast<float>(net.options().dropout), net.dropout_key(step), sample_base};
  }

  PoolDesc aux_pool() const {
    PoolDesc pd;
    pd.kind = PoolKind::Avg;
    pd.k = 5;
    pd.stride = I.aux.stride;
    pd.pad = 0;
    return pd;
  }

  Tensor aux_forward(const Tensor& x) {
    NAux& A = I.aux;
    const NetworkOptions& o = net.options();
    const int64_t n = x.dim(1);
    A.x = x;
    bn_fwd(c, A.bn, x, A.hb, A.mean, A.inv);
    A.p = c.be.alloc(act_shape(A.F, n, 2, 2));
    c.be.pool_forward(aux_pool(), A.hb, A.p);
    A.a1.c = conv(conv_desc(A.F, o.aux_mid_channels, 1, 1, 0), A.p, A.w1);
    bn_fwd(c, A.bn1, A.a1.c, A.a1.r, A.a1.mean, A.a1.inv);
    A.a2.c = conv(conv_desc(o.aux_mid_channels, o.aux_out_channels, 2, 1, 0), A.a1.r, A.w2);
    bn_fwd(c, A.bn2, A.a2.c, A.a2.r, A.a2.mean, A.a2.inv);
    A.pooled = c.be.alloc({n, static_cast<int64_t>(o.aux_out_channels)});
    c.be.global_avg_pool_forward(A.a2.r, A.pooled);
    A.logits = c.be.alloc({n, static_cast<int64_t>(sp().classes)});
    c.be.linear_forward(A.pooled, c.P[A.fc_w].value, c.P[A.fc_b].value, A.logits);
    return A.logits;
  }

  Tensor aux_backward(const Tensor& dlogits) {
    NAux& A = I.aux;
    const NetworkOptions& o = net.options();
    Tensor dpooled = c.be.alloc(A.pooled.shape());
    c.be.linear_backward(A.pooled, c.P[A.fc_w].value, dlogits, &dpooled, &c.P[A.fc_w].grad, &c.P[A.fc_b].grad);
    Tensor dr2 = c.be.alloc(A.a2.r.shape());
    c.be.global_avg_pool_backward(dpooled, dr2);
    Tensor dc2 = c.be.alloc(A.a2.c.shape());
    bn_bwd(c, A.bn2, A.a2.c, A.a2.r, dr2, A.a2.mean, A.a2.inv, dc2);
    const ConvDesc d2 = conv_desc(o.aux_mid_channels, o.aux_out_channels, 2, 1, 0);
    c.be.conv_backward_filter(d2, A.a1.r, dc2, c.P[A.w2].grad, 1.f, 1.f);
    Tensor dr1 = c.be.alloc(A.a1.r.shape());
    c.be.conv_backward_data(d2, dc2, c.P[A.w2].value, dr1);
    Tensor dc1 = c.be.alloc(A.a1.c.shape());
    bn_bwd(c, A.bn1, A.a1.c, A.a1.r, dr1, A.a1.mean, A.a1.inv, dc1);
    const ConvDesc d1 = conv_desc(A.F, o.aux_mid_channels, 1, 1, 0);
    c.be.conv_backward_filter(d1, A.p, dc1, c.P[A.w1].grad, 1.f, 1.f);
    Tensor dp = c.be.alloc(A.p.shape());
    c.be.conv_backward_data(d1, dc1, c.P[A.w1].value, dp);
    Tensor dhb = c.be.alloc(A.hb.shape());
    c.be.pool_backward(aux_pool(), A.hb, A.p, dp, dhb);
    Tensor dx = c.be.alloc(A.x.shape());
    bn_bwd(c, A.bn, A.x, A.hb, dhb, A.mean, A.inv, dx);
    A.clear_acts();
    return dx;
  }

  // ---- whole network -----------------------------------------------------------
  /// Returns the main logits; *aux_logits gets the aux head's (training with aux only).
  Tensor forward(const Tensor& x, Tensor* aux_logits) {
    Tensor t = I.stem.forward(c, sp(), x);
    size_t bi = 0;
    for (int s = 0; s < sp().stages(); ++s) {
      for (int u = 0; u < sp().normal_units[s]; ++u, ++bi) t = normal_forward(I.blocks[bi], static_cast<int>(bi), t);
      if (s + 1 < sp().stages()) {
        t = I.reds[static_cast<size_t>(s)].forward(c, t, nullptr);
        if (aux_logits && s + 2 == sp().stages()) *aux_logits = aux_forward(t);
      }
    }
    const cells::Dropout drop = dropout();
    return I.head.forward(c, t, sp().classes, &drop);
  }

  void backward(const Tensor& dlogits, const Tensor* daux) {
    const cells::Dropout drop = dropout();
    Tensor d = I.head.backward(c, dlogits, &drop);
    size_t bi = I.blocks.size();
    for (int s = sp().stages() - 1; s >= 0; --s) {
      if (s + 1 < sp().stages()) {
        if (daux && s + 2 == sp().stages()) {  // the aux head reads the last reduction's output
          Tensor da = aux_backward(*daux);
          c.be.axpy(1.f, da, d);
        }
        d = I.reds[static_cast<size_t>(s)].backward(c, d, nullptr, nullptr);
      }
      for (int u = 0; u < sp().normal_units[s]; ++u) d = normal_backward(I.blocks[--bi], d);
    }
    I.stem.backward(c, sp(), d);
  }

  void release_all() {
    for (NBlock& b : I.blocks) b.release();
    for (cells::Reduction& r : I.reds) r.clear_acts();
    I.stem.clear_acts();
    I.head.clear_acts();
    I.aux.clear_acts();
  }
};

}  // namespace

namespace {
void check_batch(const SearchSpace& sp, const int32_t* labels, int n) {
  if (n < 1) fail_usage(str("batch of ", n, " images: at least 1 is needed"));
  for (int i = 0; i < n; ++i)
    if (labels[i] < 0 || labels[i] >= sp.classes)
      fail_usage(str("labels[", i, "] = ", labels[i], " is outside [0, ", sp.classes, ")"));
}
}  // namespace

NetStepResult Network::train_step(const float* x_nchw, const int32_t* labels, int n, float grad_scale, int64_t step,
                                  double progress, int64_t sample_base) {
  const SearchSpace& sp = space();
  check_batch(sp, labels, n);
  Tensor x = be_.act_from_nchw(x_nchw, n, sp.in_channels, sp.in_height, sp.in_width);
  be_.fill(flat_grad_, 0.f);
  NetFwd f{*this, *impl_, Ctx{be_, params_, bn_, true}, step, progress, sample_base};
  const bool aux = impl_->aux.on;
  Tensor aux_logits;
  Tensor logits = f.forward(x, aux ? &aux_logits : nullptr);
  NetStepResult r;
  r.n = n;
  const float eps = static_cast<float>(opt_.label_smoothing);
  auto loss = [&](const Tensor& z, float scale, Tensor& dz, double* sum, int64_t* hits) {
    if (eps > 0.f)
      be_.softmax_xent_smoothed(z, labels, eps, scale, dz, sum, hits);
    else
      be_.softmax_xent(z, labels, scale, dz, sum, hits);
  };
  Tensor dlogits = be_.alloc(logits.shape());
  loss(logits, grad_scale, dlogits, &r.loss_sum, &r.correct);
  last_logits_.resize(static_cast<size_t>(logits.numel()));
  be_.download(logits, last_logits_.data());
  Tensor daux;
  if (aux) {
    daux = be_.alloc(aux_logits.shape());
    loss(aux_logits, grad_scale * static_cast<float>(opt_.aux_weight), daux, &r.aux_loss_sum, &r.aux_correct);
    last_aux_logits_.resize(static_cast<size_t>(aux_logits.numel()));
    be_.download(aux_logits, last_aux_logits_.data());
  }
  f.backward(dlogits, aux ? &daux : nullptr);
  return r;
}

NetStepResult Network::eval_batch(const float* x_nchw, const int32_t* labels, int n, std::vector<float>* logits_out) {
  const SearchSpace& sp = space();
  check_batch(sp, labels, n);
  Tensor x = be_.act_from_nchw(x_nchw, n, sp.in_channels, sp.in_height, sp.in_width);
  NetFwd f{*this, *impl_, Ctx{be_, params_, bn_, false}, 0, 0.0, 0};
  NetStepResult r;
  static_cast<StepResult&>(r) = cells::score_batch(be_, f.forward(x, nullptr), labels, n, logits_out);
  f.release_all();
  return r;
}

}  // namespace dsonas
