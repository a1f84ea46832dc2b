// imagenet_pack.cpp — `dsonas pack`: an ImageNet-style JPEG tree into HDF5
// shards + manifest (format in imagenet.hpp).
//
// Design: the source is listed completely (and checked) before anything is
// written.  Shards are produced one after the other; the images of a shard
// are read, decoded (every image, so that undecodable ones are found now, not
// during training) and optionally resized/re-encoded by a pool of threads,
// each result landing in its own slot, so the shard's content does not depend
// on the thread count.  The shard is then built in memory with HDF5's core
// driver (in this thread only) and written with write_file_atomically()
// (temporary name, fsync, rename): a crash leaves at most a .tmp file, never a
// half shard under a final name.  The manifest is written last, the same way;
// without it the folder is not a usable pack.
//
// Undecodable images are counted; the limit (pack_corrupt_limit) is checked
// after each shard's images are decoded and before the shard is written.  Any
// error after the output folder was prepared removes the shards this run wrote
// (and OUT if this run created it) before it propagates — except an exception
// from the test hook, which stands for a crash and must leave what a crash
// leaves.
#include <cmath>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <thread>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/data/imagenet.hpp"  // defines: pack_imagenet
#include "dsonas/data/jpeg.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "imagenet_internal.hpp"

namespace dsonas {
using namespace imagenet_detail;

namespace {

struct Item {
  std::string rel;  // relative to ROOT, e.g. train/n01440764/x.JPEG
  std::string abs;
  int32_t label = 0;
  uint64_t size = 0;
};

struct Result {
  std::vector<uint8_t> bytes;
  bool skip = false, warn = false;
  std::string msg;
  std::exception_ptr error;
};

std::string join_path(const std::string& dir, const std::string& name) {
  return (!dir.empty() && dir.back() == '/') ? dir + name : dir + "/" + name;
}

bool is_jpeg_name(const std::string& n) {
  const size_t dot = n.find_last_of('.');
  if (dot == std::string::npos) return false;
  std::string e = n.substr(dot + 1);
  for (char& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e == "jpg" || e == "jpeg";
}

/// Entries of a folder (no . and ..), sorted bytewise; `kinds` gets S_ISDIR per entry.
std::vector<std::string> list_dir(const std::string& dir, const std::string& role, std::vector<bool>* is_dir,
                                  std::vector<uint64_t>* sizes) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) fail_usage(str("pack: ", dir, " (", role, "): cannot open: ", std::strerror(errno)));
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  if (is_dir) is_dir->assign(names.size(), false);
  if (sizes) sizes->assign(names.size(), 0);
  for (size_t i = 0; i < names.size(); ++i) {
    struct stat st;
    const std::string p = join_path(dir, names[i]);
    if (::stat(p.c_str(), &st) != 0) fail_usage(str("pack: ", p, ": cannot stat: ", std::strerror(errno)));
    if (is_dir) (*is_dir)[i] = S_ISDIR(st.st_mode);
    if (sizes) (*sizes)[i] = S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
  }
  return names;
}

bool is_leftover(const std::string& n) {
  // <split>-NNNNN.h5 or <split>-NNNNN.h5.tmp
  std::string s = n;
  if (s.size() > 4 && s.compare(s.size() - 4, 4, ".tmp") == 0) s.resize(s.size() - 4);
  if (s.size() < 10 || s.compare(s.size() - 3, 3, ".h5") != 0) return false;
  const size_t dash = s.size() - 9;
  if (s[dash] != '-') return false;
  for (size_t i = dash + 1; i < s.size() - 3; ++i)
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  if (dash == 0) return false;
  for (size_t i = 0; i < dash; ++i)
    if (!std::isalnum(static_cast<unsigned char>(s[i])) && s[i] != '_') return false;
  return true;
}

/// Makes OUT ready; true when it created the folder.
bool prepare_out(const PackOptions& o) {
  struct stat st;
  if (::stat(o.out.c_str(), &st) != 0) {
    if (errno != ENOENT) fail_usage(str("--out: ", o.out, ": ", std::strerror(errno)));
    if (::mkdir(o.out.c_str(), 0755) != 0)
      fail_usage(str("--out: cannot create ", o.out, ": ", std::strerror(errno),
                     errno == ENOENT ? " (its parent folder does not exist)" : ""));
    return true;
  }
  if (!S_ISDIR(st.st_mode)) fail_usage(str("--out: ", o.out, " exists and is not a folder"));
  const std::vector<std::string> names = list_dir(o.out, "output folder", nullptr, nullptr);
  std::vector<std::string> leftovers;
  for (const std::string& n : names) {
    if (n == kManifestName)
      fail_usage(str("--out: ", o.out, " already holds a finished pack (", kManifestName,
                     "); choose another folder (dsonas pack never overwrites one)"));
    if (!is_leftover(n))
      fail_usage(str("--out: ", o.out, " is not empty (it holds '", n, "'); choose a new or empty folder"));
    leftovers.push_back(n);
  }
  for (const std::string& n : leftovers)
    if (::unlink(join_path(o.out, n).c_str()) != 0)
      fail_usage(str("--out: cannot remove the unfinished pack's ", join_path(o.out, n), ": ", std::strerror(errno)));
  if (!leftovers.empty() && o.log)
    *o.log << "pack: removed " << leftovers.size() << " shard files of an unfinished pack (no " << kManifestName
           << ") from " << o.out << "\n";
  return false;
}

/// How the limit was chosen, for messages.
std::string corrupt_limit_rule(const PackOptions& o) {
  if (o.strict) return "--strict";
  if (o.max_corrupt >= 0) return str("--max-corrupt ", o.max_corrupt);
  if (o.max_corrupt_percent >= 0) return str("--max-corrupt ", o.max_corrupt_percent, "%");
  return "the default --max-corrupt: 0.1% of the images, at least 10";
}

uint64_t fnv(uint64_t h, const std::string& s) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return (h ^ 0xff) * 1099511628211ull;  // terminator: "ab"+"c" != "a"+"bc"
}

