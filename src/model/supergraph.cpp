// supergraph.cpp — parameters, execution plan, forward and backward of the
// DSO-NAS search network (docs/method.md §1–2, §9).
//
// Memory: forward() keeps, per live op, its input sum a (levels ≥ 2), the
// depthwise output t1 (sep ops), the pre-BN output t2 and the node h; per block
// the pre-BN output sum y and the block output.  backward() frees a block's
// tensors as soon as the block is done, so they return to the caching
// allocator for the next block's temporaries.
#include "dsonas/model/supergraph.hpp"

#include <algorithm>
#include <cmath>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"

namespace dsonas {

namespace {
constexpr float kBnEps = 2e-5f;
constexpr float kBnMomentum = 0.9f;

enum class Init { ConvGauss, FcGauss, Zero, One };

Shape act_shape(int c, int n, int h, int w) { return {c, n, h, w}; }
struct BnIdx {
  int gamma = -1, beta = -1, stats = -1;
};

struct OpDef {
  OpKind kind = OpKind::Sep3;
  int dw = -1, pw = -1;
  BnIdx bn;
};

struct OpActs {
  Tensor a, t1, t2, h, smean, sinv;
};

struct NormalBlock {
  int s = 0, u = 0, F = 0, H = 0, W = 0;
  int first_param = 0;    // index of the block's first parameter
  int64_t grad_from = 0;  // its offset in the flat gradient buffer
  bool first = false;
  int lam_off = 0;
  std::vector<OpDef> ops;  // (l-1)*N + (j-1)
  std::vector<int> out_w;  // N*L
  BnIdx out_bn;
  int id_w = -1;
  BnIdx id_bn;
  // plan
  std::vector<uint8_t> alive;                    // L*N
  std::vector<std::vector<uint8_t>> level_live;  // [l-1] → N*K_l (l ≥ 2)
  std::vector<int> branches;                     // live output branches k
  std::vector<int> alive_list;                   // alive ops in index order (their h are stacked)
  // stored activations; hcat stacks the alive ops' outputs along C so that the
  // block output's λ-scaled 1×1 convs are one GEMM with wcat (docs/method.md §1.3)
  Tensor x, hcat, wcat, y, r, ymean, yinv, tsc, sc, scmean, scinv, out;
  std::vector<OpActs> acts;
};

struct ReductionBlock {
  int s = 0, Fin = 0, H = 0, W = 0;
  int first_param = 0;
  int64_t grad_from = 0;
  int w[2] = {-1, -1};
  BnIdx bn[2];
  int lam_off = 0;
  uint8_t live[2] = {1, 1};
  Tensor x, c[2], r[2], m[2], iv[2];
  void clear_acts() {
    x = Tensor();
    for (int i = 0; i < 2; ++i) c[i] = r[i] = m[i] = iv[i] = Tensor();
  }
};

struct StemDef {
  int w1 = -1, w2 = -1;
  BnIdx bn1, bn2;
  Tensor x, c1, r1, m1, i1, c2, r2, m2, i2;
  void clear_acts() { x = c1 = r1 = m1 = i1 = c2 = r2 = m2 = i2 = Tensor(); }
};

struct HeadDef {
  int first_param = 0;
  int64_t grad_from = 0;
  BnIdx bn;
  int fc_w = -1, fc_b = -1;
  Tensor x, hb, m, iv, pooled, logits;
  void clear_acts() { x = hb = m = iv = pooled = logits = Tensor(); }
};

}  // namespace

struct Supergraph::Impl {
  StemDef stem;
  std::vector<NormalBlock> blocks;
  std::vector<ReductionBlock> reds;
  HeadDef head;
  std::vector<float> ones;  // λ when fixed
  std::vector<Init> inits;
};

// ---------------------------------------------------------------------------
// construction

Supergraph::Supergraph(const SearchSpace& space, Backend& backend, uint64_t seed)
    : space_(space), be_(backend), impl_(new Impl) {
  space_.validate();
  Impl& I = *impl_;
  const int L = space_.levels, N = space_.N();
  const BlockLayout lay = space_.block_layout();

  std::vector<Shape> shapes;
  auto add = [&](const std::string& name, const Shape& shape, Init init, bool frozen) {
    Param p;
    p.name = name;
    p.frozen = frozen;
    param_index_[name] = static_cast<int>(params_.size());
    params_.push_back(std::move(p));
    shapes.push_back(shape);
    I.inits.push_back(init);
    return static_cast<int>(params_.size()) - 1;
  };
  auto add_bn = [&](const std::string& prefix, int c, bool gamma_fixed) {
    BnIdx b;
    b.gamma = add(prefix + "/gamma", {c}, Init::One, gamma_fixed);
    b.beta = add(prefix + "/beta", {c}, Init::Zero, false);
    BnStats st;
    st.prefix = prefix;
    st.mean = be_.alloc({c});
    st.var = be_.alloc({c});
    be_.fill(st.mean, 0.f);
    be_.fill(st.var, 1.f);
    b.stats = static_cast<int>(bn_.size());
    bn_.push_back(std::move(st));
    return b;
  };
  auto conv_w = [&](const std::string& name, int cout, int cin, int k) {
    return add(name, {cout, cin, k, k}, Init::ConvGauss, false);
  };

  // stem
  const int C = space_.stem_channels;
  if (space_.stem == StemKind::Conv3) {
    I.stem.w1 = conv_w("stem/conv/weight", C, space_.in_channels, 3);
    I.stem.bn1 = add_bn("stem/bn", C, false);
  } else {
    I.stem.w1 = conv_w("stem/conv1/weight", C / 2, space_.in_channels, 3);
    I.stem.bn1 = add_bn("stem/bn1", C / 2, false);
    I.stem.w2 = conv_w("stem/conv2/weight", C, C / 2, 3);
    I.stem.bn2 = add_bn("stem/bn2", C, false);
  }
  if (space_.widths[0] != C)
    fail_usage(str("space.widths: stage 1 width ", space_.widths[0], " must equal stem-channels ", C));

  // λ groups
  lam_.assign(static_cast<size_t>(space_.total_lambda()), 1.f);
  mask_.assign(lam_.size(), 1);
  I.ones.assign(lam_.size(), 1.f);
  auto add_block_groups = [&](const std::string& prefix, int off) {
    for (int l = 2; l <= L; ++l)
      for (int j = 1; j <= N; ++j)
        groups_.push_back({str(prefix, "lambda/l", l, "/o", j), off + lay.row_offset(l, j), lay.in_len(l)});
    groups_.push_back({prefix + "lambda/after", off + lay.after_offset(), N * L});
  };
  if (space_.share) add_block_groups("shared/", 0);

  for (int s = 0; s < space_.stages(); ++s) {
    const int F = space_.widths[s], H = space_.stage_height(s), W = space_.stage_width(s);
    for (int u = 0; u < space_.normal_units[s]; ++u) {
      NormalBlock b;
      b.s = s;
      b.u = u;
      b.F = F;
      b.H = H;
      b.W = W;
      b.first_param = static_cast<int>(params_.size());
      b.first = (u == 0);
      b.lam_off = space_.block_lambda_offset(s, u);
      const std::string pre = str("s", s + 1, "/u", u + 1, "/");
      if (!space_.share) add_block_groups(pre, b.lam_off);
      b.ops.resize(static_cast<size_t>(L * N));
      for (int l = 1; l <= L; ++l)
        for (int j = 1; j <= N; ++j) {
          OpDef& op = b.ops[(l - 1) * N + (j - 1)];
          op.kind = space_.ops[j - 1];
          const std::string opre = str(pre, "l", l, "/o", j, "/");
          if (op_is_conv(op.kind)) {
            const int k = op_kernel(op.kind);
            op.dw = conv_w(opre + "dw/weight", F, 1, k);
            op.pw = conv_w(opre + "pw/weight", F, F, 1);
          }
          op.bn = add_bn(opre + "bn", F, true);
        }
      for (int k = 0; k < N * L; ++k) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "c%02d", k + 1);
        b.out_w.push_back(conv_w(pre + "out/" + buf + "/weight", F, F, 1));
      }
      b.out_bn = add_bn(pre + "out/bn", F, false);
      if (b.first) {
        b.id_w = conv_w(pre + "id/conv/weight", F, F, 1);
        b.id_bn = add_bn(pre + "id/bn", F, true);
      }
      b.acts.resize(static_cast<size_t>(L * N));
      I.blocks.push_back(std::move(b));
    }
    if (s + 1 < space_.stages()) {
      ReductionBlock r;
      r.s = s;
      r.Fin = F;
      r.H = H;
      r.W = W;
      r.first_param = static_cast<int>(params_.size());
      const int Fout = space_.widths[s + 1];
      const std::string pre = str("s", s + 1, "/red/");
      r.w[0] = conv_w(pre + "b0/conv/weight", Fout, F, 1);
      r.bn[0] = add_bn(pre + "b0/bn", Fout, true);
      r.w[1] = conv_w(pre + "b1/conv/weight", Fout, F, 3);
      r.bn[1] = add_bn(pre + "b1/bn", Fout, true);
      r.lam_off = space_.reduction_lambda_offset(s);
      groups_.push_back({pre + "lambda", r.lam_off, 2});
      I.reds.push_back(std::move(r));
    }
  }
  const int Flast = space_.widths.back();
  I.head.first_param = static_cast<int>(params_.size());
  I.head.bn = add_bn("head/bn", Flast, false);
  I.head.fc_w = add("head/fc/weight", {space_.classes, Flast}, Init::FcGauss, false);
  I.head.fc_b = add("head/fc/bias", {space_.classes}, Init::Zero, false);

  // values (docs/method.md §9), gradients (one flat buffer), momenta
  int64_t total = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!params_[i].frozen) total += shape_numel(shapes[i]);
  num_weights_ = total;
  flat_grad_ = be_.alloc({total + static_cast<int64_t>(lam_.size())});
  be_.fill(flat_grad_, 0.f);
  lambda_grad_ = flat_grad_.view(total, {static_cast<int64_t>(lam_.size())});
  int64_t off = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    const Shape& sh = shapes[i];
    const int64_t n = shape_numel(sh);
    std::vector<float> host(static_cast<size_t>(n));
    Rng rng(seed, hash_name(p.name.c_str()));
    switch (I.inits[i]) {
      case Init::ConvGauss: {
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
    p.value = be_.alloc(sh);
    be_.upload(host.data(), p.value);
    if (!p.frozen) {
      p.grad = flat_grad_.view(off, sh);
      off += n;
      p.momentum = be_.alloc(sh);
      be_.fill(p.momentum, 0.f);
    }
  }
  // where each piece's gradients start in the flat buffer (params are created
  // in forward order, so after a piece's backward [grad_from, weights) is final)
  auto grad_from = [&](int first) {
    for (size_t i = static_cast<size_t>(first); i < params_.size(); ++i)
      if (!params_[i].frozen) return static_cast<int64_t>(params_[i].grad.data() - flat_grad_.data());
    return num_weights_;
  };
  for (NormalBlock& b : I.blocks) b.grad_from = grad_from(b.first_param);
  for (ReductionBlock& r : I.reds) r.grad_from = grad_from(r.first_param);
  I.head.grad_from = grad_from(I.head.first_param);
  rebuild_plan();
}

