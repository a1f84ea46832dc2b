// imagenet_format.cpp — the manifest (JSON), shard reading (ImageNetShards) and
// the full validator; see imagenet.hpp for the on-disk format.
//
// Design: read_shard_meta() is the one place that knows a shard's structure;
// the reader and the validator both use it, so they accept exactly the same
// files.  After it, images are read with pread() (no HDF5 call off the opening
// thread), the byte range found with H5Dget_offset() on the contiguous /jpeg
// dataset.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "dsonas/core/error.hpp"
#include "dsonas/core/json.hpp"
#include "dsonas/data/imagenet.hpp"  // defines: read_manifest, crc32_file, ImageNetShards, validate_imagenet_dir, ...
#include "imagenet_internal.hpp"

namespace dsonas {
namespace imagenet_detail {

void h5_quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

bool read_whole_file(const std::string& path, std::string* out, std::string* err) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    if (err) *err = std::strerror(errno);
    return false;
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) {
    if (err) *err = "read error";
    return false;
  }
  *out = ss.str();
  return true;
}

bool pread_exact(int fd, void* buf, size_t n, uint64_t off, std::string* err) {
  char* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, p + done, n - done, static_cast<off_t>(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      if (err) *err = str("read error at byte ", off + done, ": ", std::strerror(errno));
      return false;
    }
    if (r == 0) {
      if (err) *err = str("file ends at byte ", off + done, ", expected ", n, " bytes from ", off, " (truncated?)");
      return false;
    }
    done += static_cast<size_t>(r);
  }
  return true;
}

}  // namespace imagenet_detail

using namespace imagenet_detail;