Result process(const Item& it, const PackOptions& o) {
  Result r;
  try {
    std::string data, err;
    if (!read_whole_file(it.abs, &data, &err)) fail_usage(str("pack: ", it.abs, ": cannot read: ", err));
    if (data.empty()) {
      r.skip = true;
      r.msg = "empty file";
      return r;
    }
    const uint8_t* p = reinterpret_cast<const uint8_t*>(data.data());
    JpegCodec& codec = thread_local_codec();
    std::vector<uint8_t> rgb;
    int w = 0, h = 0;
    const JpegStatus st = codec.decode_rgb(p, data.size(), 8, rgb, &w, &h, &r.msg);
    if (st == JpegStatus::Error) {
      r.skip = true;
      return r;
    }
    r.warn = st == JpegStatus::Warning;
    if (o.resize > 0 && std::min(w, h) > o.resize) {
      int nw, nh;
      if (w <= h) {
        nw = o.resize;
        nh = std::max(1, static_cast<int>(std::lround(static_cast<double>(h) * o.resize / w)));
      } else {
        nh = o.resize;
        nw = std::max(1, static_cast<int>(std::lround(static_cast<double>(w) * o.resize / h)));
      }
      std::vector<uint8_t> small;
      resize_rgb(rgb.data(), w, h, nw, nh, small);
      codec.encode(small.data(), nw, nh, JpegPixels::RGB, o.quality, r.bytes);
    } else {
      r.bytes.assign(p, p + data.size());
    }
  } catch (...) {
    r.error = std::current_exception();
  }
  return r;
}

