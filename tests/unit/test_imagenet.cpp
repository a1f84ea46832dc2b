// test_imagenet.cpp — ImageNet as HDF5 shards: JPEG codec and resampler, pack
// (layout, skipped inputs and the limit on them, resize, determinism,
// interrupted packs, --max-corrupt on the command line), the shard reader and
// loaders (expected pixels and labels, worker-count independence, rank
// slices, restore, batch buffers from the host-memory hook), corrupt shards
// (one-line errors naming the file, exit 2), and `validate` on good and bad
// Fashion-MNIST / CIFAR-10 / ImageNet data through the library.
//
// Fixtures: small JPEG trees written by the tests with libjpeg-turbo's
// compressor in a fresh temporary folder: "flat" trees (one constant colour
// per class, so decoded pixels are known to within the JPEG error) and
// "textured" trees (for tests where crops and flips must make a difference).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <dirent.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "counting_host.hpp"
#include "test_util.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/data/cifar.hpp"
#include "dsonas/data/dataset.hpp"
#include "dsonas/core/host_memory.hpp"
#include "dsonas/data/imagenet.hpp"
#include "dsonas/data/imagenet_loader.hpp"
#include "dsonas/data/jpeg.hpp"
#include "dsonas/run/config.hpp"
#include "dsonas/run/validate.hpp"

using namespace dsonas;
using dsonas_test::TempDir;
using dsonas_test::usage_error;
using ::testing::HasSubstr;

namespace {

// ---- fixtures ---------------------------------------------------------------------

const char* kClass[3] = {"n001", "n002", "n003"};
const int kColour[3][3] = {{180, 60, 90}, {60, 170, 80}, {90, 80, 190}};
// Sizes of the train images of each class (w, h): portrait, landscape, square.
const int kSizes[5][2] = {{64, 48}, {48, 64}, {80, 60}, {56, 56}, {70, 50}};
constexpr int kTrainPerClass = 5, kValPerClass = 2;

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::vector<uint8_t> image_pixels(int cls, int idx, int w, int h, bool textured) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        double v = kColour[cls][c];
        if (textured)
          v += 50 * std::sin(0.37 * x + 0.21 * y * (idx + 1) + c) + 30 * std::cos(0.11 * x * y / (idx + 2.0));
        px[(static_cast<size_t>(y) * w + x) * 3 + c] =
            static_cast<uint8_t>(std::min(255.0, std::max(0.0, std::round(v))));
      }
  return px;
}

std::vector<uint8_t> jpeg_of(const std::vector<uint8_t>& px, int w, int h, int quality = 95) {
  JpegCodec c;
  std::vector<uint8_t> out;
  c.encode(px.data(), w, h, JpegPixels::RGB, quality, out, /*subsample420=*/false);
  return out;
}

std::string img_name(int i) { return "img" + std::to_string(i) + ".JPEG"; }

/// ROOT/{train,val}/<class>/imgK.JPEG
void make_tree(const std::string& root, bool textured) {
  ::mkdir(root.c_str(), 0755);
  for (const char* split : {"train", "val"}) {
    ::mkdir((root + "/" + split).c_str(), 0755);
    const int per = std::string(split) == "train" ? kTrainPerClass : kValPerClass;
    for (int k = 0; k < 3; ++k) {
      const std::string d = root + "/" + split + "/" + kClass[k];
      ::mkdir(d.c_str(), 0755);
      for (int i = 0; i < per; ++i) {
        const int w = kSizes[i][0], h = kSizes[i][1];
        write_bytes(d + "/" + img_name(i), jpeg_of(image_pixels(k, i, w, h, textured), w, h));
      }
    }
  }
}

struct Packed {
  TempDir tmp{"dsonas_imagenet_"};
  std::string root, out;
  Manifest man;
  Packed(bool textured, int shard_size = 4, int threads = 2, int resize = 0) {
    root = tmp.file("src");
    out = tmp.file("out");
    make_tree(root, textured);
    man = pack(shard_size, threads, resize);
  }
  Manifest pack(int shard_size, int threads, int resize, const std::string& dest = "") {
    PackOptions o;
    o.src = root;
    o.out = dest.empty() ? out : dest;
    o.shard_size = shard_size;
    o.threads = threads;
    o.resize = resize;
    return pack_imagenet(o);
  }
  std::string shard(const std::string& split, int k) const { return out + "/" + shard_file_name(split, k); }
};

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void spit(const std::string& p, const std::string& s) {
  std::ofstream f(p);
  f << s;
}

/// Byte offset of the contiguous /jpeg data and the offsets table of a shard.
void jpeg_layout(const std::string& path, uint64_t* base, std::vector<uint64_t>* offsets) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  hid_t d = H5Dopen2(f, "jpeg", H5P_DEFAULT);
  *base = H5Dget_offset(d);
  H5Dclose(d);
  d = H5Dopen2(f, "offsets", H5P_DEFAULT);
  hid_t s = H5Dget_space(d);
  offsets->resize(static_cast<size_t>(H5Sget_simple_extent_npoints(s)));
  H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, offsets->data());
  H5Sclose(s);
  H5Dclose(d);
  H5Fclose(f);
}

void flip_byte(const std::string& path, uint64_t off) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(off));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(off));
  f.write(&c, 1);
}

/// Replaces the crc32 and bytes recorded for `file` in the manifest, and its /jpeg
/// region and metadata CRC-32 (read from the file as it is now), as if the pack had
/// written the file as it is now.
void set_manifest_entry(const std::string& out, const std::string& file, uint32_t crc, uint64_t bytes) {
  std::string m = slurp(out + "/manifest.json");
  const size_t at = m.find("\"file\": \"" + file + "\"");
  ASSERT_NE(at, std::string::npos);
  auto set = [&](const char* key, const std::string& v) {
    const std::string k = std::string("\"") + key + "\": ";
    size_t b = m.find(k, at);
    ASSERT_NE(b, std::string::npos) << key;
    b += k.size();
    const size_t e = m.find_first_of(",}", b);
    m.replace(b, e - b, v);
  };
  auto hex = [](uint32_t v) {
    char h[16];
    std::snprintf(h, sizeof h, "\"%08x\"", v);
    return std::string(h);
  };
  uint64_t base = 0;
  std::vector<uint64_t> off;
  jpeg_layout(out + "/" + file, &base, &off);
  const std::vector<uint8_t> b = read_bytes(out + "/" + file);
  const uint64_t end = base + off.back();
  const uint32_t meta = crc32_bytes(b.data() + end, b.size() - end, crc32_bytes(b.data(), base));
  set("bytes", std::to_string(bytes));
  set("crc32", hex(crc));
  set("jpeg_offset", std::to_string(base));
  set("jpeg_bytes", std::to_string(off.back()));
  set("meta_crc32", hex(meta));
  spit(out + "/manifest.json", m);
}

/// Drops the metadata CRC of every shard from the manifest: a pack made before it
/// existed.
void drop_meta_crc(const std::string& out) {
  std::string m = slurp(out + "/manifest.json");
  for (size_t at; (at = m.find(", \"jpeg_offset\": ")) != std::string::npos;) m.erase(at, m.find('}', at) - at);
  spit(out + "/manifest.json", m);
}

std::vector<Batch> take(BatchSource& l, int k) {
  std::vector<Batch> v(static_cast<size_t>(k));
  for (auto& b : v) l.next(b);
  return v;
}

void expect_same(const Batch& a, const Batch& b, const std::string& what) {
  EXPECT_EQ(a.n, b.n) << what;
  EXPECT_TRUE(a.data == b.data) << what;  // bitwise
  EXPECT_EQ(a.labels, b.labels) << what;
  EXPECT_EQ(a.indices, b.indices) << what;
  EXPECT_EQ(a.state_before, b.state_before) << what;
  EXPECT_EQ(a.state_after, b.state_after) << what;
  EXPECT_EQ(a.global_step, b.global_step) << what;
  EXPECT_EQ(a.epoch_end, b.epoch_end) << what;
}

ImageNetAugment no_jitter_train() {
  ImageNetAugment a = imagenet_train_augment();
  a.brightness = a.contrast = a.saturation = 0;
  return a;
}

}  // namespace

// ---- codec and resampler -------------------------------------------------------------

