// test_fake_reducer.cpp — the multi-rank gradient reducer (GradReducer) without
// MPI or NCCL: each simulated rank is a thread with its own flat gradient and
// its own GradReducer over a FakeTransport; a FakeFabric in the middle plays
// the collective library.  Like NCCL, it matches the k-th bucket of every rank
// with the k-th of the others and requires them to have the same size and
// offset (NCCL would hang or mix buffers otherwise); it sums in rank order and
// writes the sum back to every rank.  A rank that waits while another rank
// waits too with unmatched buckets is a deadlock, which the fabric reports
// instead of hanging.  This is the logic the NCCL path relies on (same buckets,
// same order on every rank, independent of when each rank's backward reaches
// its hooks); the GPU machine cannot run two NCCL ranks (one GPU, and NCCL
// refuses two ranks on one device), so this is where it is tested.
#include <gtest/gtest.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/tensor.hpp"
#include "dsonas/dist/communicator.hpp"

namespace dsonas {
namespace {

/// The in-process "collective library" of R ranks.
class FakeFabric {
 public:
  explicit FakeFabric(int ranks)
      : R_(ranks),
        log_(static_cast<size_t>(ranks)),
        next_(static_cast<size_t>(ranks), 0),
        waiting_(static_cast<size_t>(ranks), false),
        left_(static_cast<size_t>(ranks), false) {}

  /// Rank r starts a sum of n floats at data (offset `off` into its flat buffer).
  void post(int r, float* data, int64_t n, int64_t off) {
    std::lock_guard<std::mutex> g(mu_);
    log_[static_cast<size_t>(r)].push_back({off, n});
    const size_t k = next_[static_cast<size_t>(r)]++;
    if (ops_.size() <= k) ops_.resize(k + 1);
    Op& op = ops_[k];
    if (op.data.empty()) op.data.assign(static_cast<size_t>(R_), nullptr);
    op.data[static_cast<size_t>(r)] = data;
    if (op.posted == 0) {
      op.n = n;
      op.off = off;
    } else if (op.n != n || op.off != off) {
      fail(str("bucket ", k, ": rank ", r, " sent [", off, ", +", n, ") but another rank sent [", op.off, ", +", op.n,
               ")"));
    }
    if (++op.posted == R_ && error_.empty()) {
      // like a ring all-reduce with a fixed order: ((x0 + x1) + x2) + …, same result everywhere
      for (int64_t i = 0; i < op.n; ++i) {
        float s = op.data[0][i];
        for (int q = 1; q < R_; ++q) s += op.data[static_cast<size_t>(q)][i];
        for (int q = 0; q < R_; ++q) op.data[static_cast<size_t>(q)][i] = s;
      }
      op.done = true;
      cv_.notify_all();
    }
  }

  /// Blocks until every bucket rank r started is summed (or the fabric failed).
  void wait(int r) {
    std::unique_lock<std::mutex> g(mu_);
    waiting_[static_cast<size_t>(r)] = true;
    cv_.notify_all();  // the other waiters re-check for a deadlock
    auto done_for = [&](int q) {
      for (size_t k = 0; k < next_[static_cast<size_t>(q)]; ++k)
        if (!ops_[k].done) return false;
      return true;
    };
    while (!done_for(r) && error_.empty()) {
      // a deadlock: every rank has left or waits for a bucket of its own that
      // is not summed (a rank whose buckets are done is about to go on)
      bool stuck = true;
      for (int q = 0; q < R_; ++q)
        stuck = stuck && (left_[static_cast<size_t>(q)] || (waiting_[static_cast<size_t>(q)] && !done_for(q)));
      if (stuck) {
        fail(str("deadlock: every rank waits, but rank ", r, " has unmatched buckets (rank 0 started ", next_[0],
                 ", rank ", R_ - 1, " started ", next_[static_cast<size_t>(R_ - 1)], ")"));
        break;
      }
      cv_.wait(g);
    }
    waiting_[static_cast<size_t>(r)] = false;
  }

