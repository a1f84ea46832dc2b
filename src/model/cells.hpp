// cells.hpp — the pieces the search network (Supergraph) and the retrain network
// (Network) are both made of, written once (docs/architecture.md, "model/"):
//
//  * ParamBuilder: parameters and BN statistics created in call order (that order
//    is the flat gradient buffer's layout and the files'), the initial values of
//    docs/method.md §9, and the MACs of the convolutions as built (§11.1);
//  * Ctx, bn_fwd/bn_bwd, conv: one execution context and the BN(+ReLU) and
//    convolution steps every cell uses;
//  * the cells with their parameter names, forward and backward: Stem, Op (conv
//    or pooling → BN + ReLU), Reduction (λ-weighted or plain sum of its two
//    branches) and Head (BN + ReLU → global average pool → [dropout] → FC).
//
// Each cell keeps what its backward needs in small named structs (ConvBn,
// OpActs) and frees them once its backward is done.  Internal to model/.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/model/search_space.hpp"
#include "dsonas/model/supergraph.hpp"  // Param, BnStats

namespace dsonas {
namespace cells {

constexpr float kBnEps = 2e-5f;
constexpr float kBnMomentum = 0.9f;

enum class Init { ConvGauss, FcGauss, Zero, One };

inline Shape act_shape(int64_t c, int64_t n, int64_t h, int64_t w) { return {c, n, h, w}; }
ConvDesc conv_desc(int cin, int cout, int k, int stride, int pad, int groups = 1);
/// The 3×3, stride 1, pad 1 pooling of a max3/avg3 op (docs/method.md §1.1).
PoolDesc op_pool(OpKind k);
/// Name of a block's k-th output 1×1 conv ("c01" .. "cNL", k from 0).
std::string out_conv_name(int k);

/// Unit u of stage s (0-based) and its geometry, set on a block type with the
/// fields s, u, F (width), H, W.
template <class Block>
void place_block(Block& b, const SearchSpace& sp, int s, int u) {
  b.s = s;
  b.u = u;
  b.F = sp.widths[static_cast<size_t>(s)];
  b.H = sp.stage_height(s);
  b.W = sp.stage_width(s);
}

/// Indices of one BN's parameters γ, β and its running statistics.
struct BnRef {
  int gamma = -1, beta = -1, stats = -1;
};

/// Creates the parameters of a network in call order.
class ParamBuilder {
 public:
  ParamBuilder(Backend& be, std::vector<Param>& params, std::map<std::string, int>& index, std::vector<BnStats>& bn)
      : be_(be), params_(params), index_(index), bn_(bn) {}
  int add(const std::string& name, const Shape& shape, Init init, bool frozen = false);
  /// γ (frozen at 1 when gamma_frozen), β and the running statistics of "prefix/…".
  BnRef add_bn(const std::string& prefix, int c, bool gamma_frozen = false);
  /// A convolution weight [cout, cin, k, k] whose output has out_hw positions;
  /// its MACs (weights × positions) count towards macs() while count_macs.
  int conv_w(const std::string& name, int cout, int cin, int k, double out_hw);
  void add_macs(double m) { macs_ += m; }
  bool count_macs = true;
  double macs() const { return macs_; }
  const Shape& shape(size_t i) const { return shapes_[i]; }
  /// Parameter i's initial values: deterministic in (seed, its name) (§9).
  std::vector<float> initial_values(size_t i, uint64_t seed) const;

