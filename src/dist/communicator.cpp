// communicator.cpp — MPI bootstrap, small collectives, the bucketed gradient
// reduction and abort-the-world (design in dist/communicator.hpp).
#include "dsonas/dist/communicator.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/tensor.hpp"
#include "dsonas/backend/device_choice.hpp"
#include "dsonas/dist/nccl.hpp"

#if DSONAS_USE_MPI
#include <mpi.h>
#define MPI_CHECK(call)                                                                                   \
  do {                                                                                                    \
    const int rc_ = (call);                                                                               \
    if (rc_ != MPI_SUCCESS) {                                                                             \
      char msg_[MPI_MAX_ERROR_STRING];                                                                    \
      int len_ = 0;                                                                                       \
      MPI_Error_string(rc_, msg_, &len_);                                                                 \
      ::dsonas::fail_lib("MPI", ::dsonas::str(#call, ": ", std::string(msg_, len_)), __FILE__, __LINE__); \
    }                                                                                                     \
  } while (0)
#endif

namespace dsonas {

uint64_t hash_bytes(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

namespace {
bool g_inited = false;
bool g_mpi = false;  // MPI_Init_thread ran and MPI_Finalize has not

/// World size a launcher asked for (0 = not under a launcher).
[[maybe_unused]] int launcher_world() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return 0;
}
}  // namespace

struct Communicator::Impl {
#if DSONAS_USE_MPI
  MPI_Comm comm = MPI_COMM_NULL;
#endif
  NcclComm* nccl = nullptr;
};

Communicator::Communicator() : impl_(new Impl) {
  char h[256] = {0};
  ::gethostname(h, sizeof h - 1);
  host_ = h;
#if DSONAS_USE_MPI
  if (!g_mpi) {
    int provided = 0;
    MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    g_mpi = true;
  }
  // Errors come back as codes (turned into dsonas errors), not as MPI's own abort.
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &impl_->comm));
  MPI_CHECK(MPI_Comm_set_errhandler(impl_->comm, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(impl_->comm, &rank_));
  MPI_CHECK(MPI_Comm_size(impl_->comm, &size_));
  MPI_Comm local;
  MPI_CHECK(MPI_Comm_split_type(impl_->comm, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
  MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
  MPI_CHECK(MPI_Comm_size(local, &local_size_));
  MPI_Comm_free(&local);
#else
  if (launcher_world() > 1)
    throw Error(kExitUsage, str("this dsonas was built with USE_MPI=0 but was launched as one of ", launcher_world(),
                                " ranks; rebuild with MPI (make USE_MPI=1)"));
#endif
  set_error_rank(rank_);
}

Communicator::~Communicator() {
  if (impl_->nccl) nccl_destroy(impl_->nccl);
}

Communicator& Communicator::world() {
  static Communicator* c = [] {
    g_inited = true;
    return new Communicator();  // lives until exit: MPI_Finalize needs no destructor order games
  }();
  return *c;
}

void Communicator::init(int*, char***) { world(); }

bool Communicator::multi_rank() { return g_inited && world().size() > 1; }

void Communicator::finalize() {
#if DSONAS_USE_MPI
  if (g_mpi) {
    if (g_inited && world().impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&world().impl_->comm);
    MPI_Finalize();
    g_mpi = false;
  }
#endif
}

void Communicator::abort(int code) {
  std::cout.flush();
  std::cerr.flush();
#if DSONAS_USE_MPI
  if (g_mpi && multi_rank()) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

#if DSONAS_USE_MPI
namespace {
template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() {
  return MPI_FLOAT;
}
template <>
MPI_Datatype mpi_type<double>() {
  return MPI_DOUBLE;
}
template <>
MPI_Datatype mpi_type<int64_t>() {
  return MPI_INT64_T;
}

/// MPI counts are int: large buffers go in pieces.
template <class T>
void allreduce_sum(MPI_Comm comm, T* data, int64_t n) {
  constexpr int64_t kMax = int64_t(1) << 30;
  for (int64_t off = 0; off < n; off += kMax)
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + off, static_cast<int>(std::min(kMax, n - off)), mpi_type<T>(), MPI_SUM,
                            comm));
}
}  // namespace

void Communicator::sum(float* d, int64_t n) {
  if (size_ > 1) allreduce_sum(impl_->comm, d, n);
}
void Communicator::sum(double* d, int64_t n) {
  if (size_ > 1) allreduce_sum(impl_->comm, d, n);
}
void Communicator::sum(int64_t* d, int64_t n) {
  if (size_ > 1) allreduce_sum(impl_->comm, d, n);
}
double Communicator::max(double v) {
  if (size_ > 1) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, impl_->comm));
  return v;
}
void Communicator::broadcast(void* d, int64_t bytes) {
  if (size_ > 1) MPI_CHECK(MPI_Bcast(d, static_cast<int>(bytes), MPI_BYTE, 0, impl_->comm));
}
void Communicator::barrier() {
  if (size_ > 1) MPI_CHECK(MPI_Barrier(impl_->comm));
}
std::vector<uint64_t> Communicator::gather_all(uint64_t v) {
  std::vector<uint64_t> all(static_cast<size_t>(size_), v);
  if (size_ > 1) MPI_CHECK(MPI_Allgather(&v, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, impl_->comm));
  return all;
}
#else
void Communicator::sum(float*, int64_t) {}
void Communicator::sum(double*, int64_t) {}
void Communicator::sum(int64_t*, int64_t) {}
double Communicator::max(double v) { return v; }
void Communicator::broadcast(void*, int64_t) {}
void Communicator::barrier() {}
std::vector<uint64_t> Communicator::gather_all(uint64_t v) { return {v}; }
#endif

void Communicator::check_same(uint64_t hash, const std::string& what, int64_t step) {
  if (size_ == 1) return;
  const std::vector<uint64_t> all = gather_all(hash);
  for (int r = 1; r < size_; ++r)
    if (all[static_cast<size_t>(r)] != all[0])
      throw Error(kExitInternal,
                  str(what, " differs on rank ", r, " at step ", step, " (hash ", std::hex, all[static_cast<size_t>(r)],
                      " vs rank 0's ", all[0], std::dec, "): the replicas have drifted apart"));
}

// ---------------------------------------------------------------------------
// GradReducer and its transports

namespace {

#if DSONAS_USE_MPI
/// One MPI_Iallreduce per bucket (host memory); MPI_Testall drives progress.
class MpiTransport final : public ReduceTransport {
 public:
  explicit MpiTransport(MPI_Comm c) : comm_(c) {}
  // No MPI_Wait here: after an exception the world is about to be aborted, and a
  // wait could hang on a rank that never posts its half.  Open MPI progresses
  // requests only inside MPI calls, and the only one left is MPI_Abort.
  ~MpiTransport() override = default;
  void start(float* data, int64_t n) override {
    DSO_CHECK(n <= INT32_MAX, "GradReducer: a bucket of ", n, " floats exceeds MPI's int count");
    reqs_.emplace_back(MPI_REQUEST_NULL);
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(n), MPI_FLOAT, MPI_SUM, comm_, &reqs_.back()));
  }
  void progress() override {
    if (reqs_.empty()) return;
    int done = 0;
    MPI_CHECK(MPI_Testall(static_cast<int>(reqs_.size()), reqs_.data(), &done, MPI_STATUSES_IGNORE));
  }
  void wait() override {
    if (!reqs_.empty()) MPI_CHECK(MPI_Waitall(static_cast<int>(reqs_.size()), reqs_.data(), MPI_STATUSES_IGNORE));
    reqs_.clear();
  }

 private:
  MPI_Comm comm_;
  std::vector<MPI_Request> reqs_;
};
#endif

