// imagenet.hpp — ImageNet as HDF5 shards: the on-disk format, `pack`, the
// manifest, the random-access shard reader and the full-file validator.
//
// On-disk layout (format "dsonas-imagenet-shards", version 1), folder OUT:
//
//   OUT/manifest.json        written last, atomically: its presence means the
//                            pack finished.  JSON object:
//     format "dsonas-imagenet-shards", format_version 1, pack_id (16 hex
//     digits, a hash of the source listing and options: every shard carries
//     it, so shards of two packs cannot be mixed), source (ROOT), resize,
//     quality, classes (array of class-folder names; label = position),
//     splits: {"train": {images, shards: [{file, first, images, bytes,
//     crc32}]}, "val": {...}} (crc32 = CRC-32 of the whole shard file as 8
//     hex digits, zlib's crc32), skipped: [{path, reason}], warnings (count of
//     images kept despite a libjpeg warning).
//   OUT/<split>-NNNNN.h5     shard NNNNN (5 digits from 00000) of a split: an
//                            HDF5 file, written to <file>.tmp, fsynced and
//                            renamed (never visible half-written).
//     attributes: format "dsonas-imagenet-shard", format_version 1, split,
//       shard (index), images, classes, pack_id
//     /jpeg          uint8 [bytes]    the JPEG streams of its images,
//                                     concatenated; contiguous layout (no
//                                     chunks, no filters) so that readers can
//                                     pread() it without HDF5
//     /offsets       uint64 [n+1]     image i is jpeg[offsets[i], offsets[i+1])
//     /labels        int32 [n]        in [0, classes)
//     /crc32         uint32 [n]       CRC-32 of each image's JPEG bytes
//     /names         uint8 [..]       source paths relative to ROOT, concatenated
//                                     (contiguous, for messages)
//     /name_offsets  uint64 [n+1]
//   (/offsets, /labels, /crc32 and /name_offsets are chunked with HDF5's
//   Fletcher-32 filter.)  Objects carry no timestamps: the same source and
//   options give byte-identical shards whatever the thread count.
//
// Images: split S is ROOT/S/<class>/<file> with <file> ending in .jpg/.jpeg
// (any case); classes = the sorted (byte order, like Python's sorted()) folder
// names of ROOT/train; the images of a split are stored in (class, file name)
// order, each shard taking the next `shard_size` source files (minus skipped
// ones).  Every image is decoded once while packing.  With resize S > 0 an
// image whose shorter side exceeds S is decoded, resized (bicubic,
// antialiased) so that the shorter side is S, and re-encoded at `quality`;
// other images keep their original bytes (grey and CMYK JPEGs included: the
// loader converts them to RGB).
//
// Undecodable inputs (not a JPEG, corrupt header or data, empty) are SKIPPED
// with a warning line naming the file and the reason; the manifest lists them
// (path + reason).  An image that decodes with a libjpeg warning (e.g.
// "extraneous bytes before marker") is kept and counted.  strict=true makes
// either fatal (exit 2, naming the file).  Without strict, more undecodable
// images than the limit (PackOptions::max_corrupt…; default 0.1 % of the
// images listed, at least 10) is fatal too (exit 2, one line with the count,
// the limit and the first three files): a tree that is mostly garbage fails
// instead of giving a useless pack.  The check runs after every shard's images
// are decoded, before that shard is written, so it stops early.
//
// A pack that stops with an error (bad or too many corrupt images, a write
// error, ...) removes the shard files it wrote (and OUT if it created it):
// only a finished pack leaves files behind.  A killed pack leaves shards but no
// manifest; the next pack into the same OUT removes them.
//
// Shards are opened read-only without HDF5 file locking (they never change
// after packing), so file systems without flock() work as they are.
//
// Reading (ImageNetShards): the manifest and each shard's small datasets are
// read with HDF5 in the constructing thread; JPEG bytes are then read with
// pread() from a plain file descriptor, from any thread (no HDF5 call there,
// so HDF5 builds without thread safety work too), and each image's CRC-32 is
// checked before it is decoded.  Every problem is a one-line Error with exit
// code 2, "data: PATH (ImageNet SPLIT shard K): what".
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "dsonas/data/dataset.hpp"

