// cuda_pinned.cu — page-locked host memory for batch buffers: the host-memory
// hook (core/host_memory.hpp) the CUDA backend installs while it exists.
//
//  * Installed by the first CudaBackend, removed when the last one is
//    destroyed (a count), so CPU runs of a CUDA build keep ordinary memory.
//    DSONAS_CUDA_PINNED=0 in the environment keeps it off (comparisons,
//    debugging).
//  * cudaHostAlloc(…, cudaHostAllocPortable); each thread that allocates or
//    frees first makes the backend's device current, so a loader's worker
//    thread never creates a context on device 0 of a multi-GPU node.
//  * Freed blocks are kept in a cache by exact size (at most kCacheCap bytes)
//    and handed out again: cudaHostAlloc is slow and cudaFreeHost synchronizes
//    the device, and evaluation iterators drop and re-create their buffers on
//    every pass.  The cache is emptied when the hook is removed.
//  * cudaHostAlloc failing (pinned-memory limit, no device) is not an error:
//    the hook declines, the block comes from ordinary memory, and a warning is
//    printed once.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "dsonas/backend/cuda_probe.hpp"
#include "dsonas/core/host_memory.hpp"

namespace dsonas {

namespace {

constexpr size_t kCacheCap = size_t(1) << 30;

struct State {
  std::mutex mu;  // guards the fields below
  int users = 0;
  const HostMemoryHooks* prev = nullptr;
  std::map<size_t, std::vector<void*>> cache;
  size_t cached = 0;
};
/// Never destroyed: buffers may be freed during static destruction.
State& state() {
  static State* s = new State();
  return *s;
}
std::atomic<int> g_device{-1};
std::atomic<bool> g_warned{false};

void bind_device() {
  thread_local int bound = -1;
  const int d = g_device.load();
  if (d >= 0 && bound != d) {
    if (cudaSetDevice(d) == cudaSuccess)
      bound = d;
    else
      cudaGetLastError();
  }
}

void* pinned_alloc(size_t bytes) {
  {
    State& s = state();
    std::lock_guard<std::mutex> g(s.mu);
    auto it = s.cache.find(bytes);
    if (it != s.cache.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      s.cached -= bytes;
      return p;
    }
  }
  bind_device();
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (!g_warned.exchange(true))
      std::fprintf(stderr,
                   "dsonas: warning: cudaHostAlloc of %zu bytes failed (%s): batch buffers fall back to pageable "
                   "memory (slower host-to-device copies)\n",
                   bytes, cudaGetErrorString(e));
    return nullptr;
  }
  return p;
}

void pinned_free(void* p, size_t bytes) {
  {
    State& s = state();
    std::lock_guard<std::mutex> g(s.mu);
    if (s.users > 0 && s.cached + bytes <= kCacheCap) {
      s.cache[bytes].push_back(p);
      s.cached += bytes;
      return;
    }
  }
  bind_device();
  if (cudaFreeHost(p) != cudaSuccess) cudaGetLastError();  // e.g. at exit, after the driver shut down
}

const HostMemoryHooks kPinned{pinned_alloc, pinned_free, "cuda-pinned"};

bool pinned_disabled() {
  static const bool off = [] {
    const char* e = std::getenv("DSONAS_CUDA_PINNED");
    return e && std::strcmp(e, "0") == 0;
  }();
  return off;
}

}  // namespace

void cuda_pinned_host_acquire(int device) {
  if (pinned_disabled()) return;
  State& s = state();
  std::lock_guard<std::mutex> g(s.mu);
  g_device.store(device);
  if (s.users++ == 0) s.prev = set_host_memory(&kPinned);
}

void cuda_pinned_host_release() {
  if (pinned_disabled()) return;
  std::vector<void*> drop;
  {
    State& s = state();
    std::lock_guard<std::mutex> g(s.mu);
    if (s.users == 0 || --s.users > 0) return;
    if (host_memory() == &kPinned) set_host_memory(s.prev);  // unless someone replaced it meanwhile
    s.prev = nullptr;
    for (auto& kv : s.cache) drop.insert(drop.end(), kv.second.begin(), kv.second.end());
    s.cache.clear();
    s.cached = 0;
  }
  bind_device();
  for (void* p : drop)
    if (cudaFreeHost(p) != cudaSuccess) cudaGetLastError();
}

bool cuda_is_pinned_host(const void* p) {
  cudaPointerAttributes a;
  std::memset(&a, 0, sizeof a);
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeHost;
}

}  // namespace dsonas
