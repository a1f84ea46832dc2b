// test_data.cpp — data module: IDX reader and its error messages, Fashion-MNIST
// (skipped when not installed), synthetic set, W/λ split, Sampler (shuffling,
// sharding, resume), augmentation statistics and exactness, Loader (prefetch
// on/off equality, restore, shutdown), the evaluation iterator, and where batch
// buffers come from (the host-memory hook a CUDA backend uses for pinned memory).
//
// IDX fixtures are written by the tests themselves (raw and gzipped via zlib)
// in a fresh temporary directory.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "counting_host.hpp"
#include "test_util.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/data/augment.hpp"
#include "dsonas/data/dataset.hpp"
#include "dsonas/core/host_memory.hpp"
#include "dsonas/data/loader.hpp"
#include "dsonas/data/sampler.hpp"

using namespace dsonas;
using ::testing::HasSubstr;

namespace {

// ---- fixtures -------------------------------------------------------------------

std::vector<uint8_t> be32(uint32_t v) { return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)}; }

std::vector<uint8_t> idx_images(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols,
                                const std::vector<uint8_t>& px) {
  std::vector<uint8_t> b;
  for (uint32_t v : {magic, n, rows, cols}) {
    auto x = be32(v);
    b.insert(b.end(), x.begin(), x.end());
  }
  b.insert(b.end(), px.begin(), px.end());
  return b;
}

std::vector<uint8_t> idx_labels(uint32_t magic, uint32_t n, const std::vector<uint8_t>& lab) {
  std::vector<uint8_t> b;
  for (uint32_t v : {magic, n}) {
    auto x = be32(v);
    b.insert(b.end(), x.begin(), x.end());
  }
  b.insert(b.end(), lab.begin(), lab.end());
  return b;
}

void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), int(bytes.size()));
  gzclose(f);
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

using dsonas_test::TempDir;

// 5 images of 3×4, every pixel distinct; labels 0..4 mod 10.
constexpr uint32_t kN = 5, kRows = 3, kCols = 4;
std::vector<uint8_t> fixture_pixels() {
  std::vector<uint8_t> px(kN * kRows * kCols);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  return px;
}
std::vector<uint8_t> fixture_labels() { return {3, 0, 9, 4, 7}; }

using dsonas_test::usage_error;

struct IdxFixture : ::testing::Test {
  TempDir dir;
  std::string img, lab;
  void write(bool gz, const std::vector<uint8_t>& ib, const std::vector<uint8_t>& lb) {
    img = dir.file(gz ? "img.gz" : "img");
    lab = dir.file(gz ? "lab.gz" : "lab");
    if (gz) {
      write_gz(img, ib);
      write_gz(lab, lb);
    } else {
      write_raw(img, ib);
      write_raw(lab, lb);
    }
  }
  void write_good(bool gz) {
    write(gz, idx_images(0x803, kN, kRows, kCols, fixture_pixels()), idx_labels(0x801, kN, fixture_labels()));
  }
};

}  // namespace

// ---- IDX reader -----------------------------------------------------------------

TEST_F(IdxFixture, LoadsRawAndGzipExactly) {
  for (bool gz : {false, true}) {
    write_good(gz);
    ImageSet s = load_idx(img, lab, 10);
    EXPECT_EQ(s.n, int(kN));
    EXPECT_EQ(s.c, 1);
    EXPECT_EQ(s.h, int(kRows));
    EXPECT_EQ(s.w, int(kCols));
    EXPECT_EQ(s.classes, 10);
    EXPECT_EQ(s.pixels, fixture_pixels());
    EXPECT_EQ(s.labels, std::vector<int32_t>({3, 0, 9, 4, 7}));
    EXPECT_THAT(s.source, HasSubstr(img));
    EXPECT_EQ(s.image(2)[0], fixture_pixels()[2 * kRows * kCols]);
  }
}

TEST_F(IdxFixture, BadMagic) {
  for (bool gz : {false, true}) {
    write(gz, idx_images(0, kN, kRows, kCols, fixture_pixels()), idx_labels(0x801, kN, fixture_labels()));
    std::string m = usage_error([&] { load_idx(img, lab, 10, "train"); });
    EXPECT_THAT(m, HasSubstr(img));
    EXPECT_THAT(m, HasSubstr("train images"));
    EXPECT_THAT(m, HasSubstr("bad magic 0x00000000 (expected 0x00000803)"));
    write(gz, idx_images(0x803, kN, kRows, kCols, fixture_pixels()), idx_labels(0x803, kN, fixture_labels()));
    m = usage_error([&] { load_idx(img, lab, 10); });
    EXPECT_THAT(m, HasSubstr(lab));
    EXPECT_THAT(m, HasSubstr("bad magic 0x00000803 (expected 0x00000801)"));
  }
}

