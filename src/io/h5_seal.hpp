// h5_seal.hpp — private to src/: the whole-file checksum ("seal") of the HDF5 files
// dsonas writes (model files and checkpoints, network files, the λ trajectory), and
// the one way they are opened for reading.
//
// Why: HDF5's own parser trusts the file's metadata; a damaged file (a flipped bit
// on a copy between clusters, a truncated transfer) can make libhdf5 read out of
// bounds or crash before any dsonas check runs.  Every file dsonas writes is built
// in memory and written whole, so the writer can record a CRC-32 of all of it:
//
//   bytes [0, 512)   the HDF5 user block (HDF5 skips it; h5py and h5dump open the
//                    file as usual), holding the seal, plain text then zeros:
//                        DSONAS-SEAL 1\n
//                        crc32 <8 lower-case hex digits>\n
//                        bytes <decimal length of the rest of the file>\n
//   bytes [512, end) the HDF5 file proper; the CRC-32 (zlib's, the same as
//                    Python's zlib.crc32) is over exactly these bytes.
//
// open_sealed() reads the whole file into memory, checks the seal, and only then
// hands the bytes to libhdf5 (core driver, read-only): a file whose bytes differ in
// any way from what dsonas wrote is refused with exit 3 naming it, before HDF5 parses
// anything.  What it does not protect: a file crafted on purpose with a valid seal
// (the CRC is not a signature), and files written before seals existed (they carry
// no user block and are opened unchecked, as before; `dsonas inspect` says "no seal").
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "h5_util.hpp"

namespace dsonas {
namespace h5 {

constexpr size_t kSealBytes = 512;

/// An HDF5 file built in memory (core driver, no backing store) with the user block
/// the seal lives in; the writers fill it, take its sealed image and write that with
/// write_file_atomically().
class MemoryFile {
 public:
  /// `name` only names the file in messages (nothing is written to it).
  explicit MemoryFile(const std::string& name);
  hid_t id() const { return file_.id; }
  /// Flushes and returns the whole file, sealed.
  std::vector<char> sealed_image();

 private:
  std::string name_;
  H5Id file_;
};

/// Writes the seal of image[kSealBytes, end) into image[0, kSealBytes) (the user
/// block's place in front of the HDF5 image).
void seal_image(std::vector<char>& image);

struct SealInfo {
  bool sealed = false;  // false: a file written before seals existed (not checked)
  uint32_t crc32 = 0;
  uint64_t bytes = 0;
};

/// Checks the seal of a file's bytes.  Exit 3 naming `name` if the bytes carry a
/// seal that does not match them (or a malformed one); *info says what was found.
void check_seal(const std::vector<char>& bytes, const std::string& name, SealInfo* info);

/// Opens `path` read-only after checking its seal: the whole file is read into
/// memory and opened from there.  Exit 3 naming the file when it is missing,
/// unreadable, damaged (seal mismatch) or not HDF5.
H5Id open_sealed(const std::string& path, SealInfo* info = nullptr);
/// The same for bytes already in memory (`name` for messages); used by the fuzz
/// harnesses, which replay the very path the readers take.
H5Id open_sealed_image(std::vector<char> bytes, const std::string& name, SealInfo* info = nullptr);

}  // namespace h5
}  // namespace dsonas