  /// Rank r will start nothing more (its thread ends).
  void leave(int r) {
    std::lock_guard<std::mutex> g(mu_);
    left_[static_cast<size_t>(r)] = true;
    cv_.notify_all();
  }

  std::string error() {
    std::lock_guard<std::mutex> g(mu_);
    return error_;
  }
  /// (offset, size) of every bucket of rank r, in the order it started them.
  std::vector<std::pair<int64_t, int64_t>> log(int r) {
    std::lock_guard<std::mutex> g(mu_);
    return log_[static_cast<size_t>(r)];
  }

 private:
  struct Op {
    int64_t n = 0, off = 0;
    int posted = 0;
    bool done = false;
    std::vector<float*> data;
  };
  void fail(const std::string& m) {  // mu_ held
    if (error_.empty()) error_ = m;
    cv_.notify_all();
  }
  const int R_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Op> ops_;
  std::vector<std::vector<std::pair<int64_t, int64_t>>> log_;
  std::vector<size_t> next_;
  std::vector<bool> waiting_, left_;
  std::string error_;
};

class FakeTransport final : public ReduceTransport {
 public:
  FakeTransport(FakeFabric& f, int rank, const float* base) : f_(f), rank_(rank), base_(base) {}
  void start(float* data, int64_t n) override { f_.post(rank_, data, n, data - base_); }
  void progress() override { ++progress_calls; }
  void wait() override { f_.wait(rank_); }
  int progress_calls = 0;

 private:
  FakeFabric& f_;
  int rank_;
  const float* base_;
};

/// One rank's step: begin(lo, hi), ready() at its own hook points, finish().
struct RankPlan {
  int64_t bucket;
  std::vector<int64_t> ready_points;
};

struct RankResult {
  std::vector<float> flat;
  int64_t started = 0;
  int progress_calls = 0;
};

/// Runs one step on R threads; rank r's gradient is init(r, i).
std::vector<RankResult> run_ranks(FakeFabric& fab, int64_t n, int64_t lo, int64_t hi,
                                  const std::vector<RankPlan>& plans, const std::function<float(int, int64_t)>& init,
                                  int steps = 1) {
  const int R = static_cast<int>(plans.size());
  auto be = make_backend(Device::CPU, 1);
  std::vector<Tensor> flats;
  std::vector<RankResult> res(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) {
    flats.push_back(be->alloc({n}));
    for (int64_t i = 0; i < n; ++i) flats.back().data()[i] = init(r, i);
  }
  std::vector<std::thread> th;
  for (int r = 0; r < R; ++r)
    th.emplace_back([&, r] {
      Tensor& flat = flats[static_cast<size_t>(r)];
      FakeTransport t(fab, r, flat.data());
      GradReducer red(t, flat, plans[static_cast<size_t>(r)].bucket);
      for (int s = 0; s < steps; ++s) {
        red.begin(lo, hi);
        for (int64_t from : plans[static_cast<size_t>(r)].ready_points) {
          red.ready(from);
          std::this_thread::yield();  // let the other rank run ahead or behind
        }
        red.finish();
      }
      res[static_cast<size_t>(r)].started = red.buckets_started();
      res[static_cast<size_t>(r)].progress_calls = t.progress_calls;
      fab.leave(r);
    });
  for (auto& t : th) t.join();
  for (int r = 0; r < R; ++r)
    res[static_cast<size_t>(r)].flat.assign(flats[static_cast<size_t>(r)].data(),
                                            flats[static_cast<size_t>(r)].data() + n);
  return res;
}

/// The buckets GradReducer must issue for [lo, hi) and size B, in order.
std::vector<std::pair<int64_t, int64_t>> expected_buckets(int64_t lo, int64_t hi, int64_t B) {
  std::vector<std::pair<int64_t, int64_t>> v;
  for (int64_t top = hi; top > lo; top -= B) {
    const int64_t b = std::max(lo, top - B);
    v.push_back({b, top - b});
  }
  return v;
}

float grad(int r, int64_t i) {
  return static_cast<float>((i * 7 + 3) % 101) * 0.01f + 0.5f * static_cast<float>(r + 1);
}

TEST(FakeReducer, TwoRanksWithDifferentHookTimingGetTheExactSumInFixedBuckets) {
  const int64_t n = 10007, B = 1000;
  FakeFabric fab(2);
  // rank 0's backward reports rarely, rank 1's often and at other points
  const std::vector<RankPlan> plans = {{B, {9000, 5000, 100, 0}}, {B, {9800, 9500, 7000, 3000, 2500, 42, 1}}};
  const auto res = run_ranks(fab, n, 0, n, plans, grad);
  ASSERT_EQ(fab.error(), "");
  for (int64_t i = 0; i < n; ++i) {
    const float want = grad(0, i) + grad(1, i);
    ASSERT_EQ(res[0].flat[static_cast<size_t>(i)], want) << i;
    ASSERT_EQ(res[1].flat[static_cast<size_t>(i)], want) << i;
  }
  const auto want = expected_buckets(0, n, B);
  EXPECT_EQ(want.size(), 11u);
  EXPECT_EQ(want.front(), std::make_pair(int64_t(9007), int64_t(1000)));  // from the end: backward order
  EXPECT_EQ(want.back(), std::make_pair(int64_t(0), int64_t(7)));
  EXPECT_EQ(fab.log(0), want);
  EXPECT_EQ(fab.log(1), want);
  EXPECT_EQ(res[0].started, 11);
  EXPECT_EQ(res[1].started, 11);
  // ready() lets started sums progress once per hook
  EXPECT_EQ(res[0].progress_calls, 4);
  EXPECT_EQ(res[1].progress_calls, 7);
}

/// Records the buckets started, sums nothing (one rank's view of the timing).
class RecordingTransport final : public ReduceTransport {
 public:
  explicit RecordingTransport(const float* base) : base_(base) {}
  void start(float* data, int64_t n) override { started.push_back({data - base_, n}); }
  void wait() override { ++waits; }
  std::vector<std::pair<int64_t, int64_t>> started;
  int waits = 0;