 private:
  Backend& be_;
  std::vector<Param>& params_;
  std::map<std::string, int>& index_;
  std::vector<BnStats>& bn_;
  std::vector<Shape> shapes_;
  std::vector<Init> inits_;
  double macs_ = 0;
};

/// Execution context of one forward/backward pass.
struct Ctx {
  Backend& be;
  std::vector<Param>& P;
  std::vector<BnStats>& S;
  bool train;                    // batch statistics (and running-statistics update) vs running statistics
  float momentum = kBnMomentum;  // running-statistics momentum
  bool wgrads = true;            // backward computes weight gradients
};

/// BN + ReLU of x into y (allocated unless y is a view already), keeping the
/// batch mean and inverse std in sm, si when training.
void bn_fwd(Ctx& c, const BnRef& b, const Tensor& x, Tensor& y, Tensor& sm, Tensor& si);
/// Its backward: dx (= beta_dx·dx + …), and γ, β gradients when c.wgrads (γ's unless frozen).
void bn_bwd(Ctx& c, const BnRef& b, const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& sm,
            const Tensor& si, Tensor& dx, float beta_dx = 0.f);
/// A new tensor: x convolved with parameter w.
Tensor conv(Ctx& c, const ConvDesc& d, const Tensor& x, int w);

/// An evaluation batch's result from its logits: loss sum and top-1 hits
/// (softmax cross-entropy), and the logits on the host when logits_out is given.
StepResult score_batch(Backend& be, const Tensor& logits, const int32_t* labels, int n, std::vector<float>* logits_out);

/// What a convolution followed by BN + ReLU keeps: the convolution's output c,
/// the BN's output r, its batch mean and inverse std.
struct ConvBn {
  Tensor c, r, mean, inv;
  void clear() { c = r = mean = inv = Tensor(); }
};

/// The stem: conv3 (3×3 conv → BN + ReLU) or imagenet2x (two stride-2 3×3
/// convs, each → BN + ReLU).
struct Stem {
  int w1 = -1, w2 = -1;
  BnRef bn1, bn2;
  Tensor x;
  ConvBn a1, a2;
  void build(ParamBuilder& pb, const SearchSpace& sp);
  Tensor forward(Ctx& c, const SearchSpace& sp, const Tensor& x);
  void backward(Ctx& c, const SearchSpace& sp, const Tensor& dout);
  void clear_acts() {
    x = Tensor();
    a1.clear();
    a2.clear();
  }
};

/// What an op keeps: its input a (a sum of nodes; the block input itself at
/// level 1), the depthwise output t1 (sep ops), the pre-BN output t2, the node
/// h (BN + ReLU of t2), the BN's batch mean and inverse std.
struct OpActs {
  Tensor a, t1, t2, h, mean, inv;
};

/// An op of a block: sepk (depthwise k×k → 1×1) or 3×3 pooling, then BN + ReLU.
struct Op {
  OpKind kind = OpKind::Sep3;
  int dw = -1, pw = -1;
  BnRef bn;
  /// Parameters "<prefix>dw/weight", "<prefix>pw/weight" (sep ops), "<prefix>bn".
  void build(ParamBuilder& pb, const std::string& prefix, OpKind k, int F, double hw, bool gamma_frozen);
  /// A.h = op(a); A.h may be a view (into the block's stacked outputs) already.
  void forward(Ctx& c, int F, const Tensor& a, OpActs& A) const;
  /// From dh (released here): target = beta·target + ∂/∂a; frees A's t1, t2, mean, inv.
  void backward(Ctx& c, int F, const Tensor& a, OpActs& A, Tensor& dh, Tensor& target, float beta) const;
};

/// The ops of a normal block wired in levels (docs/method.md §1.2), written once for
/// the search network (every op of the space, λ-weighted sums, ops switched off as
/// their λ die) and the retrained one (its live ops only, plain sums, drop-path):
///  * positions p, level-major: level l's ops are [level_begin[l−1], level_begin[l]);
///    node 0 is the block input x, node 1 + p the output h of the op at p;
///  * an op reads one node as it is (`direct`: the block input at level 1, or a
///    retrained op with one input) or its row of its level's sum: one wsum call
///    per level over nodes 0 … K−1, J rows, the coefficients given per pass (λ, or
///    ones) and a live mask;
///  * `stacked`: the positions whose outputs lie in one tensor hcat along C, in
///    order (the block output's 1×1 convs are then one GEMM over hcat).
struct OpGraph {
  struct Slot {
    Op op;
    OpActs acts;
    bool alive = true;
    int direct = -1;                            // the node read as it is, or −1: a sum row
    std::vector<int> in_nodes;                  // a sum row's nodes (drop-path)
    std::vector<std::vector<float>> in_scales;  // drop-path: their per-sample scales this step
  };
  struct LevelSum {
    int K = 0;
    std::vector<int> rows;      // the position of row j, −1 for a row without an op
    std::vector<uint8_t> live;  // J×K
  };
  std::vector<Slot> ops;
  std::vector<int> level_begin;  // L + 1 entries
  std::vector<LevelSum> sums;    // level l ≥ 2 → sums[l − 2]
  std::vector<int> stacked;
  Tensor x, hcat;
  bool dp = false;  // this step: drop-path on every input edge of the sums (their rows' in_scales)

