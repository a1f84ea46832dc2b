// test_util.hpp — helpers shared by the unit tests: the thread count of the CPU
// backends under test, a scratch folder removed with everything in it when it goes
// out of scope, and a check for usage errors (exit 2).
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "dsonas/core/error.hpp"

namespace dsonas_test {

/// Threads of the CPU backends the numerical tests run on: DSONAS_TEST_THREADS
/// (the test matrix runs the suite at 1, 2 and 3, the last oversubscribing a
/// 2-core machine), default 2.
inline int test_threads() {
  const char* e = std::getenv("DSONAS_TEST_THREADS");
  const int t = e && *e ? std::atoi(e) : 2;
  return t > 0 ? t : 2;
}
/// The thread count that thread-independence tests compare test_threads() with.
inline int other_threads() { return test_threads() == 1 ? 2 : 1; }

class TempDir {
 public:
  /// Creates $TMPDIR (or /tmp)/<prefix>XXXXXX.
  explicit TempDir(const std::string& prefix = "dsonas_test_") {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/" + prefix + "XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    char* p = mkdtemp(buf.data());
    if (p) path_ = p;
  }
  ~TempDir() {
    if (!path_.empty()) std::system(("rm -rf '" + path_ + "'").c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// Runs f, expects dsonas::Error with code 2 (kExitUsage); returns the message.
template <class F>
std::string usage_error(F f) {
  try {
    f();
  } catch (const dsonas::Error& e) {
    EXPECT_EQ(e.code(), dsonas::kExitUsage) << e.what();
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

}  // namespace dsonas_test