TEST_F(IdxFixture, TruncatedPayloadNamesExpectedAndActualBytes) {
  for (bool gz : {false, true}) {
    auto px = fixture_pixels();
    px.resize(px.size() - 7);  // 53 of 60 pixel bytes
    write(gz, idx_images(0x803, kN, kRows, kCols, px), idx_labels(0x801, kN, fixture_labels()));
    std::string m = usage_error([&] { load_idx(img, lab, 10); });
    EXPECT_THAT(m, HasSubstr(img));
    EXPECT_THAT(m, HasSubstr("truncated"));
    EXPECT_THAT(m, HasSubstr("60 bytes"));
    EXPECT_THAT(m, HasSubstr("got 53"));
    EXPECT_EQ(m.find('\n'), std::string::npos) << "one-line message";
  }
  // Header itself cut short.
  write(false, {0, 0, 8}, idx_labels(0x801, kN, fixture_labels()));
  std::string m = usage_error([&] { load_idx(img, lab, 10); });
  EXPECT_THAT(m, HasSubstr(img));
  EXPECT_THAT(m, HasSubstr("truncated"));
}

TEST_F(IdxFixture, TruncatedGzipStream) {
  // A larger image file so the compressed stream is long enough to cut.
  std::vector<uint8_t> px(200 * 28 * 28);
  Rng r(1, 2);
  for (auto& v : px) v = static_cast<uint8_t>(r.next_u64());
  std::vector<uint8_t> lb(200, 1);
  write(true, idx_images(0x803, 200, 28, 28, px), idx_labels(0x801, 200, lb));
  auto bytes = read_all(img);
  bytes.resize(bytes.size() / 2);
  write_raw(img, bytes);
  std::string m = usage_error([&] { load_idx(img, lab, 10); });
  EXPECT_THAT(m, HasSubstr(img));
  EXPECT_THAT(m, HasSubstr("truncated"));
  EXPECT_THAT(m, HasSubstr(std::to_string(200 * 28 * 28) + " bytes"));
}

TEST_F(IdxFixture, TrailingBytes) {
  auto px = fixture_pixels();
  px.push_back(1);
  write(false, idx_images(0x803, kN, kRows, kCols, px), idx_labels(0x801, kN, fixture_labels()));
  std::string m = usage_error([&] { load_idx(img, lab, 10); });
  EXPECT_THAT(m, HasSubstr(img));
  EXPECT_THAT(m, HasSubstr("1 bytes after"));
}

TEST_F(IdxFixture, CountMismatch) {
  write(true, idx_images(0x803, kN, kRows, kCols, fixture_pixels()), idx_labels(0x801, kN - 1, {3, 0, 9, 4}));
  std::string m = usage_error([&] { load_idx(img, lab, 10); });
  EXPECT_THAT(m, HasSubstr(img));
  EXPECT_THAT(m, HasSubstr(lab));
  EXPECT_THAT(m, HasSubstr("5 images"));
  EXPECT_THAT(m, HasSubstr("4 labels"));
}

TEST_F(IdxFixture, LabelOutOfRange) {
  write(false, idx_images(0x803, kN, kRows, kCols, fixture_pixels()), idx_labels(0x801, kN, {3, 0, 9, 12, 7}));
  std::string m = usage_error([&] { load_idx(img, lab, 10); });
  EXPECT_THAT(m, HasSubstr(lab));
  EXPECT_THAT(m, HasSubstr("label 12 at index 3"));
  EXPECT_THAT(m, HasSubstr("[0, 10)"));
  // The same file is fine with more classes.
  EXPECT_EQ(load_idx(img, lab, 13).labels[3], 12);
}

TEST_F(IdxFixture, MissingFileNamesPathAndRole) {
  write_good(false);
  const std::string missing = dir.file("nope-images");
  std::string m = usage_error([&] { load_idx(missing, lab, 10, "train"); });
  EXPECT_THAT(m, HasSubstr(missing));
  EXPECT_THAT(m, HasSubstr("train images"));
  EXPECT_THAT(m, HasSubstr("No such file"));
  EXPECT_THAT(m, HasSubstr("hint"));
  m = usage_error([&] { load_idx(img, dir.file("nope-labels"), 10, "test"); });
  EXPECT_THAT(m, HasSubstr("nope-labels"));
  EXPECT_THAT(m, HasSubstr("test labels"));
  m = usage_error([&] { load_idx(dir.path(), lab, 10); });
  EXPECT_THAT(m, HasSubstr("directory"));
  m = usage_error([&] { load_fashion_mnist(dir.file("no-such-dir"), true); });
  EXPECT_THAT(m, HasSubstr("no-such-dir"));
  m = usage_error([&] { load_fashion_mnist(dir.path(), false); });
  EXPECT_THAT(m, HasSubstr("t10k-images-idx3-ubyte.gz"));
  EXPECT_THAT(m, HasSubstr("test images"));
}

