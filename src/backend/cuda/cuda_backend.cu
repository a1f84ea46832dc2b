// cuda_backend.cu — CudaBackend: construction, the caching allocator, memory
// and layout conversion, elementwise ops, the head (GAP, linear, softmax
// cross-entropy) and the optimiser.  Convolution: cuda_conv.cu; pooling:
// cuda_pooling.cu; batch-norm: cuda_bn.cu; λ-weighted sums and the scaled
// concatenation: cuda_wsum.cu (each named as its CPU twin, cpu_*.cpp).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "cuda_backend.cuh"
#include "dsonas/backend/cuda_probe.hpp"
#include "dsonas/backend/cuda_backend.hpp"
#include "dsonas/backend/device_choice.hpp"

namespace dsonas {
using cuda::check_dev;
using cuda::check_same;

namespace cuda {

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cublasStatus_t";
  }
}

std::string cudnn_last_error() {
  char m[1024] = {0};
  cudnnGetLastErrorString(m, sizeof m - 1);
  std::string s = m;
  for (char& ch : s)
    if (ch == '\n' || ch == '\r') ch = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  if (s.size() > 400) s = s.substr(0, 400) + "…";
  return s.empty() ? "" : " (cuDNN: " + s + ")";
}

bool sync_debug() {
  static const bool on = [] {
    const char* e = std::getenv("DSONAS_CUDA_SYNC");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  return on;
}

void kernel_check(const char* what, const char* file, int line) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess && sync_debug()) e = cudaDeviceSynchronize();
  if (e != cudaSuccess)
    fail_lib("CUDA", str("kernel ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"), file, line);
}

}  // namespace cuda

// ---- the caching allocator ----------------------------------------------------------

namespace {

/// Size-bucketed cache over cudaMalloc.  Blocks are rounded up to 512 bytes
/// and cached by rounded size; a freed block goes back to the cache at once,
/// which is safe because all device work runs on one stream (stream order).
/// free() never calls CUDA (tensors may die after the context at exit).
class CudaCachingAllocator final : public Allocator {
 public:
  void* alloc(size_t bytes) override {
    const size_t r = round(bytes);
    std::lock_guard<std::mutex> g(mu_);
    in_use_ += bytes;
    if (in_use_ > peak_) peak_ = in_use_;
    auto it = cache_.find(r);
    if (it != cache_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      cached_ -= r;
      return p;
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, r);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear the sticky-free error state
      release_locked();
      e = cudaMalloc(&p, r);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      in_use_ -= bytes;
      throw Error(kExitInternal,
                  str("CUDA: cannot allocate ", bytes, " bytes of device memory (", cudaGetErrorString(e),
                      "; dsonas tensors in use ", in_use_, " bytes, reserved ", reserved_, " bytes)"));
    }
    reserved_ += r;
    return p;
  }
  void free(void* p, size_t bytes) override {
    const size_t r = round(bytes);
    std::lock_guard<std::mutex> g(mu_);
    in_use_ -= bytes;
    cache_[r].push_back(p);
    cached_ += r;
  }
  size_t in_use() const override { return in_use_; }
  size_t peak() const override { return peak_; }
  void reset_peak() override {
    std::lock_guard<std::mutex> g(mu_);
    peak_ = in_use_;
  }
  void release_cache() override {
    std::lock_guard<std::mutex> g(mu_);
    release_locked();
  }

 private:
  static size_t round(size_t bytes) { return bytes == 0 ? 512 : (bytes + 511) / 512 * 512; }
  void release_locked() {
    for (auto& kv : cache_)
      for (void* p : kv.second) {
        cudaFree(p);  // best effort: a failing free leaves the block unusable anyway
        reserved_ -= kv.first;
      }
    cache_.clear();
    cached_ = 0;
  }
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> cache_;
  size_t in_use_ = 0, peak_ = 0, cached_ = 0, reserved_ = 0;
};

