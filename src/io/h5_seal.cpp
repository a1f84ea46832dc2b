// h5_seal.cpp — see h5_seal.hpp.
#include "h5_seal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "dsonas/core/error.hpp"
#include "dsonas/io/seal.hpp"

namespace dsonas {
namespace h5 {
namespace {

constexpr char kMagic[] = "DSONAS-SEAL 1\n";

uint32_t crc_of(const char* p, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  while (n > 0) {  // zlib takes uInt lengths
    const uInt k = n > (1u << 30) ? (1u << 30) : static_cast<uInt>(n);
    c = crc32(c, reinterpret_cast<const Bytef*>(p), k);
    p += k;
    n -= k;
  }
  return static_cast<uint32_t>(c);
}

[[noreturn]] void damaged(const std::string& name, const std::string& what) {
  throw Error(kExitCheckpoint, str(name, ": ", what));
}

}  // namespace

namespace {
hid_t create_in_memory(const std::string& name) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Id fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose), fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fcpl.ok() || H5Pset_userblock(fcpl, kSealBytes) < 0)
    fail_lib("HDF5", "user block for the seal", __FILE__, __LINE__);
  if (!fapl.ok() || H5Pset_fapl_core(fapl, 1 << 20, 0) < 0) fail_lib("HDF5", "core driver", __FILE__, __LINE__);
  const hid_t f = H5Fcreate(name.c_str(), H5F_ACC_TRUNC, fcpl, fapl);
  if (f < 0) fail_lib("HDF5", str("create in-memory file for ", name), __FILE__, __LINE__);
  return f;
}
}  // namespace

MemoryFile::MemoryFile(const std::string& name) : name_(name), file_(create_in_memory(name), H5Fclose) {}

std::vector<char> MemoryFile::sealed_image() {
  if (H5Fflush(file_, H5F_SCOPE_GLOBAL) < 0)
    fail_lib("HDF5", str("flush in-memory file for ", name_), __FILE__, __LINE__);
  // The core driver's image starts at the superblock (the user block is not part of
  // it; the superblock records base address 512): the seal goes in front.
  const ssize_t n = H5Fget_file_image(file_, nullptr, 0);
  if (n <= 0) fail_lib("HDF5", str("image size of ", name_), __FILE__, __LINE__);
  std::vector<char> image(kSealBytes + static_cast<size_t>(n));
  if (H5Fget_file_image(file_, image.data() + kSealBytes, static_cast<size_t>(n)) != n)
    fail_lib("HDF5", str("image of ", name_), __FILE__, __LINE__);
  seal_image(image);
  return image;
}

void seal_image(std::vector<char>& image) {
  DSO_CHECK(image.size() > kSealBytes, "HDF5 image of ", image.size(), " bytes has no user block");
  const uint64_t n = image.size() - kSealBytes;
  char head[kSealBytes] = {};
  const int len = std::snprintf(head, sizeof head, "%scrc32 %08" PRIx32 "\nbytes %" PRIu64 "\n", kMagic,
                                crc_of(image.data() + kSealBytes, n), n);
  DSO_CHECK(len > 0 && static_cast<size_t>(len) < kSealBytes, "seal text");
  std::memcpy(image.data(), head, kSealBytes);
}

void check_seal(const std::vector<char>& bytes, const std::string& name, SealInfo* info) {
  *info = SealInfo();
  const size_t m = sizeof kMagic - 1;
  if (bytes.size() < m || std::memcmp(bytes.data(), kMagic, m) != 0) return;  // unsealed (older file)
  if (bytes.size() < kSealBytes) damaged(name, str("truncated: ", bytes.size(), " bytes, shorter than its seal"));
  // Parse "crc32 %08x\nbytes %u\n" strictly from a bounded copy.
  std::string head(bytes.data() + m, kSealBytes - m);
  head.resize(strnlen(head.c_str(), head.size()));
  unsigned crc = 0;
  unsigned long long want = 0;
  int used = 0;
  if (std::sscanf(head.c_str(), "crc32 %8x\nbytes %20llu\n%n", &crc, &want, &used) != 2 || used <= 0 ||
      static_cast<size_t>(used) != head.size())
    damaged(name, "damaged: its seal (the first 512 bytes) is malformed");
  info->sealed = true;
  info->crc32 = crc;
  info->bytes = want;
  const uint64_t have = bytes.size() - kSealBytes;
  if (have != want)
    damaged(name, str(have < want ? "truncated" : "damaged", ": ", have, " bytes after the seal, the seal says ", want,
                      have < want ? " (an incomplete copy?)" : " (bytes appended?)"));
  char got[9], exp[9];
  const uint32_t c = crc_of(bytes.data() + kSealBytes, have);
  std::snprintf(got, sizeof got, "%08" PRIx32, c);
  std::snprintf(exp, sizeof exp, "%08x", crc);
  if (c != crc) damaged(name, str("damaged: CRC-32 of its contents is ", got, ", the seal says ", exp));
}

H5Id open_sealed_image(std::vector<char> bytes, const std::string& name, SealInfo* info) {
  SealInfo si;
  check_seal(bytes, name, &si);
  if (info) *info = si;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.ok() || H5Pset_fapl_core(fapl, 1 << 16, 0) < 0) fail_lib("HDF5", "core driver", __FILE__, __LINE__);
  // HDF5 refuses an empty image; an empty file is simply not HDF5.
  if (bytes.empty() || H5Pset_file_image(fapl, bytes.data(), bytes.size()) < 0)
    throw Error(kExitCheckpoint, str(name, ": not an HDF5 file or corrupt"));
  bytes.clear();
  bytes.shrink_to_fit();  // the property list holds its own copy
  // The core driver refuses an image under the name of a file that exists on disk
  // ("file already exists"): the image is opened under a name of its own.
  static std::atomic<uint64_t> serial{0};
  const std::string image_name = str("dsonas-image-", ::getpid(), "-", serial++, ":", name);
  H5Id f(H5Fopen(image_name.c_str(), H5F_ACC_RDONLY, fapl), H5Fclose);
  if (!f.ok()) throw Error(kExitCheckpoint, str(name, ": not an HDF5 file or corrupt"));
  return H5Id(f.release(), H5Fclose);
}

H5Id open_sealed(const std::string& path, SealInfo* info) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(kExitCheckpoint, str(path, ": cannot read: ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(kExitCheckpoint, str(path, ": not a regular file"));
  }
  std::vector<char> bytes(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int e = r < 0 ? errno : EIO;
      ::close(fd);
      throw Error(kExitCheckpoint, str(path, ": read failed after ", got, " bytes: ", std::strerror(e)));
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  return open_sealed_image(std::move(bytes), path, info);
}

}  // namespace h5

std::string describe_seal(const std::string& path) {
  h5::SealInfo si;
  h5::open_sealed(path, &si);
  if (!si.sealed) return "seal: none (a file written before seals existed: opened without a whole-file check)\n";
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08" PRIx32, si.crc32);
  return str("seal: CRC-32 ", hex, " over ", si.bytes, " bytes, ok\n");
}

std::string hdf5_library_version() {
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return str(maj, ".", min, ".", rel);
}

}  // namespace dsonas
