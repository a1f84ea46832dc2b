// backend.cpp — make_backend: the backend for a device.
#include "dsonas/backend/backend.hpp"

#include "cpu/cpu_backend.hpp"
#include "dsonas/core/error.hpp"
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
#include "dsonas/backend/cuda_backend.hpp"
#endif

namespace dsonas {

std::unique_ptr<Backend> make_backend(Device dev, int threads) {
  if (dev == Device::CPU) return make_cpu_backend(threads);
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
  return make_cuda_backend(threads);
#else
  fail_usage("--device cuda: this dsonas was built without CUDA (rebuild with USE_CUDA=1)");
#endif
}

}  // namespace dsonas