/// Registers the allocator before main(), so Tensor::empty(…, Device::CUDA)
/// reports a CUDA error (not "built without CUDA") even before a backend exists.
struct RegisterCudaAllocator {
  RegisterCudaAllocator() { register_allocator(Device::CUDA, &cuda_allocator()); }
} g_register_cuda_allocator;

}  // namespace

Allocator& cuda_allocator() {
  static CudaCachingAllocator* a = new CudaCachingAllocator();  // never destroyed (see free())
  return *a;
}

namespace cuda {

Scratch::~Scratch() {
  if (p_) cuda_allocator().free(p_, bytes_);
}

void* Scratch::get(size_t bytes) {
  if (bytes <= bytes_ && p_) return p_;
  // grow geometrically so a sequence of slightly larger requests does not reallocate each time
  const size_t want = std::max(bytes, bytes_ + bytes_ / 2);
  // Freeing before the kernels that use the old block have run is safe: all
  // device work is ordered on one stream (see CudaCachingAllocator).
  if (p_) cuda_allocator().free(p_, bytes_);
  p_ = nullptr;
  bytes_ = 0;
  p_ = cuda_allocator().alloc(want);
  bytes_ = want;
  return p_;
}

}  // namespace cuda

// ---- device probe and factory -----------------------------------------------------------

int cuda_device_count(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (why) *why = str("cudaGetDeviceCount: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
    return 0;
  }
  if (n == 0 && why) *why = "cudaGetDeviceCount: 0 devices";
  return n;
}

std::unique_ptr<Backend> make_cuda_backend(int threads, GpuMath math) {
  return std::make_unique<CudaBackend>(threads, math);
}

namespace {

/// The device main() chose before MPI_Init (cuda_preselect_device), if any.
struct Preselected {
  bool done = false;
  LaunchLocalRank env;
  int device = -1;
} g_preselected;

const char* getenv_c(const char* k) { return std::getenv(k); }

/// Sets the chosen device; a note goes to stderr once per process.
int apply_choice(const DeviceChoice& c) {
  if (!c.error.empty()) fail_usage(c.error);
  CUDA_CHECK(cudaSetDevice(c.device));
  static bool noted = false;
  // the sharing note is the same on every rank of a node: local rank 0 says it
  if (!c.note.empty() && !noted && (c.local_rank == 0 || c.env_overruled)) {
    std::fprintf(stderr, "dsonas: note: %s\n", c.note.c_str());
    noted = true;
  }
  return c.device;
}

}  // namespace

int cuda_preselect_device() {
  const LaunchLocalRank env = local_rank_from_env(getenv_c);
  // no launcher variable: nothing touches CUDA before MPI_Init; the device is
  // chosen from MPI's node-local rank afterwards, as before
  if (env.rank < 0 && env.error.empty()) return -1;
  cuda_check_library_versions();
  std::string why;
  const int n = cuda_device_count(&why);
  const DeviceChoice c =
      choose_cuda_device(env, -1, 0, n, why, parse_visible_devices(std::getenv("CUDA_VISIBLE_DEVICES")));
  const int d = apply_choice(c);
  g_preselected.done = true;
  g_preselected.env = env;
  g_preselected.device = d;
  return d;
}

int cuda_select_device(int local_rank) {
  cuda_check_library_versions();
  std::string why;
  const int n = cuda_device_count(&why);
  const LaunchLocalRank env = g_preselected.done ? g_preselected.env : local_rank_from_env(getenv_c);
  const DeviceChoice c =
      choose_cuda_device(env, local_rank, 0, n, why, parse_visible_devices(std::getenv("CUDA_VISIBLE_DEVICES")));
  if (!c.error.empty()) fail_usage(c.error);
  if (g_preselected.done && c.device == g_preselected.device) return c.device;  // current since before MPI_Init
  return apply_choice(c);
}

