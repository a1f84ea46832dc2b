// test_cifar.cpp — CIFAR-10 binary reader (exact pixels/labels/order, error
// messages), the §8.1 augmentation presets on CIFAR-shaped images (pad value,
// crop-offset uniformity, flip rate, cutout geometry and mean area, exact
// normalisation) and the 25 000 / 25 000 search split.
//
// Fixtures are small files in the real format (3 073-byte records) written in a
// fresh temporary directory.  With DSONAS_CIFAR10_DIR set to a real
// cifar-10-batches-bin directory, one extra test checks the real files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/data/augment.hpp"
#include "dsonas/data/cifar.hpp"
#include "dsonas/data/dataset.hpp"

using namespace dsonas;
using ::testing::HasSubstr;

namespace {

// ---- fixtures -------------------------------------------------------------------

using dsonas_test::TempDir;

void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// File 1..5 = data_batch_k, file 6 = test_batch.  Pixel value of (file, record,
// channel, row, col): the planes differ (c·80), and rows/cols/records/files all
// move the value, so a swapped plane, transposed image or misordered file shows.
uint8_t px(int file, int rec, int c, int y, int x) {
  return static_cast<uint8_t>((c * 80 + y * 7 + x * 3 + file * 11 + rec * 13) % 256);
}
uint8_t lab(int file, int rec) { return static_cast<uint8_t>((file * 3 + rec) % 10); }

std::vector<uint8_t> cifar_file(int file, int records) {
  std::vector<uint8_t> b;
  b.reserve(size_t(records) * kCifarRecordBytes);
  for (int r = 0; r < records; ++r) {
    b.push_back(lab(file, r));
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) b.push_back(px(file, r, c, y, x));
  }
  return b;
}

std::string batch_name(int k) { return "data_batch_" + std::to_string(k) + ".bin"; }

constexpr int kTrainRecs = 20, kTestRecs = 10;

void write_fixture(const TempDir& d) {
  for (int k = 1; k <= 5; ++k) write_raw(d.file(batch_name(k)), cifar_file(k, kTrainRecs));
  write_raw(d.file("test_batch.bin"), cifar_file(6, kTestRecs));
}

using dsonas_test::usage_error;

const double kMean[3] = {0.5071, 0.4867, 0.4408};
const double kStd[3] = {0.2675, 0.2565, 0.2761};
// docs/method.md §8.1 formula, in double.
double norm_ref(int c, int v) { return (v - 255.0 * kMean[c]) / (255.0 * kStd[c]); }

// ---- reader ---------------------------------------------------------------------

TEST(Cifar, LoadsTrainExactPixelsLabelsAndFileOrder) {
  TempDir d;
  write_fixture(d);
  const ImageSet s = load_cifar10(d.path(), true);
  ASSERT_EQ(s.n, 5 * kTrainRecs);
  EXPECT_EQ(s.c, 3);
  EXPECT_EQ(s.h, 32);
  EXPECT_EQ(s.w, 32);
  EXPECT_EQ(s.classes, 10);
  ASSERT_EQ(s.pixels.size(), size_t(s.n) * 3072);
  ASSERT_EQ(s.labels.size(), size_t(s.n));
  int bad = 0;
  for (int k = 1; k <= 5; ++k)
    for (int r = 0; r < kTrainRecs; ++r) {
      const int i = (k - 1) * kTrainRecs + r;
      EXPECT_EQ(s.labels[i], lab(k, r)) << "image " << i;
      const uint8_t* im = s.image(i);
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 32; ++y)
          for (int x = 0; x < 32; ++x) bad += im[(c * 32 + y) * 32 + x] != px(k, r, c, y, x);
    }
  EXPECT_EQ(bad, 0);
  // Spot checks in plain numbers: file 3, record 5, G plane (c=1), row 2, col 7.
  EXPECT_EQ(s.image(2 * kTrainRecs + 5)[(1 * 32 + 2) * 32 + 7], (80 + 14 + 21 + 33 + 65) % 256);
  EXPECT_THAT(s.source, HasSubstr("CIFAR-10 train"));
  EXPECT_THAT(s.source, HasSubstr("100 images"));
  EXPECT_THAT(s.source, HasSubstr("20+20+20+20+20"));
  // The histogram is consistent with the labels.
  auto h = s.class_histogram();
  ASSERT_EQ(h.size(), 10u);
  int64_t tot = 0;
  for (auto v : h) tot += v;
  EXPECT_EQ(tot, s.n);
}

