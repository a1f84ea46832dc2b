// error.hpp — one error module for dsonas.
//
// Everything inside the program throws dsonas::Error; main() catches it, prints
// one line "dsonas: rank R: <message>" and exits with the error's code
// (docs/design.md §6).  On a multi-rank run main() then aborts the world.
//
// Exit codes (documented in the README):
//   0 done · 2 bad usage/config/data (nothing written) · 3 checkpoint unusable
//   4 numerical failure (non-finite loss/grad) · 75 stopped early, requeue me
//   1 internal error (a DSO_CHECK failed, a library call failed)
//
// One check macro per library, all funnelling into fail_lib() so every message
// carries the rank and the call site:
//   DSO_CHECK(cond, msg)      internal invariant (exit 1)
//   CUDA_CHECK / CUDNN_CHECK / CUBLAS_CHECK / NCCL_CHECK   (backend/cuda only)
//   MPI_CHECK (dist/), HDF5_CHECK (io/), DNNL_CHECK (backend/cpu)
// The vendor-specific macros are defined next to the code that includes the
// vendor header (a host .cpp never includes CUDA headers); they all call
// fail_lib() below.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace dsonas {

enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,
  kExitUsage = 2,
  kExitCheckpoint = 3,
  kExitNumerical = 4,
  kExitRequeue = 75,
};

class Error : public std::runtime_error {
 public:
  Error(int code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

/// Rank used in every message; set by the communicator, guessed from the
/// launcher's environment before MPI is up.
int error_rank();
void set_error_rank(int rank);

/// Bad usage, config value or data: exit 2. msg names the file or field.
[[noreturn]] void fail_usage(const std::string& msg);
/// Numerical failure: exit 4.
[[noreturn]] void fail_numerical(const std::string& msg);
/// Internal error with call site: exit 1.
[[noreturn]] void fail_internal(const char* file, int line, const std::string& msg);
/// A library call failed: exit 1, "lib: what (file:line)".
[[noreturn]] void fail_lib(const char* lib, const std::string& what, const char* file, int line);

namespace detail {
inline void cat(std::ostringstream&) {}
template <class T, class... R>
void cat(std::ostringstream& os, const T& v, const R&... r) {
  os << v;
  cat(os, r...);
}
}  // namespace detail

/// Concatenate anything streamable into a string: str("x=", 3).
template <class... A>
std::string str(const A&... a) {
  std::ostringstream os;
  detail::cat(os, a...);
  return os.str();
}

}  // namespace dsonas

#define DSO_CHECK(cond, ...)                                                                                 \
  do {                                                                                                       \
    if (!(cond))                                                                                             \
      ::dsonas::fail_internal(__FILE__, __LINE__, ::dsonas::str("check failed: " #cond " ", ##__VA_ARGS__)); \
  } while (0)
