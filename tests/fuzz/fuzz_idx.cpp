// fuzz_idx.cpp — Fashion-MNIST IDX files, raw or gzipped (load_idx): header, counts,
// sizes, labels in range, gzip streams.  Input: bytes 0-1 = the length of the image
// file (little-endian, modulo the input size), then the image file, then the label
// file.  Documented answer to bad input: exit 2.
#include <string>

#include "dsonas/data/dataset.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > 1 << 20) return 0;
  const size_t rest = size - 2,
               cut = rest ? (static_cast<size_t>(data[0]) | static_cast<size_t>(data[1]) << 8) % (rest + 1) : 0;
  const std::string im = dsonas_fuzz::write_file("images-idx3-ubyte", data + 2, cut);
  const std::string lb = dsonas_fuzz::write_file("labels-idx1-ubyte", data + 2 + cut, rest - cut);
  dsonas_fuzz::expect_handled({dsonas::kExitUsage}, [&] { dsonas::load_idx(im, lb, 10, "train"); });
  return 0;
}
