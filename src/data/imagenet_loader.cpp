// imagenet_loader.cpp — see imagenet_loader.hpp: the §7.2/§8.2 augmentation and
// the decoding pipeline behind ShardLoader and ShardEvalIterator.
//
// ShardPipeline: a ring of `depth` batch slots.  Batches are opened in order
// by whichever worker finds nothing else to do (the planner — the sampler or
// the eval list — runs under the pipeline lock), images are handed out one at
// a time in batch order, each worker writes only its image's part of the
// slot's buffer, and the consumer takes slot k once all its images are done.
// Buffers are recycled by swapping with the consumer's Batch.
#include <algorithm>
#include <climits>
#include <cmath>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/data/imagenet_loader.hpp"  // defines: ImageNetAugment, draw_imagenet, ShardLoader, ...
#include "dsonas/data/jpeg.hpp"

namespace dsonas {

namespace {
const uint64_t kAugTag = hash_name("data.imagenet.augment");
}

void ImageNetAugment::validate() const {
  if (size < 8 || size > 4096) fail_usage(str("data: ImageNet crop size must be in [8, 4096], got ", size));
  if (eval_resize < size)
    fail_usage(str("data: ImageNet eval resize ", eval_resize, " is smaller than the crop ", size));
  if (!(area_min > 0 && area_min <= area_max && area_max <= 1))
    fail_usage(str("data: ImageNet crop area range [", area_min, ", ", area_max, "] must satisfy 0 < min <= max <= 1"));
  if (!(ratio_min > 0 && ratio_min <= ratio_max))
    fail_usage(str("data: ImageNet aspect range [", ratio_min, ", ", ratio_max, "] must satisfy 0 < min <= max"));
  for (float v : {brightness, contrast, saturation})
    if (!(v >= 0 && v < 1)) fail_usage(str("data: ImageNet colour jitter must be in [0, 1), got ", v));
  for (float s : std)
    if (!(s > 0)) fail_usage(str("data: ImageNet normalisation std must be > 0, got ", s));
}

ImageNetAugment imagenet_train_augment() { return ImageNetAugment{}; }

ImageNetAugment imagenet_eval_augment() {
  ImageNetAugment a;
  a.random_crop = false;
  a.flip = false;
  a.brightness = a.contrast = a.saturation = 0;
  return a;
}

ImageNetDraw draw_imagenet(const ImageNetAugment& a, int w, int h, uint64_t seed, uint64_t stream, uint64_t id) {
  ImageNetDraw d;
  if (!a.random_crop) {
    const double side = std::min(w, h) * static_cast<double>(a.size) / a.eval_resize;
    d.w = d.h = side;
    d.x0 = (w - side) / 2;
    d.y0 = (h - side) / 2;
    return d;
  }
  Rng r(seed, mix64(stream, kAugTag, id));
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double area = (a.area_min + (a.area_max - a.area_min) * r.uniform_double()) * w * h;
    const double ratio = a.ratio_min + (a.ratio_max - a.ratio_min) * r.uniform_double();
    int cw = static_cast<int>(std::lround(std::sqrt(area * ratio)));
    int ch = static_cast<int>(std::lround(std::sqrt(area / ratio)));
    if (r.uniform_double() < 0.5) std::swap(cw, ch);
    if (cw >= 1 && ch >= 1 && cw <= w && ch <= h) {
      d.x0 = r.below(static_cast<uint32_t>(w - cw + 1));
      d.y0 = r.below(static_cast<uint32_t>(h - ch + 1));
      d.w = cw, d.h = ch;
      found = true;
    }
  }
  if (!found) {  // fb.resnet: Scale(size) + CenterCrop(size) = the centred square
    const int side = std::min(w, h);
    d.w = d.h = side;
    d.x0 = (w - side) / 2;
    d.y0 = (h - side) / 2;
  }
  d.flip = a.flip && r.uniform_double() < 0.5;
  for (int i = 2; i > 0; --i) std::swap(d.order[i], d.order[r.below(static_cast<uint32_t>(i + 1))]);
  const float var[3] = {a.brightness, a.contrast, a.saturation};
  for (int k = 0; k < 3; ++k) d.alpha[k] = 1.0f + var[k] * static_cast<float>(2 * r.uniform_double() - 1);
  return d;
}