/// One ncclAllReduce per bucket on the communicator's stream (nccl.hpp).
class NcclTransport final : public ReduceTransport {
 public:
  explicit NcclTransport(NcclComm* c) : c_(c) {}
  void start(float* data, int64_t n) override { nccl_sum_async(c_, data, n); }
  void wait() override { nccl_wait(c_); }

 private:
  NcclComm* c_;
};

}  // namespace

GradReducer::GradReducer(Communicator& comm, Backend& be, Tensor& flat, int64_t bucket_elems)
    : flat_(flat), bucket_(std::max<int64_t>(1, bucket_elems)) {
  if (comm.size() == 1) return;  // nothing to reduce
  if (flat.device() == Device::CUDA) {
    Communicator::Impl* ci = comm.impl();
    if (!ci->nccl) {
      // NCCL stops with "Duplicate GPU detected" (ncclInvalidUsage, since NCCL
      // 2.5) when two ranks of a communicator share a GPU: say so first, the
      // same line on every rank, before any rank enters ncclCommInitRank
      const std::string dev = comm.host() + " " + nccl_device_bus_id();
      const std::vector<uint64_t> keys = comm.gather_all(hash_bytes(dev.data(), dev.size()));
      const std::pair<int, int> dup = first_shared_device(keys);
      if (dup.first >= 0)
        throw Error(kExitUsage,
                    str("--device cuda: ranks ", dup.first, " and ", dup.second,
                        " use the same GPU: NCCL needs one GPU per rank (it stops with 'Duplicate GPU detected'); "
                        "run at most as many ranks per node as it has GPUs (rank ",
                        comm.rank(), " is on GPU ", dev, ")"));
      NcclId id{};
      if (comm.root()) nccl_get_unique_id(&id);
      comm.broadcast(&id, sizeof id);
      ci->nccl = nccl_init(id, comm.rank(), comm.size());
    }
    own_.reset(new NcclTransport(ci->nccl));
  } else {
#if DSONAS_USE_MPI
    own_.reset(new MpiTransport(comm.impl()->comm));
#endif
  }
  tr_ = own_.get();
}