TEST(ImageNetJpeg, RoundTripGreyAndCmyk) {
  JpegCodec c;
  std::vector<uint8_t> px = image_pixels(0, 0, 40, 30, false), jpg, rgb;
  c.encode(px.data(), 40, 30, JpegPixels::RGB, 95, jpg, false);
  JpegInfo info;
  ASSERT_TRUE(c.header(jpg.data(), jpg.size(), &info, nullptr));
  EXPECT_EQ(info.width, 40);
  EXPECT_EQ(info.height, 30);
  int w = 0, h = 0;
  std::string msg;
  ASSERT_EQ(c.decode_rgb(jpg.data(), jpg.size(), 8, rgb, &w, &h, &msg), JpegStatus::Ok);
  for (size_t i = 0; i < rgb.size(); ++i) EXPECT_NEAR(rgb[i], px[i], 3) << i;
  // DCT scaling: half size
  ASSERT_EQ(c.decode_rgb(jpg.data(), jpg.size(), 4, rgb, &w, &h, &msg), JpegStatus::Ok);
  EXPECT_EQ(w, 20);
  EXPECT_EQ(h, 15);
  // grey
  std::vector<uint8_t> g(40 * 30, 77);
  c.encode(g.data(), 40, 30, JpegPixels::Gray, 95, jpg);
  ASSERT_EQ(c.decode_rgb(jpg.data(), jpg.size(), 8, rgb, &w, &h, &msg), JpegStatus::Ok);
  for (uint8_t v : rgb) EXPECT_NEAR(v, 77, 1);
  // CMYK (Adobe-inverted convention): stored (200, 100, 50, 204) -> RGB = C·K/255 ...
  std::vector<uint8_t> cmyk;
  for (int p = 0; p < 40 * 30; ++p) cmyk.insert(cmyk.end(), {200, 100, 50, 204});
  c.encode(cmyk.data(), 40, 30, JpegPixels::CMYK, 98, jpg, false);
  ASSERT_TRUE(c.header(jpg.data(), jpg.size(), &info, nullptr));
  EXPECT_TRUE(info.cmyk());
  ASSERT_EQ(c.decode_rgb(jpg.data(), jpg.size(), 8, rgb, &w, &h, &msg), JpegStatus::Ok);
  for (size_t p = 0; p < rgb.size(); p += 3) {
    EXPECT_NEAR(rgb[p], 200 * 204 / 255.0, 3);
    EXPECT_NEAR(rgb[p + 1], 100 * 204 / 255.0, 3);
    EXPECT_NEAR(rgb[p + 2], 50 * 204 / 255.0, 3);
  }
  // not a JPEG
  const uint8_t png[8] = {0x89, 'P', 'N', 'G', 13, 10, 26, 10};
  EXPECT_EQ(c.decode_rgb(png, 8, 8, rgb, &w, &h, &msg), JpegStatus::Error);
  EXPECT_THAT(msg, HasSubstr("not a JPEG"));
  // truncated JPEG: header intact, data cut -> still an image, with a warning
  std::vector<uint8_t> big = jpeg_of(image_pixels(1, 2, 64, 64, true), 64, 64);
  big.resize(big.size() * 2 / 3);
  EXPECT_EQ(c.decode_rgb(big.data(), big.size(), 8, rgb, &w, &h, &msg), JpegStatus::Warning);
}

TEST(ImageNetJpeg, ResamplerReproducesRampsAndFlips) {
  // R = 2·x + 10, G = 3·y + 5, B = 100.  Enlarging, the Keys kernel (a = −0.5)
  // reproduces linear functions exactly; shrinking, the widened (antialiasing)
  // kernel sampled on the pixel grid does so to within ~0.01 px.
  const int W = 120, H = 90;
  std::vector<uint8_t> rgb(static_cast<size_t>(W) * H * 3);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      uint8_t* p = &rgb[(static_cast<size_t>(y) * W + x) * 3];
      p[0] = static_cast<uint8_t>(2 * x + 10 > 255 ? 255 : 2 * x + 10);
      p[1] = static_cast<uint8_t>(3 * y + 5 > 255 ? 255 : 3 * y + 5);
      p[2] = 100;
    }
  std::vector<float> out(3 * 20 * 16), flipped(out.size()), scratch;
  const double x0 = 30, y0 = 20, rw = 50, rh = 40;  // scale 2.5 (shrink) in both axes
  resample_rgb(rgb.data(), W, H, x0, y0, rw, rh, 20, 16, false, out.data(), scratch);
  resample_rgb(rgb.data(), W, H, x0, y0, rw, rh, 20, 16, true, flipped.data(), scratch);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 20; ++j) {
      const double cx = x0 + (j + 0.5) * rw / 20 - 0.5, cy = y0 + (i + 0.5) * rh / 16 - 0.5;
      EXPECT_NEAR(out[i * 20 + j], 2 * cx + 10, 0.04) << i << "," << j;
      EXPECT_NEAR(out[320 + i * 20 + j], 3 * cy + 5, 0.06) << i << "," << j;
      EXPECT_NEAR(out[640 + i * 20 + j], 100, 1e-3);
      for (int c = 0; c < 3; ++c) EXPECT_FLOAT_EQ(flipped[c * 320 + i * 20 + j], out[c * 320 + i * 20 + 19 - j]);
    }
  // enlarging (scale 0.5) is interpolation on the same ramp
  resample_rgb(rgb.data(), W, H, 40, 30, 10, 8, 20, 16, false, out.data(), scratch);
  for (int j = 0; j < 20; ++j) EXPECT_NEAR(out[5 * 20 + j], 2 * (40 + (j + 0.5) * 0.5 - 0.5) + 10, 1e-3);
  EXPECT_EQ(jpeg_scale_for(448, 460, 224, 224), 4);  // 1/2 keeps 224 x 230
  EXPECT_EQ(jpeg_scale_for(448, 400, 224, 224), 8);  // 1/2 would give 200 rows; 5/8..7/8 are not used
  EXPECT_EQ(jpeg_scale_for(2000, 2000, 224, 224), 1);
  EXPECT_EQ(jpeg_scale_for(100, 300, 224, 224), 8);
}

TEST(ImageNetAugment, DrawsFollowFbResnetRanges) {
  const ImageNetAugment a = imagenet_train_augment();
  int flips = 0, fallback = 0;
  const int W = 500, H = 375, N = 4000;
  for (int id = 0; id < N; ++id) {
    const ImageNetDraw d = draw_imagenet(a, W, H, 7, 3, static_cast<uint64_t>(id));
    ASSERT_GE(d.x0, 0);
    ASSERT_GE(d.y0, 0);
    ASSERT_LE(d.x0 + d.w, W);
    ASSERT_LE(d.y0 + d.h, H);
    EXPECT_EQ(d.x0, std::floor(d.x0));  // integer crops
    if (d.w == H && d.h == H && d.x0 == (W - H) / 2) {
      ++fallback;
    } else {
      const double area = d.w * d.h / (W * double(H)), r = d.w / d.h;
      EXPECT_GE(area, 0.08 * 0.9) << id;
      EXPECT_LE(area, 1.0);
      EXPECT_TRUE((r > 0.74 && r < 1.34) || (1 / r > 0.74 && 1 / r < 1.34)) << r;  // swapped w/h allowed
    }
    flips += d.flip;
    std::set<int> ord(d.order.begin(), d.order.end());
    EXPECT_EQ(ord.size(), 3u);
    for (float al : d.alpha) {
      EXPECT_GE(al, 0.6f);
      EXPECT_LE(al, 1.4f);
    }
    // a pure function of (seed, stream, id)
    const ImageNetDraw e = draw_imagenet(a, W, H, 7, 3, static_cast<uint64_t>(id));
    EXPECT_EQ(d.x0, e.x0);
    EXPECT_EQ(d.alpha, e.alpha);
  }
  EXPECT_NEAR(flips / double(N), 0.5, 0.04);
  EXPECT_LT(fallback, N / 20);
  // evaluation: centred square of side min(W,H)·224/256
  const ImageNetDraw ev = draw_imagenet(imagenet_eval_augment(), W, H, 1, 1, 5);
  EXPECT_DOUBLE_EQ(ev.w, 375 * 224.0 / 256);
  EXPECT_DOUBLE_EQ(ev.x0, (500 - ev.w) / 2);
  EXPECT_DOUBLE_EQ(ev.y0, (375 - ev.w) / 2);
  EXPECT_FALSE(ev.flip);
}

// ---- pack + load ----------------------------------------------------------------------

