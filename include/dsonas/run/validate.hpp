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
//  With `--resume DIR`, also whether DIR's checkpoints can be resumed with this
//  configuration (validate_resume below); a checkpoint resume would refuse is
//  a BAD line (exit 2).
//
//  `dsonas pack --src ROOT --out OUT [--resize S] [--quality Q]
//  [--shard-size N] [--threads T] [--splits train,val] [--max-corrupt N|P%]
//  [--strict]`: packs an ImageNet-style JPEG tree into HDF5 shards
//  (data/imagenet.hpp).  Undecodable images are skipped, counted and listed
//  unless there are more than --max-corrupt (a count N, or P percent of the
//  images listed; default 0.1 %, at least 10) — then exit 2 with the count,
//  the limit and the first files.  Exit 0 done, 2 bad usage or input, 1 write
//  error; on exit 1 or 2 the shards written so far are removed (and OUT if
//  pack created it).  A killed pack leaves shards without a manifest, which
//  are not a usable pack and are removed by the next pack into the same
//  folder.  Fault injection for end-to-end tests:
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

/// `validate --resume DIR`: for DIR (a stage folder with ckpt/) or each stage
/// folder of a pipeline folder (pretrain, search, retrain, baseline), the
/// checkpoint `--resume` would load — the same walk and checks (structural
/// fields against the configuration as that stage resolves it, the weights
/// loading into the configured model), best first, falling back as resume
/// does — and the world size it was written with.  `args` are validate's
/// command-line options without --resume.
void validate_resume(ValidateReport& r, const std::string& dir, const std::vector<std::string>& args);

/// `dsonas validate`: prints the report; returns 0 or throws Error (exit 2).
int run_validate(int argc, char** argv);

/// `dsonas pack`.
int run_pack(int argc, char** argv);

}  // namespace dsonas
