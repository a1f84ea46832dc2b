// model_file.cpp — HDF5 model files (see model_file.hpp).  HDF5 C API.
#include "dsonas/io/model_file.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/core/version.hpp"
#include "dsonas/core/fault.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "dsonas/model/supergraph.hpp"
#include "h5_common.hpp"
#include "h5_seal.hpp"

namespace dsonas {
using namespace h5;
namespace {

void read_dataset(hid_t file, const std::string& path, const std::string& name, int64_t numel, float* out) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0)
    throw Error(kExitCheckpoint, str(path, ": missing dataset ", name));
  H5Id ds(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  H5Id space(H5Dget_space(ds), H5Sclose);
  hssize_t n = H5Sget_simple_extent_npoints(space);
  if (ds.id < 0 || n != numel)
    throw Error(kExitCheckpoint, str(path, ": dataset ", name, " has ", n, " elements, expected ", numel));
  check_float_dataset(ds, numel, path, name);
  if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    throw Error(kExitCheckpoint, str(path, ": dataset ", name, " is unreadable (checksum mismatch or truncated file)"));
}

}  // namespace

void save_model_file(const std::string& path, Supergraph& g, const ModelFileInfo& info, const TrainState* ts) {
  silence_hdf5();
  Backend& be = g.backend();
  std::vector<char> image;
  {
    MemoryFile mf(path);  // built in memory, sealed, written by write_file_atomically
    const hid_t file = mf.id();
    H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    HDF5_CHECK(H5Pset_create_intermediate_group(lcpl, 1), "intermediate groups");
    write_attr_str(file, "format", ts ? "dsonas-checkpoint" : "dsonas-model");
    write_attr_str(file, "dsonas_version", version_text());
    write_attr_i64(file, "format_version", 1);
    write_attr_str(file, "space", g.space().to_json());
    write_attr_str(file, "stage", info.stage);
    write_attr_i64(file, "step", info.step);
    write_attr_i64(file, "seed", static_cast<int64_t>(info.seed));
    write_attr_str(file, "config", info.config);
    write_attr_str(file, "structural", info.structural);
    {  // docs/design.md §5: a hash of the structural fields (space + structural options), FNV-1a 64
      const std::string key = g.space().to_json() + "|" + info.structural;
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash_name(key.c_str())));
      write_attr_str(file, "structural_hash", hex);
    }
    for (Param& p : g.params()) {
      std::vector<float> h = to_host(be, p.value);
      write_dataset(file, lcpl, "params/" + p.name, p.value.shape(), h.data());
    }
    for (BnStats& b : g.bn_stats()) {
      std::vector<float> m = to_host(be, b.mean), v = to_host(be, b.var);
      write_dataset(file, lcpl, "bn/" + b.prefix + "/mean", b.mean.shape(), m.data());
      write_dataset(file, lcpl, "bn/" + b.prefix + "/var", b.var.shape(), v.data());
    }
    for (const LambdaGroup& grp : g.lambda_groups()) {
      write_dataset(file, lcpl, "lambda/" + grp.name, {grp.size}, g.lambda().data() + grp.offset);
      std::vector<float> mk(static_cast<size_t>(grp.size));
      for (int i = 0; i < grp.size; ++i) mk[static_cast<size_t>(i)] = g.mask()[static_cast<size_t>(grp.offset + i)];
      write_dataset(file, lcpl, "mask/" + grp.name, {grp.size}, mk.data());
    }
    if (ts) {
      write_attr_i64(file, "world_size", info.world_size);
      for (Param& p : g.params()) {
        if (p.frozen) continue;
        std::vector<float> h = to_host(be, p.momentum);
        write_dataset(file, lcpl, "optim/momentum/" + p.name, p.momentum.shape(), h.data());
      }
      write_dataset(file, lcpl, "optim/lambda_v", {static_cast<int64_t>(ts->lambda_v.size())}, ts->lambda_v.data());
      H5Id grp(H5Gcreate2(file, "state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      if (grp.id < 0) fail_lib("HDF5", "create group state", __FILE__, __LINE__);
      for (const auto& kv : ts->counters) write_attr_i64(grp, kv.first.c_str(), kv.second);
      for (const auto& kv : ts->reals) write_attr_f64(grp, kv.first.c_str(), kv.second);
    }
    image = mf.sealed_image();
  }
  write_file_atomically(path, image.data(), image.size(), [&](const char* phase) {
    if (ts) fault_point(str("ckpt-", phase).c_str(), info.step);
  });
}