TEST(ImageNetPack, LayoutManifestAndReader) {
  Packed p(false, /*shard_size=*/4);
  const Manifest& m = p.man;
  EXPECT_EQ(m.classes, (std::vector<std::string>{"n001", "n002", "n003"}));
  ASSERT_NE(m.split("train"), nullptr);
  ASSERT_NE(m.split("val"), nullptr);
  EXPECT_EQ(m.split("train")->images, 15);
  EXPECT_EQ(m.split("train")->shards.size(), 4u);  // 4 + 4 + 4 + 3
  EXPECT_EQ(m.split("val")->images, 6);
  EXPECT_EQ(m.split("val")->shards.size(), 2u);
  EXPECT_TRUE(m.skipped.empty());
  // the manifest on disk reads back to the same thing
  const Manifest r = read_manifest(p.out);
  EXPECT_EQ(r.to_json(), m.to_json());
  for (const ShardEntry& e : m.split("train")->shards) {
    uint64_t size = 0;
    EXPECT_EQ(crc32_file(p.out + "/" + e.file, &size), e.crc32);
    EXPECT_EQ(static_cast<int64_t>(size), e.bytes);
  }
  ImageNetShards tr(p.out, "train");
  ASSERT_EQ(tr.size(), 15);
  EXPECT_EQ(tr.classes(), 3);
  for (int i = 0; i < 15; ++i) {
    EXPECT_EQ(tr.label(i), i / 5);  // (class, file name) order
    EXPECT_EQ(tr.name(i), std::string("train/") + kClass[i / 5] + "/" + img_name(i % 5));
    // stored bytes are the original file's bytes (no --resize)
    std::vector<uint8_t> b;
    tr.read_jpeg(i, b);
    EXPECT_EQ(b, read_bytes(p.root + "/" + tr.name(i))) << i;
  }
  EXPECT_THAT(tr.where(6),
              HasSubstr(p.shard("train", 1) + " (ImageNet train shard 1): image 2 (train/n002/img1.JPEG)"));
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "test"); }), HasSubstr("no split 'test'"));
}

TEST(ImageNetLoader, EvalAndTrainGiveTheClassColours) {
  Packed p(false, 4);
  ImageNetShards val(p.out, "val"), tr(p.out, "train");
  const ImageNetAugment ev = imagenet_eval_augment();
  const size_t plane = 224 * 224;
  auto check_colour = [&](const Batch& b, int j, int cls, double tol, const std::string& what) {
    for (int c = 0; c < 3; ++c) {
      double lo = 1e9, hi = -1e9;
      for (size_t q = 0; q < plane; ++q) {
        const double v = b.data[(static_cast<size_t>(j) * 3 + c) * plane + q] * ev.std[c] + ev.mean[c];
        lo = std::min(lo, v), hi = std::max(hi, v);
      }
      EXPECT_NEAR(lo, kColour[cls][c], tol) << what << " c" << c;
      EXPECT_NEAR(hi, kColour[cls][c], tol) << what << " c" << c;
    }
  };
  ShardEvalIterator it(val, all_indices(val.size()), 4, imagenet_train_augment() /* forced to eval */, 2);
  EXPECT_EQ(it.num_batches(), 2);
  Batch b;
  std::vector<int> sizes;
  int seen = 0;
  while (it.next(b)) {
    sizes.push_back(b.n);
    EXPECT_EQ(b.c, 3);
    EXPECT_EQ(b.h, 224);
    EXPECT_EQ(b.data.size(), static_cast<size_t>(b.n) * 3 * plane);
    for (int j = 0; j < b.n; ++j, ++seen) {
      EXPECT_EQ(b.indices[j], seen);
      EXPECT_EQ(b.labels[j], seen / 2);
      check_colour(b, j, seen / 2, 3.0, "val image " + std::to_string(seen));  // JPEG error of a flat colour
    }
  }
  EXPECT_EQ(sizes, (std::vector<int>{4, 2}));
  // training crops of a flat image are flat: no jitter -> the colour; jitter ->
  // the §7.2 formula applied to the colour with this image's draws
  for (bool jitter : {false, true}) {
    const ImageNetAugment a = jitter ? imagenet_train_augment() : no_jitter_train();
    ShardLoader l(tr, Sampler(all_indices(15), 5, 0, 1, 11, 12), a, 21, 22, 2);
    for (int k = 0; k < 3; ++k) {
      l.next(b);
      for (int j = 0; j < b.n; ++j) {
        const int cls = tr.label(b.indices[j]);
        EXPECT_EQ(b.labels[j], cls);
        if (!jitter) {
          check_colour(b, j, cls, 3.0, "train image");
          continue;
        }
        std::vector<uint8_t> bytes;
        tr.read_jpeg(b.indices[j], bytes);
        JpegInfo info;
        ASSERT_TRUE(thread_local_codec().header(bytes.data(), bytes.size(), &info, nullptr));
        const uint64_t id = static_cast<uint64_t>(b.global_step) * 5 + static_cast<uint64_t>(j);
        const ImageNetDraw d = draw_imagenet(a, info.width, info.height, 21, 22, id);
        double v[3] = {double(kColour[cls][0]), double(kColour[cls][1]), double(kColour[cls][2])};
        for (int t : d.order) {
          const double al = d.alpha[t], g = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
          for (double& x : v) x = t == 0 ? x * al : x * al + g * (1 - al);  // flat: mean grey = grey
        }
        for (int c = 0; c < 3; ++c) {
          const double got = b.data[(static_cast<size_t>(j) * 3 + c) * plane + plane / 2] * a.std[c] + a.mean[c];
          EXPECT_NEAR(got, v[c], 5.0) << "jittered image " << j << " c" << c;
        }
      }
    }
  }
}

TEST(ImageNetLoader, IdenticalForAnyWorkerCountAndMatchesMakeBatch) {
  Packed p(true, 4);
  ImageNetShards tr(p.out, "train");
  const ImageNetAugment a = imagenet_train_augment();
  const std::vector<int> list = all_indices(tr.size());
  ShardLoader w0(tr, Sampler(list, 4, 0, 1, 5, 6), a, 7, 8, 0);
  ShardLoader w1(tr, Sampler(list, 4, 0, 1, 5, 6), a, 7, 8, 1);
  ShardLoader w3(tr, Sampler(list, 4, 0, 1, 5, 6), a, 7, 8, 3, 3);
  EXPECT_EQ(w3.steps_per_epoch(), 3);  // floor(15 / 4)
  auto b0 = take(w0, 8), b1 = take(w1, 8), b3 = take(w3, 8);
  std::set<HostVector<float>> distinct;
  for (int k = 0; k < 8; ++k) {
    expect_same(b0[k], b1[k], "workers 0 vs 1, batch " + std::to_string(k));
    expect_same(b0[k], b3[k], "workers 0 vs 3, batch " + std::to_string(k));
    EXPECT_EQ(b0[k].epoch_end, k % 3 == 2);
    distinct.insert(b0[k].data);
    // the synchronous batch function with the documented ids gives the same floats
    HostVector<float> x(b0[k].data.size());
    std::vector<int32_t> y(4);
    make_imagenet_batch(tr, b0[k].indices, a, 7, 8, static_cast<uint64_t>(b0[k].global_step) * 4, x.data(), y.data());
    EXPECT_TRUE(x == b0[k].data) << k;
    EXPECT_EQ(y, b0[k].labels);
  }
  EXPECT_EQ(distinct.size(), 8u);  // augmentation differs from batch to batch
  EXPECT_EQ(w3.state(), (SamplerState{2, 2}));
  // another seed changes the data
  ShardLoader other(tr, Sampler(list, 4, 0, 1, 5, 6), a, 99, 8, 1);
  Batch o;
  other.next(o);
  EXPECT_EQ(o.indices, b0[0].indices);
  EXPECT_FALSE(o.data == b0[0].data);
}