  int levels() const { return static_cast<int>(level_begin.size()) - 1; }
  /// Node i, or null (a dead op's).
  const Tensor* node(int i) const;
  /// x → every live op's output; coeff[l − 2]: level l's J×K sum coefficients.  In
  /// evaluation (!c.train) each level's inputs and the ops' saved tensors are freed
  /// as soon as the level is done.
  void forward(Ctx& c, int F, int H, int W, const Tensor& x, const std::vector<const float*>& coeff);
  /// From dhcat (∂/∂hcat, its slices the stacked ops' output gradients): every live
  /// op's backward and the sums' (dcoeff[l − 2]: where level l's coefficient
  /// gradients accumulate, or null), into dx (the block input's gradient so far).
  /// need_dx = false: nothing into x or into level-1 ops (their backward is skipped).
  void backward(Ctx& c, int F, const Tensor& dhcat, Tensor& dx, const std::vector<const float*>& coeff,
                const std::vector<float*>& dcoeff, bool need_dx);
  void clear_acts();
};

/// A normal block's output: BN + ReLU of the sum of its output branches' 1×1
/// convs — one GEMM of the concatenated (scaled) branch weights over the op
/// outputs stacked along C — plus the shortcut: the first block of a stage a 1×1
/// conv → BN + ReLU of the block input, the others the input itself.
struct BlockOutput {
  bool first = false;      // 1×1 shortcut
  std::vector<int> out_w;  // 1×1 weights of the branches
  BnRef out_bn;            // after the GEMM
  int id_w = -1;           // the shortcut's weight and BN (first)
  BnRef id_bn;
  Tensor wcat;      // the concatenated scaled weights [F, cols·F, 1, 1]
  ConvBn y;         // the GEMM's result (c), BN + ReLU of it (r)
  ConvBn sc;        // first block: the shortcut's 1×1 conv (c) and BN (r)
  Tensor shortcut;  // what the branches are added to: sc.r, or the block input
  /// Parameters "<prefix>out/cKK/weight" for the branch indices ks (k from 0),
  /// "<prefix>out/bn" (with_bn), then the shortcut's "<prefix>id/conv/weight" and
  /// "<prefix>id/bn" (γ frozen when id_gamma_frozen).
  void build(ParamBuilder& pb, const std::string& prefix, int F, double hw, const std::vector<int>& ks, bool with_bn,
             bool id_gamma_frozen);
  /// stacked: the op outputs [cols·F, n, H, W] of the GEMM's columns ws (weights)
  /// with scale[cols]; null: the block has no branch (its output is the shortcut).
  Tensor forward(Ctx& c, int F, const Tensor& x, const Tensor* stacked, const std::vector<const Tensor*>& ws,
                 const float* scale);
  /// The shortcut's and the output BN's backward: returns the block input's
  /// gradient so far (dout itself for an identity shortcut; undefined when
  /// !need_dx) and, with branches, *dy = ∂/∂(the GEMM's result).
  Tensor backward(Ctx& c, int F, const Tensor& x, const Tensor& dout, bool branches, bool need_dx, Tensor* dy);
  void clear_output() {
    wcat = shortcut = Tensor();
    y.clear();
    sc.clear();
  }
};

/// A reduction block: two stride-2 branches (1×1 and 3×3 conv, each → BN + ReLU)
/// summed, λ-weighted in the search, plainly in the retrained network (§6.3).
struct Reduction {
  int s = 0, Fin = 0, Fout = 0, H = 0, W = 0;
  uint8_t live[2] = {1, 1};
  int w[2] = {-1, -1};
  BnRef bn[2];
  Tensor x;
  ConvBn br[2];
  /// Parameters "<prefix>b<i>/conv/weight", "<prefix>b<i>/bn" of the branches given.
  void build(ParamBuilder& pb, const SearchSpace& sp, int stage, const std::string& prefix, const bool branch[2],
             bool gamma_frozen);
  /// lam: the two λ (a λ-weighted sum), or null (the plain sum of the live branches).
  Tensor forward(Ctx& c, const Tensor& x, const float* lam);
  /// dlam: where the λ gradients accumulate (null: none).
  Tensor backward(Ctx& c, const Tensor& dout, const float* lam, float* dlam);
  void clear_acts() {
    x = Tensor();
    br[0].clear();
    br[1].clear();
  }
};

/// Inverted dropout before the classifier (§2.4): rate, mask key, the batch's
/// first sample (its masks are a function of the global sample index).
struct Dropout {
  float rate = 0;
  uint64_t key = 0;
  int64_t sample_base = 0;
};

/// The head: BN + ReLU → global average pool → [dropout] → FC.
struct Head {
  BnRef bn;
  int fc_w = -1, fc_b = -1;
  Tensor x, hb, mean, inv, pooled, dropped, logits;
  /// Parameters "head/bn", "head/fc/weight", "head/fc/bias" (its MACs counted).
  void build(ParamBuilder& pb, const SearchSpace& sp);
  /// drop: dropout while training (null or rate 0: none).
  Tensor forward(Ctx& c, const Tensor& x, int classes, const Dropout* drop);
  Tensor backward(Ctx& c, const Tensor& dlogits, const Dropout* drop);
  void clear_acts() { x = hb = mean = inv = pooled = dropped = logits = Tensor(); }
};

}  // namespace cells
}  // namespace dsonas
