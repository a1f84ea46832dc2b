// dataset.cpp — ImageSet helpers, the synthetic set and the W/λ split.
//
// Design: both the synthetic images and the split are pure functions of their
// arguments via the counter-based Rng (one stream per image / per class), so
// they are identical on every rank and in every run with the same seed.
#include <algorithm>
#include <cmath>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/data/dataset.hpp"  // defines: class_histogram, make_synthetic, split_indices, ...

namespace dsonas {
namespace {
const uint64_t kSynthStream = hash_name("data.synthetic");
const uint64_t kSplitStream = hash_name("data.split");

void fisher_yates(std::vector<int>& v, Rng& r) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[r.below(static_cast<uint32_t>(i))]);
}
}  // namespace

std::vector<int64_t> ImageSet::class_histogram() const {
  std::vector<int64_t> hist(std::max(classes, 0), 0);
  for (int32_t l : labels)
    if (l >= 0 && l < classes) ++hist[l];
  return hist;
}

ImageSet make_synthetic(int n, int c, int h, int w, int classes, uint64_t seed) {
  if (n < 1 || c < 1 || h < 1 || w < 1 || classes < 1)
    fail_usage(
        str("data: synthetic set needs positive sizes, got n=", n, " c=", c, " h=", h, " w=", w, " classes=", classes));
  ImageSet s;
  s.n = n, s.c = c, s.h = h, s.w = w, s.classes = classes;
  s.pixels.resize(static_cast<size_t>(n) * c * h * w);
  s.labels.resize(n);
  s.source = str("synthetic n=", n, " ", c, "x", h, "x", w, " classes=", classes, " seed=", seed);
  const double pi = 3.141592653589793;
  const double m = std::min(h, w);
  const size_t img = s.image_size();
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    const int k = i % classes;
    s.labels[i] = k;
    Rng r(seed, mix64(kSynthStream, static_cast<uint64_t>(i), 0));
    const double theta = pi * k / classes;
    const double ct = std::cos(theta), st = std::sin(theta);
    const double omega = 2 * pi / std::max(3.0, m / 4.5);  // stripe period ≈ m/4.5 px
    const double phase = 2 * pi * r.uniform_double();
    const double ang = 2 * pi * k / classes;  // blob on a circle, jittered by ±1 px
    const double by = h / 2.0 + 0.27 * m * std::sin(ang) + (r.uniform_double() * 2 - 1);
    const double bx = w / 2.0 + 0.27 * m * std::cos(ang) + (r.uniform_double() * 2 - 1);
    const double sig2 = 2 * std::pow(0.12 * m, 2);
    uint8_t* out = s.pixels.data() + i * img;
    for (int ch = 0; ch < c; ++ch) {
      const double contrast = ((k + ch) % 2) ? 0.6 : 1.0;
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
          const double stripe = std::sin(omega * ((x - w / 2.0) * ct + (y - h / 2.0) * st) + phase);
          const double d2 = (y - by) * (y - by) + (x - bx) * (x - bx);
          double v = 100 + 50 * contrast * stripe + 100 * std::exp(-d2 / sig2) + 20 * r.normal();
          v = std::min(255.0, std::max(0.0, std::round(v)));
          out[(static_cast<size_t>(ch) * h + y) * w + x] = static_cast<uint8_t>(v);
        }
    }
  }
  return s;
}

Split split_indices(const ImageSet& set, double first_fraction, uint64_t seed) {
  if (set.classes <= 0)  // unlabelled: one class
    return split_labels(std::vector<int32_t>(static_cast<size_t>(std::max(set.n, 0)), 0), 0, first_fraction, seed);
  DSO_CHECK(set.labels.size() == static_cast<size_t>(std::max(set.n, 0)), "labels ", set.labels.size(), " for ", set.n,
            " images");
  return split_labels(set.labels, set.classes, first_fraction, seed);
}

Split split_labels(const std::vector<int32_t>& labels, int n_classes, double first_fraction, uint64_t seed) {
  if (!(first_fraction > 0.0 && first_fraction < 1.0))
    fail_usage(str("data: split fraction must be in (0, 1), got ", first_fraction));
  const int n = static_cast<int>(labels.size());
  const int classes = std::max(n_classes, 1);
  std::vector<std::vector<int>> by_class(classes);
  for (int i = 0; i < n; ++i) {
    int l = n_classes > 0 ? labels[i] : 0;
    DSO_CHECK(l >= 0 && l < classes, "label ", l, " at index ", i);
    by_class[l].push_back(i);
  }
  Split sp;
  int64_t before = 0;
  for (int k = 0; k < classes; ++k) {
    std::vector<int>& v = by_class[k];
    Rng r(seed, mix64(kSplitStream, static_cast<uint64_t>(k), 0));
    fisher_yates(v, r);
    const int64_t after = before + static_cast<int64_t>(v.size());
    // Cumulative rounding: the first half holds round(f·n) in all, each class within one.
    const int64_t take = std::llround(first_fraction * after) - std::llround(first_fraction * before);
    sp.first.insert(sp.first.end(), v.begin(), v.begin() + take);
    sp.second.insert(sp.second.end(), v.begin() + take, v.end());
    before = after;
  }
  std::sort(sp.first.begin(), sp.first.end());
  std::sort(sp.second.begin(), sp.second.end());
  if (sp.first.empty() || sp.second.empty())
    fail_usage(str("data: splitting ", n, " images with fraction ", first_fraction, " leaves one half empty (",
                   sp.first.size(), " / ", sp.second.size(), ")"));
  return sp;
}

std::vector<int> all_indices(int n) {
  std::vector<int> v(std::max(n, 0));
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

std::vector<int> shard_indices(const std::vector<int>& idx, int rank, int world) {
  DSO_CHECK(world >= 1 && rank >= 0 && rank < world, "rank ", rank, " world ", world);
  const size_t n = idx.size();
  const size_t lo = n * rank / world, hi = n * (rank + 1) / world;
  return std::vector<int>(idx.begin() + lo, idx.begin() + hi);
}

}  // namespace dsonas
