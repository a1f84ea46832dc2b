// imagenet_loader.hpp — ImageNet batches from HDF5 shards: §7.2/§8.2
// augmentation, a pool of decoding threads, a bounded prefetch queue.
//
// Augmentation (docs/method.md §7.2, §8.2; "fb.resnet" style):
//  * training (random_crop = true): RandomSizedCrop as in fb.resnet.torch —
//    up to 10 attempts: target area = U(area_min, area_max)·W·H, aspect
//    ratio r = U(ratio_min, ratio_max), w = round(sqrt(area·r)),
//    h = round(sqrt(area/r)), swapped with p = 0.5; accepted when it fits,
//    at a uniform integer offset.  Fallback: the centred min(W,H) square
//    (= resize the shorter side to `size`, centre crop).  The crop is resized
//    to size×size with bicubic resampling (antialiased when shrinking); then
//    horizontal flip with p = 0.5, then colour jitter (fb.resnet ColorJitter:
//    brightness, contrast, saturation, each alpha = 1 + U(−v, v), applied in a
//    random order, on the 0..255 scale, no clamping; grey = 0.299R + 0.587G +
//    0.114B; contrast blends with the mean grey of the image); no PCA
//    lighting (§7.2: not enabled).
//  * evaluation (random_crop = false): resize the shorter side to
//    eval_resize, centre crop size×size, bicubic — done as one resampling of
//    the centred source square of side min(W,H)·size/eval_resize.
//  * normalisation: (v − mean_c)/std_c with §8.2's mean [123.68, 116.28,
//    103.53] and std [58.395, 57.12, 57.375] (RGB, 0..255 scale).
//  * Output: NCHW floats (3×size×size per image), like Batch everywhere.
//  * DCT scaling (dct_scaling): the JPEG is decoded at 1/2, 1/4 or 1/8 scale
//    when the crop still covers size×size pixels after it (jpeg.hpp): less
//    decoding and 4–64× fewer pixels to resample for large crops of large
//    images; a pure function of the sizes, so still deterministic.
//
// Random numbers: image j of global batch g on rank r draws from
//   Rng(seed, mix64(stream, tag, id)), id = g·B·world + r·B + j
// (the image's position in the epoch's global sample sequence), so an image's
// augmentation depends on (seed, stream, id) only: not on the thread count,
// the worker that decodes it, prefetching, restarts, or the world size (for a
// fixed global batch).
//
// Threads: `workers` decoding threads (0 = decode synchronously inside next()).
// Work is handed out image by image in batch order; a batch is complete when
// all its images are, and batches are returned strictly in order, so the
// result is identical for any worker count.  At most `depth` batches are in
// flight (being decoded or ready).  Worker threads call no HDF5 and no OpenMP
// (shard bytes come from ImageNetShards::read_jpeg, i.e. pread).  A bad image
// (CRC mismatch, undecodable) is an Error (exit 2) naming the shard, image
// and source path, rethrown by next() when that batch is reached.
//
// The ImageNetShards object is borrowed and must outlive its loaders.
#pragma once
#include <array>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dsonas/data/imagenet.hpp"
#include "dsonas/data/loader.hpp"
#include "dsonas/data/sampler.hpp"

namespace dsonas {

struct ImageNetAugment {
  bool random_crop = true;                              ///< training crop (true) or eval resize + centre crop (false)
  int size = 224;                                       ///< output side
  int eval_resize = 256;                                ///< eval: shorter side before the centre crop
  double area_min = 0.08, area_max = 1.0;               ///< fraction of the image area
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;  ///< aspect ratio w/h
  bool flip = true;                                     ///< training: horizontal flip p = 0.5
  float brightness = 0.4f, contrast = 0.4f, saturation = 0.4f;  ///< training jitter (0 = off)
  std::array<float, 3> mean{{123.68f, 116.28f, 103.53f}};       ///< RGB, 0..255 scale
  std::array<float, 3> std{{58.395f, 57.12f, 57.375f}};
  bool dct_scaling = true;

