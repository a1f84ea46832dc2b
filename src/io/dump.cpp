// dump.cpp — DSOD named-tensor files (see dump.hpp).
#include "dsonas/io/dump.hpp"

#include <cstdio>
#include <cstring>
#include <memory>

#include "dsonas/core/error.hpp"

namespace dsonas {

namespace {
int64_t count(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}
}  // namespace

void DumpFile::put_f32(const std::string& name, const std::vector<int64_t>& dims, const float* data) {
  DumpRecord r;
  r.dtype = 0;
  r.dims = dims;
  r.f32.assign(data, data + count(dims));
  recs_[name] = std::move(r);
}

void DumpFile::put_i32(const std::string& name, const std::vector<int64_t>& dims, const int32_t* data) {
  DumpRecord r;
  r.dtype = 1;
  r.dims = dims;
  r.i32.assign(data, data + count(dims));
  recs_[name] = std::move(r);
}

void DumpFile::put_text(const std::string& name, const std::string& text) {
  DumpRecord r;
  r.dtype = 2;
  r.dims = {static_cast<int64_t>(text.size())};
  r.text = text;
  recs_[name] = std::move(r);
}

const DumpRecord& DumpFile::at(const std::string& name) const {
  auto it = recs_.find(name);
  if (it == recs_.end()) fail_usage(str("dump: no record '", name, "'"));
  return it->second;
}

void DumpFile::write(const std::string& path) const {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) throw Error(kExitInternal, str("dump: cannot write ", path, ": ", std::strerror(errno)));
  auto w = [&](const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f.get()) != n) throw Error(kExitInternal, str("dump: write failed on ", path));
  };
  w("DSONASD1", 8);
  uint32_t n = static_cast<uint32_t>(recs_.size());
  w(&n, 4);
  for (const auto& kv : recs_) {
    uint32_t len = static_cast<uint32_t>(kv.first.size());
    w(&len, 4);
    w(kv.first.data(), len);
    const DumpRecord& r = kv.second;
    w(&r.dtype, 1);
    uint32_t nd = static_cast<uint32_t>(r.dims.size());
    w(&nd, 4);
    w(r.dims.data(), nd * sizeof(int64_t));
    if (r.dtype == 0) w(r.f32.data(), r.f32.size() * 4);
    if (r.dtype == 1) w(r.i32.data(), r.i32.size() * 4);
    if (r.dtype == 2) w(r.text.data(), r.text.size());
  }
}

DumpFile DumpFile::read(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail_usage(str("dump: cannot open ", path, ": ", std::strerror(errno)));
  auto rd = [&](void* p, size_t n) {
    if (n && std::fread(p, 1, n, f.get()) != n) fail_usage(str("dump: ", path, ": truncated"));
  };
  char magic[8];
  rd(magic, 8);
  if (std::memcmp(magic, "DSONASD1", 8) != 0) fail_usage(str("dump: ", path, ": bad magic"));
  uint32_t n;
  rd(&n, 4);
  DumpFile d;
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t len;
    rd(&len, 4);
    if (len > 4096) fail_usage(str("dump: ", path, ": bad name length"));
    std::string name(len, '\0');
    rd(&name[0], len);
    DumpRecord r;
    rd(&r.dtype, 1);
    uint32_t nd;
    rd(&nd, 4);
    if (nd > 8 || r.dtype > 2) fail_usage(str("dump: ", path, ": bad record ", name));
    r.dims.resize(nd);
    rd(r.dims.data(), nd * sizeof(int64_t));
    int64_t c = count(r.dims);
    if (c < 0 || c > (int64_t(1) << 32)) fail_usage(str("dump: ", path, ": bad dims for ", name));
    if (r.dtype == 0) {
      r.f32.resize(c);
      rd(r.f32.data(), c * 4);
    }
    if (r.dtype == 1) {
      r.i32.resize(c);
      rd(r.i32.data(), c * 4);
    }
    if (r.dtype == 2) {
      r.text.resize(c);
      rd(&r.text[0], c);
    }
    d.recs_[name] = std::move(r);
  }
  return d;
}

}  // namespace dsonas
