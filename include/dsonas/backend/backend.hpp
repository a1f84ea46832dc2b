// backend.hpp — the compute interface the model is written against.
//
// One virtual method per primitive (docs/design.md §4).  CpuBackend (OpenBLAS GEMMs,
// own OpenMP kernels) and CudaBackend (cuDNN, cuBLAS, own kernels) implement it;
// Supergraph and Network are written once on top.  Nothing above backend/
// includes a vendor header.
//
// Conventions every implementation follows:
//  * Activations are 4-D tensors with shape {C, N, H, W} stored channel-major
//    ("CNHW": element (c,n,h,w) at ((c*N + n)*H + h)*W + w).  With this layout a
//    1×1 convolution of the whole batch is one GEMM [Cout,Cin]×[Cin,N·H·W] and a
//    per-channel reduction (BN) is a contiguous run.  act_from_nchw/act_to_nchw
//    convert at the model's edges.
//  * Conv weights are OIHW ([Cout, Cin/groups, K, K]); linear weights [out, in];
//    "matrix" tensors ([N, features]) are row-major.
//  * alpha/beta follow cuDNN: out = alpha·result + beta·out (beta = 0 overwrites,
//    and out may then hold garbage or NaN beforehand).
//  * Results are deterministic for a given thread count: reductions use fixed
//    partitions and fixed summation order, never atomics.
//  * λ values are host floats (they are few and every rank holds them); their
//    gradients are accumulated into device memory (the flat gradient buffer).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dsonas/core/tensor.hpp"

