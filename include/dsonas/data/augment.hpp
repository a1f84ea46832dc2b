// augment.hpp — per-image augmentation and batch assembly (uint8 → float NCHW).
//
// Design (docs/method.md §8.1):
//  per image: pad P px with a constant (0..255, before normalisation) → random
//  H×W crop out of the (H+2P)×(W+2P) canvas (offsets uniform in {0..2P}) →
//  horizontal flip with p = 0.5 → normalise (pixel/255 − mean_c)/std_c →
//  cutout: an S×S square, centre uniform over the image, rows
//  [cy−S/2, cy−S/2+S) × cols [cx−S/2, cx−S/2+S) clipped to the image, set to 0
//  (= the mean colour) in all channels.
//
// Random numbers: image i of a batch draws from
//   Rng(seed, stream, (batch_counter << 32) + (slot_offset + i) · kAugSlots)
// in a fixed order (dy, dx, flip, cy, cx) whether or not each option is on.
// The draws are thus independent of threads and of the other options, and with
// slot_offset = rank·B and batch_counter = global batch number, a sample gets
// the same augmentation whatever the world size.
#pragma once
#include <cstdint>
#include <vector>

#include "dsonas/data/dataset.hpp"

namespace dsonas {

struct Augment {
  int pad = 0;                       ///< P: pad each side, then random crop back to H×W (0 = off)
  int pad_value = 0;                 ///< pad pixel value on the 0..255 scale (CIFAR reference: 127)
  bool flip = false;                 ///< horizontal flip with p = 0.5
  int cutout = 0;                    ///< S: cutout square side (0 = off)
  std::vector<float> mean{0.2860f};  ///< per channel (size 1 = all channels), 0..1 scale
  std::vector<float> std{0.3530f};   ///< per channel (size 1 = all channels)

  /// fail_usage unless the settings are usable for `channels`-channel images.
  void validate(int channels) const;
};

/// Fashion-MNIST statistics, no augmentation (evaluation).
Augment fashion_mnist_eval_augment();
/// Fashion-MNIST search/training: pad 2 + crop, flip; no cutout.
Augment fashion_mnist_train_augment();

/// Random choices for one image.
struct AugDraw {
  int dy = 0, dx = 0;  ///< crop offset in the padded canvas, in [0, 2P]
  bool flip = false;
  int cy = 0, cx = 0;  ///< cutout centre, in [0,H) × [0,W)
};
constexpr uint64_t kAugSlots = 8;  ///< counter values reserved per image

/// The draws of image `slot` of batch `batch_counter`.
AugDraw draw_augment(const Augment& a, int h, int w, uint64_t seed, uint64_t stream, uint64_t batch_counter,
                     uint64_t slot);

/// Applies `a` with the choices `d` to one c×h×w uint8 image → c×h×w floats.
void augment_image(const uint8_t* src, int c, int h, int w, const Augment& a, const AugDraw& d, float* out);

/// Assembles a batch: out_nchw gets idx.size()·c·h·w floats, labels idx.size().
/// Parallel over images (OpenMP); the result does not depend on the thread count.
void make_batch(const ImageSet& set, const std::vector<int>& idx, const Augment& a, uint64_t seed, uint64_t stream,
                uint64_t batch_counter, float* out_nchw, int32_t* labels, uint64_t slot_offset = 0);

}  // namespace dsonas