namespace {

__global__ void fill_kernel(float* __restrict p, int64_t n, float v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = v;
}

/// The first launch of a kernel: tells "no kernel image for this GPU" apart.
void probe_kernel_image(const cudaDeviceProp& p) {
  float* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, 256));
  fill_kernel<<<1, 32>>>(d, 1, 1.f);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  cudaFree(d);
  if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction ||
      e == cudaErrorUnsupportedPtxVersion)
    fail_usage(str("--device cuda: this dsonas has no kernels for ", p.name, " (compute capability ", p.major, ".",
                   p.minor, "): rebuild with CUDA_ARCH=", p.major, p.minor, " (", cudaGetErrorString(e), ")"));
  if (e != cudaSuccess)
    fail_lib("CUDA",
             str("first kernel launch on ", p.name, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"),
             __FILE__, __LINE__);
}

}  // namespace

CudaBackend::CudaBackend(int threads, GpuMath math) : math_(math) {
  cuda_check_library_versions();  // a cuDNN older than the headers: one line, exit 2
  const unsigned hc = std::thread::hardware_concurrency();
  nt_ = threads > 0 ? threads : static_cast<int>(hc > 0 ? hc : 1);
  std::string why;
  if (cuda_device_count(&why) == 0) fail_usage(str("--device cuda: no usable GPU (", why, ")"));
  CUDA_CHECK(cudaGetDevice(&device_));
  cudaDeviceProp p;
  CUDA_CHECK(cudaGetDeviceProperties(&p, device_));
  probe_kernel_image(p);
  CUBLAS_CHECK(cublasCreate(&cublas_));
  // FP32: plain FP32 FMA for sgemm (no TF32 tensor cores), as on the CPU.
  // TF32: sgemm may round its inputs to TF32 on tensor cores.  BF16: gemm()
  // calls cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_16BF (the handle's mode is
  // then irrelevant; TF32 for any other cuBLAS call).
  // (NVIDIA_TF32_OVERRIDE=0 in the environment disables TF32 process-wide.)
  CUBLAS_CHECK(cublasSetMathMode(cublas_, math_ == GpuMath::FP32 ? CUBLAS_DEFAULT_MATH : CUBLAS_TF32_TENSOR_OP_MATH));
  CUBLAS_CHECK(cublasSetPointerMode(cublas_, CUBLAS_POINTER_MODE_HOST));
  CUDNN_CHECK(cudnnCreate(&cudnn_));
  if (const char* e = std::getenv("DSONAS_CUDA_CONV")) {
    const std::string v = e;
    if (v == "auto" || v.empty())
      conv_mode_ = cuda::ConvMode::Auto;
    else if (v == "cudnn")
      conv_mode_ = cuda::ConvMode::Cudnn;
    else if (v == "gemm")
      conv_mode_ = cuda::ConvMode::Gemm;
    else
      fail_usage(str("DSONAS_CUDA_CONV='", v, "' (expected auto, cudnn or gemm)"));
  }
  if (const char* e = std::getenv("DSONAS_CUDA_DW")) {
    const std::string v = e;
    if (v == "own" || v.empty())
      dw_cudnn_ = false;
    else if (v == "cudnn")
      dw_cudnn_ = true;
    else
      fail_usage(str("DSONAS_CUDA_DW='", v, "' (expected own or cudnn)"));
  }
  int cublas_ver = 0;
  CUBLAS_CHECK(cublasGetVersion(cublas_, &cublas_ver));
  const char* cm = conv_mode_ == cuda::ConvMode::Auto ? "auto" : conv_mode_ == cuda::ConvMode::Cudnn ? "cudnn" : "gemm";
  name_ = str("cuda(", p.name, ", sm_", p.major, p.minor, ", cuDNN ", cudnnGetVersion(), ", cuBLAS ", cublas_ver,
              ", conv ", cm, ", depthwise ", dw_cudnn_ ? "cudnn" : "own", ", math ", gpu_math_name(math_), ")");
  register_allocator(Device::CUDA, &cuda_allocator());
  cuda_pinned_host_acquire(device_);  // last: the destructor releases it
}

