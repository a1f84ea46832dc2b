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

}  // namespace dsonas
