// network.hpp — the retrain-time network of a derived architecture (docs/method.md
// §6.3), over a Backend.
//
// Design note.  A Network is the Supergraph with λ discarded: every live op of
// every block (Architecture::blocks) with the same op definitions (sep conv =
// depthwise k×k → pointwise 1×1 → BN → ReLU; pooling 3×3 s1 → BN → ReLU), a level ≥ 2
// op reading the PLAIN sum of its live inputs, the live output branches as 1×1
// convs → sum → BN → ReLU → + shortcut (id_conv in the first unit of a stage), a
// block without branches reduced to its shortcut, reductions as the unweighted sum
// of their live branches, and the same stem and head.  Parameters have the
// Supergraph's names for the same pieces ("s1/u2/l3/o1/dw/weight",
// "s1/u2/out/c05/weight", "s1/red/b1/bn/gamma", "head/fc/bias", ...), so a
// Supergraph's weights load by name.  Every BN γ is learned (§1.1, §6.3 step 4);
// weights are initialised as in §9 (the caller never loads search weights:
// §6.3 step 3).  BN: eps 2e-5, running momentum 0.9, batch statistics per rank.
//
// Retraining extras (all off by default, NetworkOptions):
//  * dropout before the classifier (inverted, rate `dropout`, §2.4);
//  * drop-path (§2.4) on every input edge of a level ≥ 2 op with more than one live
//    input (before the sum) and on every live output branch (after its 1×1 conv,
//    before the sum — applied to the branch's input, which is the same number
//    since a 1×1 conv is linear per sample).  Block (s, u) (1-based) has layer
//    index n = L·Σ_{s'<s}(units_{s'} + 1) + L·(u − 1) and depth
//    D = L·Σ_s(units_s + 1) + 2 (110 for CIFAR: n = 36(s−1) + 4(u−1)); its final
//    drop probability is p_final = drop_path·(n + 1)/(D + 2) and at training
//    progress t ∈ [0, 1] it drops with p = p_final·t.  One Bernoulli(keep = 1 − p)
//    draw per sample and site, scaled by 1/keep, is a pure function of
//    (seed, step, site, global sample index) through core/rng.hpp's mix64, so runs
//    are deterministic and resume exactly;
//  * the auxiliary head (§2.3) on the output of the last reduction block: BN → ReLU
//    → avg pool 5×5, pad 0, stride H − 5 (2×2 out: stride 3 at CIFAR's 8×8, 2 at
//    ImageNet's 7×7) → 1×1 conv → BN → ReLU → 2×2 conv (valid) → BN → ReLU →
//    global average pool → FC, weight 0.4 in the loss, same labels;
//  * label smoothing (MXNet smooth_alpha: 1 − ε on the label, ε/(K−1) elsewhere)
//    on the main and the aux loss.
//
// All gradients live in one flat device buffer (flat_grad(), parameters in params()
// order) so a data-parallel run reduces them with one collective.  Gradients are of
// the loss as scaled by the caller (grad_scale = 1/global batch, §4.1):
//   objective = Σ_n CE_main(n)·grad_scale + aux_weight·Σ_n CE_aux(n)·grad_scale.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/supergraph.hpp"  // Param, BnStats, StepResult

namespace dsonas {

struct NetworkOptions {
  double dropout = 0.0;          ///< p_drop before the classifier (CIFAR: 0.4), in [0, 1)
  double drop_path = 0.0;        ///< deepest-block final drop rate scale (CIFAR: 0.5), in [0, 1)
  bool aux_head = false;         ///< auxiliary head on the last reduction's output (§2.3)
  double aux_weight = 0.4;       ///< its loss weight
  int aux_mid_channels = 128;    ///< aux 1×1 conv width
  int aux_out_channels = 768;    ///< aux 2×2 conv width
  double label_smoothing = 0.0;  ///< ε (ImageNet: 0.1), in [0, 1)

  /// Checks every field; fails with exit 2 naming it ("retrain.dropout", ...).
  void validate() const;
  /// "key=value;..." (stored in network files; the aux fields decide the parameter set).
  std::string to_string() const;
  /// Parses to_string()'s output; fails with exit 3 naming `source`.
  static NetworkOptions from_string(const std::string& s, const std::string& source);
};

/// StepResult (main head: Σ CE as optimised, i.e. label-smoothed when ε > 0, and
/// top-1 hits) plus the aux head's Σ CE (unweighted) and hits; 0 without aux head.
struct NetStepResult : StepResult {
  double aux_loss_sum = 0;
  int64_t aux_correct = 0;
};

class Network {
 public:
  /// Builds the network of `arch` at its own width (use Architecture::at_width for
  /// another) and initialises the parameters from `seed` (§9; each tensor from its
  /// own stream, keyed by its name).  Fails with exit 2 on bad options or an aux
  /// head that does not fit (no reduction, or a non-square map under 6×6 there).
  Network(const Architecture& arch, Backend& backend, uint64_t seed, const NetworkOptions& opt = {});
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  const Architecture& architecture() const { return arch_; }
  const SearchSpace& space() const { return arch_.space(); }
  const NetworkOptions& options() const { return opt_; }
  uint64_t seed() const { return seed_; }
  Backend& backend() { return be_; }