TEST_F(IdxFixture, GarbageFiles) {
  write_good(true);
  // Plain garbage (not gzip): read transparently, fails on the magic.
  write_raw(img,
            std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', '!', '!', '!', '!', '!'});
  std::string m = usage_error([&] { load_idx(img, lab, 10); });
  EXPECT_THAT(m, HasSubstr(img));
  EXPECT_THAT(m, HasSubstr("bad magic"));
  // A gzip header followed by garbage: zlib reports corrupt data.
  std::vector<uint8_t> g = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
  Rng r(7, 7);
  for (int i = 0; i < 500; ++i) g.push_back(static_cast<uint8_t>(r.next_u64()));
  write_raw(img, g);
  m = usage_error([&] { load_idx(img, lab, 10); });
  EXPECT_THAT(m, HasSubstr(img));
  EXPECT_THAT(m, ::testing::AnyOf(HasSubstr("corrupt gzip"), HasSubstr("truncated")));
  // Flipped byte in the middle of a valid gzip stream (CRC or inflate error).
  write_good(true);
  auto ok = read_all(lab);
  ok[ok.size() - 6] ^= 0xff;  // inside the CRC32 trailer
  write_raw(lab, ok);
  m = usage_error([&] { load_idx(img, lab, 10); });
  EXPECT_THAT(m, HasSubstr(lab));
  EXPECT_THAT(m, HasSubstr("corrupt gzip"));
}

// ---- Fashion-MNIST ----------------------------------------------------------------

TEST(FashionMnist, LoadsTrainAndTest) {
  struct stat st;
  if (::stat(kFashionMnistDir, &st) != 0)
    GTEST_SKIP() << "Fashion-MNIST not installed (" << kFashionMnistDir
                 << " missing; apt-get install dataset-fashion-mnist)";
  ImageSet tr = load_fashion_mnist(kFashionMnistDir, true);
  EXPECT_EQ(tr.n, 60000);
  EXPECT_EQ(tr.c, 1);
  EXPECT_EQ(tr.h, 28);
  EXPECT_EQ(tr.w, 28);
  EXPECT_EQ(tr.pixels.size(), size_t(60000) * 28 * 28);
  EXPECT_EQ(tr.class_histogram(), std::vector<int64_t>(10, 6000));
  double mean = std::accumulate(tr.pixels.begin(), tr.pixels.end(), 0.0) / tr.pixels.size() / 255.0;
  EXPECT_NEAR(mean, 0.2860, 0.001);  // the default normalisation mean
  ImageSet te = load_fashion_mnist(kFashionMnistDir, false);
  EXPECT_EQ(te.n, 10000);
  EXPECT_EQ(te.h, 28);
  EXPECT_EQ(te.w, 28);
  EXPECT_EQ(te.class_histogram(), std::vector<int64_t>(10, 1000));
}

// ---- synthetic ----------------------------------------------------------------------

TEST(Synthetic, DeterministicBalancedAndLearnable) {
  ImageSet a = make_synthetic(1200, 1, 16, 16, 10, 42);
  ImageSet b = make_synthetic(1200, 1, 16, 16, 10, 42);
  ImageSet c = make_synthetic(1200, 1, 16, 16, 10, 43);
  EXPECT_EQ(a.pixels, b.pixels);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_NE(a.pixels, c.pixels);
  EXPECT_EQ(a.class_histogram(), std::vector<int64_t>(10, 120));
  // Learnable: a nearest-class-mean classifier fit on 1000 images does well on 200 others.
  const size_t sz = a.image_size();
  std::vector<double> mean(10 * sz, 0.0);
  for (int i = 0; i < 1000; ++i)
    for (size_t p = 0; p < sz; ++p) mean[a.labels[i] * sz + p] += a.image(i)[p] / 100.0;
  int correct = 0;
  for (int i = 1000; i < 1200; ++i) {
    int best = -1;
    double bd = 1e300;
    for (int k = 0; k < 10; ++k) {
      double d = 0;
      for (size_t p = 0; p < sz; ++p) d += std::pow(a.image(i)[p] - mean[k * sz + p], 2);
      if (d < bd) bd = d, best = k;
    }
    correct += best == a.labels[i];
  }
  EXPECT_GT(correct, 160) << "nearest-mean accuracy " << correct / 2.0 << "%";
  // Multi-channel works.
  ImageSet m = make_synthetic(20, 3, 8, 8, 4, 1);
  EXPECT_EQ(m.pixels.size(), size_t(20 * 3 * 8 * 8));
  EXPECT_EQ(usage_error([] { make_synthetic(0, 1, 8, 8, 4, 1); }).find("data:"), 0u);
}

// ---- split --------------------------------------------------------------------------

TEST(Split, DisjointCoveringDeterministicStratified) {
  ImageSet s = make_synthetic(1003, 1, 4, 4, 10, 5);  // classes of 101 and 100
  for (double f : {0.5, 0.3, 0.8}) {
    Split a = split_indices(s, f, 11), b = split_indices(s, f, 11), c = split_indices(s, f, 12);
    EXPECT_EQ(a.first, b.first);
    EXPECT_EQ(a.second, b.second);
    EXPECT_NE(a.first, c.first);
    EXPECT_EQ(int64_t(a.first.size()), std::llround(f * 1003));
    EXPECT_EQ(a.first.size() + a.second.size(), 1003u);
    std::vector<int> all = a.first;
    all.insert(all.end(), a.second.begin(), a.second.end());
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all, all_indices(1003));  // disjoint and covering
    EXPECT_TRUE(std::is_sorted(a.first.begin(), a.first.end()));
    std::vector<int> per(10, 0), tot(10, 0);
    for (int i : a.first) ++per[s.labels[i]];
    for (int i = 0; i < s.n; ++i) ++tot[s.labels[i]];
    for (int k = 0; k < 10; ++k) EXPECT_LE(std::abs(per[k] - f * tot[k]), 1.0) << "class " << k;
  }
  EXPECT_THAT(usage_error([&] { split_indices(s, 1.0, 1); }), HasSubstr("fraction"));
  EXPECT_THAT(usage_error([&] { split_indices(s, 0.0, 1); }), HasSubstr("fraction"));
  ImageSet tiny = make_synthetic(1, 1, 4, 4, 1, 5);
  EXPECT_THAT(usage_error([&] { split_indices(tiny, 0.5, 1); }), HasSubstr("empty"));
}