TEST(ImageNetLoader, RankSlicesAreDisjointCoverTheEpochAndMatchOneRank) {
  Packed p(true, 4);
  ImageNetShards tr(p.out, "train");
  const ImageNetAugment a = imagenet_train_augment();
  const std::vector<int> list = all_indices(tr.size());
  const int world = 3, B = 2;
  ShardLoader one(tr, Sampler(list, B * world, 0, 1, 3, 4), a, 1, 2, 2);
  std::vector<std::unique_ptr<ShardLoader>> ranks;
  for (int r = 0; r < world; ++r)
    ranks.emplace_back(new ShardLoader(tr, Sampler(list, B, r, world, 3, 4), a, 1, 2, r % 2 ? 1 : 2));
  EXPECT_EQ(one.steps_per_epoch(), 2);  // floor(15 / 6)
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<int> seen;
    for (int k = 0; k < 2; ++k) {
      Batch g;
      one.next(g);
      std::vector<int> cat;
      HostVector<float> data;
      for (int r = 0; r < world; ++r) {
        Batch b;
        ranks[r]->next(b);
        EXPECT_EQ(b.n, B);
        for (int i : b.indices) EXPECT_TRUE(seen.insert(i).second) << "sample " << i << " twice in an epoch";
        cat.insert(cat.end(), b.indices.begin(), b.indices.end());
        data.insert(data.end(), b.data.begin(), b.data.end());
      }
      EXPECT_EQ(cat, g.indices);
      EXPECT_TRUE(data == g.data) << "rank slices differ from the 1-rank batch at epoch " << epoch << " step " << k;
    }
    EXPECT_EQ(seen.size(), 12u);  // 2 global batches of 6; the other 3 samples are dropped this epoch
  }
}

TEST(ImageNetLoader, RestoreContinuesIdentically) {
  Packed p(true, 4);
  ImageNetShards tr(p.out, "train");
  const std::vector<int> list = all_indices(tr.size());
  for (int workers : {0, 2}) {
    ShardLoader ref(tr, Sampler(list, 4, 0, 1, 1, 2), imagenet_train_augment(), 3, 4, workers);
    auto all = take(ref, 9);
    ShardLoader b(tr, Sampler(list, 4, 0, 1, 1, 2), imagenet_train_augment(), 3, 4, workers);
    take(b, 2);
    b.restore(all[4].state_after);  // mid-epoch (3 steps per epoch)
    EXPECT_EQ(b.state(), all[4].state_after);
    for (int k = 5; k < 9; ++k) {
      Batch x;
      b.next(x);
      expect_same(x, all[k], "restored batch " + std::to_string(k));
    }
    b.restore(all[1].state_before);  // backwards, on a running loader
    Batch x;
    b.next(x);
    expect_same(x, all[1], "rewound batch");
    EXPECT_THAT(usage_error([&] { b.restore({0, 3}); }), HasSubstr("position"));
  }
}

// ---- pack: inputs, options, determinism ---------------------------------------------

TEST(ImageNetPack, SkipsUndecodableImagesOrFailsWhenStrict) {
  TempDir t("dsonas_imagenet_");
  const std::string root = t.file("src");
  make_tree(root, false);
  write_bytes(root + "/train/n002/zz_garbage.JPEG", {'h', 'e', 'l', 'l', 'o', '!', '!', '!'});
  write_bytes(root + "/train/n002/zz_empty.jpg", {});
  write_bytes(root + "/train/n003/notes.txt", {'x'});  // not a .jpg/.jpeg: ignored
  PackOptions o;
  o.src = root;
  o.out = t.file("out");
  o.shard_size = 4;
  std::ostringstream log;
  o.log = &log;
  const Manifest m = pack_imagenet(o);
  EXPECT_EQ(m.split("train")->images, 15);
  ASSERT_EQ(m.skipped.size(), 2u);
  EXPECT_EQ(m.skipped[0].path, "train/n002/zz_empty.jpg");
  EXPECT_EQ(m.skipped[1].path, "train/n002/zz_garbage.JPEG");
  EXPECT_THAT(m.skipped[1].reason, HasSubstr("not a JPEG"));
  EXPECT_THAT(log.str(), HasSubstr(root + "/train/n002/zz_garbage.JPEG: skipped"));
  EXPECT_THAT(log.str(), HasSubstr("ignored 1 entries"));
  EXPECT_EQ(read_manifest(o.out).skipped.size(), 2u);
  // strict: exit 2 naming the file, no manifest
  o.out = t.file("out_strict");
  o.strict = true;
  o.log = nullptr;
  EXPECT_THAT(usage_error([&] { pack_imagenet(o); }), HasSubstr("zz_empty.jpg"));
  EXPECT_NE(::access((o.out + "/manifest.json").c_str(), F_OK), 0);
  // bad trees: no train folder; a val class that train lacks; flat val images; non-empty OUT
  PackOptions bad = o;
  bad.strict = false;
  bad.src = t.file("nothing");
  EXPECT_THAT(usage_error([&] { pack_imagenet(bad); }), HasSubstr("--src"));
  ::mkdir((root + "/val/n999").c_str(), 0755);
  bad.src = root;
  bad.out = t.file("out_bad");
  EXPECT_THAT(usage_error([&] { pack_imagenet(bad); }), HasSubstr("class folder 'n999' does not exist"));
  EXPECT_NE(::access(bad.out.c_str(), F_OK), 0);  // nothing written
  ::rmdir((root + "/val/n999").c_str());
  write_bytes(root + "/val/ILSVRC2012_val_00000001.JPEG", jpeg_of(image_pixels(0, 0, 8, 8, false), 8, 8));
  EXPECT_THAT(usage_error([&] { pack_imagenet(bad); }), HasSubstr("must be in class folders"));
  ::unlink((root + "/val/ILSVRC2012_val_00000001.JPEG").c_str());
  bad.out = t.file("out");  // a finished pack
  EXPECT_THAT(usage_error([&] { pack_imagenet(bad); }), HasSubstr("already holds a finished pack"));
  bad.out = t.path();  // holds other things
  EXPECT_THAT(usage_error([&] { pack_imagenet(bad); }), HasSubstr("is not empty"));
  bad.out = t.file("out2");
  bad.quality = 0;
  EXPECT_THAT(usage_error([&] { pack_imagenet(bad); }), HasSubstr("--quality"));
}

TEST(ImageNetPack, ResizeShorterSideAndKeepSmallImages) {
  Packed p(true, 100, 2, /*resize=*/50);
  EXPECT_EQ(p.man.resize, 50);
  ImageNetShards tr(p.out, "train");
  for (int i = 0; i < tr.size(); ++i) {
    std::vector<uint8_t> b;
    tr.read_jpeg(i, b);
    JpegInfo info;
    ASSERT_TRUE(thread_local_codec().header(b.data(), b.size(), &info, nullptr));
    const int w = kSizes[i % 5][0], h = kSizes[i % 5][1];
    if (std::min(w, h) <= 50) {
      EXPECT_EQ(b, read_bytes(p.root + "/" + tr.name(i))) << "small image kept as is";
    } else {
      EXPECT_EQ(std::min(info.width, info.height), 50) << i;
      const int longer = static_cast<int>(std::lround(std::max(w, h) * 50.0 / std::min(w, h)));
      EXPECT_EQ(std::max(info.width, info.height), longer) << i;
      EXPECT_EQ(info.width > info.height, w > h);
    }
  }
}

TEST(ImageNetPack, SameBytesForAnyThreadCount) {
  Packed p(true, 4, /*threads=*/1);
  const Manifest m3 = p.pack(4, 3, 0, p.tmp.file("out3"));
  EXPECT_EQ(m3.to_json(), p.man.to_json());  // includes every shard's CRC-32 and size
  for (const ShardEntry& e : m3.split("val")->shards)
    EXPECT_EQ(read_bytes(p.out + "/" + e.file), read_bytes(p.tmp.file("out3") + "/" + e.file));
}

TEST(ImageNetPack, InterruptedPackLeavesNoValidLookingShard) {
  Packed p(false, 4);
  const std::string clean = p.man.to_json();
  for (const std::string phase : {"shard-after-data", "shard-before-rename", "before-manifest"}) {
    const std::string out = p.tmp.file("crash_" + phase);
    PackOptions o;
    o.src = p.root;
    o.out = out;
    o.shard_size = 4;
    const std::string victim = out + "/" + shard_file_name("train", 2);
    o.hook = [&](const std::string& ph, const std::string& file) {
      if (ph == phase && (phase == "before-manifest" || file == victim)) throw std::runtime_error("simulated crash");
    };
    EXPECT_THROW(pack_imagenet(o), std::runtime_error) << phase;
    EXPECT_NE(::access((out + "/manifest.json").c_str(), F_OK), 0) << phase;
    if (phase != "before-manifest") {
      EXPECT_NE(::access(victim.c_str(), F_OK), 0) << "half shard under its final name after " << phase;
      EXPECT_EQ(::access((victim + ".tmp").c_str(), F_OK), 0) << phase;  // what a crash leaves
      EXPECT_EQ(::access((out + "/" + shard_file_name("train", 1)).c_str(), F_OK), 0);
    }
    // neither the reader nor validate accepts the folder
    EXPECT_THAT(usage_error([&] { ImageNetShards(out, "train"); }), HasSubstr("the pack did not finish"));
    const std::vector<FileCheck> v = validate_imagenet_dir(out, 1);
    ASSERT_EQ(v.size(), 1u);
    EXPECT_FALSE(v[0].ok);
    // packing again into the same folder removes the leftovers and gives the clean result
    o.hook = nullptr;
    EXPECT_EQ(pack_imagenet(o).to_json(), clean) << phase;
    EXPECT_NE(::access((victim + ".tmp").c_str(), F_OK), 0);
    EXPECT_EQ(ImageNetShards(out, "train").size(), 15);
  }
}

