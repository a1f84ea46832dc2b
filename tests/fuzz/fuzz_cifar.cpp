// fuzz_cifar.cpp — a CIFAR-10 binary batch file (load_cifar10 on test_batch.bin:
// record size, labels in range).  Documented answer to bad input: exit 2.
#include <string>

#include "dsonas/data/cifar.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 1 << 22) return 0;
  dsonas_fuzz::write_file("test_batch.bin", data, size);
  dsonas_fuzz::expect_handled({dsonas::kExitUsage}, [&] { dsonas::load_cifar10(dsonas_fuzz::scratch(), false); });
  return 0;
}