TEST(Split, FromLabelsAloneEqualsFromTheSet) {
  // split_labels is what sets that are not in memory (ImageNet shards) use.
  ImageSet s = make_synthetic(503, 1, 4, 4, 7, 3);
  for (double f : {0.5, 0.8}) {
    const Split a = split_indices(s, f, 9), b = split_labels(s.labels, s.classes, f, 9);
    EXPECT_EQ(a.first, b.first);
    EXPECT_EQ(a.second, b.second);
  }
  // an unlabelled set (classes = 0) still splits
  ImageSet u = s;
  u.classes = 0;
  u.labels.clear();
  const Split c = split_indices(u, 0.5, 9);
  EXPECT_EQ(c.first.size() + c.second.size(), 503u);
}

TEST(Split, ShardIndices) {
  std::vector<int> v = all_indices(10);
  std::vector<int> cat;
  for (int r = 0; r < 3; ++r) {
    auto s = shard_indices(v, r, 3);
    EXPECT_GE(s.size(), 3u);
    cat.insert(cat.end(), s.begin(), s.end());
  }
  EXPECT_EQ(cat, v);
}

// ---- sampler ------------------------------------------------------------------------

TEST(Sampler, PermutationPerEpoch) {
  std::vector<int> list;
  for (int i = 0; i < 50; ++i) list.push_back(3 * i + 1);
  Sampler s(list, 4, 0, 1, 9, 100), t(list, 4, 0, 1, 9, 100), u(list, 4, 0, 1, 9, 101);
  EXPECT_EQ(s.steps_per_epoch(), 12);  // floor(50/4), partial batch dropped
  for (int64_t e = 0; e < 3; ++e) {
    auto p = s.permutation(e);
    EXPECT_EQ(p, t.permutation(e));
    EXPECT_NE(p, u.permutation(e));
    EXPECT_NE(p, s.permutation(e + 1));
    auto q = p;
    std::sort(q.begin(), q.end());
    EXPECT_EQ(q, list);
  }
  // next() walks the permutation in order and flags the epoch end.
  for (int64_t e = 0; e < 3; ++e) {
    auto p = s.permutation(e);
    for (int64_t k = 0; k < 12; ++k) {
      EXPECT_EQ(s.state(), (SamplerState{e, k}));
      EXPECT_EQ(s.global_step(), e * 12 + k);
      bool ended = false;
      auto b = s.next(&ended);
      EXPECT_EQ(b, std::vector<int>(p.begin() + 4 * k, p.begin() + 4 * k + 4));
      EXPECT_EQ(ended, k == 11);
    }
  }
  Sampler ordered(list, 5, 0, 1, 9, 100, /*shuffle=*/false);
  EXPECT_EQ(ordered.next(), std::vector<int>(list.begin(), list.begin() + 5));
}

TEST(Sampler, ShardingMatchesSingleRank) {
  auto list = all_indices(103);
  const int B = 6;
  Sampler one(list, 2 * B, 0, 1, 3, 7), r0(list, B, 0, 2, 3, 7), r1(list, B, 1, 2, 3, 7);
  EXPECT_EQ(r0.steps_per_epoch(), 103 / 12);
  EXPECT_EQ(one.steps_per_epoch(), r0.steps_per_epoch());
  for (int k = 0; k < 3 * r0.steps_per_epoch(); ++k) {
    bool e1, e2, e3;
    auto g = one.next(&e1), a = r0.next(&e2), b = r1.next(&e3);
    EXPECT_EQ(e1, e2);
    EXPECT_EQ(e1, e3);
    std::set<int> sa(a.begin(), a.end()), sb(b.begin(), b.end());
    for (int x : sa) EXPECT_EQ(sb.count(x), 0u);
    std::vector<int> cat = a;
    cat.insert(cat.end(), b.begin(), b.end());
    EXPECT_EQ(cat, g);
  }
  // All batches of an epoch are disjoint.
  Sampler s(list, 10, 0, 1, 1, 1);
  std::set<int> seen;
  for (int k = 0; k < s.steps_per_epoch(); ++k)
    for (int x : s.next()) EXPECT_TRUE(seen.insert(x).second);
  EXPECT_EQ(seen.size(), 100u);
}

TEST(Sampler, StateResumesExactly) {
  auto list = all_indices(77);
  Sampler a(list, 5, 1, 3, 21, 4);
  std::vector<std::vector<int>> ref;
  std::vector<SamplerState> st;
  for (int k = 0; k < 40; ++k) {
    st.push_back(a.state());
    ref.push_back(a.next());
  }
  for (int from : {0, 3, 4, 5, 17, 39}) {
    Sampler b(list, 5, 1, 3, 21, 4);
    b.set_state(st[from]);
    for (int k = from; k < 40; ++k) EXPECT_EQ(b.next(), ref[k]) << "from " << from << " k " << k;
  }
  EXPECT_THAT(usage_error([&] { a.set_state({0, 5}); }), HasSubstr("position"));
  EXPECT_THAT(usage_error([&] { Sampler(all_indices(9), 5, 0, 2, 1, 1); }), HasSubstr("fewer than one global batch"));
  EXPECT_THAT(usage_error([&] { Sampler(list, 5, 2, 2, 1, 1); }), HasSubstr("rank"));
}

