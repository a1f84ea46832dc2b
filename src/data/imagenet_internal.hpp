// imagenet_internal.hpp — helpers shared by imagenet_format.cpp and
// imagenet_pack.cpp (not a public header): HDF5 ids and attributes, a minimal
// JSON reader for the manifest, file helpers.  HDF5 is called only from the
// thread that opens or writes a shard.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../io/h5_util.hpp"  // H5Id, string / int64 attributes

namespace dsonas {
namespace imagenet_detail {

using h5::H5Id;
using h5::read_attr_i64;
using h5::read_attr_str;
using h5::write_attr_i64;
using h5::write_attr_str;

/// Turns off HDF5's automatic error printing for the calling thread.
void h5_quiet();

/// Whole file into memory; false + errno text on failure.
bool read_whole_file(const std::string& path, std::string* out, std::string* err);
/// pread exactly n bytes at off; false on a short read or error (*err says which).
bool pread_exact(int fd, void* buf, size_t n, uint64_t off, std::string* err);

}  // namespace imagenet_detail
}  // namespace dsonas
