// cuda_bn.cu — batch-norm (fused with ReLU) of CudaBackend.
//
// Training forward: per channel Σx and Σx² in double by the deterministic
// two-pass reduction (cuda_common.cuh); the finaliser (one thread per channel)
// forms mean, biased variance, 1/sqrt(v+eps), the running statistics and the
// per-channel scale/shift exactly as CpuBackend does (in double, rounded to
// float at the same places); one elementwise pass applies y = relu(x·a + b).
// Backward: per channel Σg and Σg·x (g = dy·[y>0]) the same way, then the
// CPU's closed form dx = a·g + b·x + c0.  No atomics; bit-reproducible.
#include "cuda_backend.cuh"

namespace dsonas {
using cuda::check_dev;

namespace {

struct BnDims {
  int64_t C, M;
};

BnDims bn_dims(const Tensor& x, const Tensor& y, const Tensor& gamma, const Tensor& beta) {
  DSO_CHECK(x.ndim() == 4, "bn: x must be 4-D, got ", shape_str(x.shape()));
  BnDims d{x.dim(0), x.dim(1) * x.dim(2) * x.dim(3)};
  DSO_CHECK(y.numel() == x.numel() && gamma.numel() == d.C && beta.numel() == d.C, "bn shapes: x ",
            shape_str(x.shape()), " y ", shape_str(y.shape()), " gamma ", shape_str(gamma.shape()), " beta ",
            shape_str(beta.shape()));
  check_dev(x, "bn");
  check_dev(y, "bn");
  check_dev(gamma, "bn");
  check_dev(beta, "bn");
  DSO_CHECK(d.C <= INT32_MAX, "bn: too many channels");
  return d;
}

/// {x, x²} of element i of channel c.
struct StatTerm {
  const float* x;
  int64_t M;
  __device__ cuda::Vals<2> operator()(int c, int64_t i) const {
    const double v = static_cast<double>(x[static_cast<int64_t>(c) * M + i]);
    return {{v, v * v}};
  }
};

/// Per channel: statistics, running averages and the apply coefficients.
struct TrainFin {
  const float* gamma;
  const float* beta;
  float* run_mean;
  float* run_var;
  float* save_mean;
  float* save_invstd;
  float* coef;  // [C][2]: scale, shift
  int64_t M;
  float momentum, eps;
  __device__ void operator()(int c, const cuda::Vals<2>& s) const {
    km::bn_train_finalize(s.v[0], s.v[1], M, gamma[c], beta[c], momentum, eps, &run_mean[c], &run_var[c], &save_mean[c],
                          &save_invstd[c], &coef[2 * c], &coef[2 * c + 1]);
  }
};

__global__ void bn_infer_coef_kernel(const float* __restrict gamma, const float* __restrict beta,
                                     const float* __restrict rm, const float* __restrict rv, float eps,
                                     float* __restrict coef, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  km::bn_infer_coef(gamma[c], beta[c], rm[c], rv[c], eps, &coef[2 * c], &coef[2 * c + 1]);
}

__global__ void bn_apply_kernel(const float* __restrict x, float* __restrict y, const float* __restrict coef,
                                int64_t total, int64_t M, bool relu) {
  GRID_STRIDE(e, total) {
    const int64_t c = e / M;
    y[e] = km::bn_apply_elem(x[e], coef[2 * c], coef[2 * c + 1], relu);
  }
}

/// {g, g·x} with g the ReLU-masked gradient.
struct BwdTerm {
  const float* x;
  const float* y;
  const float* dy;
  int64_t M;
  bool relu;
  __device__ cuda::Vals<2> operator()(int c, int64_t i) const {
    const int64_t e = static_cast<int64_t>(c) * M + i;
    const double g = static_cast<double>(km::bn_masked_grad(dy[e], y[e], relu));
    return {{g, g * static_cast<double>(x[e])}};
  }
};

struct BwdFin {
  const float* gamma;
  const float* save_mean;
  const float* save_invstd;
  float* dgamma;  // may be null
  float* dbeta;   // may be null
  float* coef;    // [C][3]: a, b, c0 of dx = a·g + b·x + c0
  int64_t M;
  __device__ void operator()(int c, const cuda::Vals<2>& s) const {
    float dg, db;
    km::bn_backward_finalize(s.v[0], s.v[1], M, gamma[c], save_mean[c], save_invstd[c], &dg, &db, &coef[3 * c],
                             &coef[3 * c + 1], &coef[3 * c + 2]);
    if (dgamma) dgamma[c] = dg;
    if (dbeta) dbeta[c] = db;
  }
};

__global__ void bn_bwd_apply_kernel(const float* __restrict x, const float* __restrict y, const float* __restrict dy,
                                    float* __restrict dx, const float* __restrict coef, int64_t total, int64_t M,
                                    bool relu, float beta_dx) {
  GRID_STRIDE(e, total) {
    const int64_t c = e / M;
    const float g = km::bn_masked_grad(dy[e], y[e], relu);
    const float v = coef[3 * c] * g + coef[3 * c + 1] * x[e] + coef[3 * c + 2];
    dx[e] = beta_dx == 0.f ? v : v + beta_dx * dx[e];
  }
}

}  // namespace

void CudaBackend::bn_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& run_mean,
                                   Tensor& run_var, float momentum, float eps, Tensor& y, Tensor& save_mean,
                                   Tensor& save_invstd, bool relu) {
  const BnDims d = bn_dims(x, y, gamma, beta);
  DSO_CHECK(run_mean.numel() == d.C && run_var.numel() == d.C && save_mean.numel() == d.C && save_invstd.numel() == d.C,
            "bn_forward_train: statistics tensors must have C=", d.C, " elements");
  DSO_CHECK(d.M > 0, "bn_forward_train: empty batch");
  check_dev(run_mean, "bn_forward_train");
  check_dev(run_var, "bn_forward_train");
  check_dev(save_mean, "bn_forward_train");
  check_dev(save_invstd, "bn_forward_train");
  if (d.C == 0) return;
  float* coef = scratch(kCoef).as<float>(static_cast<size_t>(2 * d.C));
  reduce<2>(static_cast<int>(d.C), d.M, StatTerm{x.data(), d.M},
            TrainFin{gamma.data(), beta.data(), run_mean.data(), run_var.data(), save_mean.data(), save_invstd.data(),
                     coef, d.M, momentum, eps},
            "bn_forward_train statistics");
  const int64_t total = x.numel();
  bn_apply_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(x.data(), y.data(), coef, total, d.M, relu);
  KERNEL_CHECK("bn_forward_train apply");
}

