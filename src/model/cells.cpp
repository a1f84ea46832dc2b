// cells.cpp — see cells.hpp.
#include "cells.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/model/cost.hpp"

namespace dsonas {
namespace cells {

ConvDesc conv_desc(int cin, int cout, int k, int stride, int pad, int groups) {
  return ConvDesc{cin, cout, k, stride, pad, groups};
}

PoolDesc op_pool(OpKind k) {
  PoolDesc pd;  // 3×3, stride 1, pad 1
  pd.kind = k == OpKind::Max3 ? PoolKind::Max : PoolKind::Avg;
  return pd;
}

std::string out_conv_name(int k) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "c%02d", k + 1);
  return buf;
}

// ---------------------------------------------------------------------------
// parameters

int ParamBuilder::add(const std::string& name, const Shape& shape, Init init, bool frozen) {
  Param p;
  p.name = name;
  p.frozen = frozen;
  index_[name] = static_cast<int>(params_.size());
  params_.push_back(std::move(p));
  shapes_.push_back(shape);
  inits_.push_back(init);
  return static_cast<int>(params_.size()) - 1;
}

BnRef ParamBuilder::add_bn(const std::string& prefix, int c, bool gamma_frozen) {
  BnRef b;
  b.gamma = add(prefix + "/gamma", {c}, Init::One, gamma_frozen);
  b.beta = add(prefix + "/beta", {c}, Init::Zero);
  BnStats st;
  st.prefix = prefix;
  st.mean = be_.alloc({c});
  st.var = be_.alloc({c});
  be_.fill(st.mean, 0.f);
  be_.fill(st.var, 1.f);
  b.stats = static_cast<int>(bn_.size());
  bn_.push_back(std::move(st));
  return b;
}

int ParamBuilder::conv_w(const std::string& name, int cout, int cin, int k, double out_hw) {
  if (count_macs) macs_ += cost::conv_macs(cout, cin, k, out_hw);
  return add(name, {cout, cin, k, k}, Init::ConvGauss);
}

std::vector<float> ParamBuilder::initial_values(size_t i, uint64_t seed) const {
  const Shape& sh = shapes_[i];
  std::vector<float> host(static_cast<size_t>(shape_numel(sh)));
  Rng rng(seed, hash_name(params_[i].name.c_str()));
  switch (inits_[i]) {
    case Init::ConvGauss: {  // He: N(0, 2 / fan-out)
      const double fan_out = static_cast<double>(sh[0]) * sh[2] * sh[3];
      const double sigma = std::sqrt(2.0 / fan_out);
      for (auto& v : host) v = static_cast<float>(sigma * rng.normal());
      break;
    }
    case Init::FcGauss:
      for (auto& v : host) v = static_cast<float>(0.01 * rng.normal());
      break;
    case Init::Zero: std::fill(host.begin(), host.end(), 0.f); break;
    case Init::One: std::fill(host.begin(), host.end(), 1.f); break;
  }
  return host;
}

// ---------------------------------------------------------------------------
// execution steps

void bn_fwd(Ctx& c, const BnRef& b, const Tensor& x, Tensor& y, Tensor& sm, Tensor& si) {
  if (!y.defined()) y = c.be.alloc(x.shape());
  if (c.train) {
    sm = c.be.alloc({x.dim(0)});
    si = c.be.alloc({x.dim(0)});
    c.be.bn_forward_train(x, c.P[b.gamma].value, c.P[b.beta].value, c.S[b.stats].mean, c.S[b.stats].var, c.momentum,
                          kBnEps, y, sm, si, true);
  } else {
    c.be.bn_forward_infer(x, c.P[b.gamma].value, c.P[b.beta].value, c.S[b.stats].mean, c.S[b.stats].var, kBnEps, y,
                          true);
  }
}