// ---- pack: the limit on undecodable images ---------------------------------------------

namespace {

const std::vector<uint8_t> kGarbage = {'h', 'e', 'l', 'l', 'o', '!', '!', '!'};

/// `n` undecodable files train/<cls>/zz_bad<k>.JPEG (sorted after the images).
void add_garbage(const std::string& root, int n, const std::string& cls = "n002") {
  for (int k = 0; k < n; ++k) write_bytes(root + "/train/" + cls + "/zz_bad" + std::to_string(k) + ".JPEG", kGarbage);
}

/// Names in a folder (sorted); {"<missing>"} if it does not exist.
std::vector<std::string> entries(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return {"<missing>"};
  std::vector<std::string> v;
  while (dirent* e = ::readdir(d))
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") v.push_back(e->d_name);
  ::closedir(d);
  std::sort(v.begin(), v.end());
  return v;
}

int run_pack_args(std::vector<std::string> args) {
  args.insert(args.begin(), "pack");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(&a[0]);
  return run_pack(static_cast<int>(argv.size()), argv.data());
}

}  // namespace

TEST(ImageNetPack, CorruptImagesUnderTheLimitAreSkippedAndCounted) {
  TempDir t("dsonas_imagenet_");
  const std::string root = t.file("src");
  make_tree(root, false);
  add_garbage(root, 3);  // 21 good + 3 bad = 24 images listed
  PackOptions o;
  o.src = root;
  o.out = t.file("out");
  o.shard_size = 4;
  std::ostringstream log;
  o.log = &log;
  // the default: 0.1 % of the images listed, at least 10
  EXPECT_EQ(pack_corrupt_limit(o, 24), 10);
  EXPECT_EQ(pack_corrupt_limit(o, 1281167), 1281);
  const Manifest m = pack_imagenet(o);
  EXPECT_EQ(m.split("train")->images, 15);
  ASSERT_EQ(m.skipped.size(), 3u);
  EXPECT_EQ(m.skipped[2].path, "train/n002/zz_bad2.JPEG");
  EXPECT_THAT(log.str(), HasSubstr("at most 10 undecodable images (the default --max-corrupt"));
  EXPECT_THAT(log.str(), HasSubstr(root + "/train/n002/zz_bad1.JPEG: skipped"));
  EXPECT_THAT(log.str(), HasSubstr("3 skipped (undecodable; limit 10)"));
  EXPECT_EQ(read_manifest(o.out).skipped.size(), 3u);
  EXPECT_EQ(ImageNetShards(o.out, "train").size(), 15);
  // exactly at the limit, as a count and as a percentage (12.5 % of 24 = 3)
  o.log = nullptr;
  o.max_corrupt = 3;
  o.out = t.file("count");
  EXPECT_EQ(pack_imagenet(o).skipped.size(), 3u);
  o.max_corrupt = -1;
  o.max_corrupt_percent = 12.5;
  EXPECT_EQ(pack_corrupt_limit(o, 24), 3);
  o.out = t.file("percent");
  EXPECT_EQ(pack_imagenet(o).to_json(), m.to_json());  // the limit is not part of the pack
  // --strict still overrides any limit
  EXPECT_EQ(pack_corrupt_limit(PackOptions{}, 24), 10);
  o.strict = true;
  EXPECT_EQ(pack_corrupt_limit(o, 24), 0);
  // bad limits
  PackOptions bad = o;
  bad.strict = false;
  bad.max_corrupt_percent = 101;
  EXPECT_THAT(usage_error([&] { pack_imagenet(bad); }), HasSubstr("--max-corrupt: a percentage must be in [0, 100]"));
  bad.max_corrupt = -7;
  EXPECT_THAT(usage_error([&] { pack_imagenet(bad); }), HasSubstr("--max-corrupt: must be >= 0"));
}

TEST(ImageNetPack, TooManyCorruptImagesIsAnErrorAndLeavesNoOutput) {
  TempDir t("dsonas_imagenet_");
  const std::string root = t.file("src");
  make_tree(root, false);
  // train: n001 img0-4, n002 img0-4 zz_bad0-2, n003 img0-4 = 18; val 6.  With 4
  // images per shard the third bad image is in the 4th range (images 12..15):
  // three train shards are written before the limit of 2 is exceeded.
  add_garbage(root, 3);
  PackOptions o;
  o.src = root;
  o.out = t.file("out");
  o.shard_size = 4;
  o.max_corrupt = 2;
  std::ostringstream log;
  o.log = &log;
  const std::string e = usage_error([&] { pack_imagenet(o); });
  EXPECT_THAT(e, HasSubstr("pack: too many undecodable images: 3 in the first 16 of 24 images, the limit is 2 "
                           "(--max-corrupt 2); first: " +
                           root + "/train/n002/zz_bad0.JPEG (not a JPEG"));
  EXPECT_THAT(e, HasSubstr(root + "/train/n002/zz_bad2.JPEG ("));
  EXPECT_THAT(e, HasSubstr("no pack written"));
  EXPECT_EQ(e.find('\n'), std::string::npos);
  EXPECT_THAT(log.str(), HasSubstr("removed the 3 shard files written and the folder " + o.out));
  EXPECT_EQ(entries(o.out), std::vector<std::string>({"<missing>"}));  // pack made the folder: gone again
  // an existing empty folder stays, empty
  o.out = t.file("empty");
  ASSERT_EQ(::mkdir(o.out.c_str(), 0755), 0);
  o.log = nullptr;
  EXPECT_THAT(usage_error([&] { pack_imagenet(o); }), HasSubstr("the limit is 2"));
  EXPECT_TRUE(entries(o.out).empty());
  // ... also one holding an interrupted pack's shards (removed first, as always)
  write_bytes(o.out + "/train-00007.h5.tmp", {1, 2, 3});
  EXPECT_THAT(usage_error([&] { pack_imagenet(o); }), HasSubstr("the limit is 2"));
  EXPECT_TRUE(entries(o.out).empty());
  // a percentage: 5 % of 24 images = 1
  o.max_corrupt = -1;
  o.max_corrupt_percent = 5;
  EXPECT_THAT(usage_error([&] { pack_imagenet(o); }), HasSubstr("the limit is 1 (--max-corrupt 5%)"));
  // a finished pack is never touched: refused before any image is decoded or any file removed
  o.max_corrupt_percent = -1;
  o.out = t.file("good");
  const Manifest good = pack_imagenet(o);
  const std::string good_json = slurp(o.out + "/manifest.json");
  o.max_corrupt = 0;
  EXPECT_THAT(usage_error([&] { pack_imagenet(o); }), HasSubstr("already holds a finished pack"));
  EXPECT_EQ(slurp(o.out + "/manifest.json"), good_json);
  EXPECT_EQ(ImageNetShards(o.out, "train").size(), 15);
  // --strict: the first bad image stops the pack, and the shards before it are removed too
  o.max_corrupt = -1;
  o.strict = true;
  o.out = t.file("strict");
  const std::string es = usage_error([&] { pack_imagenet(o); });
  EXPECT_THAT(es, HasSubstr(root + "/train/n002/zz_bad0.JPEG: cannot be decoded"));
  EXPECT_THAT(es, HasSubstr("--strict stops here"));
  EXPECT_EQ(entries(o.out), std::vector<std::string>({"<missing>"}));
  // a tree that is mostly garbage fails with the default limit (at least 10)
  const std::string junk = t.file("junk");
  make_tree(junk, false);
  add_garbage(junk, 12, "n001");
  PackOptions d;
  d.src = junk;
  d.out = t.file("junk_out");
  d.shard_size = 100;
  EXPECT_THAT(usage_error([&] { pack_imagenet(d); }),
              HasSubstr("12 in the first 27 of 33 images, the limit is 10 (the default --max-corrupt: 0.1% of the "
                        "images, at least 10)"));
  EXPECT_EQ(entries(d.out), std::vector<std::string>({"<missing>"}));
}

