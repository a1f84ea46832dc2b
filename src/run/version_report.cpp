// version_report.cpp — see version_report.hpp.
#include "dsonas/run/version_report.hpp"

#include <boost/version.hpp>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/dist/communicator.hpp"
#include "dsonas/dist/nccl.hpp"
#include "dsonas/io/seal.hpp"
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
#include "dsonas/backend/cuda_probe.hpp"  // host-only declarations
#endif

namespace dsonas {

std::string library_lines() {
  std::string s =
      str("libraries: ", mpi_library_version(), "; HDF5 ", hdf5_library_version(), "; Boost ", BOOST_VERSION / 100000,
          ".", BOOST_VERSION / 100 % 1000, ".", BOOST_VERSION % 100, "; ", blas_library_config(), "\n");
#if defined(DSONAS_USE_CUDA) && DSONAS_USE_CUDA
  s += str("cuda: ", cuda_library_versions_json(false, nccl_versions_json()), "\n");
#endif
  return s;
}

}  // namespace dsonas
