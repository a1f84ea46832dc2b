// temp_dir.hpp — a scratch folder for a test, removed with everything in it when
// the object goes out of scope.
#pragma once
#include <cstdlib>
#include <string>
#include <vector>

namespace dsonas_test {

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

}  // namespace dsonas_test