namespace dsonas {

inline constexpr const char* kShardFormat = "dsonas-imagenet-shard";
inline constexpr const char* kManifestFormat = "dsonas-imagenet-shards";
inline constexpr int kShardFormatVersion = 1;
inline constexpr const char* kManifestName = "manifest.json";

/// "train-00003.h5"
std::string shard_file_name(const std::string& split, int index);

struct ShardEntry {
  std::string file;   ///< name inside OUT
  int64_t first = 0;  ///< index of its first image within the split
  int64_t images = 0;
  int64_t bytes = 0;   ///< file size
  uint32_t crc32 = 0;  ///< CRC-32 of the whole file
  /// The HDF5 metadata's checksum (packs since 2026-12-07; absent: -1): /jpeg is
  /// bytes [jpeg_offset, jpeg_offset + jpeg_bytes) of the file, and meta_crc32 the
  /// CRC-32 of every other byte — checked before HDF5 opens the shard, so that a
  /// damaged shard never reaches HDF5's parser; the JPEG bytes carry per-image CRCs.
  int64_t jpeg_offset = -1, jpeg_bytes = 0;
  uint32_t meta_crc32 = 0;
};

struct SplitEntry {
  std::string name;
  int64_t images = 0;
  std::vector<ShardEntry> shards;
};

struct SkippedImage {
  std::string path, reason;
};

struct Manifest {
  int format_version = kShardFormatVersion;
  std::string pack_id;
  std::string source;
  int resize = 0, quality = 0;
  std::vector<std::string> classes;
  std::vector<SplitEntry> splits;
  std::vector<SkippedImage> skipped;
  int64_t warnings = 0;

  /// nullptr if absent.
  const SplitEntry* split(const std::string& name) const;
  std::string to_json() const;
};

/// Reads and checks DIR/manifest.json (exit 2 naming the file and field on any
/// problem: missing — "the pack did not finish or DIR is not a pack output" —,
/// unreadable, not JSON, wrong format/version, inconsistent counts).
Manifest read_manifest(const std::string& dir);

/// CRC-32 (zlib) of a whole file; *size gets its size.  Error (exit 2) if unreadable.
uint32_t crc32_file(const std::string& path, uint64_t* size = nullptr);
/// CRC-32 of a buffer.
uint32_t crc32_bytes(const void* data, size_t n, uint32_t crc = 0);

// ---- reading ---------------------------------------------------------------------

struct ShardOpenOptions {
  /// Also recompute every shard's whole-file CRC-32 at open (reads all bytes;
  /// `dsonas validate` does this).  Off: sizes, structure, attributes, labels
  /// and offsets are checked at open, and each image's CRC when it is read.
  bool verify_files = false;
};

/// One split of a packed ImageNet folder, random access by sample index
/// (0 .. size()-1, in the pack's order).
class ImageNetShards {
 public:
  ImageNetShards() = default;
  /// Opens DIR (a pack output) for split "train" or "val".  Checks the
  /// manifest, every shard's size, HDF5 structure, attributes (format,
  /// version, split, index, image count, classes, pack_id vs the manifest),
  /// offsets (monotone, inside /jpeg) and labels (in range).  Exit 2 on any
  /// problem.
  ImageNetShards(const std::string& dir, const std::string& split, ShardOpenOptions opt = {});
  ~ImageNetShards();
  ImageNetShards(ImageNetShards&&) noexcept;
  ImageNetShards& operator=(ImageNetShards&&) noexcept;
  ImageNetShards(const ImageNetShards&) = delete;
  ImageNetShards& operator=(const ImageNetShards&) = delete;

