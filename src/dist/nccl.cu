// nccl.cu — NCCL communicator and in-place gradient sum (dist/nccl.hpp).
// Compiled only with USE_CUDA=1; the MPI side (broadcast of the id) is in
// communicator.cpp.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <string>

#include "dsonas/core/error.hpp"
#include "dsonas/dist/nccl.hpp"

static_assert(sizeof(ncclUniqueId) == sizeof(dsonas::NcclId), "NcclId must hold an ncclUniqueId");

#define DSO_CUDA_OK(call)                                                                                 \
  do {                                                                                                    \
    const cudaError_t e_ = (call);                                                                        \
    if (e_ != cudaSuccess)                                                                                \
      ::dsonas::fail_lib("CUDA", ::dsonas::str(#call, ": ", cudaGetErrorString(e_)), __FILE__, __LINE__); \
  } while (0)
// with NCCL's own last message ("Duplicate GPU detected : rank 1 and rank 0 both on
// CUDA device 1b000", a socket that failed, …): the first run on a new machine
// must say why, on one line
#define DSO_NCCL_OK(call)                                                                                         \
  do {                                                                                                            \
    const ncclResult_t r_ = (call);                                                                               \
    if (r_ != ncclSuccess)                                                                                        \
      ::dsonas::fail_lib("NCCL", ::dsonas::str(#call, ": ", ncclGetErrorString(r_), ::dsonas::nccl_last_error()), \
                         __FILE__, __LINE__);                                                                     \
  } while (0)

namespace dsonas {

namespace {
/// " (NCCL: <last message>)" without line breaks, or "" when NCCL has none.
std::string nccl_last_error() {
  const char* m = ncclGetLastError(nullptr);
  if (!m || !*m) return "";
  std::string s = m;
  for (char& ch : s)
    if (ch == '\n' || ch == '\r') ch = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s.empty() ? "" : " (NCCL: " + s + ")";
}
}  // namespace

struct NcclComm {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr;  // recorded on the default stream before each bucket
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
  DSO_CUDA_OK(cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming));
  DSO_NCCL_OK(ncclCommInitRank(&c->comm, world, u, rank));
  return c;
}

void nccl_sum_async(NcclComm* c, float* d, int64_t n) {
  DSO_CHECK(c != nullptr, "nccl_sum_async before nccl_init");
  // the non-blocking stream does not wait for the legacy default stream by
  // itself: an event does it, without blocking the host
  DSO_CUDA_OK(cudaEventRecord(c->ready, 0));
  DSO_CUDA_OK(cudaStreamWaitEvent(c->stream, c->ready, 0));
  DSO_NCCL_OK(ncclAllReduce(d, d, static_cast<size_t>(n), ncclFloat, ncclSum, c->comm, c->stream));
}

void nccl_wait(NcclComm* c) {
  DSO_CHECK(c != nullptr, "nccl_wait before nccl_init");
  DSO_CUDA_OK(cudaStreamSynchronize(c->stream));
}

void nccl_sum(NcclComm* c, float* d, int64_t n) {
  nccl_sum_async(c, d, n);
  nccl_wait(c);
}

std::string nccl_device_bus_id() {
  int dev = 0;
  DSO_CUDA_OK(cudaGetDevice(&dev));
  char bus[64] = {0};
  DSO_CUDA_OK(cudaDeviceGetPCIBusId(bus, sizeof bus - 1, dev));
  return bus;
}

int nccl_library_version() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return 0;
  return v;
}

std::string nccl_versions_json() {
  return str("{\"header\": ", NCCL_VERSION_CODE, ", \"library\": ", nccl_library_version(), "}");
}

void nccl_destroy(NcclComm* c) {
  if (!c) return;
  if (c->comm) ncclCommDestroy(c->comm);
  if (c->ready) cudaEventDestroy(c->ready);
  if (c->stream) cudaStreamDestroy(c->stream);
  delete c;
}

}  // namespace dsonas
