// cifar.cpp — CIFAR-10 binary reader and augmentation presets; see cifar.hpp.
//
// Design: each file is stat()ed first (missing / directory / empty / size not a
// whole number of records are reported before any data are read), then read in
// chunks of 1 000 records straight into the destination buffers, checking every
// label.  Files are plain binary (the CIFAR tarball unpacks to raw .bin files).
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/data/cifar.hpp"  // defines: load_cifar10, cifar10_files, check_cifar10_file, cifar10_train_augment, cifar10_eval_augment

namespace dsonas {
namespace {

constexpr const char* kHint =
    "hint: CIFAR-10 is not shipped with dsonas; download the binary version "
    "(cifar-10-binary.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html, unpack it and "
    "set data.dir to its cifar-10-batches-bin directory";

struct CifarFile {
  std::string path, role;
  uint64_t records = 0;
};

[[noreturn]] void fail_file(const CifarFile& f, const std::string& what) {
  fail_usage(str("data: ", f.path, " (", f.role, "): ", what));
}

/// stat() checks; sets f.records.
void check_size(CifarFile& f) {
  struct stat st;
  if (::stat(f.path.c_str(), &st) != 0) fail_file(f, str("cannot open: ", std::strerror(errno), "; ", kHint));
  if (S_ISDIR(st.st_mode)) fail_file(f, "is a directory, expected a CIFAR-10 .bin file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0)
    fail_file(f, str("empty file, expected ", kCifarRecordsPerFile, " records of ", kCifarRecordBytes, " bytes"));
  if (size % kCifarRecordBytes != 0)
    fail_file(f, str("size ", size, " bytes is not a multiple of the ", kCifarRecordBytes, "-byte record (",
                     size / kCifarRecordBytes, " whole records + ", size % kCifarRecordBytes, " bytes; expected ",
                     uint64_t(kCifarRecordsPerFile) * kCifarRecordBytes, " bytes for ", kCifarRecordsPerFile,
                     " records): truncated or not a CIFAR-10 binary file"));
  f.records = size / kCifarRecordBytes;
}

/// Reads all f.records records of f into pixels (CHW per image) and labels.
void read_records(const CifarFile& f, uint8_t* pixels, int32_t* labels) {
  std::FILE* fp = std::fopen(f.path.c_str(), "rb");
  if (!fp) fail_file(f, str("cannot open: ", std::strerror(errno), "; ", kHint));
  constexpr uint64_t kChunk = 1000;
  std::vector<uint8_t> buf(kChunk * kCifarRecordBytes);
  uint64_t done = 0;
  while (done < f.records) {
    const uint64_t want = std::min(kChunk, f.records - done);
    const size_t got = std::fread(buf.data(), 1, want * kCifarRecordBytes, fp);
    if (got != want * kCifarRecordBytes) {
      const bool err = std::ferror(fp) != 0;
      const int e = errno;
      std::fclose(fp);
      fail_file(f, str(err ? str("read error (", std::strerror(e), ")") : std::string("truncated while reading"),
                       ": expected ", f.records * kCifarRecordBytes, " bytes, got ", done * kCifarRecordBytes + got,
                       " (did the file change?)"));
    }
    for (uint64_t r = 0; r < want; ++r) {
      const uint8_t* rec = buf.data() + r * kCifarRecordBytes;
      if (rec[0] >= kCifarClasses) {
        std::fclose(fp);
        fail_file(f, str("label ", int(rec[0]), " at record ", done + r, " (byte offset ",
                         (done + r) * kCifarRecordBytes, ") is out of range [0, ", kCifarClasses, ")"));
      }
      labels[done + r] = rec[0];
      std::memcpy(pixels + (done + r) * kCifarImageBytes, rec + 1, kCifarImageBytes);
    }
    done += want;
  }
  std::fclose(fp);
}

bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

ImageSet load_cifar10(const std::string& dir, bool train) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0)
    fail_usage(str("data: ", dir, " (CIFAR-10 directory): ", std::strerror(errno), "; ", kHint));
  if (!S_ISDIR(st.st_mode)) fail_usage(str("data: ", dir, " (CIFAR-10 directory): not a directory"));
  const std::string base = (!dir.empty() && dir.back() == '/') ? dir : dir + "/";

  std::vector<CifarFile> files;
  const std::vector<std::string> paths = cifar10_files(dir, train);
  for (size_t k = 0; k < paths.size(); ++k)
    files.push_back({paths[k], train ? str("CIFAR-10 train batch ", k + 1) : std::string("CIFAR-10 test batch"), 0});
  // The tarball unpacks to cifar-10-batches-bin/: say so if data.dir is its parent.
  if (!is_file(files[0].path) && is_file(base + "cifar-10-batches-bin/" + files[0].path.substr(base.size())))
    fail_file(files[0], str("not found, but ", base, "cifar-10-batches-bin/ holds it: set data.dir to ", base,
                            "cifar-10-batches-bin"));

  // Sizes of all files first: a missing or truncated file is reported before any big read.
  uint64_t total = 0;
  for (CifarFile& f : files) {
    check_size(f);
    total += f.records;
  }
  if (total > static_cast<uint64_t>(INT_MAX))
    fail_usage(str("data: ", dir, " (CIFAR-10 directory): ", total, " records, more than supported (2^31-1)"));

  ImageSet s;
  s.n = static_cast<int>(total);
  s.c = kCifarChannels;
  s.h = s.w = kCifarSide;
  s.classes = kCifarClasses;
  s.pixels.resize(static_cast<size_t>(total) * kCifarImageBytes);
  s.labels.resize(static_cast<size_t>(total));
  uint64_t at = 0;
  std::string counts;
  for (const CifarFile& f : files) {
    read_records(f, s.pixels.data() + at * kCifarImageBytes, s.labels.data() + at);
    at += f.records;
    counts += str(counts.empty() ? "" : "+", f.records);
  }
  s.source = str("CIFAR-10 ", train ? "train" : "test", " (", dir, ", ", s.n, " images",
                 files.size() > 1 ? str(" = ", counts) : std::string(), ")");
  return s;
}

std::vector<std::string> cifar10_files(const std::string& dir, bool train) {
  const std::string base = (!dir.empty() && dir.back() == '/') ? dir : dir + "/";
  std::vector<std::string> v;
  if (train) {
    for (int k = 1; k <= kCifarTrainBatches; ++k) v.push_back(str(base, "data_batch_", k, ".bin"));
  } else {
    v.push_back(base + "test_batch.bin");
  }
  return v;
}

int64_t check_cifar10_file(const std::string& path, const std::string& role) {
  CifarFile f{path, role, 0};
  check_size(f);
  if (f.records > static_cast<uint64_t>(INT_MAX)) fail_file(f, str(f.records, " records, more than supported"));
  std::vector<uint8_t> pixels(f.records * kCifarImageBytes);
  std::vector<int32_t> labels(f.records);
  read_records(f, pixels.data(), labels.data());
  return static_cast<int64_t>(f.records);
}

Augment cifar10_eval_augment() {
  Augment a;
  a.mean = {0.5071f, 0.4867f, 0.4408f};
  a.std = {0.2675f, 0.2565f, 0.2761f};
  return a;
}

Augment cifar10_train_augment(bool cutout) {
  Augment a = cifar10_eval_augment();
  a.pad = 4;
  a.pad_value = 127;
  a.flip = true;
  a.cutout = cutout ? 16 : 0;
  return a;
}

}  // namespace dsonas
