// device_choice.hpp — which GPU a rank takes, decided before anything touches
// CUDA or MPI (pure functions; no CUDA, no MPI; tested in tests/unit).
//
// Why before MPI_Init: a CUDA-aware MPI (Open MPI with UCX/smcuda) creates a
// context on the *current* device inside MPI_Init; without per-task binding that
// is device 0 for every rank of the node, which then carries one context (and its
// memory) per rank.  So main() picks the device from the node-local rank that
// the launcher puts in the environment, calls cudaSetDevice, and only then
// initialises MPI.  Where no launcher variable is set, the choice waits for
// MPI's shared-memory communicator (MPI_Comm_split_type(SHARED)), as before.
//
// CUDA_VISIBLE_DEVICES: the runtime numbers the visible devices 0..n-1 in the
// variable's order, so the choice is an index into that list (local rank mod
// n); a launcher that binds one GPU per task (CUDA_VISIBLE_DEVICES=<one id>)
// leaves n = 1 and index 0.  parse_visible_devices() only names the physical
// device in the log: the runtime's count is authoritative.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace dsonas {

/// The node-local rank a launcher announced in the environment.
struct LaunchLocalRank {
  int rank = -1;      ///< -1: no launcher variable set
  int size = 0;       ///< ranks on this node; 0: not announced
  std::string var;    ///< the variable the rank came from ("" when none)
  std::string error;  ///< non-empty: a variable was set but unusable (one line)
};

/// Variables read, in this order (the first one set wins): Open MPI's mpirun,
/// MVAPICH2, MPICH/Intel MPI's Hydra, PMI-2/PMIx launchers, then Slurm's srun.
/// Slurm comes last because its SLURM_LOCALID is inherited from the batch step
/// by an mpirun started inside an allocation, where the MPI's own variable is
/// the right one.
const std::vector<std::pair<const char*, const char*>>& local_rank_variables();

/// Reads the first variable of local_rank_variables() that is set, through
/// `get` (std::getenv in the program, a map in the tests).
LaunchLocalRank local_rank_from_env(const std::function<const char*(const char*)>& get);

/// CUDA_VISIBLE_DEVICES as the CUDA runtime reads it: comma-separated indices
/// or GPU-/MIG- UUIDs, up to the first invalid entry.  `set` = false when the
/// variable is unset (all devices visible).
struct VisibleDevices {
  bool set = false;
  std::vector<std::string> ids;
};
VisibleDevices parse_visible_devices(const char* value);

struct DeviceChoice {
  int device = -1;             ///< index among the visible devices; -1: not chosen (see deferred / error)
  bool deferred = false;       ///< no launcher variable and no MPI rank yet: choose after MPI_Init
  int local_rank = -1;         ///< the node-local rank the choice used
  int ranks_per_gpu = 1;       ///< ceil(local size / visible devices) when the local size is known
  std::string source;          ///< "OMPI_COMM_WORLD_LOCAL_RANK", "MPI shared communicator", …
  std::string physical;        ///< the CUDA_VISIBLE_DEVICES entry of `device` ("" when the variable is unset)
  bool env_overruled = false;  ///< the launcher variable disagreed with MPI's local rank (said in note)
  std::string note;            ///< a one-line remark for the log ("" when none)
  std::string error;           ///< non-empty: refuse, with this line (exit 2)
};

/// The device of this rank.  `env` from local_rank_from_env; `mpi_local_rank`
/// and `mpi_local_size` from MPI's shared communicator, -1 / 0 before MPI_Init;
/// `visible` = cudaGetDeviceCount (0 or less: none usable, with `why`);
/// `cvd` the parsed CUDA_VISIBLE_DEVICES (for the note only).
/// Rules: an unusable launcher variable → error; no GPU → error.  Before MPI (mpi_local_rank < 0): a launcher variable
/// gives device = rank mod visible; none → deferred.  After MPI: MPI's rank is
/// authoritative; an env rank that disagrees with it is overruled with a note.
/// More local ranks than GPUs: ranks share devices (fine for one rank per node
/// or CPU-reduced work) and the note says that a multi-rank NCCL reduction will
/// refuse it (NCCL stops with "Duplicate GPU detected" when two ranks of one
/// communicator share a device).
DeviceChoice choose_cuda_device(const LaunchLocalRank& env, int mpi_local_rank, int mpi_local_size, int visible,
                                const std::string& why, const VisibleDevices& cvd);

/// The first pair of ranks (i < j) whose keys are equal (the keys hash host and
/// PCI bus id of each rank's GPU); {-1, -1} when all differ.  The NCCL reducer
/// refuses such a world before ncclCommInitRank would.
std::pair<int, int> first_shared_device(const std::vector<uint64_t>& keys);

}  // namespace dsonas