  int size() const { return static_cast<int>(labels_.size()); }
  int classes() const { return static_cast<int>(manifest_.classes.size()); }
  const std::vector<std::string>& class_names() const { return manifest_.classes; }
  const std::vector<int32_t>& labels() const { return labels_; }
  int32_t label(int i) const { return labels_[static_cast<size_t>(i)]; }
  const Manifest& manifest() const { return manifest_; }
  const std::string& split() const { return split_; }
  const std::string& dir() const { return dir_; }
  /// "ImageNet train (DIR, N images in K shards)"
  const std::string& source() const { return source_; }

  /// The JPEG bytes of sample i, CRC-checked.  Thread-safe (pread).  Error
  /// (exit 2) naming the shard, the image and its source path on a short read
  /// or a CRC mismatch.
  void read_jpeg(int i, std::vector<uint8_t>& out) const;
  /// Source path of sample i relative to the pack's ROOT (read on demand).
  std::string name(int i) const;
  /// "data: DIR/train-00003.h5 (ImageNet train shard 3): image 17 (train/n0…/x.JPEG)"
  std::string where(int i) const;

 private:
  struct Shard;
  const Shard& shard_of(int i, int64_t* local) const;

  std::string dir_, split_, source_;
  Manifest manifest_;
  std::vector<int32_t> labels_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<int64_t> first_;  // first sample of each shard
};

// ---- packing ---------------------------------------------------------------------

struct PackOptions {
  std::string src;  ///< ROOT: ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG
  std::string out;  ///< OUT: must not exist or be empty (or hold only an unfinished pack's leftovers)
  std::vector<std::string> splits{"train", "val"};  ///< a missing ROOT/val is skipped with a note
  int resize = 0;                                   ///< > 0: shorter side of larger images reduced to this (re-encoded)
  int quality = 90;                                 ///< JPEG quality of re-encoded images
  int shard_size = 5000;                            ///< images per shard
  int threads = 0;                                  ///< decoding threads (0 = all cores)
  bool strict = false;  ///< an undecodable image (or a libjpeg warning) is fatal (exit 2) instead of skipped
  /// Undecodable (skipped) images allowed, over all splits, before the pack
  /// fails (exit 2): max_corrupt >= 0: that many; otherwise
  /// max_corrupt_percent >= 0: that percentage of the images listed, rounded
  /// down; otherwise (the default) 0.1 % of the images listed, at least 10.
  int64_t max_corrupt = -1;
  double max_corrupt_percent = -1;
  std::ostream* log = nullptr;  ///< progress and warning lines (nullptr = silent)
  /// Fault-injection hook for tests: called with "shard-after-data",
  /// "shard-before-rename" (file = the shard being written) and
  /// "before-manifest"; it may throw to simulate a crash at that point.
  std::function<void(const std::string& phase, const std::string& file)> hook;
};

/// The number of undecodable images `o` allows when `images` images are listed
/// (0 with strict).  fail_usage on a negative count or a percentage outside [0, 100].
int64_t pack_corrupt_limit(const PackOptions& o, int64_t images);

/// Packs; returns the manifest written.  Exit 2 for bad usage or input (with
/// the path), exit 1 for write errors (errno text).  Refuses an OUT that holds
/// anything but leftovers of an unfinished pack (shard files and their .tmp,
/// no manifest), which it removes first.
Manifest pack_imagenet(const PackOptions& opt);

// ---- validation ------------------------------------------------------------------

struct FileCheck {
  std::string path;  ///< the file checked
  std::string role;  ///< e.g. "ImageNet train shard 3"
  bool ok = true;
  std::string detail;  ///< ok: what was found; bad: the one-line error
};

/// Checks DIR completely: the manifest, then every shard of every split
/// (existence, size and whole-file CRC-32 vs the manifest, HDF5 structure,
/// attributes, offsets, labels in range, every image's CRC-32), `threads`
/// shards at a time (0 = all cores).  One entry per file, manifest first.
/// `required_splits` missing from the manifest are reported on the manifest line.
std::vector<FileCheck> validate_imagenet_dir(const std::string& dir, int threads,
                                             const std::vector<std::string>& required_splits = {"train", "val"});

}  // namespace dsonas
