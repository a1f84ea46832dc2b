// host_memory.hpp — where the host buffers of batches come from: a hook that a
// device backend replaces with page-locked (pinned) memory, so that its
// host→device copies run at full bus speed (and may be asynchronous).
//
// Design:
//  * HostAllocator<T> is a stateless std::allocator replacement; Batch::data is
//    a HostVector<float> = std::vector<float, HostAllocator<float>>.  Every
//    block is 64-byte aligned (AVX-512 loads, like the CPU tensor allocator).
//  * Its blocks come from the installed HostMemoryHooks (set_host_memory); by
//    default (no hook) from std::aligned_alloc — the CPU path is unchanged up to
//    the alignment.  The CUDA backend installs cudaHostAlloc/cudaFreeHost while
//    a CUDA backend exists (src/backend/cuda/cuda_pinned.cu); the hooks are
//    plain function pointers, so no host .cpp includes a CUDA header.
//  * Each block remembers (in a 64-byte header in front of the data) which free
//    function releases it, so installing or removing a hook while buffers are
//    alive is safe: a block allocated before is freed by its own allocator.
//    Hence all HostAllocator instances compare equal; moves and swaps of
//    HostVectors never reallocate.
//  * A hook may decline (alloc returns nullptr, e.g. the pinned-memory limit is
//    reached): the block then comes from the default allocator.
//  * Thread-safe: loaders allocate from their worker threads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <type_traits>
#include <vector>

namespace dsonas {

struct HostMemoryHooks {
  /// `bytes` (> 0) of memory aligned to at least 64 bytes, or nullptr to decline
  /// (the default allocator is used instead).  May throw.
  void* (*alloc)(size_t bytes) = nullptr;
  /// Releases a block `alloc` returned (`bytes` as requested).  Must not throw.
  void (*free)(void* p, size_t bytes) = nullptr;
  /// For messages, e.g. "cuda-pinned".
  const char* name = "";
};

/// Installs `h` (nullptr: the default allocator) for blocks allocated from now
/// on; returns the previous hooks (nullptr if none).  `*h` must stay valid while
/// installed (use a static object).
const HostMemoryHooks* set_host_memory(const HostMemoryHooks* h);
/// The installed hooks, nullptr if none.
const HostMemoryHooks* host_memory();
/// "default" or the installed hooks' name.
const char* host_memory_name();

namespace detail {
/// A block of at least `bytes` bytes, 64-byte aligned (std::bad_alloc on failure).
void* host_alloc(size_t bytes);
/// Frees a block of host_alloc (nullptr: nothing).
void host_free(void* p) noexcept;
}  // namespace detail

template <class T>
struct HostAllocator {
  static_assert(alignof(T) <= 64, "HostAllocator aligns to 64 bytes");
  using value_type = T;
  using is_always_equal = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;

  HostAllocator() noexcept = default;
  template <class U>
  HostAllocator(const HostAllocator<U>&) noexcept {}

  T* allocate(size_t n) {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(detail::host_alloc(n * sizeof(T)));
  }
  void deallocate(T* p, size_t) noexcept { detail::host_free(p); }

  template <class U>
  bool operator==(const HostAllocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const HostAllocator<U>&) const noexcept {
    return false;
  }
};

/// A std::vector whose storage comes from the host-memory hook (pinned on a GPU run).
template <class T>
using HostVector = std::vector<T, HostAllocator<T>>;

}  // namespace dsonas
