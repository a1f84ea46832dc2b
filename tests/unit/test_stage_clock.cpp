// test_stage_clock.cpp — the elapsed / time-left fields of training log lines and
// metrics (run_common.hpp: human_duration, StageClock).
#include <gtest/gtest.h>

#include <chrono>
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