namespace dsonas {

/// A 2-D convolution, square kernel.  groups is 1 (dense) or Cin == Cout
/// (depthwise).  Output size: (in + 2·pad − k)/stride + 1.
struct ConvDesc {
  int cin = 0, cout = 0, k = 1, stride = 1, pad = 0, groups = 1;
  int out_size(int in) const { return (in + 2 * pad - k) / stride + 1; }
  bool depthwise() const { return groups > 1; }
  Shape weight_shape() const { return {cout, cin / groups, k, k}; }
};

enum class PoolKind { Max, Avg };

/// Pooling, square window.  Max ignores padded cells; Avg counts them in the
/// divisor (always k², count_include_pad, as MXNet 1.2.1).
struct PoolDesc {
  PoolKind kind = PoolKind::Max;
  int k = 3, stride = 1, pad = 1;
  int out_size(int in) const { return (in + 2 * pad - k) / stride + 1; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual int threads() const = 0;
  /// Bytes of device memory still free (CUDA: cudaMemGetInfo), for decisions
  /// such as --recompute auto; -1 where the backend has no such budget (CPU).
  virtual int64_t memory_free_bytes() const { return -1; }

  // ---- memory ---------------------------------------------------------------
  Tensor alloc(const Shape& s) { return Tensor::empty(s, device()); }
  virtual void fill(Tensor& t, float v) = 0;
  /// dst = src, same element count, both on this device.
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  /// Raw element copies between host memory and a tensor of this device.
  virtual void upload(const float* host, Tensor& dst) = 0;
  virtual void download(const Tensor& src, float* host) = 0;
  /// Activations from/to host NCHW.
  virtual Tensor act_from_nchw(const float* host, int n, int c, int h, int w) = 0;
  virtual void act_to_nchw(const Tensor& act, float* host) = 0;
  virtual void synchronize() {}

  // ---- convolution ----------------------------------------------------------
  /// y = alpha·conv(x, w) + beta·y.  x {Cin,N,H,W}, y {Cout,N,Ho,Wo}.
  virtual void conv_forward(const ConvDesc& d, const Tensor& x, const Tensor& w, Tensor& y, float alpha = 1.f,
                            float beta = 0.f) = 0;
  /// dx = alpha·conv_transpose(dy, w) + beta·dx.
  virtual void conv_backward_data(const ConvDesc& d, const Tensor& dy, const Tensor& w, Tensor& dx, float alpha = 1.f,
                                  float beta = 0.f) = 0;
  /// dw = alpha·(∂/∂w of <dy, conv(x,w)>) + beta·dw.
  virtual void conv_backward_filter(const ConvDesc& d, const Tensor& x, const Tensor& dy, Tensor& dw, float alpha = 1.f,
                                    float beta = 0.f) = 0;

  // ---- pooling --------------------------------------------------------------
  virtual void pool_forward(const PoolDesc& d, const Tensor& x, Tensor& y) = 0;
  /// dx = grad + beta·dx.  Max pooling routes each output's gradient to the
  /// first (lowest h, then w) maximal input of its window; y is the forward output.
  virtual void pool_backward(const PoolDesc& d, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                             float beta = 0.f) = 0;

  // ---- batch-norm fused with ReLU ------------------------------------------
  /// Training mode: per channel, batch mean m and biased variance v over
  /// (N,H,W); y = relu(gamma·(x − m)/sqrt(v + eps) + beta).  Saves m and
  /// 1/sqrt(v+eps) in save_mean/save_invstd {C}.  Running statistics:
  /// run = momentum·run + (1 − momentum)·batch, with the unbiased variance
  /// v·M/(M−1) (M = N·H·W) going into run_var.  With relu = false, no ReLU.
  virtual void bn_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& run_mean,
                                Tensor& run_var, float momentum, float eps, Tensor& y, Tensor& save_mean,
                                Tensor& save_invstd, bool relu = true) = 0;
  /// Inference mode with running statistics.
  virtual void bn_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& run_mean,
                                const Tensor& run_var, float eps, Tensor& y, bool relu = true) = 0;
  /// Backward of bn_forward_train.  y is its output (the ReLU mask is y > 0).
  /// dx = grad + beta_dx·dx.  dgamma/dbeta (each may be null) are overwritten.
  virtual void bn_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                           const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor* dgamma,
                           Tensor* dbeta, bool relu = true, float beta_dx = 0.f) = 0;

  // ---- λ-weighted sums (the supergraph's edges) ------------------------------
  /// For j < J: ys[j] = Σ_k lam[j·K + k]·xs[k] over the k with live[j·K + k] != 0.
  /// All tensors have the same shape.  A row with no live entry gives zeros.
  /// Every input is read once for all J outputs.  xs[k] may be null when
  /// column k has no live entry, ys[j] may be null when row j has none (dead
  /// ops and nodes of a pruned block have no tensors at all).
  virtual void wsum_forward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                            const std::vector<Tensor*>& ys) = 0;
  /// Backward of wsum_forward over the live entries:
  ///   dlam[j·K + k] += <dys[j], xs[k]>     (dlam: device memory, J·K floats;
  ///                                          may be null: no λ gradient wanted)
  ///   dxs[k]        += Σ_j lam[j·K + k]·dys[j]   (dxs[k] may be null: skipped)
  /// Null xs/dys entries are allowed for columns/rows without live entries.
  virtual void wsum_backward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                             const std::vector<const Tensor*>& dys, const std::vector<Tensor*>& dxs, float* dlam) = 0;

  // ---- the block output's λ-scaled 1×1 convolutions as one GEMM ---------------
  /// Concatenates J weights ws[j] ({O, I, 1, 1} each) into out {O, J·I, 1, 1}
  /// scaled per block: out[o, j·I + i] = scale[j]·ws[j][o, i] (scale host floats).
  /// With the op outputs stacked along C ({J·I, N, H, W}, contiguous in CNHW),
  /// Σ_j W_j (λ_j h_j) is then one 1×1 convolution.
  virtual void concat_scaled_columns(const std::vector<const Tensor*>& ws, const float* scale, Tensor& out) = 0;
  /// Backward through concat_scaled_columns, given m = ∂L/∂out {O, J·I, 1, 1}:
  ///   dws[j][o,i] += scale[j]·m[o, j·I + i]       (dws[j] may be null)
  ///   *dscale[j]  += Σ_{o,i} ws[j][o,i]·m[o, j·I + i]   (device floats; may be null)
  virtual void concat_scaled_columns_backward(const std::vector<const Tensor*>& ws, const float* scale, const Tensor& m,
                                              const std::vector<Tensor*>& dws, const std::vector<float*>& dscale) = 0;

  // ---- elementwise ------------------------------------------------------------
  /// y += alpha·x
  virtual void axpy(float alpha, const Tensor& x, Tensor& y) = 0;
  /// y = a + b
  virtual void add(const Tensor& a, const Tensor& b, Tensor& y) = 0;
  /// *out += <a, b> (out: one float of device memory).
  virtual void dot_accumulate(const Tensor& a, const Tensor& b, float* out) = 0;
  /// g = min(hi, max(lo, g))
  virtual void clip(Tensor& g, float lo, float hi) = 0;
  /// False if any element is NaN or ±Inf.
  virtual bool all_finite(const Tensor& t) = 0;
  /// Sum of squares (for logging norms).
  virtual double sum_squares(const Tensor& t) = 0;

  // ---- head ---------------------------------------------------------------
  /// x {C,N,H,W} -> y [N,C] (mean over H·W).
  virtual void global_avg_pool_forward(const Tensor& x, Tensor& y) = 0;
  /// dx = broadcast(dy / (H·W)) + beta·dx.
  virtual void global_avg_pool_backward(const Tensor& dy, Tensor& dx, float beta = 0.f) = 0;
  /// y[N,O] = x[N,I]·wᵀ + b.
  virtual void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) = 0;
  /// dx (= , may be null), dw (=, may be null), db (=, may be null).
  virtual void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                               Tensor* db) = 0;
  /// Softmax cross-entropy over logits [N,K] with host labels (each in [0,K)).
  /// dlogits = grad_scale·(softmax − onehot).  Adds Σ CE to *loss_sum and the
  /// number of top-1 hits to *correct (both host).
  virtual void softmax_xent(const Tensor& logits, const int32_t* labels, float grad_scale, Tensor& dlogits,
                            double* loss_sum, int64_t* correct) = 0;

  // ---- optimiser ------------------------------------------------------------
  /// MXNet NAG (docs/method.md §4.2): g ← g + wd·w; m ← μ·m + g; w ← w − lr·(g + μ·m).
  /// g is not modified.
  virtual void nag_update(Tensor& w, const Tensor& g, Tensor& m, float lr, float momentum, float wd) = 0;

  // ---- retraining (model/network.hpp) ------------------------------------------
  /// Label-smoothed softmax cross-entropy, MXNet `SoftmaxOutput(smooth_alpha)`
  /// convention: per row n the target is q_k = 1 − smoothing for k = label,
  /// smoothing/(K−1) for every other k.  CE_n = −Σ_k q_k·log softmax(z_n)_k,
  /// dlogits = grad_scale·(softmax − q).  Adds Σ_n CE_n to *loss_sum and the
  /// number of rows whose argmax (lowest index on ties) is the label to *correct
  /// (host; either may be null).  smoothing = 0 gives softmax_xent's numbers.
  /// 0 ≤ smoothing < 1; a label outside [0,K) fails with exit 2 naming its
  /// index and value.
  virtual void softmax_xent_smoothed(const Tensor& logits, const int32_t* labels, float smoothing, float grad_scale,
                                     Tensor& dlogits, double* loss_sum, int64_t* correct) = 0;
  /// Inverted dropout with a counter-based mask (no state, no mask tensor):
  ///   y[i] = x[i]·(U_i < keep ? 1/keep : 0),   keep = 1 − p (float),
  ///   U_i = (mix64(key, 0x64726f706f7574, index_base + i) >> 40) · 2⁻²⁴
  /// with mix64 from core/rng.hpp and i the flat element index of x.  The mask
  /// is a pure function of (key, index), so the backward pass is the same call
  /// on dy.  0 ≤ p < 1; x and y may be the same tensor.
  virtual void dropout_apply(const Tensor& x, float p, uint64_t key, int64_t index_base, Tensor& y) = 0;
  /// Per-(group, sample) scaling (drop-path masks): x and y are {C,N,H,W}, the
  /// C channels form `groups` equal consecutive groups of C/groups channels, and
  ///   y[c,n,h,w] = scale[(c / (C/groups))·N + n]·x[c,n,h,w] + beta·y[c,n,h,w]
  /// with `scale` groups·N host floats (beta = 0: y is not read).  Linear and
  /// diagonal, so it is its own adjoint: the backward is the same call on dy.
  /// x and y may be the same tensor.
  virtual void scale_samples(const Tensor& x, int groups, const float* scale, Tensor& y, float beta = 0.f) = 0;
};

