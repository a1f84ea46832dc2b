// cuda_backend.cu — entry point of the CUDA backend (USE_CUDA=1 builds).
//
// The CUDA implementation of every Backend method is the CUDA-backend issue's
// work and does not exist yet.  Until then this translation unit proves that the
// CUDA toolchain, cuDNN, cuBLAS and NCCL compile and link in every CI run, and
// make_cuda_backend() fails loudly with exit 2 — after checking the device, so
// the message tells whether a GPU was there at all.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <nccl.h>

#include <string>

#include "dsonas/backend/cuda_backend.hpp"
#include "dsonas/core/error.hpp"

namespace dsonas {

std::unique_ptr<Backend> make_cuda_backend(int /*threads*/) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0)
    fail_usage(str("--device cuda: no usable GPU (", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices", ")"));
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  int nccl = 0;
  ncclGetVersion(&nccl);
  fail_usage(str("--device cuda: the CUDA backend is not implemented yet (found ", p.name, ", cuDNN ",
                 cudnnGetVersion(), ", NCCL ", nccl, "); use --device cpu"));
}

}  // namespace dsonas
