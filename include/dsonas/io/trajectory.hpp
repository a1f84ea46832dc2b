// trajectory.hpp — DIR/lambda_trajectory.h5: how every λ evolved (DESIGN.md §5).
//
// Records are kept in memory and the file is rewritten atomically (temporary
// name, fsync, rename) before every checkpoint, at most once a minute in between,
// and at the end of the stage, so the file on disk is always complete and never
// behind the newest checkpoint.  On resume the records past the checkpoint's step are dropped and
// the resumed run appends the same records again: steps strictly increasing, no
// gap, no duplicate, and byte-identical to an uninterrupted run.
//
// Layout: /step [n] int64; /loss, /acc, /live_macs [n] float64; /zero_lambda,
// /live_edges [n] int64; /lambda/<group> [n, group size] float32 (the group
// names of model files).  Every dataset is chunked, extendable along records and
// carries a Fletcher32 checksum.  Root attributes: format "dsonas-trajectory",
// format_version 1, space (JSON).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsonas {

struct LambdaGroup;

struct TrajectoryRecord {
  int64_t step = 0;
  double loss = 0, acc = 0, live_macs = 0;
  int64_t zero_lambda = 0, live_edges = 0;
  std::vector<float> lambda;  // the whole flat λ vector
};

class Trajectory {
 public:
  Trajectory(std::string path, std::string space_json, std::vector<LambdaGroup> groups);
  ~Trajectory();
  /// Loads the records of an existing file with step ≤ max_step (resume).
  /// An unreadable file is an error (exit 3) naming it.
  void load(int64_t max_step);
  void append(TrajectoryRecord r);
  /// Rewrites the file atomically with every record so far.
  void save() const;
  const std::vector<TrajectoryRecord>& records() const { return recs_; }

 private:
  std::string path_, space_;
  std::vector<LambdaGroup> groups_;
  std::vector<TrajectoryRecord> recs_;
};

}  // namespace dsonas
