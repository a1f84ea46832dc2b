// dump.hpp — "DSOD": a tiny named-tensor file for exchanging data with the
// PyTorch twin in tests/bench (tests/bench/dsod.py reads and writes it).
// Not a checkpoint format (those are HDF5, io/checkpoint).
//
// Layout, little-endian:
//   8 bytes magic "DSONASD1", u32 record count, then per record:
//   u32 name length, name bytes (UTF-8, no NUL), u8 dtype (0 f32, 1 i32,
//   2 utf8 text), u32 ndim, ndim × i64 dims, the elements (text: dims = {bytes}).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dsonas {

struct DumpRecord {
  uint8_t dtype = 0;  // 0 f32, 1 i32, 2 text
  std::vector<int64_t> dims;
  std::vector<float> f32;
  std::vector<int32_t> i32;
  std::string text;
};

class DumpFile {
 public:
  void put_f32(const std::string& name, const std::vector<int64_t>& dims, const float* data);
  void put_i32(const std::string& name, const std::vector<int64_t>& dims, const int32_t* data);
  void put_text(const std::string& name, const std::string& text);
  /// Writes all records in name order; fails (exit 1) with the path on error.
  void write(const std::string& path) const;
  /// Reads a file written by write() or by dsod.py; exit 2 naming the path if malformed.
  static DumpFile read(const std::string& path);
  const std::map<std::string, DumpRecord>& records() const { return recs_; }
  const DumpRecord& at(const std::string& name) const;
  bool has(const std::string& name) const { return recs_.count(name) != 0; }

 private:
  std::map<std::string, DumpRecord> recs_;
};

}  // namespace dsonas
