// h5_util.hpp — private to src/: the smallest HDF5 C API helpers that every
// HDF5 user here shares (model/network files, the λ trajectory, ImageNet
// shards): an RAII id and scalar string / int64 attributes.  Readers return
// false where the attribute is absent or not of the expected class; writers
// fail with an HDF5 library error (exit 1) naming the attribute.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dsonas/core/error.hpp"

namespace dsonas {
namespace h5 {

/// RAII for an HDF5 id.
struct H5Id {
  hid_t id = -1;
  herr_t (*closer)(hid_t) = nullptr;
  H5Id(hid_t i, herr_t (*c)(hid_t)) : id(i), closer(c) {}
  ~H5Id() {
    if (id >= 0 && closer) closer(id);
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  H5Id(H5Id&& o) noexcept : id(o.id), closer(o.closer) { o.id = -1; }
  operator hid_t() const { return id; }
  bool ok() const { return id >= 0; }
  /// Gives up ownership: the caller closes the id.
  hid_t release() {
    const hid_t i = id;
    id = -1;
    return i;
  }
};

/// True if attribute `a` holds exactly one element (H5Aread writes every element
/// of its dataspace: a damaged file's [1000] attribute must not overrun a scalar).
inline bool attr_is_single(hid_t a) {
  H5Id space(H5Aget_space(a), H5Sclose);
  return space.ok() && H5Sget_simple_extent_npoints(space) == 1;
}

/// Longest string attribute read (the resolved configuration, the space and the
/// architecture JSON are far shorter): a damaged size field is not an allocation.
constexpr size_t kMaxAttrString = size_t(64) << 20;

inline bool read_attr_str(hid_t obj, const char* name, std::string* out) {
  if (H5Aexists(obj, name) <= 0) return false;
  H5Id a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!a.ok() || !attr_is_single(a)) return false;
  H5Id type(H5Aget_type(a), H5Tclose);
  if (!type.ok() || H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) != 0) return false;
  const size_t n = H5Tget_size(type);
  if (n == 0 || n > kMaxAttrString) return false;
  std::vector<char> buf(n + 1, '\0');
  H5Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!mem.ok() || H5Tset_size(mem, n) < 0 || H5Aread(a, mem, buf.data()) < 0) return false;
  *out = std::string(buf.data(), strnlen(buf.data(), n));
  return true;
}

inline bool read_attr_i64(hid_t obj, const char* name, int64_t* out) {
  if (H5Aexists(obj, name) <= 0) return false;
  H5Id a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!a.ok() || !attr_is_single(a)) return false;
  H5Id type(H5Aget_type(a), H5Tclose);
  if (!type.ok() || H5Tget_class(type) != H5T_INTEGER) return false;
  return H5Aread(a, H5T_NATIVE_INT64, out) >= 0;
}

inline void write_attr_str(hid_t obj, const char* name, const std::string& v) {
  H5Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  if (!type.ok() || H5Tset_size(type, v.empty() ? 1 : v.size()) < 0 || !space.ok())
    fail_lib("HDF5", str("write attribute ", name), __FILE__, __LINE__);
  H5Id a(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const std::string buf = v.empty() ? std::string(1, '\0') : v;
  if (!a.ok() || H5Awrite(a, type, buf.data()) < 0) fail_lib("HDF5", str("write attribute ", name), __FILE__, __LINE__);
}

inline void write_attr_i64(hid_t obj, const char* name, int64_t v) {
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id a(H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.ok() || H5Awrite(a, H5T_NATIVE_INT64, &v) < 0)
    fail_lib("HDF5", str("write attribute ", name), __FILE__, __LINE__);
}

}  // namespace h5
}  // namespace dsonas