// --allow-world-size-change: after a re-shard the epoch continues with the
// samples it has not taken, each exactly once; only fewer than one new global
// batch (the dropped partial batch) is left out; the next epoch is whole.
TEST(Sampler, ReshardSkipsAndRepeatsNothing) {
  const int n = 103, B = 4;
  auto list = all_indices(n);
  for (auto ww : std::vector<std::pair<int, int>>{{1, 2}, {2, 1}, {3, 2}, {2, 3}, {2, 5}}) {
    const int then = ww.first, now = ww.second;
    for (int taken_steps : {0, 1, 3, n / (B * then) - 1}) {
      std::vector<Sampler> old;
      for (int r = 0; r < then; ++r) old.emplace_back(list, B, r, then, 5, 9);
      std::multiset<int> seen;
      for (int k = 0; k < taken_steps; ++k)
        for (auto& s : old)
          for (int x : s.next()) seen.insert(x);
      // resume from rank 0's state (all ranks hold the same state)
      const SamplerState rs = Sampler::reshard(old[0].state(), n, B, then, now);
      std::vector<Sampler> cur;
      for (int r = 0; r < now; ++r) {
        cur.emplace_back(list, B, r, now, 5, 9);
        cur.back().set_state(rs);
      }
      if (rs.epoch == 0) {
        bool ended = false;
        int64_t steps = 0;
        while (!ended) {
          for (int r = 0; r < now; ++r) {
            bool e = false;
            for (int x : cur[r].next(&e)) seen.insert(x);
            if (r == 0) ended = e;
          }
          ++steps;
        }
        EXPECT_EQ(steps, cur[0].steps_in_epoch(rs.offset));
      }
      for (int x : seen) EXPECT_EQ(seen.count(x), 1u) << then << "->" << now << " after " << taken_steps;
      const int64_t left = n - static_cast<int64_t>(seen.size());
      EXPECT_GE(left, 0);
      EXPECT_LT(left, static_cast<int64_t>(B) * now) << then << "->" << now << " after " << taken_steps;
      // the next epoch is a whole one, identical to a run that never changed
      EXPECT_EQ(cur[0].state(), (SamplerState{1, 0, 0}));
      Sampler fresh(list, B, 0, now, 5, 9);
      fresh.set_state({1, 0, 0});
      EXPECT_EQ(cur[0].next(), fresh.next());
    }
  }
  // unchanged world size: the state is the same batches, re-expressed
  Sampler a(list, B, 0, 2, 5, 9), b(list, B, 0, 2, 5, 9);
  for (int k = 0; k < 5; ++k) a.next();
  const SamplerState s = Sampler::reshard(a.state(), n, B, 2, 2);
  EXPECT_EQ(s, (SamplerState{0, 0, 5 * 2 * B}));
  b.set_state(s);
  for (int k = 0; k < 5; ++k) EXPECT_EQ(a.next(), b.next());
  // an offset past the last whole batch is refused with the numbers named
  EXPECT_THAT(usage_error([&] { b.set_state({0, 0, n}); }), HasSubstr("offset"));
  EXPECT_THAT(usage_error([&] { b.set_state({0, 1, n - 2 * B}); }), HasSubstr("position"));
}

// ---- augmentation -------------------------------------------------------------------

TEST(Augment, FlipRate) {
  Augment a;
  a.flip = true;
  int flips = 0;
  const int n = 40000;
  for (int i = 0; i < n; ++i) flips += draw_augment(a, 28, 28, 5, 6, i / 64, i % 64).flip;
  EXPECT_NEAR(flips / double(n), 0.5, 0.015);  // σ = 0.0025
  a.flip = false;
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(draw_augment(a, 28, 28, 5, 6, 0, i).flip);
}

TEST(Augment, CropOffsetsAndCutoutCentresUniform) {
  Augment a;
  a.pad = 2;
  a.cutout = 8;
  const int n = 25000, K = 5;
  std::vector<int> hy(K, 0), hx(K, 0), hcy(10, 0);
  for (int i = 0; i < n; ++i) {
    AugDraw d = draw_augment(a, 10, 12, 99, 1, i / 128, i % 128);
    ASSERT_GE(d.dy, 0);
    ASSERT_LT(d.dy, K);
    ASSERT_GE(d.dx, 0);
    ASSERT_LT(d.dx, K);
    ASSERT_LT(d.cy, 10);
    ASSERT_LT(d.cx, 12);
    ++hy[d.dy], ++hx[d.dx], ++hcy[d.cy];
  }
  auto chi2 = [&](const std::vector<int>& h) {
    double e = double(n) / h.size(), c = 0;
    for (int v : h) c += (v - e) * (v - e) / e;
    return c;
  };
  // χ² with 4 dof: P(χ² > 25) ≈ 5e-5; with 9 dof: P(χ² > 35) ≈ 6e-5.
  EXPECT_LT(chi2(hy), 25.0);
  EXPECT_LT(chi2(hx), 25.0);
  EXPECT_LT(chi2(hcy), 35.0);
  // Draws do not depend on which options are on (fixed slots).
  Augment b;
  b.pad = 2;
  EXPECT_EQ(draw_augment(a, 10, 12, 99, 1, 3, 4).dx, draw_augment(b, 10, 12, 99, 1, 3, 4).dx);
}