void bn_bwd(Ctx& c, const BnRef& b, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& sm,
            const Tensor& si, Tensor& dx, float beta_dx) {
  Param& g = c.P[b.gamma];
  Param& bt = c.P[b.beta];
  Tensor* dg = (c.wgrads && !g.frozen) ? &g.grad : nullptr;
  Tensor* db = c.wgrads ? &bt.grad : nullptr;
  c.be.bn_backward(x, y, dy, g.value, sm, si, dx, dg, db, true, beta_dx);
}

Tensor conv(Ctx& c, const ConvDesc& d, const Tensor& x, int w) {
  const int Ho = d.out_size(static_cast<int>(x.dim(2))), Wo = d.out_size(static_cast<int>(x.dim(3)));
  Tensor y = c.be.alloc(act_shape(d.cout, x.dim(1), Ho, Wo));
  c.be.conv_forward(d, x, c.P[w].value, y);
  return y;
}

StepResult score_batch(Backend& be, const Tensor& logits, const int32_t* labels, int n,
                       std::vector<float>* logits_out) {
  Tensor dlogits = be.alloc(logits.shape());
  StepResult r;
  r.n = n;
  be.softmax_xent(logits, labels, 1.f, dlogits, &r.loss_sum, &r.correct);
  if (logits_out) {
    logits_out->resize(static_cast<size_t>(logits.numel()));
    be.download(logits, logits_out->data());
  }
  return r;
}

// ---------------------------------------------------------------------------
// stem

namespace {
ConvDesc stem_conv(const SearchSpace& sp, int i) {
  if (sp.stem == StemKind::Conv3) return conv_desc(sp.in_channels, sp.stem_channels, 3, 1, 1);
  return i == 0 ? conv_desc(sp.in_channels, sp.stem_channels / 2, 3, 2, 1)
                : conv_desc(sp.stem_channels / 2, sp.stem_channels, 3, 2, 1);
}
}  // namespace

void Stem::build(ParamBuilder& pb, const SearchSpace& sp) {
  const int C = sp.stem_channels;
  const double hw0 = static_cast<double>(sp.stage_height(0)) * sp.stage_width(0);
  if (sp.stem == StemKind::Conv3) {
    w1 = pb.conv_w("stem/conv/weight", C, sp.in_channels, 3, hw0);
    bn1 = pb.add_bn("stem/bn", C);
  } else {
    const ConvDesc d1 = stem_conv(sp, 0);
    const double hw1 = static_cast<double>(d1.out_size(sp.in_height)) * d1.out_size(sp.in_width);
    w1 = pb.conv_w("stem/conv1/weight", C / 2, sp.in_channels, 3, hw1);
    bn1 = pb.add_bn("stem/bn1", C / 2);
    w2 = pb.conv_w("stem/conv2/weight", C, C / 2, 3, hw0);
    bn2 = pb.add_bn("stem/bn2", C);
  }
}

Tensor Stem::forward(Ctx& c, const SearchSpace& sp, const Tensor& in) {
  x = in;
  a1.c = conv(c, stem_conv(sp, 0), in, w1);
  bn_fwd(c, bn1, a1.c, a1.r, a1.mean, a1.inv);
  if (sp.stem == StemKind::Conv3) return a1.r;
  a2.c = conv(c, stem_conv(sp, 1), a1.r, w2);
  bn_fwd(c, bn2, a2.c, a2.r, a2.mean, a2.inv);
  return a2.r;
}

