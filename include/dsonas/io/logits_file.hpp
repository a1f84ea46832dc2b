// logits_file.hpp — `dsonas eval --logits FILE`: the first K images of the evaluated
// set as the network received them and the logits dsonas computed for them, so that
// another runtime (an exported ONNX or TorchScript model, tests/e2e/export.sh) can be
// compared with dsonas on exactly the same inputs.
//
// HDF5, sealed and written atomically like every dsonas file (docs/checkpoint-format.md).
// Root attributes: `format` ("dsonas-logits"), `format_version` (1), `dsonas_version`,
// `source` (the network file), `dataset`, `data` (test or train), `mean`, `std` (JSON
// arrays, per channel, [0, 1] scale).  Datasets (float32 unless noted):
//   /input            [K, C, H, W]  pixel values / 255, the evaluation preprocessing
//                                   without its normalisation (an exported model's input)
//   /input_normalised [K, C, H, W]  what dsonas's network received: (input − mean) / std
//   /logits           [K, classes]  dsonas's logits (inference mode, running BN statistics)
//   /labels           int32 [K]
//   /index            int32 [K]     the images' positions in the set (0 … K−1)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsonas {

struct LogitsRecord {
  std::string source, dataset, data;
  std::vector<float> mean, std;  // per channel, [0, 1] scale
  int n = 0, c = 0, h = 0, w = 0, classes = 0;
  std::vector<float> input, input_normalised, logits;
  std::vector<int32_t> labels, index;
};

/// Writes the file (temporary name, fsync, rename); exit 1 with the errno text on error.
void save_logits_file(const std::string& path, const LogitsRecord& r);

}  // namespace dsonas
