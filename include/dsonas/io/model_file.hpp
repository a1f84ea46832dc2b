// model_file.hpp — HDF5 files of a Supergraph's state: the end-of-stage model
// file (weights, BN running statistics, λ and live mask, SearchSpace) and the
// resumable checkpoint, which adds the optimiser state and the training
// position (TrainState).
//
// Layout (docs/design.md §5 naming): /params/<name>, /bn/<prefix>/{mean,var},
// /lambda/<group>, /mask/<group> (0/1 as float); root attributes `format`
// ("dsonas-model"), `format_version` (1), `space` (SearchSpace JSON), `stage`,
// `step`, `seed`, `config`.  Written to a temporary name in the same folder,
// flushed, fsynced and renamed, so a reader never sees a partial file.  Every
// dataset is chunked with an HDF5 Fletcher32 checksum, verified on read.
// A checkpoint (format "dsonas-checkpoint") adds /optim/momentum/<param>,
// /optim/lambda_v and the integer/real counters of TrainState under /state.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dsonas {

class Supergraph;

struct ModelFileInfo {
  std::string stage;  // "pretrain" or "search"
  int64_t step = 0;
  uint64_t seed = 0;
  std::string config;      // resolved config text
  std::string structural;  // "key=value;..." fields a resumed run must not change
  int world_size = 1;      // ranks of the run that wrote it
};

/// What a resumable checkpoint holds beyond the model (all host values).
struct TrainState {
  std::vector<float> lambda_v;              // APG-NAG momentum of λ
  std::map<std::string, int64_t> counters;  // step, sampler positions, ...
  std::map<std::string, double> reals;      // metric window sums
};

/// Writes a model file, or a checkpoint when ts is given (then the parameter
/// momenta are written too).  Write errors: exit 1 with the errno text; the
/// destination is untouched unless the whole new file was written.
void save_model_file(const std::string& path, Supergraph& g, const ModelFileInfo& info, const TrainState* ts = nullptr);

/// Loads weights and BN statistics (and λ + mask when with_lambda) into g.
/// The file's space must match g's in every structural field, else exit 3
/// with "space: file=... now=...".  Missing file or dataset: exit 3 naming it.
void load_model_file(const std::string& path, Supergraph& g, bool with_lambda, TrainState* ts = nullptr);

/// Root string attribute of any dsonas HDF5 file ("" if absent); exit 3 naming
/// the file if it cannot be opened.
std::string read_root_attr(const std::string& path, const char* name);

/// Root int64 attribute of any dsonas HDF5 file (0 if absent); exit 3 naming the
/// file if it cannot be opened.
int64_t read_root_i64(const std::string& path, const char* name);

/// Root string attribute of a model/checkpoint file ("" if absent); exit 3 if unreadable.
std::string read_file_attr(const std::string& path, const char* name);

/// Root attribute `space` of a model file (exit 3 if unreadable).
std::string read_model_space(const std::string& path);

}  // namespace dsonas