TEST(Cifar, LoadsTestBatchAndAcceptsTrailingSlash) {
  TempDir d;
  write_fixture(d);
  const ImageSet s = load_cifar10(d.path() + "/", false);
  ASSERT_EQ(s.n, kTestRecs);
  EXPECT_EQ(s.c, 3);
  EXPECT_EQ(s.classes, 10);
  int bad = 0;
  for (int r = 0; r < kTestRecs; ++r) {
    EXPECT_EQ(s.labels[r], lab(6, r));
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) bad += s.image(r)[(c * 32 + y) * 32 + x] != px(6, r, c, y, x);
  }
  EXPECT_EQ(bad, 0);
  EXPECT_THAT(s.source, HasSubstr("CIFAR-10 test"));
  EXPECT_THAT(s.source, HasSubstr("10 images"));
}

TEST(Cifar, FilesOfDifferentSizesConcatenateInOrder) {
  TempDir d;
  const int recs[5] = {3, 1, 4, 1, 5};
  for (int k = 1; k <= 5; ++k) write_raw(d.file(batch_name(k)), cifar_file(k, recs[k - 1]));
  const ImageSet s = load_cifar10(d.path(), true);
  ASSERT_EQ(s.n, 14);
  int i = 0;
  for (int k = 1; k <= 5; ++k)
    for (int r = 0; r < recs[k - 1]; ++r, ++i) {
      EXPECT_EQ(s.labels[i], lab(k, r));
      EXPECT_EQ(s.image(i)[0], px(k, r, 0, 0, 0));
      EXPECT_EQ(s.image(i)[3071], px(k, r, 2, 31, 31));
    }
  EXPECT_THAT(s.source, HasSubstr("3+1+4+1+5"));
}

TEST(Cifar, MissingFileNamesFileRoleAndHint) {
  TempDir d;
  write_fixture(d);
  std::remove(d.file(batch_name(3)).c_str());
  std::string m = usage_error([&] { load_cifar10(d.path(), true); });
  EXPECT_THAT(m, HasSubstr(d.file(batch_name(3))));
  EXPECT_THAT(m, HasSubstr("(CIFAR-10 train batch 3)"));
  EXPECT_THAT(m, HasSubstr("No such file"));
  EXPECT_THAT(m, HasSubstr("cifar.html"));
  EXPECT_THAT(m, HasSubstr("data.dir"));
  EXPECT_EQ(m.find('\n'), std::string::npos);
  // The test set is still readable.
  EXPECT_EQ(load_cifar10(d.path(), false).n, kTestRecs);
  std::remove(d.file("test_batch.bin").c_str());
  m = usage_error([&] { load_cifar10(d.path(), false); });
  EXPECT_THAT(m, HasSubstr(d.file("test_batch.bin")));
  EXPECT_THAT(m, HasSubstr("(CIFAR-10 test batch)"));
}

TEST(Cifar, MissingOrWrongDirectory) {
  TempDir d;
  std::string m = usage_error([&] { load_cifar10(d.file("nope"), true); });
  EXPECT_THAT(m, HasSubstr(d.file("nope")));
  EXPECT_THAT(m, HasSubstr("CIFAR-10 directory"));
  EXPECT_THAT(m, HasSubstr("data.dir"));
  write_raw(d.file("plain"), {1, 2, 3});
  m = usage_error([&] { load_cifar10(d.file("plain"), true); });
  EXPECT_THAT(m, HasSubstr("not a directory"));
  // data.dir pointed at the parent of the unpacked tarball.
  ASSERT_EQ(::mkdir(d.file("cifar-10-batches-bin").c_str(), 0700), 0);
  for (int k = 1; k <= 5; ++k) write_raw(d.file("cifar-10-batches-bin/" + batch_name(k)), cifar_file(k, 2));
  m = usage_error([&] { load_cifar10(d.path(), true); });
  EXPECT_THAT(m, HasSubstr("set data.dir to " + d.path() + "/cifar-10-batches-bin"));
  EXPECT_EQ(load_cifar10(d.file("cifar-10-batches-bin"), true).n, 10);
}

