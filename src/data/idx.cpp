// idx.cpp — IDX (MNIST / Fashion-MNIST) reader, gzipped or raw, via zlib.
//
// Design: gzopen() reads gzip and (transparently) plain files alike.  Each file
// is checked in order: exists and is a regular file (message: path, role, hint)
// → IDX magic → header dims → count agrees with the other file → payload has
// exactly the promised bytes (short: "truncated, expected E bytes, got A";
// long: trailing bytes) → gzip stream intact (CRC is checked at end of
// stream) → labels in [0, classes).  The payload buffer grows in 64 MiB steps
// so a corrupt header cannot make us allocate terabytes before the truncation
// is noticed.  Every failure is one fail_usage() line: "data: PATH (ROLE): what".
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "dsonas/core/error.hpp"
#include "dsonas/data/dataset.hpp"  // defines: load_idx, load_fashion_mnist, fashion_mnist_files

namespace dsonas {
namespace {

constexpr uint32_t kMagicImages = 0x00000803;
constexpr uint32_t kMagicLabels = 0x00000801;
constexpr const char* kHint =
    "hint: install Debian's dataset-fashion-mnist or point the data directory at the IDX files";

class IdxFile {
 public:
  IdxFile(std::string path, std::string role) : path_(std::move(path)), role_(std::move(role)) {
    struct stat st;
    if (::stat(path_.c_str(), &st) != 0) fail(str("cannot open: ", std::strerror(errno), "; ", kHint));
    if (S_ISDIR(st.st_mode)) fail("is a directory, expected an IDX file");
    f_ = gzopen(path_.c_str(), "rb");
    if (!f_) fail(str("cannot open: ", errno ? std::strerror(errno) : "zlib out of memory"));
    gzbuffer(f_, 1 << 17);
  }
  ~IdxFile() {
    if (f_) gzclose(f_);
  }
  IdxFile(const IdxFile&) = delete;
  IdxFile& operator=(const IdxFile&) = delete;

  [[noreturn]] void fail(const std::string& what) const { fail_usage(str("data: ", path_, " (", role_, "): ", what)); }

  /// Reads up to len bytes; stops early only at end of data.  Corrupt gzip → fail.
  size_t read(void* buf, size_t len) {
    size_t got = 0;
    while (got < len) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(len - got, size_t(1) << 30));
      int r = gzread(f_, static_cast<char*>(buf) + got, chunk);
      if (r < 0) {
        int errnum = 0;
        const char* m = gzerror(f_, &errnum);
        fail(str("corrupt gzip data after ", got_total_ + got, " bytes (", m, ")"));
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    got_total_ += got;
    return got;
  }

  /// Why the data ended early ("" or "; gzip stream ends early").
  std::string eof_note() {
    int errnum = 0;
    gzerror(f_, &errnum);
    return errnum == Z_BUF_ERROR ? " (gzip stream ends early)" : "";
  }

  uint32_t read_be32(size_t header_bytes) {
    unsigned char b[4];
    size_t got = read(b, 4);
    if (got != 4)
      fail(str("truncated: expected a ", header_bytes, "-byte IDX header, got ", got_total_, " bytes", eof_note()));
    return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
  }

  void check_magic(uint32_t expected, size_t header_bytes) {
    uint32_t m = read_be32(header_bytes);
    if (m != expected) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "bad magic 0x%08x (expected 0x%08x)", m, expected);
      fail(buf);
    }
  }