CudaBackend::~CudaBackend() {
  // No throwing from a destructor: errors here (e.g. at process exit, after the
  // driver shut down) are ignored.
  cuda_pinned_host_release();
  plans_.clear();
  if (cublas_) cublasDestroy(cublas_);
  if (cudnn_) cudnnDestroy(cudnn_);
}

// ---- memory ------------------------------------------------------------------------------

namespace {

__global__ void cnhw_from_nchw_kernel(const float* __restrict src, float* __restrict dst, int64_t n, int64_t C,
                                      int64_t N, int64_t HW) {
  GRID_STRIDE(e, n) dst[e] = src[km::cnhw_src_in_nchw(e, C, N, HW)];
}

__global__ void nchw_from_cnhw_kernel(const float* __restrict src, float* __restrict dst, int64_t n, int64_t C,
                                      int64_t N, int64_t HW) {
  GRID_STRIDE(e, n) dst[e] = src[km::nchw_src_in_cnhw(e, C, N, HW)];
}

}  // namespace

void CudaBackend::fill(Tensor& t, float v) {
  check_dev(t, "fill");
  const int64_t n = t.numel();
  if (n == 0) return;
  fill_kernel<<<cuda::grid_for(n), cuda::kThreads>>>(t.data(), n, v);
  KERNEL_CHECK("fill");
}

void CudaBackend::copy(const Tensor& src, Tensor& dst) {
  check_same(src, dst, "copy");
  if (src.numel() == 0 || src.data() == dst.data()) return;
  CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.bytes(), cudaMemcpyDeviceToDevice, 0));
}

void CudaBackend::upload(const float* host, Tensor& dst) {
  check_dev(dst, "upload");
  if (dst.numel() == 0) return;
  CUDA_CHECK(cudaMemcpy(dst.data(), host, dst.bytes(), cudaMemcpyHostToDevice));
}

void CudaBackend::download(const Tensor& src, float* host) {
  check_dev(src, "download");
  if (src.numel() == 0) return;
  CUDA_CHECK(cudaMemcpy(host, src.data(), src.bytes(), cudaMemcpyDeviceToHost));
}

Tensor CudaBackend::act_from_nchw(const float* host, int n, int c, int h, int w) {
  Tensor t = alloc({c, n, h, w});
  const int64_t cnt = t.numel();
  if (cnt == 0) return t;
  float* stage = scratch(kStage).as<float>(static_cast<size_t>(cnt));
  CUDA_CHECK(cudaMemcpy(stage, host, t.bytes(), cudaMemcpyHostToDevice));
  cnhw_from_nchw_kernel<<<cuda::grid_for(cnt), cuda::kThreads>>>(stage, t.data(), cnt, c, n,
                                                                 static_cast<int64_t>(h) * w);
  KERNEL_CHECK("act_from_nchw");
  return t;
}

void CudaBackend::act_to_nchw(const Tensor& act, float* host) {
  DSO_CHECK(act.ndim() == 4, "act_to_nchw: not 4-D: ", shape_str(act.shape()));
  check_dev(act, "act_to_nchw");
  const int64_t cnt = act.numel();
  if (cnt == 0) return;
  float* stage = scratch(kStage).as<float>(static_cast<size_t>(cnt));
  nchw_from_cnhw_kernel<<<cuda::grid_for(cnt), cuda::kThreads>>>(act.data(), stage, cnt, act.dim(0), act.dim(1),
                                                                 act.dim(2) * act.dim(3));
  KERNEL_CHECK("act_to_nchw");
  CUDA_CHECK(cudaMemcpy(host, stage, act.bytes(), cudaMemcpyDeviceToHost));
}

void CudaBackend::synchronize() { CUDA_CHECK(cudaDeviceSynchronize()); }

int64_t CudaBackend::memory_free_bytes() const {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return static_cast<int64_t>(free_b);  // blocks cached by our allocator count as used: conservative
}

// ---- elementwise -----------------------------------------------------------------------------

