// cifar.hpp — the CIFAR-10 binary reader and the CIFAR-10 augmentation presets
// (docs/method.md §8.1).
//
// Format (the "binary version" from the CIFAR site, cifar-10-batches-bin/):
// data_batch_1.bin … data_batch_5.bin (train, 10 000 records each) and
// test_batch.bin (10 000).  A record is 3 073 bytes: one label byte (0–9), then
// 1 024 red, 1 024 green, 1 024 blue bytes, each plane row-major 32×32 — the
// image is already CHW, so records are copied straight into ImageSet::pixels.
//
// Checks (each a one-line fail_usage(), exit 2, "data: PATH (ROLE): what";
// ROLE is "CIFAR-10 train batch K" or "CIFAR-10 test batch"):
//   missing / unreadable file (with a download hint: dsonas does not ship
//   CIFAR-10) · a directory where a file is expected · empty file · size not a
//   multiple of 3 073 (expected vs actual bytes, whole records) · short read ·
//   label > 9 (record index within the file, value).
// Any positive number of records per file is accepted (the real files hold
// 10 000); the counts are reported in ImageSet::source.
//
// The data set is not shipped with dsonas: the user downloads it and points
// data.dir at the cifar-10-batches-bin directory.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsonas/data/augment.hpp"
#include "dsonas/data/dataset.hpp"

namespace dsonas {

constexpr int kCifarSide = 32;     ///< H = W
constexpr int kCifarChannels = 3;  ///< RGB
constexpr int kCifarClasses = 10;
constexpr size_t kCifarImageBytes = size_t(kCifarChannels) * 32 * 32;  ///< 3 072
constexpr size_t kCifarRecordBytes = 1 + kCifarImageBytes;             ///< 3 073
constexpr int kCifarTrainBatches = 5;
constexpr int kCifarRecordsPerFile = 10000;  ///< in the real files

/// train = data_batch_1..5.bin in order (50 000 images), else test_batch.bin.
/// classes = 10, c = 3, h = w = 32, pixels NCHW uint8.
ImageSet load_cifar10(const std::string& dir, bool train);

/// The files load_cifar10(dir, train) reads, in order (full paths).
std::vector<std::string> cifar10_files(const std::string& dir, bool train);

/// Checks one CIFAR-10 .bin file completely (the load_cifar10 checks: size a
/// whole number of records, every label in 0..9) without keeping the data;
/// returns its record count.  `role` as in the messages ("CIFAR-10 train batch 2").
int64_t check_cifar10_file(const std::string& path, const std::string& role);

/// §8.1 search/training augmentation: pad 4 with 127 (0..255 scale, before
/// normalisation) + random 32×32 crop of 40×40, flip p = 0.5, CIFAR mean/std;
/// cutout = true adds the 16×16 cutout (retraining only).
Augment cifar10_train_augment(bool cutout);
/// §8.1 val/test: normalisation only.
Augment cifar10_eval_augment();

}  // namespace dsonas
