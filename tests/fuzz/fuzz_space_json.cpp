// fuzz_space_json.cpp — the `space` JSON attribute of model files and checkpoints
// (SearchSpace::from_json, which `inspect`, `derive` and resume use), its round trip
// and the counts computed from it.  Documented answer to bad input: exit 2 or 3.
#include <cstdlib>
#include <string>

#include "dsonas/model/search_space.hpp"
#include "dsonas/model/prune.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 1 << 16) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  dsonas_fuzz::expect_handled({dsonas::kExitUsage, dsonas::kExitCheckpoint}, [&] {
    const dsonas::SearchSpace s = dsonas::SearchSpace::from_json(text, "fuzz (space attribute)");
    const std::string j = s.to_json();
    const std::string j2 = dsonas::SearchSpace::from_json(j, "fuzz (round trip)").to_json();
    if (j2 != j) {
      std::fprintf(stderr, "fuzz: space JSON does not round-trip:\n%s\n%s\n", j.c_str(), j2.c_str());
      std::abort();
    }
    (void)s.total_lambda();
    (void)dsonas::full_macs(s);
  });
  return 0;
}