namespace {

void color_jitter(float* x, size_t plane, const ImageNetDraw& d) {
  float* R = x;
  float* G = x + plane;
  float* B = x + 2 * plane;
  for (int t : d.order) {
    const float al = d.alpha[t];
    if (al == 1.0f) continue;
    if (t == 0) {  // brightness: blend with black
      for (size_t p = 0; p < 3 * plane; ++p) x[p] *= al;
    } else if (t == 1) {  // contrast: blend with the mean grey
      double s = 0;
      for (size_t p = 0; p < plane; ++p) s += 0.299 * R[p] + 0.587 * G[p] + 0.114 * B[p];
      const float m = static_cast<float>(s / static_cast<double>(plane)) * (1.0f - al);
      for (size_t p = 0; p < 3 * plane; ++p) x[p] = x[p] * al + m;
    } else {  // saturation: blend with the per-pixel grey
      for (size_t p = 0; p < plane; ++p) {
        const float g = (0.299f * R[p] + 0.587f * G[p] + 0.114f * B[p]) * (1.0f - al);
        R[p] = R[p] * al + g;
        G[p] = G[p] * al + g;
        B[p] = B[p] * al + g;
      }
    }
  }
}

}  // namespace

bool imagenet_image(const uint8_t* jpeg, size_t n, const ImageNetAugment& a, uint64_t seed, uint64_t stream,
                    uint64_t id, float* out, std::string* err) {
  JpegCodec& codec = thread_local_codec();
  JpegInfo info;
  if (!codec.header(jpeg, n, &info, err)) return false;
  const ImageNetDraw d = draw_imagenet(a, info.width, info.height, seed, stream, id);
  const int m = a.dct_scaling ? jpeg_scale_for(d.w, d.h, a.size, a.size) : 8;
  thread_local std::vector<uint8_t> rgb;
  thread_local std::vector<float> scratch;
  int sw = 0, sh = 0;
  std::string msg;
  if (codec.decode_rgb(jpeg, n, m, rgb, &sw, &sh, &msg) == JpegStatus::Error) {
    if (err) *err = msg;
    return false;
  }
  const double fx = static_cast<double>(sw) / info.width, fy = static_cast<double>(sh) / info.height;
  resample_rgb(rgb.data(), sw, sh, d.x0 * fx, d.y0 * fy, d.w * fx, d.h * fy, a.size, a.size, d.flip, out, scratch);
  const size_t plane = static_cast<size_t>(a.size) * a.size;
  if (a.random_crop) color_jitter(out, plane, d);
  for (int c = 0; c < 3; ++c) {
    const float mu = a.mean[c], inv = 1.0f / a.std[c];
    float* o = out + c * plane;
    for (size_t p = 0; p < plane; ++p) o[p] = (o[p] - mu) * inv;
  }
  return true;
}

namespace {

/// Image j of a batch (idx[j], id first_id + j) into out; Error (exit 2) naming the shard.
void load_one(const ImageNetShards& set, int index, const ImageNetAugment& a, uint64_t seed, uint64_t stream,
              uint64_t id, float* out) {
  thread_local std::vector<uint8_t> bytes;
  set.read_jpeg(index, bytes);
  std::string err;
  if (!imagenet_image(bytes.data(), bytes.size(), a, seed, stream, id, out, &err))
    fail_usage(str(set.where(index), ": cannot decode the JPEG: ", err));
}

}  // namespace

void make_imagenet_batch(const ImageNetShards& set, const std::vector<int>& idx, const ImageNetAugment& a,
                         uint64_t seed, uint64_t stream, uint64_t first_id, float* out_nchw, int32_t* labels) {
  a.validate();
  const int nb = static_cast<int>(idx.size());
  for (int i = 0; i < nb; ++i)
    if (idx[i] < 0 || idx[i] >= set.size())
      fail_usage(str("data: sample index ", idx[i], " is outside ", set.source()));
  const size_t img = 3 * static_cast<size_t>(a.size) * a.size;
  std::vector<std::exception_ptr> errs(static_cast<size_t>(nb));
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < nb; ++i) {
    try {
      load_one(set, idx[i], a, seed, stream, first_id + static_cast<uint64_t>(i), out_nchw + i * img);
    } catch (...) {
      errs[static_cast<size_t>(i)] = std::current_exception();
    }
    labels[i] = set.label(idx[i]);
  }
  for (const auto& e : errs)
    if (e) std::rethrow_exception(e);
}

// ---- pipeline --------------------------------------------------------------------

