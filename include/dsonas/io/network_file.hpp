// network_file.hpp — HDF5 files of a retrain Network's state: the end-of-stage
// network file (weights and BN running statistics) and the resumable checkpoint,
// which adds the NAG momenta and the training position (TrainState).
//
// Layout, with the conventions of io/model_file.hpp (docs/design.md §5): /params/<name>
// (OIHW conv weights, [out,in] FC weights), /bn/<prefix>/{mean,var}; a checkpoint
// adds /optim/momentum/<name> and the integer / real counters of TrainState as
// attributes of the group /state (TrainState::lambda_v is not used by networks).
// Root attributes: `format` ("dsonas-network" or "dsonas-network-checkpoint"),
// `format_version` (1), `arch` (the Architecture JSON, Architecture::to_json),
// `options` (NetworkOptions::to_string), `stage`, `step`, `seed`, `config`,
// `structural`, `structural_hash` (FNV-1a 64 of arch + "|" + options + "|" +
// structural, hex), and `world_size` in checkpoints.  The file is built in memory
// with HDF5's core driver and written by write_file_atomically (temporary name,
// fsync, rename), so a reader never sees a partial file; every dataset is one
// chunk with a Fletcher32 checksum, verified on read.
#pragma once
#include <cstdint>
#include <string>

#include "dsonas/io/model_file.hpp"  // TrainState

namespace dsonas {

class Architecture;
class Network;

struct NetworkFileInfo {
  std::string stage = "retrain";
  int64_t step = 0;
  uint64_t seed = 0;
  std::string config;      // resolved config text
  std::string structural;  // "key=value;..." fields a resumed run must not change
  int world_size = 1;      // ranks that wrote a checkpoint (attribute world_size)
};

/// Writes a network file, or a checkpoint when ts is given (then the momenta and
/// ts->counters / ts->reals too).  Write errors: exit 1 with the errno text; the
/// destination is untouched unless the whole new file was written.
void save_network_file(const std::string& path, Network& net, const NetworkFileInfo& info,
                       const TrainState* ts = nullptr);

/**
 * Loads the weights and BN running statistics of every parameter of `net` (datasets
 * the network does not have, e.g. an aux head's when loading for evaluation, are
 * ignored), and with ts the momenta and the training position (the file must then be
 * a checkpoint).  Refusals, exit 3 with the file named: not a network file, an `arch`
 * attribute that does not parse, an architecture that builds a different network than
 * net's ("PATH: arch.FIELD: file=A now=B", see Architecture::structural_difference),
 * a missing or wrongly sized dataset, a checksum mismatch.
 */
void load_network_file(const std::string& path, Network& net, TrainState* ts = nullptr);

/// The architecture stored in a network file or checkpoint (exit 3 if the file is not
/// one or its `arch` does not parse).
Architecture read_network_arch(const std::string& path);

/// What `dsonas inspect` prints for a network file or checkpoint: format, stage, step,
/// architecture summary (live ops per type, MACs, parameters, width), options and,
/// for checkpoints, the TrainState counters.  Loads the whole file through a CPU
/// Network, so every checksum is verified (exit 3 on any problem).
std::string describe_network_file(const std::string& path);

}  // namespace dsonas