void Stem::backward(Ctx& c, const SearchSpace& sp, const Tensor& dout) {
  const Tensor* d = &dout;
  Tensor dr1;
  if (sp.stem != StemKind::Conv3) {
    const ConvDesc d2 = stem_conv(sp, 1);
    Tensor dc2 = c.be.alloc(a2.c.shape());
    bn_bwd(c, bn2, a2.c, a2.r, dout, a2.mean, a2.inv, dc2);
    if (c.wgrads) c.be.conv_backward_filter(d2, a1.r, dc2, c.P[w2].grad, 1.f, 1.f);
    dr1 = c.be.alloc(a1.r.shape());
    c.be.conv_backward_data(d2, dc2, c.P[w2].value, dr1);
    d = &dr1;
  }
  Tensor dc1 = c.be.alloc(a1.c.shape());
  bn_bwd(c, bn1, a1.c, a1.r, *d, a1.mean, a1.inv, dc1);
  if (c.wgrads) c.be.conv_backward_filter(stem_conv(sp, 0), x, dc1, c.P[w1].grad, 1.f, 1.f);
  clear_acts();
}

// ---------------------------------------------------------------------------
// op

void Op::build(ParamBuilder& pb, const std::string& prefix, OpKind k, int F, double hw, bool gamma_frozen) {
  kind = k;
  if (op_is_conv(kind)) {
    const int kk = op_kernel(kind);
    dw = pb.conv_w(prefix + "dw/weight", F, 1, kk, hw);
    pw = pb.conv_w(prefix + "pw/weight", F, F, 1, hw);
  }
  bn = pb.add_bn(prefix + "bn", F, gamma_frozen);
}

void Op::forward(Ctx& c, int F, const Tensor& a, OpActs& A) const {
  if (op_is_conv(kind)) {
    const int k = op_kernel(kind);
    A.t1 = conv(c, conv_desc(F, F, k, 1, k / 2, F), a, dw);
    A.t2 = conv(c, conv_desc(F, F, 1, 1, 0), A.t1, pw);
  } else {
    A.t2 = c.be.alloc(a.shape());
    c.be.pool_forward(op_pool(kind), a, A.t2);
  }
  bn_fwd(c, bn, A.t2, A.h, A.mean, A.inv);
}

void Op::backward(Ctx& c, int F, const Tensor& a, OpActs& A, Tensor& dh, Tensor& target, float beta) const {
  Tensor dt2 = c.be.alloc(A.t2.shape());
  bn_bwd(c, bn, A.t2, A.h, dh, A.mean, A.inv, dt2);
  dh = Tensor();
  if (op_is_conv(kind)) {
    const int k = op_kernel(kind);
    const ConvDesc d1 = conv_desc(F, F, 1, 1, 0), ddw = conv_desc(F, F, k, 1, k / 2, F);
    Tensor dt1 = c.be.alloc(A.t1.shape());
    c.be.conv_backward_data(d1, dt2, c.P[pw].value, dt1);
    if (c.wgrads) c.be.conv_backward_filter(d1, A.t1, dt2, c.P[pw].grad, 1.f, 1.f);
    dt2 = Tensor();
    c.be.conv_backward_data(ddw, dt1, c.P[dw].value, target, 1.f, beta);
    if (c.wgrads) c.be.conv_backward_filter(ddw, a, dt1, c.P[dw].grad, 1.f, 1.f);
  } else {
    c.be.pool_backward(op_pool(kind), a, A.t2, dt2, target, beta);
  }
  A.t1 = A.t2 = A.mean = A.inv = Tensor();
}

// ---------------------------------------------------------------------------
// block output

void BlockOutput::build(ParamBuilder& pb, const std::string& prefix, int F, double hw, const std::vector<int>& ks,
                        bool with_bn, bool id_gamma_frozen) {
  for (int k : ks) out_w.push_back(pb.conv_w(prefix + "out/" + out_conv_name(k) + "/weight", F, F, 1, hw));
  if (with_bn) out_bn = pb.add_bn(prefix + "out/bn", F);
  if (first) {
    id_w = pb.conv_w(prefix + "id/conv/weight", F, F, 1, hw);
    id_bn = pb.add_bn(prefix + "id/bn", F, id_gamma_frozen);
  }
}