  // ---- parameters ---------------------------------------------------------
  /// Every parameter (none frozen), with value, grad (view into flat_grad()) and NAG momentum.
  std::vector<Param>& params() { return params_; }
  Param& param(const std::string& name);
  bool has_param(const std::string& name) const { return param_index_.count(name) != 0; }
  std::vector<BnStats>& bn_stats() { return bn_; }
  /// The flat gradient buffer: every parameter's gradient, in params() order.
  Tensor& flat_grad() { return flat_grad_; }
  int64_t num_weights() const { return flat_grad_.numel(); }
  /// Weight decay of every parameter (params() order) for retraining, docs/method.md §4.2:
  /// wd on names ending in "weight" or "gamma" (BN γ IS decayed), 0 on β and biases.
  std::vector<float> weight_decays(float wd) const;

  // ---- compute ------------------------------------------------------------
  /**
   * Training-mode forward + loss + backward of one local batch.  x_nchw: [n, C, H, W]
   * host floats; labels: n host ints in [0, classes) (else exit 2 naming the index and
   * value); n ≥ 1.  The gradient buffer is zeroed first.  `step` (the global step
   * count) and `sample_base` (global index of this batch's first sample, e.g.
   * rank·local batch) key the dropout and drop-path masks; `progress` ∈ [0, 1] is the
   * drop-path schedule position (the reference uses min(1, (step + 1)/total steps)).
   * BN running statistics are updated.
   */
  NetStepResult train_step(const float* x_nchw, const int32_t* labels, int n, float grad_scale, int64_t step,
                           double progress, int64_t sample_base = 0);
  /// Inference-mode forward (running BN statistics; no dropout, drop-path or aux head):
  /// adds plain (unsmoothed) CE and hits; logits [n, classes] to *logits_out if given.
  NetStepResult eval_batch(const float* x_nchw, const int32_t* labels, int n, std::vector<float>* logits_out = nullptr);
  /// Logits of the last train_step (host copy, main head), for tests.
  const std::vector<float>& last_logits() const { return last_logits_; }
  const std::vector<float>& last_aux_logits() const { return last_aux_logits_; }

  // ---- structure ------------------------------------------------------------
  /// MACs / parameters of the inference network (aux head excluded: it is discarded
  /// after training), counted from the tensors and convolutions actually built,
  /// with §11.1's conventions — so they equal Architecture::macs() / params().
  double macs() const { return macs_; }
  double params_count() const { return params_count_; }
  /// Parameters of the aux head alone (0 without it).
  double aux_params_count() const { return aux_params_count_; }

  /// One drop-path site (an input edge of a multi-input op, or an output branch).
  struct DropPathSite {
    std::string name;  // "s1/u2/l3/o1/in/l1/o2" (edge l1/o2 → l3/o1) or "s1/u2/out/c05" (branch)
    int block = 0;     // index into architecture().blocks()
  };
  const std::vector<DropPathSite>& drop_path_sites() const { return sites_; }
  /// Final drop probability p_final of normal block `block` (index into blocks()).
  double drop_path_final(int block) const;
  /// The per-sample scales (0 or 1/keep, keep = 1 − p_final·clamp(progress, 0, 1)) the
  /// site applies at `step` to samples sample_base .. sample_base + n − 1; all 1 when
  /// the drop probability is 0.  Exactly what train_step uses.
  std::vector<float> drop_path_scales(const std::string& site, int block, int64_t step, double progress, int n,
                                      int64_t sample_base) const;
  /// The key of the classifier-dropout mask at `step` (see Backend::dropout_apply;
  /// element (i, c) of the local [n, C] features has index (sample_base + i)·C + c).
  uint64_t dropout_key(int64_t step) const;

  struct Impl;

 private:
  Architecture arch_;
  Backend& be_;
  uint64_t seed_;
  NetworkOptions opt_;
  std::vector<Param> params_;
  std::map<std::string, int> param_index_;
  std::vector<BnStats> bn_;
  Tensor flat_grad_;
  double macs_ = 0, params_count_ = 0, aux_params_count_ = 0;
  std::vector<DropPathSite> sites_;
  std::vector<float> last_logits_, last_aux_logits_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsonas
