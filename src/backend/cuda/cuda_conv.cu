// cuda_conv.cu — convolution of CudaBackend (pooling: cuda_pooling.cu).
//
//  * dense 1×1, stride 1, pad 0: one cuBLAS SGEMM over the whole batch
//    (CNHW: [Cout,Cin]×[Cin,N·H·W]); backward-data and backward-filter too.
//  * other dense: cuDNN (legacy convolution API; --gpu-math fp32: FMA math, no
//    TF32; tf32/bf16: TF32 tensor-core algorithms allowed) with
//    the CNHW tensors described as NCHW with strides n:H·W, c:N·H·W, h:W, w:1.
//    Per shape and direction the first deterministic, supported algorithm of
//    cuDNN's heuristics (cudnnGet…Algorithm_v7, no timing: the choice is the
//    same on every run) is cached with its workspace size; the workspace is
//    one scratch buffer reused by every call.  When cuDNN offers no such
//    algorithm for the strided layout, or refuses it when run (cuDNN 9: any
//    status of the NOT_SUPPORTED category, 3000–3014, or
//    BAD_PARAM_MISALIGNED_POINTER; cuda_status.hpp), the shape falls back to
//    im2col + cuBLAS (deterministic too).
//  * depthwise: own direct kernels (one thread per output, per input-gradient
//    element in gather form — no atomics; filter gradient by the two-pass
//    reduction).  DSONAS_CUDA_DW=cudnn sends them through cuDNN instead.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda_backend.cuh"
#include "cuda_status.hpp"