Tensor BlockOutput::forward(Ctx& c, int F, const Tensor& x, const Tensor* stacked, const std::vector<const Tensor*>& ws,
                            const float* scale) {
  if (stacked) {
    const int cols = static_cast<int>(ws.size());
    wcat = c.be.alloc({F, static_cast<int64_t>(cols) * F, 1, 1});
    c.be.concat_scaled_columns(ws, scale, wcat);
    y.c = c.be.alloc(act_shape(F, x.dim(1), x.dim(2), x.dim(3)));
    c.be.conv_forward(conv_desc(cols * F, F, 1, 1, 0), *stacked, wcat, y.c);
    bn_fwd(c, out_bn, y.c, y.r, y.mean, y.inv);
  }
  if (first) {
    sc.c = conv(c, conv_desc(F, F, 1, 1, 0), x, id_w);
    bn_fwd(c, id_bn, sc.c, sc.r, sc.mean, sc.inv);
    shortcut = sc.r;
  } else {
    shortcut = x;
  }
  if (!stacked) return shortcut;
  Tensor out = c.be.alloc(shortcut.shape());
  c.be.add(y.r, shortcut, out);
  return out;
}

Tensor BlockOutput::backward(Ctx& c, int F, const Tensor& x, const Tensor& dout, bool branches, bool need_dx,
                             Tensor* dy) {
  // Identity shortcut: dx starts as dout itself (a temporary of the caller's;
  // the output BN below reads it before anything accumulates into dx).
  Tensor dx = !need_dx ? Tensor() : first ? c.be.alloc(x.shape()) : dout;
  if (first && need_dx) {
    const ConvDesc d1 = conv_desc(F, F, 1, 1, 0);
    Tensor dtsc = c.be.alloc(sc.c.shape());
    bn_bwd(c, id_bn, sc.c, sc.r, dout, sc.mean, sc.inv, dtsc);
    c.be.conv_backward_data(d1, dtsc, c.P[id_w].value, dx);
    if (c.wgrads) c.be.conv_backward_filter(d1, x, dtsc, c.P[id_w].grad, 1.f, 1.f);
  }
  if (branches) {
    *dy = c.be.alloc(y.c.shape());
    bn_bwd(c, out_bn, y.c, y.r, dout, y.mean, y.inv, *dy);
    y.c = y.r = Tensor();
  }
  return dx;
}

// ---------------------------------------------------------------------------
// reduction

namespace {
void reduction_convs(const Reduction& r, ConvDesc d[2]) {
  d[0] = conv_desc(r.Fin, r.Fout, 1, 2, 0);
  d[1] = conv_desc(r.Fin, r.Fout, 3, 2, 1);
}
}  // namespace

void Reduction::build(ParamBuilder& pb, const SearchSpace& sp, int stage, const std::string& prefix,
                      const bool branch[2], bool gamma_frozen) {
  s = stage;
  Fin = sp.widths[static_cast<size_t>(stage)];
  Fout = sp.widths[static_cast<size_t>(stage) + 1];
  H = sp.stage_height(stage);
  W = sp.stage_width(stage);
  const double ohw = static_cast<double>(sp.stage_height(stage + 1)) * sp.stage_width(stage + 1);
  for (int i = 0; i < 2; ++i) {
    live[i] = branch[i] ? 1 : 0;
    if (!live[i]) continue;
    w[i] = pb.conv_w(str(prefix, "b", i, "/conv/weight"), Fout, Fin, i == 0 ? 1 : 3, ohw);
    bn[i] = pb.add_bn(str(prefix, "b", i, "/bn"), Fout, gamma_frozen);
  }
}