namespace {

__global__ void axpy_kernel(float alpha, const float* __restrict x, float* __restrict y, int64_t n) {
  GRID_STRIDE(i, n) y[i] += alpha * x[i];
}

__global__ void add_kernel(const float* a, const float* b, float* y, int64_t n) {
  GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

__global__ void clip_kernel(float* p, int64_t n, float lo, float hi) {
  GRID_STRIDE(i, n) {
    float v = p[i];
    v = v < lo ? lo : v;
    p[i] = v > hi ? hi : v;
  }
}

__global__ void nonfinite_kernel(const float* __restrict p, int64_t n, int* flag) {
  int bad = 0;
  GRID_STRIDE(i, n) bad |= !isfinite(p[i]);
  if (bad) *flag = 1;  // every writer stores the same value: no race on the result
}

struct DotTerm {
  const float* a;
  const float* b;
  __device__ cuda::Vals<1> operator()(int, int64_t i) const {
    return {{static_cast<double>(a[i]) * static_cast<double>(b[i])}};
  }
};

/// *out = float(double(*out) + total), as CpuBackend::dot_accumulate.
struct AccumulateFloat {
  float* out;
  __device__ void operator()(int, const cuda::Vals<1>& v) const {
    *out = static_cast<float>(static_cast<double>(*out) + v.v[0]);
  }
};

struct StoreDouble {
  double* out;
  __device__ void operator()(int seg, const cuda::Vals<1>& v) const { out[seg] = v.v[0]; }
};

}  // namespace

void CudaBackend::axpy(float alpha, const Tensor& x, Tensor& y) {
  check_same(x, y, "axpy");
  const int64_t n = x.numel();
  if (n == 0) return;
  axpy_kernel<<<cuda::grid_for(n), cuda::kThreads>>>(alpha, x.data(), y.data(), n);
  KERNEL_CHECK("axpy");
}

void CudaBackend::add(const Tensor& a, const Tensor& b, Tensor& y) {
  check_same(a, y, "add");
  check_same(b, y, "add");
  const int64_t n = y.numel();
  if (n == 0) return;
  add_kernel<<<cuda::grid_for(n), cuda::kThreads>>>(a.data(), b.data(), y.data(), n);
  KERNEL_CHECK("add");
}

void CudaBackend::dot_accumulate(const Tensor& a, const Tensor& b, float* out) {
  check_same(a, b, "dot_accumulate");
  DSO_CHECK(out != nullptr, "dot_accumulate: null output");
  reduce<1>(1, a.numel(), DotTerm{a.data(), b.data()}, AccumulateFloat{out}, "dot_accumulate");
}

void CudaBackend::clip(Tensor& g, float lo, float hi) {
  check_dev(g, "clip");
  const int64_t n = g.numel();
  if (n == 0) return;
  clip_kernel<<<cuda::grid_for(n), cuda::kThreads>>>(g.data(), n, lo, hi);
  KERNEL_CHECK("clip");
}

bool CudaBackend::all_finite(const Tensor& t) {
  check_dev(t, "all_finite");
  const int64_t n = t.numel();
  if (n == 0) return true;
  int* flag = scratch(kSmall).as<int>(1);
  CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), 0));
  nonfinite_kernel<<<cuda::grid_for(n), cuda::kThreads>>>(t.data(), n, flag);
  KERNEL_CHECK("all_finite");
  int h = 0;
  CUDA_CHECK(cudaMemcpy(&h, flag, sizeof(int), cudaMemcpyDeviceToHost));
  return h == 0;
}

double CudaBackend::sum_squares(const Tensor& t) {
  check_dev(t, "sum_squares");
  if (t.numel() == 0) return 0.0;
  double* res = scratch(kSmall).as<double>(1);
  reduce<1>(1, t.numel(), DotTerm{t.data(), t.data()}, StoreDouble{res}, "sum_squares");
  double h = 0;
  CUDA_CHECK(cudaMemcpy(&h, res, sizeof(double), cudaMemcpyDeviceToHost));
  return h;
}

