// error.cpp — rank bookkeeping and the [[noreturn]] reporters of error.hpp.
#include "dsonas/core/error.hpp"

#include <cstdlib>

namespace dsonas {
namespace {
int guess_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"}) {
    if (const char* s = std::getenv(v)) return std::atoi(s);
  }
  return 0;
}
int g_rank = guess_rank();
}  // namespace

int error_rank() { return g_rank; }
void set_error_rank(int rank) { g_rank = rank; }

void fail_usage(const std::string& msg) { throw Error(kExitUsage, msg); }
void fail_numerical(const std::string& msg) { throw Error(kExitNumerical, msg); }
void fail_internal(const char* file, int line, const std::string& msg) {
  throw Error(kExitInternal, str(msg, " (", file, ":", line, ")"));
}
void fail_lib(const char* lib, const std::string& what, const char* file, int line) {
  throw Error(kExitInternal, str(lib, ": ", what, " (", file, ":", line, ")"));
}

}  // namespace dsonas