namespace {
ImageSet ramp_set(int n, int c, int h, int w) {
  ImageSet s;
  s.n = n, s.c = c, s.h = h, s.w = w, s.classes = 10;
  s.pixels.resize(size_t(n) * c * h * w);
  for (size_t i = 0; i < s.pixels.size(); ++i) s.pixels[i] = static_cast<uint8_t>(1 + (i * 7) % 250);
  s.labels.resize(n);
  for (int i = 0; i < n; ++i) s.labels[i] = i % 10;
  s.source = "ramp";
  return s;
}
}  // namespace

TEST(Augment, NormalisationExact) {
  ImageSet s = ramp_set(3, 3, 5, 6);
  Augment a;
  a.mean = {0.1f, 0.5f, 0.9f};
  a.std = {0.2f, 0.3f, 0.4f};
  std::vector<float> out(3 * s.image_size());
  std::vector<int32_t> lab(3);
  make_batch(s, {2, 0, 1}, a, 1, 2, 3, out.data(), lab.data());
  EXPECT_EQ(lab, std::vector<int32_t>({2, 0, 1}));
  const int order[3] = {2, 0, 1};
  for (int i = 0; i < 3; ++i)
    for (int ch = 0; ch < 3; ++ch)
      for (int p = 0; p < 30; ++p) {
        float v = s.image(order[i])[ch * 30 + p];
        EXPECT_EQ(out[i * 90 + ch * 30 + p], (v / 255.0f - a.mean[ch]) / a.std[ch]);
      }
  Augment d;  // Fashion-MNIST defaults
  EXPECT_FLOAT_EQ(d.mean[0], 0.2860f);
  EXPECT_FLOAT_EQ(d.std[0], 0.3530f);
  Augment bad;
  bad.mean = {0.1f, 0.2f};
  EXPECT_THAT(usage_error([&] { make_batch(s, {0}, bad, 1, 2, 3, out.data(), lab.data()); }), HasSubstr("mean/std"));
}

TEST(Augment, PadCropFlipExact) {
  const int c = 2, h = 5, w = 6;
  ImageSet s = ramp_set(1, c, h, w);
  Augment a;
  a.pad = 3;
  a.pad_value = 127;
  a.mean = {0.0f};
  a.std = {1.0f};
  std::vector<float> out(c * h * w);
  for (int dy = 0; dy <= 6; ++dy)
    for (int dx = 0; dx <= 6; ++dx)
      for (bool flip : {false, true}) {
        AugDraw d;
        d.dy = dy, d.dx = dx, d.flip = flip;
        augment_image(s.image(0), c, h, w, a, d, out.data());
        for (int ch = 0; ch < c; ++ch)
          for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) {
              int xc = flip ? w - 1 - x : x;
              int sy = y + dy - 3, sx = xc + dx - 3;
              float want =
                  (sy >= 0 && sy < h && sx >= 0 && sx < w) ? s.image(0)[(ch * h + sy) * w + sx] / 255.0f : 127 / 255.0f;
              ASSERT_EQ(out[(ch * h + y) * w + x], want) << dy << " " << dx << " " << flip;
            }
      }
  // dy = dx = P and no flip is the identity; corner offsets show the pad value.
  AugDraw d;
  d.dy = d.dx = 0;
  augment_image(s.image(0), c, h, w, a, d, out.data());
  EXPECT_EQ(out[0], 127 / 255.0f);
}

TEST(Augment, CutoutAreaWithClipping) {
  const int c = 2, h = 10, w = 10;
  ImageSet s = ramp_set(1, c, h, w);  // pixel values never normalise to exactly 0
  Augment a;
  a.cutout = 4;
  std::vector<float> out(c * h * w);
  struct Case {
    int cy, cx, area;
  };
  for (Case k : {Case{5, 5, 16}, Case{0, 0, 4}, Case{9, 9, 9}, Case{0, 5, 8}, Case{1, 9, 9}}) {
    AugDraw d;
    d.cy = k.cy, d.cx = k.cx;
    augment_image(s.image(0), c, h, w, a, d, out.data());
    for (int ch = 0; ch < c; ++ch) {
      int zeros = 0;
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
          bool in = y >= k.cy - 2 && y < k.cy + 2 && x >= k.cx - 2 && x < k.cx + 2;
          float v = out[(ch * h + y) * w + x];
          if (in)
            EXPECT_EQ(v, 0.0f);
          else
            EXPECT_NE(v, 0.0f);
          zeros += v == 0.0f;
        }
      EXPECT_EQ(zeros, k.area) << "centre " << k.cy << "," << k.cx;
    }
  }
}