namespace dsonas {
using cuda::check_dev;

// cuda_status.hpp mirrors these cuDNN 9 codes for the host tests
static_assert(cuda::kCudnnSuccess == CUDNN_STATUS_SUCCESS, "cuDNN status codes changed");
static_assert(cuda::kCudnnBadParam == CUDNN_STATUS_BAD_PARAM, "cuDNN status codes changed");
static_assert(cuda::kCudnnBadParamMisalignedPointer == CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER,
              "cuDNN status codes changed");
static_assert(cuda::kCudnnNotSupported == CUDNN_STATUS_NOT_SUPPORTED, "cuDNN status codes changed");
static_assert(cuda::kCudnnNotSupportedLast == CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE,
              "cuDNN status codes changed");
static_assert(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER == 3005 &&
                  CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE == 3009,
              "cuDNN status codes changed (cudnn_refusal_is_environmental)");
namespace {
constexpr bool categories_agree() {
  for (int s = 0; s < 6000; ++s)
    if (cuda::cudnn_category(s) != CUDNN_STATUS_CATEGORY(s)) return false;
  return true;
}
}  // namespace
static_assert(categories_agree(), "cuda::cudnn_category differs from CUDNN_STATUS_CATEGORY");

namespace {

// ---- shapes -----------------------------------------------------------------------------

void check_conv_desc(const ConvDesc& d) {
  DSO_CHECK(d.k >= 1 && d.stride >= 1 && d.pad >= 0, "bad conv desc k=", d.k, " s=", d.stride, " p=", d.pad);
  DSO_CHECK(d.groups == 1 || (d.groups == d.cin && d.cin == d.cout),
            "conv: groups must be 1 or cin==cout (depthwise), got groups=", d.groups, " cin=", d.cin, " cout=", d.cout);
}

/// Geometry of x {Cin,N,H,W} → y {Cout,N,Ho,Wo} with the CPU backend's checks.
km::Geom conv_geom(const ConvDesc& d, const Tensor& x, const Tensor& y, const Tensor& w) {
  check_conv_desc(d);
  DSO_CHECK(x.ndim() == 4 && y.ndim() == 4, "conv: activations must be 4-D, got ", shape_str(x.shape()), " and ",
            shape_str(y.shape()));
  km::Geom g;
  g.C = static_cast<int>(x.dim(0));
  g.N = static_cast<int>(x.dim(1));
  g.H = static_cast<int>(x.dim(2));
  g.W = static_cast<int>(x.dim(3));
  g.Cout = static_cast<int>(y.dim(0));
  g.Ho = static_cast<int>(y.dim(2));
  g.Wo = static_cast<int>(y.dim(3));
  g.k = d.k;
  g.s = d.stride;
  g.p = d.pad;
  DSO_CHECK(g.C == d.cin && g.Cout == d.cout && y.dim(1) == g.N && g.Ho == d.out_size(g.H) && g.Wo == d.out_size(g.W) &&
                g.Ho > 0 && g.Wo > 0,
            "conv shapes: x ", shape_str(x.shape()), " y ", shape_str(y.shape()), " desc cin=", d.cin, " cout=", d.cout,
            " k=", d.k, " s=", d.stride, " p=", d.pad);
  DSO_CHECK(w.numel() == shape_numel(d.weight_shape()), "conv weight ", shape_str(w.shape()), " expected ",
            shape_str(d.weight_shape()));
  check_dev(x, "conv");
  check_dev(y, "conv");
  check_dev(w, "conv");
  // cuBLAS and cuDNN take int sizes and strides
  DSO_CHECK(x.numel() < INT_MAX && y.numel() < INT_MAX, "conv: tensors above 2^31 elements are not supported");
  return g;
}

bool is_gemm_1x1(const ConvDesc& d) { return !d.depthwise() && d.k == 1 && d.stride == 1 && d.pad == 0; }

// ---- depthwise kernels -------------------------------------------------------------------

template <int KK>
__global__ void dw_fwd_kernel(const float* __restrict x, const float* __restrict w, float* __restrict y, km::Geom g,
                              int64_t n, float alpha, float beta) {
  GRID_STRIDE(e, n) {
    const float v = km::dw_fwd_elem<KK>(x, w, g, e);
    y[e] = beta == 0.f ? alpha * v : alpha * v + beta * y[e];
  }
}

template <int KK>
__global__ void dw_bwd_data_kernel(const float* __restrict dy, const float* __restrict w, float* __restrict dx,
                                   km::Geom g, int64_t n, float alpha, float beta) {
  GRID_STRIDE(e, n) {
    const float v = km::dw_bwd_data_elem<KK>(dy, w, g, e);
    dx[e] = beta == 0.f ? alpha * v : alpha * v + beta * dx[e];
  }
}

struct DwFilterTerm {
  const float* x;
  const float* dy;
  km::Geom g;
  int taps;
  __device__ cuda::Vals<1> operator()(int seg, int64_t q) const {
    const int c = seg / taps;
    return {{km::dw_filter_term(x, dy, g, c, seg - c * taps, q)}};
  }
};

/// out[seg] = alpha·float(total) + beta·out[seg] (beta == 0: out not read).
struct ScaledStore {
  float* out;
  float alpha, beta;
  __device__ void operator()(int seg, const cuda::Vals<1>& v) const {
    const float r = static_cast<float>(v.v[0]);
    out[seg] = beta == 0.f ? alpha * r : alpha * r + beta * out[seg];
  }
};

template <template <int> class Kern, class... A>
void launch_by_k(int k, int64_t n, const char* what, A... args) {
  const unsigned grid = cuda::grid_for(n);
  switch (k) {
    case 3: Kern<3>::launch(grid, args...); break;
    case 5: Kern<5>::launch(grid, args...); break;
    case 7: Kern<7>::launch(grid, args...); break;
    default: Kern<0>::launch(grid, args...); break;
  }
  KERNEL_CHECK(what);
}

template <int KK>
struct DwFwd {
  static void launch(unsigned grid, const float* x, const float* w, float* y, km::Geom g, int64_t n, float a, float b) {
    dw_fwd_kernel<KK><<<grid, cuda::kThreads>>>(x, w, y, g, n, a, b);
  }
};

template <int KK>
struct DwBwdData {
  static void launch(unsigned grid, const float* dy, const float* w, float* dx, km::Geom g, int64_t n, float a,
                     float b) {
    dw_bwd_data_kernel<KK><<<grid, cuda::kThreads>>>(dy, w, dx, g, n, a, b);
  }
};

// ---- im2col / col2im -------------------------------------------------------------------------

__global__ void im2col_kernel(const float* __restrict x, float* __restrict col, km::Geom g, int n0, int nc,
                              int64_t total) {
  GRID_STRIDE(q, total) col[q] = km::im2col_elem(x, g, n0, nc, q);
}

__global__ void col2im_kernel(const float* __restrict col, float* __restrict dx, km::Geom g, int n0, int nc,
                              int64_t total, float alpha, float beta) {
  GRID_STRIDE(e, total) {
    int64_t dst;
    const float v = km::col2im_elem(col, g, nc, e, &dst, n0);
    dx[dst] = beta == 0.f ? alpha * v : alpha * v + beta * dx[dst];
  }
}

/// im2col chunks stay below this many bytes.
constexpr int64_t kColBytes = int64_t(256) << 20;

int images_per_chunk(const km::Geom& g) {
  const int64_t per = static_cast<int64_t>(g.C) * g.k * g.k * g.Ho * g.Wo * static_cast<int64_t>(sizeof(float));
  const int64_t n = std::max<int64_t>(1, kColBytes / std::max<int64_t>(per, 1));
  return static_cast<int>(std::min<int64_t>(n, g.N));
}

// ---- cuDNN helpers ------------------------------------------------------------------------------

/// Workspace cap per convolution call.
constexpr size_t kMaxWorkspace = size_t(512) << 20;

cudnnStatus_t set_cnhw(cudnnTensorDescriptor_t t, int C, int N, int H, int W) {
  // CNHW described as NCHW dims with explicit strides
  return cudnnSetTensor4dDescriptorEx(t, CUDNN_DATA_FLOAT, N, C, H, W, H * W, N * H * W, W, 1);
}

/// DSONAS_CUDA_VERBOSE=1: one line on stderr per convolution shape and
/// direction saying which path and algorithm it takes.
bool conv_verbose() {
  static const bool on = [] {
    const char* e = std::getenv("DSONAS_CUDA_VERBOSE");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  return on;
}

std::string conv_str(const ConvDesc& d, int N, int H, int W) {
  return str("conv cin=", d.cin, " cout=", d.cout, " k=", d.k, " s=", d.stride, " p=", d.pad, " groups=", d.groups,
             " on N=", N, " H=", H, " W=", W);
}

}  // namespace

namespace cuda {

ConvPlan::~ConvPlan() {
  if (x) cudnnDestroyTensorDescriptor(x);
  if (y) cudnnDestroyTensorDescriptor(y);
  if (w) cudnnDestroyFilterDescriptor(w);
  if (conv) cudnnDestroyConvolutionDescriptor(conv);
}

}  // namespace cuda

cuda::ConvPlan& CudaBackend::conv_plan(const ConvDesc& d, int N, int H, int W, int Ho, int Wo) {
  const auto key = std::make_tuple(d.cin, d.cout, d.k, d.stride, d.pad, d.groups, N, H, W);
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto p = std::make_unique<cuda::ConvPlan>();
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y));
  CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w));
  CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv));
  // A descriptor cuDNN rejects (e.g. the strided layout) is not an error: the
  // shape then takes the GEMM path (or fails in forced-cuDNN mode, with this reason).
  const std::pair<cudnnStatus_t, const char*> steps[] = {
      {set_cnhw(p->x, d.cin, N, H, W), "cudnnSetTensor4dDescriptorEx(x, CNHW strides)"},
      {set_cnhw(p->y, d.cout, N, Ho, Wo), "cudnnSetTensor4dDescriptorEx(y, CNHW strides)"},
      {cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, d.cout, d.cin / d.groups, d.k, d.k),
       "cudnnSetFilter4dDescriptor"},
      {cudnnSetConvolution2dDescriptor(p->conv, d.pad, d.pad, d.stride, d.stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                       CUDNN_DATA_FLOAT),
       "cudnnSetConvolution2dDescriptor"},
      {cudnnSetConvolutionGroupCount(p->conv, d.groups), "cudnnSetConvolutionGroupCount"},
      // --gpu-math fp32: FMA only (no TF32 tensor cores), like the CPU backend;
      // tf32 and bf16: DEFAULT (TF32 tensor cores allowed on sm_80 and later).
      {cudnnSetConvolutionMathType(p->conv, math_ == GpuMath::FP32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH),
       "cudnnSetConvolutionMathType"},
  };
  for (const auto& st : steps)
    if (st.first != CUDNN_STATUS_SUCCESS && p->error.empty())
      p->error = str(st.second, ": ", cudnnGetErrorString(st.first));
  if (!p->error.empty()) {
    for (int dir = 0; dir < 3; ++dir) {
      p->algo[dir] = -1;
      p->algo_name[dir] = "none: " + p->error;
    }
    if (conv_verbose())
      std::fprintf(stderr, "dsonas cuda: %s: cuDNN descriptor rejected (%s)\n", conv_str(d, N, H, W).c_str(),
                   p->error.c_str());
  }
  cuda::ConvPlan& ref = *p;
  plans_.emplace(key, std::move(p));
  return ref;
}

