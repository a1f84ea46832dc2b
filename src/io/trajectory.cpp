// trajectory.cpp — the λ trajectory file (see trajectory.hpp).  HDF5 C API.
#include "dsonas/io/trajectory.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "dsonas/core/error.hpp"
#include "dsonas/core/version.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "dsonas/model/supergraph.hpp"
#include "h5_seal.hpp"
#include "h5_util.hpp"

namespace dsonas {
namespace {

using Id = h5::H5Id;

void check(herr_t r, const std::string& what) {
  if (r < 0) fail_lib("HDF5", what, __FILE__, __LINE__);
}

/// An extendable dataset [n, width] (width 0: 1-D [n]) of `ftype`, written from `mem`.
void write_table(hid_t file, const char* name, hid_t ftype, hid_t mtype, hsize_t n, hsize_t width, const void* data) {
  const int rank = width ? 2 : 1;
  hsize_t dims[2] = {n, width}, maxd[2] = {H5S_UNLIMITED, width};
  hsize_t chunk[2] = {256, width ? width : 1};
  Id space{H5Screate_simple(rank, dims, maxd), H5Sclose};
  Id dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  check(H5Pset_chunk(dcpl, rank, chunk), str("chunk ", name));
  check(H5Pset_fletcher32(dcpl), str("fletcher32 ", name));
  // no modification times: the same records give the same bytes (and seal) whenever written
  check(H5Pset_obj_track_times(dcpl, false), str("track times ", name));
  Id lcpl{H5Pcreate(H5P_LINK_CREATE), H5Pclose};
  check(H5Pset_create_intermediate_group(lcpl, 1), "intermediate groups");
  Id ds{H5Dcreate2(file, name, ftype, space, lcpl, dcpl, H5P_DEFAULT), H5Dclose};
  if (ds.id < 0) fail_lib("HDF5", str("create ", name), __FILE__, __LINE__);
  if (n) check(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), str("write ", name));
}

/// Reads the extendable dataset `name` ([n] or [n, width]) into memory.  Every
/// HDF5 call is checked: a dataset that is missing, cannot be opened, has another
/// rank, width or element type, or fails its Fletcher-32 check is exit 3 naming it.
template <class T>
std::vector<T> read_table(hid_t file, const std::string& path, const std::string& name, hid_t mtype, hsize_t* n,
                          hsize_t width) {
  auto bad = [&](const std::string& what) { return Error(kExitCheckpoint, str(path, ": dataset /", name, " ", what)); };
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0)
    throw Error(kExitCheckpoint, str(path, ": missing dataset /", name));
  Id ds{H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose};
  if (!ds.ok()) throw bad("cannot be opened (the file is damaged)");
  Id space{H5Dget_space(ds), H5Sclose};
  Id type{H5Dget_type(ds), H5Tclose};
  const int rank = space.ok() ? H5Sget_simple_extent_ndims(space) : -1;
  const int want_rank = width ? 2 : 1;
  if (rank != want_rank) throw bad(str("has rank ", rank, ", expected ", want_rank));
  hsize_t dims[2] = {0, 0};
  if (H5Sget_simple_extent_dims(space, dims, nullptr) != rank) throw bad("has an unreadable shape");
  if (width && dims[1] != width) throw bad(str("has width ", dims[1], ", expected ", width));
  const H5T_class_t want_class = H5Tget_class(mtype);
  if (!type.ok() || H5Tget_class(type) != want_class)
    throw bad(want_class == H5T_FLOAT ? "is not a floating-point dataset" : "is not an integer dataset");
  if (H5Tget_size(type) != sizeof(T)) throw bad(str("has ", H5Tget_size(type), "-byte elements, expected ", sizeof(T)));
  {  // libhdf5 sizes its chunk buffers from the chunk dimensions: a damaged one must not be huge
    Id dcpl{H5Dget_create_plist(ds), H5Pclose};
    hsize_t chunk[2] = {0, 0};
    if (!dcpl.ok() || H5Pget_layout(dcpl) != H5D_CHUNKED || H5Pget_chunk(dcpl, 2, chunk) != rank || chunk[0] > 4096 ||
        (width && chunk[1] != width))
      throw bad("has a layout dsonas does not write (damaged file)");
  }
  // Every chunk of a trajectory dataset is written, so its records fit in the storage
  // the file gives it: a damaged extent must not become a huge allocation.
  const hsize_t elems = dims[0] * (width ? width : 1);
  if (width && elems / width != dims[0]) throw bad(str("claims ", dims[0], " records"));
  if (elems > H5Dget_storage_size(ds) / sizeof(T))
    throw bad(str("claims ", dims[0], " records but stores ", H5Dget_storage_size(ds), " bytes (the file is damaged)"));
  *n = dims[0];
  std::vector<T> v(static_cast<size_t>(dims[0] * (width ? width : 1)));
  if (!v.empty() && H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    throw bad("is unreadable (checksum mismatch or truncated file)");
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
  Id file = h5::open_sealed(path_);
  hsize_t n = 0;
  auto step = read_table<int64_t>(file, path_, "step", H5T_NATIVE_INT64, &n, 0);
  // every per-record dataset has /step's record count
  auto column = [&](const std::string& name, hid_t mtype, hsize_t width, auto tag) {
    hsize_t m = 0;
    auto v = read_table<decltype(tag)>(file, path_, name, mtype, &m, width);
    if (m != n) throw Error(kExitCheckpoint, str(path_, ": dataset /", name, " has ", m, " records, /step has ", n));
    return v;
  };
  auto loss = column("loss", H5T_NATIVE_DOUBLE, 0, double());
  auto acc = column("acc", H5T_NATIVE_DOUBLE, 0, double());
  auto macs = column("live_macs", H5T_NATIVE_DOUBLE, 0, double());
  auto zero = column("zero_lambda", H5T_NATIVE_INT64, 0, int64_t());
  auto edges = column("live_edges", H5T_NATIVE_INT64, 0, int64_t());
  // /images is absent from files written before it existed: unknown (-1)
  std::vector<int64_t> images(static_cast<size_t>(n), -1);
  if (H5Lexists(file, "images", H5P_DEFAULT) > 0) images = column("images", H5T_NATIVE_INT64, 0, int64_t());
  // /revivals exists only for the reference pruning schedule: not recorded (-1) otherwise
  std::vector<int64_t> revivals(static_cast<size_t>(n), -1);
  if (H5Lexists(file, "revivals", H5P_DEFAULT) > 0) revivals = column("revivals", H5T_NATIVE_INT64, 0, int64_t());
  size_t total = 0;
  for (const LambdaGroup& g : groups_) total = std::max(total, static_cast<size_t>(g.offset + g.size));
  std::vector<std::vector<float>> lam(static_cast<size_t>(n), std::vector<float>(total, 0.f));
  for (const LambdaGroup& g : groups_) {
    auto v = column("lambda/" + g.name, H5T_NATIVE_FLOAT, static_cast<hsize_t>(g.size), float());
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
    rec.revivals = revivals[r];
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
    h5::MemoryFile mf(path_);  // built in memory, sealed, written by write_file_atomically
    const hid_t file = mf.id();
    auto attr = [&](const char* name, const std::string& v) {
      Id type{H5Tcopy(H5T_C_S1), H5Tclose};
      H5Tset_size(type, v.empty() ? 1 : v.size());
      Id sp{H5Screate(H5S_SCALAR), H5Sclose};
      Id a{H5Acreate2(file, name, type, sp, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
      check(H5Awrite(a, type, v.empty() ? "" : v.data()), str("attribute ", name));
    };
    attr("format", "dsonas-trajectory");
    attr("dsonas_version", version_text());
    {
      Id sp{H5Screate(H5S_SCALAR), H5Sclose};
      Id a{H5Acreate2(file, "format_version", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
      const int64_t one = 1;
      check(H5Awrite(a, H5T_NATIVE_INT64, &one), "attribute format_version");
    }
    attr("space", space_);
    const hsize_t n = recs_.size();
    std::vector<int64_t> step(n), images(n), zero(n), edges(n), revivals(n);
    bool with_revivals = false;
    std::vector<double> loss(n), acc(n), macs(n);
    for (hsize_t r = 0; r < n; ++r) {
      const TrajectoryRecord& x = recs_[r];
      step[r] = x.step;
      images[r] = x.images;
      zero[r] = x.zero_lambda;
      edges[r] = x.live_edges;
      revivals[r] = x.revivals;
      with_revivals = with_revivals || x.revivals >= 0;
      loss[r] = x.loss;
      acc[r] = x.acc;
      macs[r] = x.live_macs;
    }
    write_table(file, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, step.data());
    write_table(file, "images", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, images.data());
    write_table(file, "loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, 0, loss.data());
    write_table(file, "acc", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, 0, acc.data());
    write_table(file, "live_macs", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, 0, macs.data());
    write_table(file, "zero_lambda", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, zero.data());
    write_table(file, "live_edges", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, edges.data());
    if (with_revivals) write_table(file, "revivals", H5T_STD_I64LE, H5T_NATIVE_INT64, n, 0, revivals.data());
    for (const LambdaGroup& g : groups_) {
      std::vector<float> v(static_cast<size_t>(n * g.size));
      for (hsize_t r = 0; r < n; ++r)
        std::memcpy(v.data() + r * g.size, recs_[r].lambda.data() + g.offset,
                    sizeof(float) * static_cast<size_t>(g.size));
      write_table(file, ("lambda/" + g.name).c_str(), H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, n, static_cast<hsize_t>(g.size),
                  v.data());
    }
    image = mf.sealed_image();
  }
  write_file_atomically(path_, image.data(), image.size());
}

}  // namespace dsonas