// ---- head ----------------------------------------------------------------------------------------

namespace {

struct PlaneTerm {
  const float* x;
  int64_t len;
  __device__ cuda::Vals<1> operator()(int seg, int64_t i) const {
    return {{static_cast<double>(x[static_cast<int64_t>(seg) * len + i])}};
  }
};

/// y[n·C + c] = float(Σ / HW) for plane seg = c·N + n.
struct GapFin {
  float* y;
  int C, N;
  double HW;
  __device__ void operator()(int seg, const cuda::Vals<1>& v) const {
    const int c = seg / N, n = seg - c * N;
    y[static_cast<int64_t>(n) * C + c] = static_cast<float>(v.v[0] / HW);
  }
};

__global__ void gap_backward_kernel(const float* __restrict dy, float* __restrict dx, int64_t total, int64_t C,
                                    int64_t N, int64_t HW, float inv, float beta) {
  GRID_STRIDE(e, total) {
    const int64_t pl = e / HW, c = pl / N, n = pl - c * N;
    const float v = dy[n * C + c] * inv;
    dx[e] = beta == 0.f ? v : v + beta * dx[e];
  }
}

__global__ void bias_rows_kernel(const float* __restrict b, float* __restrict y, int64_t rows, int64_t O) {
  GRID_STRIDE(e, rows * O) y[e] = b[e % O];
}

/// Column sums of dy [N,O]: term(o, n) = dy[n·O + o].
struct ColTerm {
  const float* dy;
  int64_t O;
  __device__ cuda::Vals<1> operator()(int o, int64_t n) const { return {{static_cast<double>(dy[n * O + o])}}; }
};

struct StoreFloat {
  float* out;
  __device__ void operator()(int seg, const cuda::Vals<1>& v) const { out[seg] = static_cast<float>(v.v[0]); }
};

/// One row of softmax cross-entropy per thread (K is small: 10 … 1000).
__global__ void softmax_xent_kernel(const float* __restrict z, const int32_t* __restrict labels, float grad_scale,
                                    float* __restrict dz, double* __restrict row_loss, int* __restrict row_hit, int N,
                                    int K) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  row_loss[n] = km::softmax_xent_row(z + static_cast<int64_t>(n) * K, K, labels[n], false, 1.0, 0.0, grad_scale,
                                     dz + static_cast<int64_t>(n) * K, &row_hit[n]);
}

__global__ void nag_kernel(float* __restrict w, const float* __restrict g, float* __restrict m, int64_t n, float lr,
                           float momentum, float wd) {
  GRID_STRIDE(i, n) {
    const float gg = g[i] + wd * w[i];
    const float mm = momentum * m[i] + gg;
    m[i] = mm;
    w[i] = w[i] - lr * (gg + momentum * mm);
  }
}

}  // namespace

void CudaBackend::global_avg_pool_forward(const Tensor& x, Tensor& y) {
  DSO_CHECK(x.ndim() == 4, "global_avg_pool: x must be 4-D, got ", shape_str(x.shape()));
  const int64_t C = x.dim(0), N = x.dim(1), HW = x.dim(2) * x.dim(3);
  DSO_CHECK(y.numel() == N * C, "global_avg_pool: y ", shape_str(y.shape()), " for x ", shape_str(x.shape()));
  check_dev(x, "global_avg_pool");
  check_dev(y, "global_avg_pool");
  DSO_CHECK(C * N <= INT32_MAX, "global_avg_pool: too many planes");
  reduce<1>(static_cast<int>(C * N), HW, PlaneTerm{x.data(), HW},
            GapFin{y.data(), static_cast<int>(C), static_cast<int>(N), static_cast<double>(HW)}, "global_avg_pool");
}