namespace {

/// FP32: algorithms that use FMA only.  TF32 and BF16: tensor-core algorithms
/// too, but never ALLOW_CONVERSION (FP32 → FP16 down-conversion: FP16's range
/// is too small for gradients).
bool acceptable_math(cudnnMathType_t m, GpuMath math) {
  if (math == GpuMath::FP32) return m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
  return m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH || m == CUDNN_TENSOR_OP_MATH;
}

/// The math type of a plan's descriptor before its heuristics run: FMA only
/// under fp32, DEFAULT (TF32 allowed) under tf32 / bf16.
cudnnMathType_t base_math(GpuMath math) { return math == GpuMath::FP32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH; }

/// The math type an accepted algorithm runs with: under fp32 always FMA (the
/// descriptor's), otherwise the one the heuristics paired with it.  The
/// workspace size is asked for under this math type, because cuDNN sizes the
/// workspace of the kernel the descriptor's math type selects: asking under
/// another one may return less than the run needs.
cudnnMathType_t run_math(cudnnMathType_t heuristic, GpuMath math) {
  return math == GpuMath::FP32 ? CUDNN_FMA_MATH : heuristic;
}

/// Picks the first deterministic, supported FP32 algorithm of the heuristics
/// for direction dir (the heuristics are deterministic: same choice every run).
void choose_algo(cudnnHandle_t h, cuda::ConvPlan& p, int dir, GpuMath math) {
  // The descriptor is shared by the three directions and conv_cudnn leaves the
  // math type of the last one run on it: the heuristics of this direction start
  // from the mode's base math type, not from whatever ran before (else the
  // choice for backward would depend on the math of the forward algorithm).
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, base_math(math)));
  int best = -1;
  size_t best_ws = 0;
  cudnnMathType_t best_math = base_math(math);
  std::string name;
  cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
  int candidates = 0;
  if (dir == 0) {
    int max = 0, got = 0;
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(std::max(max, 1)));
    st = cudnnGetConvolutionForwardAlgorithm_v7(h, p.x, p.w, p.conv, p.y, max, &got, perf.data());
    if (st != CUDNN_STATUS_SUCCESS) got = 0;
    candidates = got;
    for (int i = 0; i < got && best < 0; ++i) {
      const auto& r = perf[static_cast<size_t>(i)];
      if (r.status != CUDNN_STATUS_SUCCESS || r.determinism != CUDNN_DETERMINISTIC ||
          !acceptable_math(r.mathType, math))
        continue;
      const cudnnMathType_t m = run_math(r.mathType, math);
      size_t ws = 0;
      if (cudnnSetConvolutionMathType(p.conv, m) != CUDNN_STATUS_SUCCESS ||
          cudnnGetConvolutionForwardWorkspaceSize(h, p.x, p.w, p.conv, p.y, r.algo, &ws) != CUDNN_STATUS_SUCCESS)
        continue;
      ws = std::max(ws, r.memory);
      if (ws > kMaxWorkspace) continue;
      best = static_cast<int>(r.algo);
      best_ws = ws;
      best_math = m;
      name = str("fwd_algo_", best, best_math == CUDNN_FMA_MATH ? "" : " (tensor cores allowed)");
    }
  } else if (dir == 1) {
    int max = 0, got = 0;
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(static_cast<size_t>(std::max(max, 1)));
    st = cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p.w, p.y, p.conv, p.x, max, &got, perf.data());
    if (st != CUDNN_STATUS_SUCCESS) got = 0;
    candidates = got;
    for (int i = 0; i < got && best < 0; ++i) {
      const auto& r = perf[static_cast<size_t>(i)];
      // ALGO_0 sums with atomics (non-deterministic), whatever the field says
      if (r.status != CUDNN_STATUS_SUCCESS || r.determinism != CUDNN_DETERMINISTIC ||
          !acceptable_math(r.mathType, math) || r.algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0)
        continue;
      const cudnnMathType_t m = run_math(r.mathType, math);
      size_t ws = 0;
      if (cudnnSetConvolutionMathType(p.conv, m) != CUDNN_STATUS_SUCCESS ||
          cudnnGetConvolutionBackwardDataWorkspaceSize(h, p.w, p.y, p.conv, p.x, r.algo, &ws) != CUDNN_STATUS_SUCCESS)
        continue;
      ws = std::max(ws, r.memory);
      if (ws > kMaxWorkspace) continue;
      best = static_cast<int>(r.algo);
      best_ws = ws;
      best_math = m;
      name = str("bwd_data_algo_", best, best_math == CUDNN_FMA_MATH ? "" : " (tensor cores allowed)");
    }
  } else {
    int max = 0, got = 0;
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max));
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(static_cast<size_t>(std::max(max, 1)));
    st = cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x, p.y, p.conv, p.w, max, &got, perf.data());
    if (st != CUDNN_STATUS_SUCCESS) got = 0;
    candidates = got;
    for (int i = 0; i < got && best < 0; ++i) {
      const auto& r = perf[static_cast<size_t>(i)];
      // ALGO_0 and ALGO_3 sum with atomics (non-deterministic)
      if (r.status != CUDNN_STATUS_SUCCESS || r.determinism != CUDNN_DETERMINISTIC ||
          !acceptable_math(r.mathType, math) || r.algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 ||
          r.algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3)
        continue;
      const cudnnMathType_t m = run_math(r.mathType, math);
      size_t ws = 0;
      if (cudnnSetConvolutionMathType(p.conv, m) != CUDNN_STATUS_SUCCESS ||
          cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p.x, p.y, p.conv, p.w, r.algo, &ws) != CUDNN_STATUS_SUCCESS)
        continue;
      ws = std::max(ws, r.memory);
      if (ws > kMaxWorkspace) continue;
      best = static_cast<int>(r.algo);
      best_ws = ws;
      best_math = m;
      name = str("bwd_filter_algo_", best, best_math == CUDNN_FMA_MATH ? "" : " (tensor cores allowed)");
    }
  }
  p.algo[dir] = best;
  p.ws[dir] = best_ws;
  p.math[dir] = best_math;
  if (best >= 0)
    p.algo_name[dir] = name;
  else if (st != CUDNN_STATUS_SUCCESS)
    p.algo_name[dir] = str("none: the heuristics query failed: ", cudnnGetErrorString(st));
  else
    p.algo_name[dir] = str("none: no deterministic ", math == GpuMath::FP32 ? "FP32" : "FP32/TF32", " algorithm among ",
                           candidates, " candidates");
}

}  // namespace