GradReducer::GradReducer(ReduceTransport& transport, Tensor& flat, int64_t bucket_elems)
    : flat_(flat), bucket_(std::max<int64_t>(1, bucket_elems)), tr_(&transport) {}

GradReducer::~GradReducer() = default;

void GradReducer::begin(int64_t lo, int64_t hi) {
  DSO_CHECK(lo >= 0 && lo <= hi && hi <= flat_.numel(), "GradReducer::begin: bad range");
  lo_ = lo;
  hi_ = next_hi_ = hi;
}

void GradReducer::start(int64_t lo, int64_t hi) {
  if (hi <= lo) return;
  ++started_;
  // NCCL: enqueued on its own stream behind the bucket's gradients; MPI: posted
  tr_->start(flat_.data() + lo, hi - lo);
}

void GradReducer::ready(int64_t from) {
  if (!tr_) return;
  from = std::max(from, lo_);
  // buckets are [hi − (k+1)·B, hi − k·B) clipped at lo: fixed by the range, not by timing
  while (next_hi_ > lo_ && std::max(lo_, next_hi_ - bucket_) >= from) {
    const int64_t b = std::max(lo_, next_hi_ - bucket_);
    start(b, next_hi_);
    next_hi_ = b;
  }
  tr_->progress();
}

void GradReducer::finish() {
  if (!tr_) return;
  const auto t0 = std::chrono::steady_clock::now();
  while (next_hi_ > lo_) {
    const int64_t b = std::max(lo_, next_hi_ - bucket_);
    start(b, next_hi_);
    next_hi_ = b;
  }
  tr_->wait();
  wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string mpi_library_version() {
#if DSONAS_USE_MPI
  // allowed before MPI_Init; "Open MPI v4.1.4, package: ..., ident: ..." -> up to the first comma
  char buf[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  if (MPI_Get_library_version(buf, &len) != MPI_SUCCESS) return "unknown (MPI_Get_library_version failed)";
  std::string mpi(buf, static_cast<size_t>(len));
  const size_t comma = mpi.find(',');
  if (comma != std::string::npos) mpi.resize(comma);
  while (!mpi.empty() && (mpi.back() == '\n' || mpi.back() == ' ')) mpi.pop_back();
  return mpi;
#else
  return "none (USE_MPI=0)";
#endif
}

}  // namespace dsonas
