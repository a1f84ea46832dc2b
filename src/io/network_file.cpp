// network_file.cpp — HDF5 files of a retrain Network (see network_file.hpp).
// HDF5 C API, the same conventions as model_file.cpp (shared helpers in
// h5_common.hpp).
#include "dsonas/io/network_file.hpp"

#include <hdf5.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/version.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/fault.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/network.hpp"
#include "h5_common.hpp"
#include "h5_seal.hpp"

namespace dsonas {
using namespace h5;
namespace {

constexpr const char* kFormat = "dsonas-network";
constexpr const char* kFormatCkpt = "dsonas-network-checkpoint";

void read_dataset(hid_t file, const std::string& path, const std::string& name, const Shape& shape, float* out) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0)
    throw Error(kExitCheckpoint, str(path, ": missing dataset ", name));
  H5Id ds(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (ds.id < 0) throw Error(kExitCheckpoint, str(path, ": dataset ", name, " cannot be opened"));
  H5Id space(H5Dget_space(ds), H5Sclose);
  const int nd = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(static_cast<size_t>(nd > 0 ? nd : 0));
  if (nd > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  const Shape want = shape.empty() ? Shape{1} : shape;
  bool same = dims.size() == want.size();
  for (size_t i = 0; same && i < dims.size(); ++i) same = static_cast<int64_t>(dims[i]) == want[i];
  if (!same) {
    Shape got(dims.begin(), dims.end());
    throw Error(kExitCheckpoint,
                str(path, ": dataset ", name, " has shape ", shape_str(got), ", expected ", shape_str(want)));
  }
  check_float_dataset(ds, shape_numel(want), path, name);
  if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    throw Error(kExitCheckpoint, str(path, ": dataset ", name, " is unreadable (checksum mismatch or truncated file)"));
}

void load_tensor(hid_t file, const std::string& path, const std::string& name, Backend& be, Tensor& t) {
  std::vector<float> h(static_cast<size_t>(t.numel()));
  read_dataset(file, path, name, t.shape(), h.data());
  be.upload(h.data(), t);
}

/// Opens a network file read-only after checking its seal (h5_seal.hpp): exit 3
/// unless it is a readable dsonas network file or checkpoint of format_version 1.
/// *fmt gets the format.
H5Id open_network_file(const std::string& path, std::string* fmt) {
  silence_hdf5();
  H5Id f = open_sealed(path);
  std::string v;
  int64_t ver = 0;
  if (!read_attr_str(f, "format", &v) || (v != kFormat && v != kFormatCkpt))
    throw Error(kExitCheckpoint, str(path, ": not a dsonas network file (attribute format=", v, ")"));
  if (!read_attr_i64(f, "format_version", &ver) || ver != 1)
    throw Error(kExitCheckpoint,
                str(path, ": network file format_version ", ver, " is not supported (this build reads 1)"));
  *fmt = v;
  return f;
}

Architecture arch_of(hid_t file, const std::string& path) {
  std::string js;
  if (!read_attr_str(file, "arch", &js)) throw Error(kExitCheckpoint, str(path, ": no arch attribute"));
  try {
    return Architecture::from_json(js, path + " (arch attribute)");
  } catch (const Error& e) {
    throw Error(kExitCheckpoint, e.what());
  }
}

}  // namespace

void save_network_file(const std::string& path, Network& net, const NetworkFileInfo& info, const TrainState* ts) {
  silence_hdf5();
  Backend& be = net.backend();
  const std::string arch = net.architecture().to_json(), options = net.options().to_string();
  std::vector<char> image;
  {
    MemoryFile mf(path);  // built in memory, sealed, written by write_file_atomically
    const hid_t file = mf.id();
    H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    HDF5_CHECK(H5Pset_create_intermediate_group(lcpl, 1), "intermediate groups");
    write_attr_str(file, "format", ts ? kFormatCkpt : kFormat);
    write_attr_str(file, "dsonas_version", version_text());
    write_attr_i64(file, "format_version", 1);
    write_attr_str(file, "arch", arch);
    write_attr_str(file, "options", options);
    write_attr_str(file, "stage", info.stage);
    write_attr_i64(file, "step", info.step);
    write_attr_i64(file, "seed", static_cast<int64_t>(info.seed));
    write_attr_str(file, "config", info.config);
    write_attr_str(file, "structural", info.structural);
    {  // docs/design.md §5: a hash of the structural fields, FNV-1a 64
      const std::string key = arch + "|" + options + "|" + info.structural;
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash_name(key.c_str())));
      write_attr_str(file, "structural_hash", hex);
    }
    for (Param& p : net.params()) {
      const std::vector<float> h = to_host(be, p.value);
      write_dataset(file, lcpl, "params/" + p.name, p.value.shape(), h.data());
    }
    for (BnStats& b : net.bn_stats()) {
      const std::vector<float> m = to_host(be, b.mean), v = to_host(be, b.var);
      write_dataset(file, lcpl, "bn/" + b.prefix + "/mean", b.mean.shape(), m.data());
      write_dataset(file, lcpl, "bn/" + b.prefix + "/var", b.var.shape(), v.data());
    }
    if (ts) {
      write_attr_i64(file, "world_size", info.world_size);
      for (Param& p : net.params()) {
        const std::vector<float> h = to_host(be, p.momentum);
        write_dataset(file, lcpl, "optim/momentum/" + p.name, p.momentum.shape(), h.data());
      }
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

Architecture read_network_arch(const std::string& path) {
  std::string fmt;
  H5Id file = open_network_file(path, &fmt);
  return arch_of(file, path);
}

void load_network_file(const std::string& path, Network& net, TrainState* ts) {
  std::string fmt;
  H5Id file = open_network_file(path, &fmt);
  const Architecture file_arch = arch_of(file, path);
  const std::string diff = file_arch.structural_difference(net.architecture(), "file", "now");
  if (!diff.empty()) throw Error(kExitCheckpoint, str(path, ": arch.", diff));
  if (ts && fmt != kFormatCkpt) throw Error(kExitCheckpoint, str(path, ": a network file, not a checkpoint"));
  Backend& be = net.backend();
  for (Param& p : net.params()) load_tensor(file, path, "params/" + p.name, be, p.value);
  for (BnStats& b : net.bn_stats()) {
    load_tensor(file, path, "bn/" + b.prefix + "/mean", be, b.mean);
    load_tensor(file, path, "bn/" + b.prefix + "/var", be, b.var);
  }
  if (ts) {
    for (Param& p : net.params()) load_tensor(file, path, "optim/momentum/" + p.name, be, p.momentum);
    if (H5Lexists(file, "state", H5P_DEFAULT) <= 0) throw Error(kExitCheckpoint, str(path, ": no /state group"));
    H5Id grp(H5Gopen2(file, "state", H5P_DEFAULT), H5Gclose);
    ts->lambda_v.clear();
    ts->counters.clear();
    ts->reals.clear();
    hsize_t idx = 0;
    if (grp.id < 0 || H5Aiterate2(grp, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr, ts) < 0)
      throw Error(kExitCheckpoint, str(path, ": unreadable /state attributes"));
  }
}

std::string describe_network_file(const std::string& path) {
  std::string fmt, options, stage;
  int64_t step = 0, seed = 0;
  Architecture arch;
  {
    H5Id file = open_network_file(path, &fmt);
    arch = arch_of(file, path);
    read_attr_str(file, "options", &options);
    read_attr_str(file, "stage", &stage);
    read_attr_i64(file, "step", &step);
    read_attr_i64(file, "seed", &seed);
  }
  const NetworkOptions opt = NetworkOptions::from_string(options, path + " (options attribute)");
  auto be = make_backend(Device::CPU, 1);
  Network net(arch, *be, static_cast<uint64_t>(seed), opt);
  TrainState ts;
  const bool ckpt = fmt == kFormatCkpt;
  load_network_file(path, net, ckpt ? &ts : nullptr);  // verifies every dataset's checksum

  const SearchSpace& sp = arch.space();
  std::ostringstream o;
  o << path << ": " << fmt << "\n"
    << "stage: " << stage << ", step " << step << ", seed " << seed << "\n"
    << "architecture: " << arch.live_ops() << " live ops in " << arch.blocks().size() << " normal blocks (";
  const std::vector<int64_t> per = arch.survivors_per_type();
  for (size_t j = 0; j < per.size(); ++j) o << (j ? ", " : "") << op_name(sp.ops[j]) << " " << per[j];
  int empty = 0;
  for (const ArchBlock& b : arch.blocks()) empty += b.empty;
  o << "), " << empty << " reduced to their shortcut; source " << (arch.source.empty() ? "-" : arch.source) << "\n"
    << "width: stem " << sp.stem_channels << ", stages";
  for (int w : sp.widths) o << " " << w;
  o << "\n"
    << "MACs: " << net.macs() / 1e6 << " M, parameters: " << net.params_count() / 1e6 << " M";
  if (net.aux_params_count() > 0) o << " (+ " << net.aux_params_count() / 1e6 << " M in the aux head)";
  o << "\noptions: " << options << "\n";
  if (ckpt) {
    o << "position:";
    for (const auto& kv : ts.counters) o << " " << kv.first << "=" << kv.second;
    o << "\n";
  }
  return o.str();
}

}  // namespace dsonas