TEST(ImageNetPack, MaxCorruptCommandLineOption) {
  TempDir t("dsonas_imagenet_");
  const std::string root = t.file("src");
  make_tree(root, false);
  add_garbage(root, 3);
  const std::vector<std::string> base = {"--src", root, "--shard-size", "4", "--threads", "1"};
  auto with = [&](const std::string& out, const std::string& limit) {
    std::vector<std::string> a = base;
    a.insert(a.end(), {"--out", t.file(out), "--max-corrupt", limit});
    return a;
  };
  EXPECT_THAT(usage_error([&] { run_pack_args(with("a", "2")); }), HasSubstr("the limit is 2 (--max-corrupt 2)"));
  EXPECT_THAT(usage_error([&] { run_pack_args(with("b", "8.4%")); }), HasSubstr("the limit is 2 (--max-corrupt 8.4%)"));
  EXPECT_EQ(run_pack_args(with("c", "12.5%")), 0);
  EXPECT_EQ(read_manifest(t.file("c")).skipped.size(), 3u);
  EXPECT_EQ(run_pack_args(with("d", "3")), 0);
  for (const char* v : {"abc", "2x", "%", "1.2.3%", ""})
    EXPECT_THAT(usage_error([&] { run_pack_args(with("e", v)); }), HasSubstr("is neither a count")) << v;
  EXPECT_THAT(usage_error([&] { run_pack_args(with("e", "150%")); }), HasSubstr("must be in [0, 100]"));
  EXPECT_EQ(entries(t.file("e")), std::vector<std::string>({"<missing>"}));  // bad options: nothing written
  // --strict with the command line
  std::vector<std::string> s = base;
  s.insert(s.end(), {"--out", t.file("s"), "--strict"});
  EXPECT_THAT(usage_error([&] { run_pack_args(s); }), HasSubstr("--strict stops here"));
  // the other options: joined values, ranges, unknown and repeated-value mistakes (exit 2, nothing written)
  std::vector<std::string> j = {"--src=" + root, "--shard-size=4", "--threads=1", "--out=" + t.file("j"),
                                "--max-corrupt=3"};
  EXPECT_EQ(run_pack_args(j), 0);
  EXPECT_EQ(read_manifest(t.file("j")).skipped.size(), 3u);
  const std::vector<std::pair<std::vector<std::string>, std::string>> mistakes = {
      {{"--quality", "0"}, "pack: --quality: expected an integer in [1, 100] (got '0')"},
      {{"--shard-size", "x"}, "pack: --shard-size: expected a positive integer (got 'x')"},
      {{"--threads=-1"}, "pack: --threads: expected an integer in [0, 100000] (got '-1')"},
      {{"--strict=1"}, "pack: --strict takes no value (dsonas pack --help lists the options)"},
      {{"--shard"}, "pack: unexpected argument '--shard' (dsonas pack --help lists the options)"},
      {{"--splits"}, "pack: --splits needs a value (dsonas pack --help lists the options)"}};
  for (const auto& m : mistakes) {
    std::vector<std::string> a = {"--src", root, "--out", t.file("m")};
    a.insert(a.end(), m.first.begin(), m.first.end());
    EXPECT_EQ(usage_error([&] { run_pack_args(a); }), m.second);
  }
  EXPECT_EQ(entries(t.file("m")), std::vector<std::string>({"<missing>"}));
}

// ---- corrupt shards ---------------------------------------------------------------------

TEST(ImageNetCorrupt, TruncatedShard) {
  Packed p(false, 4);
  const std::string s1 = p.shard("train", 1);
  ASSERT_EQ(::truncate(s1.c_str(), p.man.split("train")->shards[1].bytes / 2), 0);
  const std::string e = usage_error([&] { ImageNetShards(p.out, "train"); });
  EXPECT_THAT(e, HasSubstr(s1 + " (ImageNet train shard 1): size"));
  EXPECT_THAT(e, HasSubstr("truncated"));
  EXPECT_EQ(e.find('\n'), std::string::npos);
  const std::vector<FileCheck> v = validate_imagenet_dir(p.out, 2);
  ASSERT_EQ(v.size(), 7u);  // manifest + 4 train + 2 val
  for (const FileCheck& f : v) EXPECT_EQ(f.ok, f.path != s1) << f.path << ": " << f.detail;
  EXPECT_THAT(v[2].detail, HasSubstr("truncated"));
  EXPECT_EQ(ImageNetShards(p.out, "val").size(), 6);  // other splits unaffected
}

TEST(ImageNetCorrupt, FlippedByteInAnImage) {
  Packed p(false, 4);
  const std::string s0 = p.shard("train", 0);
  uint64_t base = 0;
  std::vector<uint64_t> off;
  jpeg_layout(s0, &base, &off);
  ASSERT_EQ(off.size(), 5u);
  flip_byte(s0, base + off[1] + (off[2] - off[1]) / 2);  // inside image 1
  // opening checks structure only: fine; reading image 1 fails, naming shard, image and source file
  ImageNetShards tr(p.out, "train");
  std::vector<uint8_t> b;
  tr.read_jpeg(0, b);
  std::string e = usage_error([&] { tr.read_jpeg(1, b); });
  EXPECT_THAT(e, HasSubstr(s0 + " (ImageNet train shard 0): image 1 (train/n001/img1.JPEG)"));
  EXPECT_THAT(e, HasSubstr("CRC-32"));
  // ... also through the loader's worker threads, rethrown by next()
  ShardLoader l(tr, Sampler(all_indices(15), 15, 0, 1, 1, 1, false), imagenet_train_augment(), 1, 1, 3);
  e = usage_error([&] {
    Batch x;
    l.next(x);
  });
  EXPECT_THAT(e, HasSubstr("image 1 (train/n001/img1.JPEG)"));
  // verify_files and validate see it as a whole-file checksum mismatch
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "train", ShardOpenOptions{true}); }),
              HasSubstr(s0 + " (ImageNet train shard 0): CRC-32"));
  const std::vector<FileCheck> v = validate_imagenet_dir(p.out, 1);
  ASSERT_FALSE(v[1].ok);
  EXPECT_THAT(v[1].detail, HasSubstr("the manifest says"));
  EXPECT_THAT(v[1].detail, HasSubstr("image 1 (train/n001/img1.JPEG) has CRC-32"));
}

TEST(ImageNetCorrupt, WrongChecksumInManifest) {
  Packed p(false, 4);
  const ShardEntry e = p.man.split("val")->shards[1];
  set_manifest_entry(p.out, e.file, e.crc32 ^ 1u, static_cast<uint64_t>(e.bytes));
  EXPECT_EQ(ImageNetShards(p.out, "val").size(), 6);  // CRC of whole files is not read at open by default
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "val", ShardOpenOptions{true}); }),
              HasSubstr(p.shard("val", 1) + " (ImageNet val shard 1): CRC-32"));
  const std::vector<FileCheck> v = validate_imagenet_dir(p.out, 2);
  int bad = 0;
  for (const FileCheck& f : v)
    if (!f.ok) {
      ++bad;
      EXPECT_EQ(f.path, p.shard("val", 1));
      EXPECT_THAT(f.detail, HasSubstr("the file is corrupt or was changed after packing"));
    }
  EXPECT_EQ(bad, 1);
}

TEST(ImageNetCorrupt, LabelOutOfRange) {
  Packed p(false, 4);
  const std::string s2 = p.shard("train", 2);
  {  // rewrite one label with HDF5 (Fletcher-32 stays consistent), then fix the manifest's checksum
    hid_t f = H5Fopen(s2.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t d = H5Dopen2(f, "labels", H5P_DEFAULT);
    std::vector<int32_t> lab(4);
    H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, lab.data());
    lab[3] = 7;
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, lab.data());
    H5Dclose(d);
    H5Fclose(f);
  }
  uint64_t size = 0;
  const uint32_t crc = crc32_file(s2, &size);
  set_manifest_entry(p.out, shard_file_name("train", 2), crc, size);
  const std::string e = usage_error([&] { ImageNetShards(p.out, "train"); });
  EXPECT_THAT(
      e, HasSubstr(s2 + " (ImageNet train shard 2): label 7 of image 3 (train/n003/img1.JPEG) is out of range [0, 3)"));
  const std::vector<FileCheck> v = validate_imagenet_dir(p.out, 2);
  EXPECT_FALSE(v[3].ok);
  EXPECT_THAT(v[3].detail, HasSubstr("label 7 of image 3"));
}

