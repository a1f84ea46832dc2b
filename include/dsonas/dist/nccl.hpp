// nccl.hpp — the NCCL half of the Communicator, behind plain C++ (host .cpp
// files never include CUDA or NCCL headers).  Implemented in src/dist/nccl.cu
// when USE_CUDA=1; without CUDA every entry point fails loudly.
#pragma once
#include <cstdint>
#include <string>

namespace dsonas {

/// ncclUniqueId's bytes (NCCL_UNIQUE_ID_BYTES = 128), made by rank 0 and
/// broadcast over MPI.
struct NcclId {
  char bytes[128];
};
struct NcclComm;

void nccl_get_unique_id(NcclId* id);
/// ncclCommInitRank on the current CUDA device.
NcclComm* nccl_init(const NcclId& id, int rank, int world);
/// In-place sum of n device floats over the ranks (ncclAllReduce on the
/// communicator's stream, then waits for it).
void nccl_sum(NcclComm* c, float* device_data, int64_t n);
/// The same, asynchronous: an event recorded on the legacy default stream
/// (where the CUDA backend runs everything) orders the all-reduce after all
/// work already issued there (the bucket's gradients), and the all-reduce
/// runs on the communicator's own stream while the backward pass goes on.
/// Every rank issues its buckets in the same order (fixed by the ranges).
void nccl_sum_async(NcclComm* c, float* device_data, int64_t n);
/// Blocks the host until every all-reduce issued so far has completed.
void nccl_wait(NcclComm* c);
void nccl_destroy(NcclComm* c);
/// PCI bus id of the current CUDA device ("0000:1B:00.0"): with the host name
/// it tells whether two ranks share a GPU, which NCCL refuses.
std::string nccl_device_bus_id();
/// ncclGetVersion() of the loaded library (NCCL_VERSION_CODE form, e.g. 22809).
int nccl_library_version();
/// `{"header": NCCL_VERSION_CODE, "library": nccl_library_version()}` (header 0 in a
/// build without NCCL): the "nccl" member of dsonas --version's cuda line.
std::string nccl_versions_json();

}  // namespace dsonas
