// nccl_stub.cpp — NCCL entry points of a build without CUDA: they fail loudly.
#include "dsonas/dist/nccl.hpp"

#include "dsonas/core/error.hpp"

#if !DSONAS_USE_CUDA
namespace dsonas {
namespace {
[[noreturn]] void no_nccl() {
  throw Error(kExitUsage, "this dsonas was built without CUDA (USE_CUDA=0): NCCL is not available; use --device cpu");
}
}  // namespace
void nccl_get_unique_id(NcclId*) { no_nccl(); }
NcclComm* nccl_init(const NcclId&, int, int) { no_nccl(); }
void nccl_sum(NcclComm*, float*, int64_t) { no_nccl(); }
void nccl_sum_async(NcclComm*, float*, int64_t) { no_nccl(); }
void nccl_wait(NcclComm*) { no_nccl(); }
void nccl_destroy(NcclComm*) {}
std::string nccl_device_bus_id() { no_nccl(); }
int nccl_library_version() { return 0; }
std::string nccl_versions_json() { return "{\"header\": 0, \"library\": 0}"; }
}  // namespace dsonas
#endif
