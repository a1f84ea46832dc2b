// nccl.cu — NCCL communicator and in-place gradient sum (dist/nccl.hpp).
// Compiled only with USE_CUDA=1; the MPI side (broadcast of the id) is in
// communicator.cpp.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "dsonas/core/error.hpp"
#include "dsonas/dist/nccl.hpp"

static_assert(sizeof(ncclUniqueId) == sizeof(dsonas::NcclId), "NcclId must hold an ncclUniqueId");

#define DSO_CUDA_OK(call)                                                                   \
  do {                                                                                      \
    const cudaError_t e_ = (call);                                                          \
    if (e_ != cudaSuccess) ::dsonas::fail_lib("CUDA", ::dsonas::str(#call, ": ", cudaGetErrorString(e_)), __FILE__, __LINE__); \
  } while (0)
#define DSO_NCCL_OK(call)                                                                   \
  do {                                                                                      \
    const ncclResult_t r_ = (call);                                                         \
    if (r_ != ncclSuccess) ::dsonas::fail_lib("NCCL", ::dsonas::str(#call, ": ", ncclGetErrorString(r_)), __FILE__, __LINE__); \
  } while (0)

namespace dsonas {

struct NcclComm {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
};

void nccl_get_unique_id(NcclId* id) {
  ncclUniqueId u;
  DSO_NCCL_OK(ncclGetUniqueId(&u));
  static_assert(sizeof u == sizeof id->bytes, "size");
  std::memcpy(id->bytes, &u, sizeof u);
}

NcclComm* nccl_init(const NcclId& id, int rank, int world) {
  ncclUniqueId u;
  std::memcpy(&u, id.bytes, sizeof u);
  NcclComm* c = new NcclComm;
  DSO_CUDA_OK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  DSO_NCCL_OK(ncclCommInitRank(&c->comm, world, u, rank));
  return c;
}

void nccl_sum(NcclComm* c, float* d, int64_t n) {
  DSO_CHECK(c != nullptr, "nccl_sum before nccl_init");
  DSO_NCCL_OK(ncclAllReduce(d, d, static_cast<size_t>(n), ncclFloat, ncclSum, c->comm, c->stream));
  DSO_CUDA_OK(cudaStreamSynchronize(c->stream));
}

void nccl_destroy(NcclComm* c) {
  if (!c) return;
  if (c->comm) ncclCommDestroy(c->comm);
  if (c->stream) cudaStreamDestroy(c->stream);
  delete c;
}

}  // namespace dsonas