namespace detail {

struct Plan {
  std::vector<int> idx;
  uint64_t first_id = 0;
  SamplerState before, after;
  int64_t global_step = 0;
  bool epoch_end = false;
};
using Planner = std::function<bool(Plan&)>;

class ShardPipeline {
 public:
  ShardPipeline(const ImageNetShards& set, const ImageNetAugment& aug, uint64_t seed, uint64_t stream, int workers,
                int depth, Planner planner)
      : set_(set),
        aug_(aug),
        seed_(seed),
        stream_(stream),
        workers_(workers),
        depth_(depth),
        planner_(std::move(planner)),
        ring_(static_cast<size_t>(depth)) {
    for (int t = 0; t < workers_; ++t) threads_.emplace_back(&ShardPipeline::worker, this);
  }
  ~ShardPipeline() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_work_.notify_all();
    for (auto& t : threads_) t.join();
  }

  /// The next batch in order; false when the planner is exhausted.
  bool next(Batch& out) {
    if (workers_ == 0) {
      Plan p;
      if (!planner_(p)) return false;
      setup(out, p);
      for (int j = 0; j < out.n; ++j) process(p, out, j);
      return true;
    }
    std::unique_lock<std::mutex> lk(mu_);
    cv_done_.wait(lk, [&] {
      if (consumed_ < produced_) {
        const Slot& s = slot(consumed_);
        return s.done == s.batch.n;
      }
      return exhausted_;
    });
    if (consumed_ == produced_) return false;
    Slot& s = slot(consumed_);
    if (s.err) std::rethrow_exception(s.err);
    std::swap(out, s.batch);
    ++consumed_;
    lk.unlock();
    cv_work_.notify_all();
    return true;
  }

 private:
  struct Slot {
    Batch batch;
    Plan plan;
    int next_image = 0, done = 0, err_image = INT_MAX;
    std::exception_ptr err;
  };
  Slot& slot(int64_t k) { return ring_[static_cast<size_t>(k % depth_)]; }

  void setup(Batch& b, const Plan& p) {
    b.n = static_cast<int>(p.idx.size());
    b.c = 3, b.h = b.w = aug_.size;
    b.data.resize(static_cast<size_t>(b.n) * 3 * aug_.size * aug_.size);
    b.labels.resize(static_cast<size_t>(b.n));
    for (int j = 0; j < b.n; ++j) b.labels[static_cast<size_t>(j)] = set_.label(p.idx[static_cast<size_t>(j)]);
    b.indices = p.idx;
    b.state_before = p.before;
    b.state_after = p.after;
    b.global_step = p.global_step;
    b.epoch_end = p.epoch_end;
  }

  void process(const Plan& p, Batch& b, int j) {
    const size_t img = 3 * static_cast<size_t>(aug_.size) * aug_.size;
    load_one(set_, p.idx[static_cast<size_t>(j)], aug_, seed_, stream_, p.first_id + static_cast<uint64_t>(j),
             b.data.data() + static_cast<size_t>(j) * img);
  }

  void worker() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      if (stop_) return;
      if (dispatched_ < produced_) {
        Slot& s = slot(dispatched_);
        const int j = s.next_image++;
        if (s.next_image == s.batch.n) ++dispatched_;
        lk.unlock();
        std::exception_ptr e;
        try {
          process(s.plan, s.batch, j);
        } catch (...) {
          e = std::current_exception();
        }
        lk.lock();
        if (e && j < s.err_image) s.err = e, s.err_image = j;
        if (++s.done == s.batch.n) cv_done_.notify_all();
        continue;
      }
      if (!exhausted_ && produced_ - consumed_ < depth_) {
        Slot& s = slot(produced_);
        Plan p;
        bool more = false;
        try {
          more = planner_(p);
        } catch (...) {  // a planner error ends the stream; reported in place of the batch
          s.err = std::current_exception();
          s.batch.n = 0;
          s.done = 0;
          ++produced_, ++dispatched_;
          exhausted_ = true;
          cv_done_.notify_all();
          continue;
        }
        if (!more) {
          exhausted_ = true;
          cv_done_.notify_all();
          continue;
        }
        s.plan = std::move(p);
        setup(s.batch, s.plan);
        s.next_image = s.done = 0;
        s.err = nullptr;
        s.err_image = INT_MAX;
        ++produced_;
        cv_work_.notify_all();
        continue;
      }
      cv_work_.wait(lk);
    }
  }

  const ImageNetShards& set_;
  const ImageNetAugment aug_;
  const uint64_t seed_, stream_;
  const int workers_, depth_;
  Planner planner_;
  std::vector<Slot> ring_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  int64_t produced_ = 0, dispatched_ = 0, consumed_ = 0;
  bool exhausted_ = false, stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace detail

