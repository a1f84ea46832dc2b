// cuda_common.cuh — private to src/backend/cuda: the check macros of the CUDA
// libraries, launch helpers and the deterministic two-pass reduction used by
// every reducing kernel of the CUDA backend.
//
// Check macros (error.hpp's convention: one per library, all through fail_lib,
// so every message carries the rank and file:line):
//   CUDA_CHECK(call)    cudaError_t
//   CUDNN_CHECK(call)   cudnnStatus_t
//   CUBLAS_CHECK(call)  cublasStatus_t
//   KERNEL_CHECK(name)  after every kernel launch: launch errors at once, and
//                       with DSONAS_CUDA_SYNC=1 in the environment also the
//                       kernel's execution errors (a synchronize after it).
//
// Deterministic reductions ("no atomics on floats"): a reduction over n terms
// of S segments is cut into chunks of km::kRedChunk terms (fixed, independent
// of the GPU); block (chunk, segment) sums its chunk in double — thread t takes
// terms t, t+256, … in order, then a fixed shared-memory tree — and writes one
// partial; a second kernel reduces each segment's partials the same way and
// hands the total to a finaliser.  Same input, same bits, on every run.
// Functors are __grid_constant__ kernel parameters, so their small pointer
// tables (λ pairs, weight lists) may be indexed at run time without a copy.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <string>

#include "dsonas/core/error.hpp"
#include "dsonas/core/tensor.hpp"
#include "kernel_math.hpp"

namespace dsonas {
namespace cuda {

const char* cublas_status_name(cublasStatus_t s);
/// " (cuDNN: <cudnnGetLastErrorString>)" on one line, or "" when cuDNN has no
/// message: the reason behind a status code, for the one-line error.
std::string cudnn_last_error();

/// True when DSONAS_CUDA_SYNC=1: synchronize after every kernel (debugging).
bool sync_debug();
/// cudaGetLastError (and, in sync-debug mode, a device synchronize) after a launch.
void kernel_check(const char* what, const char* file, int line);

/// Threads per block of the elementwise kernels, and their grid size.
constexpr int kThreads = 256;
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  // grid-stride loops cover the rest; 2^20 blocks is plenty of parallelism.
  return static_cast<unsigned>(b > (1 << 20) ? (1 << 20) : b);
}

inline void check_dev(const Tensor& t, const char* what) {
  DSO_CHECK(t.numel() == 0 || t.device() == Device::CUDA, what, ": tensor is on ", device_name(t.device()),
            ", expected cuda");
}

inline void check_same(const Tensor& a, const Tensor& b, const char* what) {
  DSO_CHECK(a.numel() == b.numel(), what, ": element counts differ: ", shape_str(a.shape()), " vs ",
            shape_str(b.shape()));
  check_dev(a, what);
  check_dev(b, what);
}

}  // namespace cuda
}  // namespace dsonas

/// for (int64_t i …) over [0, n) in a grid-stride loop.
#define GRID_STRIDE(i, n)                                                                \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

