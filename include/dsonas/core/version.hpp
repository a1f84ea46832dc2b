// version.hpp — what this binary is.  version_text() is the output of
// `dsonas --version` and the `dsonas_version` attribute of every HDF5 file dsonas
// writes (model files, checkpoints, network files, λ trajectories); `dsonas inspect`
// prints it back ("written by").
//
// The versions of the libraries a process runs with are known only to the layers
// that own them (MPI: dist, HDF5: io, BLAS and CUDA: backend); the program composes
// them (run/version_report.hpp) and registers the composition here, so that io can
// store the whole text without depending on anything above core.
#pragma once
#include <string>

namespace dsonas {

/// "dsonas 0.6.0 (commit 1a2b3c4d5e6f, clean)"; "dirty" when tracked files had
/// changes at build time, "unknown" when built outside a git checkout.
std::string version_line();
/// "build: -march=x86-64-v3 -O3, USE_MPI=1, USE_CUDA=1 (sm_90); compiler 12.2.0".
std::string build_line();
/// Registers the program's report of the libraries it runs with ("libraries: …\n", in a
/// CUDA build a further "cuda: …\n"); called on first use of version_text(), once.
/// dsonas's main() registers run/version_report.hpp's library_lines.
void set_library_report(std::string (*report)());
/// version_line, build_line, each ending in '\n', then the registered library report
/// (without one: "libraries: not reported by this program\n").
std::string version_text();

}  // namespace dsonas
