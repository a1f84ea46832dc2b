// communicator.hpp — the ranks of a data-parallel run (docs/design.md §7).
//
// Design.
//  * One process per device.  Communicator::init() calls MPI_Init_thread
//    (FUNNELED: only the main thread calls MPI) whether or not a launcher
//    started us — Open MPI runs a lone binary as a world-size-1 job — and
//    MPI_Comm_split_type(SHARED) gives the node-local rank.  The GPU is chosen
//    before MPI_Init from the launcher's node-local rank variable
//    (device_choice.hpp), and from MPI's node-local rank where no launcher set
//    one.  A build with USE_MPI=0 has a world of one and refuses to run under
//    a launcher that asked for more ranks.
//  * Nothing above dist/ sees MPI or NCCL: the trainer asks for "sum these
//    floats over the ranks", "do all ranks agree on this hash", "did any rank
//    raise this flag", "broadcast these bytes from rank 0", and abort().
//  * Gradients: GradReducer (below) sums ranges of the flat gradient buffer,
//    in place.  On the CPU it uses MPI_Iallreduce per bucket so the reduction
//    of the layers whose backward has finished overlaps the backward of the
//    rest (Supergraph's grad-ready hook drives it); on the GPU the same calls go
//    to NCCL (communicator built from an MPI-broadcast ncclUniqueId); both sit
//    behind ReduceTransport, so the bucketing is tested on the CPU with an
//    in-process fake of two ranks (tests/unit/test_fake_reducer.cpp).  For a
//    fixed world size, buffer and bucket size the summation order is fixed, so
//    runs are reproducible; with 2 ranks a+b is exact in any order.
//  * Failure: any rank's error ends the world (MPI_Abort with the error's exit
//    code) after printing that rank's one-line report; mpirun / srun then stop
//    the other ranks, so a dead rank never leaves the others hanging.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dsonas {

class Backend;
class Tensor;

class Communicator {
 public:
  /// The process-wide communicator (MPI_Init_thread on first use).
  static Communicator& world();
  /// Initialise early (main()); safe to call more than once.
  static void init(int* argc, char*** argv);
  /// MPI_Finalize (normal exit only).
  static void finalize();
  /// Print nothing, end every rank with `code` (MPI_Abort on a multi-rank
  /// run; std::_Exit otherwise).  Never returns.
  [[noreturn]] static void abort(int code);
  /// True when init() ran and the world has more than one rank.
  static bool multi_rank();

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  bool root() const { return rank_ == 0; }
  const std::string& host() const { return host_; }

  /// In-place sums over the ranks (host memory).
  void sum(float* data, int64_t n);
  void sum(double* data, int64_t n);
  void sum(int64_t* data, int64_t n);
  /// Largest value over the ranks.
  double max(double v);
  /// Rank 0's bytes everywhere.
  void broadcast(void* data, int64_t bytes);
  void barrier();
  /// Every rank's value at rank i (all-gather of one 64-bit value).
  std::vector<uint64_t> gather_all(uint64_t v);
  /// Throws Error(exit 1) naming the first rank whose hash differs from rank 0's:
  /// "<what> differs on rank R at step S (hash H vs rank 0's H0)".
  void check_same(uint64_t hash, const std::string& what, int64_t step);

  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  ~Communicator();

  struct Impl;
  Impl* impl() { return impl_.get(); }

 private:
  Communicator();
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string host_;
  std::unique_ptr<Impl> impl_;
};

/// FNV-1a over bytes (λ / mask consistency checks).
uint64_t hash_bytes(const void* data, size_t n, uint64_t h = 1469598103934665603ull);

/// How GradReducer moves a bucket: an in-place sum over the ranks of `n`
/// floats at `data` (host memory for MPI, device memory for NCCL), started now
/// and complete after wait().  Every rank starts the same buckets in the same
/// order (GradReducer guarantees it: the buckets depend on the range and the
/// bucket size only); the transport may rely on that (NCCL does).
/// Implementations: MPI_Iallreduce (CPU tensors), ncclAllReduce on the
/// communicator's stream (CUDA tensors), and an in-process fake of several
/// ranks in tests/unit/test_fake_reducer.cpp.
class ReduceTransport {
 public:
  virtual ~ReduceTransport() = default;
  virtual void start(float* data, int64_t n) = 0;
  /// Lets started sums advance (MPI_Testall); may do nothing.
  virtual void progress() {}
  /// Blocks until every sum started so far is complete.
  virtual void wait() = 0;
};

/// Sums ranges of a flat gradient buffer over the ranks, in buckets.
///   begin(lo, hi)   this step reduces [lo, hi) (elements)
///   ready(from)     [from, hi) is final (backward walks the buffer from the end):
///                   every complete bucket in it is started now
///   finish()        starts what is left and waits for everything
/// A single rank does nothing.  Buckets are fixed by (lo, hi, bucket size), so
/// the summation order never depends on timing: bucket k is
/// [max(lo, hi − (k+1)·B), hi − k·B), started in k order.  Statistics for the
/// benchmark: seconds spent inside finish() (the part of the reduction not
/// hidden behind the backward pass) and in total.
class GradReducer {
 public:
  /// Over the world: MPI for CPU tensors, NCCL for CUDA tensors (a communicator
  /// made on first use; a world whose ranks share a GPU is refused first, exit 2).
  GradReducer(Communicator& comm, Backend& be, Tensor& flat, int64_t bucket_elems = 1 << 20);
  /// The same bucketing over a given transport (which outlives the reducer).
  GradReducer(ReduceTransport& transport, Tensor& flat, int64_t bucket_elems);
  ~GradReducer();
  void begin(int64_t lo, int64_t hi);
  void ready(int64_t from);
  void finish();
  double wait_seconds() const { return wait_s_; }
  int64_t buckets_started() const { return started_; }

 private:
  void start(int64_t lo, int64_t hi);
  Tensor& flat_;
  int64_t bucket_, lo_ = 0, hi_ = 0;
  int64_t next_hi_ = 0;  // [lo_, next_hi_) not started yet, [next_hi_, hi_) started
  double wait_s_ = 0;
  int64_t started_ = 0;
  std::unique_ptr<ReduceTransport> own_;  // the world's transport (none for one rank)
  ReduceTransport* tr_ = nullptr;         // own_ or the given one; null: nothing to reduce
};

/// The MPI library this process runs with, as MPI_Get_library_version names it up to
/// its first comma ("Open MPI v4.1.4"); "none (USE_MPI=0)" in a build without MPI.
/// Allowed before MPI_Init.  For dsonas --version (run/version_report.hpp).
std::string mpi_library_version();

}  // namespace dsonas