#define CUDA_CHECK(call)                                                                                              \
  do {                                                                                                                \
    cudaError_t dso_e_ = (call);                                                                                      \
    if (dso_e_ != cudaSuccess)                                                                                        \
      ::dsonas::fail_lib("CUDA",                                                                                      \
                         ::dsonas::str(#call, ": ", cudaGetErrorName(dso_e_), " (", cudaGetErrorString(dso_e_), ")"), \
                         __FILE__, __LINE__);                                                                         \
  } while (0)

#define CUDNN_CHECK(call)                                                                                             \
  do {                                                                                                                \
    cudnnStatus_t dso_s_ = (call);                                                                                    \
    if (dso_s_ != CUDNN_STATUS_SUCCESS)                                                                               \
      ::dsonas::fail_lib("cuDNN",                                                                                     \
                         ::dsonas::str(#call, ": ", cudnnGetErrorString(dso_s_), ::dsonas::cuda::cudnn_last_error()), \
                         __FILE__, __LINE__);                                                                         \
  } while (0)

#define CUBLAS_CHECK(call)                                                                                           \
  do {                                                                                                               \
    cublasStatus_t dso_s_ = (call);                                                                                  \
    if (dso_s_ != CUBLAS_STATUS_SUCCESS)                                                                             \
      ::dsonas::fail_lib("cuBLAS", ::dsonas::str(#call, ": ", ::dsonas::cuda::cublas_status_name(dso_s_)), __FILE__, \
                         __LINE__);                                                                                  \
  } while (0)

#define KERNEL_CHECK(name) ::dsonas::cuda::kernel_check(name, __FILE__, __LINE__)

namespace dsonas {
namespace cuda {

// ---- the deterministic two-pass reduction -------------------------------------------

/// NV doubles reduced together (BN needs Σx and Σx² in one pass).
template <int NV>
struct Vals {
  double v[NV];
};

/// Block-wide sum of NV doubles per thread in a fixed tree; the result is valid
/// in thread 0.  `sh` holds NV·kRedThreads doubles.  blockDim.x == kRedThreads.
template <int NV>
__device__ __forceinline__ Vals<NV> block_sum(Vals<NV> a, double* sh) {
  const int t = threadIdx.x;
#pragma unroll
  for (int q = 0; q < NV; ++q) sh[q * km::kRedThreads + t] = a.v[q];
  __syncthreads();
#pragma unroll
  for (int s = km::kRedThreads / 2; s > 0; s >>= 1) {
    if (t < s) {
#pragma unroll
      for (int q = 0; q < NV; ++q) sh[q * km::kRedThreads + t] += sh[q * km::kRedThreads + t + s];
    }
    __syncthreads();
  }
  Vals<NV> r;
#pragma unroll
  for (int q = 0; q < NV; ++q) r.v[q] = sh[q * km::kRedThreads];
  return r;
}

/// Pass 1: block (chunk = blockIdx.x, segment = seg0 + blockIdx.y) sums
/// term(seg, i) over i in its chunk of [0, seg_len) and writes
/// partials[(blockIdx.y·nchunk + chunk)·NV + q].
/// Term: `__device__ Vals<NV> operator()(int seg, int64_t i) const`.
template <int NV, class Term>
__global__ void __launch_bounds__(km::kRedThreads)
    reduce_pass1(const __grid_constant__ Term term, int seg0, int64_t seg_len, double* partials) {
  __shared__ double sh[NV * km::kRedThreads];
  const int seg = seg0 + static_cast<int>(blockIdx.y);
  const int64_t chunk = blockIdx.x;
  const int64_t i0 = chunk * km::kRedChunk;
  int64_t i1 = i0 + km::kRedChunk;
  if (i1 > seg_len) i1 = seg_len;
  Vals<NV> a;
#pragma unroll
  for (int q = 0; q < NV; ++q) a.v[q] = 0.0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += km::kRedThreads) {
    const Vals<NV> t = term(seg, i);
#pragma unroll
    for (int q = 0; q < NV; ++q) a.v[q] += t.v[q];
  }
  const Vals<NV> r = block_sum<NV>(a, sh);
  if (threadIdx.x == 0) {
    double* out = partials + (static_cast<int64_t>(blockIdx.y) * gridDim.x + chunk) * NV;
#pragma unroll
    for (int q = 0; q < NV; ++q) out[q] = r.v[q];
  }
}

/// Pass 2: block b reduces the nchunk partials of segment seg0 + b (same
/// fixed order) and thread 0 calls fin(seg, totals).
/// Fin: `__device__ void operator()(int seg, const Vals<NV>&) const`.
template <int NV, class Fin>
__global__ void __launch_bounds__(km::kRedThreads)
    reduce_pass2(const double* partials, int seg0, int nchunk, const __grid_constant__ Fin fin) {
  __shared__ double sh[NV * km::kRedThreads];
  const double* p = partials + static_cast<int64_t>(blockIdx.x) * nchunk * NV;
  Vals<NV> a;
#pragma unroll
  for (int q = 0; q < NV; ++q) a.v[q] = 0.0;
  for (int c = threadIdx.x; c < nchunk; c += km::kRedThreads) {
#pragma unroll
    for (int q = 0; q < NV; ++q) a.v[q] += p[static_cast<int64_t>(c) * NV + q];
  }
  const Vals<NV> r = block_sum<NV>(a, sh);
  if (threadIdx.x == 0) fin(seg0 + static_cast<int>(blockIdx.x), r);
}

/// Number of pass-1 chunks of a segment of seg_len terms (≥ 1).
inline int red_chunks(int64_t seg_len) {
  const int64_t c = km::ceil_div(seg_len, km::kRedChunk);
  return static_cast<int>(c < 1 ? 1 : c);
}

/// Segments per launch (gridDim.y limit).
constexpr int kMaxRedSegs = 65535;

/// Doubles of partials reduce_segments needs for segs segments of seg_len.
inline int64_t red_partials(int segs, int64_t seg_len, int nv) {
  const int64_t s = segs < kMaxRedSegs ? segs : kMaxRedSegs;
  return (s < 1 ? 1 : s) * red_chunks(seg_len) * nv;
}

/// Runs both passes on the default stream, in launches of ≤ kMaxRedSegs
/// segments.  `partials` holds red_partials(segs, seg_len, NV) doubles.
template <int NV, class Term, class Fin>
void reduce_segments(int segs, int64_t seg_len, const Term& term, const Fin& fin, double* partials, const char* what) {
  const int nch = red_chunks(seg_len);
  for (int s0 = 0; s0 < segs; s0 += kMaxRedSegs) {
    const int ns = segs - s0 < kMaxRedSegs ? segs - s0 : kMaxRedSegs;
    reduce_pass1<NV, Term>
        <<<dim3(static_cast<unsigned>(nch), static_cast<unsigned>(ns)), km::kRedThreads>>>(term, s0, seg_len, partials);
    KERNEL_CHECK(what);
    reduce_pass2<NV, Fin><<<static_cast<unsigned>(ns), km::kRedThreads>>>(partials, s0, nch, fin);
    KERNEL_CHECK(what);
  }
}

}  // namespace cuda
}  // namespace dsonas
