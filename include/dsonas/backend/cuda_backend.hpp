// cuda_backend.hpp — factory of the CUDA backend (src/backend/cuda).  Only
// declared; defined and linked in builds with -DDSONAS_USE_CUDA=1.  Includes no
// vendor header.
#pragma once
#include <memory>

#include "dsonas/backend/backend.hpp"

namespace dsonas {

/// The CUDA backend on the current device; `threads` is for its host-side work,
/// `math` the arithmetic of its matrix products (backend.hpp).
std::unique_ptr<Backend> make_cuda_backend(int threads, GpuMath math = GpuMath::FP32);

}  // namespace dsonas
