// version.hpp — what this binary is.  version_text() is the output of
// `dsonas --version` and the `dsonas_version` attribute of every HDF5 file dsonas
// writes (model files, checkpoints, network files, λ trajectories); `dsonas inspect`
// prints it back ("written by").
#pragma once
#include <string>

namespace dsonas {

/// "dsonas 0.6.0 (commit 1a2b3c4d5e6f, clean)"; "dirty" when tracked files had
/// changes at build time, "unknown" when built outside a git checkout.
std::string version_line();
/// "build: -march=x86-64-v3 -O3, USE_MPI=1, USE_CUDA=1 (sm_90); compiler 12.2.0".
std::string build_line();
/// "libraries: Open MPI v4.1.4; HDF5 1.10.8; Boost 1.74.0; OpenBLAS 0.3.21 ..." —
/// the versions of the libraries this process runs with (not only compiled against),
/// and in a CUDA build a further line "cuda: ..." with cuDNN, cuBLAS, NCCL and the
/// CUDA runtime (header and library versions; no GPU needed).
std::string library_lines();
/// The three (four) lines above, each ending in '\n'.
std::string version_text();

}  // namespace dsonas
