// cuda_probe.hpp — host-callable facts about the CUDA devices, for tests and
// tools (no CUDA header; defined in cuda_backend.cu, linked in USE_CUDA=1
// builds only).
#pragma once
#include <string>

namespace dsonas {

/// Number of usable CUDA devices; 0 (with the reason in *why) when the driver
/// or runtime reports none or fails.  Never throws.
int cuda_device_count(std::string* why);

/// One rank per GPU (DESIGN.md §7): makes device local_rank mod (visible
/// devices) current for this process, before the backend is built; returns its
/// index.  Exit 2 when there is no usable device.
int cuda_select_device(int local_rank);

/// Page-locked batch buffers (cuda_pinned.cu): the first acquire installs the
/// host-memory hook (data/host_memory.hpp) with cudaHostAlloc on `device`, the
/// matching last release removes it.  CudaBackend calls them; no-ops with
/// DSONAS_CUDA_PINNED=0.
void cuda_pinned_host_acquire(int device);
void cuda_pinned_host_release();

/// True when p points into page-locked host memory known to CUDA
/// (cudaPointerGetAttributes type == cudaMemoryTypeHost).  Never throws.
bool cuda_is_pinned_host(const void* p);

}  // namespace dsonas
