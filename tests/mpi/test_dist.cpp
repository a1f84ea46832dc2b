// test_dist.cpp — the data-parallel layer under `mpirun -np 2` (make mpi-test).
//
// The strong test is DataParallel.*: a 2-rank step (each rank its half of the
// batch, BN statistics per rank, gradients summed by GradReducer while the
// backward pass runs) must give exactly — bit for bit — the gradient that one
// process computes by running the two halves one after the other and adding
// them.  That is the definition of data parallelism with per-rank BN (docs/design.md
// §7), so any error in scaling, bucketing, the grad-ready hook or the slicing
// shows up as a mismatch, with no tolerance to hide behind.
#include <gtest/gtest.h>

#include <cstring>
#include <iostream>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/dist/communicator.hpp"
#include "dsonas/model/supergraph.hpp"

using namespace dsonas;

namespace {

Communicator& comm() { return Communicator::world(); }

TEST(Communicator, WorldOfTwo) {
  ASSERT_EQ(comm().size(), 2) << "run under mpirun -np 2";
  EXPECT_TRUE(comm().rank() == 0 || comm().rank() == 1);
  EXPECT_EQ(comm().local_size(), 2);
  EXPECT_TRUE(Communicator::multi_rank());
}

TEST(Communicator, SmallCollectives) {
  const int r = comm().rank();
  float f[3] = {1.5f, -2.f, static_cast<float>(r)};
  comm().sum(f, 3);
  EXPECT_EQ(f[0], 3.f);
  EXPECT_EQ(f[1], -4.f);
  EXPECT_EQ(f[2], 1.f);
  double d[2] = {0.25, static_cast<double>(10 * r)};
  comm().sum(d, 2);
  EXPECT_EQ(d[0], 0.5);
  EXPECT_EQ(d[1], 10.0);
  int64_t i[1] = {int64_t(1) << 40};
  comm().sum(i, 1);
  EXPECT_EQ(i[0], int64_t(1) << 41);
  EXPECT_EQ(comm().max(r == 1 ? 7.0 : 3.0), 7.0);
  char msg[16] = {0};
  if (r == 0) std::strcpy(msg, "from rank 0");
  comm().broadcast(msg, sizeof msg);
  EXPECT_STREQ(msg, "from rank 0");
  std::vector<uint64_t> all = comm().gather_all(100 + static_cast<uint64_t>(r));
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0], 100u);
  EXPECT_EQ(all[1], 101u);
}

TEST(Communicator, CheckSameNamesTheRankThatDiffers) {
  EXPECT_NO_THROW(comm().check_same(42, "λ", 7));
  try {
    comm().check_same(comm().rank() == 1 ? 43 : 42, "λ", 7);
    FAIL() << "a differing hash was not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("differs on rank 1 at step 7"), std::string::npos) << e.what();
  }
}

// Bucketed sums with ready() at arbitrary points equal the element-wise sum,
// for bucket sizes from 1 element to more than the buffer.
TEST(GradReducer, BucketsAndReadyPointsGiveTheExactSum) {
  auto be = make_backend(Device::CPU, 1);
  const int64_t n = 1000;
  Tensor flat = be->alloc({n});
  for (int64_t bucket : {int64_t(1), int64_t(7), int64_t(100), int64_t(4096)}) {
    for (int64_t lo : {int64_t(0), int64_t(333)}) {
      std::vector<float> h(static_cast<size_t>(n));
      for (int64_t k = 0; k < n; ++k)
        h[static_cast<size_t>(k)] = static_cast<float>(k % 17) + 0.25f * static_cast<float>(comm().rank() + 1);
      be->upload(h.data(), flat);
      GradReducer red(comm(), *be, flat, bucket);
      red.begin(lo, n);
      for (int64_t from : {int64_t(900), int64_t(640), int64_t(500), int64_t(10)}) red.ready(from);
      red.finish();
      be->download(flat, h.data());
      for (int64_t k = 0; k < n; ++k) {
        const float want = k < lo ? static_cast<float>(k % 17) + 0.25f * static_cast<float>(comm().rank() + 1)
                                  : 2.f * static_cast<float>(k % 17) + 0.75f;
        ASSERT_EQ(h[static_cast<size_t>(k)], want) << "bucket " << bucket << " lo " << lo << " element " << k;
      }
      EXPECT_GE(red.buckets_started(), 1);
    }
  }
}

struct Halves {
  std::vector<float> x[2];
  std::vector<int32_t> y[2];
};

Halves make_halves(const SearchSpace& sp, int B, uint64_t seed) {
  Halves h;
  const size_t img = static_cast<size_t>(sp.in_channels) * sp.in_height * sp.in_width;
  Rng r(seed, 3);
  for (int k = 0; k < 2; ++k) {
    h.x[k].resize(img * static_cast<size_t>(B));
    h.y[k].resize(static_cast<size_t>(B));
    for (float& v : h.x[k]) v = static_cast<float>(r.normal());
    for (int32_t& v : h.y[k]) v = static_cast<int32_t>(r.below(static_cast<uint32_t>(sp.classes)));
  }
  return h;
}

