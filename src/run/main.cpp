// main.cpp — the dsonas command line: dispatch to a stage, turn every error into
// one line and its documented exit code (DESIGN.md §6).
#include <cstring>
#include <iostream>
#include <string>

#include "dsonas/core/error.hpp"
#include "dsonas/run/config.hpp"
#include "dsonas/run/derive.hpp"
#include "dsonas/run/inspect.hpp"
#include "dsonas/run/train.hpp"

namespace {

const char* kUsage =
    "usage: dsonas COMMAND [options]   (dsonas COMMAND --help for its options)\n"
    "commands:\n"
    "  pretrain   train the supergraph with λ fixed at 1 (step 1)\n"
    "  search     DSO-NAS search: weights by NAG, λ by APG-NAG, pruning (step 2)\n"
    "  bench      time search steps on synthetic data (used by make bench)\n"
    "  inspect    what a model file, checkpoint or λ trajectory holds (FILE.h5 [--diff OTHER.h5])\n"
    "  derive     the final architecture of a search as JSON + DOT (--run DIR --out ARCH.json)\n"
    "exit codes: 0 done, 2 bad usage/config/data (nothing written), 3 model/checkpoint\n"
    "  file unusable, 4 non-finite loss or gradient, 75 stopped on a signal or deadline\n"
    "  after a checkpoint (run again with --resume), 1 internal error\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace dsonas;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? kExitUsage : kExitOk;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "inspect") return run_inspect(argc - 1, argv + 1);
    if (cmd == "derive") return run_derive(argc - 1, argv + 1);
    if (cmd != "pretrain" && cmd != "search" && cmd != "bench")
      fail_usage(str("unknown command '", cmd, "' (expected pretrain, search, bench, inspect or derive)"));
    RunConfig cfg = parse_config(cmd, argc - 1, argv + 1);
    if (cmd == "pretrain") return run_pretrain(cfg);
    if (cmd == "search") return run_search(cfg);
    return run_bench(cfg);
  } catch (const Error& e) {
    std::cerr << "dsonas: rank " << error_rank() << ": " << e.what() << std::endl;
    return e.code();
  } catch (const std::exception& e) {
    std::cerr << "dsonas: rank " << error_rank() << ": internal error: " << e.what() << std::endl;
    return kExitInternal;
  }
}