/// The shard as an HDF5 file image (core driver, no timestamps).
/// The shard's file image; *jpeg_offset and *jpeg_bytes get where /jpeg lies in it.
std::vector<char> build_shard(const std::string& label_name, const Manifest& man, const std::string& split, int index,
                              const std::vector<const Item*>& items, const std::vector<const Result*>& res,
                              int64_t* jpeg_offset, int64_t* jpeg_bytes) {
  h5_quiet();
  const size_t n = items.size();
  std::vector<uint64_t> offsets(n + 1, 0), name_offsets(n + 1, 0);
  std::vector<int32_t> labels(n);
  std::vector<uint32_t> crcs(n);
  std::string names;
  for (size_t i = 0; i < n; ++i) {
    offsets[i + 1] = offsets[i] + res[i]->bytes.size();
    names += items[i]->rel;
    name_offsets[i + 1] = names.size();
    labels[i] = items[i]->label;
    crcs[i] = crc32_bytes(res[i]->bytes.data(), res[i]->bytes.size());
  }
  auto check = [](herr_t rc, const std::string& what) {
    if (rc < 0) fail_lib("HDF5", "shard: " + what, __FILE__, __LINE__);
  };
  H5Id fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  check(H5Pset_obj_track_times(fcpl, 0), "track times");
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  const size_t incr =
      static_cast<size_t>(std::min<uint64_t>(offsets[n] + names.size() + (size_t(1) << 20), size_t(1) << 30));
  check(H5Pset_fapl_core(fapl, incr, 0), "core driver");
  H5Id file(H5Fcreate(label_name.c_str(), H5F_ACC_TRUNC, fcpl, fapl), H5Fclose);
  if (!file.ok()) fail_lib("HDF5", "create in-memory shard " + label_name, __FILE__, __LINE__);
  write_attr_str(file, "format", kShardFormat);
  write_attr_i64(file, "format_version", kShardFormatVersion);
  write_attr_str(file, "split", split);
  write_attr_i64(file, "shard", index);
  write_attr_i64(file, "images", static_cast<int64_t>(n));
  write_attr_i64(file, "classes", static_cast<int64_t>(man.classes.size()));
  write_attr_str(file, "pack_id", man.pack_id);

  auto blob = [&](const char* name, hsize_t len, const std::function<void(hid_t ds, hid_t space)>& fill) {
    H5Id space(H5Screate_simple(1, &len, nullptr), H5Sclose);
    H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    check(H5Pset_obj_track_times(dcpl, 0), "track times");
    check(H5Pset_layout(dcpl, H5D_CONTIGUOUS), "contiguous layout");
    check(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY), "alloc time");
    H5Id ds(H5Dcreate2(file, name, H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), H5Dclose);
    if (!ds.ok()) fail_lib("HDF5", str("create /", name), __FILE__, __LINE__);
    fill(ds, space);
  };
  blob("jpeg", offsets[n], [&](hid_t ds, hid_t space) {
    for (size_t i = 0; i < n; ++i) {
      hsize_t start = offsets[i], count = res[i]->bytes.size();
      H5Id mem(H5Screate_simple(1, &count, nullptr), H5Sclose);
      check(H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, nullptr, &count, nullptr), "select");
      check(H5Dwrite(ds, H5T_NATIVE_UINT8, mem, space, H5P_DEFAULT, res[i]->bytes.data()), "write /jpeg");
    }
  });
  blob("names", names.size(), [&](hid_t ds, hid_t) {
    check(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, names.data()), "write /names");
  });
  auto small = [&](const char* name, hid_t ftype, hid_t mtype, hsize_t len, const void* data) {
    H5Id space(H5Screate_simple(1, &len, nullptr), H5Sclose);
    H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    const hsize_t chunk = std::min<hsize_t>(len, 65536);
    check(H5Pset_obj_track_times(dcpl, 0), "track times");
    check(H5Pset_chunk(dcpl, 1, &chunk), "chunk");
    check(H5Pset_fletcher32(dcpl), "fletcher32");
    H5Id ds(H5Dcreate2(file, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), H5Dclose);
    if (!ds.ok()) fail_lib("HDF5", str("create /", name), __FILE__, __LINE__);
    check(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), str("write /", name));
  };
  small("offsets", H5T_STD_U64LE, H5T_NATIVE_UINT64, n + 1, offsets.data());
  small("name_offsets", H5T_STD_U64LE, H5T_NATIVE_UINT64, n + 1, name_offsets.data());
  small("labels", H5T_STD_I32LE, H5T_NATIVE_INT32, n, labels.data());
  small("crc32", H5T_STD_U32LE, H5T_NATIVE_UINT32, n, crcs.data());
  check(H5Fflush(file, H5F_SCOPE_GLOBAL), "flush");
  {
    H5Id ds(H5Dopen2(file, "jpeg", H5P_DEFAULT), H5Dclose);
    const haddr_t at = ds.ok() ? H5Dget_offset(ds) : HADDR_UNDEF;
    if (at == HADDR_UNDEF) fail_lib("HDF5", "offset of /jpeg", __FILE__, __LINE__);
    *jpeg_offset = static_cast<int64_t>(at);  // no user block: file offset = HDF5 address
    *jpeg_bytes = static_cast<int64_t>(offsets[n]);
  }
  const ssize_t size = H5Fget_file_image(file, nullptr, 0);
  if (size <= 0) fail_lib("HDF5", "shard file image size", __FILE__, __LINE__);
  std::vector<char> image(static_cast<size_t>(size));
  if (H5Fget_file_image(file, image.data(), image.size()) != size)
    fail_lib("HDF5", "shard file image", __FILE__, __LINE__);
  return image;
}

}  // namespace

