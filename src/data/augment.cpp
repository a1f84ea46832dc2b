// augment.cpp — see augment.hpp.  Normalisation goes through a 256-entry
// per-channel table computed with the exact formula (v/255 − mean)/std, so the
// fast path and the formula agree bit for bit.
#include <algorithm>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/data/augment.hpp"  // defines: Augment, draw_augment, augment_image, make_batch

namespace dsonas {

void Augment::validate(int channels) const {
  if (pad < 0) fail_usage(str("data: augmentation pad must be >= 0, got ", pad));
  if (pad_value < 0 || pad_value > 255)
    fail_usage(str("data: augmentation pad value must be in [0, 255], got ", pad_value));
  if (cutout < 0) fail_usage(str("data: cutout size must be >= 0, got ", cutout));
  auto ok_size = [&](size_t s) { return s == 1 || s == static_cast<size_t>(channels); };
  if (!ok_size(mean.size()) || !ok_size(std.size()))
    fail_usage(str("data: normalisation mean/std have ", mean.size(), "/", std.size(), " values, expected 1 or ",
                   channels, " (one per channel)"));
  for (float s : std)
    if (!(s > 0)) fail_usage(str("data: normalisation std must be > 0, got ", s));
}

Augment fashion_mnist_eval_augment() { return Augment{}; }

Augment fashion_mnist_train_augment() {
  Augment a;
  a.pad = 2;
  a.flip = true;
  return a;
}

AugDraw draw_augment(const Augment& a, int h, int w, uint64_t seed, uint64_t stream, uint64_t batch_counter,
                     uint64_t slot) {
  Rng r(seed, stream, (batch_counter << 32) + slot * kAugSlots);
  AugDraw d;
  const uint32_t positions = 2 * static_cast<uint32_t>(std::max(a.pad, 0)) + 1;
  d.dy = static_cast<int>(r.below(positions));
  d.dx = static_cast<int>(r.below(positions));
  d.flip = (r.next_u64() >> 63) != 0 && a.flip;
  d.cy = static_cast<int>(r.below(static_cast<uint32_t>(h)));
  d.cx = static_cast<int>(r.below(static_cast<uint32_t>(w)));
  return d;
}

namespace {
void apply(const uint8_t* src, int c, int h, int w, const Augment& a, const AugDraw& d, float* out,
           const float* lut /* c×256 */) {
  const int P = a.pad;
  for (int ch = 0; ch < c; ++ch) {
    const uint8_t* s = src + static_cast<size_t>(ch) * h * w;
    const float* l = lut + ch * 256;
    float* o = out + static_cast<size_t>(ch) * h * w;
    const float padv = l[a.pad_value];
    for (int y = 0; y < h; ++y) {
      const int sy = y + d.dy - P;
      float* orow = o + static_cast<size_t>(y) * w;
      if (sy < 0 || sy >= h) {
        std::fill(orow, orow + w, padv);
        continue;
      }
      const uint8_t* srow = s + static_cast<size_t>(sy) * w;
      for (int x = 0; x < w; ++x) {
        const int sx = (d.flip ? w - 1 - x : x) + d.dx - P;
        orow[x] = (sx >= 0 && sx < w) ? l[srow[sx]] : padv;
      }
    }
  }
  if (a.cutout > 0) {
    const int y0 = std::max(d.cy - a.cutout / 2, 0), y1 = std::min(d.cy - a.cutout / 2 + a.cutout, h);
    const int x0 = std::max(d.cx - a.cutout / 2, 0), x1 = std::min(d.cx - a.cutout / 2 + a.cutout, w);
    for (int ch = 0; ch < c; ++ch)
      for (int y = y0; y < y1; ++y)
        std::fill(out + (static_cast<size_t>(ch) * h + y) * w + x0,
                  out + (static_cast<size_t>(ch) * h + y) * w + std::max(x0, x1), 0.0f);
  }
}

std::vector<float> make_lut(const Augment& a, int c) {
  std::vector<float> lut(static_cast<size_t>(c) * 256);
  for (int ch = 0; ch < c; ++ch) {
    const float m = a.mean.size() == 1 ? a.mean[0] : a.mean[ch];
    const float s = a.std.size() == 1 ? a.std[0] : a.std[ch];
    for (int v = 0; v < 256; ++v) lut[ch * 256 + v] = (static_cast<float>(v) / 255.0f - m) / s;
  }
  return lut;
}
}  // namespace

void augment_image(const uint8_t* src, int c, int h, int w, const Augment& a, const AugDraw& d, float* out) {
  a.validate(c);
  apply(src, c, h, w, a, d, out, make_lut(a, c).data());
}

void make_batch(const ImageSet& set, const std::vector<int>& idx, const Augment& a, uint64_t seed, uint64_t stream,
                uint64_t batch_counter, float* out_nchw, int32_t* labels, uint64_t slot_offset) {
  a.validate(set.c);
  const int nb = static_cast<int>(idx.size());
  DSO_CHECK(slot_offset + idx.size() < (uint64_t(1) << 29), "batch too large for the rng layout");
  for (int i = 0; i < nb; ++i)
    DSO_CHECK(idx[i] >= 0 && idx[i] < set.n, "index ", idx[i], " outside the set of ", set.n);
  const std::vector<float> lut = make_lut(a, set.c);
  const size_t img = set.image_size();
#pragma omp parallel for schedule(static) if (static_cast <size_t>(nb) * img >= 32768)
  for (int i = 0; i < nb; ++i) {
    const AugDraw d = draw_augment(a, set.h, set.w, seed, stream, batch_counter, slot_offset + i);
    apply(set.image(idx[i]), set.c, set.h, set.w, a, d, out_nchw + i * img, lut.data());
    labels[i] = set.labels[idx[i]];
  }
}

}  // namespace dsonas