namespace {

std::string hex32(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

std::string join_path(const std::string& dir, const std::string& name) {
  return (!dir.empty() && dir.back() == '/') ? dir + name : dir + "/" + name;
}

bool valid_split_name(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

}  // namespace

std::string shard_file_name(const std::string& split, int index) {
  char b[32];
  std::snprintf(b, sizeof b, "-%05d.h5", index);
  return split + b;
}

uint32_t crc32_bytes(const void* data, size_t n, uint32_t crc) {
  const Bytef* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  while (n > 0) {
    const uInt k = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = crc32(c, p, k);
    p += k;
    n -= k;
  }
  return static_cast<uint32_t>(c);
}

uint32_t crc32_file(const std::string& path, uint64_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_usage(str("data: ", path, ": cannot open: ", std::strerror(errno)));
  std::vector<char> buf(size_t(4) << 20);
  uint32_t c = 0;
  uint64_t total = 0;
  for (;;) {
    const ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int e = errno;
      ::close(fd);
      fail_usage(str("data: ", path, ": read error after ", total, " bytes: ", std::strerror(e)));
    }
    if (r == 0) break;
    c = crc32_bytes(buf.data(), static_cast<size_t>(r), c);
    total += static_cast<uint64_t>(r);
  }
  ::close(fd);
  if (size) *size = total;
  return c;
}

// ---- manifest -------------------------------------------------------------------

const SplitEntry* Manifest::split(const std::string& name) const {
  for (const SplitEntry& s : splits)
    if (s.name == name) return &s;
  return nullptr;
}

std::string Manifest::to_json() const {
  std::ostringstream o;
  o << "{\n  \"format\": " << json_quote(kManifestFormat) << ",\n  \"format_version\": " << format_version
    << ",\n  \"pack_id\": " << json_quote(pack_id) << ",\n  \"source\": " << json_quote(source)
    << ",\n  \"resize\": " << resize << ",\n  \"quality\": " << quality << ",\n  \"classes\": [";
  for (size_t i = 0; i < classes.size(); ++i) o << (i ? ", " : "") << json_quote(classes[i]);
  o << "],\n  \"splits\": {";
  for (size_t k = 0; k < splits.size(); ++k) {
    const SplitEntry& s = splits[k];
    o << (k ? "," : "") << "\n    " << json_quote(s.name) << ": {\"images\": " << s.images << ", \"shards\": [";
    for (size_t i = 0; i < s.shards.size(); ++i) {
      const ShardEntry& e = s.shards[i];
      o << (i ? "," : "") << "\n      {\"file\": " << json_quote(e.file) << ", \"first\": " << e.first
        << ", \"images\": " << e.images << ", \"bytes\": " << e.bytes << ", \"crc32\": \"" << hex32(e.crc32) << "\"";
      if (e.jpeg_offset >= 0)
        o << ", \"jpeg_offset\": " << e.jpeg_offset << ", \"jpeg_bytes\": " << e.jpeg_bytes << ", \"meta_crc32\": \""
          << hex32(e.meta_crc32) << "\"";
      o << "}";
    }
    o << "]}";
  }
  o << "\n  },\n  \"skipped\": [";
  for (size_t i = 0; i < skipped.size(); ++i)
    o << (i ? "," : "") << "\n    {\"path\": " << json_quote(skipped[i].path)
      << ", \"reason\": " << json_quote(skipped[i].reason) << "}";
  o << (skipped.empty() ? "" : "\n  ") << "],\n  \"warnings\": " << warnings << "\n}\n";
  return o.str();
}

namespace {

struct ManifestReader {
  std::string path;
  [[noreturn]] void bad(const std::string& field, const std::string& what) const {
    fail_usage(str("data: ", path, " (ImageNet manifest): ", field.empty() ? "" : "field " + field + ": ", what));
  }
  /// The first member `key` of an object (null if absent).
  static const JsonValue* member(const JsonValue& obj, const std::string& key) {
    if (obj.kind != JsonValue::Obj) return nullptr;
    for (const auto& kv : obj.obj)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
  const JsonValue& need(const JsonValue& obj, const std::string& key, JsonValue::Kind kind,
                        const std::string& ctx) const {
    const JsonValue* v = member(obj, key);
    const std::string f = ctx.empty() ? key : ctx + "." + key;
    if (!v) bad(f, "missing");
    if (v->kind != kind) bad(f, "wrong type");
    return *v;
  }
  int64_t integer(const JsonValue& obj, const std::string& key, const std::string& ctx, int64_t lo) const {
    const JsonValue& v = need(obj, key, JsonValue::Num, ctx);
    const std::string f = ctx.empty() ? key : ctx + "." + key;
    try {
      size_t used = 0;
      const long long x = std::stoll(v.text, &used);
      if (used != v.text.size()) throw std::invalid_argument(v.text);
      if (x < lo) bad(f, str(x, " is below ", lo));
      return x;
    } catch (const std::logic_error&) {
      bad(f, str("'", v.text, "' is not an integer"));
    }
  }
  std::string string(const JsonValue& obj, const std::string& key, const std::string& ctx) const {
    return need(obj, key, JsonValue::Str, ctx).text;
  }
  /// Every member of obj is one of `keys`, once: dsonas pack writes exactly these, so
  /// anything else is damage.
  void only(const JsonValue& obj, std::initializer_list<const char*> keys, const std::string& ctx) const {
    for (size_t i = 0; i < obj.obj.size(); ++i) {
      const std::string& k = obj.obj[i].first;
      const std::string f = ctx.empty() ? k : ctx + "." + k;
      bool known = false;
      for (const char* x : keys) known = known || k == x;
      if (!known) bad(f, "unknown field");
      for (size_t j = 0; j < i; ++j)
        if (obj.obj[j].first == k) bad(f, "appears more than once");
    }
  }
};

}  // namespace

Manifest read_manifest(const std::string& dir) {
  const std::string path = join_path(dir, kManifestName);
  ManifestReader R{path};
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0)
    fail_usage(str("data: ", dir, " (ImageNet shard folder): ", std::strerror(errno),
                   "; hint: create it with dsonas pack --src ROOT --out ", dir));
  if (!S_ISDIR(st.st_mode)) fail_usage(str("data: ", dir, " (ImageNet shard folder): not a directory"));
  if (::stat(path.c_str(), &st) != 0)
    fail_usage(str("data: ", path, " (ImageNet manifest): missing: the pack did not finish or ", dir,
                   " is not a dsonas pack output (run dsonas pack --src ROOT --out ", dir, ")"));
  std::string text, err;
  if (!read_whole_file(path, &text, &err)) R.bad("", "cannot read: " + err);
  JsonValue j;
  try {
    j = parse_json(text, path);
  } catch (const Error& e) {  // "PATH: line L, column C: what"
    R.bad("", "not valid JSON (" + std::string(e.what()).substr(path.size() + 2) + ")");
  }
  if (j.kind != JsonValue::Obj) R.bad("", "not a JSON object");
  R.only(j,
         {"format", "format_version", "pack_id", "source", "resize", "quality", "classes", "splits", "skipped",
          "warnings"},
         "");
  Manifest m;
  if (R.string(j, "format", "") != kManifestFormat)
    R.bad("format", str("'", R.string(j, "format", ""), "', expected '", kManifestFormat, "'"));
  m.format_version = static_cast<int>(R.integer(j, "format_version", "", 0));
  if (m.format_version != kShardFormatVersion)
    R.bad("format_version",
          str(m.format_version, " is not supported (this dsonas reads version ", kShardFormatVersion, ")"));
  m.pack_id = R.string(j, "pack_id", "");
  if (m.pack_id.empty()) R.bad("pack_id", "empty");
  m.source = R.string(j, "source", "");
  m.resize = static_cast<int>(R.integer(j, "resize", "", 0));
  m.quality = static_cast<int>(R.integer(j, "quality", "", 0));
  const JsonValue& cls = R.need(j, "classes", JsonValue::Arr, "");
  for (size_t i = 0; i < cls.arr.size(); ++i) {
    if (cls.arr[i].kind != JsonValue::Str || cls.arr[i].text.empty())
      R.bad(str("classes[", i, "]"), "not a non-empty string");
    m.classes.push_back(cls.arr[i].text);
  }
  if (m.classes.empty()) R.bad("classes", "empty");
  const JsonValue& splits = R.need(j, "splits", JsonValue::Obj, "");
  for (const auto& kv : splits.obj) {
    const std::string ctx = "splits." + kv.first;
    if (!valid_split_name(kv.first)) R.bad(ctx, "bad split name");
    if (kv.second.kind != JsonValue::Obj) R.bad(ctx, "wrong type");
    R.only(kv.second, {"images", "shards"}, ctx);
    SplitEntry s;
    s.name = kv.first;
    s.images = R.integer(kv.second, "images", ctx, 1);
    const JsonValue& shards = R.need(kv.second, "shards", JsonValue::Arr, ctx);
    int64_t first = 0;
    for (size_t i = 0; i < shards.arr.size(); ++i) {
      const std::string c = str(ctx, ".shards[", i, "]");
      const JsonValue& e = shards.arr[i];
      if (e.kind != JsonValue::Obj) R.bad(c, "wrong type");
      R.only(e, {"file", "first", "images", "bytes", "crc32", "jpeg_offset", "jpeg_bytes", "meta_crc32"}, c);
      ShardEntry se;
      se.file = R.string(e, "file", c);
      if (se.file != shard_file_name(s.name, static_cast<int>(i)))
        R.bad(c + ".file", str("'", se.file, "', expected '", shard_file_name(s.name, static_cast<int>(i)), "'"));
      se.first = R.integer(e, "first", c, 0);
      se.images = R.integer(e, "images", c, 1);
      se.bytes = R.integer(e, "bytes", c, 1);
      auto hex = [&](const char* key) {
        const std::string h = R.string(e, key, c);
        if (h.size() != 8 || h.find_first_not_of("0123456789abcdef") != std::string::npos)
          R.bad(c + "." + key, str("'", h, "' is not 8 lower-case hex digits"));
        return static_cast<uint32_t>(std::stoul(h, nullptr, 16));
      };
      se.crc32 = hex("crc32");
      if (R.member(e, "jpeg_offset") || R.member(e, "jpeg_bytes") || R.member(e, "meta_crc32")) {
        se.jpeg_offset = R.integer(e, "jpeg_offset", c, 0);
        se.jpeg_bytes = R.integer(e, "jpeg_bytes", c, 0);
        se.meta_crc32 = hex("meta_crc32");
        if (se.jpeg_offset > se.bytes || se.jpeg_bytes > se.bytes - se.jpeg_offset)
          R.bad(c + ".jpeg_bytes", str("the /jpeg region [", se.jpeg_offset, ", +", se.jpeg_bytes, ") is outside the ",
                                       se.bytes, "-byte file"));
      }
      if (se.first != first) R.bad(c + ".first", str(se.first, ", expected ", first, " (sum of the earlier shards)"));
      first += se.images;
      s.shards.push_back(se);
    }
    if (s.shards.empty()) R.bad(ctx + ".shards", "empty");
    if (first != s.images) R.bad(ctx + ".images", str(s.images, " but its shards hold ", first, " images"));
    if (s.images > 0x7fffffff) R.bad(ctx + ".images", str(s.images, " is more than supported (2^31-1)"));
    m.splits.push_back(std::move(s));
  }
  if (const JsonValue* sk = R.member(j, "skipped")) {
    if (sk->kind != JsonValue::Arr) R.bad("skipped", "wrong type");
    for (size_t i = 0; i < sk->arr.size(); ++i) {
      const std::string c = str("skipped[", i, "]");
      if (sk->arr[i].kind != JsonValue::Obj) R.bad(c, "wrong type");
      R.only(sk->arr[i], {"path", "reason"}, c);
      m.skipped.push_back({R.string(sk->arr[i], "path", c), R.string(sk->arr[i], "reason", c)});
    }
  }
  if (R.member(j, "warnings")) m.warnings = R.integer(j, "warnings", "", 0);
  return m;
}

// ---- one shard's structure --------------------------------------------------------

namespace {

struct ShardMeta {
  uint64_t file_size = 0;
  uint64_t jpeg_base = 0, jpeg_size = 0, names_base = 0, names_size = 0;
  std::vector<uint64_t> offsets, name_offsets;
  std::vector<int32_t> labels;
  std::vector<uint32_t> crc;
};

std::string shard_role(const std::string& split, size_t index) { return str("ImageNet ", split, " shard ", index); }

/// Reads the name of image `i` from an open shard file (for messages).
std::string read_name(const std::string& path, const ShardMeta& m, size_t i) {
  if (i + 1 >= m.name_offsets.size()) return "?";
  const uint64_t a = m.name_offsets[i], b = m.name_offsets[i + 1];
  if (b < a || b > m.names_size || b - a > 4096) return "?";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "?";
  std::string s(b - a, '\0');
  const bool ok = pread_exact(fd, &s[0], s.size(), m.names_base + a, nullptr);
  ::close(fd);
  return ok ? s : "?";
}

/// CRC-32 of a shard's bytes outside [jpeg, jpeg + len): its HDF5 metadata and small
/// datasets.  *err set on a read error.
uint32_t shard_meta_crc(const std::string& path, uint64_t jpeg, uint64_t len, uint64_t size, std::string* err) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = str("cannot open: ", std::strerror(errno));
    return 0;
  }
  uint32_t c = 0;
  std::vector<uint8_t> buf;
  for (const auto& r : {std::make_pair(uint64_t(0), jpeg), std::make_pair(jpeg + len, size - (jpeg + len))}) {
    for (uint64_t at = r.first, left = r.second; left > 0 && err->empty();) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(left, uint64_t(1) << 20));
      buf.resize(k);
      if (!pread_exact(fd, buf.data(), k, at, err)) break;
      c = crc32_bytes(buf.data(), k, c);
      at += k;
      left -= k;
    }
  }
  ::close(fd);
  return c;
}