bool CudaBackend::conv_cudnn(int dir, const ConvDesc& d, const Tensor& x, const Tensor& w, const Tensor& y, float* out,
                             float alpha, float beta) {
  cuda::ConvPlan& p = conv_plan(d, static_cast<int>(x.dim(1)), static_cast<int>(x.dim(2)), static_cast<int>(x.dim(3)),
                                static_cast<int>(y.dim(2)), static_cast<int>(y.dim(3)));
  static const char* const kDir[3] = {"forward", "backward-data", "backward-filter"};
  if (p.algo[dir] == -2) {
    choose_algo(cudnn_, p, dir, math_);
    if (conv_verbose())
      std::fprintf(
          stderr, "dsonas cuda: %s %s: cuDNN %s, workspace %zu bytes\n",
          conv_str(d, static_cast<int>(x.dim(1)), static_cast<int>(x.dim(2)), static_cast<int>(x.dim(3))).c_str(),
          kDir[dir], p.algo_name[dir].c_str(), p.ws[dir]);
  }
  const bool forced = conv_mode_ == cuda::ConvMode::Cudnn || (d.depthwise() && dw_cudnn_);
  if (p.algo[dir] < 0) {
    if (forced)
      fail_lib("cuDNN",
               str(cuda::kCudnnRefusedTag, ": no deterministic FP32 algorithm for the ", kDir[dir], " ",
                   conv_str(d, static_cast<int>(x.dim(1)), static_cast<int>(x.dim(2)), static_cast<int>(x.dim(3))),
                   " in CNHW (", p.algo_name[dir], "; DSONAS_CUDA_CONV/DSONAS_CUDA_DW force cuDNN)"),
               __FILE__, __LINE__);
    return false;
  }
  void* ws = p.ws[dir] > 0 ? scratch(kWorkspace).get(p.ws[dir]) : nullptr;
  // the three directions share one descriptor: run under the math type the
  // workspace was sized for (fp32: FMA throughout)
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.math[dir]));
  cudnnStatus_t st;
  if (dir == 0)
    st = cudnnConvolutionForward(cudnn_, &alpha, p.x, x.data(), p.w, w.data(), p.conv,
                                 static_cast<cudnnConvolutionFwdAlgo_t>(p.algo[0]), ws, p.ws[0], &beta, p.y, out);
  else if (dir == 1)
    st = cudnnConvolutionBackwardData(cudnn_, &alpha, p.w, w.data(), p.y, y.data(), p.conv,
                                      static_cast<cudnnConvolutionBwdDataAlgo_t>(p.algo[1]), ws, p.ws[1], &beta, p.x,
                                      out);
  else
    st = cudnnConvolutionBackwardFilter(cudnn_, &alpha, p.x, x.data(), p.y, y.data(), p.conv,
                                        static_cast<cudnnConvolutionBwdFilterAlgo_t>(p.algo[2]), ws, p.ws[2], &beta,
                                        p.w, out);
  // cuDNN 9 refuses with sub-codes (CUDNN_STATUS_CATEGORY(st) == NOT_SUPPORTED:
  // 3001 … 3014) or a misaligned pointer (BAD_PARAM_MISALIGNED_POINTER); a
  // refused call launches nothing, so `out` is untouched and the GEMM path
  // computes it instead (also with beta != 0)
  if (cuda::cudnn_outcome(static_cast<int>(st)) == cuda::CudnnOutcome::UseGemm) {
    const std::string shape =
        conv_str(d, static_cast<int>(x.dim(1)), static_cast<int>(x.dim(2)), static_cast<int>(x.dim(3)));
    const std::string why =
        str(p.algo_name[dir], " refused when run: ", cudnnGetErrorString(st), cuda::cudnn_last_error());
    p.algo[dir] = -1;  // this shape takes the GEMM path from now on
    p.algo_name[dir] = "none: " + why;
    if (forced)
      fail_lib("cuDNN",
               str(cuda::kCudnnRefusedTag, ": the ", kDir[dir], " ", shape, " in CNHW: ", why,
                   " (DSONAS_CUDA_CONV/DSONAS_CUDA_DW force cuDNN)"),
               __FILE__, __LINE__);
    static bool said_environmental = false;
    if (conv_verbose())
      std::fprintf(stderr, "dsonas cuda: %s %s: %s -> GEMM path\n", shape.c_str(), kDir[dir], p.algo_name[dir].c_str());
    else if (cuda::cudnn_refusal_is_environmental(static_cast<int>(st)) && !said_environmental)
      std::fprintf(stderr,
                   "dsonas cuda: note: cuDNN refused the %s %s with %s, which no shape will avoid: convolutions "
                   "take the im2col + cuBLAS path (check the cuDNN library against this driver and GPU)\n",
                   kDir[dir], shape.c_str(), cudnnGetErrorString(st));
    said_environmental = said_environmental || cuda::cudnn_refusal_is_environmental(static_cast<int>(st));
    return false;
  }
  CUDNN_CHECK(st);
  return true;
}

