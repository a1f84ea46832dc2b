// dataset.hpp — in-memory image sets, the Fashion-MNIST IDX reader, a
// learnable synthetic set for tests, and the W-half / λ-half split.
//
// Design: a whole data set lives in host memory as uint8 N×C×H×W plus int32
// labels (Fashion-MNIST train is 47 MB); augmentation and normalisation happen
// per batch (augment.hpp), so the raw set is shared read-only by every thread.
// Every reader checks its input completely at load time and reports problems as
// one-line fail_usage() errors (exit 2) naming the file and what is wrong
// (RELIABILITY.md §5 items 13–15): missing file + role, bad magic, count
// mismatch, truncated payload (expected vs actual bytes), corrupt gzip, label
// out of range (file, index, value, limit).
//
// The split (docs/method.md §4.4) is a pure function of (labels, fraction, seed):
// stratified by class, with cumulative rounding so that the first half has
// exactly round(fraction·n) samples and each class is within one sample of its
// share.  Both halves are returned sorted ascending (order is the Sampler's job).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dsonas {

/// A labelled image set in host memory.
struct ImageSet {
  int n = 0, c = 0, h = 0, w = 0;  ///< images, channels, rows, columns
  int classes = 0;                 ///< labels are in [0, classes)
  std::vector<uint8_t> pixels;     ///< n·c·h·w, NCHW
  std::vector<int32_t> labels;     ///< n
  std::string source;              ///< where it came from, for logs and messages

  size_t image_size() const { return static_cast<size_t>(c) * h * w; }
  const uint8_t* image(int i) const { return pixels.data() + static_cast<size_t>(i) * image_size(); }
  /// Number of images of each class (size = classes).
  std::vector<int64_t> class_histogram() const;
};

/// Reads an IDX image file (magic 0x00000803, N×rows×cols uint8) and an IDX
/// label file (magic 0x00000801, N uint8).  Files may be gzipped or raw.
/// `role` prefixes the roles in messages ("train" → "train images").
/// Any problem → fail_usage (exit 2) with a one-line message naming the file.
ImageSet load_idx(const std::string& images_path, const std::string& labels_path, int classes = 10,
                  const std::string& role = "");

/// Fashion-MNIST from `dir` (default layout of Debian's dataset-fashion-mnist:
/// {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz; the names without .gz are
/// accepted when the .gz ones are absent).  train=false → the t10k test set.
ImageSet load_fashion_mnist(const std::string& dir, bool train);

/// The {images, labels} files load_fashion_mnist(dir, train) reads.
struct IdxPair {
  std::string images, labels;
};
IdxPair fashion_mnist_files(const std::string& dir, bool train);

/// Debian's install location of Fashion-MNIST.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// A learnable synthetic set: class k draws oriented stripes (angle π·k/classes,
/// random phase) plus a class-placed bright blob, plus Gaussian noise, per
/// channel with a class-dependent contrast.  Labels are i % classes (balanced).
/// Pure function of the arguments; parallel over images.
ImageSet make_synthetic(int n, int c, int h, int w, int classes, uint64_t seed);

/// Two disjoint index lists covering 0..n-1 (docs/method.md §4.4: part 1 trains
/// the weights, part 2 the λ).
struct Split {
  std::vector<int> first;   ///< W-half
  std::vector<int> second;  ///< λ-half
};

/// Stratified random split; first gets round(first_fraction·n) samples.
/// first_fraction must be in (0, 1) and both halves non-empty (else fail_usage).
Split split_indices(const ImageSet& set, double first_fraction, uint64_t seed);
/// The same split from labels alone (for sets that are not in memory, e.g.
/// ImageNetShards::labels()); split_indices(set, f, s) ==
/// split_labels(set.labels, set.classes, f, s).
Split split_labels(const std::vector<int32_t>& labels, int classes, double first_fraction, uint64_t seed);

/// 0, 1, …, n-1.
std::vector<int> all_indices(int n);

/// Contiguous shard r of `world` of a list (sizes differ by at most one), for
/// data-parallel evaluation.
std::vector<int> shard_indices(const std::vector<int>& idx, int rank, int world);

}  // namespace dsonas
