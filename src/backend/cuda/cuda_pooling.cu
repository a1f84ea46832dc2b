// cuda_pooling.cu — max and average pooling of CudaBackend: own kernels, one thread
// per output (forward) or input-gradient element (backward, gather form, no atomics);
// max backward = an argmax pass + a gather pass (the CPU twin: cpu_pooling.cpp).
#include "cuda_backend.cuh"

namespace dsonas {
using cuda::check_dev;

namespace {

__global__ void pool_fwd_kernel(const float* __restrict x, float* __restrict y, km::Geom g, int64_t n, bool is_max) {
  GRID_STRIDE(e, n) y[e] = km::pool_fwd_elem(x, g, is_max, e);
}

__global__ void pool_argmax_kernel(const float* __restrict x, int* __restrict am, km::Geom g, int64_t n) {
  GRID_STRIDE(e, n) am[e] = km::pool_argmax_elem(x, g, e);
}

__global__ void pool_bwd_kernel(const float* __restrict dy, const int* __restrict am, float* __restrict dx, km::Geom g,
                                int64_t n, bool is_max, float beta) {
  GRID_STRIDE(e, n) {
    const float v = km::pool_bwd_elem(dy, am, g, is_max, e);
    dx[e] = beta == 0.f ? v : v + beta * dx[e];
  }
}

km::Geom pool_geom(const PoolDesc& d, const Tensor& x, const Tensor& y) {
  DSO_CHECK(d.k >= 1 && d.stride >= 1 && d.pad >= 0 && d.pad < d.k, "bad pool desc k=", d.k, " s=", d.stride,
            " p=", d.pad);
  DSO_CHECK(x.ndim() == 4 && y.ndim() == 4 && x.dim(0) == y.dim(0) && x.dim(1) == y.dim(1) &&
                y.dim(2) == d.out_size(static_cast<int>(x.dim(2))) &&
                y.dim(3) == d.out_size(static_cast<int>(x.dim(3))),
            "pool shapes: x ", shape_str(x.shape()), " y ", shape_str(y.shape()));
  check_dev(x, "pool");
  check_dev(y, "pool");
  km::Geom g;
  g.C = g.Cout = static_cast<int>(x.dim(0));
  g.N = static_cast<int>(x.dim(1));
  g.H = static_cast<int>(x.dim(2));
  g.W = static_cast<int>(x.dim(3));
  g.Ho = static_cast<int>(y.dim(2));
  g.Wo = static_cast<int>(y.dim(3));
  g.k = d.k;
  g.s = d.stride;
  g.p = d.pad;
  return g;
}

}  // namespace

// ---- pooling ----------------------------------------------------------------------------------

void CudaBackend::pool_forward(const PoolDesc& d, const Tensor& x, Tensor& y) {
  const km::Geom g = pool_geom(d, x, y);
  const int64_t n = y.numel();
  if (n == 0) return;
  pool_fwd_kernel<<<cuda::grid_for(n), cuda::kThreads>>>(x.data(), y.data(), g, n, d.kind == PoolKind::Max);
  KERNEL_CHECK("pool_forward");
}

void CudaBackend::pool_backward(const PoolDesc& d, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                                float beta) {
  const km::Geom g = pool_geom(d, x, y);
  DSO_CHECK(dy.numel() == y.numel() && dx.numel() == x.numel(), "pool_backward shapes: dy ", shape_str(dy.shape()),
            " dx ", shape_str(dx.shape()));
  check_dev(dy, "pool_backward");
  check_dev(dx, "pool_backward");
  const bool mx = d.kind == PoolKind::Max;
  const int64_t nout = y.numel(), nin = dx.numel();
  if (nin == 0) return;
  int* am = nullptr;
  if (mx && nout > 0) {
    // The first maximum of every window, recomputed from x (max is exact, so
    // it is the y of the forward pass).
    am = scratch(kIdx).as<int>(static_cast<size_t>(nout));
    pool_argmax_kernel<<<cuda::grid_for(nout), cuda::kThreads>>>(x.data(), am, g, nout);
    KERNEL_CHECK("pool_backward argmax");
  }
  pool_bwd_kernel<<<cuda::grid_for(nin), cuda::kThreads>>>(dy.data(), am, dx.data(), g, nin, mx, beta);
  KERNEL_CHECK("pool_backward");
}

}  // namespace dsonas