TEST(Cifar, TruncatedFileReportsExpectedAndActualBytes) {
  TempDir d;
  write_fixture(d);
  std::vector<uint8_t> b = cifar_file(2, kTrainRecs);
  b.resize(b.size() - 100);  // 20·3073 − 100 = 61 360 bytes = 19 records + 2 973 bytes
  write_raw(d.file(batch_name(2)), b);
  const std::string m = usage_error([&] { load_cifar10(d.path(), true); });
  EXPECT_THAT(m, HasSubstr(d.file(batch_name(2))));
  EXPECT_THAT(m, HasSubstr("(CIFAR-10 train batch 2)"));
  EXPECT_THAT(m, HasSubstr("size 61360 bytes"));
  EXPECT_THAT(m, HasSubstr("not a multiple of the 3073-byte record"));
  EXPECT_THAT(m, HasSubstr("19 whole records + 2973 bytes"));
  EXPECT_THAT(m, HasSubstr("expected 30730000 bytes for 10000 records"));
  EXPECT_EQ(m.find('\n'), std::string::npos);
}

TEST(Cifar, EmptyFileAndDirectoryInsteadOfFile) {
  TempDir d;
  write_fixture(d);
  write_raw(d.file("test_batch.bin"), {});
  std::string m = usage_error([&] { load_cifar10(d.path(), false); });
  EXPECT_THAT(m, HasSubstr(d.file("test_batch.bin")));
  EXPECT_THAT(m, HasSubstr("empty file"));
  std::remove(d.file(batch_name(5)).c_str());
  ASSERT_EQ(::mkdir(d.file(batch_name(5)).c_str(), 0700), 0);
  m = usage_error([&] { load_cifar10(d.path(), true); });
  EXPECT_THAT(m, HasSubstr(d.file(batch_name(5))));
  EXPECT_THAT(m, HasSubstr("is a directory"));
}

TEST(Cifar, LabelOutOfRangeNamesFileRecordAndValue) {
  TempDir d;
  write_fixture(d);
  std::vector<uint8_t> b = cifar_file(4, kTrainRecs);
  b[7 * kCifarRecordBytes] = 10;
  write_raw(d.file(batch_name(4)), b);
  std::string m = usage_error([&] { load_cifar10(d.path(), true); });
  EXPECT_THAT(m, HasSubstr(d.file(batch_name(4))));
  EXPECT_THAT(m, HasSubstr("(CIFAR-10 train batch 4)"));
  EXPECT_THAT(m, HasSubstr("label 10 at record 7"));
  EXPECT_THAT(m, HasSubstr("out of range [0, 10)"));
  // 255 in the last record of the test file.
  std::vector<uint8_t> t = cifar_file(6, kTestRecs);
  t[9 * kCifarRecordBytes] = 255;
  write_raw(d.file("test_batch.bin"), t);
  m = usage_error([&] { load_cifar10(d.path(), false); });
  EXPECT_THAT(m, HasSubstr("label 255 at record 9"));
}

TEST(Cifar, FileListAndSingleFileCheck) {
  TempDir d;
  write_fixture(d);
  const std::vector<std::string> tr = cifar10_files(d.path(), true), te = cifar10_files(d.path() + "/", false);
  ASSERT_EQ(tr.size(), 5u);
  EXPECT_EQ(tr[0], d.file("data_batch_1.bin"));
  EXPECT_EQ(tr[4], d.file("data_batch_5.bin"));
  EXPECT_EQ(te, std::vector<std::string>{d.file("test_batch.bin")});
  EXPECT_EQ(check_cifar10_file(tr[2], "CIFAR-10 train batch 3"), kTrainRecs);
  EXPECT_EQ(check_cifar10_file(te[0], "CIFAR-10 test batch"), kTestRecs);
  std::vector<uint8_t> b = cifar_file(2, 4);
  b[2 * kCifarRecordBytes] = 10;  // label of record 2
  write_raw(d.file("data_batch_2.bin"), b);
  EXPECT_THAT(usage_error([&] { check_cifar10_file(tr[1], "CIFAR-10 train batch 2"); }),
              HasSubstr(tr[1] + " (CIFAR-10 train batch 2): label 10 at record 2"));
  b.pop_back();
  write_raw(d.file("data_batch_2.bin"), b);
  EXPECT_THAT(usage_error([&] { check_cifar10_file(tr[1], "CIFAR-10 train batch 2"); }), HasSubstr("not a multiple"));
}

TEST(Cifar, RealFilesWhenAvailable) {
  const char* dir = std::getenv("DSONAS_CIFAR10_DIR");
  if (!dir || !*dir) GTEST_SKIP() << "set DSONAS_CIFAR10_DIR to a cifar-10-batches-bin directory";
  const ImageSet tr = load_cifar10(dir, true), te = load_cifar10(dir, false);
  EXPECT_EQ(tr.n, 50000);
  EXPECT_EQ(te.n, 10000);
  for (auto v : tr.class_histogram()) EXPECT_EQ(v, 5000);
  for (auto v : te.class_histogram()) EXPECT_EQ(v, 1000);
}