TEST(ImageNetCorrupt, FlippedByteInLabelsFailsItsChecksum) {
  Packed p(false, 4);
  const std::string s0 = p.shard("train", 0);
  haddr_t addr = HADDR_UNDEF;
  {
    hid_t f = H5Fopen(s0.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "labels", H5P_DEFAULT);
    hsize_t off[1] = {0};
    unsigned mask = 0;
    hsize_t sz = 0;
    ASSERT_GE(H5Dget_chunk_info_by_coord(d, off, &mask, &addr, &sz), 0);
    H5Dclose(d);
    H5Fclose(f);
  }
  ASSERT_NE(addr, HADDR_UNDEF);
  flip_byte(s0, addr + 1);
  // 1. the manifest's metadata CRC-32 refuses the shard before HDF5 reads it
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "train"); }),
              HasSubstr(s0 + " (ImageNet train shard 0): its HDF5 metadata is damaged: CRC-32 "));
  const std::vector<FileCheck> v = validate_imagenet_dir(p.out, 2);
  EXPECT_FALSE(v[1].ok);
  EXPECT_THAT(v[1].detail, HasSubstr("its HDF5 metadata is damaged"));
  // 2. a pack made before that CRC existed: the whole file's CRC-32 is checked before HDF5 opens it
  const std::string manifest = slurp(p.out + "/manifest.json");
  drop_meta_crc(p.out);
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "train"); }),
              HasSubstr(s0 + " (ImageNet train shard 0): CRC-32 "));
  const std::vector<FileCheck> w = validate_imagenet_dir(p.out, 2);
  EXPECT_FALSE(w[1].ok);
  EXPECT_THAT(w[1].detail, HasSubstr("CRC-32 of the file is "));
  // 3. behind both (a manifest that agrees with the damaged file), the dataset's Fletcher-32
  spit(p.out + "/manifest.json", manifest);
  uint64_t size = 0;
  const uint32_t crc = crc32_file(s0, &size);
  set_manifest_entry(p.out, shard_file_name("train", 0), crc, size);
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "train"); }),
              HasSubstr(s0 + " (ImageNet train shard 0): dataset /labels is unreadable (Fletcher-32"));
}

TEST(ImageNetCorrupt, MissingOrBrokenManifestAndForeignShard) {
  Packed p(false, 4);
  const std::string man = p.out + "/manifest.json";
  const std::string text = slurp(man);
  spit(man, text.substr(0, text.size() / 2));
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "train"); }),
              HasSubstr(man + " (ImageNet manifest): not valid JSON"));
  std::string t2 = text;
  t2.replace(t2.find("\"format_version\": 1"), 19, "\"format_version\": 9");
  spit(man, t2);
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "train"); }), HasSubstr("format_version: 9 is not supported"));
  std::string t3 = text;
  t3.replace(t3.find("\"images\": 15"), 12, "\"images\": 16");
  spit(man, t3);
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "train"); }),
              HasSubstr("splits.train.images: 16 but its shards hold 15"));
  std::string t4 = text;  // a renamed field (damage): refused, not ignored
  t4.replace(t4.find("\"crc32\""), 7, "\"crc3x\"");
  spit(man, t4);
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "train"); }),
              HasSubstr("splits.train.shards[0].crc3x: unknown field"));
  ::unlink(man.c_str());
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "train"); }), HasSubstr(man + " (ImageNet manifest): missing"));
  spit(man, text);
  // a shard of another pack (other options) under the same name
  const Manifest other = p.pack(4, 2, 40, p.tmp.file("other"));
  const std::string s0 = p.shard("train", 0);
  std::vector<uint8_t> foreign = read_bytes(p.tmp.file("other") + "/" + shard_file_name("train", 0));
  write_bytes(s0, foreign);
  set_manifest_entry(p.out, shard_file_name("train", 0), other.split("train")->shards[0].crc32, foreign.size());
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.out, "train"); }), HasSubstr("belongs to another pack"));
  EXPECT_THAT(usage_error([&] { ImageNetShards(p.tmp.file("missing"), "train"); }), HasSubstr("dsonas pack"));
}

TEST(ImageNetCorrupt, UndecodableImageWithAGoodChecksumNamesShardAndImage) {
  // A packed image whose bytes match their CRC-32 but are no JPEG (e.g. a shard
  // written by a tool with another libjpeg): the loaders stop with exit 2
  // naming the shard file, the image's index in it and its source path.
  Packed p(false, 4);
  const std::string s0 = p.shard("train", 0);
  uint64_t base = 0;
  std::vector<uint64_t> off;
  jpeg_layout(s0, &base, &off);
  ASSERT_EQ(off.size(), 5u);
  std::vector<uint8_t> junk(static_cast<size_t>(off[2] - off[1]), 0x42);
  {
    std::fstream f(s0, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(base + off[1]));
    f.write(reinterpret_cast<const char*>(junk.data()), static_cast<std::streamsize>(junk.size()));
  }
  {  // the image's CRC-32 (Fletcher-32 of /crc32 stays consistent through HDF5)
    hid_t f = H5Fopen(s0.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t d = H5Dopen2(f, "crc32", H5P_DEFAULT);
    std::vector<uint32_t> crc(4);
    H5Dread(d, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, crc.data());
    crc[1] = crc32_bytes(junk.data(), junk.size());
    H5Dwrite(d, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, crc.data());
    H5Dclose(d);
    H5Fclose(f);
  }
  uint64_t size = 0;
  const uint32_t fcrc = crc32_file(s0, &size);
  set_manifest_entry(p.out, shard_file_name("train", 0), fcrc, size);
  ImageNetShards tr(p.out, "train", ShardOpenOptions{true});  // every checksum agrees
  std::vector<uint8_t> b;
  tr.read_jpeg(1, b);
  EXPECT_EQ(b, junk);
  const std::string where = s0 + " (ImageNet train shard 0): image 1 (train/n001/img1.JPEG): cannot decode the JPEG";
  for (int workers : {0, 2}) {
    ShardLoader l(tr, Sampler(all_indices(15), 15, 0, 1, 1, 1, false), imagenet_train_augment(), 1, 1, workers);
    const std::string e = usage_error([&] {
      Batch x;
      l.next(x);
    });
    EXPECT_THAT(e, HasSubstr("data: " + where)) << workers;
    EXPECT_THAT(e, HasSubstr("not a JPEG")) << workers;
    EXPECT_EQ(e.find('\n'), std::string::npos);
    ShardEvalIterator ev(tr, {0, 1, 2}, 3, imagenet_eval_augment(), workers);
    EXPECT_THAT(usage_error([&] {
                  Batch x;
                  ev.next(x);
                }),
                HasSubstr(where));
  }
  std::vector<float> x(2 * 3 * 224 * 224);
  std::vector<int32_t> y(2);
  EXPECT_THAT(usage_error([&] {
                make_imagenet_batch(tr, {0, 1}, imagenet_eval_augment(), 0, 0, 0, x.data(), y.data());
              }),
              HasSubstr(where));
}

namespace {

using testing_host::CountingHost;
using testing_host::kCountingHooks;

}  // namespace

TEST(ImageNetLoader, BatchBuffersComeFromTheHostMemoryHook) {
  Packed p(false, 4);
  ImageNetShards tr(p.out, "train");
  const std::vector<int> list = all_indices(tr.size());
  ImageNetAugment a = imagenet_train_augment();
  a.size = 32;
  for (bool hooked : {true, false}) {
    const HostMemoryHooks* prev = set_host_memory(hooked ? &kCountingHooks : nullptr);
    const int before = CountingHost::allocs;
    for (int workers : {0, 2}) {
      ShardLoader l(tr, Sampler(list, 4, 0, 1, 1, 2), a, 3, 4, workers);
      ShardEvalIterator ev(tr, list, 4, a, workers);  // 4 batches (4, 4, 4, 3)
      for (int k = 0; k < 4; ++k) {
        Batch b, e;
        l.next(b);
        ASSERT_TRUE(ev.next(e));
        ASSERT_EQ(b.data.size(), 4u * 3 * 32 * 32);
        EXPECT_EQ(CountingHost::owns(b.data.data()), hooked) << "workers " << workers << " batch " << k;
        EXPECT_EQ(CountingHost::owns(e.data.data()), hooked) << "workers " << workers << " eval batch " << k;
      }
    }
    EXPECT_EQ(CountingHost::allocs > before, hooked);
    set_host_memory(prev);
  }
  EXPECT_TRUE(CountingHost::live.empty());  // every hooked buffer went back to the hook
}

// ---- validate --------------------------------------------------------------------------

namespace {

std::vector<uint8_t> be32(uint32_t v) { return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)}; }

