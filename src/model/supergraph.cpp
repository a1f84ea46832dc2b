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
#include "dsonas/model/prune.hpp"
#include "cells.hpp"

namespace dsonas {

namespace {
using cells::conv_desc;
using cells::Ctx;

struct NormalBlock : cells::BlockOutput {  // out_w: one per op, N*L
  int s = 0, u = 0, F = 0, H = 0, W = 0;
  int first_param = 0;    // index of the block's first parameter
  int64_t grad_from = 0;  // its offset in the flat gradient buffer
  int lam_off = 0;
  // every op of the space at position (l-1)*N + (j-1); the plan switches them on
  // and off (alive), sets the sums' live masks and stacks the alive ops' outputs
  // (graph.stacked, in index order) so that the block output's λ-scaled 1×1
  // convs are one GEMM with wcat (docs/method.md §1.3)
  cells::OpGraph graph;
  std::vector<int> branches;  // live output branches k
};

struct ReductionBlock : cells::Reduction {
  int first_param = 0;
  int64_t grad_from = 0;
  int lam_off = 0;
};

struct HeadBlock : cells::Head {
  int first_param = 0;
  int64_t grad_from = 0;
};

}  // namespace

struct Supergraph::Impl {
  cells::Stem stem;
  std::vector<NormalBlock> blocks;
  std::vector<ReductionBlock> reds;
  HeadBlock head;
  std::vector<float> ones;  // λ when fixed
};

// ---------------------------------------------------------------------------
// construction

Supergraph::Supergraph(const SearchSpace& space, Backend& backend, uint64_t seed)
    : space_(space), be_(backend), impl_(new Impl) {
  space_.validate();
  Impl& I = *impl_;
  const int L = space_.levels, N = space_.N();
  const BlockLayout lay = space_.block_layout();

  cells::ParamBuilder pb(be_, params_, param_index_, bn_);
  I.stem.build(pb, space_);
  if (space_.widths[0] != space_.stem_channels)
    fail_usage(
        str("space.widths: stage 1 width ", space_.widths[0], " must equal stem-channels ", space_.stem_channels));

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
      cells::place_block(b, space_, s, u);
      b.first_param = static_cast<int>(params_.size());
      b.first = (u == 0);
      b.lam_off = space_.block_lambda_offset(s, u);
      const std::string pre = str("s", s + 1, "/u", u + 1, "/");
      if (!space_.share) add_block_groups(pre, b.lam_off);
      cells::OpGraph& g = b.graph;
      g.ops.resize(static_cast<size_t>(L * N));
      g.level_begin.resize(static_cast<size_t>(L + 1));
      for (int l = 0; l <= L; ++l) g.level_begin[static_cast<size_t>(l)] = l * N;
      g.sums.resize(static_cast<size_t>(L - 1));
      const double hw = static_cast<double>(H) * W;
      for (int l = 1; l <= L; ++l)
        for (int j = 1; j <= N; ++j) {
          const int k = (l - 1) * N + (j - 1);
          cells::OpGraph::Slot& o = g.ops[static_cast<size_t>(k)];
          o.op.build(pb, str(pre, "l", l, "/o", j, "/"), space_.ops[static_cast<size_t>(j - 1)], F, hw, true);
          if (l == 1)
            o.direct = 0;  // the block input itself
          else
            g.sums[static_cast<size_t>(l - 2)].rows.push_back(k);
        }
      for (int l = 2; l <= L; ++l) g.sums[static_cast<size_t>(l - 2)].K = lay.in_len(l);
      std::vector<int> every(static_cast<size_t>(N * L));
      for (int k = 0; k < N * L; ++k) every[static_cast<size_t>(k)] = k;
      b.build(pb, pre, F, hw, every, true, true);
      I.blocks.push_back(std::move(b));
    }
    if (s + 1 < space_.stages()) {
      ReductionBlock r;
      r.first_param = static_cast<int>(params_.size());
      const std::string pre = str("s", s + 1, "/red/");
      const bool both[2] = {true, true};
      r.build(pb, space_, s, pre, both, true);
      r.lam_off = space_.reduction_lambda_offset(s);
      groups_.push_back({pre + "lambda", r.lam_off, 2});
      I.reds.push_back(std::move(r));
    }
  }
  I.head.first_param = static_cast<int>(params_.size());
  I.head.build(pb, space_);

  // values (docs/method.md §9), gradients (one flat buffer), momenta
  int64_t total = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!params_[i].frozen) total += shape_numel(pb.shape(i));
  num_weights_ = total;
  flat_grad_ = be_.alloc({total + static_cast<int64_t>(lam_.size())});
  be_.fill(flat_grad_, 0.f);
  lambda_grad_ = flat_grad_.view(total, {static_cast<int64_t>(lam_.size())});
  int64_t off = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    const Shape& sh = pb.shape(i);
    p.value = be_.alloc(sh);
    be_.upload(pb.initial_values(i, seed).data(), p.value);
    if (!p.frozen) {
      p.grad = flat_grad_.view(off, sh);
      off += shape_numel(sh);
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
    const BlockTopology t = block_topology(nullptr, mk + b.lam_off, lay);  // the mask alone decides
    cells::OpGraph& g = b.graph;
    for (int l = 1; l <= L; ++l)
      for (int j = 1; j <= N; ++j) g.ops[static_cast<size_t>((l - 1) * N + j - 1)].alive = t.alive(l, j);
    for (int l = 2; l <= L; ++l) {
      const int K = lay.in_len(l);
      auto& lv = g.sums[static_cast<size_t>(l - 2)].live;
      lv.assign(static_cast<size_t>(N * K), 0);
      for (int j = 1; j <= N; ++j)
        for (int i = 0; i < K; ++i) lv[static_cast<size_t>((j - 1) * K + i)] = t.edge_live[l - 1][j - 1][i];
    }
    b.branches.clear();
    g.stacked.clear();
    for (int k = 0; k < N * L; ++k) {
      if (t.after_live[static_cast<size_t>(k)]) b.branches.push_back(k);
      if (g.ops[static_cast<size_t>(k)].alive) g.stacked.push_back(k);
    }
  }
  for (ReductionBlock& r : I.reds)
    for (int i = 0; i < 2; ++i) r.live[i] = mk[r.lam_off + i];
}

