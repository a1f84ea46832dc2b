// trajectory.cpp — the λ trajectory file (see trajectory.hpp).  HDF5 C API.
#include "dsonas/io/trajectory.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "dsonas/core/error.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "dsonas/model/supergraph.hpp"
#include "h5_util.hpp"

namespace dsonas {
namespace {

using Id = h5::H5Id;

void check(herr_t r, const std::string& what) {
  if (r < 0) fail_lib("HDF5", what, __FILE__, __LINE__);
}

/// An extendable dataset [n, width] (width 0: 1-D [n]) of `ftype`, written from `mem`.
void write_table(hid_t file, const char* name, hid_t ftype, hid_t mtype, hsize_t n, hsize_t width,
                 const void* data) {
  const int rank = width ? 2 : 1;
  hsize_t dims[2] = {n, width}, maxd[2] = {H5S_UNLIMITED, width};
  hsize_t chunk[2] = {256, width ? width : 1};
  Id space{H5Screate_simple(rank, dims, maxd), H5Sclose};
  Id dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  check(H5Pset_chunk(dcpl, rank, chunk), str("chunk ", name));
  check(H5Pset_fletcher32(dcpl), str("fletcher32 ", name));
  Id lcpl{H5Pcreate(H5P_LINK_CREATE), H5Pclose};
  check(H5Pset_create_intermediate_group(lcpl, 1), "intermediate groups");
  Id ds{H5Dcreate2(file, name, ftype, space, lcpl, dcpl, H5P_DEFAULT), H5Dclose};
  if (ds.id < 0) fail_lib("HDF5", str("create ", name), __FILE__, __LINE__);
  if (n) check(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), str("write ", name));
}

template <class T>
std::vector<T> read_table(hid_t file, const std::string& path, const std::string& name, hid_t mtype,
                          hsize_t* n, hsize_t width) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0)
    throw Error(kExitCheckpoint, str(path, ": missing dataset ", name));
  Id ds{H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose};
  Id space{H5Dget_space(ds), H5Sclose};
  hsize_t dims[2] = {0, 0};
  H5Sget_simple_extent_dims(space, dims, nullptr);
  if ((width && dims[1] != width)) throw Error(kExitCheckpoint, str(path, ": dataset ", name, " has width ", dims[1]));
  *n = dims[0];
  std::vector<T> v(static_cast<size_t>(dims[0] * (width ? width : 1)));
  if (!v.empty() && H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    throw Error(kExitCheckpoint, str(path, ": dataset ", name, " is unreadable (checksum mismatch or truncated file)"));
  return v;
}

}  // namespace

Trajectory::Trajectory(std::string path, std::string space_json, std::vector<LambdaGroup> groups)
    : path_(std::move(path)), space_(std::move(space_json)), groups_(std::move(groups)) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

Trajectory::~Trajectory() = default;

void Trajectory::append(TrajectoryRecord r) {
  // /step may jump at a world-size change; /images may not (unknown, -1, in older files)
  DSO_CHECK(recs_.empty() || r.images < 0 || recs_.back().images < 0 || r.images > recs_.back().images,
            "trajectory images must increase: ", r.images, " after ", recs_.back().images);
  recs_.push_back(std::move(r));
}

bool Trajectory::read_all(std::vector<TrajectoryRecord>* all) const {
  all->clear();
  if (::access(path_.c_str(), F_OK) != 0) return false;
  Id file{H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) throw Error(kExitCheckpoint, str(path_, ": not an HDF5 file or corrupt"));
  hsize_t n = 0, m = 0;
  auto step = read_table<int64_t>(file, path_, "step", H5T_NATIVE_INT64, &n, 0);
  auto loss = read_table<double>(file, path_, "loss", H5T_NATIVE_DOUBLE, &m, 0);
  auto acc = read_table<double>(file, path_, "acc", H5T_NATIVE_DOUBLE, &m, 0);
  auto macs = read_table<double>(file, path_, "live_macs", H5T_NATIVE_DOUBLE, &m, 0);
  auto zero = read_table<int64_t>(file, path_, "zero_lambda", H5T_NATIVE_INT64, &m, 0);
  auto edges = read_table<int64_t>(file, path_, "live_edges", H5T_NATIVE_INT64, &m, 0);
  // /images is absent from files written before it existed: unknown (-1)
  std::vector<int64_t> images(static_cast<size_t>(n), -1);
  if (H5Lexists(file, "images", H5P_DEFAULT) > 0) {
    images = read_table<int64_t>(file, path_, "images", H5T_NATIVE_INT64, &m, 0);
    if (m != n) throw Error(kExitCheckpoint, str(path_, ": images has ", m, " records, step has ", n));
  }
  size_t total = 0;
  for (const LambdaGroup& g : groups_) total = std::max(total, static_cast<size_t>(g.offset + g.size));
  std::vector<std::vector<float>> lam(static_cast<size_t>(n), std::vector<float>(total, 0.f));
  for (const LambdaGroup& g : groups_) {
    auto v = read_table<float>(file, path_, "lambda/" + g.name, H5T_NATIVE_FLOAT, &m, static_cast<hsize_t>(g.size));
    if (m != n) throw Error(kExitCheckpoint, str(path_, ": lambda/", g.name, " has ", m, " records, step has ", n));
    for (hsize_t r = 0; r < n; ++r)
      std::memcpy(lam[r].data() + g.offset, v.data() + r * g.size, sizeof(float) * static_cast<size_t>(g.size));
  }
  for (hsize_t r = 0; r < n; ++r) {
    TrajectoryRecord rec;
    rec.step = step[r];
    rec.images = images[r];
    rec.loss = loss[r];
    rec.acc = acc[r];
    rec.live_macs = macs[r];
    rec.zero_lambda = zero[r];
    rec.live_edges = edges[r];
    rec.lambda = std::move(lam[r]);
    all->push_back(std::move(rec));
  }
  return true;
}

