// test_trajectory.cpp — the λ trajectory file (io/trajectory.hpp): the /images
// axis round trip, resume trimming by record count (also across a world-size
// change, where /step jumps), the step rule of older checkpoints, files written
// before /images existed, a file with fewer records than the checkpoint counts, and
// damaged files: a seal mismatch, and (in files without a seal) unopenable datasets
// and record counts that disagree — exit 3 naming the dataset, never a crash.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <fstream>
#include <limits>
#include <iterator>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/version.hpp"
#include "dsonas/run/version_report.hpp"
#include "dsonas/io/model_file.hpp"
#include "dsonas/io/trajectory.hpp"
#include "dsonas/model/supergraph.hpp"
#include "test_util.hpp"

using namespace dsonas;
using dsonas_test::TempDir;

namespace {

const char* kSpace = "{\"test\":1}";

std::vector<LambdaGroup> groups() {
  LambdaGroup a, b;
  a.name = "s1/u1/lambda/after";
  a.offset = 0;
  a.size = 3;
  b.name = "s1/red/lambda";
  b.offset = 3;
  b.size = 2;
  return {a, b};
}

TrajectoryRecord rec(int64_t step, int64_t images) {
  TrajectoryRecord r;
  r.step = step;
  r.images = images;
  r.loss = 2.0 - 0.001 * static_cast<double>(step);
  r.acc = 0.1 + 0.001 * static_cast<double>(step);
  r.live_macs = 1e6 - static_cast<double>(step);
  r.zero_lambda = step / 10;
  r.live_edges = 40 - step / 10;
  for (int i = 0; i < 5; ++i) r.lambda.push_back(static_cast<float>(step) * 0.01f + static_cast<float>(i));
  return r;
}

std::string bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void put_bytes(const std::string& path, const std::string& b) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(b.data(), static_cast<std::streamsize>(b.size()));
}

/// Makes `path` a file as written before seals existed: the seal is zeroed (HDF5
/// still sees its 512-byte user block), so the file is opened unchecked.
void unseal(const std::string& path) {
  std::string b = bytes(path);
  std::fill(b.begin(), b.begin() + 512, '\0');
  put_bytes(path, b);
}

/// The error of reading `path` as a trajectory (exit 3 expected).
std::string read_error(const std::string& path) {
  Trajectory t(path, kSpace, groups());
  try {
    t.load(std::numeric_limits<int64_t>::max());
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitCheckpoint) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error reading " << path;
  return "";
}

std::vector<int64_t> steps(const Trajectory& t) {
  std::vector<int64_t> v;
  for (const auto& r : t.records()) v.push_back(r.step);
  return v;
}

std::vector<int64_t> images(const Trajectory& t) {
  std::vector<int64_t> v;
  for (const auto& r : t.records()) v.push_back(r.images);
  return v;
}

// 2 ranks × 32 for steps 1..30, then 1 rank × 32 (step 30 -> 60) up to 70, then
// 2 ranks again (step 70 -> 36): /step 10 20 30 70 40 50, /images strictly increasing
std::vector<TrajectoryRecord> world_change_records() {
  return {rec(10, 640), rec(20, 1280), rec(30, 1920), rec(70, 2240), rec(40, 2496), rec(50, 3136)};
}

}  // namespace

TEST(Trajectory, ImagesRoundTrip) {
  TempDir d;
  const std::string p = d.file("lambda_trajectory.h5");
  Trajectory a(p, kSpace, groups());
  for (auto& r : world_change_records()) a.append(r);
  a.save();
  Trajectory b(p, kSpace, groups());
  ASSERT_TRUE(b.load_count(6));
  ASSERT_EQ(b.records().size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    const auto &x = a.records()[i], &y = b.records()[i];
    EXPECT_EQ(x.step, y.step);
    EXPECT_EQ(x.images, y.images);
    EXPECT_EQ(x.loss, y.loss);
    EXPECT_EQ(x.acc, y.acc);
    EXPECT_EQ(x.live_macs, y.live_macs);
    EXPECT_EQ(x.zero_lambda, y.zero_lambda);
    EXPECT_EQ(x.live_edges, y.live_edges);
    EXPECT_EQ(x.lambda, y.lambda);
  }
  Trajectory c(p, kSpace, groups());
  c.load(std::numeric_limits<int64_t>::max());  // inspect's reading: every record
  EXPECT_EQ(images(c), (std::vector<int64_t>{640, 1280, 1920, 2240, 2496, 3136}));
}

