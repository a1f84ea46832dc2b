// fault.cpp — see fault.hpp.
#include "dsonas/core/fault.hpp"

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

namespace dsonas {

bool fault_active(const char* point, int64_t step, int rank) {
  static const char* spec_env = std::getenv("DSONAS_FAULT");
  if (!spec_env) return false;
  const std::string spec(spec_env);
  const size_t c = spec.find(':');
  if (c == std::string::npos || spec.compare(0, c, point) != 0) return false;
  char* end = nullptr;
  if (std::strtoll(spec.c_str() + c + 1, &end, 10) != step) return false;
  if (end && *end == '@' && std::strtol(end + 1, nullptr, 10) != rank) return false;
  return true;
}

void fault_point(const char* point, int64_t step, int rank) {
  if (!fault_active(point, step, rank) || std::strcmp(point, "nan-grad") == 0) return;
  std::raise(std::strcmp(point, "signal-after-step") == 0 ? SIGUSR1 : SIGKILL);
}

}  // namespace dsonas