void CudaBackend::global_avg_pool_backward(const Tensor& dy, Tensor& dx, float beta) {
  DSO_CHECK(dx.ndim() == 4, "global_avg_pool_backward: dx must be 4-D");
  const int64_t C = dx.dim(0), N = dx.dim(1), HW = dx.dim(2) * dx.dim(3);
  DSO_CHECK(dy.numel() == N * C, "global_avg_pool_backward: dy ", shape_str(dy.shape()));
  check_dev(dy, "global_avg_pool_backward");
  check_dev(dx, "global_avg_pool_backward");
  const int64_t total = dx.numel();
  if (total == 0) return;
  gap_backward_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(dy.data(), dx.data(), total, C, N, HW,
                                                                 1.f / static_cast<float>(HW), beta);
  KERNEL_CHECK("global_avg_pool_backward");
}

void CudaBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  DSO_CHECK(x.ndim() == 2 && w.ndim() == 2 && x.dim(1) == w.dim(1) && b.numel() == w.dim(0) &&
                y.numel() == x.dim(0) * w.dim(0),
            "linear shapes: x ", shape_str(x.shape()), " w ", shape_str(w.shape()), " b ", shape_str(b.shape()), " y ",
            shape_str(y.shape()));
  check_dev(x, "linear_forward");
  check_dev(w, "linear_forward");
  check_dev(b, "linear_forward");
  check_dev(y, "linear_forward");
  const int N = static_cast<int>(x.dim(0)), I = static_cast<int>(x.dim(1)), O = static_cast<int>(w.dim(0));
  if (N == 0 || O == 0) return;
  bias_rows_kernel<<<cuda::grid_for(static_cast<int64_t>(N) * O), cuda::kThreads>>>(b.data(), y.data(), N, O);
  KERNEL_CHECK("linear_forward bias");
  if (I == 0) return;
  gemm(km::gemm_linear_fwd(N, I, O), 1.f, w.data(), x.data(), 1.f, y.data());
}

void CudaBackend::linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                                  Tensor* db) {
  DSO_CHECK(x.ndim() == 2 && w.ndim() == 2 && x.dim(1) == w.dim(1) && dy.numel() == x.dim(0) * w.dim(0),
            "linear_backward shapes: x ", shape_str(x.shape()), " w ", shape_str(w.shape()), " dy ",
            shape_str(dy.shape()));
  check_dev(x, "linear_backward");
  check_dev(w, "linear_backward");
  check_dev(dy, "linear_backward");
  const int N = static_cast<int>(x.dim(0)), I = static_cast<int>(x.dim(1)), O = static_cast<int>(w.dim(0));
  if (dx) {
    DSO_CHECK(dx->numel() == x.numel(), "linear_backward: dx ", shape_str(dx->shape()));
    check_dev(*dx, "linear_backward");
    if (O == 0)
      fill(*dx, 0.f);
    else if (N > 0 && I > 0)
      gemm(km::gemm_linear_bwd_data(N, I, O), 1.f, w.data(), dy.data(), 0.f, dx->data());
  }
  if (dw) {
    DSO_CHECK(dw->numel() == w.numel(), "linear_backward: dw ", shape_str(dw->shape()));
    check_dev(*dw, "linear_backward");
    if (N == 0)
      fill(*dw, 0.f);
    else if (O > 0 && I > 0)
      gemm(km::gemm_linear_bwd_weight(N, I, O), 1.f, x.data(), dy.data(), 0.f, dw->data());
  }
  if (db) {
    DSO_CHECK(db->numel() == O, "linear_backward: db ", shape_str(db->shape()));
    check_dev(*db, "linear_backward");
    reduce<1>(O, N, ColTerm{dy.data(), O}, StoreFloat{db->data()}, "linear_backward db");
  }
}