/// Opens the HDF5 file and checks everything but byte checksums.  Exit 2 on problems.
ShardMeta read_shard_meta(const std::string& dir, const Manifest& man, const SplitEntry& sp, size_t index) {
  const ShardEntry& e = sp.shards[index];
  const std::string path = join_path(dir, e.file);
  const std::string role = shard_role(sp.name, index);
  auto bad = [&](const std::string& what) -> void { fail_usage(str("data: ", path, " (", role, "): ", what)); };
  ShardMeta m;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    bad(str("cannot open: ", std::strerror(errno), " (listed in ", join_path(dir, kManifestName), ")"));
  if (!S_ISREG(st.st_mode)) bad("not a regular file");
  m.file_size = static_cast<uint64_t>(st.st_size);
  if (static_cast<int64_t>(m.file_size) != e.bytes)
    bad(str("size ", m.file_size, " bytes, the manifest says ", e.bytes,
            m.file_size < static_cast<uint64_t>(e.bytes) ? " (truncated)" : " (the file was changed after packing)"));
  if (e.jpeg_offset >= 0) {  // the HDF5 metadata's CRC-32 before HDF5 reads a byte
    std::string err;
    const uint32_t c = shard_meta_crc(path, static_cast<uint64_t>(e.jpeg_offset), static_cast<uint64_t>(e.jpeg_bytes),
                                      m.file_size, &err);
    if (!err.empty()) bad(err);
    if (c != e.meta_crc32)
      bad(str("its HDF5 metadata is damaged: CRC-32 ", hex32(c), ", the manifest says ", hex32(e.meta_crc32),
              " (re-copy the file; dsonas validate checks every byte)"));
  }
  h5_quiet();
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
#if H5_VERSION_GE(1, 10, 7)
  // Shards are never written after packing: no file lock, so that file systems
  // without flock() (HDF5's "unable to lock file, errno = 524") work too.
  H5Pset_file_locking(fapl, false, true);
#endif
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl), H5Fclose);
  if (!file.ok()) bad("not a readable HDF5 file (corrupt, or not written by dsonas pack)");
  std::string s;
  int64_t v = 0;
  if (!read_attr_str(file, "format", &s) || s != kShardFormat)
    bad(str("attribute format is '", s, "', expected '", kShardFormat, "'"));
  if (!read_attr_i64(file, "format_version", &v) || v != kShardFormatVersion)
    bad(str("attribute format_version is ", v, ", expected ", kShardFormatVersion));
  if (!read_attr_str(file, "pack_id", &s) || s != man.pack_id)
    bad(str("attribute pack_id is '", s, "' but the manifest's is '", man.pack_id,
            "': the shard belongs to another pack"));
  if (!read_attr_str(file, "split", &s) || s != sp.name)
    bad(str("attribute split is '", s, "', expected '", sp.name, "'"));
  if (!read_attr_i64(file, "shard", &v) || v != static_cast<int64_t>(index))
    bad(str("attribute shard is ", v, ", expected ", index));
  if (!read_attr_i64(file, "images", &v) || v != e.images)
    bad(str("attribute images is ", v, ", the manifest says ", e.images));
  if (!read_attr_i64(file, "classes", &v) || v != static_cast<int64_t>(man.classes.size()))
    bad(str("attribute classes is ", v, ", the manifest lists ", man.classes.size()));
  const size_t n = static_cast<size_t>(e.images);

  auto open_ds = [&](const char* name, hsize_t expect, hsize_t* got) -> hid_t {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) bad(str("dataset /", name, " is missing"));
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0) bad(str("dataset /", name, " cannot be opened (corrupt)"));
    H5Id space(H5Dget_space(ds), H5Sclose);
    H5Id type(H5Dget_type(ds), H5Tclose);
    hsize_t dims[2] = {0, 0};
    const int rank = space.ok() ? H5Sget_simple_extent_ndims(space) : -1;
    if (rank != 1 || H5Sget_simple_extent_dims(space, dims, nullptr) != 1 || !type.ok() ||
        H5Tget_class(type) != H5T_INTEGER) {
      H5Dclose(ds);
      bad(str("dataset /", name, " is not a 1-D integer dataset"));
    }
    if (expect && dims[0] != expect) {
      H5Dclose(ds);
      bad(str("dataset /", name, " has ", dims[0], " entries, expected ", expect));
    }
    if (got) *got = dims[0];
    return ds;
  };
  auto read_ds = [&](const char* name, hsize_t expect, hid_t memtype, void* out) {
    H5Id ds(open_ds(name, expect, nullptr), H5Dclose);
    if (H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
      bad(str("dataset /", name, " is unreadable (Fletcher-32 checksum mismatch: the file is corrupt)"));
  };
  auto contiguous = [&](const char* name, uint64_t* base, uint64_t* size) {
    hsize_t len = 0;
    H5Id ds(open_ds(name, 0, &len), H5Dclose);
    H5Id type(H5Dget_type(ds), H5Tclose);
    if (H5Tget_size(type) != 1) bad(str("dataset /", name, " is not uint8"));
    const haddr_t off = H5Dget_offset(ds);
    if (off == HADDR_UNDEF) bad(str("dataset /", name, " is not stored contiguously (not written by dsonas pack)"));
    *base = static_cast<uint64_t>(off);
    *size = static_cast<uint64_t>(len);
    if (*base + *size > m.file_size)
      bad(str("dataset /", name, " ends at byte ", *base + *size, " beyond the file's ", m.file_size, " bytes"));
  };
  contiguous("jpeg", &m.jpeg_base, &m.jpeg_size);
  if (e.jpeg_offset >= 0 &&
      (m.jpeg_base != static_cast<uint64_t>(e.jpeg_offset) || m.jpeg_size != static_cast<uint64_t>(e.jpeg_bytes)))
    bad(str("dataset /jpeg is bytes [", m.jpeg_base, ", +", m.jpeg_size, ") but the manifest says [", e.jpeg_offset,
            ", +", e.jpeg_bytes, ")"));
  contiguous("names", &m.names_base, &m.names_size);
  m.offsets.resize(n + 1);
  m.name_offsets.resize(n + 1);
  m.labels.resize(n);
  m.crc.resize(n);
  read_ds("offsets", n + 1, H5T_NATIVE_UINT64, m.offsets.data());
  read_ds("name_offsets", n + 1, H5T_NATIVE_UINT64, m.name_offsets.data());
  read_ds("labels", n, H5T_NATIVE_INT32, m.labels.data());
  read_ds("crc32", n, H5T_NATIVE_UINT32, m.crc.data());
  auto check_offsets = [&](const std::vector<uint64_t>& o, uint64_t total, const char* name) {
    if (o[0] != 0) bad(str("/", name, "[0] is ", o[0], ", expected 0"));
    for (size_t i = 0; i < n; ++i)
      if (o[i + 1] <= o[i]) bad(str("/", name, " is not increasing at image ", i, " (", o[i], " then ", o[i + 1], ")"));
    if (o[n] != total) bad(str("/", name, "[", n, "] is ", o[n], " but the data hold ", total, " bytes"));
  };
  check_offsets(m.offsets, m.jpeg_size, "offsets");
  check_offsets(m.name_offsets, m.names_size, "name_offsets");
  const int32_t classes = static_cast<int32_t>(man.classes.size());
  for (size_t i = 0; i < n; ++i)
    if (m.labels[i] < 0 || m.labels[i] >= classes)
      bad(str("label ", m.labels[i], " of image ", i, " (", read_name(path, m, i), ") is out of range [0, ", classes,
              ")"));
  return m;
}

}  // namespace

