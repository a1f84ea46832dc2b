// h5_common.hpp — private to src/io: the HDF5 C API helpers that model_file.cpp
// and network_file.cpp share (on top of h5_util.hpp: float attributes, one-chunk Fletcher-32
// float datasets, the training-state attribute walk).  Each file keeps its own
// dataset reader: a model file checks element counts, a network file shapes.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/tensor.hpp"
#include "dsonas/io/model_file.hpp"  // TrainState
#include "h5_util.hpp"               // H5Id, string / int64 attributes

#define HDF5_CHECK(call, what)                                            \
  do {                                                                    \
    if ((call) < 0) ::dsonas::fail_lib("HDF5", what, __FILE__, __LINE__); \
  } while (0)

namespace dsonas {
namespace h5 {

inline void silence_hdf5() {
  static bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

inline void write_attr_f64(hid_t obj, const char* name, double v) {
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id a(H5Acreate2(obj, name, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (a.id < 0) fail_lib("HDF5", str("create attribute ", name), __FILE__, __LINE__);
  HDF5_CHECK(H5Awrite(a, H5T_NATIVE_DOUBLE, &v), str("write attribute ", name));
}

/// Every attribute of a group: integers into counters, floats into reals.
inline herr_t collect_attr(hid_t loc, const char* name, const H5A_info_t*, void* op) {
  auto* ts = static_cast<TrainState*>(op);
  H5Id a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  if (!a.ok() || !attr_is_single(a)) return -1;
  H5Id type(H5Aget_type(a), H5Tclose);
  if (!type.ok()) return -1;
  const H5T_class_t cls = H5Tget_class(type);
  if (cls != H5T_INTEGER && cls != H5T_FLOAT) return -1;
  if (cls == H5T_INTEGER) {
    int64_t v = 0;
    if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0) return -1;
    ts->counters[name] = v;
  } else {
    double v = 0;
    if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) return -1;
    ts->reals[name] = v;
  }
  return 0;
}

inline void write_dataset(hid_t file, hid_t lcpl, const std::string& name, const Shape& shape, const float* data) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  if (dims.empty()) dims.push_back(1);
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  // one chunk per dataset, so that the Fletcher32 checksum covers all of it
  H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  HDF5_CHECK(H5Pset_chunk(dcpl, static_cast<int>(dims.size()), dims.data()), str("chunk ", name));
  HDF5_CHECK(H5Pset_fletcher32(dcpl), str("fletcher32 ", name));
  // no modification times: the same contents give the same bytes (and seal)
  HDF5_CHECK(H5Pset_obj_track_times(dcpl, false), str("track times ", name));
  H5Id ds(H5Dcreate2(file, name.c_str(), H5T_IEEE_F32LE, space, lcpl, dcpl, H5P_DEFAULT), H5Dclose);
  if (ds.id < 0) fail_lib("HDF5", str("create dataset ", name), __FILE__, __LINE__);
  HDF5_CHECK(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), str("write ", name));
}

/// Before H5Dread of a float dataset written by write_dataset: refuses (exit 3, naming
/// the dataset) an element type other than 4-byte float and a storage or chunk larger
/// than `numel` floats could need.  libhdf5 sizes its read and conversion buffers from
/// these fields, so a damaged file would otherwise make it allocate gigabytes (found by
/// fuzzing behind the seal).
inline void check_float_dataset(hid_t ds, int64_t numel, const std::string& path, const std::string& name) {
  auto bad = [&](const std::string& what) { return Error(kExitCheckpoint, str(path, ": dataset ", name, " ", what)); };
  H5Id type(H5Dget_type(ds), H5Tclose);
  if (!type.ok() || H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 4) throw bad("is not 4-byte floats");
  const hsize_t want = static_cast<hsize_t>(numel) * 4;
  if (H5Dget_storage_size(ds) > want + 64)
    throw bad(str("stores ", H5Dget_storage_size(ds), " bytes, more than ", numel, " floats"));
  H5Id dcpl(H5Dget_create_plist(ds), H5Pclose);
  if (!dcpl.ok()) throw bad("has no readable creation properties");
  if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
    hsize_t chunk[H5S_MAX_RANK];
    const int rank = H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk);
    hsize_t elems = 1;
    for (int i = 0; i < rank && elems <= static_cast<hsize_t>(numel); ++i) elems *= chunk[i];
    if (rank < 1 || elems > static_cast<hsize_t>(numel)) throw bad("has a chunk larger than the dataset");
  }
}

inline std::vector<float> to_host(Backend& be, const Tensor& t) {
  std::vector<float> h(static_cast<size_t>(t.numel()));
  be.download(t, h.data());
  return h;
}

}  // namespace h5
}  // namespace dsonas