Supergraph::~Supergraph() = default;

Param& Supergraph::param(const std::string& name) {
  auto it = param_index_.find(name);
  if (it == param_index_.end()) fail_usage(str("no parameter named '", name, "'"));
  return params_[static_cast<size_t>(it->second)];
}

// ---------------------------------------------------------------------------
// execution plan

void Supergraph::rebuild_plan() {
  Impl& I = *impl_;
  const int L = space_.levels, N = space_.N();
  const BlockLayout lay = space_.block_layout();
  std::vector<uint8_t> all(mask_.size(), 1);
  const uint8_t* mk = lambda_fixed_ ? all.data() : mask_.data();
  for (NormalBlock& b : I.blocks) {
    const uint8_t* m = mk + b.lam_off;
    auto live_in = [&](int l, int j, int i) { return m[lay.row_offset(l, j) + i] != 0; };
    std::vector<uint8_t> reach(static_cast<size_t>(L * N), 0), alive(static_cast<size_t>(L * N), 0);
    for (int l = 1; l <= L; ++l)
      for (int j = 1; j <= N; ++j) {
        bool r = (l == 1);
        if (l >= 2)
          for (int i = 0; i < lay.in_len(l) && !r; ++i)
            r = live_in(l, j, i) && (i == 0 || reach[static_cast<size_t>(i - 1)]);
        reach[static_cast<size_t>((l - 1) * N + j - 1)] = r;
      }
    for (int l = L; l >= 1; --l)
      for (int j = 1; j <= N; ++j) {
        const int idx = (l - 1) * N + (j - 1);
        bool need = m[lay.after_offset() + lay.after_index(l, j)] != 0;
        for (int mm = l + 1; mm <= L && !need; ++mm)
          for (int n = 1; n <= N && !need; ++n)
            need = alive[static_cast<size_t>((mm - 1) * N + n - 1)] && live_in(mm, n, lay.input_index(l, j));
        alive[static_cast<size_t>(idx)] = reach[static_cast<size_t>(idx)] && need;
      }
    b.alive = alive;
    b.level_live.assign(static_cast<size_t>(L), {});
    for (int l = 2; l <= L; ++l) {
      const int K = lay.in_len(l);
      auto& lv = b.level_live[static_cast<size_t>(l - 1)];
      lv.assign(static_cast<size_t>(N * K), 0);
      for (int j = 1; j <= N; ++j) {
        if (!alive[static_cast<size_t>((l - 1) * N + j - 1)]) continue;
        for (int i = 0; i < K; ++i)
          lv[static_cast<size_t>((j - 1) * K + i)] = live_in(l, j, i) && (i == 0 || alive[static_cast<size_t>(i - 1)]);
      }
    }
    b.branches.clear();
    b.alive_list.clear();
    for (int k = 0; k < N * L; ++k) {
      if (m[lay.after_offset() + k] && alive[static_cast<size_t>(k)]) b.branches.push_back(k);
      if (alive[static_cast<size_t>(k)]) b.alive_list.push_back(k);
    }
  }
  for (ReductionBlock& r : I.reds)
    for (int i = 0; i < 2; ++i) r.live[i] = mk[r.lam_off + i];
}