TEST(Trajectory, LoadByCountKeepsRecordsAcrossAWorldChange) {
  TempDir d;
  const std::string p = d.file("lambda_trajectory.h5");
  Trajectory a(p, kSpace, groups());
  for (auto& r : world_change_records()) a.append(r);
  a.save();
  // resume from a checkpoint at step 45 of the grown world that counted 5 records
  Trajectory b(p, kSpace, groups());
  ASSERT_TRUE(b.load_count(5));
  EXPECT_EQ(steps(b), (std::vector<int64_t>{10, 20, 30, 70, 40}));
  // the step rule (kept for checkpoints without traj_records) would drop the
  // pre-change record 70 and everything after it
  Trajectory c(p, kSpace, groups());
  c.load(45);
  EXPECT_EQ(steps(c), (std::vector<int64_t>{10, 20, 30}));
  // appending after the trim, as the resumed run does, gives back the same file
  const std::string before = bytes(p);
  b.append(world_change_records()[5]);
  b.save();
  EXPECT_EQ(bytes(p), before);
  ASSERT_TRUE(b.load_count(0));
  EXPECT_TRUE(b.records().empty());
}

TEST(Trajectory, OlderCheckpointFallsBackToTheStepRule) {
  TempDir d;
  const std::string p = d.file("lambda_trajectory.h5");
  Trajectory a(p, kSpace, groups());
  for (int s = 10; s <= 60; s += 10) a.append(rec(s, s * 64));
  a.save();  // saved between checkpoints: ahead of the checkpoint at step 30
  Trajectory b(p, kSpace, groups());
  b.load(35);
  EXPECT_EQ(steps(b), (std::vector<int64_t>{10, 20, 30}));
  b.append(rec(40, 40 * 64));
  EXPECT_EQ(steps(b), (std::vector<int64_t>{10, 20, 30, 40}));
}

