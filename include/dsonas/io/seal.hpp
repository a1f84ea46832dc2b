// seal.hpp — the whole-file checksum ("seal") of the HDF5 files dsonas writes
// (model files and checkpoints, network files, the λ trajectory): what `inspect`
// and `validate` tell users.  The format and what it protects: src/io/h5_seal.hpp
// and docs/checkpoint-format.md.
#pragma once
#include <string>

namespace dsonas {

/// One line for `inspect`: "seal: CRC-32 <hex> over <n> bytes, ok", or "seal: none
/// (…)" for a file written before seals existed.  A damaged file is exit 3 naming it.
std::string describe_seal(const std::string& path);

/// The HDF5 library this process runs with ("1.10.8", H5get_libversion).  For dsonas
/// --version (run/version_report.hpp).
std::string hdf5_library_version();

}  // namespace dsonas
