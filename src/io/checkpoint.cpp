// checkpoint.cpp — see checkpoint.hpp.
#include "dsonas/io/checkpoint.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/core/fault.hpp"
#include "dsonas/io/atomic_file.hpp"

namespace dsonas {

std::string ckpt_name(int64_t step) {
  char b[32];
  std::snprintf(b, sizeof b, "step_%08lld.h5", static_cast<long long>(step));
  return b;
}

void write_latest_pointer(const std::string& out, const std::string& name, int64_t step) {
  fault_point("ckpt-before-latest", step);
  const std::string pointer = name + "\n";
  write_file_atomically(out + "/ckpt/latest", pointer.data(), pointer.size());
}

/// Candidate checkpoints, best first: the one `latest` names, then every
/// step_*.h5 from the newest down.  Orphaned *.tmp files are removed.
std::vector<std::string> checkpoint_candidates(const std::string& out) {
  const std::string dir = out + "/ckpt";
  std::vector<std::string> files, order;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0)
        ::unlink((dir + "/" + n).c_str());
      else if (n.rfind("step_", 0) == 0 && n.size() > 3 && n.compare(n.size() - 3, 3, ".h5") == 0)
        files.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(files.rbegin(), files.rend());
  std::ifstream lf(dir + "/latest");
  std::string latest;
  if (lf >> latest && std::find(files.begin(), files.end(), latest) != files.end()) order.push_back(dir + "/" + latest);
  for (const std::string& f : files)
    if (f != latest) order.push_back(dir + "/" + f);
  return order;
}

/// Retention after a committed checkpoint: keep the newest `keep_last` (0 =
/// all) and every step that is a multiple of `keep_every` (milestones); never
/// the one `latest` names.
void prune_checkpoints(const std::string& out, int64_t keep_last, int64_t keep_every) {
  if (keep_last <= 0) return;
  const std::vector<std::string> files = checkpoint_candidates(out);  // latest first
  if (files.empty()) return;
  std::vector<std::pair<int64_t, std::string>> steps;
  steps.reserve(files.size());
  for (const std::string& f : files) steps.push_back({std::stoll(f.substr(f.rfind("step_") + 5, 8)), f});
  std::sort(steps.rbegin(), steps.rend());  // newest first
  for (size_t i = 0; i < steps.size(); ++i) {
    const bool keep = static_cast<int64_t>(i) < keep_last || steps[i].second == files.front() ||
                      (keep_every > 0 && steps[i].first % keep_every == 0);
    if (!keep) ::unlink(steps[i].second.c_str());
  }
}

std::string set_aside_checkpoints(const std::string& out, const std::string& keep, int world_then, int64_t step_then) {
  const std::string dir = out + "/ckpt", sub = str("world", world_then, "_until_step", step_then);
  int moved = 0;
  for (const std::string& c : checkpoint_candidates(out)) {
    if (c == keep) continue;
    if (::mkdir((dir + "/" + sub).c_str(), 0775) != 0 && errno != EEXIST)
      throw Error(kExitInternal, str("cannot create ", dir, "/", sub, ": ", std::strerror(errno)));
    const std::string name = c.substr(c.rfind('/') + 1);
    if (std::rename(c.c_str(), (dir + "/" + sub + "/" + name).c_str()) != 0)
      throw Error(kExitInternal, str("cannot move ", c, " into ", dir, "/", sub, ": ", std::strerror(errno)));
    ++moved;
  }
  if (moved == 0) return "";
  return str("note: moved ", moved, " checkpoint", moved > 1 ? "s" : "", " of the ", world_then, "-rank run into ", dir,
             "/", sub, "/ (their step numbers count another global batch; kept, not used by --resume)");
}

}  // namespace dsonas
