// version.cpp — see version.hpp.  DSONAS_VERSION, DSONAS_COMMIT and DSONAS_BUILD come
// from BUILD/version.inc, which the Makefile rewrites only when they change (so a
// commit rebuilds this file and relinks, nothing else).
#include "dsonas/core/version.hpp"

#include <boost/version.hpp>
#include <cblas.h>
#include <hdf5.h>

#include "dsonas/core/error.hpp"
#include "version.inc"

#if defined(DSONAS_USE_MPI) && DSONAS_USE_MPI
#include <mpi.h>
#endif
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
#include "../backend/cuda/cuda_probe.hpp"  // host-only declarations
#endif

namespace dsonas {

std::string version_line() { return str("dsonas ", DSONAS_VERSION, " (commit ", DSONAS_COMMIT, ")"); }

std::string build_line() { return str("build: ", DSONAS_BUILD, "; compiler ", __VERSION__); }

std::string library_lines() {
  std::string mpi = "none (USE_MPI=0)";
#if defined(DSONAS_USE_MPI) && DSONAS_USE_MPI
  {
    // allowed before MPI_Init; "Open MPI v4.1.4, package: ..., ident: ..." -> up to the first comma
    char buf[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
    int len = 0;
    if (MPI_Get_library_version(buf, &len) == MPI_SUCCESS) {
      mpi.assign(buf, static_cast<size_t>(len));
      const size_t comma = mpi.find(',');
      if (comma != std::string::npos) mpi.resize(comma);
      while (!mpi.empty() && (mpi.back() == '\n' || mpi.back() == ' ')) mpi.pop_back();
    } else {
      mpi = "unknown (MPI_Get_library_version failed)";
    }
  }
#endif
  unsigned h5maj = 0, h5min = 0, h5rel = 0;
  H5get_libversion(&h5maj, &h5min, &h5rel);
  std::string blas = openblas_get_config();  // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64"
  while (!blas.empty() && (blas.back() == ' ' || blas.back() == '\n')) blas.pop_back();
  std::string s = str("libraries: ", mpi, "; HDF5 ", h5maj, ".", h5min, ".", h5rel, "; Boost ", BOOST_VERSION / 100000,
                      ".", BOOST_VERSION / 100 % 1000, ".", BOOST_VERSION % 100, "; ", blas, "\n");
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
  s += str("cuda: ", cuda_library_versions_json(false), "\n");
#endif
  return s;
}

std::string version_text() {
  static const std::string text = version_line() + "\n" + build_line() + "\n" + library_lines();
  return text;
}

}  // namespace dsonas