// ---- reader ----------------------------------------------------------------------

struct ImageNetShards::Shard {
  std::string path, role;
  int fd = -1;
  ShardMeta meta;
  ~Shard() {
    if (fd >= 0) ::close(fd);
  }
};

ImageNetShards::ImageNetShards(const std::string& dir, const std::string& split, ShardOpenOptions opt)
    : dir_(dir), split_(split) {
  manifest_ = read_manifest(dir);
  const SplitEntry* sp = manifest_.split(split);
  if (!sp) {
    std::string have;
    for (const SplitEntry& s : manifest_.splits) have += (have.empty() ? "" : ", ") + s.name;
    fail_usage(str("data: ", join_path(dir, kManifestName), " (ImageNet manifest): no split '", split,
                   "' (the pack holds: ", have, "); pack ROOT/", split, " too"));
  }
  labels_.reserve(static_cast<size_t>(sp->images));
  for (size_t k = 0; k < sp->shards.size(); ++k) {
    std::unique_ptr<Shard> s(new Shard);
    s->path = join_path(dir, sp->shards[k].file);
    s->role = shard_role(split, k);
    // Every byte before HDF5 parses the file: when asked (dsonas validate), and for a pack
    // made before the metadata CRC existed (read_shard_meta checks that one otherwise).
    const bool old_pack = sp->shards[k].jpeg_offset < 0;
    if (old_pack && !opt.verify_files && k == 0)
      std::cerr << "dsonas: note: " << join_path(dir, kManifestName) << " predates the shards' metadata checksums: "
                << "each shard's whole-file CRC-32 is checked before it is opened (pack again to skip this)"
                << std::endl;
    if (opt.verify_files || old_pack) {
      const uint32_t c = crc32_file(s->path);
      if (c != sp->shards[k].crc32)
        fail_usage(str("data: ", s->path, " (", s->role, "): CRC-32 ", hex32(c), " differs from the manifest's ",
                       hex32(sp->shards[k].crc32), ": the file is corrupt or was changed after packing"));
    }
    s->meta = read_shard_meta(dir, manifest_, *sp, k);
    s->fd = ::open(s->path.c_str(), O_RDONLY | O_CLOEXEC);
    if (s->fd < 0)
      fail_usage(str("data: ", s->path, " (", s->role, "): cannot open: ", std::strerror(errno),
                     errno == EMFILE ? " (raise the open-file limit: ulimit -n)" : ""));
    first_.push_back(static_cast<int64_t>(labels_.size()));
    labels_.insert(labels_.end(), s->meta.labels.begin(), s->meta.labels.end());
    std::vector<int32_t>().swap(s->meta.labels);
    shards_.push_back(std::move(s));
  }
  source_ = str("ImageNet ", split, " (", dir, ", ", labels_.size(), " images in ", shards_.size(), " shards)");
}

