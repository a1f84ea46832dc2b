// jpeg.hpp — JPEG decoding and encoding through libjpeg-turbo's TurboJPEG API
// (Debian: libturbojpeg0-dev, link -lturbojpeg), and the bicubic resampler used
// by the ImageNet pipeline (pack-time resize, load-time crop + resize).
//
// Design:
//  * JpegCodec wraps one TurboJPEG decompressor and one compressor (created on
//    first use).  A handle is not thread-safe: every thread owns its codec
//    (the loader's workers keep one each; thread_local_codec() gives the
//    calling thread its own).
//  * Decoding always yields packed RGB (h×w×3).  Grey JPEGs are expanded by
//    libjpeg-turbo; CMYK / YCCK JPEGs (ImageNet holds a few, written by Adobe
//    software with inverted ink values) are decoded as CMYK and converted with
//    R = C·K/255, G = M·K/255, B = Y·K/255 (the Adobe-inverted convention that
//    PIL also uses).
//  * A libjpeg warning (e.g. "extraneous bytes before marker", a truncated
//    scan filled with grey) still gives an image: decode() reports
//    JpegStatus::Warning with the text.  A fatal error (not a JPEG, corrupt
//    header, unsupported format) gives JpegStatus::Error.  Callers decide what
//    each means (pack: error → skip or fail, warning → keep and count).
//  * Decoding may use libjpeg-turbo's DCT scaling: jpeg_scale_for() picks the
//    smallest of 1/8, 1/4, 1/2 that keeps a region at least as large as the
//    output (else full size).  Entropy decoding dominates, so this saves ~15 %
//    of the decoding, but the resampler then reads 4× fewer pixels.  (The
//    other M/8 scales are slower than full size in libjpeg-turbo 2.1.)  The
//    choice is a pure function of the sizes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dsonas {

struct JpegInfo {
  int width = 0, height = 0;
  int colorspace = 0;  ///< TurboJPEG TJCS_*: 0 RGB, 1 YCbCr, 2 gray, 3 CMYK, 4 YCCK
  int subsamp = 0;     ///< TurboJPEG TJSAMP_*
  bool cmyk() const { return colorspace == 3 || colorspace == 4; }
};

enum class JpegStatus { Ok, Warning, Error };

/// Pixel layouts the encoder accepts (tests write grey and CMYK JPEGs too).
enum class JpegPixels { Gray = 1, RGB = 3, CMYK = 4 };

class JpegCodec {
 public:
  JpegCodec() = default;
  ~JpegCodec();
  JpegCodec(const JpegCodec&) = delete;
  JpegCodec& operator=(const JpegCodec&) = delete;

  /// Parses the header.  false (and *err) when it is not a readable JPEG.
  bool header(const uint8_t* data, size_t n, JpegInfo* info, std::string* err);

  /// Decodes to packed RGB at scale num/8 (num in 1..8; see jpeg_scale_for).
  /// On Ok/Warning rgb holds (*h)·(*w)·3 bytes; *msg gets the warning/error text.
  JpegStatus decode_rgb(const uint8_t* data, size_t n, int scale_num, std::vector<uint8_t>& rgb, int* w, int* h,
                        std::string* msg);

  /// Encodes w×h pixels (packed, `fmt` channels each) at quality 1..100 with
  /// 4:2:0 chroma subsampling (4:4:4 when subsample420 is false; grey ignores it).
  /// Error (exit 1) when libjpeg-turbo fails.
  void encode(const uint8_t* px, int w, int h, JpegPixels fmt, int quality, std::vector<uint8_t>& out,
              bool subsample420 = true);

 private:
  void* dec_ = nullptr;  // tjhandle
  void* enc_ = nullptr;
  std::vector<uint8_t> cmyk_;
};

/// The calling thread's codec (created on first use, freed at thread exit).
JpegCodec& thread_local_codec();

/// Size of dimension `d` decoded at scale num/8 (TurboJPEG's TJSCALED: ceil(d·num/8)).
inline int jpeg_scaled(int d, int num) { return (d * num + 7) / 8; }

/// Smallest M in {1, 2, 4} such that a region of rw×rh source pixels still
/// spans at least out_w×out_h pixels after decoding at M/8; 8 (no scaling) if none.
int jpeg_scale_for(double rw, double rh, int out_w, int out_h);

/// Resamples the region [x0, x0+rw) × [y0, y0+rh) (source pixel units, may be
/// fractional) of a packed RGB uint8 image w×h to out_w×out_h, planar
/// (3×out_h×out_w) floats on the 0..255 scale.  Bicubic (Keys, a = −0.5) with
/// PIL-style antialiasing: when shrinking by s > 1 the kernel is widened by s.
/// Taps outside the image are dropped and the weights renormalised.
/// flip = mirror the output horizontally.  `scratch` is reused across calls.
void resample_rgb(const uint8_t* rgb, int w, int h, double x0, double y0, double rw, double rh, int out_w, int out_h,
                  bool flip, float* out_chw, std::vector<float>& scratch);

/// Whole-image resize of packed RGB to packed RGB (rounded, clamped to 0..255).
void resize_rgb(const uint8_t* rgb, int w, int h, int out_w, int out_h, std::vector<uint8_t>& out);

}  // namespace dsonas
