// jpeg.cpp — see jpeg.hpp.  TurboJPEG 2.x API (tjInitDecompress, tjDecompress2, ...).
#include <turbojpeg.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "dsonas/core/error.hpp"
#include "dsonas/data/jpeg.hpp"  // defines: JpegCodec, thread_local_codec, jpeg_scale_for, resample_rgb, resize_rgb

namespace dsonas {

JpegCodec::~JpegCodec() {
  if (dec_) tjDestroy(static_cast<tjhandle>(dec_));
  if (enc_) tjDestroy(static_cast<tjhandle>(enc_));
}

bool JpegCodec::header(const uint8_t* data, size_t n, JpegInfo* info, std::string* err) {
  if (!dec_) {
    dec_ = tjInitDecompress();
    if (!dec_) fail_lib("TurboJPEG", str("tjInitDecompress: ", tjGetErrorStr2(nullptr)), __FILE__, __LINE__);
  }
  if (n < 4 || data[0] != 0xFF || data[1] != 0xD8) {
    if (err) {
      char b[96];
      std::snprintf(b, sizeof b, "not a JPEG file (%zu bytes, starts with %02x %02x %02x %02x)", n, n > 0 ? data[0] : 0,
                    n > 1 ? data[1] : 0, n > 2 ? data[2] : 0, n > 3 ? data[3] : 0);
      *err = b;
    }
    return false;
  }
  int w = 0, h = 0, ss = 0, cs = 0;
  if (tjDecompressHeader3(static_cast<tjhandle>(dec_), data, static_cast<unsigned long>(n), &w, &h, &ss, &cs) != 0) {
    if (err) *err = str("bad JPEG header: ", tjGetErrorStr2(static_cast<tjhandle>(dec_)));
    return false;
  }
  if (w < 1 || h < 1) {
    if (err) *err = str("bad JPEG size ", w, "x", h);
    return false;
  }
  info->width = w, info->height = h, info->subsamp = ss, info->colorspace = cs;
  return true;
}

JpegStatus JpegCodec::decode_rgb(const uint8_t* data, size_t n, int scale_num, std::vector<uint8_t>& rgb, int* w,
                                 int* h, std::string* msg) {
  JpegInfo info;
  std::string err;
  if (!header(data, n, &info, &err)) {
    if (msg) *msg = err;
    return JpegStatus::Error;
  }
  scale_num = std::min(std::max(scale_num, 1), 8);
  const int sw = jpeg_scaled(info.width, scale_num), sh = jpeg_scaled(info.height, scale_num);
  tjhandle d = static_cast<tjhandle>(dec_);
  int rc;
  if (info.cmyk()) {
    cmyk_.resize(static_cast<size_t>(sw) * sh * 4);
    rc = tjDecompress2(d, data, static_cast<unsigned long>(n), cmyk_.data(), sw, 0, sh, TJPF_CMYK, 0);
  } else {
    rgb.resize(static_cast<size_t>(sw) * sh * 3);
    rc = tjDecompress2(d, data, static_cast<unsigned long>(n), rgb.data(), sw, 0, sh, TJPF_RGB, 0);
  }
  JpegStatus st = JpegStatus::Ok;
  if (rc != 0) {
    if (msg) *msg = tjGetErrorStr2(d);
    if (tjGetErrorCode(d) != TJERR_WARNING) return JpegStatus::Error;
    st = JpegStatus::Warning;
  }
  if (info.cmyk()) {  // Adobe-inverted CMYK -> RGB
    rgb.resize(static_cast<size_t>(sw) * sh * 3);
    const size_t np = static_cast<size_t>(sw) * sh;
    for (size_t p = 0; p < np; ++p) {
      const unsigned k = cmyk_[p * 4 + 3];
      for (int c = 0; c < 3; ++c) rgb[p * 3 + c] = static_cast<uint8_t>((cmyk_[p * 4 + c] * k + 127) / 255);
    }
  }
  *w = sw, *h = sh;
  return st;
}

void JpegCodec::encode(const uint8_t* px, int w, int h, JpegPixels fmt, int quality, std::vector<uint8_t>& out,
                       bool subsample420) {
  if (!enc_) {
    enc_ = tjInitCompress();
    if (!enc_) fail_lib("TurboJPEG", str("tjInitCompress: ", tjGetErrorStr2(nullptr)), __FILE__, __LINE__);
  }
  const int pf = fmt == JpegPixels::Gray ? TJPF_GRAY : fmt == JpegPixels::RGB ? TJPF_RGB : TJPF_CMYK;
  const int ss = fmt == JpegPixels::Gray ? TJSAMP_GRAY : subsample420 ? TJSAMP_420 : TJSAMP_444;
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  if (tjCompress2(static_cast<tjhandle>(enc_), px, w, 0, h, pf, &buf, &size, ss, quality, 0) != 0) {
    const std::string e = tjGetErrorStr2(static_cast<tjhandle>(enc_));
    if (buf) tjFree(buf);
    fail_lib("TurboJPEG", str("encode ", w, "x", h, ": ", e), __FILE__, __LINE__);
  }
  out.assign(buf, buf + size);
  tjFree(buf);
}

JpegCodec& thread_local_codec() {
  thread_local JpegCodec codec;
  return codec;
}

int jpeg_scale_for(double rw, double rh, int out_w, int out_h) {
  // Only 1/8, 1/4 and 1/2: libjpeg-turbo 2.1's other scaled IDCTs are slower
  // than full-size decoding (measured: 5/8–7/8 take 1.4–2× as long).
  for (int m : {1, 2, 4})
    if (rw * m / 8.0 >= out_w && rh * m / 8.0 >= out_h) return m;
  return 8;
}

// ---- resampling ------------------------------------------------------------------

namespace {

double cubic(double x) {  // Keys, a = -0.5 (PIL's bicubic)
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

typedef float V4 __attribute__((vector_size(16)));
inline V4 load4(const float* p) {
  V4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

struct Coeffs {
  int taps = 0;
  std::vector<int> start, count;
  std::vector<float> w;  // out × taps
};

void make_coeffs(int in_size, double x0, double len, int out, bool flip, Coeffs& c) {
  const double scale = len / out;
  const double fs = std::max(scale, 1.0);
  const double support = 2.0 * fs;
  c.taps = static_cast<int>(std::ceil(2 * support)) + 2;
  c.start.assign(out, 0);
  c.count.assign(out, 0);
  c.w.assign(static_cast<size_t>(out) * c.taps, 0.0f);
  std::vector<double> tmp(c.taps);
  for (int j = 0; j < out; ++j) {
    const int jj = flip ? out - 1 - j : j;
    const double center = x0 + (jj + 0.5) * scale;
    int lo = static_cast<int>(std::floor(center - support + 0.5));
    int hi = static_cast<int>(std::floor(center + support + 0.5));
    lo = std::max(lo, 0);
    hi = std::min(hi, in_size);
    double sum = 0;
    int cnt = 0;
    for (int x = lo; x < hi && cnt < c.taps; ++x, ++cnt) {
      tmp[cnt] = cubic((x + 0.5 - center) / fs);
      sum += tmp[cnt];
    }
    if (cnt == 0 || std::fabs(sum) < 1e-12) {  // region off the image: nearest edge pixel
      lo = std::min(std::max(static_cast<int>(std::floor(center)), 0), in_size - 1);
      cnt = 1;
      tmp[0] = sum = 1;
    }
    c.start[j] = lo;
    c.count[j] = cnt;
    for (int k = 0; k < cnt; ++k) c.w[static_cast<size_t>(j) * c.taps + k] = static_cast<float>(tmp[k] / sum);
  }
}

}  // namespace

void resample_rgb(const uint8_t* rgb, int w, int h, double x0, double y0, double rw, double rh, int out_w, int out_h,
                  bool flip, float* out_chw, std::vector<float>& scratch) {
  DSO_CHECK(w > 0 && h > 0 && out_w > 0 && out_h > 0 && rw > 0 && rh > 0, "resample ", w, "x", h, " -> ", out_w, "x",
            out_h);
  thread_local Coeffs ch, cv;
  make_coeffs(w, x0, rw, out_w, flip, ch);
  make_coeffs(h, y0, rh, out_h, false, cv);
  int xmin = w, xmax = 0;
  for (int j = 0; j < out_w; ++j) {
    xmin = std::min(xmin, ch.start[j]);
    xmax = std::max(xmax, ch.start[j] + ch.count[j]);
  }
  // One output row at a time: vertical pass over the needed columns (contiguous,
  // vectorised), then the horizontal pass from that row — the intermediate is
  // one row, and the expensive per-tap work runs on out_h rows only.
  const size_t span = static_cast<size_t>(xmax - xmin) * 3;
  // Zero padding after the row: the horizontal pass runs every output pixel
  // over ch.taps taps (weights past its count are 0) and loads 4 floats per tap.
  scratch.assign(span + static_cast<size_t>(ch.taps) * 3 + 4, 0.0f);
  float* acc = scratch.data();
  const size_t plane = static_cast<size_t>(out_w) * out_h;
  const size_t stride = static_cast<size_t>(w) * 3;
  const uint8_t* base = rgb + static_cast<size_t>(xmin) * 3;
  for (int i = 0; i < out_h; ++i) {
    std::fill(acc, acc + span, 0.0f);
    const float* wt = cv.w.data() + static_cast<size_t>(i) * cv.taps;
    for (int k = 0; k < cv.count[i]; ++k) {
      const uint8_t* src = base + static_cast<size_t>(cv.start[i] + k) * stride;
      const float wk = wt[k];
      for (size_t q = 0; q < span; ++q) acc[q] += wk * static_cast<float>(src[q]);
    }
    float* o = out_chw + static_cast<size_t>(i) * out_w;
    // Four output pixels at a time (independent accumulator chains), each one
    // 4-wide multiply-add (r, g, b, unused) per tap (GCC/Clang vector type).
    const int T = ch.taps;
    int j = 0;
    for (; j + 4 <= out_w; j += 4) {
      V4 v0 = {0, 0, 0, 0}, v1 = v0, v2 = v0, v3 = v0;
      const float* p0 = acc + static_cast<size_t>(ch.start[j] - xmin) * 3;
      const float* p1 = acc + static_cast<size_t>(ch.start[j + 1] - xmin) * 3;
      const float* p2 = acc + static_cast<size_t>(ch.start[j + 2] - xmin) * 3;
      const float* p3 = acc + static_cast<size_t>(ch.start[j + 3] - xmin) * 3;
      const float* w0 = ch.w.data() + static_cast<size_t>(j) * T;
      for (int k = 0; k < T; ++k) {
        v0 += w0[k] * load4(p0 + 3 * k);
        v1 += w0[T + k] * load4(p1 + 3 * k);
        v2 += w0[2 * T + k] * load4(p2 + 3 * k);
        v3 += w0[3 * T + k] * load4(p3 + 3 * k);
      }
      const V4* vs[4] = {&v0, &v1, &v2, &v3};
      for (int u = 0; u < 4; ++u) {
        o[j + u] = (*vs[u])[0];
        o[plane + j + u] = (*vs[u])[1];
        o[2 * plane + j + u] = (*vs[u])[2];
      }
    }
    for (; j < out_w; ++j) {
      const float* wh = ch.w.data() + static_cast<size_t>(j) * T;
      const float* p = acc + static_cast<size_t>(ch.start[j] - xmin) * 3;
      V4 v = {0, 0, 0, 0};
      for (int k = 0; k < T; ++k) v += wh[k] * load4(p + 3 * k);
      o[j] = v[0];
      o[plane + j] = v[1];
      o[2 * plane + j] = v[2];
    }
  }
}

void resize_rgb(const uint8_t* rgb, int w, int h, int out_w, int out_h, std::vector<uint8_t>& out) {
  std::vector<float> planes(static_cast<size_t>(out_w) * out_h * 3), scratch;
  resample_rgb(rgb, w, h, 0, 0, w, h, out_w, out_h, false, planes.data(), scratch);
  out.resize(planes.size());
  const size_t plane = static_cast<size_t>(out_w) * out_h;
  for (size_t p = 0; p < plane; ++p)
    for (int c = 0; c < 3; ++c)
      out[p * 3 + c] = static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, std::nearbyint(planes[c * plane + p]))));
}

}  // namespace dsonas
