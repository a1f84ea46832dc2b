// test_stage_clock.cpp — the elapsed / time-left fields of training log lines and
// metrics (run_common.hpp: human_duration, StageClock).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cmath>
#include <ctime>
#include <string>
#include <thread>

#include "dsonas/run/run_common.hpp"

using namespace dsonas;

TEST(StageClock, HumanDuration) {
  EXPECT_EQ(human_duration(0), "0s");
  EXPECT_EQ(human_duration(44.6), "45s");
  EXPECT_EQ(human_duration(59.4), "59s");
  EXPECT_EQ(human_duration(60), "1m00s");
  EXPECT_EQ(human_duration(250), "4m10s");
  EXPECT_EQ(human_duration(3599), "59m59s");
  EXPECT_EQ(human_duration(3600 + 3 * 60 + 20), "1h03m");
  EXPECT_EQ(human_duration(86400 * 3 + 3600 * 4 + 59), "3d04h");
  EXPECT_EQ(human_duration(-1), "?");
  EXPECT_EQ(human_duration(std::nan("")), "?");
}

TEST(StageClock, EtaIsTheStepsLeftAtThisInvocationsMeanStepTime) {
  const StageClock c(100, 200, 0, false);  // resumed at step 100 of 200
  EXPECT_LT(c.eta(100), 0) << "no step yet: unknown";
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double e = c.elapsed();
  const double eta = c.eta(110);  // 10 steps in e seconds, 90 left
  EXPECT_GE(eta, 9 * e * 0.999);
  EXPECT_LE(eta, 9 * c.elapsed() * 1.001);
  EXPECT_EQ(c.eta(200), 0);
  EXPECT_EQ(c.eta(250), 0) << "a step count past the total (never negative)";
  const std::string t = c.text(110);
  EXPECT_NE(t.find("  elapsed "), std::string::npos) << t;
  EXPECT_NE(t.find("  left ~"), std::string::npos) << t;
  EXPECT_EQ(t.find("deadline"), std::string::npos) << t;
  const std::string j = c.json(110);
  EXPECT_EQ(j.rfind(",\"time_s\":", 0), 0u) << j;
  EXPECT_NE(j.find(",\"eta_s\":"), std::string::npos) << j;
  EXPECT_EQ(j.find("eta_is_bound"), std::string::npos) << j;
  EXPECT_NE(StageClock(0, 10, 0, false).json(0).find("\"eta_s\":null"), std::string::npos);
}

TEST(StageClock, ASearchThatMayStopEarlyShowsABoundAndTheDeadline) {
  const double deadline = static_cast<double>(std::time(nullptr)) + 7230;
  const StageClock c(0, 1000, deadline, true);
  const std::string t = c.text(1), j = c.json(1);
  EXPECT_NE(t.find("  left ≤"), std::string::npos) << t;
  EXPECT_NE(t.find("  deadline in 2h00m"), std::string::npos) << t;  // 7230 s, or 7229 a second later
  EXPECT_NE(j.find(",\"eta_is_bound\":true"), std::string::npos) << j;
  EXPECT_NE(j.find(",\"deadline_in_s\":72"), std::string::npos) << j;
}

namespace {
RunConfig stage_cfg(int batch, double epochs, int64_t max_steps) {
  RunConfig c;
  c.batch = batch;
  c.epochs = epochs;
  c.max_steps = max_steps;
  return c;
}
}  // namespace

// The pipeline's time left: each later stage's steps planned as the stage will plan them,
// times its images per step and MACs per image, at the running stage's seconds per image·MAC.
TEST(PipelineClock, PredictsTheStagesAheadFromTheRunningOne) {
  const RunConfig pre = stage_cfg(32, 1, 200), search = stage_cfg(32, 2, 0), re = stage_cfg(32, 2, 0);
  RunConfig base = stage_cfg(16, 1, 0);
  const RunConfig* const plan[PipelineClock::kStages] = {&pre, &search, &re, &base};
  EXPECT_EQ(PipelineClock::active(), nullptr);
  {
    PipelineClock p(plan, 2);
    EXPECT_EQ(PipelineClock::active(), &p);
    p.begin(PipelineClock::kPretrain);
    EXPECT_LT(p.after_current(0.1), 0) << "no stage has reported its work yet";
    EXPECT_EQ(p.planned_steps(PipelineClock::kPretrain), 200);
    EXPECT_LT(p.planned_steps(PipelineClock::kSearch), 0) << "dataset sizes unknown yet";
    p.started({64, 1e6, 30000, 60000});
    EXPECT_EQ(p.planned_steps(PipelineClock::kSearch), 1872);    // floor(30000 / 64) · (1 + 1) / 1 · 2 epochs
    EXPECT_EQ(p.planned_steps(PipelineClock::kRetrain), 1874);   // floor(60000 / 64) · 2 epochs
    EXPECT_EQ(p.planned_steps(PipelineClock::kBaseline), 1875);  // floor(60000 / 32) · 1 epoch
    EXPECT_LT(p.after_current(0), 0) << "no step timed yet";
    // 0.1 s per step of 64 images at 1 MMAC: the search 187.2 s; the retrains at the
    // supergraph's MACs (no live MACs noted yet): 187.4 s, and 93.75 s for the baseline's
    // 1875 steps of 32 images
    EXPECT_NEAR(p.after_current(0.1), 187.2 + 187.4 + 93.75, 1e-9);
    p.begin(PipelineClock::kSearch);
    p.started({64, 1e6, 30000, 60000});
    p.note_live_macs(5e5);  // the search has halved the live MACs: the found network's size
    EXPECT_NEAR(p.after_current(0.1), (187.4 + 93.75) / 2, 1e-9);
    p.begin(PipelineClock::kRetrain);
    p.started({64, 4e5, 0, 60000});  // the found network is retrained at 0.4 MMAC
    EXPECT_NEAR(p.after_current(0.05), 1875 * 32 * 4e5 * 0.05 / (64 * 4e5), 1e-9);
    // the log line and the metrics carry the pipeline's time left
    const StageClock c(0, 1874, 0, false);
    EXPECT_NE(c.text(0).find("  pipeline left ~?"), std::string::npos) << c.text(0);
    EXPECT_NE(c.json(0).find(",\"pipeline_eta_s\":null"), std::string::npos) << c.json(0);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::string j = c.json(10);
    const size_t k = j.find(",\"pipeline_eta_s\":");
    ASSERT_NE(k, std::string::npos) << j;
    const double stage_eta = c.eta(10), pe = std::atof(j.c_str() + k + 18);
    EXPECT_GT(pe, stage_eta) << j;  // the baseline is still ahead
    p.begin(PipelineClock::kBaseline);
    p.started({32, 4e5, 0, 60000});
    EXPECT_EQ(p.after_current(0.05), 0) << "nothing after the last stage";
  }
  EXPECT_EQ(PipelineClock::active(), nullptr);
  const StageClock c(0, 10, 0, false);
  EXPECT_EQ(c.text(1).find("pipeline"), std::string::npos) << "only inside dsonas pipeline";
  EXPECT_EQ(c.json(1).find("pipeline"), std::string::npos);
  // without a baseline the found network's retrain is the last stage
  const RunConfig* const no_base[PipelineClock::kStages] = {&pre, &search, &re, nullptr};
  PipelineClock q(no_base, 1);
  q.begin(PipelineClock::kRetrain);
  q.started({32, 4e5, 0, 60000});
  EXPECT_EQ(q.after_current(0.05), 0);
}
