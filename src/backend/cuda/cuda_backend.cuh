// cuda_backend.cuh — private to src/backend/cuda: the CUDA implementation of
// Backend.  See docs/design-notes.md ("The CUDA backend") for the design.
//
//  * All device work runs on the legacy default stream (stream 0), so kernels,
//    cuBLAS, cuDNN and copies are ordered and the caching allocator may hand a
//    freed block to the next request at once.  Results reach the host through
//    synchronous copies.
//  * Convolutions: 1×1 stride-1 unpadded dense = one cuBLAS GEMM over the whole
//    batch (CNHW makes it [Cout,Cin]×[Cin,N·H·W]); other dense = cuDNN with the
//    CNHW tensors described by strides (deterministic algorithms from the
//    heuristics, cached per shape), falling back to im2col + cuBLAS when cuDNN
//    supports no deterministic algorithm for the strided layout or refuses it
//    when run (cuda_status.hpp: cuDNN 9's NOT_SUPPORTED sub-codes and
//    misaligned pointers); depthwise =
//    own direct kernels.  DSONAS_CUDA_CONV=auto|cudnn|gemm and
//    DSONAS_CUDA_DW=own|cudnn override the choice (tests, benchmarks).
//  * Reductions: the two-pass scheme of cuda_common.cuh (fixed chunks, double
//    partials, fixed trees): bit-reproducible run to run.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "cuda_common.cuh"
#include "dsonas/backend/backend.hpp"

namespace dsonas {

/// The CUDA caching allocator (registered for Device::CUDA).
Allocator& cuda_allocator();

namespace cuda {

/// A device buffer from the caching allocator, grown on demand and kept for
/// the backend's lifetime (scratch space: reduction partials, workspaces).
class Scratch {
 public:
  Scratch() = default;
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  /// At least `bytes` bytes (contents undefined).
  void* get(size_t bytes);
  template <class T>
  T* as(size_t count) {
    return static_cast<T*>(get(count * sizeof(T)));
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

enum class ConvMode { Auto, Cudnn, Gemm };

/// cuDNN descriptors and chosen algorithms of one convolution shape.
struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  // Per direction (0 forward, 1 backward-data, 2 backward-filter): -2 not yet
  // chosen, -1 no deterministic supported algorithm (use the GEMM path).
  int algo[3] = {-2, -2, -2};
  size_t ws[3] = {0, 0, 0};
  // the math type the chosen algorithm runs with (its workspace was sized under
  // it): FMA under --gpu-math fp32, else the one the heuristics paired with the
  // algorithm; set on the (shared) descriptor before each direction runs
  cudnnMathType_t math[3] = {CUDNN_FMA_MATH, CUDNN_FMA_MATH, CUDNN_FMA_MATH};
  std::string algo_name[3];
  std::string error;  // a descriptor cuDNN rejected: every direction uses the GEMM path
  ~ConvPlan();
};

}  // namespace cuda

class CudaBackend final : public Backend {
 public:
  CudaBackend(int threads, GpuMath math);
  ~CudaBackend() override;
  Device device() const override { return Device::CUDA; }
  std::string name() const override { return name_; }
  int threads() const override { return nt_; }
  int64_t memory_free_bytes() const override;

  void fill(Tensor& t, float v) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void upload(const float* host, Tensor& dst) override;
  void download(const Tensor& src, float* host) override;
  Tensor act_from_nchw(const float* host, int n, int c, int h, int w) override;
  void act_to_nchw(const Tensor& act, float* host) override;
  void synchronize() override;

  void conv_forward(const ConvDesc& d, const Tensor& x, const Tensor& w, Tensor& y, float alpha, float beta) override;
  void conv_backward_data(const ConvDesc& d, const Tensor& dy, const Tensor& w, Tensor& dx, float alpha,
                          float beta) override;
  void conv_backward_filter(const ConvDesc& d, const Tensor& x, const Tensor& dy, Tensor& dw, float alpha,
                            float beta) override;

  void pool_forward(const PoolDesc& d, const Tensor& x, Tensor& y) override;
  void pool_backward(const PoolDesc& d, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                     float beta) override;