// ---- dense convolution through im2col + cuBLAS ------------------------------------------------

void CudaBackend::conv_gemm_forward(const ConvDesc& d, const Tensor& x, const Tensor& w, Tensor& y, float alpha,
                                    float beta) {
  const km::Geom g = conv_geom(d, x, y, w);
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo, CKK = static_cast<int64_t>(g.C) * g.k * g.k;
  const int per = images_per_chunk(g);
  float* col = scratch(kCol).as<float>(static_cast<size_t>(CKK * HoWo * per));
  for (int n0 = 0; n0 < g.N; n0 += per) {
    const int nc = std::min(per, g.N - n0);
    const int64_t cols = HoWo * nc, total = CKK * cols;
    im2col_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(x.data(), col, g, n0, nc, total);
    KERNEL_CHECK("conv im2col");
    gemm(km::gemm_im2col_fwd(g, n0, nc), alpha, col, w.data(), beta, y.data());
  }
}

void CudaBackend::conv_gemm_backward_data(const ConvDesc& d, const Tensor& dy, const Tensor& w, Tensor& dx, float alpha,
                                          float beta) {
  const km::Geom g = conv_geom(d, dx, dy, w);
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo, CKK = static_cast<int64_t>(g.C) * g.k * g.k;
  const int64_t HW = static_cast<int64_t>(g.H) * g.W;
  const int per = images_per_chunk(g);
  float* col = scratch(kCol).as<float>(static_cast<size_t>(CKK * HoWo * per));
  for (int n0 = 0; n0 < g.N; n0 += per) {
    const int nc = std::min(per, g.N - n0);
    gemm(km::gemm_im2col_bwd_data(g, n0, nc), 1.f, dy.data(), w.data(), 0.f, col);
    const int64_t total = static_cast<int64_t>(g.C) * nc * HW;
    col2im_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(col, dx.data(), g, n0, nc, total, alpha, beta);
    KERNEL_CHECK("conv col2im");
  }
}