/// Arithmetic of the CUDA backend's matrix products (`--gpu-math`):
///  FP32  plain FP32 FMA everywhere (the default; matches the CPU to rounding),
///  TF32  cuBLAS and cuDNN may use TF32 tensor cores (inputs rounded to a 10-bit
///        mantissa, FP32 accumulation),
///  BF16  cuBLAS GEMMs (the 1×1 convolutions, the classifier, the im2col path)
///        round their inputs to bfloat16 (8-bit mantissa) on tensor cores with
///        FP32 accumulation; cuDNN convolutions as TF32.
/// Storage, element-wise kernels and every reduction stay FP32 in all three.
enum class GpuMath { FP32, TF32, BF16 };

/// "fp32" | "tf32" | "bf16" → GpuMath; anything else is a usage error naming
/// `field`.
GpuMath gpu_math_from(const std::string& name, const char* field = "--gpu-math");
const char* gpu_math_name(GpuMath m);

/// The backend for a device. threads ≤ 0 means "all cores" (CPU only).  The
/// CPU computes in FP32 only: math other than FP32 with Device::CPU is a usage
/// error.
std::unique_ptr<Backend> make_backend(Device dev, int threads, GpuMath math = GpuMath::FP32);

/// The BLAS library the CPU backend runs with, as it describes itself
/// ("OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64").  For dsonas
/// --version (run/version_report.hpp).
std::string blas_library_config();

}  // namespace dsonas
