// retrain.hpp — step 3 of the method (docs/method.md §6.3, §7): the derived
// architecture trained from scratch, and its evaluation.
//
// `dsonas retrain --config C --arch ARCH.json|baseline --out DIR [--resume]`
//   builds the Network of the architecture (at retrain.width, or the width whose
//   MACs / parameters are closest to retrain.target-macs / target-params), trains
//   it on the whole training set with NAG and the [retrain] schedule (dropout,
//   drop-path, aux head, label smoothing, cutout), data parallel over the MPI
//   ranks, with the checkpoint / resume / signal / deadline behaviour of the
//   search; writes DIR/network.h5, DIR/arch.json (at the width used),
//   metrics.jsonl and the test accuracy.
// `dsonas eval --run DIR|FILE.h5 [--data test|train] [--out EDIR]`
//   top-1, top-5, loss, per-class accuracy and the confusion matrix
//   (EDIR/eval.json, per_class.csv, confusion.csv; EDIR defaults to
//   DIR/eval_<data>).  The dataset is the one the network was trained on (from
//   the file's stored configuration) unless --config is given.
#pragma once
#include <string>

#include "dsonas/model/architecture.hpp"
#include "dsonas/run/config.hpp"

namespace dsonas {

/// The architecture of --arch (a JSON file, or "baseline") at the retrain width:
/// retrain.target-macs, else retrain.target-params, else retrain.width, else its
/// own; *how says which.  Exit 2 if it does not fit the configuration's space.
Architecture retrain_architecture(const RunConfig& cfg, std::string* how);

int run_retrain(const RunConfig& cfg);
/// `dsonas bench --arch ARCH.json|baseline`: retrain steps of that network (the
/// [retrain] options, data.batch per step, synthetic images of the space's shape),
/// 2 warm-up steps then --bench.steps timed; the JSON as the search bench's
/// ("kind": "retrain", "step_ms", "architecture": the JSON at the width timed, and
/// "profile" with --bench.profile).
int run_bench_retrain(const RunConfig& cfg);
int run_eval(const RunConfig& cfg);

/// Result of an evaluation (also used by the pipeline's report).
struct EvalSummary {
  double top1 = 0, top5 = 0, loss = 0;
  int64_t n = 0;
  double macs = 0, params = 0;
  std::string out_dir;
};
/// run_eval's work; the summary for callers in-process.
EvalSummary evaluate_network_file(const RunConfig& cfg);

}  // namespace dsonas