// ---- ShardLoader -------------------------------------------------------------------

ShardLoader::ShardLoader(const ImageNetShards& set, Sampler sampler, ImageNetAugment aug, uint64_t aug_seed,
                         uint64_t aug_stream, int workers, int depth)
    : set_(&set),
      sampler_(std::move(sampler)),
      aug_(aug),
      seed_(aug_seed),
      stream_(aug_stream),
      workers_(workers),
      depth_(depth),
      steps_per_epoch_(sampler_.steps_per_epoch()) {
  aug_.validate();
  if (workers_ < 0) fail_usage(str("data: loader worker threads must be >= 0, got ", workers_));
  if (depth_ < 1) fail_usage(str("data: prefetch depth must be >= 1, got ", depth_));
  DSO_CHECK(steps_per_epoch_ >= 1, "loader needs a constructed sampler");
  for (int i : sampler_.permutation(0))
    if (i < 0 || i >= set.size())
      fail_usage(str("data: sample index ", i, " is outside ", set.source(), " (", set.size(), " images)"));
  consumer_state_ = sampler_.state();
  start();
}

ShardLoader::~ShardLoader() { pipe_.reset(); }

void ShardLoader::start() {
  const uint64_t B = static_cast<uint64_t>(sampler_.batch());
  const uint64_t world = static_cast<uint64_t>(sampler_.world()), rank = static_cast<uint64_t>(sampler_.rank());
  pipe_.reset(
      new detail::ShardPipeline(*set_, aug_, seed_, stream_, workers_, depth_, [this, B, world, rank](detail::Plan& p) {
        p.before = sampler_.state();
        p.global_step = sampler_.global_step();
        sampler_.next(p.idx, &p.epoch_end);
        p.after = sampler_.state();
        p.first_id = static_cast<uint64_t>(p.global_step) * B * world + rank * B;
        return true;
      }));
}

void ShardLoader::next(Batch& b) {
  pipe_->next(b);
  consumer_state_ = b.state_after;
}

void ShardLoader::restore(const SamplerState& s) {
  sampler_.check_state(s);  // before the producer is stopped: a bad state changes nothing
  pipe_.reset();            // joins the workers before the sampler is touched
  sampler_.set_state(s);
  consumer_state_ = s;
  start();
}

// ---- ShardEvalIterator -------------------------------------------------------------

ShardEvalIterator::ShardEvalIterator(const ImageNetShards& set, std::vector<int> indices, int batch,
                                     ImageNetAugment aug, int workers, int depth)
    : set_(&set), indices_(std::move(indices)), batch_(batch), aug_(aug), workers_(workers), depth_(depth) {
  if (batch_ < 1) fail_usage(str("data: evaluation batch size must be >= 1, got ", batch_));
  if (workers_ < 0) fail_usage(str("data: loader worker threads must be >= 0, got ", workers_));
  if (depth_ < 1) fail_usage(str("data: prefetch depth must be >= 1, got ", depth_));
  aug_.random_crop = false;
  aug_.flip = false;
  aug_.brightness = aug_.contrast = aug_.saturation = 0;
  aug_.validate();
  for (int i : indices_)
    if (i < 0 || i >= set.size())
      fail_usage(str("data: sample index ", i, " is outside ", set.source(), " (", set.size(), " images)"));
  start();
}

ShardEvalIterator::~ShardEvalIterator() { pipe_.reset(); }

void ShardEvalIterator::start() {
  planned_ = 0;
  pipe_.reset(new detail::ShardPipeline(*set_, aug_, 0, 0, workers_, depth_, [this](detail::Plan& p) {
    if (planned_ >= indices_.size()) return false;
    const size_t nb = std::min(static_cast<size_t>(batch_), indices_.size() - planned_);
    p.idx.assign(indices_.begin() + static_cast<std::ptrdiff_t>(planned_),
                 indices_.begin() + static_cast<std::ptrdiff_t>(planned_ + nb));
    p.first_id = planned_;
    p.global_step = static_cast<int64_t>(planned_ / static_cast<size_t>(batch_));
    planned_ += nb;
    p.epoch_end = planned_ >= indices_.size();
    return true;
  }));
}

bool ShardEvalIterator::next(Batch& b) { return pipe_->next(b); }

void ShardEvalIterator::reset() {
  pipe_.reset();
  start();
}

int64_t ShardEvalIterator::num_batches() const {
  return static_cast<int64_t>((indices_.size() + static_cast<size_t>(batch_) - 1) / static_cast<size_t>(batch_));
}

}  // namespace dsonas