void CudaBackend::bn_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& run_mean,
                                   const Tensor& run_var, float eps, Tensor& y, bool relu) {
  const BnDims d = bn_dims(x, y, gamma, beta);
  DSO_CHECK(run_mean.numel() == d.C && run_var.numel() == d.C, "bn_forward_infer: statistics tensors must have C=", d.C,
            " elements");
  check_dev(run_mean, "bn_forward_infer");
  check_dev(run_var, "bn_forward_infer");
  if (d.C == 0 || x.numel() == 0) return;
  float* coef = scratch(kCoef).as<float>(static_cast<size_t>(2 * d.C));
  bn_infer_coef_kernel<<<cuda::grid_for(d.C), cuda::kThreads>>>(gamma.data(), beta.data(), run_mean.data(),
                                                                run_var.data(), eps, coef, static_cast<int>(d.C));
  KERNEL_CHECK("bn_forward_infer coefficients");
  const int64_t total = x.numel();
  bn_apply_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(x.data(), y.data(), coef, total, d.M, relu);
  KERNEL_CHECK("bn_forward_infer apply");
}

void CudaBackend::bn_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                              const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor* dgamma,
                              Tensor* dbeta, bool relu, float beta_dx) {
  const BnDims d = bn_dims(x, y, gamma, gamma);
  DSO_CHECK(
      dy.numel() == x.numel() && dx.numel() == x.numel() && save_mean.numel() == d.C && save_invstd.numel() == d.C,
      "bn_backward shapes: dy ", shape_str(dy.shape()), " dx ", shape_str(dx.shape()));
  DSO_CHECK(!dgamma || dgamma->numel() == d.C, "bn_backward: dgamma must have C elements");
  DSO_CHECK(!dbeta || dbeta->numel() == d.C, "bn_backward: dbeta must have C elements");
  check_dev(dy, "bn_backward");
  check_dev(dx, "bn_backward");
  check_dev(save_mean, "bn_backward");
  check_dev(save_invstd, "bn_backward");
  if (dgamma) check_dev(*dgamma, "bn_backward");
  if (dbeta) check_dev(*dbeta, "bn_backward");
  if (d.C == 0) return;
  float* coef = scratch(kCoef).as<float>(static_cast<size_t>(3 * d.C));
  reduce<2>(static_cast<int>(d.C), d.M, BwdTerm{x.data(), y.data(), dy.data(), d.M, relu},
            BwdFin{gamma.data(), save_mean.data(), save_invstd.data(), dgamma ? dgamma->data() : nullptr,
                   dbeta ? dbeta->data() : nullptr, coef, d.M},
            "bn_backward sums");
  const int64_t total = x.numel();
  if (total == 0) return;
  bn_bwd_apply_kernel<<<cuda::grid_for(total), cuda::kThreads>>>(x.data(), y.data(), dy.data(), dx.data(), coef, total,
                                                                 d.M, relu, beta_dx);
  KERNEL_CHECK("bn_backward apply");
}

}  // namespace dsonas