void write_idx_pair(const std::string& dir, const std::string& stem, int n, int rows, int bad_label_at = -1,
                    int truncate_by = 0) {
  std::vector<uint8_t> img, lab;
  for (uint32_t v : {0x803u, uint32_t(n), uint32_t(rows), uint32_t(rows)}) {
    auto b = be32(v);
    img.insert(img.end(), b.begin(), b.end());
  }
  for (int i = 0; i < n * rows * rows; ++i) img.push_back(static_cast<uint8_t>(i * 7));
  img.resize(img.size() - static_cast<size_t>(truncate_by));
  for (uint32_t v : {0x801u, uint32_t(n)}) {
    auto b = be32(v);
    lab.insert(lab.end(), b.begin(), b.end());
  }
  for (int i = 0; i < n; ++i) lab.push_back(static_cast<uint8_t>(i == bad_label_at ? 10 : i % 10));
  write_bytes(dir + "/" + stem + "-images-idx3-ubyte", img);
  write_bytes(dir + "/" + stem + "-labels-idx1-ubyte", lab);
}

RunConfig cfg_for(const std::string& dataset, const std::string& dir, const std::string& preset) {
  RunConfig c;
  c.dataset = dataset;
  c.data_dir = dir;
  c.space = SearchSpace::preset_named(preset);
  c.threads = 2;
  return c;
}

void write_cifar(const std::string& dir, int bad_label_file = -1, bool truncate_test = false) {
  for (int f = 1; f <= 6; ++f) {
    std::vector<uint8_t> b;
    for (int r = 0; r < 3; ++r) {
      b.push_back(static_cast<uint8_t>(f == bad_label_file && r == 1 ? 12 : (f + r) % 10));
      for (size_t q = 0; q < kCifarImageBytes; ++q) b.push_back(static_cast<uint8_t>(q + r));
    }
    if (f == 6 && truncate_test) b.resize(b.size() - 100);
    write_bytes(dir + (f < 6 ? "/data_batch_" + std::to_string(f) + ".bin" : std::string("/test_batch.bin")), b);
  }
}

}  // namespace

TEST(Validate, FashionMnistGoodAndBad) {
  TempDir t;
  write_idx_pair(t.path(), "train", 20, 28);
  write_idx_pair(t.path(), "t10k", 10, 28);
  ValidateReport r = validate_data(cfg_for("fmnist", t.path(), "fmnist"));
  EXPECT_EQ(r.bad(), 0) << r.first_error();
  ASSERT_EQ(r.files.size(), 4u);
  EXPECT_EQ(r.files[0].path, t.file("train-images-idx3-ubyte"));
  EXPECT_THAT(r.files[0].detail, HasSubstr("20 images 28x28"));
  EXPECT_THAT(r.files[3].detail, HasSubstr("10 labels in [0, 10)"));
  // a label out of range in the test labels, a truncated train image file
  write_idx_pair(t.path(), "t10k", 10, 28, /*bad_label_at=*/4);
  write_idx_pair(t.path(), "train", 20, 28, -1, /*truncate_by=*/30);
  r = validate_data(cfg_for("fmnist", t.path(), "fmnist"));
  EXPECT_EQ(r.bad(), 2);
  EXPECT_EQ(r.files[0].path, t.file("train-images-idx3-ubyte"));
  EXPECT_THAT(r.files[0].detail, HasSubstr("truncated"));
  const FileCheck& lab = r.files.back();
  EXPECT_FALSE(lab.ok);
  EXPECT_EQ(lab.path, t.file("t10k-labels-idx1-ubyte"));
  EXPECT_THAT(lab.detail, HasSubstr("label 10 at index 4 is out of range"));
  // images that do not fit the configured space
  write_idx_pair(t.path(), "train", 20, 28);
  write_idx_pair(t.path(), "t10k", 10, 28);
  r = validate_data(cfg_for("fmnist", t.path(), "cifar10"));
  ASSERT_EQ(r.bad(), 1);
  EXPECT_THAT(r.first_error(), HasSubstr("space.input: 3x32x32 but Fashion-MNIST gives 1x28x28"));
  // missing folder
  r = validate_data(cfg_for("fmnist", t.file("nope"), "fmnist"));
  EXPECT_THAT(r.first_error(), HasSubstr(t.file("nope") + " (Fashion-MNIST directory)"));
}

TEST(Validate, Cifar10GoodAndBad) {
  TempDir t;
  write_cifar(t.path());
  ValidateReport r = validate_data(cfg_for("cifar10", t.path(), "cifar10"));
  EXPECT_EQ(r.bad(), 0) << r.first_error();
  ASSERT_EQ(r.files.size(), 6u);
  EXPECT_THAT(r.files[5].detail, HasSubstr("3 records"));
  write_cifar(t.path(), /*bad_label_file=*/3, /*truncate_test=*/true);
  r = validate_data(cfg_for("cifar10", t.path(), "cifar10"));
  EXPECT_EQ(r.bad(), 2);
  for (const FileCheck& f : r.files) {
    const bool bad_one = f.path == t.file("data_batch_3.bin") || f.path == t.file("test_batch.bin");
    EXPECT_EQ(f.ok, !bad_one) << f.path;
  }
  EXPECT_THAT(r.files[2].detail, HasSubstr("label 12 at record 1"));
  EXPECT_THAT(r.files[5].detail, HasSubstr("not a multiple of the 3073-byte record"));
  ::unlink(t.file("data_batch_5.bin").c_str());
  r = validate_data(cfg_for("cifar10", t.path(), "cifar10"));
  EXPECT_FALSE(r.files[4].ok);
  EXPECT_THAT(r.files[4].detail, HasSubstr("data_batch_5.bin (CIFAR-10 train batch 5): cannot open"));
}

TEST(Validate, ImageNetThroughConfigAndCommand) {
  Packed p(false, 4);
  ValidateReport r = validate_data(cfg_for("imagenet", p.out, "imagenet"));
  EXPECT_EQ(r.bad(), 0) << r.first_error();
  EXPECT_EQ(r.files.size(), 7u);
  // the command: parse_config("validate", ...) accepts data.dataset = imagenet and needs no --out
  auto run = [&](const std::string& dir) {
    std::vector<std::string> args = {"validate",       "--data.dataset", "imagenet",  "--data.dir", dir,
                                     "--space.preset", "imagenet",       "--threads", "1"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(&a[0]);
    return run_validate(static_cast<int>(argv.size()), argv.data());
  };
  EXPECT_EQ(run(p.out), 0);
  ASSERT_EQ(::truncate(p.shard("val", 0).c_str(), 100), 0);
  const std::string e = usage_error([&] { run(p.out); });
  EXPECT_THAT(e, HasSubstr(p.shard("val", 0) + " (ImageNet val shard 0): size 100 bytes"));
  EXPECT_EQ(e.find('\n'), std::string::npos);
  // a pack holding only train is not enough for training
  const std::string only = p.tmp.file("only_train");
  PackOptions o;
  o.src = p.root;
  o.out = only;
  o.splits = {"train"};
  pack_imagenet(o);
  r = validate_data(cfg_for("imagenet", only, "imagenet"));
  EXPECT_THAT(r.first_error(), HasSubstr("no split 'val'"));
  // training commands read imagenet from a pack: data.dir must name it
  auto parse_search = [&](std::vector<std::string> args) {
    std::vector<char*> argv;
    for (auto& x : args) argv.push_back(&x[0]);
    return parse_config("search", static_cast<int>(argv.size()), argv.data());
  };
  EXPECT_THAT(usage_error([&] {
                parse_search({"search", "--data.dataset", "imagenet", "--out", only + "/x"});
              }),
              HasSubstr("data.dir: ImageNet is read from the HDF5 shards"));
  EXPECT_EQ(parse_search({"search", "--data.dataset", "imagenet", "--data.dir", p.out, "--out", only + "/x"}).dataset,
            "imagenet");
}
