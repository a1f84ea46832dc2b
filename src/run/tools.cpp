// tools.cpp — see tools.hpp.
#include "dsonas/run/tools.hpp"

#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "dsonas/core/error.hpp"
#include "dsonas/run/args.hpp"

extern char** environ;

namespace dsonas {

std::vector<std::string> tool_homes() {
  std::vector<std::string> homes;
  if (const char* h = std::getenv("DSONAS_HOME"); h && *h) homes.push_back(h);
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    std::string e(exe, static_cast<size_t>(n));
    e = e.substr(0, e.find_last_of('/'));                     // the binary's folder
    const std::string up = e.substr(0, e.find_last_of('/'));  // <tree> or PREFIX
    homes.push_back(up);
    homes.push_back(up + "/share/dsonas");
  }
  return homes;
}

std::string find_tool(const std::string& name) {
  for (const std::string& h : tool_homes()) {
    std::string p = h + "/utils/" + name;
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return p;
  }
  return "";
}

std::string python_interpreter() {
  const char* py = std::getenv("DSONAS_PYTHON");
  return py && *py ? py : "/usr/bin/python3";
}

ToolRun run_tool(const std::string& tool, const std::vector<std::string>& args, bool echo_stderr) {
  ToolRun r;
  const std::string py = python_interpreter();
  std::vector<std::string> av = {py, tool};
  av.insert(av.end(), args.begin(), args.end());
  std::vector<char*> argv = argv_of(av, true);
  int fds[2];
  if (::pipe(fds) != 0) {
    r.error = str("pipe: ", std::strerror(errno));
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  std::cout.flush();
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, py.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    r.error = str("cannot start ", py, ": ", std::strerror(rc));
    return r;
  }
  r.started = true;
  char buf[4096];
  for (;;) {
    const ssize_t k = ::read(fds[0], buf, sizeof buf);
    if (k > 0) {
      r.stderr_text.append(buf, static_cast<size_t>(k));
      if (echo_stderr) std::cerr.write(buf, k);
    } else if (k < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      r.status = -1;
      return r;
    }
  }
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  return r;
}

}  // namespace dsonas