ImageNetShards::~ImageNetShards() = default;
ImageNetShards::ImageNetShards(ImageNetShards&&) noexcept = default;
ImageNetShards& ImageNetShards::operator=(ImageNetShards&&) noexcept = default;

const ImageNetShards::Shard& ImageNetShards::shard_of(int i, int64_t* local) const {
  DSO_CHECK(i >= 0 && i < size(), "sample ", i, " outside ", source_);
  const size_t k = static_cast<size_t>(std::upper_bound(first_.begin(), first_.end(), int64_t(i)) - first_.begin()) - 1;
  *local = i - first_[k];
  return *shards_[k];
}

std::string ImageNetShards::name(int i) const {
  int64_t j = 0;
  const Shard& s = shard_of(i, &j);
  const ShardMeta& m = s.meta;
  const uint64_t a = m.name_offsets[static_cast<size_t>(j)], b = m.name_offsets[static_cast<size_t>(j) + 1];
  std::string out(b - a, '\0');
  if (!pread_exact(s.fd, &out[0], out.size(), m.names_base + a, nullptr)) return "?";
  return out;
}

std::string ImageNetShards::where(int i) const {
  int64_t j = 0;
  const Shard& s = shard_of(i, &j);
  return str("data: ", s.path, " (", s.role, "): image ", j, " (", name(i), ")");
}

