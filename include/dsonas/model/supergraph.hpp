// supergraph.hpp — the DSO-NAS search network over a Backend.
//
// Holds every parameter (readable hierarchical names, docs/design.md §5), the BN
// running statistics, the λ vector with its live mask, and an execution plan
// derived from that mask: dead ops, edges and output branches are not in the
// plan, so they cost neither time nor memory (docs/design.md §3).  forward() keeps
// what backward() needs; backward() computes the weight gradients only when
// asked (a λ-step needs none, docs/method.md §4.4) and the λ gradients only when
// asked (pretraining needs none).
//
// All gradients (weights, then λ) live in one flat device buffer, so a
// data-parallel run reduces them with one collective.  Gradients are of the
// loss as scaled by the caller (grad_scale = 1/global batch, §4.1).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/model/search_space.hpp"

namespace dsonas {

/// One learnable tensor.  `grad` is a view into the flat gradient buffer;
/// frozen parameters (BN γ fixed to 1, docs/method.md §1.1) have no gradient.
struct Param {
  std::string name;
  Tensor value, grad, momentum;
  bool frozen = false;
};

/// Running statistics of one BN, keyed by its prefix (e.g. "s1/u1/out/bn").
struct BnStats {
  std::string prefix;
  Tensor mean, var;
};

/// A named range of the flat λ vector (e.g. "s1/u2/lambda/l3/o1", 9 entries).
struct LambdaGroup {
  std::string name;
  int offset = 0, size = 0;
};

struct StepResult {
  double loss_sum = 0;  // Σ CE over the local batch
  int64_t correct = 0;  // top-1 hits
  int n = 0;            // images
};

class Supergraph {
 public:
  Supergraph(const SearchSpace& space, Backend& backend, uint64_t seed);
  ~Supergraph();
  Supergraph(const Supergraph&) = delete;
  Supergraph& operator=(const Supergraph&) = delete;

  const SearchSpace& space() const { return space_; }
  Backend& backend() { return be_; }

  // ---- parameters ---------------------------------------------------------
  std::vector<Param>& params() { return params_; }
  Param& param(const std::string& name);
  std::vector<BnStats>& bn_stats() { return bn_; }
  /// The flat gradient buffer: [all non-frozen params | all λ].
  Tensor& flat_grad() { return flat_grad_; }
  /// dλ inside the flat buffer (device), total_lambda() floats.
  Tensor& lambda_grad() { return lambda_grad_; }
  int64_t num_weights() const { return num_weights_; }

  // ---- λ (host; identical on every rank) ---------------------------------
  std::vector<float>& lambda() { return lam_; }
  std::vector<uint8_t>& mask() { return mask_; }
  const std::vector<LambdaGroup>& lambda_groups() const { return groups_; }
  /// Recompute the execution plan from the mask (call after pruning).
  void rebuild_plan();
  /// λ are treated as 1 everywhere and get no gradient (pretraining).
  void set_lambda_fixed(bool fixed) {
    lambda_fixed_ = fixed;
    rebuild_plan();
  }

  // ---- compute ------------------------------------------------------------
  /// Training-mode forward + loss + backward for one local batch.
  /// x_nchw: [n, C, H, W] host floats; labels: n host ints.
  /// The gradient buffer is zeroed first; weight gradients are computed iff
  /// weight_grads, λ gradients iff lambda_grads (and λ not fixed).
  StepResult train_step(const float* x_nchw, const int32_t* labels, int n, float grad_scale, bool weight_grads,
                        bool lambda_grads);
  /// Inference-mode forward (running BN statistics); returns logits [n,classes] on host
  /// and adds to the loss/correct counts.
  StepResult eval_batch(const float* x_nchw, const int32_t* labels, int n, std::vector<float>* logits_out = nullptr);
  /// Training-mode forward only (BN in training mode, running stats updated);
  /// used to re-estimate BN statistics (docs/method.md §12).
  void forward_train_only(const float* x_nchw, int n);
  /// Re-estimate the BN running statistics (docs/method.md §12): reset them, then
  /// run each batch forward in training mode, averaging the batch statistics
  /// with equal weights (cumulative average).  Weights and λ are unchanged.
  void reestimate_bn(const std::vector<const float*>& batches_nchw, int n);
  /// Per-block recomputation: forward keeps only each normal block's input and
  /// backward recomputes the block before differentiating it (the MXNet
  /// "mirror" of the reference code, docs/method.md §10.1 item 8).  Same numbers,
  /// about a third more time, a fraction of the memory.
  void set_recompute(bool on) { recompute_ = on; }
  bool recompute() const { return recompute_; }
  /// Called during backward whenever the weight gradients [from, num_weights())
  /// of the flat buffer are final (after the head, each reduction, each normal
  /// block, the stem): lets a data-parallel run reduce finished layers while
  /// the rest of the backward pass runs.  λ gradients are final only when
  /// train_step returns.  Empty function = no calls.
  void set_grad_ready_hook(std::function<void(int64_t from)> f) { grad_ready_ = std::move(f); }
  const std::function<void(int64_t)>& grad_ready_hook() const { return grad_ready_; }
  /// Bytes of activations a train_step with batch n keeps without recomputation.
  int64_t activation_bytes_estimate(int n) const;
  /// Logits of the last train_step (host copy), for tests.
  std::vector<float> last_logits() const { return last_logits_; }

  // ---- structure summaries -----------------------------------------------
  int live_ops() const;    // ops in the plan, over all normal blocks
  int live_edges() const;  // λ entries in the plan (edges + output branches + reduction branches)

  struct Impl;

 private:
  SearchSpace space_;
  Backend& be_;
  std::vector<Param> params_;
  std::map<std::string, int> param_index_;
  std::vector<BnStats> bn_;
  Tensor flat_grad_, lambda_grad_;
  int64_t num_weights_ = 0;
  std::vector<float> lam_;
  std::vector<uint8_t> mask_;
  std::vector<LambdaGroup> groups_;
  bool lambda_fixed_ = false;
  float bn_momentum_ = 0.9f;
  bool recompute_ = false;
  std::vector<float> last_logits_;
  std::function<void(int64_t)> grad_ready_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsonas
