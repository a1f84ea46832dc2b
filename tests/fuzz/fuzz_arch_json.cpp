// fuzz_arch_json.cpp — the architecture JSON (`dsonas derive` output, `--arch`):
// Architecture::from_json, then the documented round trip
// to_json(from_json(to_json(a))) == to_json(a) and the MAC/parameter counts.
// Documented answer to bad input: exit 2.
#include <cstdlib>
#include <string>

#include "dsonas/model/architecture.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 1 << 20) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  dsonas_fuzz::expect_handled({dsonas::kExitUsage}, [&] {
    const dsonas::Architecture a = dsonas::Architecture::from_json(text, "fuzz.json");
    const std::string j = a.to_json();
    const std::string j2 = dsonas::Architecture::from_json(j, "fuzz.json (round trip)").to_json();
    if (j2 != j) {
      std::fprintf(stderr, "fuzz: architecture JSON does not round-trip:\n%s\n%s\n", j.c_str(), j2.c_str());
      std::abort();
    }
    (void)a.macs();
    (void)a.params();
  });
  return 0;
}