std::vector<float> host_copy(Backend& be, const Tensor& t) {
  std::vector<float> h(static_cast<size_t>(t.numel()));
  be.download(t, h.data());
  return h;
}

void data_parallel_equals_sequential(bool recompute, int64_t bucket) {
  const SearchSpace sp = SearchSpace::preset_named("tiny");
  const int B = 6;
  auto be = make_backend(Device::CPU, 1);
  Supergraph par(sp, *be, 5), ref(sp, *be, 5);
  par.set_recompute(recompute);
  ref.set_recompute(recompute);
  Rng lr(11, 1);
  for (size_t k = 0; k < par.lambda().size(); ++k)
    par.lambda()[k] = ref.lambda()[k] = 0.5f + static_cast<float>(lr.uniform());
  par.rebuild_plan();
  ref.rebuild_plan();
  const Halves h = make_halves(sp, B, 77);
  const float scale = 1.f / (2.f * static_cast<float>(B));
  const int64_t W = par.num_weights(), T = par.flat_grad().numel();
  const int r = comm().rank();
  for (int kind = 0; kind < 2; ++kind) {  // 0: W-step (bucketed during backward), 1: λ-step
    const bool wstep = kind == 0;
    GradReducer red(comm(), *be, par.flat_grad(), bucket);
    int hooks = 0;
    if (wstep)
      par.set_grad_ready_hook([&](int64_t from) {
        red.ready(from);
        ++hooks;
      });
    red.begin(wstep ? 0 : W, wstep ? W : T);
    par.train_step(h.x[r].data(), h.y[r].data(), B, scale, wstep, !wstep);
    red.finish();
    par.set_grad_ready_hook(nullptr);
    if (wstep) {
      EXPECT_GT(hooks, 2);
    }
    const std::vector<float> got = host_copy(*be, par.flat_grad());
    ref.train_step(h.x[0].data(), h.y[0].data(), B, scale, wstep, !wstep);
    std::vector<float> want = host_copy(*be, ref.flat_grad());
    ref.train_step(h.x[1].data(), h.y[1].data(), B, scale, wstep, !wstep);
    const std::vector<float> second = host_copy(*be, ref.flat_grad());
    for (size_t k = 0; k < want.size(); ++k) want[k] += second[k];
    const int64_t lo = wstep ? 0 : W, hi = wstep ? W : T;
    int64_t bad = 0;
    for (int64_t k = lo; k < hi; ++k)
      if (std::memcmp(&got[static_cast<size_t>(k)], &want[static_cast<size_t>(k)], sizeof(float)) != 0 && ++bad <= 3)
        ADD_FAILURE() << (wstep ? "W" : "λ") << "-step element " << k << ": 2 ranks " << got[static_cast<size_t>(k)]
                      << " vs sequential halves " << want[static_cast<size_t>(k)];
    EXPECT_EQ(bad, 0) << (wstep ? "W" : "λ") << "-step: " << bad << " of " << hi - lo << " elements differ";
    // and the reduced gradient is the same on both ranks
    comm().check_same(hash_bytes(got.data() + lo, static_cast<size_t>(hi - lo) * sizeof(float)), "gradient", kind);
  }
}

TEST(DataParallel, TwoRanksEqualSequentialHalvesBitForBit) { data_parallel_equals_sequential(false, 1 << 20); }
TEST(DataParallel, SmallBucketsAndRecomputationToo) { data_parallel_equals_sequential(true, 97); }

/// Rank 1's failures, each with its rank (rank 0 prints gtest's usual report).
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::cerr << "mpi_tests: rank " << comm().rank() << ": " << (r.file_name() ? r.file_name() : "?") << ":"
                << r.line_number() << ": " << r.summary() << "\n";
  }
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  Communicator::init(&argc, &argv);
  // rank 0 prints gtest's report; rank 1 only its failures (with its rank)
  if (Communicator::world().rank() != 0) {
    auto& ls = ::testing::UnitTest::GetInstance()->listeners();
    delete ls.Release(ls.default_result_printer());
    ls.Append(new RankFailurePrinter);
  }
  int rc = RUN_ALL_TESTS();
  const auto* ut = ::testing::UnitTest::GetInstance();
  if (Communicator::world().rank() != 0 && ut->failed_test_count() > 0)
    std::cerr << "mpi_tests: rank 1: " << ut->failed_test_count() << " test(s) failed on rank 1\n";
  int64_t failed = ut->failed_test_count();
  Communicator::world().sum(&failed, 1);
  if (Communicator::world().rank() == 0)
    std::cout << "mpi_tests: 2 ranks, " << (failed ? "FAILED" : "all passed on both ranks") << "\n";
  Communicator::finalize();
  return failed ? 1 : rc;
}