Tensor Reduction::forward(Ctx& c, const Tensor& in, const float* lam) {
  x = in;
  ConvDesc d[2];
  reduction_convs(*this, d);
  for (int i = 0; i < 2; ++i) {
    if (!live[i]) continue;
    br[i].c = conv(c, d[i], in, w[i]);
    bn_fwd(c, bn[i], br[i].c, br[i].r, br[i].mean, br[i].inv);
  }
  Tensor out;
  if (lam) {  // λ-weighted sum
    std::vector<const Tensor*> xs(2, nullptr);
    for (int i = 0; i < 2; ++i)
      if (live[i]) xs[static_cast<size_t>(i)] = &br[i].r;
    out = c.be.alloc(act_shape(Fout, in.dim(1), d[0].out_size(H), d[0].out_size(W)));
    std::vector<Tensor*> ys = {&out};
    c.be.wsum_forward(1, 2, lam, live, xs, ys);
  } else if (live[0] && live[1]) {  // plain sum
    out = c.be.alloc(br[0].r.shape());
    c.be.add(br[0].r, br[1].r, out);
  } else {
    out = live[0] ? br[0].r : br[1].r;
  }
  if (!c.train) clear_acts();
  return out;
}

Tensor Reduction::backward(Ctx& c, const Tensor& dout, const float* lam, float* dlam) {
  ConvDesc d[2];
  reduction_convs(*this, d);
  Tensor dr[2];
  if (lam) {
    std::vector<const Tensor*> xs(2, nullptr);
    std::vector<Tensor*> dxs(2, nullptr);
    for (int i = 0; i < 2; ++i)
      if (live[i]) {
        dr[i] = c.be.alloc(br[i].r.shape());
        c.be.fill(dr[i], 0.f);
        xs[static_cast<size_t>(i)] = &br[i].r;
        dxs[static_cast<size_t>(i)] = &dr[i];
      }
    std::vector<const Tensor*> dys = {&dout};
    c.be.wsum_backward(1, 2, lam, live, xs, dys, dxs, dlam);
  }
  Tensor dx = c.be.alloc(x.shape());
  bool first = true;
  for (int i = 0; i < 2; ++i) {
    if (!live[i]) continue;
    Tensor dc = c.be.alloc(br[i].c.shape());
    bn_bwd(c, bn[i], br[i].c, br[i].r, lam ? dr[i] : dout, br[i].mean, br[i].inv, dc);
    c.be.conv_backward_data(d[i], dc, c.P[w[i]].value, dx, 1.f, first ? 0.f : 1.f);
    if (c.wgrads) c.be.conv_backward_filter(d[i], x, dc, c.P[w[i]].grad, 1.f, 1.f);
    first = false;
  }
  if (first) c.be.fill(dx, 0.f);
  clear_acts();
  return dx;
}

// ---------------------------------------------------------------------------
// head

void Head::build(ParamBuilder& pb, const SearchSpace& sp) {
  const int F = sp.widths.back();
  bn = pb.add_bn("head/bn", F);
  fc_w = pb.add("head/fc/weight", {sp.classes, F}, Init::FcGauss);
  fc_b = pb.add("head/fc/bias", {sp.classes}, Init::Zero);
  pb.add_macs(cost::head_macs(F, sp.classes));
}

Tensor Head::forward(Ctx& c, const Tensor& in, int classes, const Dropout* drop) {
  x = in;
  bn_fwd(c, bn, in, hb, mean, inv);
  const int64_t n = in.dim(1), C = in.dim(0);
  pooled = c.be.alloc({n, C});
  c.be.global_avg_pool_forward(hb, pooled);
  const Tensor* feat = &pooled;
  if (c.train && drop && drop->rate > 0) {
    dropped = c.be.alloc({n, C});
    c.be.dropout_apply(pooled, drop->rate, drop->key, drop->sample_base * C, dropped);
    feat = &dropped;
  }
  logits = c.be.alloc({n, static_cast<int64_t>(classes)});
  c.be.linear_forward(*feat, c.P[fc_w].value, c.P[fc_b].value, logits);
  return logits;
}