  /// fail_usage unless usable.
  void validate() const;
};

/// §7.2 training augmentation (random-resized crop 224, flip, jitter 0.4).
ImageNetAugment imagenet_train_augment();
/// §7.2 evaluation (shorter side 256, centre crop 224).
ImageNetAugment imagenet_eval_augment();

/// The random choices for one image of size w×h.
struct ImageNetDraw {
  double x0 = 0, y0 = 0, w = 0, h = 0;  ///< crop region in source pixels
  bool flip = false;
  std::array<float, 3> alpha{{1, 1, 1}};  ///< brightness, contrast, saturation factors
  std::array<int, 3> order{{0, 1, 2}};    ///< order the three are applied in
};
ImageNetDraw draw_imagenet(const ImageNetAugment& a, int w, int h, uint64_t seed, uint64_t stream, uint64_t id);

/// Decodes one JPEG and applies `a` (draws keyed by id) → 3×size×size floats.
/// false (and *err) when the JPEG cannot be decoded.
bool imagenet_image(const uint8_t* jpeg, size_t n, const ImageNetAugment& a, uint64_t seed, uint64_t stream,
                    uint64_t id, float* out, std::string* err);

/// Synchronous batch (e.g. BN re-estimation): image j gets id first_id + j.
/// OpenMP-parallel over images; the result does not depend on the thread count.
void make_imagenet_batch(const ImageNetShards& set, const std::vector<int>& idx, const ImageNetAugment& a,
                         uint64_t seed, uint64_t stream, uint64_t first_id, float* out_nchw, int32_t* labels);

namespace detail {
class ShardPipeline;
}

/// Training batches: the Loader contract (BatchSource) over ImageNet shards.
class ShardLoader : public BatchSource {
 public:
  /// sampler: indices into `set` (e.g. split_labels(set.labels(), ...).first),
  /// per-rank batch, rank, world.  workers: decoding threads (0 = in next()).
  /// depth: batches in flight (≥ 1).
  ShardLoader(const ImageNetShards& set, Sampler sampler, ImageNetAugment aug, uint64_t aug_seed, uint64_t aug_stream,
              int workers = 2, int depth = 2);
  ~ShardLoader() override;
  ShardLoader(const ShardLoader&) = delete;
  ShardLoader& operator=(const ShardLoader&) = delete;

  void next(Batch& b) override;
  SamplerState state() const override { return consumer_state_; }
  void restore(const SamplerState& s) override;
  int64_t steps_per_epoch() const override { return steps_per_epoch_; }
  int workers() const { return workers_; }

 private:
  void start();

  const ImageNetShards* set_;
  Sampler sampler_;  // used by the pipeline's planner (under its lock)
  ImageNetAugment aug_;
  uint64_t seed_, stream_;
  int workers_, depth_;
  int64_t steps_per_epoch_;
  SamplerState consumer_state_;
  std::unique_ptr<detail::ShardPipeline> pipe_;
};

/// Evaluation over a fixed index list in order (last batch may be smaller),
/// eval augmentation, decoded by `workers` threads ahead of the consumer.
class ShardEvalIterator : public EvalSource {
 public:
  ShardEvalIterator(const ImageNetShards& set, std::vector<int> indices, int batch, ImageNetAugment aug,
                    int workers = 2, int depth = 2);
  ~ShardEvalIterator() override;
  ShardEvalIterator(const ShardEvalIterator&) = delete;
  ShardEvalIterator& operator=(const ShardEvalIterator&) = delete;

  bool next(Batch& b) override;
  void reset() override;
  int64_t num_batches() const override;
  size_t size() const override { return indices_.size(); }

 private:
  void start();

  const ImageNetShards* set_;
  std::vector<int> indices_;
  int batch_;
  ImageNetAugment aug_;
  int workers_, depth_;
  size_t planned_ = 0;  // images handed to the pipeline
  std::unique_ptr<detail::ShardPipeline> pipe_;
};

}  // namespace dsonas
