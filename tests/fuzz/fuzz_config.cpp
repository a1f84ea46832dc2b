// fuzz_config.cpp — the option parser of every training command (run/config.cpp):
// an INI config file (--config) or command-line option values, then every value's
// validation.  Input: byte 0 even → the rest is a config file for `search`; odd →
// the rest is newline-separated argv tokens for the command chosen by byte 1.
// Documented answer to bad input: exit 2.  (Inputs asking for --help are skipped:
// help prints and exits 0 by design.)
#include <cstring>
#include <string>
#include <vector>

#include "dsonas/run/config.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > 8192) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 2, size - 2);
  if (text.find("help") != std::string::npos || text.find("-h") != std::string::npos ||
      text.find("--h") != std::string::npos)
    return 0;
  static const char* kCommands[] = {"pretrain", "search", "retrain", "eval", "bench", "pipeline", "validate"};
  std::vector<std::string> args;
  if (data[0] % 2 == 0) {
    args = {"search", "--config", dsonas_fuzz::write_file("fuzz.cfg", text.data(), text.size())};
  } else {
    args.push_back(kCommands[data[1] % 7]);
    size_t a = 0;
    while (a <= text.size() && args.size() < 64) {
      size_t b = text.find('\n', a);
      if (b == std::string::npos) b = text.size();
      args.push_back(text.substr(a, b - a));
      a = b + 1;
    }
  }
  std::vector<char*> av;
  for (std::string& s : args) av.push_back(&s[0]);
  dsonas_fuzz::expect_handled({dsonas::kExitUsage},
                              [&] { dsonas::parse_config(args[0], static_cast<int>(av.size()), av.data()); });
  return 0;
}
