// host_memory.cpp — see host_memory.hpp.  Block layout: [64-byte header | data];
// the header records the free function and the size handed to it, so a block
// is always released by the allocator that made it.
#include "dsonas/core/host_memory.hpp"  // defines: set_host_memory, HostAllocator's blocks

#include <atomic>
#include <cstdlib>

namespace dsonas {

namespace {

constexpr size_t kHeader = 64;  // keeps the data 64-byte aligned
using FreeFn = void (*)(void*, size_t);

struct Header {
  FreeFn free;
  size_t bytes;  // what was requested from the allocator (header included)
};
static_assert(sizeof(Header) <= kHeader, "header too large");

std::atomic<const HostMemoryHooks*> g_hooks{nullptr};

void* default_alloc(size_t bytes) {
  // aligned_alloc wants a multiple of the alignment
  return std::aligned_alloc(kHeader, (bytes + kHeader - 1) / kHeader * kHeader);
}
void default_free(void* p, size_t) { std::free(p); }

}  // namespace

const HostMemoryHooks* set_host_memory(const HostMemoryHooks* h) { return g_hooks.exchange(h); }

const HostMemoryHooks* host_memory() { return g_hooks.load(); }

const char* host_memory_name() {
  const HostMemoryHooks* h = g_hooks.load();
  return h ? h->name : "default";
}

namespace detail {

void* host_alloc(size_t bytes) {
  if (bytes > static_cast<size_t>(-1) - 2 * kHeader) throw std::bad_alloc();
  const size_t total = bytes + kHeader;
  void* base = nullptr;
  FreeFn fr = default_free;
  if (const HostMemoryHooks* h = g_hooks.load(std::memory_order_acquire)) {
    if (h->alloc && h->free) {
      base = h->alloc(total);
      if (base) fr = h->free;
    }
  }
  if (!base) base = default_alloc(total);
  if (!base) throw std::bad_alloc();
  Header* hd = static_cast<Header*>(base);
  hd->free = fr;
  hd->bytes = total;
  return static_cast<char*>(base) + kHeader;
}

void host_free(void* p) noexcept {
  if (!p) return;
  void* base = static_cast<char*>(p) - kHeader;
  const Header* hd = static_cast<const Header*>(base);
  hd->free(base, hd->bytes);
}

}  // namespace detail

}  // namespace dsonas