// ---- augmentation presets ---------------------------------------------------------

TEST(CifarAugment, PresetsMatchAlgorithmSection81) {
  const Augment e = cifar10_eval_augment();
  EXPECT_EQ(e.pad, 0);
  EXPECT_FALSE(e.flip);
  EXPECT_EQ(e.cutout, 0);
  const std::vector<float> mean{0.5071f, 0.4867f, 0.4408f}, sd{0.2675f, 0.2565f, 0.2761f};
  EXPECT_EQ(e.mean, mean);
  EXPECT_EQ(e.std, sd);
  for (bool co : {false, true}) {
    const Augment a = cifar10_train_augment(co);
    EXPECT_EQ(a.pad, 4);
    EXPECT_EQ(a.pad_value, 127);
    EXPECT_TRUE(a.flip);
    EXPECT_EQ(a.cutout, co ? 16 : 0);
    EXPECT_EQ(a.mean, mean);
    EXPECT_EQ(a.std, sd);
    a.validate(3);  // usable for RGB
  }
}

// One 3×32×32 image whose pixels encode their position: R = 10 + row,
// G = 50 + col, B = 200 (none of them is the pad value 127).
ImageSet position_image() {
  ImageSet s;
  s.n = 1;
  s.c = 3;
  s.h = s.w = 32;
  s.classes = 10;
  s.labels = {4};
  s.pixels.resize(3072);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      s.pixels[(0 * 32 + y) * 32 + x] = static_cast<uint8_t>(10 + y);
      s.pixels[(1 * 32 + y) * 32 + x] = static_cast<uint8_t>(50 + x);
      s.pixels[(2 * 32 + y) * 32 + x] = 200;
    }
  return s;
}

// Undo the normalisation of channel c (round to the nearest 0..255 value).
int denorm(int c, float v) { return static_cast<int>(std::lround((v * kStd[c] + kMean[c]) * 255.0)); }

constexpr int kBatch = 1024, kBatches = 16;  // 16 384 draws
constexpr uint64_t kSeed = 20240611, kStream = 7;

TEST(CifarAugment, NormalisationExactForKnownPixels) {
  ImageSet s = position_image();
  s.pixels[0] = 0;                          // R(0,0) = 0
  s.pixels[(1 * 32 + 5) * 32 + 9] = 128;    // G(5,9) = 128
  s.pixels[(2 * 32 + 31) * 32 + 31] = 255;  // B(31,31) = 255
  std::vector<float> out(3072);
  int32_t label = -1;
  make_batch(s, {0}, cifar10_eval_augment(), kSeed, kStream, 0, out.data(), &label);
  EXPECT_EQ(label, 4);
  EXPECT_NEAR(out[0], (0 - 255 * 0.5071) / (255 * 0.2675), 1e-6);
  EXPECT_NEAR(out[0], -1.8957009345794393, 1e-6);
  EXPECT_NEAR(out[(1 * 32 + 5) * 32 + 9], (128 - 255 * 0.4867) / (255 * 0.2565), 1e-6);
  EXPECT_NEAR(out[(2 * 32 + 31) * 32 + 31], (255 - 255 * 0.4408) / (255 * 0.2761), 1e-6);
  EXPECT_NEAR(out[(2 * 32 + 31) * 32 + 31], 2.025353132922854, 1e-6);
  // Evaluation: no crop, no flip, no cutout — every pixel is just normalised.
  double worst = 0;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 1024; ++i)
      worst = std::max(worst, std::fabs(out[c * 1024 + i] - norm_ref(c, s.pixels[c * 1024 + i])));
  EXPECT_LT(worst, 1e-6);
}