  /// Reads exactly `bytes` payload bytes after a header of `header_bytes`,
  /// then checks that nothing follows.
  void read_payload(std::vector<uint8_t>& out, uint64_t bytes, size_t header_bytes, const char* what) {
    out.clear();
    const uint64_t step = uint64_t(64) << 20;
    uint64_t have = 0;
    while (have < bytes) {
      uint64_t want = std::min(step, bytes - have);
      out.resize(static_cast<size_t>(have + want));
      size_t got = read(out.data() + have, static_cast<size_t>(want));
      have += got;
      if (got < want)
        fail(str("truncated: header promises ", bytes, " bytes of ", what, " (", header_bytes + bytes,
                 " bytes in all), got ", have, " (", header_bytes + have, " in all)", eof_note()));
    }
    // Trailing data; reading to the end also makes zlib verify the gzip CRC.
    char scratch[1 << 14];
    uint64_t extra = 0;
    for (;;) {
      size_t got = read(scratch, sizeof scratch);
      if (got == 0) break;
      extra += got;
    }
    if (extra)
      fail(str("size disagrees with the header: ", extra, " bytes after the ", bytes, " bytes of ", what,
               " the header promises"));
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_, role_;
  gzFile f_ = nullptr;
  uint64_t got_total_ = 0;
};

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

}  // namespace

ImageSet load_idx(const std::string& images_path, const std::string& labels_path, int classes,
                  const std::string& role) {
  const std::string pre = role.empty() ? "" : role + " ";
  if (classes < 1 || classes > 256)
    fail_usage(str("data: number of classes must be in [1, 256] for uint8 IDX labels, got ", classes));

  // Open both first: a missing file is reported before any big read.
  IdxFile img(images_path, pre + "images");
  IdxFile lab(labels_path, pre + "labels");

  img.check_magic(kMagicImages, 16);
  const uint32_t n_img = img.read_be32(16);
  const uint32_t rows = img.read_be32(16);
  const uint32_t cols = img.read_be32(16);
  lab.check_magic(kMagicLabels, 8);
  const uint32_t n_lab = lab.read_be32(8);

  if (n_img == 0) img.fail("header says 0 images");
  if (n_img > 0x7fffffffu) img.fail(str("header says ", n_img, " images, more than supported (2^31-1)"));
  if (rows == 0 || cols == 0 || rows > 65535 || cols > 65535)
    img.fail(str("bad image size ", rows, "x", cols, " in the header (each must be in [1, 65535])"));
  if (n_img != n_lab)
    fail_usage(str("data: ", images_path, " (", pre, "images) has ", n_img, " images but ", labels_path, " (", pre,
                   "labels) has ", n_lab, " labels"));

  ImageSet s;
  s.n = static_cast<int>(n_img);
  s.c = 1;
  s.h = static_cast<int>(rows);
  s.w = static_cast<int>(cols);
  s.classes = classes;

  std::vector<uint8_t> lab_bytes;
  lab.read_payload(lab_bytes, n_lab, 8, "labels");
  s.labels.resize(s.n);
  for (int i = 0; i < s.n; ++i) {
    if (lab_bytes[i] >= classes)
      lab.fail(str("label ", int(lab_bytes[i]), " at index ", i, " is out of range [0, ", classes, ")"));
    s.labels[i] = lab_bytes[i];
  }
  img.read_payload(s.pixels, uint64_t(n_img) * rows * cols, 16, "pixels");
  s.source = str("IDX ", images_path, " + ", labels_path, " (", s.n, " images ", s.h, "x", s.w, ")");
  return s;
}

IdxPair fashion_mnist_files(const std::string& dir, bool train) {
  const std::string stem = train ? "train" : "t10k";
  auto pick = [&](const std::string& name) {
    std::string gz = dir + "/" + name + ".gz", raw = dir + "/" + name;
    return (!file_exists(gz) && file_exists(raw)) ? raw : gz;
  };
  return {pick(stem + "-images-idx3-ubyte"), pick(stem + "-labels-idx1-ubyte")};
}

ImageSet load_fashion_mnist(const std::string& dir, bool train) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0)
    fail_usage(str("data: ", dir, " (Fashion-MNIST directory): ", std::strerror(errno), "; ", kHint));
  if (!S_ISDIR(st.st_mode)) fail_usage(str("data: ", dir, " (Fashion-MNIST directory): not a directory"));
  const IdxPair f = fashion_mnist_files(dir, train);
  ImageSet s = load_idx(f.images, f.labels, 10, train ? "train" : "test");
  s.source = str("Fashion-MNIST ", train ? "train" : "test", " (", dir, ")");
  return s;
}

}  // namespace dsonas
