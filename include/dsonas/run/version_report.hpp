// version_report.hpp — the libraries this process runs with (not only compiled
// against), composed from the layer that owns each: dist (MPI), io (HDF5), backend
// (BLAS; CUDA, cuDNN, cuBLAS, NCCL in a CUDA build), and Boost (run).  main()
// registers it with core/version.hpp's set_library_report.
#pragma once
#include <string>

namespace dsonas {

/// "libraries: Open MPI v4.1.4; HDF5 1.10.8; Boost 1.74.0; OpenBLAS 0.3.21 ...\n", and in
/// a CUDA build "cuda: {...}\n" (header and library versions; no GPU needed).
std::string library_lines();

}  // namespace dsonas
