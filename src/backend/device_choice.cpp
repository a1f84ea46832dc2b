// device_choice.cpp — the GPU of a rank from its node-local rank (design in
// backend/device_choice.hpp).  Pure: no CUDA, no MPI, no global state.
#include "dsonas/backend/device_choice.hpp"

#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "dsonas/core/error.hpp"

namespace dsonas {

namespace {

/// A non-negative decimal integer (the whole string), else -1.
int parse_rank(const char* s) {
  if (!s || !*s) return -1;
  for (const char* p = s; *p; ++p)
    if (!std::isdigit(static_cast<unsigned char>(*p))) return -1;
  errno = 0;
  const long v = std::strtol(s, nullptr, 10);
  if (errno != 0 || v > 1 << 20) return -1;
  return static_cast<int>(v);
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

bool valid_device_id(const std::string& e) {
  if (e.empty()) return false;
  if (e.rfind("GPU-", 0) == 0 || e.rfind("MIG-", 0) == 0) return e.size() > 4;
  return parse_rank(e.c_str()) >= 0;
}

}  // namespace

const std::vector<std::pair<const char*, const char*>>& local_rank_variables() {
  static const std::vector<std::pair<const char*, const char*>> v = {
      {"OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"},  // Open MPI mpirun
      {"MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE"},    // MVAPICH2
      {"MPI_LOCALRANKID", "MPI_LOCALNRANKS"},                        // MPICH / Intel MPI (Hydra)
      {"PMI_LOCAL_RANK", "PMI_LOCAL_SIZE"},                          // PMI-2 launchers
      {"SLURM_LOCALID", nullptr},                                    // srun (no per-node size variable)
  };
  return v;
}

LaunchLocalRank local_rank_from_env(const std::function<const char*(const char*)>& get) {
  LaunchLocalRank r;
  for (const auto& v : local_rank_variables()) {
    const char* s = get(v.first);
    if (!s) continue;
    r.var = v.first;
    r.rank = parse_rank(s);
    if (r.rank < 0) {
      r.error = str(v.first, "='", s, "' is not a node-local rank (expected an integer >= 0; set by the launcher)");
      return r;
    }
    if (v.second) {
      const int n = parse_rank(get(v.second));
      if (n > 0) r.size = n;
    }
    return r;
  }
  return r;
}

VisibleDevices parse_visible_devices(const char* value) {
  VisibleDevices d;
  if (!value) return d;
  d.set = true;
  const std::string s = value;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t comma = s.find(',', pos);
    const std::string e = trim(s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    if (!valid_device_id(e)) break;  // the runtime ignores this entry and every one after it
    d.ids.push_back(e);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return d;
}

DeviceChoice choose_cuda_device(const LaunchLocalRank& env, int mpi_local_rank, int mpi_local_size, int visible,
                                const std::string& why, const VisibleDevices& cvd) {
  DeviceChoice c;
  if (!env.error.empty()) {  // the launcher's variable is wrong whatever the GPUs
    c.error = env.error;
    return c;
  }
  if (visible <= 0) {
    std::string w = why.empty() ? "the CUDA runtime reports 0 devices" : why;
    if (cvd.set && cvd.ids.empty()) w += "; CUDA_VISIBLE_DEVICES lists no valid device";
    c.error = str("--device cuda: no usable GPU (", w, ")");
    return c;
  }
  int rank = -1, size = 0;
  if (mpi_local_rank >= 0) {
    rank = mpi_local_rank;
    size = mpi_local_size;
    c.source = "MPI shared communicator";
    c.env_overruled = env.rank >= 0 && env.rank != mpi_local_rank;
    if (c.env_overruled)
      c.note = str(env.var, "=", env.rank, " disagrees with MPI's node-local rank ", mpi_local_rank,
                   " (a variable inherited from an outer launcher?): using MPI's. ");
  } else if (env.rank >= 0) {
    rank = env.rank;
    size = env.size;
    c.source = env.var;
  } else {
    c.deferred = true;
    c.source = "none yet (no launcher variable): chosen after MPI_Init from MPI's shared communicator";
    return c;
  }
  c.local_rank = rank;
  c.device = rank % visible;
  if (cvd.set && c.device < static_cast<int>(cvd.ids.size())) c.physical = cvd.ids[static_cast<size_t>(c.device)];
  if (size > visible) {
    c.ranks_per_gpu = (size + visible - 1) / visible;
    c.note += str(size, " ranks on this node share ", visible, " visible GPU", visible > 1 ? "s" : "", " (up to ",
                  c.ranks_per_gpu,
                  " per GPU): a multi-rank --device cuda run stops before its first gradient sum, because NCCL "
                  "refuses two ranks of one communicator on one GPU ('Duplicate GPU detected'); run at most ",
                  visible, " rank", visible > 1 ? "s" : "", " per node");
  }
  while (!c.note.empty() && c.note.back() == ' ') c.note.pop_back();
  return c;
}

std::pair<int, int> first_shared_device(const std::vector<uint64_t>& keys) {
  for (size_t j = 1; j < keys.size(); ++j)
    for (size_t i = 0; i < j; ++i)
      if (keys[i] == keys[j]) return {static_cast<int>(i), static_cast<int>(j)};
  return {-1, -1};
}

}  // namespace dsonas