void Trajectory::load(int64_t max_step) {
  std::vector<TrajectoryRecord> all;
  read_all(&all);
  recs_.clear();
  for (size_t r = 0; r < all.size() && all[r].step <= max_step; ++r) recs_.push_back(std::move(all[r]));
}

bool Trajectory::load_count(int64_t count) {
  std::vector<TrajectoryRecord> all;
  recs_.clear();
  if (!read_all(&all)) return false;
  DSO_CHECK(count >= 0, "trajectory record count ", count);
  if (static_cast<int64_t>(all.size()) < count)
    throw Error(kExitCheckpoint, str(path_, ": ", all.size(), " records, fewer than the ", count,
                                    " the checkpoint counts (traj_records)"));
  all.resize(static_cast<size_t>(count));
  recs_ = std::move(all);
  return true;
}

void Trajectory::save() const {
  std::vector<char> image;
  {
    // built in memory (core driver, no backing store); written by write_file_atomically
    Id fapl{H5Pcreate(H5P_FILE_ACCESS), H5Pclose};
    check(H5Pset_fapl_core(fapl, 1 << 20, 0), "core driver");
    Id file{H5Fcreate(path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose};
    if (file.id < 0) fail_lib("HDF5", str("create in-memory file for ", path_), __FILE__, __LINE__);
    auto attr = [&](const char* name, const std::string& v) {
      Id type{H5Tcopy(H5T_C_S1), H5Tclose};
      H5Tset_size(type, v.empty() ? 1 : v.size());
      Id sp{H5Screate(H5S_SCALAR), H5Sclose};
      Id a{H5Acreate2(file, name, type, sp, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
      check(H5Awrite(a, type, v.empty() ? "" : v.data()), str("attribute ", name));
    };
    attr("format", "dsonas-trajectory");
    {
      Id sp{H5Screate(H5S_SCALAR), H5Sclose};
      Id a{H5Acreate2(file, "format_version", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
      const int64_t one = 1;
      check(H5Awrite(a, H5T_NATIVE_INT64, &one), "attribute format_version");
    }
    attr("space", space_);
    const hsize_t n = recs_.size();
    std::vector<int64_t> step(n), images(n), zero(n), edges(n);
    std::vector<double> loss(n), acc(n), macs(n);
    for (hsize_t r = 0; r < n; ++r) {
      const TrajectoryRecord& x = recs_[r];
      step[r] = x.step; images[r] = x.images; zero[r] = x.zero_lambda; edges[r] = x.live_edges;
      loss[r] = x.loss; acc[r] = x.acc; macs[r] = x.live_macs;
    }
    write_table(file, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, step.data());
    write_table(file, "images", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, images.data());
    write_table(file, "loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, 0, loss.data());
    write_table(file, "acc", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, 0, acc.data());
    write_table(file, "live_macs", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, 0, macs.data());
    write_table(file, "zero_lambda", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, zero.data());
    write_table(file, "live_edges", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, edges.data());
    for (const LambdaGroup& g : groups_) {
      std::vector<float> v(static_cast<size_t>(n * g.size));
      for (hsize_t r = 0; r < n; ++r)
        std::memcpy(v.data() + r * g.size, recs_[r].lambda.data() + g.offset, sizeof(float) * static_cast<size_t>(g.size));
      write_table(file, ("lambda/" + g.name).c_str(), H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, n, static_cast<hsize_t>(g.size),
                  v.data());
    }
    check(H5Fflush(file, H5F_SCOPE_GLOBAL), "flush in-memory file");
    const ssize_t bytes = H5Fget_file_image(file, nullptr, 0);
    if (bytes <= 0) fail_lib("HDF5", "file image size", __FILE__, __LINE__);
    image.resize(static_cast<size_t>(bytes));
    if (H5Fget_file_image(file, image.data(), image.size()) != bytes) fail_lib("HDF5", "file image", __FILE__, __LINE__);
  }
  write_file_atomically(path_, image.data(), image.size());
}

}  // namespace dsonas