TEST(Trajectory, FewerRecordsThanTheCheckpointCountsIsExit3) {
  TempDir d;
  const std::string p = d.file("lambda_trajectory.h5");
  Trajectory a(p, kSpace, groups());
  for (int s = 10; s <= 30; s += 10) a.append(rec(s, s * 64));
  a.save();
  Trajectory b(p, kSpace, groups());
  try {
    b.load_count(4);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitCheckpoint);
    const std::string m = e.what();
    EXPECT_NE(m.find(p), std::string::npos) << m;
    EXPECT_NE(m.find(": 3 records, fewer than the 4 the checkpoint counts"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  EXPECT_TRUE(b.records().empty());
}

TEST(Trajectory, MissingFileLoadsNothing) {
  TempDir d;
  Trajectory a(d.file("none.h5"), kSpace, groups());
  EXPECT_FALSE(a.load_count(3));
  EXPECT_TRUE(a.records().empty());
  a.load(100);
  EXPECT_TRUE(a.records().empty());
}

TEST(Trajectory, UnreadableFileIsExit3) {
  TempDir d;
  const std::string p = d.file("lambda_trajectory.h5");
  std::ofstream(p) << "not hdf5";
  Trajectory a(p, kSpace, groups());
  try {
    a.load_count(1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitCheckpoint);
    EXPECT_NE(std::string(e.what()).find(p + ": not an HDF5 file"), std::string::npos) << e.what();
  }
}

TEST(Trajectory, FileWithoutImagesReadsMinusOneAndKeepsIt) {
  TempDir d;
  const std::string p = d.file("lambda_trajectory.h5");
  Trajectory a(p, kSpace, groups());
  for (int s = 10; s <= 30; s += 10) a.append(rec(s, s * 64));
  a.save();
  {  // make it a file of an older version: no /images, no seal
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    ASSERT_GE(H5Ldelete(f, "images", H5P_DEFAULT), 0);
    H5Fclose(f);
    unseal(p);
  }
  Trajectory b(p, kSpace, groups());
  ASSERT_TRUE(b.load_count(2));
  EXPECT_EQ(steps(b), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(images(b), (std::vector<int64_t>{-1, -1}));
  b.append(rec(30, 1920));  // the resumed run knows its count
  b.save();
  Trajectory c(p, kSpace, groups());
  ASSERT_TRUE(c.load_count(3));
  EXPECT_EQ(images(c), (std::vector<int64_t>{-1, -1, 1920}));
  EXPECT_EQ(c.records()[1].lambda, a.records()[1].lambda);
}

TEST(Trajectory, ImagesMustIncrease) {
  TempDir d;
  Trajectory a(d.file("t.h5"), kSpace, groups());
  a.append(rec(70, 2240));
  a.append(rec(40, 2496));  // a step jump at a world change is fine
  try {
    a.append(rec(50, 2496));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitInternal);
  }
}

// ---- damaged files -----------------------------------------------------------------------

namespace {
std::string saved_file(const TempDir& d) {
  const std::string p = d.file("lambda_trajectory.h5");
  Trajectory a(p, kSpace, groups());
  for (int s = 10; s <= 40; s += 10) a.append(rec(s, s * 64));
  a.save();
  return p;
}
}  // namespace

TEST(TrajectoryDamage, SealedFileWithAnyChangedByteIsRefusedBeforeHdf5ReadsIt) {
  TempDir d;
  const std::string p = saved_file(d);
  const std::string good = bytes(p);
  ASSERT_EQ(good.compare(0, 14, "DSONAS-SEAL 1\n"), 0) << "the writer seals the file";
  for (size_t at : {size_t(520), good.size() / 2, good.size() - 1}) {
    std::string b = good;
    b[at] = static_cast<char>(b[at] ^ 0x10);
    put_bytes(p, b);
    EXPECT_THAT(read_error(p), ::testing::HasSubstr(p + ": damaged: CRC-32 of its contents is ")) << at;
  }
  put_bytes(p, good.substr(0, good.size() - 100));
  EXPECT_THAT(read_error(p), ::testing::HasSubstr("truncated: "));
  put_bytes(p, good + "x");
  EXPECT_THAT(read_error(p), ::testing::HasSubstr("bytes after the seal, the seal says"));
  std::string seal = good;
  seal[20] = 'z';  // inside "crc32 <hex>"
  put_bytes(p, seal);
  EXPECT_THAT(read_error(p), ::testing::HasSubstr("its seal (the first 512 bytes) is malformed"));
  put_bytes(p, good);
  Trajectory ok(p, kSpace, groups());
  ok.load(100);
  EXPECT_EQ(ok.records().size(), 4u);
}

// The crash `dsonas inspect` hit on a fuzzed file (issue 15): /live_macs could not be
// opened, read_table handed back 0 records without checking, and the reader indexed
// them by /step's count.  Here without a seal (as an older file would be): each
// per-record dataset in turn unopenable, then short by one record.
TEST(TrajectoryDamage, UnopenableOrShortDatasetIsExit3NamingIt) {
  for (const char* name : {"loss", "acc", "live_macs", "zero_lambda", "live_edges", "images", "lambda/s1/red/lambda"}) {
    SCOPED_TRACE(name);
    TempDir d;
    const std::string p = saved_file(d);
    {  // the dataset's name now links to a group: H5Dopen2 fails on it
      hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
      ASSERT_GE(f, 0);
      ASSERT_GE(H5Ldelete(f, name, H5P_DEFAULT), 0);
      hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      ASSERT_GE(g, 0);
      H5Gclose(g);
      H5Fclose(f);
      unseal(p);
    }
    EXPECT_THAT(read_error(p), ::testing::HasSubstr(p + ": dataset /" + name + " cannot be opened"));
  }
  for (const char* name :
       {"loss", "acc", "live_macs", "zero_lambda", "live_edges", "images", "lambda/s1/u1/lambda/after"}) {
    SCOPED_TRACE(name);
    TempDir d;
    const std::string p = saved_file(d);
    {  // one record fewer than /step
      hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
      ASSERT_GE(f, 0);
      hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
      ASSERT_GE(ds, 0);
      hid_t sp = H5Dget_space(ds);
      hsize_t dims[2] = {0, 0};
      const int rank = H5Sget_simple_extent_dims(sp, dims, nullptr);
      H5Sclose(sp);
      dims[0] -= 1;
      ASSERT_GE(H5Dset_extent(ds, dims), 0) << rank;
      H5Dclose(ds);
      H5Fclose(f);
      unseal(p);
    }
    EXPECT_THAT(read_error(p), ::testing::HasSubstr(p + ": dataset /" + name + " has 3 records, /step has 4"));
  }
}

TEST(TrajectoryDamage, WrongTypeOrShapeOrExtentIsExit3) {
  TempDir d;
  const std::string p = saved_file(d);
  {
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    ASSERT_GE(H5Ldelete(f, "loss", H5P_DEFAULT), 0);  // a string dataset in its place
    hsize_t n = 4;
    hid_t sp = H5Screate_simple(1, &n, nullptr), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 4);
    hid_t ds = H5Dcreate2(f, "loss", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    H5Dclose(ds);
    H5Tclose(t);
    H5Sclose(sp);
    // /acc grows to a billion records that the file does not store (unwritten chunks)
    hid_t a = H5Dopen2(f, "acc", H5P_DEFAULT);
    hsize_t big = hsize_t(1) << 30;
    ASSERT_GE(H5Dset_extent(a, &big), 0);
    H5Dclose(a);
    H5Fclose(f);
    unseal(p);
  }
  EXPECT_THAT(read_error(p), ::testing::HasSubstr("dataset /loss is not a floating-point dataset"));
  {
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(H5Ldelete(f, "loss", H5P_DEFAULT), 0);
    H5Fclose(f);
  }
  EXPECT_THAT(read_error(p), ::testing::HasSubstr("missing dataset /loss"));
  {
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);  // a 2-D /loss
    hsize_t dims[2] = {4, 2};
    hid_t sp = H5Screate_simple(2, dims, nullptr);
    hid_t ds = H5Dcreate2(f, "loss", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(f);
  }
  EXPECT_THAT(read_error(p), ::testing::HasSubstr("dataset /loss has rank 2, expected 1"));
  auto one_d_loss = [&](bool chunked) {
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(H5Ldelete(f, "loss", H5P_DEFAULT), 0);
    hsize_t n = 4, maxn = H5S_UNLIMITED, chunk = 256;
    hid_t sp = H5Screate_simple(1, &n, &maxn), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunked)
      H5Pset_chunk(dcpl, 1, &chunk);
    else
      H5Sset_extent_simple(sp, 1, &n, nullptr);
    hid_t ds = H5Dcreate2(f, "loss", H5T_IEEE_F64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    const double v[4] = {1, 2, 3, 4};
    H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Fclose(f);
  };
  one_d_loss(false);  // contiguous: not what the writer makes (chunk sizes are checked on that layout)
  EXPECT_THAT(read_error(p), ::testing::HasSubstr("dataset /loss has a layout dsonas does not write"));
  one_d_loss(true);
  EXPECT_THAT(read_error(p), ::testing::HasSubstr("dataset /acc claims 1073741824 records but stores"));
}

// The bytes of a file depend on its contents only, not on when it was written (HDF5
// would store object modification times by default): a resumed run that writes the
// same records or weights a second later gives the same file and the same seal.
TEST(FileBytes, SameContentsSameBytesWhenWrittenLater) {
  TempDir d;
  auto be = make_backend(Device::CPU, 1);
  Supergraph g(SearchSpace::preset_named("tiny"), *be, 3);
  ModelFileInfo info;
  info.stage = "search";
  info.step = 7;
  TrainState ts;
  ts.counters["step"] = 7;
  ts.lambda_v.assign(g.lambda().size(), 0.f);
  auto write = [&](const std::string& tag) {
    Trajectory t(d.file("t" + tag + ".h5"), kSpace, groups());
    for (int s = 10; s <= 30; s += 10) t.append(rec(s, s * 64));
    t.save();
    save_model_file(d.file("m" + tag + ".h5"), g, info, &ts);
  };
  write("1");
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // another second on the clock
  write("2");
  EXPECT_EQ(bytes(d.file("t1.h5")), bytes(d.file("t2.h5"))) << "trajectory";
  EXPECT_EQ(bytes(d.file("m1.h5")), bytes(d.file("m2.h5"))) << "checkpoint";
}

// dsonas --version's text is stored in every file dsonas writes (inspect prints it).
TEST(FileVersion, EveryFileRecordsWhichDsonasWroteIt) {
  set_library_report(nullptr);  // a program that registers no library report says so
  EXPECT_NE(version_text().find("\nlibraries: not reported by this program\n"), std::string::npos) << version_text();
  set_library_report(&library_lines);  // as dsonas's main() does
  const std::string v = version_text();
  EXPECT_EQ(v.rfind("dsonas ", 0), 0u) << v;
  EXPECT_NE(v.find("(commit "), std::string::npos) << v;
  EXPECT_NE(v.find("\nbuild: "), std::string::npos) << v;
  unsigned ma = 0, mi = 0, re = 0;
  H5get_libversion(&ma, &mi, &re);  // the library this process runs with
  EXPECT_NE(v.find(str("; HDF5 ", ma, ".", mi, ".", re, ";")), std::string::npos) << v;
  EXPECT_NE(v.find("OpenBLAS "), std::string::npos) << v;
  EXPECT_EQ(v.back(), '\n');

  TempDir d;
  auto be = make_backend(Device::CPU, 1);
  Supergraph g(SearchSpace::preset_named("tiny"), *be, 3);
  ModelFileInfo info;
  info.stage = "search";
  TrainState ts;
  ts.counters["step"] = 1;
  ts.lambda_v.assign(g.lambda().size(), 0.f);
  save_model_file(d.file("m.h5"), g, info);
  save_model_file(d.file("c.h5"), g, info, &ts);
  Trajectory t(d.file("t.h5"), kSpace, groups());
  t.append(rec(10, 640));
  t.save();
  for (const char* f : {"m.h5", "c.h5", "t.h5"}) EXPECT_EQ(read_root_attr(d.file(f), "dsonas_version"), v) << f;
}