namespace {

/// Opens a model file or checkpoint after checking its seal (h5_seal.hpp) and its
/// format attribute; *space gets the space attribute.  Exit 3 naming the file.
H5Id open_model_file(const std::string& path, std::string* space) {
  silence_hdf5();
  H5Id file = open_sealed(path);
  std::string fmt;
  if (!read_attr_str(file, "format", &fmt) || (fmt != "dsonas-model" && fmt != "dsonas-checkpoint"))
    throw Error(kExitCheckpoint, str(path, ": not a dsonas model file (attribute format=", fmt, ")"));
  if (!read_attr_str(file, "space", space)) throw Error(kExitCheckpoint, str(path, ": no space attribute"));
  return file;
}

}  // namespace

std::string read_model_space(const std::string& path) {
  std::string space;
  open_model_file(path, &space);
  return space;
}

std::string read_root_attr(const std::string& path, const char* name) {
  silence_hdf5();
  H5Id file = open_sealed(path);
  std::string v;
  read_attr_str(file, name, &v);
  return v;
}

int64_t read_root_i64(const std::string& path, const char* name) {
  silence_hdf5();
  H5Id file = open_sealed(path);
  int64_t v = 0;
  if (!read_attr_i64(file, name, &v)) v = 0;
  return v;
}

std::string read_file_attr(const std::string& path, const char* name) {
  std::string space, v;
  H5Id file = open_model_file(path, &space);  // exists, is sealed HDF5, is ours
  read_attr_str(file, name, &v);
  return v;
}

void load_model_file(const std::string& path, Supergraph& g, bool with_lambda, TrainState* ts) {
  std::string space;
  H5Id file = open_model_file(path, &space);
  const std::string now = g.space().to_json();
  if (space != now) {
    // name the first differing field
    auto field = [](const std::string& js, const std::string& key) {
      size_t k = js.find("\"" + key + "\":");
      if (k == std::string::npos) return std::string("?");
      k += key.size() + 3;
      size_t e = k;
      int depth = 0;
      for (; e < js.size(); ++e) {
        char ch = js[e];
        if (ch == '[') ++depth;
        if (ch == ']') --depth;
        if (depth == 0 && (ch == ',' || ch == '}')) break;
      }
      return js.substr(k, e - k);
    };
    for (const char* key :
         {"levels", "ops", "input", "classes", "stem", "stem_channels", "normal_units", "widths", "share"}) {
      if (field(space, key) != field(now, key))
        throw Error(kExitCheckpoint,
                    str(path, ": space.", key, ": file=", field(space, key), " now=", field(now, key)));
    }
  }
  Backend& be = g.backend();
  for (Param& p : g.params()) {
    std::vector<float> h(static_cast<size_t>(p.value.numel()));
    read_dataset(file, path, "params/" + p.name, p.value.numel(), h.data());
    be.upload(h.data(), p.value);
  }
  for (BnStats& b : g.bn_stats()) {
    std::vector<float> h(static_cast<size_t>(b.mean.numel()));
    read_dataset(file, path, "bn/" + b.prefix + "/mean", b.mean.numel(), h.data());
    be.upload(h.data(), b.mean);
    read_dataset(file, path, "bn/" + b.prefix + "/var", b.var.numel(), h.data());
    be.upload(h.data(), b.var);
  }
  if (ts) {
    std::string fmt;
    read_attr_str(file, "format", &fmt);
    if (fmt != "dsonas-checkpoint") throw Error(kExitCheckpoint, str(path, ": a model file, not a checkpoint"));
    for (Param& p : g.params()) {
      if (p.frozen) continue;
      std::vector<float> h(static_cast<size_t>(p.momentum.numel()));
      read_dataset(file, path, "optim/momentum/" + p.name, p.momentum.numel(), h.data());
      be.upload(h.data(), p.momentum);
    }
    ts->lambda_v.assign(g.lambda().size(), 0.f);
    read_dataset(file, path, "optim/lambda_v", static_cast<int64_t>(ts->lambda_v.size()), ts->lambda_v.data());
    if (H5Lexists(file, "state", H5P_DEFAULT) <= 0) throw Error(kExitCheckpoint, str(path, ": no /state group"));
    H5Id grp(H5Gopen2(file, "state", H5P_DEFAULT), H5Gclose);
    ts->counters.clear();
    ts->reals.clear();
    hsize_t idx = 0;
    if (H5Aiterate2(grp, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr, ts) < 0)
      throw Error(kExitCheckpoint, str(path, ": unreadable /state attributes"));
  }
  if (with_lambda) {
    for (const LambdaGroup& grp : g.lambda_groups()) {
      read_dataset(file, path, "lambda/" + grp.name, grp.size, g.lambda().data() + grp.offset);
      std::vector<float> mk(static_cast<size_t>(grp.size));
      read_dataset(file, path, "mask/" + grp.name, grp.size, mk.data());
      for (int i = 0; i < grp.size; ++i)
        g.mask()[static_cast<size_t>(grp.offset + i)] = mk[static_cast<size_t>(i)] != 0.f;
    }
    g.rebuild_plan();
  }
}

}  // namespace dsonas
