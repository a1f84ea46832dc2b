// fuzz_h5_inspect.cpp — `dsonas inspect` on HDF5 files: model files, checkpoints,
// network files (and their checkpoints) and λ trajectories, each through its
// reader's open-and-validate path (io/model_file, io/network_file, io/trajectory).
//
// The seal (a whole-file CRC-32, io/h5_seal.hpp) refuses every changed byte before
// libhdf5 parses anything — the unit and e2e tests check that.  To reach the
// readers' own checks behind it, this harness re-seals each input (a fresh seal over
// bytes 512..end), i.e. it fuzzes what a file with a valid seal but damaged contents
// would do: the readers must then answer exit 2 or 3, never crash.  A crash inside
// libhdf5 itself here is a crafted-file bug of HDF5 1.10 (see tests/fuzz/README.md).
#include <cstring>
#include <string>
#include <vector>

#include "../../src/io/h5_seal.hpp"
#include "dsonas/run/inspect.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size <= dsonas::h5::kSealBytes || size > 4 << 20) return 0;
  dsonas_fuzz::quiet_stdout();
  std::vector<char> b(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size);
  dsonas::h5::seal_image(b);
  std::string p = dsonas_fuzz::write_file("file.h5", b.data(), b.size());
  std::string arg0 = "inspect";
  char* av[] = {&arg0[0], &p[0]};
  dsonas_fuzz::expect_handled({dsonas::kExitUsage, dsonas::kExitCheckpoint}, [&] { dsonas::run_inspect(2, av); });
  return 0;
}