void ImageNetShards::read_jpeg(int i, std::vector<uint8_t>& out) const {
  int64_t j = 0;
  const Shard& s = shard_of(i, &j);
  const ShardMeta& m = s.meta;
  const uint64_t a = m.offsets[static_cast<size_t>(j)], b = m.offsets[static_cast<size_t>(j) + 1];
  out.resize(b - a);
  std::string err;
  if (!pread_exact(s.fd, out.data(), out.size(), m.jpeg_base + a, &err)) fail_usage(str(where(i), ": ", err));
  const uint32_t c = crc32_bytes(out.data(), out.size());
  if (c != m.crc[static_cast<size_t>(j)])
    fail_usage(str(where(i), ": CRC-32 of its ", out.size(), " bytes is ", hex32(c), ", stored ",
                   hex32(m.crc[static_cast<size_t>(j)]), ": the shard is corrupt"));
}

// ---- validation ------------------------------------------------------------------

namespace {

/// Streams the whole file once: its CRC-32 and every image's CRC-32.
std::string check_shard_bytes(const std::string& path, const ShardMeta& m, uint32_t want_file_crc,
                              std::string* ok_detail) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return str("cannot open: ", std::strerror(errno));
  std::vector<uint8_t> buf(size_t(8) << 20);
  uint32_t fcrc = 0, icrc = 0;
  size_t img = 0;
  int64_t first_bad = -1;
  uint32_t bad_got = 0;
  const uint64_t lo = m.jpeg_base, hi = m.jpeg_base + m.jpeg_size;
  uint64_t pos = 0;
  std::string err;
  while (pos < m.file_size) {
    const size_t len = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.file_size - pos));
    if (!pread_exact(fd, buf.data(), len, pos, &err)) {
      ::close(fd);
      return err;
    }
    fcrc = crc32_bytes(buf.data(), len, fcrc);
    uint64_t a = std::max(pos, lo);
    const uint64_t b = std::min<uint64_t>(pos + len, hi);
    while (a < b) {
      const uint64_t end = lo + m.offsets[img + 1];
      const uint64_t e = std::min(b, end);
      icrc = crc32_bytes(buf.data() + (a - pos), static_cast<size_t>(e - a), icrc);
      a = e;
      if (a == end) {
        if (icrc != m.crc[img] && first_bad < 0) first_bad = static_cast<int64_t>(img), bad_got = icrc;
        ++img;
        icrc = 0;
      }
    }
    pos += len;
  }
  ::close(fd);
  std::string r;
  if (first_bad >= 0)
    r = str("image ", first_bad, " (", read_name(path, m, static_cast<size_t>(first_bad)), ") has CRC-32 ",
            hex32(bad_got), ", stored ", hex32(m.crc[static_cast<size_t>(first_bad)]), ": the shard is corrupt");
  if (fcrc != want_file_crc) {
    const std::string f = str("CRC-32 of the file is ", hex32(fcrc), ", the manifest says ", hex32(want_file_crc));
    return r.empty() ? f + ": the file is corrupt or was changed after packing" : f + "; " + r;
  }
  if (!r.empty()) return r;
  *ok_detail = str(m.offsets.size() - 1, " images, ", m.file_size, " bytes, CRC-32 ", hex32(fcrc), " ok");
  return "";
}

}  // namespace

