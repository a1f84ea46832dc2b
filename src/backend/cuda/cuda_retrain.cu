// cuda_retrain.cu — the retraining primitives of backend.hpp on CUDA:
// label-smoothed softmax cross-entropy, counter-based inverted dropout and
// per-(group, sample) scaling (drop-path).  Same arithmetic as
// src/backend/cpu/cpu_retrain.cpp: per-row double math, the mix64 hash of
// core/rng.hpp (km::mix64, checked equal by tests/gpu/test_kernel_math.cpp),
// no reductions across threads except the per-row loss, summed on the host in
// row order.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cuda_backend.cuh"

namespace dsonas {
using cuda::check_dev;

namespace {

__global__ void softmax_xent_smoothed_kernel(const float* __restrict z, const int32_t* __restrict labels, double on,
                                             double off, float grad_scale, float* __restrict dz,
                                             double* __restrict row_loss, int* __restrict row_hit, int N, int K) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  row_loss[n] = km::softmax_xent_row(z + static_cast<int64_t>(n) * K, K, labels[n], true, on, off, grad_scale,
                                     dz + static_cast<int64_t>(n) * K, &row_hit[n]);
}

// x and y may be the same tensor: no __restrict__, one read then one write per element.
__global__ void dropout_kernel(const float* x, float* y, int64_t n, float keep, float inv, uint64_t key,
                               int64_t index_base) {
  GRID_STRIDE(i, n) y[i] = km::dropout_elem(x[i], keep, inv, key, index_base, i);
}

constexpr int kScaleArgs = 512;  // scale entries per launch (2 KiB of kernel argument)

struct ScaleArgs {
  float s[kScaleArgs];
};

/// Elements [e0, e0 + total) of x/y, which belong to groups starting at group
/// g0: y = s·x + beta·y with s = scale[(c / cg)·N + n] − its index relative to
/// the first entry of g0 picks it from a (or from `dev` when non-null).
__global__ void scale_samples_kernel(const float* x, float* y, int64_t e0, int64_t total, int64_t N, int64_t HW,
                                     int64_t cg, int64_t g0, const __grid_constant__ ScaleArgs a, const float* dev,
                                     float beta) {
  GRID_STRIDE(q, total) {
    const int64_t e = e0 + q;
    const int64_t si = km::scale_index(e, N, HW, cg) - g0 * N;
    const float s = dev ? dev[si] : a.s[si];
    y[e] = beta == 0.f ? s * x[e] : s * x[e] + beta * y[e];
  }
}

}  // namespace