TEST(CifarAugment, PadValueCropOffsetsAndFlipStatistics) {
  const ImageSet s = position_image();
  const Augment a = cifar10_train_augment(false);
  std::vector<int> idx(kBatch, 0);
  std::vector<float> out(size_t(kBatch) * 3072);
  std::vector<int32_t> labels(kBatch);
  std::vector<int64_t> cell(81, 0), mdy(9, 0), mdx(9, 0);
  int64_t flips = 0, pad_images = 0, mismatches = 0;
  const float padv[3] = {static_cast<float>(norm_ref(0, 127)), static_cast<float>(norm_ref(1, 127)),
                         static_cast<float>(norm_ref(2, 127))};
  for (int b = 0; b < kBatches; ++b) {
    make_batch(s, idx, a, kSeed, kStream, b, out.data(), labels.data());
    for (int i = 0; i < kBatch; ++i) {
      const float* o = out.data() + size_t(i) * 3072;
      // Decode the crop and flip from the centre pixel (always inside the image).
      const int sy = denorm(0, o[16 * 32 + 16]) - 10, sx = denorm(1, o[1024 + 16 * 32 + 16]) - 50;
      const bool flip = denorm(1, o[1024 + 16 * 32 + 17]) - 50 == sx - 1;
      const int dy = sy - 12, dx = sx - (flip ? 11 : 12);
      ASSERT_TRUE(dy >= 0 && dy <= 8 && dx >= 0 && dx <= 8) << dy << " " << dx;
      // Agrees with the documented draws.
      const AugDraw d = draw_augment(a, 32, 32, kSeed, kStream, b, i);
      ASSERT_EQ(d.dy, dy);
      ASSERT_EQ(d.dx, dx);
      ASSERT_EQ(d.flip, flip);
      ++cell[dy * 9 + dx];
      ++mdy[dy];
      ++mdx[dx];
      flips += flip;
      // The whole image against an independent reference; pad pixels = 127 normalised.
      int npad = 0;
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 32; ++y)
          for (int x = 0; x < 32; ++x) {
            const int ry = y + dy - 4, rx = (flip ? 31 - x : x) + dx - 4;
            const bool pad = ry < 0 || ry > 31 || rx < 0 || rx > 31;
            const float got = o[(c * 32 + y) * 32 + x];
            const double want = pad ? norm_ref(c, 127) : norm_ref(c, s.pixels[(c * 32 + ry) * 32 + rx]);
            mismatches += std::fabs(got - want) > 1e-6;
            if (pad) {
              ++npad;
              mismatches += got != padv[c] && std::fabs(got - padv[c]) > 1e-6;
            }
          }
      const int expect_pad = 1024 - (32 - std::abs(dy - 4)) * (32 - std::abs(dx - 4));
      EXPECT_EQ(npad, 3 * expect_pad);
      EXPECT_EQ(npad > 0, dy != 4 || dx != 4);
      pad_images += npad > 0;
    }
  }
  EXPECT_EQ(mismatches, 0);
  const double n = double(kBatch) * kBatches;
  // Pad appears unless the crop is centred (probability 80/81).
  EXPECT_NEAR(pad_images / n, 80.0 / 81.0, 0.01);
  // Chi-square over the 9×9 offsets (80 dof: mean 80, sd 12.6) and the 9 marginals (8 dof).
  auto chi2 = [](const std::vector<int64_t>& counts, double total) {
    const double e = total / counts.size();
    double x = 0;
    for (auto v : counts) x += (v - e) * (v - e) / e;
    return x;
  };
  EXPECT_LT(chi2(cell, n), 150.0);
  EXPECT_LT(chi2(mdy, n), 40.0);
  EXPECT_LT(chi2(mdx, n), 40.0);
  for (auto v : cell) EXPECT_GT(v, 0);
  // Flip rate 0.5 (sd 0.0039).
  EXPECT_NEAR(flips / n, 0.5, 0.02);
}