void CudaBackend::conv_gemm_backward_filter(const ConvDesc& d, const Tensor& x, const Tensor& dy, Tensor& dw,
                                            float alpha, float beta) {
  const km::Geom g = conv_geom(d, x, dy, dw);
  const int64_t HoWo = static_cast<int64_t>(g.Ho) * g.Wo, CKK = static_cast<int64_t>(g.C) * g.k * g.k;
  const int per = images_per_chunk(g);
  float* col = scratch(kCol).as<float>(static_cast<size_t>(CKK * HoWo * per));
  for (int n0 = 0; n0 < g.N; n0 += per) {
    const int nc = std::min(per, g.N - n0);
    const int64_t cols = HoWo * nc, total = CKK * cols;
    im2col_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(x.data(), col, g, n0, nc, total);
    KERNEL_CHECK("conv im2col");
    // later chunks accumulate
    gemm(km::gemm_im2col_bwd_filter(g, n0, nc), alpha, col, dy.data(), n0 == 0 ? beta : 1.f, dw.data());
  }
}

// ---- convolution entry points ---------------------------------------------------------------

void CudaBackend::conv_forward(const ConvDesc& d, const Tensor& x, const Tensor& w, Tensor& y, float alpha,
                               float beta) {
  const km::Geom g = conv_geom(d, x, y, w);
  if (d.depthwise() && !dw_cudnn_) {
    const int64_t n = y.numel();
    launch_by_k<DwFwd>(g.k, n, "conv_forward depthwise", x.data(), w.data(), y.data(), g, n, alpha, beta);
    return;
  }
  if (is_gemm_1x1(d)) {
    const int cols = static_cast<int>(static_cast<int64_t>(g.N) * g.H * g.W);
    gemm(km::gemm_conv1x1_fwd(g.C, g.Cout, cols), alpha, x.data(), w.data(), beta, y.data());
    return;
  }
  if (conv_mode_ != cuda::ConvMode::Gemm && conv_cudnn(0, d, x, w, y, y.data(), alpha, beta)) return;
  if (d.depthwise()) {
    const int64_t n = y.numel();
    launch_by_k<DwFwd>(g.k, n, "conv_forward depthwise", x.data(), w.data(), y.data(), g, n, alpha, beta);
    return;
  }
  conv_gemm_forward(d, x, w, y, alpha, beta);
}

