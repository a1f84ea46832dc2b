// counting_host.hpp — a host-memory hook for tests: counts and remembers its
// blocks, so a test can tell that the loaders' batch buffers come from the
// installed hook (it stands in for the CUDA backend's cudaHostAlloc hook).
#pragma once
#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <utility>
#include <vector>

#include "dsonas/core/host_memory.hpp"

namespace dsonas {
namespace testing_host {

struct CountingHost {
  static inline std::mutex mu;
  static inline std::vector<std::pair<const char*, size_t>> live;
  static inline int allocs = 0, frees = 0;
  static inline bool decline = false;  ///< alloc returns nullptr (the hook declines)
  static void* alloc(size_t n) {
    if (decline) return nullptr;
    void* p = std::aligned_alloc(64, (n + 63) / 64 * 64);
    std::lock_guard<std::mutex> g(mu);
    live.emplace_back(static_cast<const char*>(p), n);
    ++allocs;
    return p;
  }
  static void free(void* p, size_t) {
    {
      std::lock_guard<std::mutex> g(mu);
      live.erase(std::remove_if(live.begin(), live.end(), [&](const auto& b) { return b.first == p; }), live.end());
      ++frees;
    }
    std::free(p);
  }
  /// Whether q points into a live block of this hook.
  static bool owns(const void* q) {
    std::lock_guard<std::mutex> g(mu);
    const char* c = static_cast<const char*>(q);
    for (const auto& b : live)
      if (c >= b.first && c < b.first + b.second) return true;
    return false;
  }
  static void reset() {
    std::lock_guard<std::mutex> g(mu);
    allocs = frees = 0;
    decline = false;
  }
};
inline const HostMemoryHooks kCountingHooks{CountingHost::alloc, CountingHost::free, "counting"};

/// Installs the counting hook for its lifetime.
struct ScopedHostHook {
  const HostMemoryHooks* prev;
  ScopedHostHook() : prev(set_host_memory(&kCountingHooks)) {}
  ~ScopedHostHook() { set_host_memory(prev); }
};

}  // namespace testing_host
}  // namespace dsonas
