// fuzz_manifest.cpp — DIR/manifest.json of an ImageNet pack (read_manifest: JSON,
// fields, counts).  Documented answer to bad input: exit 2.
#include <string>

#include "dsonas/data/imagenet.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 1 << 20) return 0;
  const std::string p = dsonas_fuzz::write_file("manifest.json", data, size);
  dsonas_fuzz::expect_handled({dsonas::kExitUsage}, [&] { dsonas::read_manifest(dsonas_fuzz::scratch()); });
  return 0;
}
