// backend.cpp — make_backend: the backend for a device.
#include "dsonas/backend/backend.hpp"

#include "cpu/cpu_backend.hpp"
#include "dsonas/core/error.hpp"
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
#include "dsonas/backend/cuda_backend.hpp"
#endif

namespace dsonas {

GpuMath gpu_math_from(const std::string& name, const char* field) {
  if (name == "fp32") return GpuMath::FP32;
  if (name == "tf32") return GpuMath::TF32;
  if (name == "bf16") return GpuMath::BF16;
  fail_usage(str(field, ": '", name, "' (expected fp32, tf32 or bf16)"));
}

const char* gpu_math_name(GpuMath m) {
  switch (m) {
    case GpuMath::TF32: return "tf32";
    case GpuMath::BF16: return "bf16";
    default: return "fp32";
  }
}

std::unique_ptr<Backend> make_backend(Device dev, int threads, GpuMath math) {
  if (dev == Device::CPU) {
    if (math != GpuMath::FP32)
      fail_usage(str("--gpu-math ", gpu_math_name(math),
                     ": only --device cuda has tensor-core math (the CPU "
                     "computes in fp32; set gpu-math = fp32)"));
    return make_cpu_backend(threads);
  }
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
  return make_cuda_backend(threads, math);
#else
  fail_usage("--device cuda: this dsonas was built without CUDA (rebuild with USE_CUDA=1)");
#endif
}

}  // namespace dsonas