 private:
  const float* base_;
};

TEST(FakeReducer, ReadyStartsExactlyTheCompleteBucketsAboveItsPoint) {
  // the overlap of reduction and backward: a hook at `from` starts every bucket
  // that lies wholly in [from, hi), and nothing else
  auto be = make_backend(Device::CPU, 1);
  Tensor flat = be->alloc({10007});
  RecordingTransport t(flat.data());
  GradReducer red(t, flat, 1000);
  red.begin(0, 10007);
  red.ready(9500);  // [9007, 10007) not complete yet
  EXPECT_TRUE(t.started.empty());
  red.ready(9007);
  ASSERT_EQ(t.started.size(), 1u);
  EXPECT_EQ(t.started[0], std::make_pair(int64_t(9007), int64_t(1000)));
  red.ready(8006);  // [8007, 9007) complete, [7007, 8007) not
  ASSERT_EQ(t.started.size(), 2u);
  EXPECT_EQ(t.started[1], std::make_pair(int64_t(8007), int64_t(1000)));
  red.ready(9999);  // a later hook above the last one: nothing new
  EXPECT_EQ(t.started.size(), 2u);
  EXPECT_EQ(t.waits, 0);
  red.finish();  // the rest, from the top down, then one wait
  EXPECT_EQ(t.started, expected_buckets(0, 10007, 1000));
  EXPECT_EQ(t.waits, 1);
  EXPECT_EQ(red.buckets_started(), 11);
}

TEST(FakeReducer, SubRangeLeavesTheRestAloneAndRepeatsStepByStep) {
  // a λ-step reduces only [W, T); three steps in a row with one reducer each rank
  const int64_t n = 5000, lo = 3210, B = 333;
  FakeFabric fab(2);
  const std::vector<RankPlan> plans = {{B, {4000}}, {B, {4900, 3300}}};
  const auto res = run_ranks(fab, n, lo, n, plans, grad, 3);
  ASSERT_EQ(fab.error(), "");
  for (int64_t i = 0; i < n; ++i) {
    for (int r = 0; r < 2; ++r) {
      // three sums in a row: x_r → a+b → 2(a+b) → 4(a+b) on both ranks
      const float want = i < lo ? grad(r, i) : 4.f * (grad(0, i) + grad(1, i));
      ASSERT_EQ(res[static_cast<size_t>(r)].flat[static_cast<size_t>(i)], want) << "rank " << r << " element " << i;
    }
  }
  auto one = expected_buckets(lo, n, B);
  std::vector<std::pair<int64_t, int64_t>> three;
  for (int s = 0; s < 3; ++s) three.insert(three.end(), one.begin(), one.end());
  EXPECT_EQ(fab.log(0), three);
  EXPECT_EQ(fab.log(1), three);
  EXPECT_EQ(res[0].started, static_cast<int64_t>(three.size()));
}

TEST(FakeReducer, ThreeRanksSumInAFixedOrder) {
  const int64_t n = 777;
  FakeFabric fab(3);
  const std::vector<RankPlan> plans = {{64, {700, 10}}, {64, {}}, {64, {500, 400, 300}}};
  const auto res = run_ranks(fab, n, 0, n, plans, grad);
  ASSERT_EQ(fab.error(), "");
  for (int64_t i = 0; i < n; ++i) {
    const float want = (grad(0, i) + grad(1, i)) + grad(2, i);
    for (int r = 0; r < 3; ++r) ASSERT_EQ(res[static_cast<size_t>(r)].flat[static_cast<size_t>(i)], want);
  }
}

TEST(FakeReducer, EmptyRangeStartsNothing) {
  FakeFabric fab(2);
  const std::vector<RankPlan> plans = {{100, {50}}, {100, {}}};
  const auto res = run_ranks(fab, 200, 200, 200, plans, grad);
  EXPECT_EQ(fab.error(), "");
  EXPECT_TRUE(fab.log(0).empty());
  EXPECT_EQ(res[0].started, 0);
  for (int64_t i = 0; i < 200; ++i) EXPECT_EQ(res[1].flat[static_cast<size_t>(i)], grad(1, i));
}

// The fabric is a real check: ranks that disagree on the buckets are caught
// (a test over this fake could not pass with a reducer whose buckets depend on timing).
TEST(FakeReducer, FabricCatchesRanksThatDisagreeOnBuckets) {
  FakeFabric fab(2);
  const std::vector<RankPlan> plans = {{1000, {}}, {999, {}}};
  run_ranks(fab, 4000, 0, 4000, plans, grad);
  EXPECT_NE(fab.error().find("bucket 0: rank"), std::string::npos) << fab.error();
}

TEST(FakeReducer, FabricCatchesAMissingBucketInsteadOfHanging) {
  FakeFabric fab(2);
  // rank 1 reduces a shorter range: one bucket fewer
  auto be = make_backend(Device::CPU, 1);
  Tensor a = be->alloc({3000}), b = be->alloc({3000});
  std::thread t0([&] {
    FakeTransport t(fab, 0, a.data());
    GradReducer red(t, a, 1000);
    red.begin(0, 3000);
    red.finish();
    fab.leave(0);
  });
  std::thread t1([&] {
    FakeTransport t(fab, 1, b.data());
    GradReducer red(t, b, 1000);
    red.begin(1000, 3000);
    red.finish();
    fab.leave(1);
  });
  t0.join();
  t1.join();
  EXPECT_NE(fab.error().find("deadlock"), std::string::npos) << fab.error();
}

}  // namespace
}  // namespace dsonas