void CudaBackend::softmax_xent_smoothed(const Tensor& logits, const int32_t* labels, float smoothing, float grad_scale,
                                        Tensor& dlogits, double* loss_sum, int64_t* correct) {
  DSO_CHECK(logits.ndim() == 2 && dlogits.numel() == logits.numel(), "softmax_xent_smoothed shapes: logits ",
            shape_str(logits.shape()), " dlogits ", shape_str(dlogits.shape()));
  DSO_CHECK(smoothing >= 0.f && smoothing < 1.f, "softmax_xent_smoothed: smoothing ", smoothing);
  check_dev(logits, "softmax_xent_smoothed");
  check_dev(dlogits, "softmax_xent_smoothed");
  const int64_t N = logits.dim(0), K = logits.dim(1);
  DSO_CHECK(K >= 2, "softmax_xent_smoothed: ", K, " classes");
  for (int64_t n = 0; n < N; ++n)
    if (labels[n] < 0 || labels[n] >= K)
      fail_usage(str("softmax_xent: label ", labels[n], " at index ", n, " is outside [0,", K, ")"));
  if (N == 0) return;
  DSO_CHECK(N <= INT32_MAX && K <= INT32_MAX, "softmax_xent_smoothed: bad logits shape ", shape_str(logits.shape()));
  const double on = 1.0 - static_cast<double>(smoothing);
  const double off = static_cast<double>(smoothing) / static_cast<double>(K - 1);
  int32_t* dlab = scratch(kIdx).as<int32_t>(static_cast<size_t>(N));
  CUDA_CHECK(cudaMemcpy(dlab, labels, static_cast<size_t>(N) * sizeof(int32_t), cudaMemcpyHostToDevice));
  char* small = scratch(kSmall).as<char>(static_cast<size_t>(N) * (sizeof(double) + sizeof(int)));
  double* row_loss = reinterpret_cast<double*>(small);
  int* row_hit = reinterpret_cast<int*>(small + static_cast<size_t>(N) * sizeof(double));
  softmax_xent_smoothed_kernel<<<cuda::grid_for(N, 128), 128>>>(logits.data(), dlab, on, off, grad_scale,
                                                                dlogits.data(), row_loss, row_hit, static_cast<int>(N),
                                                                static_cast<int>(K));
  KERNEL_CHECK("softmax_xent_smoothed");
  std::vector<double> hl(static_cast<size_t>(N));
  std::vector<int> hh(static_cast<size_t>(N));
  CUDA_CHECK(cudaMemcpy(hl.data(), row_loss, hl.size() * sizeof(double), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(hh.data(), row_hit, hh.size() * sizeof(int), cudaMemcpyDeviceToHost));
  double loss = 0;
  int64_t hits = 0;
  for (int64_t n = 0; n < N; ++n) {
    loss += hl[static_cast<size_t>(n)];
    hits += hh[static_cast<size_t>(n)];
  }
  if (loss_sum) *loss_sum += loss;
  if (correct) *correct += hits;
}

void CudaBackend::dropout_apply(const Tensor& x, float p, uint64_t key, int64_t index_base, Tensor& y) {
  DSO_CHECK(x.numel() == y.numel(), "dropout_apply shapes: x ", shape_str(x.shape()), " y ", shape_str(y.shape()));
  DSO_CHECK(p >= 0.f && p < 1.f, "dropout_apply: p = ", p);
  check_dev(x, "dropout_apply");
  check_dev(y, "dropout_apply");
  const int64_t n = x.numel();
  if (n == 0) return;
  const float keep = 1.f - p;
  const float inv = 1.f / keep;
  dropout_kernel<<<cuda::grid_for(n), cuda::kThreads>>>(x.data(), y.data(), n, keep, inv, key, index_base);
  KERNEL_CHECK("dropout_apply");
}

void CudaBackend::scale_samples(const Tensor& x, int groups, const float* scale, Tensor& y, float beta) {
  DSO_CHECK(x.ndim() == 4 && y.numel() == x.numel(), "scale_samples shapes: x ", shape_str(x.shape()), " y ",
            shape_str(y.shape()));
  const int64_t C = x.dim(0), N = x.dim(1), HW = x.dim(2) * x.dim(3);
  DSO_CHECK(groups >= 1 && C % groups == 0, "scale_samples: ", C, " channels in ", groups, " groups");
  check_dev(x, "scale_samples");
  check_dev(y, "scale_samples");
  if (x.numel() == 0) return;
  const int64_t cg = C / groups;
  const int64_t per_group = cg * N * HW;  // elements of one group: contiguous in CNHW
  if (N > kScaleArgs) {
    // More samples than one kernel argument holds: the scales go through device memory.
    const size_t cnt = static_cast<size_t>(groups) * static_cast<size_t>(N);
    float* dev = scratch(kParams).as<float>(cnt);
    CUDA_CHECK(cudaMemcpy(dev, scale, cnt * sizeof(float), cudaMemcpyHostToDevice));
    ScaleArgs none;
    std::memset(&none, 0, sizeof(none));
    const int64_t total = x.numel();
    scale_samples_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(x.data(), y.data(), 0, total, N, HW, cg, 0, none,
                                                                    dev, beta);
    KERNEL_CHECK("scale_samples");
    return;
  }
  const int64_t gpl = std::max<int64_t>(1, kScaleArgs / N);  // groups per launch
  for (int64_t g0 = 0; g0 < groups; g0 += gpl) {
    const int64_t g1 = std::min<int64_t>(groups, g0 + gpl);
    ScaleArgs a;
    std::memset(&a, 0, sizeof(a));
    std::memcpy(a.s, scale + g0 * N, static_cast<size_t>((g1 - g0) * N) * sizeof(float));
    const int64_t e0 = g0 * per_group, total = (g1 - g0) * per_group;
    scale_samples_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(x.data(), y.data(), e0, total, N, HW, cg, g0, a,
                                                                    nullptr, beta);
    KERNEL_CHECK("scale_samples");
  }
}

}  // namespace dsonas