Tensor Head::backward(Ctx& c, const Tensor& dlogits, const Dropout* drop) {
  const bool dropping = dropped.defined();
  Tensor dfeat = c.be.alloc(pooled.shape());
  c.be.linear_backward(dropping ? dropped : pooled, c.P[fc_w].value, dlogits, &dfeat,
                       c.wgrads ? &c.P[fc_w].grad : nullptr, c.wgrads ? &c.P[fc_b].grad : nullptr);
  if (dropping) c.be.dropout_apply(dfeat, drop->rate, drop->key, drop->sample_base * pooled.dim(1), dfeat);
  Tensor dhb = c.be.alloc(hb.shape());
  c.be.global_avg_pool_backward(dfeat, dhb);
  Tensor dx = c.be.alloc(x.shape());
  bn_bwd(c, bn, x, hb, dhb, mean, inv, dx);
  clear_acts();
  return dx;
}

// ---------------------------------------------------------------------------
// the ops of a normal block

const Tensor* OpGraph::node(int i) const {
  if (i == 0) return &x;
  const Slot& o = ops[static_cast<size_t>(i - 1)];
  return o.alive ? &o.acts.h : nullptr;
}

void OpGraph::forward(Ctx& c, int F, int H, int W, const Tensor& xin, const std::vector<const float*>& coeff) {
  const int L = levels();
  const int64_t n = xin.dim(1), plane = xin.numel();
  x = xin;
  if (!stacked.empty()) {
    hcat = c.be.alloc(act_shape(static_cast<int64_t>(stacked.size()) * F, n, H, W));
    for (size_t g = 0; g < stacked.size(); ++g)
      ops[static_cast<size_t>(stacked[g])].acts.h = hcat.view(static_cast<int64_t>(g) * plane, xin.shape());
  }
  for (int l = 1; l <= L; ++l) {
    const int p0 = level_begin[static_cast<size_t>(l - 1)], p1 = level_begin[static_cast<size_t>(l)];
    if (p0 == p1) continue;
    if (l >= 2 && !sums[static_cast<size_t>(l - 2)].rows.empty()) {  // the level's sums
      const LevelSum& S = sums[static_cast<size_t>(l - 2)];
      if (!dp) {
        std::vector<Tensor*> ys(S.rows.size(), nullptr);
        for (size_t j = 0; j < S.rows.size(); ++j) {
          if (S.rows[j] < 0 || !ops[static_cast<size_t>(S.rows[j])].alive) continue;
          Slot& o = ops[static_cast<size_t>(S.rows[j])];
          o.acts.a = c.be.alloc(xin.shape());
          ys[j] = &o.acts.a;
        }
        std::vector<const Tensor*> xs(static_cast<size_t>(S.K));
        for (int k = 0; k < S.K; ++k) xs[static_cast<size_t>(k)] = node(k);
        c.be.wsum_forward(static_cast<int>(S.rows.size()), S.K, coeff[static_cast<size_t>(l - 2)], S.live.data(), xs,
                          ys);
      } else {  // drop-path on every input edge, before the sum
        for (int p : S.rows) {
          Slot& o = ops[static_cast<size_t>(p)];
          o.acts.a = c.be.alloc(xin.shape());
          for (size_t k = 0; k < o.in_nodes.size(); ++k)
            c.be.scale_samples(*node(o.in_nodes[k]), 1, o.in_scales[k].data(), o.acts.a, k == 0 ? 0.f : 1.f);
        }
      }
    }
    for (int p = p0; p < p1; ++p) {
      Slot& o = ops[static_cast<size_t>(p)];
      if (!o.alive) continue;
      if (o.direct >= 0) o.acts.a = *node(o.direct);  // no copy
      o.op.forward(c, F, o.acts.a, o.acts);
    }
    if (!c.train)  // the level's inputs and saved tensors are no longer needed
      for (int p = p0; p < p1; ++p) {
        OpActs& A = ops[static_cast<size_t>(p)].acts;
        A.a = A.t1 = A.t2 = A.mean = A.inv = Tensor();
      }
  }
}