void CudaBackend::softmax_xent(const Tensor& logits, const int32_t* labels, float grad_scale, Tensor& dlogits,
                               double* loss_sum, int64_t* correct) {
  DSO_CHECK(logits.ndim() == 2 && dlogits.numel() == logits.numel(), "softmax_xent shapes: logits ",
            shape_str(logits.shape()), " dlogits ", shape_str(dlogits.shape()));
  check_dev(logits, "softmax_xent");
  check_dev(dlogits, "softmax_xent");
  const int64_t N = logits.dim(0), K = logits.dim(1);
  for (int64_t n = 0; n < N; ++n)
    if (labels[n] < 0 || labels[n] >= K)
      fail_usage(str("softmax_xent: label ", labels[n], " at index ", n, " is outside [0,", K, ")"));
  if (N == 0) return;
  DSO_CHECK(K > 0 && N <= INT32_MAX && K <= INT32_MAX, "softmax_xent: bad logits shape ", shape_str(logits.shape()));
  int32_t* dlab = scratch(kIdx).as<int32_t>(static_cast<size_t>(N));
  CUDA_CHECK(cudaMemcpy(dlab, labels, static_cast<size_t>(N) * sizeof(int32_t), cudaMemcpyHostToDevice));
  // row losses (double) then hits (int) in one small buffer
  char* small = scratch(kSmall).as<char>(static_cast<size_t>(N) * (sizeof(double) + sizeof(int)));
  double* row_loss = reinterpret_cast<double*>(small);
  int* row_hit = reinterpret_cast<int*>(small + static_cast<size_t>(N) * sizeof(double));
  softmax_xent_kernel<<<cuda::grid_for(N, 128), 128>>>(logits.data(), dlab, grad_scale, dlogits.data(), row_loss,
                                                       row_hit, static_cast<int>(N), static_cast<int>(K));
  KERNEL_CHECK("softmax_xent");
  std::vector<double> hl(static_cast<size_t>(N));
  std::vector<int> hh(static_cast<size_t>(N));
  CUDA_CHECK(cudaMemcpy(hl.data(), row_loss, hl.size() * sizeof(double), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(hh.data(), row_hit, hh.size() * sizeof(int), cudaMemcpyDeviceToHost));
  double loss = 0;
  int64_t hits = 0;
  for (int64_t n = 0; n < N; ++n) {  // in row order, as the CPU
    loss += hl[static_cast<size_t>(n)];
    hits += hh[static_cast<size_t>(n)];
  }
  if (loss_sum) *loss_sum += loss;
  if (correct) *correct += hits;
}

// ---- cuBLAS ----------------------------------------------------------------------------------------

void CudaBackend::gemm(const km::GemmPlan& p, float alpha, const float* A, const float* B, float beta, float* C) {
  if (p.m <= 0 || p.n <= 0) return;
  const cublasOperation_t ta = p.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (math_ == GpuMath::BF16) {
    // FP32 in and out; inputs down-converted to bfloat16 on tensor cores, FP32
    // accumulation.  CUBLAS_GEMM_DEFAULT: cuBLAS picks the kernel (the same one
    // every run for the same shape, GPU and library: bit-reproducible).
    CUBLAS_CHECK(cublasGemmEx(cublas_, ta, tb, p.m, p.n, p.k, &alpha, A + p.a_off, CUDA_R_32F, p.lda, B + p.b_off,
                              CUDA_R_32F, p.ldb, &beta, C + p.c_off, CUDA_R_32F, p.ldc, CUBLAS_COMPUTE_32F_FAST_16BF,
                              CUBLAS_GEMM_DEFAULT));
    return;
  }
  CUBLAS_CHECK(cublasSgemm(cublas_, ta, tb, p.m, p.n, p.k, &alpha, A + p.a_off, p.lda, B + p.b_off, p.ldb, &beta,
                           C + p.c_off, p.ldc));
}

// ---- optimiser ------------------------------------------------------------------------------------

void CudaBackend::nag_update(Tensor& w, const Tensor& g, Tensor& m, float lr, float momentum, float wd) {
  check_same(w, g, "nag_update");
  check_same(w, m, "nag_update");
  const int64_t n = w.numel();
  if (n == 0) return;
  nag_kernel<<<cuda::grid_for(n), cuda::kThreads>>>(w.data(), g.data(), m.data(), n, lr, momentum, wd);
  KERNEL_CHECK("nag_update");
}

}  // namespace dsonas
