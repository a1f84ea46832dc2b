// test_checkpoint_files.cpp — the life of DIR/ckpt without a training run
// (io/checkpoint.hpp): names, the latest pointer, the order --resume tries them in,
// retention with milestones, setting aside a run of another world size.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "dsonas/io/checkpoint.hpp"
#include "test_util.hpp"

namespace dsonas {
namespace {

using dsonas_test::TempDir;

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

/// DIR/ckpt with an empty step_N.h5 for each N (contents do not matter here).
std::string make_ckpts(const TempDir& d, const std::vector<int64_t>& steps) {
  const std::string dir = d.file("ckpt");
  ::mkdir(dir.c_str(), 0775);
  for (int64_t s : steps) std::ofstream(dir + "/" + ckpt_name(s)) << "x";
  return dir;
}

std::vector<std::string> names(const std::vector<std::string>& paths) {
  std::vector<std::string> r;
  for (const std::string& p : paths) r.push_back(p.substr(p.rfind('/') + 1));
  return r;
}

TEST(CheckpointFiles, NamesSortInStepOrder) {
  EXPECT_EQ(ckpt_name(5), "step_00000005.h5");
  EXPECT_EQ(ckpt_name(12345678), "step_12345678.h5");
  EXPECT_LT(ckpt_name(99), ckpt_name(100));
}

TEST(CheckpointFiles, CandidatesAreLatestThenNewestFirstAndOrphanTempFilesGo) {
  TempDir d;
  const std::string dir = make_ckpts(d, {10, 20, 30});
  std::ofstream(dir + "/step_00000040.h5.tmp") << "half-written";
  EXPECT_EQ(names(checkpoint_candidates(d.path())),
            (std::vector<std::string>{"step_00000030.h5", "step_00000020.h5", "step_00000010.h5"}))
      << "no latest pointer: newest first";
  EXPECT_FALSE(exists(dir + "/step_00000040.h5.tmp")) << "an orphaned temporary file is removed";
  write_latest_pointer(d.path(), ckpt_name(20), 20);
  std::ifstream lf(dir + "/latest");
  std::string latest;
  lf >> latest;
  EXPECT_EQ(latest, "step_00000020.h5");
  EXPECT_EQ(names(checkpoint_candidates(d.path())),
            (std::vector<std::string>{"step_00000020.h5", "step_00000030.h5", "step_00000010.h5"}))
      << "the one latest names first (a newer file may be one whose write never committed)";
  write_latest_pointer(d.path(), ckpt_name(50), 50);  // names a file that is not there
  EXPECT_EQ(names(checkpoint_candidates(d.path())).front(), "step_00000030.h5");
  TempDir empty;
  EXPECT_TRUE(checkpoint_candidates(empty.path()).empty()) << "no ckpt folder: no candidates";
}

TEST(CheckpointFiles, RetentionKeepsTheNewestMilestonesAndLatest) {
  TempDir d;
  const std::string dir = make_ckpts(d, {10, 20, 30, 40, 50, 60, 70, 80, 90, 100});
  write_latest_pointer(d.path(), ckpt_name(50), 50);
  prune_checkpoints(d.path(), 0, 0);
  EXPECT_EQ(checkpoint_candidates(d.path()).size(), 10u) << "keep_last 0 keeps everything";
  prune_checkpoints(d.path(), 3, 40);
  std::vector<std::string> left = names(checkpoint_candidates(d.path()));
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"step_00000040.h5", "step_00000050.h5", "step_00000080.h5",
                                            "step_00000090.h5", "step_00000100.h5"}))
      << "newest 3 (80, 90, 100), multiples of 40 (40, 80) and the one latest names (50)";
}

TEST(CheckpointFiles, ARunOfAnotherWorldSizeIsSetAsideNotDeleted) {
  TempDir d;
  const std::string dir = make_ckpts(d, {10, 20, 30});
  const std::string keep = dir + "/" + ckpt_name(30);
  const std::string note = set_aside_checkpoints(d.path(), keep, 2, 30);
  EXPECT_NE(note.find("moved 2 checkpoints of the 2-rank run into " + dir + "/world2_until_step30/"), std::string::npos)
      << note;
  EXPECT_TRUE(exists(keep));
  EXPECT_TRUE(exists(dir + "/world2_until_step30/step_00000010.h5"));
  EXPECT_TRUE(exists(dir + "/world2_until_step30/step_00000020.h5"));
  EXPECT_EQ(names(checkpoint_candidates(d.path())), (std::vector<std::string>{"step_00000030.h5"}))
      << "resume no longer sees them";
  EXPECT_EQ(set_aside_checkpoints(d.path(), keep, 2, 30), "") << "nothing left to move: no note";
}

}  // namespace
}  // namespace dsonas