TEST(Augment, BatchMatchesPerImageDrawsAndIgnoresThreads) {
  ImageSet s = make_synthetic(64, 1, 12, 12, 4, 3);
  Augment a;
  a.pad = 2, a.flip = true, a.cutout = 5;
  std::vector<int> idx;
  for (int i = 0; i < 64; ++i) idx.push_back((i * 17) % 64);
  const size_t sz = s.image_size();
  std::vector<float> b1(64 * sz), b2(64 * sz), one(sz);
  std::vector<int32_t> l1(64), l2(64);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  make_batch(s, idx, a, 8, 9, 10, b1.data(), l1.data(), 64);
  omp_set_num_threads(2);
  make_batch(s, idx, a, 8, 9, 10, b2.data(), l2.data(), 64);
  omp_set_num_threads(saved);
  EXPECT_EQ(b1, b2);
  EXPECT_EQ(l1, l2);
  for (int i = 0; i < 64; ++i) {
    augment_image(s.image(idx[i]), 1, 12, 12, a, draw_augment(a, 12, 12, 8, 9, 10, 64 + i), one.data());
    ASSERT_TRUE(std::equal(one.begin(), one.end(), b1.begin() + i * sz)) << i;
  }
  // Another batch counter gives other draws.
  make_batch(s, idx, a, 8, 9, 11, b2.data(), l2.data(), 64);
  EXPECT_NE(b1, b2);
}

// ---- loader -------------------------------------------------------------------------

namespace {
Augment train_aug() {
  Augment a;
  a.pad = 2, a.flip = true, a.cutout = 4;
  return a;
}
std::vector<Batch> take(Loader& l, int k) {
  std::vector<Batch> v(k);
  for (auto& b : v) l.next(b);
  return v;
}
void expect_same(const Batch& a, const Batch& b, const std::string& what) {
  EXPECT_EQ(a.data, b.data) << what;
  EXPECT_EQ(a.labels, b.labels) << what;
  EXPECT_EQ(a.state_before, b.state_before) << what;
  EXPECT_EQ(a.state_after, b.state_after) << what;
  EXPECT_EQ(a.global_step, b.global_step) << what;
  EXPECT_EQ(a.epoch_end, b.epoch_end) << what;
}
}  // namespace

TEST(Loader, PrefetchOnOffIdentical) {
  ImageSet s = make_synthetic(100, 1, 10, 10, 5, 1);
  Split sp = split_indices(s, 0.5, 2);
  Loader on(s, Sampler(sp.first, 8, 0, 1, 3, 4), train_aug(), 5, 6, true);
  Loader off(s, Sampler(sp.first, 8, 0, 1, 3, 4), train_aug(), 5, 6, false);
  EXPECT_EQ(on.steps_per_epoch(), 6);  // floor(50 / 8)
  auto a = take(on, 15), b = take(off, 15);
  for (int k = 0; k < 15; ++k) {
    expect_same(a[k], b[k], "batch " + std::to_string(k));
    EXPECT_EQ(a[k].n, 8);
    EXPECT_EQ(a[k].data.size(), 8u * 100);
    EXPECT_EQ(a[k].epoch_end, k % 6 == 5);
  }
  EXPECT_EQ(on.state(), (SamplerState{2, 3}));
  EXPECT_EQ(off.state(), on.state());
  // Labels agree with the data set; Batch::indices are the sampler's.
  Sampler ref(sp.first, 8, 0, 1, 3, 4);
  for (int k = 0; k < 15; ++k) {
    auto idx = ref.next();
    EXPECT_EQ(a[k].indices, idx);
    EXPECT_EQ(b[k].indices, idx);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(a[k].labels[i], s.labels[idx[i]]);
  }
}

TEST(Loader, RestoreMidEpochGivesIdenticalBatches) {
  ImageSet s = make_synthetic(120, 1, 8, 8, 4, 7);
  const auto list = all_indices(120);
  for (bool prefetch : {true, false}) {
    Loader ref(s, Sampler(list, 7, 0, 1, 1, 2), train_aug(), 3, 4, prefetch);
    auto all = take(ref, 40);
    // A fresh loader restored to the state after batch 20 (mid-epoch: 17 steps/epoch).
    Loader b(s, Sampler(list, 7, 0, 1, 1, 2), train_aug(), 3, 4, prefetch);
    take(b, 2);
    b.restore(all[20].state_after);
    EXPECT_EQ(b.state(), all[20].state_after);
    for (int k = 21; k < 40; ++k) {
      Batch x;
      b.next(x);
      expect_same(x, all[k], "restored batch " + std::to_string(k));
    }
    // Restore backwards on a running loader.
    b.restore(all[5].state_before);
    for (int k = 5; k < 12; ++k) {
      Batch x;
      b.next(x);
      expect_same(x, all[k], "rewound batch " + std::to_string(k));
    }
    EXPECT_THAT(usage_error([&] { b.restore({0, 17}); }), HasSubstr("position"));
  }
}

TEST(Loader, ShardedLoadersConcatenateToSingleRank) {
  ImageSet s = make_synthetic(90, 1, 8, 8, 3, 2);
  auto list = all_indices(90);
  Loader one(s, Sampler(list, 8, 0, 1, 5, 5), train_aug(), 1, 1, true);
  Loader r0(s, Sampler(list, 4, 0, 2, 5, 5), train_aug(), 1, 1, true);
  Loader r1(s, Sampler(list, 4, 1, 2, 5, 5), train_aug(), 1, 1, false);
  for (int k = 0; k < 25; ++k) {
    Batch g, a, b;
    one.next(g), r0.next(a), r1.next(b);
    HostVector<float> cat = a.data;
    cat.insert(cat.end(), b.data.begin(), b.data.end());
    EXPECT_EQ(cat, g.data) << k;  // same samples, same augmentation, whatever the world size
  }
}