std::vector<FileCheck> validate_imagenet_dir(const std::string& dir, int threads,
                                             const std::vector<std::string>& required_splits) {
  std::vector<FileCheck> out;
  FileCheck mc;
  mc.path = join_path(dir, kManifestName);
  mc.role = "ImageNet manifest";
  Manifest man;
  try {
    man = read_manifest(dir);
    for (const std::string& r : required_splits)
      if (!man.split(r))
        fail_usage(str("data: ", mc.path, " (ImageNet manifest): no split '", r, "'; pack ROOT/", r, " too"));
    std::string d = str(man.classes.size(), " classes");
    for (const SplitEntry& s : man.splits)
      d += str(", ", s.name, " ", s.images, " images in ", s.shards.size(), " shards");
    if (!man.skipped.empty()) d += str(", ", man.skipped.size(), " source images skipped when packing");
    mc.detail = d;
  } catch (const Error& e) {
    mc.ok = false;
    mc.detail = e.what();
    out.push_back(mc);
    return out;
  }
  out.push_back(mc);
  struct Job {
    const SplitEntry* sp;
    size_t k;
  };
  std::vector<Job> jobs;
  for (const SplitEntry& s : man.splits)
    for (size_t k = 0; k < s.shards.size(); ++k) jobs.push_back({&s, k});
  // HDF5 (structure) in this thread only, so that HDF5 builds without thread
  // safety work; then the byte checks (CRC-32 of files and images) in parallel.
  std::vector<FileCheck> res(jobs.size());
  std::vector<ShardMeta> metas(jobs.size());
  for (size_t j = 0; j < jobs.size(); ++j) {
    const SplitEntry& sp = *jobs[j].sp;
    FileCheck& fc = res[j];
    fc.path = join_path(dir, sp.shards[jobs[j].k].file);
    fc.role = shard_role(sp.name, jobs[j].k);
    try {
      const ShardEntry& e = sp.shards[jobs[j].k];
      if (e.jpeg_offset < 0) {  // an older pack: no metadata CRC, so the whole file's before HDF5 opens it
        const uint32_t c = crc32_file(fc.path);
        if (c != e.crc32)
          fail_usage(str("data: ", fc.path, " (", fc.role, "): CRC-32 of the file is ", hex32(c),
                         ", the manifest says ", hex32(e.crc32), ": the file is corrupt or was changed after packing"));
      }
      metas[j] = read_shard_meta(dir, man, sp, jobs[j].k);
    } catch (const Error& e) {
      fc.ok = false;
      fc.detail = e.what();
    }
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t j; (j = next++) < jobs.size();) {
      FileCheck& fc = res[j];
      if (!fc.ok) continue;
      const std::string e = check_shard_bytes(fc.path, metas[j], jobs[j].sp->shards[jobs[j].k].crc32, &fc.detail);
      if (!e.empty()) {
        fc.ok = false;
        fc.detail = str("data: ", fc.path, " (", fc.role, "): ", e);
      }
      std::vector<uint64_t>().swap(metas[j].offsets);
    }
  };
  int nt = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  nt = std::max(1, std::min<int>(nt, static_cast<int>(jobs.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < nt; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  out.insert(out.end(), res.begin(), res.end());
  return out;
}

}  // namespace dsonas