  void bn_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& run_mean, Tensor& run_var,
                        float momentum, float eps, Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                        bool relu) override;
  void bn_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& run_mean,
                        const Tensor& run_var, float eps, Tensor& y, bool relu) override;
  void bn_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                   const Tensor& save_invstd, Tensor& dx, Tensor* dgamma, Tensor* dbeta, bool relu,
                   float beta_dx) override;

  void wsum_forward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                    const std::vector<Tensor*>& ys) override;
  void wsum_backward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                     const std::vector<const Tensor*>& dys, const std::vector<Tensor*>& dxs, float* dlam) override;

  void concat_scaled_columns(const std::vector<const Tensor*>& ws, const float* scale, Tensor& out) override;
  void concat_scaled_columns_backward(const std::vector<const Tensor*>& ws, const float* scale, const Tensor& m,
                                      const std::vector<Tensor*>& dws, const std::vector<float*>& dscale) override;

  void axpy(float alpha, const Tensor& x, Tensor& y) override;
  void add(const Tensor& a, const Tensor& b, Tensor& y) override;
  void dot_accumulate(const Tensor& a, const Tensor& b, float* out) override;
  void clip(Tensor& g, float lo, float hi) override;
  bool all_finite(const Tensor& t) override;
  double sum_squares(const Tensor& t) override;

  void global_avg_pool_forward(const Tensor& x, Tensor& y) override;
  void global_avg_pool_backward(const Tensor& dy, Tensor& dx, float beta) override;
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override;
  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* db) override;
  void softmax_xent(const Tensor& logits, const int32_t* labels, float grad_scale, Tensor& dlogits, double* loss_sum,
                    int64_t* correct) override;

  void nag_update(Tensor& w, const Tensor& g, Tensor& m, float lr, float momentum, float wd) override;

  // retraining primitives (cuda_retrain.cu)
  void softmax_xent_smoothed(const Tensor& logits, const int32_t* labels, float smoothing, float grad_scale,
                             Tensor& dlogits, double* loss_sum, int64_t* correct) override;
  void dropout_apply(const Tensor& x, float p, uint64_t key, int64_t index_base, Tensor& y) override;
  void scale_samples(const Tensor& x, int groups, const float* scale, Tensor& y, float beta) override;

  // ---- internals shared by the .cu files -----------------------------------------
  cublasHandle_t cublas() const { return cublas_; }
  cudnnHandle_t cudnn() const { return cudnn_; }
  /// Scratch buffers by purpose (never two live uses of one slot at a time).
  enum Slot { kPartials, kWorkspace, kCol, kIdx, kSmall, kStage, kCoef, kParams, kNumSlots };
  cuda::Scratch& scratch(Slot s) { return scratch_[s]; }
  GpuMath math() const { return math_; }
  /// One cuBLAS GEMM described by a plan of kernel_math.hpp (offsets applied):
  /// cublasSgemm (FP32, or TF32 through the handle's math mode), or under
  /// GpuMath::BF16 cublasGemmEx with FP32 data and CUBLAS_COMPUTE_32F_FAST_16BF.
  void gemm(const km::GemmPlan& p, float alpha, const float* A, const float* B, float beta, float* C);
  /// The deterministic two-pass reduction of cuda_common.cuh with this
  /// backend's partials buffer.
  template <int NV, class Term, class Fin>
  void reduce(int segs, int64_t seg_len, const Term& term, const Fin& fin, const char* what) {
    if (segs <= 0) return;
    cuda::reduce_segments<NV>(segs, seg_len, term, fin, partials(cuda::red_partials(segs, seg_len, NV)), what);
  }

 private:
  // convolution helpers (cuda_conv.cu)
  cuda::ConvPlan& conv_plan(const ConvDesc& d, int N, int H, int W, int Ho, int Wo);
  /// Runs direction dir through cuDNN; false when no deterministic supported
  /// algorithm exists for this shape (the caller then uses the GEMM path).
  bool conv_cudnn(int dir, const ConvDesc& d, const Tensor& x, const Tensor& w, const Tensor& y, float* out,
                  float alpha, float beta);
  void conv_gemm_forward(const ConvDesc& d, const Tensor& x, const Tensor& w, Tensor& y, float alpha, float beta);
  void conv_gemm_backward_data(const ConvDesc& d, const Tensor& dy, const Tensor& w, Tensor& dx, float alpha,
                               float beta);
  void conv_gemm_backward_filter(const ConvDesc& d, const Tensor& x, const Tensor& dy, Tensor& dw, float alpha,
                                 float beta);
  /// Reduction partials for `count` doubles.
  double* partials(int64_t count) { return scratch_[kPartials].as<double>(static_cast<size_t>(count)); }

  int nt_;
  GpuMath math_ = GpuMath::FP32;
  int device_ = 0;
  std::string name_;
  cublasHandle_t cublas_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cuda::ConvMode conv_mode_ = cuda::ConvMode::Auto;
  bool dw_cudnn_ = false;
  cuda::Scratch scratch_[kNumSlots];
  std::map<std::tuple<int, int, int, int, int, int, int, int, int>, std::unique_ptr<cuda::ConvPlan>> plans_;
};

}  // namespace dsonas
