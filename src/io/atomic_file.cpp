// atomic_file.cpp — see atomic_file.hpp.
#include "dsonas/io/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "dsonas/core/error.hpp"

namespace dsonas {

void fsync_path(const std::string& path, bool dir) {
  const int fd = ::open(path.c_str(), dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) throw Error(kExitInternal, str("cannot open ", path, " for fsync: ", std::strerror(errno)));
  if (::fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(kExitInternal, str("fsync ", path, ": ", std::strerror(e)));
  }
  ::close(fd);
}

void write_file_atomically(const std::string& path, const void* bytes, size_t n,
                           const std::function<void(const char*)>& phase) {
  const std::string tmp = path + ".tmp";
  auto fail = [&](const std::string& what, int e) {
    ::unlink(tmp.c_str());
    throw Error(kExitInternal, str("write ", path, ": ", what, ": ", std::strerror(e)));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create " + tmp, errno);
  const char* p = static_cast<const char*>(bytes);
  size_t left = n;
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int e = w < 0 ? errno : ENOSPC;
      ::close(fd);
      fail(str("after ", n - left, " of ", n, " bytes"), e);
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (phase) phase("after-data");
  if (::fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    fail("fsync", e);
  }
  if (::close(fd) != 0) fail("close", errno);
  if (phase) phase("before-rename");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("rename " + tmp, errno);
  const size_t k = path.find_last_of('/');
  fsync_path(k == std::string::npos ? "." : (k == 0 ? "/" : path.substr(0, k)), true);
}

}  // namespace dsonas