int Supergraph::live_ops() const {
  int n = 0;
  for (const NormalBlock& b : impl_->blocks)
    for (const cells::OpGraph::Slot& o : b.graph.ops) n += o.alive ? 1 : 0;
  return n;
}

int Supergraph::live_edges() const {
  int n = 0;
  for (const NormalBlock& b : impl_->blocks) {
    for (const cells::OpGraph::LevelSum& S : b.graph.sums)
      for (uint8_t a : S.live) n += a;
    n += static_cast<int>(b.branches.size());
  }
  for (const ReductionBlock& r : impl_->reds) n += r.live[0] + r.live[1];
  return n;
}

// ---------------------------------------------------------------------------
// forward / backward

namespace {

struct Fwd {
  Supergraph& g;
  Supergraph::Impl& I;
  Ctx c;
  const float* lam;
  float* dlam;             // null: no λ gradients
  bool recompute = false;  // per-block recomputation in backward (memory ↓, time ↑)

  Tensor conv(const ConvDesc& d, const Tensor& x, int w) { return cells::conv(c, d, x, w); }

  /// Level l's λ rows (l ≥ 2) for the block's op graph, and where their gradients go.
  std::vector<const float*> sum_coeffs(const NormalBlock& b) const {
    const BlockLayout lay = g.space().block_layout();
    std::vector<const float*> v;
    for (int l = 2; l <= g.space().levels; ++l) v.push_back(lam + b.lam_off + lay.row_offset(l, 1));
    return v;
  }
  std::vector<float*> sum_dcoeffs(const NormalBlock& b) const {
    const BlockLayout lay = g.space().block_layout();
    std::vector<float*> v;
    for (int l = 2; l <= g.space().levels; ++l) v.push_back(dlam ? dlam + b.lam_off + lay.row_offset(l, 1) : nullptr);
    return v;
  }

