// model_file.hpp — the end-of-stage model file (HDF5): weights, BN running
// statistics, λ and live mask of a Supergraph, plus the SearchSpace.
//
// Layout (DESIGN.md §5 naming): /params/<name>, /bn/<prefix>/{mean,var},
// /lambda/<group>, /mask/<group> (0/1 as float); root attributes `format`
// ("dsonas-model"), `format_version` (1), `space` (SearchSpace JSON), `stage`,
// `step`, `seed`, `config`.  Written to a temporary name in the same folder,
// flushed, fsynced and renamed, so a reader never sees a partial file.
// The full resumable checkpoint (optimiser state, RNG, data position) is the
// checkpoint issue's; this file is what `search --init` and `derive` read.
#pragma once
#include <cstdint>
#include <string>

namespace dsonas {

class Supergraph;

struct ModelFileInfo {
  std::string stage;    // "pretrain" or "search"
  int64_t step = 0;
  uint64_t seed = 0;
  std::string config;   // resolved config text
};

void save_model_file(const std::string& path, Supergraph& g, const ModelFileInfo& info);

/// Loads weights and BN statistics (and λ + mask when with_lambda) into g.
/// The file's space must match g's in every structural field, else exit 3
/// with "space: file=... now=...".  Missing file or dataset: exit 3 naming it.
void load_model_file(const std::string& path, Supergraph& g, bool with_lambda);

/// Root attribute `space` of a model file (exit 3 if unreadable).
std::string read_model_space(const std::string& path);

}  // namespace dsonas
