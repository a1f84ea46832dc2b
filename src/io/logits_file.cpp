// logits_file.cpp — see logits_file.hpp.
#include "dsonas/io/logits_file.hpp"

#include <hdf5.h>

#include <cstdio>

#include "dsonas/core/error.hpp"
#include "dsonas/core/version.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "h5_common.hpp"
#include "h5_seal.hpp"

namespace dsonas {
using namespace h5;
namespace {

std::string json_floats(const std::vector<float>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    char b[32];
    std::snprintf(b, sizeof b, "%.9g", static_cast<double>(v[i]));
    s += (i ? ", " : "") + std::string(b);
  }
  return s + "]";
}

void write_i32(hid_t file, hid_t lcpl, const std::string& name, const std::vector<int32_t>& v) {
  const hsize_t dims[1] = {static_cast<hsize_t>(v.empty() ? 1 : v.size())};
  H5Id space(H5Screate_simple(1, dims, nullptr), H5Sclose);
  H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  HDF5_CHECK(H5Pset_chunk(dcpl, 1, dims), str("chunk ", name));
  HDF5_CHECK(H5Pset_fletcher32(dcpl), str("fletcher32 ", name));
  HDF5_CHECK(H5Pset_obj_track_times(dcpl, false), str("track times ", name));
  H5Id ds(H5Dcreate2(file, name.c_str(), H5T_STD_I32LE, space, lcpl, dcpl, H5P_DEFAULT), H5Dclose);
  if (ds.id < 0) fail_lib("HDF5", str("create dataset ", name), __FILE__, __LINE__);
  HDF5_CHECK(H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), str("write ", name));
}

}  // namespace

void save_logits_file(const std::string& path, const LogitsRecord& r) {
  DSO_CHECK(r.n >= 1 && r.input.size() == static_cast<size_t>(r.n) * r.c * r.h * r.w &&
                r.input_normalised.size() == r.input.size() &&
                r.logits.size() == static_cast<size_t>(r.n) * r.classes &&
                r.labels.size() == static_cast<size_t>(r.n) && r.index.size() == static_cast<size_t>(r.n),
            "logits record sizes");
  silence_hdf5();
  std::vector<char> image;
  {
    MemoryFile mf(path);
    const hid_t file = mf.id();
    H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    write_attr_str(file, "format", "dsonas-logits");
    write_attr_i64(file, "format_version", 1);
    write_attr_str(file, "dsonas_version", version_text());
    write_attr_str(file, "source", r.source);
    write_attr_str(file, "dataset", r.dataset);
    write_attr_str(file, "data", r.data);
    write_attr_str(file, "mean", json_floats(r.mean));
    write_attr_str(file, "std", json_floats(r.std));
    const Shape img = {r.n, r.c, r.h, r.w};
    write_dataset(file, lcpl, "input", img, r.input.data());
    write_dataset(file, lcpl, "input_normalised", img, r.input_normalised.data());
    write_dataset(file, lcpl, "logits", {r.n, r.classes}, r.logits.data());
    write_i32(file, lcpl, "labels", r.labels);
    write_i32(file, lcpl, "index", r.index);
    image = mf.sealed_image();
  }
  write_file_atomically(path, image.data(), image.size());
}

}  // namespace dsonas
