// validate.hpp — the data commands:
//
//  `dsonas validate --config C [options]`: checks every data file of the
//  configured dataset without training — fmnist (the four IDX files), cifar10
//  (the six .bin files), imagenet (manifest.json + every shard: size and
//  CRC-32 vs the manifest, HDF5 structure, attributes, offsets, labels in
//  range, every image's CRC-32) — and that the images fit the configured
//  space (space.input, space.classes).  Prints one line per file ("ok" or
//  "BAD" + the problem) and a summary.  Exit 0 when everything is good, else 2
//  with one line naming the (first) bad file and its problem.  Writes nothing.
//
//  `dsonas pack --src ROOT --out OUT [--resize S] [--quality Q]
//  [--shard-size N] [--threads T] [--splits train,val] [--strict]`: packs an
//  ImageNet-style JPEG tree into HDF5 shards (data/imagenet.hpp).  Exit 0
//  done, 2 bad usage or input (nothing written, or only shards without a
//  manifest, which are not a usable pack and are removed by the next pack into
//  the same folder), 1 write error.  Fault injection for end-to-end tests:
//  DSONAS_FAULT=pack-shard-after-data:K | pack-shard-before-rename:K (K-th
//  shard written, from 0) | pack-before-manifest:0 kills the process there.
#pragma once
#include <string>
#include <vector>

#include "dsonas/data/imagenet.hpp"
#include "dsonas/run/config.hpp"

namespace dsonas {

struct ValidateReport {
  std::vector<FileCheck> files;  ///< one per file (plus "config" lines for shape/class mismatches)
  int bad() const;
  /// The first bad entry's one-line error ("" if none).
  std::string first_error() const;
};

/// Checks the data of cfg.dataset in cfg.data_dir (cfg.threads threads for
/// ImageNet shards).  Never throws for bad data: problems are bad entries.
ValidateReport validate_data(const RunConfig& cfg);

/// `dsonas validate`: prints the report; returns 0 or throws Error (exit 2).
int run_validate(int argc, char** argv);

/// `dsonas pack`.
int run_pack(int argc, char** argv);

}  // namespace dsonas
