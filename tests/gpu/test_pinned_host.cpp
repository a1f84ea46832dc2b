// test_pinned_host.cpp — the CUDA backend's host-memory hook (cuda_pinned.cu):
// while a CUDA backend exists, batch buffers (HostVector, Batch::data) are
// page-locked host memory (cudaPointerGetAttributes says cudaMemoryTypeHost),
// also when a loader's producer thread allocates them; uploads from them
// round-trip; after the last backend is gone, new buffers are ordinary memory
// and blocks made before are still freed correctly.  Needs a GPU ("no CUDA
// device" skip otherwise); DSONAS_CUDA_PINNED=0 turns the hook off (skipped).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "dsonas/backend/backend.hpp"
#include "dsonas/data/augment.hpp"
#include "dsonas/data/dataset.hpp"
#include "dsonas/core/host_memory.hpp"
#include "dsonas/data/loader.hpp"
#include "dsonas/data/sampler.hpp"
#include "gpu_test_util.hpp"

namespace dsonas {
namespace {

TEST(CudaPinnedHost, BackendMakesBatchBuffersPageLocked) {
  REQUIRE_GPU();
  if (const char* e = std::getenv("DSONAS_CUDA_PINNED"))
    if (std::strcmp(e, "0") == 0) GTEST_SKIP() << "DSONAS_CUDA_PINNED=0";
  HostVector<float> early(1024, 1.f);  // before any backend: ordinary memory
  EXPECT_FALSE(cuda_is_pinned_host(early.data()));
  HostVector<float> kept;
  {
    std::unique_ptr<Backend> be = make_backend(Device::CUDA, 1);
    EXPECT_STREQ(host_memory_name(), "cuda-pinned");
    HostVector<float> v(1 << 20, 2.f);
    EXPECT_TRUE(cuda_is_pinned_host(v.data()));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % 64, 0u);
    // a loader's batches, allocated by its producer thread
    ImageSet s = make_synthetic(64, 1, 8, 8, 4, 1);
    Loader l(s, Sampler(all_indices(64), 16, 0, 1, 1, 2), Augment{}, 1, 2, /*prefetch=*/true);
    Batch b;
    for (int k = 0; k < 3; ++k) {
      l.next(b);
      EXPECT_TRUE(cuda_is_pinned_host(b.data.data())) << "batch " << k;
    }
    // host -> device -> host from pinned memory
    Tensor t = be->act_from_nchw(b.data.data(), b.n, b.c, b.h, b.w);
    HostVector<float> back(b.data.size());
    be->act_to_nchw(t, back.data());
    EXPECT_TRUE(back == b.data);
    // a second backend shares the hook; destroying it leaves the hook in place
    { std::unique_ptr<Backend> be2 = make_backend(Device::CUDA, 1); }
    EXPECT_STREQ(host_memory_name(), "cuda-pinned");
    // a freed block is reused (the cache), still pinned
    const float* p = v.data();
    v = HostVector<float>();
    HostVector<float> again(1 << 20);
    EXPECT_EQ(again.data(), p);
    EXPECT_TRUE(cuda_is_pinned_host(again.data()));
    kept = std::move(again);      // outlives the backend
    early = HostVector<float>();  // a pre-hook block freed while the hook is installed
  }
  EXPECT_STREQ(host_memory_name(), "default");
  HostVector<float> after(1024, 3.f);
  EXPECT_FALSE(cuda_is_pinned_host(after.data()));
  EXPECT_TRUE(cuda_is_pinned_host(kept.data()));
  kept = HostVector<float>();  // freed with cudaFreeHost after the backend is gone
}

}  // namespace
}  // namespace dsonas
