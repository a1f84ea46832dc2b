// atomic_file.hpp — write a whole file so that readers see the old or the new
// version, never a partial one, and a failed write leaves the old one alone.
//
// HDF5 files (checkpoints, model files, trajectories) are built in memory with
// HDF5's core driver and handed here as one byte image: HDF5 itself never
// touches the disk, so a full disk or an I/O error surfaces here, as an errno,
// instead of inside the HDF5 library (whose close-at-exit then crashed after a
// failed flush).
#pragma once
#include <cstddef>
#include <functional>
#include <string>

namespace dsonas {

/// path.tmp ← bytes; fsync; rename to path; fsync the folder.  `phase` (may be
/// empty) is called with "after-data" (written, not fsynced) and
/// "before-rename" (fsynced, not renamed) — fault-injection points for tests.
/// On any error the temporary file is removed, the destination is untouched and
/// Error(exit 1) says "write PATH: <strerror>".
void write_file_atomically(const std::string& path, const void* bytes, size_t n,
                           const std::function<void(const char*)>& phase = {});

/// fsync a file or a folder; Error(exit 1) with the errno text on failure.
void fsync_path(const std::string& path, bool dir);

}  // namespace dsonas