void CudaBackend::conv_backward_data(const ConvDesc& d, const Tensor& dy, const Tensor& w, Tensor& dx, float alpha,
                                     float beta) {
  const km::Geom g = conv_geom(d, dx, dy, w);
  if (d.depthwise() && !dw_cudnn_) {
    const int64_t n = dx.numel();
    launch_by_k<DwBwdData>(g.k, n, "conv_backward_data depthwise", dy.data(), w.data(), dx.data(), g, n, alpha, beta);
    return;
  }
  if (is_gemm_1x1(d)) {
    const int cols = static_cast<int>(static_cast<int64_t>(g.N) * g.H * g.W);
    gemm(km::gemm_conv1x1_bwd_data(g.C, g.Cout, cols), alpha, dy.data(), w.data(), beta, dx.data());
    return;
  }
  if (conv_mode_ != cuda::ConvMode::Gemm && conv_cudnn(1, d, dx, w, dy, dx.data(), alpha, beta)) return;
  if (d.depthwise()) {
    const int64_t n = dx.numel();
    launch_by_k<DwBwdData>(g.k, n, "conv_backward_data depthwise", dy.data(), w.data(), dx.data(), g, n, alpha, beta);
    return;
  }
  conv_gemm_backward_data(d, dy, w, dx, alpha, beta);
}