TEST(Loader, DestructorWhilePrefetchingDoesNotHang) {
  ImageSet s = make_synthetic(200, 1, 16, 16, 4, 1);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    Loader l(s, Sampler(all_indices(200), 16, 0, 1, i, 0), train_aug(), 1, 2, true, 2);
    if (i % 2) {
      Batch b;
      l.next(b);
    }
    if (i % 3 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // queue full
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
}

// ---- evaluation iterator --------------------------------------------------------------

TEST(EvalIterator, WholeListInOrderWithPartialLastBatch) {
  ImageSet s = ramp_set(13, 1, 4, 4);
  std::vector<int> idx = {12, 0, 5, 6, 7, 1, 2, 3, 11, 10};
  Augment a = train_aug();  // augmentation is ignored
  EvalIterator it(s, idx, 4, a);
  EXPECT_EQ(it.num_batches(), 3);
  Batch b;
  std::vector<int> sizes;
  size_t pos = 0;
  for (int pass = 0; pass < 2; ++pass) {
    sizes.clear();
    pos = 0;
    while (it.next(b)) {
      sizes.push_back(b.n);
      for (int i = 0; i < b.n; ++i) {
        EXPECT_EQ(b.labels[i], s.labels[idx[pos + i]]);
        for (int p = 0; p < 16; ++p)
          EXPECT_EQ(b.data[i * 16 + p], (s.image(idx[pos + i])[p] / 255.0f - a.mean[0]) / a.std[0]);
      }
      pos += b.n;
      EXPECT_EQ(b.epoch_end, pos == idx.size());
    }
    EXPECT_EQ(sizes, std::vector<int>({4, 4, 2}));
    it.reset();
  }
}

// ---- host memory of batch buffers (the pinned-memory hook) ----------------------------

namespace {

using testing_host::CountingHost;
using testing_host::ScopedHostHook;

bool aligned64(const void* p) { return reinterpret_cast<uintptr_t>(p) % 64 == 0; }

}  // namespace

TEST(LoaderHostMemory, BatchBuffersComeFromTheInstalledHook) {
  ImageSet s = make_synthetic(64, 1, 8, 8, 4, 3);
  const auto list = all_indices(64);
  CountingHost::reset();
  EXPECT_STREQ(host_memory_name(), "default");
  {
    ScopedHostHook hook;
    EXPECT_STREQ(host_memory_name(), "counting");
    for (bool prefetch : {true, false}) {  // the producer thread allocates too
      Loader l(s, Sampler(list, 8, 0, 1, 1, 2), train_aug(), 3, 4, prefetch);
      for (int k = 0; k < 5; ++k) {
        Batch b;
        l.next(b);
        ASSERT_EQ(b.data.size(), 8u * 64);
        EXPECT_TRUE(CountingHost::owns(b.data.data())) << "prefetch " << prefetch << " batch " << k;
        EXPECT_TRUE(aligned64(b.data.data()));
      }
    }
    EvalIterator it(s, list, 10, train_aug());
    Batch b;
    while (it.next(b)) EXPECT_TRUE(CountingHost::owns(b.data.data()));
  }
  EXPECT_GT(CountingHost::allocs, 0);
  EXPECT_EQ(CountingHost::frees, CountingHost::allocs);  // every buffer went back to the hook
  // without the hook: the default allocator, and the hook is not called
  const int before = CountingHost::allocs;
  {
    Loader l(s, Sampler(list, 8, 0, 1, 1, 2), train_aug(), 3, 4, true);
    Batch b;
    l.next(b);
    EXPECT_FALSE(CountingHost::owns(b.data.data()));
    EXPECT_TRUE(aligned64(b.data.data()));
    EvalIterator it(s, list, 10, train_aug());
    ASSERT_TRUE(it.next(b));
    EXPECT_FALSE(CountingHost::owns(b.data.data()));
  }
  EXPECT_EQ(CountingHost::allocs, before);
}

TEST(LoaderHostMemory, BlocksAreFreedByTheAllocatorThatMadeThem) {
  CountingHost::reset();
  HostVector<float> made_hooked, made_default(100, 1.f);
  {
    ScopedHostHook hook;
    made_hooked.assign(1000, 2.f);
    EXPECT_TRUE(CountingHost::owns(made_hooked.data()));
    // a block from before the hook is freed by the default allocator, not the hook
    made_default = HostVector<float>();
    EXPECT_EQ(CountingHost::frees, 0);
    // a declining hook: ordinary memory, never handed to the hook's free
    CountingHost::decline = true;
    HostVector<float> v(500, 3.f);
    EXPECT_FALSE(CountingHost::owns(v.data()));
    CountingHost::decline = false;
    // moves and swaps keep the blocks (no reallocation): all allocators are equal
    HostVector<float> w(std::move(made_hooked));
    EXPECT_TRUE(CountingHost::owns(w.data()));
    std::swap(w, made_hooked);
    EXPECT_EQ(CountingHost::allocs, 1);
  }
  // the hook is gone; the block it made still goes back to it
  EXPECT_EQ(made_hooked.size(), 1000u);
  EXPECT_EQ(made_hooked[999], 2.f);
  made_hooked = HostVector<float>();
  EXPECT_EQ(CountingHost::frees, 1);
}
