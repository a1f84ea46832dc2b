// replay.cpp — runs stored fuzz inputs through one harness without libFuzzer: the
// regression test `make test` runs over tests/fuzz/corpus/<harness> and
// tests/fuzz/crashes/<harness> (every crash input found, kept after its fix).
//   replay_<harness> PATH...   (files, or folders whose files are all replayed)
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {
void collect(const std::string& p, std::vector<std::string>* out) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) {
    std::fprintf(stderr, "replay: %s: no such file or folder\n", p.c_str());
    std::exit(2);
  }
  if (!S_ISDIR(st.st_mode)) {
    out->push_back(p);
    return;
  }
  DIR* d = ::opendir(p.c_str());
  while (dirent* e = d ? ::readdir(d) : nullptr)
    if (e->d_name[0] != '.') collect(p + "/" + e->d_name, out);
  if (d) ::closedir(d);
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) collect(argv[i], &files);
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(b.data()), b.size());
  }
  std::printf("replay: %zu inputs, no crash\n", files.size());
  return 0;
}
