// fuzz_util.hpp — shared by the libFuzzer harnesses (tests/fuzz/fuzz_*.cpp).
//
// Every harness feeds one input to a reader of outside data through the path the
// program itself takes (files on disk are written to a private scratch folder
// first).  A dsonas::Error with one of the reader's documented exit codes is the
// expected answer to bad input; anything else — a crash, a sanitizer report, a
// leak, another exception type, an error with an undocumented code — aborts, so
// libFuzzer records the input.  The same harnesses are built without libFuzzer
// by `make test` (replay.cpp) to run every stored input as a regression test.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <string>

#include "dsonas/core/error.hpp"

namespace dsonas_fuzz {

/// A scratch folder of this process (under /dev/shm when it exists).
inline const std::string& scratch() {
  static const std::string dir = [] {
    const char* base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string d = std::string(base) + "/dsonas-fuzz-" + std::to_string(::getpid());
    std::system(("mkdir -p '" + d + "'").c_str());
    return d;
  }();
  return dir;
}

inline std::string write_file(const std::string& name, const void* data, size_t n) {
  const std::string p = scratch() + "/" + name;
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  return p;
}

/// Runs f; a dsonas::Error whose code is in `allowed` is the reader refusing bad
/// input (fine); any other outcome but success aborts with the message.
template <class F>
void expect_handled(std::initializer_list<int> allowed, F&& f) {
  try {
    f();
  } catch (const dsonas::Error& e) {
    for (int c : allowed)
      if (e.code() == c) return;
    std::fprintf(stderr, "fuzz: error with undocumented exit code %d: %s\n", e.code(), e.what());
    std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: unexpected exception: %s\n", e.what());
    std::abort();
  }
}

/// True when DSONAS_FUZZ_PROTECTED_ONLY is set: HDF5 harnesses then skip their
/// re-sealed pass (the replay of inputs that crash libhdf5 behind the seal).
inline bool protected_only() {
  static const bool on = std::getenv("DSONAS_FUZZ_PROTECTED_ONLY") != nullptr;
  return on;
}

/// Aborts if the reader left HDF5 objects open (files, datasets, attributes …): every
/// id dsonas opens must be closed on every path, error paths included.
#define DSONAS_FUZZ_NO_OPEN_HDF5_IDS()                                                       \
  do {                                                                                       \
    const ssize_t open_ids = H5Fget_obj_count(static_cast<hid_t>(H5F_OBJ_ALL), H5F_OBJ_ALL); \
    if (open_ids != 0) {                                                                     \
      std::fprintf(stderr, "fuzz: %zd HDF5 objects left open\n", open_ids);                  \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

/// Silences std::cout (readers that print, e.g. inspect) for the process.
inline void quiet_stdout() {
  static bool done = false;
  if (!done) {
    std::cout.setstate(std::ios::badbit);
    done = true;
  }
}

}  // namespace dsonas_fuzz
