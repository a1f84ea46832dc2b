// fault.cpp — see fault.hpp.
#include "dsonas/core/fault.hpp"

#include <csignal>
#include <cstdlib>
#include <string>

namespace dsonas {

void fault_point(const char* point, int64_t step) {
  static const char* spec_env = std::getenv("DSONAS_FAULT");
  if (!spec_env) return;
  const std::string spec(spec_env);
  const size_t c = spec.find(':');
  if (c == std::string::npos || spec.compare(0, c, point) != 0) return;
  if (std::strtoll(spec.c_str() + c + 1, nullptr, 10) != step) return;
  std::raise(spec.compare(0, c, "signal-after-step") == 0 ? SIGUSR1 : SIGKILL);
}

}  // namespace dsonas