TEST(CifarAugment, CutoutGeometryAndMeanArea) {
  const ImageSet s = position_image();
  const Augment a = cifar10_train_augment(true);
  // §8.1: rows [clip(cy−8, 0, 31), clip(cy+8, 0, 32)) × cols likewise, cy, cx ∈ {0..31}.
  auto clip = [](int v, int lo, int hi) { return std::min(std::max(v, lo), hi); };
  auto side = [&](int cc) { return clip(cc + 8, 0, 32) - clip(cc - 8, 0, 31); };
  // Exact expectation and variance of the area by enumerating all 32×32 centres.
  double ea = 0, ea2 = 0;
  for (int cy = 0; cy < 32; ++cy)
    for (int cx = 0; cx < 32; ++cx) {
      const double ar = double(side(cy)) * side(cx);
      ea += ar / 1024;
      ea2 += ar * ar / 1024;
    }
  const double var = ea2 - ea * ea;
  EXPECT_NEAR(ea, 14.0 * 14.0, 1e-9);  // mean side: ((8+…+15) + 17·16 + (9+…+15))/32 = 14

  std::vector<int> idx(kBatch, 0);
  std::vector<float> out(size_t(kBatch) * 3072);
  std::vector<int32_t> labels(kBatch);
  std::vector<int64_t> hy(32, 0), hx(32, 0);
  double sum_area = 0;
  int64_t wrong = 0;
  for (int b = 0; b < kBatches; ++b) {
    make_batch(s, idx, a, kSeed, kStream, b, out.data(), labels.data());
    for (int i = 0; i < kBatch; ++i) {
      const float* o = out.data() + size_t(i) * 3072;
      const AugDraw d = draw_augment(a, 32, 32, kSeed, kStream, b, i);
      ASSERT_TRUE(d.cy >= 0 && d.cy < 32 && d.cx >= 0 && d.cx < 32);
      ++hy[d.cy];
      ++hx[d.cx];
      const int y0 = clip(d.cy - 8, 0, 31), y1 = clip(d.cy + 8, 0, 32);
      const int x0 = clip(d.cx - 8, 0, 31), x1 = clip(d.cx + 8, 0, 32);
      int zeros = 0;
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 32; ++y)
          for (int x = 0; x < 32; ++x) {
            const bool in = y >= y0 && y < y1 && x >= x0 && x < x1;
            const bool zero = o[(c * 32 + y) * 32 + x] == 0.0f;
            wrong += in != zero;
            zeros += zero;
          }
      EXPECT_EQ(zeros % 3, 0);
      sum_area += zeros / 3;
    }
  }
  EXPECT_EQ(wrong, 0);
  const double n = double(kBatch) * kBatches;
  EXPECT_NEAR(sum_area / n, ea, 5 * std::sqrt(var / n)) << "exact expectation " << ea;
  // Centres uniform over {0..31} (31 dof: mean 31, sd 7.9).
  for (const auto* h : {&hy, &hx}) {
    double x2 = 0;
    for (auto v : *h) x2 += (v - n / 32) * (v - n / 32) / (n / 32);
    EXPECT_LT(x2, 75.0);
  }
}

// ---- search split -----------------------------------------------------------------

TEST(CifarSplit, HalfAndHalfOf50000Stratified) {
  // 50 000 labels, 5 000 per class as in the real train set, in a shuffled order.
  ImageSet s;
  s.n = 50000;
  s.c = 3;
  s.h = s.w = 32;
  s.classes = 10;
  s.labels.resize(s.n);  // pixels are not needed by split_indices
  for (int i = 0; i < s.n; ++i) s.labels[i] = i % 10;
  Rng r(99, 1);
  for (int i = s.n - 1; i > 0; --i) std::swap(s.labels[i], s.labels[r.below(uint32_t(i + 1))]);

  const Split sp = split_indices(s, 0.5, 12345);
  ASSERT_EQ(sp.first.size(), 25000u);
  ASSERT_EQ(sp.second.size(), 25000u);
  std::vector<char> seen(s.n, 0);
  for (const auto* half : {&sp.first, &sp.second})
    for (int i : *half) {
      ASSERT_TRUE(i >= 0 && i < s.n);
      ASSERT_EQ(seen[i], 0) << "index " << i << " in both halves";
      seen[i] = 1;
    }
  std::vector<int> per(10, 0);
  for (int i : sp.first) ++per[s.labels[i]];
  for (int k = 0; k < 10; ++k) EXPECT_LE(std::abs(per[k] - 2500), 1) << "class " << k;
  EXPECT_TRUE(std::is_sorted(sp.first.begin(), sp.first.end()));
  // Deterministic in the seed, different for another seed.
  EXPECT_EQ(split_indices(s, 0.5, 12345).first, sp.first);
  EXPECT_NE(split_indices(s, 0.5, 54321).first, sp.first);

  // Unbalanced classes: each class still within one of half its size.
  std::vector<int64_t> hist(10, 0);
  for (int i = 0; i < s.n; ++i) {
    s.labels[i] = (i * 7) % 13 < 10 ? (i * 7) % 13 : i % 3;
    ++hist[s.labels[i]];
  }
  const Split sq = split_indices(s, 0.5, 7);
  EXPECT_EQ(sq.first.size(), 25000u);
  EXPECT_EQ(sq.second.size(), 25000u);
  std::vector<int64_t> got(10, 0);
  for (int i : sq.first) ++got[s.labels[i]];
  for (int k = 0; k < 10; ++k) EXPECT_LE(std::abs(double(got[k]) - hist[k] / 2.0), 1.0) << "class " << k;
}

}  // namespace