void CudaBackend::conv_backward_filter(const ConvDesc& d, const Tensor& x, const Tensor& dy, Tensor& dw, float alpha,
                                       float beta) {
  const km::Geom g = conv_geom(d, x, dy, dw);
  auto own_dw = [&] {
    const int taps = g.k * g.k;
    reduce<1>(g.C * taps, static_cast<int64_t>(g.N) * g.Ho * g.Wo, DwFilterTerm{x.data(), dy.data(), g, taps},
              ScaledStore{dw.data(), alpha, beta}, "conv_backward_filter depthwise");
  };
  if (d.depthwise() && !dw_cudnn_) {
    own_dw();
    return;
  }
  if (is_gemm_1x1(d)) {
    const int cols = static_cast<int>(static_cast<int64_t>(g.N) * g.H * g.W);
    gemm(km::gemm_conv1x1_bwd_filter(g.C, g.Cout, cols), alpha, x.data(), dy.data(), beta, dw.data());
    return;
  }
  if (conv_mode_ != cuda::ConvMode::Gemm && conv_cudnn(2, d, x, dw, dy, dw.data(), alpha, beta)) return;
  if (d.depthwise()) {
    own_dw();
    return;
  }
  conv_gemm_backward_filter(d, x, dy, dw, alpha, beta);
}

}  // namespace dsonas
