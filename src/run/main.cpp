// main.cpp — the dsonas command line: dispatch to a stage, turn every error into
// one line and its documented exit code (docs/design.md §6).
#include <cstring>
#include <iostream>
#include <string>

#include "dsonas/core/error.hpp"
#include "dsonas/core/version.hpp"
#include "dsonas/dist/communicator.hpp"
#include "dsonas/run/config.hpp"
#include "dsonas/run/derive.hpp"
#include "dsonas/run/export.hpp"
#include "dsonas/run/inspect.hpp"
#include "dsonas/run/pipeline.hpp"
#include "dsonas/run/study.hpp"
#include "dsonas/run/retrain.hpp"
#include "dsonas/run/train.hpp"
#include "dsonas/run/validate.hpp"
#include "dsonas/run/version_report.hpp"

#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
#include "dsonas/backend/cuda_probe.hpp"  // host-only declarations, no CUDA header
#endif

namespace {

const char* kUsage =
    "usage: dsonas COMMAND [options]   (dsonas COMMAND --help for its options; dsonas --version)\n"
    "\n"
    "commands:\n"
    "  pipeline   pretrain → search → derive → retrain → eval (+ hand-made baseline) → report.md\n"
    "  study      found vs hand-made vs random architectures of the same cost, several seeds, statistics\n"
    "  pretrain   train the supergraph with λ fixed at 1 (step 1)\n"
    "  search     DSO-NAS search: weights by NAG, λ by APG-NAG, pruning (step 2)\n"
    "  bench      time search steps on synthetic data (used by make bench)\n"
    "  inspect    what a model file, checkpoint or λ trajectory holds (FILE.h5 [--diff OTHER.h5])\n"
    "  derive     the final architecture of a search as JSON + DOT (--run DIR --out ARCH.json),\n"
    "             or random architectures of the same cost (--random K --like ARCH.json --out DIR)\n"
    "  retrain    train a derived architecture from scratch (--arch ARCH.json|baseline, step 3)\n"
    "  eval       top-1/top-5, per-class accuracy, confusion matrix of a retrained network (--run DIR)\n"
    "  export     a retrained network as ONNX or TorchScript for use elsewhere (--run DIR --format onnx|pytorch --out "
    "F)\n"
    "  pack       ImageNet JPEG tree -> HDF5 shards + manifest (--src ROOT --out OUT)\n"
    "  validate   check every data file of the configured dataset, no training (--config C [--resume DIR])\n"
    "exit codes:\n"
    "  0          done\n"
    "  1          internal error\n"
    "  2          bad usage, configuration or data (nothing written)\n"
    "  3          model, checkpoint or network file unusable\n"
    "  4          non-finite loss or gradient\n"
    "  75         stopped on a signal or deadline after a checkpoint (run again with --resume)\n";

}  // namespace

namespace {
/// --device cuda: choose the GPU from the launcher's node-local rank before
/// MPI_Init, so that a CUDA-aware MPI opens its context on this rank's GPU, not
/// on device 0 (backend/device_choice.hpp).  A configuration that does not parse
/// is left to the run, which reports it as before.
void choose_gpu_before_mpi(const std::string& cmd, int argc, char** argv) {
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) return;
  bool cuda = false;
  try {
    cuda = dsonas::parse_config(cmd, argc - 1, argv + 1).device == "cuda";
  } catch (const std::exception&) {
    return;
  }
  if (cuda) dsonas::cuda_preselect_device();
#else
  (void)cmd;
  (void)argc;
  (void)argv;
#endif
}

/// One line for the error, then the exit code; on a multi-rank run the whole
/// world ends with it (MPI_Abort), so no rank is left waiting in a collective.
int report(int code, const std::string& line) {
  std::cerr << "dsonas: rank " << dsonas::error_rank() << ": " << line << std::endl;
  if (dsonas::Communicator::multi_rank()) dsonas::Communicator::abort(code);
  dsonas::Communicator::finalize();
  return code;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace dsonas;
  set_library_report(&library_lines);  // the --version text, also stored in every file
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? kExitUsage : kExitOk;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::cout << version_text();
    return kExitOk;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "inspect") return run_inspect(argc - 1, argv + 1);
    if (cmd == "derive") return run_derive(argc - 1, argv + 1);
    if (cmd == "export") return run_export(argc - 1, argv + 1);
    if (cmd == "pack") return run_pack(argc - 1, argv + 1);
    if (cmd == "validate") return run_validate(argc - 1, argv + 1);
    if (cmd != "pretrain" && cmd != "search" && cmd != "bench" && cmd != "retrain" && cmd != "eval" &&
        cmd != "pipeline" && cmd != "study")
      fail_usage(str("unknown command '", cmd,
                     "' (expected pipeline, study, pretrain, search, derive, retrain, eval, export, bench, inspect, "
                     "pack or validate)"));
    choose_gpu_before_mpi(cmd, argc, argv);
    Communicator::init(&argc, &argv);  // the training commands are MPI programs
    int rc = kExitOk;
    if (cmd == "pipeline") {
      rc = run_pipeline(argc - 1, argv + 1);
    } else if (cmd == "study") {
      rc = run_study(argc - 1, argv + 1);
    } else {
      RunConfig cfg = parse_config(cmd, argc - 1, argv + 1);
      if (cmd == "pretrain")
        rc = run_pretrain(cfg);
      else if (cmd == "search")
        rc = run_search(cfg);
      else if (cmd == "retrain")
        rc = run_retrain(cfg);
      else if (cmd == "eval")
        rc = run_eval(cfg);
      else
        rc = run_bench(cfg);
    }
    Communicator::finalize();
    return rc;
  } catch (const Error& e) {
    return report(e.code(), e.what());
  } catch (const std::exception& e) {
    return report(kExitInternal, std::string("internal error: ") + e.what());
  }
}