  Tensor normal_forward(NormalBlock& b, const Tensor& x) {
    const float* lb = lam + b.lam_off;
    b.graph.forward(c, b.F, b.H, b.W, x, sum_coeffs(b));
    std::vector<const Tensor*> ws;
    std::vector<float> scale;
    if (!b.branches.empty()) out_columns(b, lb, &ws, &scale, nullptr, nullptr);
    Tensor out = b.forward(c, b.F, b.graph.x, b.branches.empty() ? nullptr : &b.graph.hcat, ws, scale.data());
    if (!c.train) {
      release(b);
    } else if (recompute) {  // keep only the block input; backward recomputes the rest
      Tensor keep = b.graph.x;
      release(b);
      b.graph.x = keep;
    }
    return out;
  }

  static void release(NormalBlock& b) {
    b.graph.clear_acts();
    b.clear_output();
  }

  /// Columns of the block's output GEMM, one per alive op (in graph.stacked
  /// order): its 1×1 weight and λ_after scale, 0 for ops that are alive only as
  /// internal nodes (their branch is dead).  Optionally the gradient targets.
  void out_columns(NormalBlock& b, const float* lb, std::vector<const Tensor*>* ws, std::vector<float>* scale,
                   std::vector<Tensor*>* dws, std::vector<float*>* dscale) {
    const BlockLayout lay = g.space().block_layout();
    float* dlb = dlam ? dlam + b.lam_off : nullptr;
    size_t bi = 0;
    for (int k : b.graph.stacked) {
      const bool branch = bi < b.branches.size() && b.branches[bi] == k;
      if (branch) ++bi;
      Param& w = c.P[b.out_w[k]];
      if (ws) ws->push_back(&w.value);
      if (scale) scale->push_back(branch ? lb[lay.after_offset() + k] : 0.f);
      if (dws) dws->push_back(branch && c.wgrads ? &w.grad : nullptr);
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
    const std::vector<int>& stacked = b.graph.stacked;
    std::vector<std::pair<int, int>> br;  // (stacked position, k)
    size_t bi = 0;
    for (int a = 0; a < static_cast<int>(stacked.size()); ++a) {
      const int k = stacked[static_cast<size_t>(a)];
      if (bi < b.branches.size() && b.branches[bi] == k) {
        ++bi;
        const float lk = lb[lay.after_offset() + k];
        if (!(std::fabs(lk) >= 1e-20f && std::fabs(lk) <= 1e20f)) return false;
        br.push_back({a, k});
      }
    }
    if (br.empty()) return true;
    const Tensor& x = b.graph.x;
    const int64_t plane = x.numel();
    Tensor t = c.be.alloc({static_cast<int64_t>(br.size())});
    c.be.fill(t, 0.f);
    const int64_t base = (dlb - g.lambda_grad().data()) + lay.after_offset();
    for (size_t q = 0; q < br.size(); ++q) {
      const int a = br[q].first, k = br[q].second;
      Tensor tq = t.view(static_cast<int64_t>(q), {1});
      c.be.dot_accumulate(dhcat.view(a * plane, x.shape()), b.graph.hcat.view(a * plane, x.shape()), tq.data());
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
    const int F = b.F;
    const float* lb = lam + b.lam_off;
    float* dlb = dlam ? dlam + b.lam_off : nullptr;

    Tensor dy;
    Tensor dx = b.backward(c, F, b.graph.x, dout, !b.branches.empty(), need_dx, &dy);
    if (b.branches.empty()) {
      release(b);
      return dx;
    }

    // ∂/∂(stacked op outputs) in one GEMM; the per-op gradients are views of it
    const int nalive = static_cast<int>(b.graph.stacked.size());
    const ConvDesc dcat = conv_desc(nalive * F, F, 1, 1, 0);
    Tensor dhcat = c.be.alloc(b.graph.hcat.shape());
    c.be.conv_backward_data(dcat, dy, b.wcat, dhcat);
    if (dlb && !c.wgrads && branch_dots(b, lb, dlb, dhcat)) {
      // λ-step: dλ_after from dot products (no weight-gradient GEMM)
    } else if (dlb || c.wgrads) {
      Tensor M = c.be.alloc(b.wcat.shape());
      c.be.conv_backward_filter(dcat, b.graph.hcat, dy, M, 1.f, 0.f);
      std::vector<const Tensor*> ws;
      std::vector<float> scale;
      std::vector<Tensor*> dws;
      std::vector<float*> dscale;
      out_columns(b, lb, &ws, &scale, &dws, &dscale);
      c.be.concat_scaled_columns_backward(ws, scale.data(), M, dws, dscale);
    }
    dy = Tensor();
    b.wcat = Tensor();
    b.graph.backward(c, F, dhcat, dx, sum_coeffs(b), sum_dcoeffs(b), need_dx);
    release(b);
    return dx;
  }

  Tensor forward(const Tensor& x) {
    Tensor t = I.stem.forward(c, g.space(), x);
    size_t bi = 0;
    for (int s = 0; s < g.space().stages(); ++s) {
      for (int u = 0; u < g.space().normal_units[s]; ++u) t = normal_forward(I.blocks[bi++], t);
      if (s + 1 < g.space().stages()) {
        ReductionBlock& r = I.reds[static_cast<size_t>(s)];
        t = r.forward(c, t, lam + r.lam_off);
      }
    }
    return I.head.forward(c, t, g.space().classes, nullptr);
  }

  void backward(const Tensor& dlogits) {
    auto ready = [&](int64_t from) {
      if (g.grad_ready_hook()) g.grad_ready_hook()(from);
    };
    Tensor d = I.head.backward(c, dlogits, nullptr);
    ready(I.head.grad_from);
    size_t bi = I.blocks.size();
    for (int s = g.space().stages() - 1; s >= 0; --s) {
      if (s + 1 < g.space().stages()) {
        ReductionBlock& r = I.reds[static_cast<size_t>(s)];
        d = r.backward(c, d, lam + r.lam_off, dlam ? dlam + r.lam_off : nullptr);
        ready(r.grad_from);
      }
      for (int u = 0; u < g.space().normal_units[s]; ++u) {
        NormalBlock& b = I.blocks[--bi];
        if (recompute) {
          // Same batch statistics again (deterministic kernels), running
          // statistics left alone (momentum 1), activations kept this time.
          const float m = c.momentum;
          c.momentum = 1.f;
          recompute = false;
          Tensor x = b.graph.x;
          normal_forward(b, x);
          recompute = true;
          c.momentum = m;
        }
        // Nothing before the first block has a λ: on a λ-step (no weight
        // gradients) its input gradient, and the stem's backward, are not needed.
        const bool need_dx = c.wgrads || bi > 0 || b.s > 0;
        d = normal_backward(b, d, need_dx);
        ready(b.grad_from);
      }
    }
    if (d.defined())
      I.stem.backward(c, g.space(), d);
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
  Fwd f{*this, *impl_, Ctx{be_, params_, bn_, true, bn_momentum_, weight_grads},
        lambda_fixed_ ? impl_->ones.data() : lam_.data(), lg ? lambda_grad_.data() : nullptr};
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
  Fwd f{*this, *impl_, Ctx{be_, params_, bn_, false, bn_momentum_, false},
        lambda_fixed_ ? impl_->ones.data() : lam_.data(), nullptr};
  const StepResult r = cells::score_batch(be_, f.forward(x), labels, n, logits_out);
  impl_->stem.clear_acts();
  impl_->head.clear_acts();
  return r;
}

void Supergraph::forward_train_only(const float* x_nchw, int n) {
  const SearchSpace& sp = space_;
  Tensor x = be_.act_from_nchw(x_nchw, n, sp.in_channels, sp.in_height, sp.in_width);
  Fwd f{*this, *impl_, Ctx{be_, params_, bn_, true, bn_momentum_, false},
        lambda_fixed_ ? impl_->ones.data() : lam_.data(), nullptr};
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