int64_t pack_corrupt_limit(const PackOptions& o, int64_t images) {
  if (o.max_corrupt < -1) fail_usage(str("--max-corrupt: must be >= 0 (got ", o.max_corrupt, ")"));
  if (o.max_corrupt < 0 && o.max_corrupt_percent != -1 && !(o.max_corrupt_percent >= 0 && o.max_corrupt_percent <= 100))
    fail_usage(str("--max-corrupt: a percentage must be in [0, 100] (got ", o.max_corrupt_percent, "%)"));
  if (o.strict) return 0;
  if (o.max_corrupt >= 0) return o.max_corrupt;
  if (o.max_corrupt_percent >= 0)
    return static_cast<int64_t>(std::floor(o.max_corrupt_percent / 100.0 * static_cast<double>(images) + 1e-9));
  return std::max<int64_t>(10, images / 1000);
}

namespace {

/// The options and the source folder's shape, before anything is listed or written; exit 2
/// naming the option.  Returns ROOT/train.
std::string check_pack_options(const PackOptions& o) {
  if (o.src.empty()) fail_usage("--src: the ImageNet folder (ROOT/train/<class>/*.JPEG) is required");
  if (o.out.empty()) fail_usage("--out: the output folder is required");
  if (o.shard_size < 1) fail_usage(str("--shard-size: must be >= 1 (got ", o.shard_size, ")"));
  if (o.quality < 1 || o.quality > 100) fail_usage(str("--quality: must be in [1, 100] (got ", o.quality, ")"));
  if (o.resize < 0 || (o.resize > 0 && o.resize < 8))
    fail_usage(str("--resize: must be 0 (keep the original JPEG bytes) or >= 8 (got ", o.resize, ")"));
  if (o.threads < 0) fail_usage(str("--threads: must be >= 0 (got ", o.threads, ")"));
  if (o.splits.empty()) fail_usage("--splits: empty");
  pack_corrupt_limit(o, 0);  // checks the limit options
  for (const std::string& s : o.splits) {
    bool ok = !s.empty();
    for (char c : s) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
    if (!ok) fail_usage(str("--splits: '", s, "' is not a split folder name (letters, digits, _)"));
  }
  struct stat st;
  if (::stat(o.src.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    fail_usage(str("--src: ", o.src, ": ", ::stat(o.src.c_str(), &st) != 0 ? std::strerror(errno) : "not a folder"));
  std::string train_dir = join_path(o.src, "train");
  if (::stat(train_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    fail_usage(str("--src: ", train_dir,
                   " is missing: ROOT must hold train/<class>/*.JPEG (classes are the train "
                   "folder names)"));

  return train_dir;
}

/// The classes (train folder names, sorted) into man and each split's images; nothing is
/// written.  Exit 2 naming what is wrong with the tree.
std::vector<std::pair<std::string, std::vector<Item>>> list_source(const PackOptions& o, const std::string& train_dir,
                                                                   Manifest& man) {
  struct stat st;
  {
    std::vector<bool> dirs;
    const std::vector<std::string> names = list_dir(train_dir, "ImageNet train folder", &dirs, nullptr);
    for (size_t i = 0; i < names.size(); ++i)
      if (dirs[i]) man.classes.push_back(names[i]);
    if (man.classes.empty()) fail_usage(str("--src: ", train_dir, " holds no class folders"));
  }
  std::vector<std::pair<std::string, std::vector<Item>>> splits;
  int64_t ignored = 0;
  std::string first_ignored;
  for (const std::string& sname : o.splits) {
    const std::string sdir = join_path(o.src, sname);
    if (::stat(sdir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      if (sname == "train") fail_usage(str("--src: ", sdir, " is missing"));
      if (o.log) *o.log << "pack: note: " << sdir << " does not exist; split '" << sname << "' not packed\n";
      continue;
    }
    std::vector<bool> dirs;
    const std::vector<std::string> names = list_dir(sdir, "ImageNet " + sname + " folder", &dirs, nullptr);
    std::vector<Item> items;
    for (size_t i = 0; i < names.size(); ++i) {
      if (!dirs[i]) {
        if (is_jpeg_name(names[i]))
          fail_usage(str("--src: ", join_path(sdir, names[i]), ": images must be in class folders (", sdir,
                         "/<class>/*.JPEG); for the flat ILSVRC2012 val folder, move each image into its class "
                         "folder first (e.g. with the devkit's ground truth)"));
        ++ignored;
        if (first_ignored.empty()) first_ignored = join_path(sdir, names[i]);
        continue;
      }
      const auto cls = std::lower_bound(man.classes.begin(), man.classes.end(), names[i]);
      if (cls == man.classes.end() || *cls != names[i])
        fail_usage(str("--src: ", join_path(sdir, names[i]), ": class folder '", names[i], "' does not exist in ",
                       train_dir, " (classes are the train folder names)"));
      const int32_t label = static_cast<int32_t>(cls - man.classes.begin());
      const std::string cdir = join_path(sdir, names[i]);
      std::vector<bool> fdirs;
      std::vector<uint64_t> sizes;
      const std::vector<std::string> files = list_dir(cdir, "class folder", &fdirs, &sizes);
      for (size_t f = 0; f < files.size(); ++f) {
        if (fdirs[f] || !is_jpeg_name(files[f])) {
          ++ignored;
          if (first_ignored.empty()) first_ignored = join_path(cdir, files[f]);
          continue;
        }
        items.push_back({sname + "/" + names[i] + "/" + files[f], join_path(cdir, files[f]), label, sizes[f]});
      }
    }
    if (items.empty()) fail_usage(str("--src: ", sdir, " holds no .jpg/.jpeg images in class folders"));
    splits.emplace_back(sname, std::move(items));
  }
  if (ignored && o.log)
    *o.log << "pack: note: ignored " << ignored
           << " entries that are not .jpg/.jpeg files in class folders (first: " << first_ignored << ")\n";
  return splits;
}

/// The pack's identity: a hash of the classes, every image's path and size and the
/// packing options (an unfinished pack is continued only by the same pack).
std::string pack_id(const PackOptions& o, const Manifest& man,
                    const std::vector<std::pair<std::string, std::vector<Item>>>& splits) {
  uint64_t h = fnv(14695981039346656037ull, "dsonas-imagenet-shards/1");
  for (const std::string& c : man.classes) h = fnv(h, c);
  for (const auto& sp : splits)
    for (const Item& it : sp.second) h = fnv(fnv(h, it.rel), std::to_string(it.size));
  h = fnv(h, str(o.resize, "/", o.quality, "/", o.shard_size));
  char b[24];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(splitmix64(h)));
  return b;
}

/// The closing log line of a finished pack.
void log_done(const PackOptions& o, const Manifest& man, int64_t max_bad, double seconds) {
  *o.log << "pack: done in " << str(static_cast<int64_t>(seconds + 0.5)) << " s:";
  for (const SplitEntry& se : man.splits)
    *o.log << " " << se.name << " " << se.images << " images / " << se.shards.size() << " shards;";
  *o.log << " " << man.skipped.size() << " skipped (undecodable; limit " << max_bad << "), " << man.warnings
         << " kept with warnings; " << join_path(o.out, kManifestName) << " written\n";
}

}  // namespace

Manifest pack_imagenet(const PackOptions& o) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const std::string train_dir = check_pack_options(o);

  // ---- list the source (nothing written yet)
  Manifest man;
  man.source = o.src;
  man.resize = o.resize;
  man.quality = o.quality;
  const std::vector<std::pair<std::string, std::vector<Item>>> splits = list_source(o, train_dir, man);
  man.pack_id = pack_id(o, man, splits);

  int64_t listed = 0;
  for (const auto& sp : splits) listed += static_cast<int64_t>(sp.second.size());
  const int64_t max_bad = pack_corrupt_limit(o, listed);

  // ---- output folder
  const bool created_out = prepare_out(o);
  const int nthreads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (o.log) {
    *o.log << "pack: " << o.src << " -> " << o.out << ": " << man.classes.size() << " classes";
    for (const auto& sp : splits) *o.log << ", " << sp.first << " " << sp.second.size() << " images";
    *o.log << "; " << o.shard_size << " images per shard, "
           << (o.resize > 0 ? str("resize shorter side > ", o.resize, " to ", o.resize, " (quality ", o.quality, ")")
                            : std::string("original JPEG bytes"))
           << ", " << nthreads << " threads; at most " << max_bad << " undecodable images (" << corrupt_limit_rule(o)
           << ")\n";
  }

  // From here on, an error removes what this run wrote (see the file comment).
  std::vector<std::string> written;
  bool crashed = false;  // the test hook threw: leave everything as a crash would
  bool manifest_started = false;
  auto hook = [&](const std::string& phase, const std::string& file) {
    if (!o.hook) return;
    try {
      o.hook(phase, file);
    } catch (...) {
      crashed = true;
      throw;
    }
  };
  try {
    // ---- shards
    int64_t done_before = 0;  // images of the splits packed before this one
    for (const auto& sp : splits) {
      const std::vector<Item>& items = sp.second;
      SplitEntry se;
      se.name = sp.first;
      size_t shard_index = 0;
      for (size_t a = 0; a < items.size(); a += static_cast<size_t>(o.shard_size)) {
        const auto ts = Clock::now();
        const size_t b = std::min(items.size(), a + static_cast<size_t>(o.shard_size));
        std::vector<Result> res(b - a);
        std::atomic<size_t> next{a};
        auto work = [&] {
          for (size_t i; (i = next++) < b;) res[i - a] = process(items[i], o);
        };
        std::vector<std::thread> pool;
        const int nt = std::min<int>(nthreads, static_cast<int>(b - a));
        for (int t = 1; t < nt; ++t) pool.emplace_back(work);
        work();
        for (auto& t : pool) t.join();
        std::vector<const Item*> keep_items;
        std::vector<const Result*> keep_res;
        for (size_t i = a; i < b; ++i) {
          const Result& r = res[i - a];
          if (r.error) std::rethrow_exception(r.error);
          if (r.skip) {
            if (o.strict)
              fail_usage(str("pack: ", items[i].abs, ": cannot be decoded (", r.msg, "); --strict stops here"));
            if (o.log) *o.log << "pack: warning: " << items[i].abs << ": skipped: " << r.msg << "\n";
            man.skipped.push_back({items[i].rel, r.msg});
            continue;
          }
          if (r.warn) {
            if (o.strict)
              fail_usage(str("pack: ", items[i].abs, ": decodes only with a libjpeg warning (", r.msg,
                             "); --strict stops here"));
            if (o.log)
              *o.log << "pack: warning: " << items[i].abs << ": kept despite a libjpeg warning: " << r.msg << "\n";
            ++man.warnings;
          }
          keep_items.push_back(&items[i]);
          keep_res.push_back(&r);
        }
        if (static_cast<int64_t>(man.skipped.size()) > max_bad) {
          std::string first;
          for (size_t k = 0; k < man.skipped.size() && k < 3; ++k)
            first += str(k ? "; " : "", join_path(o.src, man.skipped[k].path), " (", man.skipped[k].reason, ")");
          fail_usage(str("pack: too many undecodable images: ", man.skipped.size(), " in the first ", done_before + b,
                         " of ", listed, " images, the limit is ", max_bad, " (", corrupt_limit_rule(o),
                         "); first: ", first, "; no pack written (raise --max-corrupt to keep going)"));
        }
        if (keep_items.empty()) continue;  // every image of this range skipped
        ShardEntry e;
        e.file = shard_file_name(se.name, static_cast<int>(shard_index));
        e.first = se.images;
        e.images = static_cast<int64_t>(keep_items.size());
        const std::string path = join_path(o.out, e.file);
        std::vector<char> image = build_shard(path + ".core", man, se.name, static_cast<int>(shard_index), keep_items,
                                              keep_res, &e.jpeg_offset, &e.jpeg_bytes);
        res.clear();
        e.bytes = static_cast<int64_t>(image.size());
        e.crc32 = crc32_bytes(image.data(), image.size());
        DSO_CHECK(e.jpeg_offset + e.jpeg_bytes <= e.bytes, "/jpeg outside the shard image");
        e.meta_crc32 = crc32_bytes(image.data() + e.jpeg_offset + e.jpeg_bytes,
                                   static_cast<size_t>(e.bytes - e.jpeg_offset - e.jpeg_bytes),
                                   crc32_bytes(image.data(), static_cast<size_t>(e.jpeg_offset)));
        write_file_atomically(path, image.data(), image.size(),
                              [&](const char* phase) { hook(str("shard-", phase), path); });
        written.push_back(path);
        se.images += e.images;
        se.shards.push_back(e);
        ++shard_index;
        if (o.log) {
          const double s = std::chrono::duration<double>(Clock::now() - ts).count();
          char b2[64];
          std::snprintf(b2, sizeof b2, "%.1f MB, %.1f s, %.0f img/s", static_cast<double>(e.bytes) / 1e6, s,
                        static_cast<double>(b - a) / std::max(s, 1e-9));
          *o.log << "pack: " << path << ": " << e.images << " images, " << b2 << "; " << se.name << " " << b << "/"
                 << items.size() << "\n";
        }
      }
      if (se.shards.empty()) fail_usage(str("pack: every image of ", join_path(o.src, se.name), " was skipped"));
      man.splits.push_back(std::move(se));
      done_before += static_cast<int64_t>(items.size());
    }
    hook("before-manifest", join_path(o.out, kManifestName));
    const std::string text = man.to_json();
    manifest_started = true;
    write_file_atomically(join_path(o.out, kManifestName), text.data(), text.size());
  } catch (...) {
    if (!crashed) {
      // renamed but not fsynced (the folder's fsync failed): not a finished pack either
      if (manifest_started) ::unlink(join_path(o.out, kManifestName).c_str());
      size_t removed = 0;
      for (const std::string& f : written) removed += ::unlink(f.c_str()) == 0;
      const bool rm_dir = created_out && ::rmdir(o.out.c_str()) == 0;
      if (o.log && (removed || rm_dir))
        *o.log << "pack: stopped by an error: removed the " << removed << " shard files written"
               << (rm_dir ? str(" and the folder ", o.out) : std::string()) << "\n";
    }
    throw;
  }
  if (o.log) log_done(o, man, max_bad, std::chrono::duration<double>(Clock::now() - t0).count());
  return man;
}

}  // namespace dsonas
