// cuda_probe.hpp — host-callable facts about the CUDA devices, for tests and
// tools (no CUDA header; defined in cuda_backend.cu, linked in USE_CUDA=1
// builds only).
#pragma once
#include <string>

namespace dsonas {

/// Number of usable CUDA devices; 0 (with the reason in *why) when the driver
/// or runtime reports none or fails.  Never throws.
int cuda_device_count(std::string* why);

/// Before MPI_Init (main(), --device cuda): where a launcher announced the
/// node-local rank (OMPI_COMM_WORLD_LOCAL_RANK, MV2_COMM_WORLD_LOCAL_RANK,
/// MPI_LOCALRANKID, PMI_LOCAL_RANK, SLURM_LOCALID; backend/device_choice.hpp),
/// makes device (local rank mod visible devices) current, so a CUDA-aware MPI
/// opens its context there; returns it.  Without such a variable it touches
/// nothing and returns -1 (cuda_select_device decides after MPI_Init).  Exit 2
/// for no usable GPU, an unusable variable or a cuDNN older than the headers.
int cuda_preselect_device();

/// One rank per GPU (docs/design.md §7), after MPI_Init: makes device (MPI's
/// node-local rank mod visible devices) current, before the backend is built;
/// returns its index.  Keeps the device cuda_preselect_device chose when it
/// agrees (it normally does; a disagreeing inherited variable is overruled,
/// with a note).  Exit 2 when there is no usable device.
int cuda_select_device(int local_rank);

/// The CUDA libraries this binary was built against (headers) and runs with
/// (loaded libraries), as one JSON object: cuDNN (CUDNN_VERSION,
/// cudnnGetVersion(), the verdict of cuda_status.hpp's check), cuBLAS
/// (CUBLAS_VERSION, cublasGetProperty, and cublasGetVersion() through a handle
/// when `with_gpu` and a GPU is present), NCCL (NCCL_VERSION_CODE,
/// ncclGetVersion()), the CUDA runtime (CUDART_VERSION, cudaRuntimeGetVersion)
/// and the driver (cudaDriverGetVersion: the CUDA version it supports, 0 = no
/// driver).  Needs no GPU.  Never throws.
/// NCCL is dist's library: its member comes from the caller (dist/nccl.hpp's
/// nccl_versions_json()), placed where it always was in the object.
std::string cuda_library_versions_json(bool with_gpu, const std::string& nccl_json);

/// Exit 2 with one line when the loaded cuDNN is older than the headers' major
/// version (cuda_status.hpp, check_cudnn_version); a note on stderr, once, for
/// an older minor.  Checks once per process.
void cuda_check_library_versions();

/// Page-locked batch buffers (cuda_pinned.cu): the first acquire installs the
/// host-memory hook (core/host_memory.hpp) with cudaHostAlloc on `device`, the
/// matching last release removes it.  CudaBackend calls them; no-ops with
/// DSONAS_CUDA_PINNED=0.
void cuda_pinned_host_acquire(int device);
void cuda_pinned_host_release();

/// True when p points into page-locked host memory known to CUDA
/// (cudaPointerGetAttributes type == cudaMemoryTypeHost).  Never throws.
bool cuda_is_pinned_host(const void* p);

}  // namespace dsonas