void OpGraph::backward(Ctx& c, int F, const Tensor& dhcat, Tensor& dx, const std::vector<const float*>& coeff,
                       const std::vector<float*>& dcoeff, bool need_dx) {
  const int L = levels();
  const int64_t plane = x.numel();
  std::vector<Tensor> dnodes(1 + ops.size());
  dnodes[0] = dx;
  for (size_t g = 0; g < stacked.size(); ++g)
    dnodes[static_cast<size_t>(1 + stacked[g])] = dhcat.view(static_cast<int64_t>(g) * plane, x.shape());
  for (size_t p = 0; p < ops.size(); ++p)
    if (ops[p].alive && !dnodes[1 + p].defined()) {  // a node only: gradients arrive from its consumers
      dnodes[1 + p] = c.be.alloc(x.shape());
      c.be.fill(dnodes[1 + p], 0.f);
    }
  for (int l = L; l >= 1; --l) {
    if (l == 1 && !need_dx) break;
    const int p0 = level_begin[static_cast<size_t>(l - 1)], p1 = level_begin[static_cast<size_t>(l)];
    std::vector<Tensor> das(static_cast<size_t>(p1 - p0));
    for (int p = p0; p < p1; ++p) {
      Slot& o = ops[static_cast<size_t>(p)];
      if (!o.alive) continue;
      Tensor& da = das[static_cast<size_t>(p - p0)];
      // an op reading one node accumulates into that node's gradient; a sum row
      // into its own, which the level's wsum_backward spreads
      if (o.direct < 0) da = c.be.alloc(o.acts.a.shape());
      o.op.backward(c, F, o.acts.a, o.acts, dnodes[static_cast<size_t>(1 + p)],
                    o.direct >= 0 ? dnodes[static_cast<size_t>(o.direct)] : da, o.direct >= 0 ? 1.f : 0.f);
      if (o.direct < 0 && dp)  // through the drop-path scales of every input edge
        for (size_t k = 0; k < o.in_nodes.size(); ++k)
          c.be.scale_samples(da, 1, o.in_scales[k].data(), dnodes[static_cast<size_t>(o.in_nodes[k])], 1.f);
      o.acts.h = Tensor();
    }
    if (l >= 2 && !dp && !sums[static_cast<size_t>(l - 2)].rows.empty()) {
      const LevelSum& S = sums[static_cast<size_t>(l - 2)];
      std::vector<const Tensor*> xs(static_cast<size_t>(S.K));
      std::vector<Tensor*> dxs(static_cast<size_t>(S.K), nullptr);
      for (int k = 0; k < S.K; ++k) {
        xs[static_cast<size_t>(k)] = node(k);
        const bool level1 = k == 0 || k - 1 < level_begin[1];  // x or a level-1 op: skipped without need_dx
        if (dnodes[static_cast<size_t>(k)].defined() && (need_dx || !level1))
          dxs[static_cast<size_t>(k)] = &dnodes[static_cast<size_t>(k)];
      }
      std::vector<const Tensor*> dys(S.rows.size(), nullptr);
      for (size_t j = 0; j < S.rows.size(); ++j)
        if (S.rows[j] >= 0 && das[static_cast<size_t>(S.rows[j] - p0)].defined())
          dys[j] = &das[static_cast<size_t>(S.rows[j] - p0)];
      c.be.wsum_backward(static_cast<int>(S.rows.size()), S.K, coeff[static_cast<size_t>(l - 2)], S.live.data(), xs,
                         dys, dxs, dcoeff[static_cast<size_t>(l - 2)]);
    }
    for (int p = p0; p < p1; ++p) ops[static_cast<size_t>(p)].acts.a = Tensor();
  }
}

void OpGraph::clear_acts() {
  for (Slot& o : ops) {
    o.acts = OpActs();
    o.in_scales.clear();
  }
  x = hcat = Tensor();
}

}  // namespace cells
}  // namespace dsonas