int Supergraph::live_ops() const {
  int n = 0;
  for (const NormalBlock& b : impl_->blocks)
    for (uint8_t a : b.alive) n += a;
  return n;
}

int Supergraph::live_edges() const {
  int n = 0;
  for (const NormalBlock& b : impl_->blocks) {
    for (const auto& lv : b.level_live)
      for (uint8_t a : lv) n += a;
    n += static_cast<int>(b.branches.size());
  }
  for (const ReductionBlock& r : impl_->reds) n += r.live[0] + r.live[1];
  return n;
}

// ---------------------------------------------------------------------------
// forward / backward

namespace {

struct Ctx {
  Backend& be;
  std::vector<Param>& P;
  std::vector<BnStats>& S;
  bool train;
  float momentum = kBnMomentum;
};

void bn_fwd(Ctx& c, const BnIdx& b, const Tensor& x, Tensor& y, Tensor& sm, Tensor& si) {
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

void bn_bwd(Ctx& c, const BnIdx& b, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& sm,
            const Tensor& si, Tensor& dx, bool wgrads, float beta_dx = 0.f) {
  Param& g = c.P[b.gamma];
  Param& bt = c.P[b.beta];
  Tensor* dg = (wgrads && !g.frozen) ? &g.grad : nullptr;
  Tensor* db = wgrads ? &bt.grad : nullptr;
  c.be.bn_backward(x, y, dy, g.value, sm, si, dx, dg, db, true, beta_dx);
}

ConvDesc conv_desc(int cin, int cout, int k, int stride, int pad, int groups = 1) {
  ConvDesc d;
  d.cin = cin;
  d.cout = cout;
  d.k = k;
  d.stride = stride;
  d.pad = pad;
  d.groups = groups;
  return d;
}

struct Fwd {
  Supergraph& g;
  Supergraph::Impl& I;
  Ctx c;
  const float* lam;
  float* dlam;  // null: no λ gradients
  bool wgrads;
  bool recompute = false;  // per-block recomputation in backward (memory ↓, time ↑)

  Tensor conv(const ConvDesc& d, const Tensor& x, int w) {
    const int Ho = d.out_size(static_cast<int>(x.dim(2))), Wo = d.out_size(static_cast<int>(x.dim(3)));
    Tensor y = c.be.alloc(act_shape(d.cout, static_cast<int>(x.dim(1)), Ho, Wo));
    c.be.conv_forward(d, x, c.P[w].value, y);
    return y;
  }

  Tensor stem_forward(const Tensor& x) {
    StemDef& s = I.stem;
    const SearchSpace& sp = g.space();
    s.x = x;
    if (sp.stem == StemKind::Conv3) {
      s.c1 = conv(conv_desc(sp.in_channels, sp.stem_channels, 3, 1, 1), x, s.w1);
      bn_fwd(c, s.bn1, s.c1, s.r1, s.m1, s.i1);
      return s.r1;
    }
    s.c1 = conv(conv_desc(sp.in_channels, sp.stem_channels / 2, 3, 2, 1), x, s.w1);
    bn_fwd(c, s.bn1, s.c1, s.r1, s.m1, s.i1);
    s.c2 = conv(conv_desc(sp.stem_channels / 2, sp.stem_channels, 3, 2, 1), s.r1, s.w2);
    bn_fwd(c, s.bn2, s.c2, s.r2, s.m2, s.i2);
    return s.r2;
  }

  void stem_backward(const Tensor& dout) {
    StemDef& s = I.stem;
    const SearchSpace& sp = g.space();
    if (sp.stem == StemKind::Conv3) {
      Tensor dc = c.be.alloc(s.c1.shape());
      bn_bwd(c, s.bn1, s.c1, s.r1, dout, s.m1, s.i1, dc, wgrads);
      if (wgrads)
        c.be.conv_backward_filter(conv_desc(sp.in_channels, sp.stem_channels, 3, 1, 1), s.x, dc, c.P[s.w1].grad, 1.f,
                                  1.f);
    } else {
      Tensor dc2 = c.be.alloc(s.c2.shape());
      bn_bwd(c, s.bn2, s.c2, s.r2, dout, s.m2, s.i2, dc2, wgrads);
      const ConvDesc d2 = conv_desc(sp.stem_channels / 2, sp.stem_channels, 3, 2, 1);
      if (wgrads) c.be.conv_backward_filter(d2, s.r1, dc2, c.P[s.w2].grad, 1.f, 1.f);
      Tensor dr1 = c.be.alloc(s.r1.shape());
      c.be.conv_backward_data(d2, dc2, c.P[s.w2].value, dr1);
      Tensor dc1 = c.be.alloc(s.c1.shape());
      bn_bwd(c, s.bn1, s.c1, s.r1, dr1, s.m1, s.i1, dc1, wgrads);
      if (wgrads)
        c.be.conv_backward_filter(conv_desc(sp.in_channels, sp.stem_channels / 2, 3, 2, 1), s.x, dc1, c.P[s.w1].grad,
                                  1.f, 1.f);
    }
    s.clear_acts();
  }

  Tensor normal_forward(NormalBlock& b, const Tensor& x) {
    const SearchSpace& sp = g.space();
    const int L = sp.levels, N = sp.N();
    const BlockLayout lay = sp.block_layout();
    const int F = b.F, n = static_cast<int>(x.dim(1));
    const float* lb = lam + b.lam_off;
    b.x = x;
    const int nalive = static_cast<int>(b.alive_list.size());
    const int64_t plane = static_cast<int64_t>(F) * n * b.H * b.W;
    if (nalive > 0) {
      b.hcat = c.be.alloc(act_shape(nalive * F, n, b.H, b.W));
      for (int a = 0; a < nalive; ++a) b.acts[b.alive_list[a]].h = b.hcat.view(a * plane, x.shape());
    }
    std::vector<const Tensor*> nodes(static_cast<size_t>(1 + L * N), nullptr);
    nodes[0] = &b.x;
    for (int l = 1; l <= L; ++l) {
      if (l >= 2) {
        const int K = lay.in_len(l);
        std::vector<Tensor*> ys(static_cast<size_t>(N), nullptr);
        for (int j = 1; j <= N; ++j) {
          const int idx = (l - 1) * N + j - 1;
          if (!b.alive[idx]) continue;
          b.acts[idx].a = c.be.alloc(x.shape());
          ys[static_cast<size_t>(j - 1)] = &b.acts[idx].a;
        }
        std::vector<const Tensor*> xs(nodes.begin(), nodes.begin() + K);
        c.be.wsum_forward(N, K, lb + lay.row_offset(l, 1), b.level_live[l - 1].data(), xs, ys);
      }
      for (int j = 1; j <= N; ++j) {
        const int idx = (l - 1) * N + j - 1;
        if (!b.alive[idx]) continue;
        OpActs& A = b.acts[idx];
        const OpDef& op = b.ops[idx];
        const Tensor& a = (l == 1) ? b.x : A.a;
        if (op_is_conv(op.kind)) {
          const int k = op_kernel(op.kind);
          A.t1 = conv(conv_desc(F, F, k, 1, k / 2, F), a, op.dw);
          A.t2 = conv(conv_desc(F, F, 1, 1, 0), A.t1, op.pw);
        } else {
          PoolDesc pd;
          pd.kind = op.kind == OpKind::Max3 ? PoolKind::Max : PoolKind::Avg;
          A.t2 = c.be.alloc(a.shape());
          c.be.pool_forward(pd, a, A.t2);
        }
        bn_fwd(c, op.bn, A.t2, A.h, A.smean, A.sinv);
        nodes[static_cast<size_t>(1 + idx)] = &A.h;
      }
      if (!c.train) {  // inputs of this level are no longer needed
        for (int j = 1; j <= N; ++j) {
          OpActs& A = b.acts[(l - 1) * N + j - 1];
          A.a = Tensor();
          A.t1 = Tensor();
          A.t2 = Tensor();
          A.smean = Tensor();
          A.sinv = Tensor();
        }
      }
    }
    const ConvDesc d1 = conv_desc(F, F, 1, 1, 0);
    Tensor out;
    if (!b.branches.empty()) {
      std::vector<const Tensor*> ws;
      std::vector<float> scale;
      out_columns(b, lb, &ws, &scale, nullptr, nullptr);
      b.wcat = c.be.alloc({F, nalive * F, 1, 1});
      c.be.concat_scaled_columns(ws, scale.data(), b.wcat);
      b.y = c.be.alloc(act_shape(F, n, b.H, b.W));
      c.be.conv_forward(conv_desc(nalive * F, F, 1, 1, 0), b.hcat, b.wcat, b.y);
      bn_fwd(c, b.out_bn, b.y, b.r, b.ymean, b.yinv);
    }
    if (b.first) {
      b.tsc = conv(d1, b.x, b.id_w);
      bn_fwd(c, b.id_bn, b.tsc, b.sc, b.scmean, b.scinv);
    } else {
      b.sc = b.x;
    }
    if (!b.branches.empty()) {
      out = c.be.alloc(b.sc.shape());
      c.be.add(b.r, b.sc, out);
    } else {
      out = b.sc;
    }
    if (!c.train) {
      release(b);
    } else if (recompute) {  // keep only the block input; backward recomputes the rest
      Tensor keep = b.x;
      release(b);
      b.x = keep;
    }
    return out;
  }

  static void release(NormalBlock& b) {
    for (OpActs& A : b.acts) A = OpActs();
    b.x = b.hcat = b.wcat = b.y = b.r = b.ymean = b.yinv = b.tsc = b.sc = b.scmean = b.scinv = b.out = Tensor();
  }

  /// Columns of the block's output GEMM, one per alive op (in alive_list
  /// order): its 1×1 weight and λ_after scale, 0 for ops that are alive only as
  /// internal nodes (their branch is dead).  Optionally the gradient targets.
  void out_columns(NormalBlock& b, const float* lb, std::vector<const Tensor*>* ws, std::vector<float>* scale,
                   std::vector<Tensor*>* dws, std::vector<float*>* dscale) {
    const BlockLayout lay = g.space().block_layout();
    float* dlb = dlam ? dlam + b.lam_off : nullptr;
    size_t bi = 0;
    for (int k : b.alive_list) {
      const bool branch = bi < b.branches.size() && b.branches[bi] == k;
      if (branch) ++bi;
      Param& w = c.P[b.out_w[k]];
      if (ws) ws->push_back(&w.value);
      if (scale) scale->push_back(branch ? lb[lay.after_offset() + k] : 0.f);
      if (dws) dws->push_back(branch && wgrads ? &w.grad : nullptr);
      if (dscale) dscale->push_back(branch && dlb ? dlb + lay.after_offset() + k : nullptr);
    }
  }

  /// λ-step shortcut for the block output's λ_after gradients:
  ///   dλ_after_k = Σ_{o,i} W_k[o,i]·(dy·h_kᵀ)[o,i] = <W_kᵀ·dy, h_k> = <dhcat_k, h_k>/λ_k
  /// (dhcat_k = (λ_k W_k)ᵀ·dy, read before anything accumulates into it), one
  /// streaming dot product per branch instead of the [F, A·F] weight-gradient
  /// GEMM over hcat.  Equal up to rounding; false (caller takes the GEMM path)
  /// if a live branch has a λ too small or not finite to divide by.
  bool branch_dots(NormalBlock& b, const float* lb, float* dlb, const Tensor& dhcat) {
    const BlockLayout lay = g.space().block_layout();
    std::vector<std::pair<int, int>> br;  // (alive position, k)
    size_t bi = 0;
    for (int a = 0; a < static_cast<int>(b.alive_list.size()); ++a) {
      const int k = b.alive_list[static_cast<size_t>(a)];
      if (bi < b.branches.size() && b.branches[bi] == k) {
        ++bi;
        const float lk = lb[lay.after_offset() + k];
        if (!(std::fabs(lk) >= 1e-20f && std::fabs(lk) <= 1e20f)) return false;
        br.push_back({a, k});
      }
    }
    if (br.empty()) return true;
    const int64_t plane = b.x.numel();
    Tensor t = c.be.alloc({static_cast<int64_t>(br.size())});
    c.be.fill(t, 0.f);
    const int64_t base = (dlb - g.lambda_grad().data()) + lay.after_offset();
    for (size_t q = 0; q < br.size(); ++q) {
      const int a = br[q].first, k = br[q].second;
      Tensor tq = t.view(static_cast<int64_t>(q), {1});
      c.be.dot_accumulate(dhcat.view(a * plane, b.x.shape()), b.hcat.view(a * plane, b.x.shape()), tq.data());
      Tensor dq = g.lambda_grad().view(base + k, {1});
      c.be.axpy(1.f / lb[lay.after_offset() + k], tq, dq);
    }
    return true;
  }

  /// need_dx = false: the block input's gradient is not wanted (a λ-step's
  /// first block: nothing before it has a λ), so the identity path, the
  /// level-1 ops and the level ≥ 2 sums' contributions to x and to level-1
  /// nodes are skipped; returns an undefined tensor.
  Tensor normal_backward(NormalBlock& b, const Tensor& dout, bool need_dx = true) {
    const SearchSpace& sp = g.space();
    const int L = sp.levels, N = sp.N();
    const BlockLayout lay = sp.block_layout();
    const int F = b.F;
    const float* lb = lam + b.lam_off;
    float* dlb = dlam ? dlam + b.lam_off : nullptr;
    const ConvDesc d1 = conv_desc(F, F, 1, 1, 0);

    // Identity shortcut: dx starts as dout itself (a temporary of the caller's;
    // the output BN below reads it before anything accumulates into dx).
    Tensor dx = !need_dx ? Tensor() : b.first ? c.be.alloc(b.x.shape()) : dout;
    if (b.first && need_dx) {
      Tensor dtsc = c.be.alloc(b.tsc.shape());
      bn_bwd(c, b.id_bn, b.tsc, b.sc, dout, b.scmean, b.scinv, dtsc, wgrads);
      c.be.conv_backward_data(d1, dtsc, c.P[b.id_w].value, dx);
      if (wgrads) c.be.conv_backward_filter(d1, b.x, dtsc, c.P[b.id_w].grad, 1.f, 1.f);
    }
    if (b.branches.empty()) {
      release(b);
      return dx;
    }
    Tensor dy = c.be.alloc(b.y.shape());
    bn_bwd(c, b.out_bn, b.y, b.r, dout, b.ymean, b.yinv, dy, wgrads);
    b.y = b.r = Tensor();

    // ∂/∂(stacked op outputs) in one GEMM; the per-op gradients are views of it
    const int nalive = static_cast<int>(b.alive_list.size());
    const ConvDesc dcat = conv_desc(nalive * F, F, 1, 1, 0);
    Tensor dhcat = c.be.alloc(b.hcat.shape());
    c.be.conv_backward_data(dcat, dy, b.wcat, dhcat);
    std::vector<Tensor> dnodes(static_cast<size_t>(L * N));
    const int64_t plane = b.x.numel();
    for (int a = 0; a < nalive; ++a) dnodes[b.alive_list[a]] = dhcat.view(a * plane, b.x.shape());
    if (dlb && !wgrads && branch_dots(b, lb, dlb, dhcat)) {
      // λ-step: dλ_after from dot products (no weight-gradient GEMM)
    } else if (dlb || wgrads) {
      Tensor M = c.be.alloc(b.wcat.shape());
      c.be.conv_backward_filter(dcat, b.hcat, dy, M, 1.f, 0.f);
      std::vector<const Tensor*> ws;
      std::vector<float> scale;
      std::vector<Tensor*> dws;
      std::vector<float*> dscale;
      out_columns(b, lb, &ws, &scale, &dws, &dscale);
      c.be.concat_scaled_columns_backward(ws, scale.data(), M, dws, dscale);
    }
    dy = Tensor();
    b.wcat = Tensor();

    std::vector<const Tensor*> nodes(static_cast<size_t>(1 + L * N), nullptr);
    nodes[0] = &b.x;
    for (int idx = 0; idx < L * N; ++idx)
      if (b.alive[idx]) nodes[static_cast<size_t>(1 + idx)] = &b.acts[idx].h;

    for (int l = L; l >= 1; --l) {
      if (l == 1 && !need_dx) break;
      std::vector<Tensor> das(static_cast<size_t>(N));
      for (int j = 1; j <= N; ++j) {
        const int idx = (l - 1) * N + j - 1;
        if (!b.alive[idx]) continue;
        OpActs& A = b.acts[idx];
        const OpDef& op = b.ops[idx];
        const Tensor& a = (l == 1) ? b.x : A.a;
        Tensor dt2 = c.be.alloc(A.t2.shape());
        bn_bwd(c, op.bn, A.t2, A.h, dnodes[idx], A.smean, A.sinv, dt2, wgrads);
        dnodes[idx] = Tensor();
        Tensor* target;
        float beta;
        if (l == 1) {
          target = &dx;
          beta = 1.f;
        } else {
          das[j - 1] = c.be.alloc(a.shape());
          target = &das[j - 1];
          beta = 0.f;
        }
        if (op_is_conv(op.kind)) {
          const int k = op_kernel(op.kind);
          const ConvDesc ddw = conv_desc(F, F, k, 1, k / 2, F);
          Tensor dt1 = c.be.alloc(A.t1.shape());
          c.be.conv_backward_data(d1, dt2, c.P[op.pw].value, dt1);
          if (wgrads) c.be.conv_backward_filter(d1, A.t1, dt2, c.P[op.pw].grad, 1.f, 1.f);
          dt2 = Tensor();
          c.be.conv_backward_data(ddw, dt1, c.P[op.dw].value, *target, 1.f, beta);
          if (wgrads) c.be.conv_backward_filter(ddw, a, dt1, c.P[op.dw].grad, 1.f, 1.f);
        } else {
          PoolDesc pd;
          pd.kind = op.kind == OpKind::Max3 ? PoolKind::Max : PoolKind::Avg;
          c.be.pool_backward(pd, a, A.t2, dt2, *target, beta);
        }
        A.t1 = A.t2 = A.smean = A.sinv = Tensor();
      }
      if (l >= 2) {
        const int K = lay.in_len(l);
        std::vector<const Tensor*> xs(nodes.begin(), nodes.begin() + K);
        std::vector<const Tensor*> dys(static_cast<size_t>(N), nullptr);
        for (int j = 0; j < N; ++j)
          if (das[j].defined()) dys[j] = &das[j];
        std::vector<Tensor*> dxs(static_cast<size_t>(K), nullptr);
        if (need_dx) dxs[0] = &dx;
        for (int i = 1; i < K; ++i)
          if (b.alive[i - 1] && (need_dx || i > N)) dxs[i] = &dnodes[i - 1];
        c.be.wsum_backward(N, K, lb + lay.row_offset(l, 1), b.level_live[l - 1].data(), xs, dys, dxs,
                           dlb ? dlb + lay.row_offset(l, 1) : nullptr);
        for (int j = 1; j <= N; ++j) b.acts[(l - 1) * N + j - 1].a = Tensor();
      }
    }
    release(b);
    return dx;
  }

  Tensor reduction_forward(ReductionBlock& r, const Tensor& x) {
    const SearchSpace& sp = g.space();
    const int Fout = sp.widths[r.s + 1];
    r.x = x;
    const ConvDesc d[2] = {conv_desc(r.Fin, Fout, 1, 2, 0), conv_desc(r.Fin, Fout, 3, 2, 1)};
    std::vector<const Tensor*> xs(2, nullptr);
    for (int i = 0; i < 2; ++i) {
      if (!r.live[i]) continue;
      r.c[i] = conv(d[i], x, r.w[i]);
      bn_fwd(c, r.bn[i], r.c[i], r.r[i], r.m[i], r.iv[i]);
      xs[i] = &r.r[i];
    }
    const int Ho = d[0].out_size(r.H), Wo = d[0].out_size(r.W);
    Tensor out = c.be.alloc(act_shape(Fout, static_cast<int>(x.dim(1)), Ho, Wo));
    std::vector<Tensor*> ys = {&out};
    c.be.wsum_forward(1, 2, lam + r.lam_off, r.live, xs, ys);
    if (!c.train) r.clear_acts();
    return out;
  }

  Tensor reduction_backward(ReductionBlock& r, const Tensor& dout) {
    const SearchSpace& sp = g.space();
    const int Fout = sp.widths[r.s + 1];
    const ConvDesc d[2] = {conv_desc(r.Fin, Fout, 1, 2, 0), conv_desc(r.Fin, Fout, 3, 2, 1)};
    Tensor dr[2];
    std::vector<const Tensor*> xs(2, nullptr);
    std::vector<Tensor*> dxs(2, nullptr);
    for (int i = 0; i < 2; ++i)
      if (r.live[i]) {
        dr[i] = c.be.alloc(r.r[i].shape());
        c.be.fill(dr[i], 0.f);
        xs[i] = &r.r[i];
        dxs[i] = &dr[i];
      }
    std::vector<const Tensor*> dys = {&dout};
    c.be.wsum_backward(1, 2, lam + r.lam_off, r.live, xs, dys, dxs, dlam ? dlam + r.lam_off : nullptr);
    Tensor dx = c.be.alloc(r.x.shape());
    bool first = true;
    for (int i = 0; i < 2; ++i) {
      if (!r.live[i]) continue;
      Tensor dc = c.be.alloc(r.c[i].shape());
      bn_bwd(c, r.bn[i], r.c[i], r.r[i], dr[i], r.m[i], r.iv[i], dc, wgrads);
      c.be.conv_backward_data(d[i], dc, c.P[r.w[i]].value, dx, 1.f, first ? 0.f : 1.f);
      if (wgrads) c.be.conv_backward_filter(d[i], r.x, dc, c.P[r.w[i]].grad, 1.f, 1.f);
      first = false;
    }
    if (first) c.be.fill(dx, 0.f);
    r.clear_acts();
    return dx;
  }

  Tensor head_forward(const Tensor& x) {
    HeadDef& h = I.head;
    h.x = x;
    bn_fwd(c, h.bn, x, h.hb, h.m, h.iv);
    const int n = static_cast<int>(x.dim(1)), C = static_cast<int>(x.dim(0));
    h.pooled = c.be.alloc({n, C});
    c.be.global_avg_pool_forward(h.hb, h.pooled);
    h.logits = c.be.alloc({n, g.space().classes});
    c.be.linear_forward(h.pooled, c.P[h.fc_w].value, c.P[h.fc_b].value, h.logits);
    return h.logits;
  }

  Tensor head_backward(const Tensor& dlogits) {
    HeadDef& h = I.head;
    Tensor dpooled = c.be.alloc(h.pooled.shape());
    c.be.linear_backward(h.pooled, c.P[h.fc_w].value, dlogits, &dpooled, wgrads ? &c.P[h.fc_w].grad : nullptr,
                         wgrads ? &c.P[h.fc_b].grad : nullptr);
    Tensor dhb = c.be.alloc(h.hb.shape());
    c.be.global_avg_pool_backward(dpooled, dhb);
    Tensor dx = c.be.alloc(h.x.shape());
    bn_bwd(c, h.bn, h.x, h.hb, dhb, h.m, h.iv, dx, wgrads);
    h.clear_acts();
    return dx;
  }

  Tensor forward(const Tensor& x) {
    Tensor t = stem_forward(x);
    size_t bi = 0;
    for (int s = 0; s < g.space().stages(); ++s) {
      for (int u = 0; u < g.space().normal_units[s]; ++u) t = normal_forward(I.blocks[bi++], t);
      if (s + 1 < g.space().stages()) t = reduction_forward(I.reds[static_cast<size_t>(s)], t);
    }
    return head_forward(t);
  }

  void backward(const Tensor& dlogits) {
    auto ready = [&](int64_t from) {
      if (g.grad_ready_hook()) g.grad_ready_hook()(from);
    };
    Tensor d = head_backward(dlogits);
    ready(I.head.grad_from);
    size_t bi = I.blocks.size();
    for (int s = g.space().stages() - 1; s >= 0; --s) {
      if (s + 1 < g.space().stages()) {
        d = reduction_backward(I.reds[static_cast<size_t>(s)], d);
        ready(I.reds[static_cast<size_t>(s)].grad_from);
      }
      for (int u = 0; u < g.space().normal_units[s]; ++u) {
        NormalBlock& b = I.blocks[--bi];
        if (recompute) {
          // Same batch statistics again (deterministic kernels), running
          // statistics left alone (momentum 1), activations kept this time.
          const float m = c.momentum;
          c.momentum = 1.f;
          recompute = false;
          Tensor x = b.x;
          normal_forward(b, x);
          recompute = true;
          c.momentum = m;
        }
        // Nothing before the first block has a λ: on a λ-step (no weight
        // gradients) its input gradient, and the stem's backward, are not needed.
        const bool need_dx = wgrads || bi > 0 || b.s > 0;
        d = normal_backward(b, d, need_dx);
        ready(b.grad_from);
      }
    }
    if (d.defined())
      stem_backward(d);
    else
      I.stem.clear_acts();
    ready(0);
  }
};

}  // namespace

StepResult Supergraph::train_step(const float* x_nchw, const int32_t* labels, int n, float grad_scale,
                                  bool weight_grads, bool lambda_grads) {
  const SearchSpace& sp = space_;
  Tensor x = be_.act_from_nchw(x_nchw, n, sp.in_channels, sp.in_height, sp.in_width);
  be_.fill(flat_grad_, 0.f);
  const bool lg = lambda_grads && !lambda_fixed_;
  Fwd f{*this,
        *impl_,
        Ctx{be_, params_, bn_, true, bn_momentum_},
        lambda_fixed_ ? impl_->ones.data() : lam_.data(),
        lg ? lambda_grad_.data() : nullptr,
        weight_grads};
  f.recompute = recompute_;
  Tensor logits = f.forward(x);
  Tensor dlogits = be_.alloc(logits.shape());
  StepResult r;
  r.n = n;
  be_.softmax_xent(logits, labels, grad_scale, dlogits, &r.loss_sum, &r.correct);
  last_logits_.resize(static_cast<size_t>(logits.numel()));
  be_.download(logits, last_logits_.data());
  f.backward(dlogits);
  return r;
}

StepResult Supergraph::eval_batch(const float* x_nchw, const int32_t* labels, int n, std::vector<float>* logits_out) {
  const SearchSpace& sp = space_;
  Tensor x = be_.act_from_nchw(x_nchw, n, sp.in_channels, sp.in_height, sp.in_width);
  Fwd f{*this,   *impl_, Ctx{be_, params_, bn_, false, bn_momentum_}, lambda_fixed_ ? impl_->ones.data() : lam_.data(),
        nullptr, false};
  Tensor logits = f.forward(x);
  Tensor dlogits = be_.alloc(logits.shape());
  StepResult r;
  r.n = n;
  be_.softmax_xent(logits, labels, 1.f, dlogits, &r.loss_sum, &r.correct);
  if (logits_out) {
    logits_out->resize(static_cast<size_t>(logits.numel()));
    be_.download(logits, logits_out->data());
  }
  impl_->stem.clear_acts();
  impl_->head.clear_acts();
  return r;
}

void Supergraph::forward_train_only(const float* x_nchw, int n) {
  const SearchSpace& sp = space_;
  Tensor x = be_.act_from_nchw(x_nchw, n, sp.in_channels, sp.in_height, sp.in_width);
  Fwd f{*this,   *impl_, Ctx{be_, params_, bn_, true, bn_momentum_}, lambda_fixed_ ? impl_->ones.data() : lam_.data(),
        nullptr, false};
  f.forward(x);
  // drop everything forward kept
  for (NormalBlock& b : impl_->blocks) Fwd::release(b);
  for (ReductionBlock& r : impl_->reds) r.clear_acts();
  impl_->stem.clear_acts();
  impl_->head.clear_acts();
}

int64_t Supergraph::activation_bytes_estimate(int n) const {
  // forward keeps a, t1, t2, h per op and ~6 block-level tensors
  int64_t total = 0;
  for (const NormalBlock& b : impl_->blocks)
    total += static_cast<int64_t>(4 * space_.levels * space_.N() + 6) * b.F * n * b.H * b.W * 4;
  return total;
}

void Supergraph::reestimate_bn(const std::vector<const float*>& batches_nchw, int n) {
  for (BnStats& b : bn_) {
    be_.fill(b.mean, 0.f);
    be_.fill(b.var, 1.f);
  }
  const float saved = bn_momentum_;
  for (size_t i = 0; i < batches_nchw.size(); ++i) {
    bn_momentum_ = static_cast<float>(i) / static_cast<float>(i + 1);  // run = mean of batch stats
    forward_train_only(batches_nchw[i], n);
  }
  bn_momentum_ = saved;
}

}  // namespace dsonas
