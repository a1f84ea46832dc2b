// fuzz_h5_inspect.cpp — `dsonas inspect` on HDF5 files: model files, checkpoints,
// network files (and their checkpoints) and λ trajectories, each through its
// reader's open-and-validate path (io/model_file, io/network_file, io/trajectory).
//
// Each input runs twice:
//  1. as it is — the protected path users get: the seal (a whole-file CRC-32,
//     io/h5_seal.hpp) must refuse every changed byte with exit 3 before libhdf5 parses
//     anything;
//  2. re-sealed (a fresh seal over bytes 512..end), i.e. a file whose seal is valid but
//     whose contents are damaged: this reaches the readers' own checks behind the seal,
//     which must answer exit 2 or 3, never crash.  Crashes inside libhdf5 itself found
//     here are HDF5 1.10's bugs on crafted files: tests/fuzz/hdf5-crashes/ keeps them,
//     and `make test` replays them through path 1 only (DSONAS_FUZZ_PROTECTED_ONLY=1),
//     where the seal must refuse them (see tests/fuzz/README.md).
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../src/io/h5_seal.hpp"
#include "dsonas/run/inspect.hpp"
#include "fuzz_util.hpp"

namespace {
void inspect(const std::vector<char>& bytes) {
  std::string p = dsonas_fuzz::write_file("file.h5", bytes.data(), bytes.size());
  std::string arg0 = "inspect";
  char* av[] = {&arg0[0], &p[0]};
  dsonas_fuzz::expect_handled({dsonas::kExitUsage, dsonas::kExitCheckpoint}, [&] { dsonas::run_inspect(2, av); });
  DSONAS_FUZZ_NO_OPEN_HDF5_IDS();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size <= dsonas::h5::kSealBytes || size > 4 << 20) return 0;
  dsonas_fuzz::quiet_stdout();
  std::vector<char> b(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size);
  inspect(b);
  if (dsonas_fuzz::protected_only()) return 0;
  dsonas::h5::seal_image(b);
  inspect(b);
  return 0;
}
