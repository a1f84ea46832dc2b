// trajectory.hpp — DIR/lambda_trajectory.h5: how every λ evolved (docs/design.md §5).
//
// Records are kept in memory and the file is rewritten atomically (temporary
// name, fsync, rename) before every checkpoint, at most once a minute in between,
// and at the end of the stage, so the file on disk is always complete and never
// behind the newest checkpoint.  Every checkpoint stores how many records had been
// written (counter `traj_records`); on resume exactly that many records are kept
// (load_count) and the resumed run appends the same records again: no gap, no
// duplicate, and byte-identical to an uninterrupted run.  Checkpoints of older
// versions lack the counter: then the records with step ≤ the checkpoint's step
// are kept (load), which is right unless the world size changed before.
//
// Layout: /step [n] int64; /images [n] int64; /loss, /acc, /live_macs [n] float64;
// /zero_lambda, /live_edges [n] int64; /lambda/<group> [n, group size] float32
// (the group names of model files).  /step is the step number of its time: with
// --allow-world-size-change the step counter is rescaled, so /step jumps (down when
// the world grew) at a world change.  /images = training images consumed so far
// (global batch summed over every W and λ step) is the uniform, strictly increasing
// axis; records of a file written before /images existed read as -1 there and are
// written back as -1.  Every dataset is chunked, extendable along records and
// carries a Fletcher32 checksum.  Root attributes: format "dsonas-trajectory",
// format_version 1 (/images is optional to readers), space (JSON).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsonas {

struct LambdaGroup;

struct TrajectoryRecord {
  int64_t step = 0;
  int64_t images = -1;  // training images consumed through this step; -1 = unknown (older file)
  double loss = 0, acc = 0, live_macs = 0;
  int64_t zero_lambda = 0, live_edges = 0;
  int64_t revivals = -1;      // reference pruning schedule: revivals so far; -1 = not recorded
  std::vector<float> lambda;  // the whole flat λ vector
};

class Trajectory {
 public:
  Trajectory(std::string path, std::string space_json, std::vector<LambdaGroup> groups);
  ~Trajectory();
  /// Loads the records of an existing file with step ≤ max_step (resume from a
  /// checkpoint without `traj_records`; also inspect, with the largest step).
  /// No file: no records.  An unreadable file is an error (exit 3) naming it.
  void load(int64_t max_step);
  /// Loads exactly the first `count` records (resume: the checkpoint's
  /// `traj_records`).  Returns false, with no records, when there is no file; a
  /// file with fewer records is an error (exit 3) naming it and both counts.
  bool load_count(int64_t count);
  /// Appends a record; its images (when it and the last record's are known)
  /// must exceed the last record's.
  void append(TrajectoryRecord r);
  /// Rewrites the file atomically with every record so far.
  void save() const;
  const std::vector<TrajectoryRecord>& records() const { return recs_; }

 private:
  std::string path_, space_;
  std::vector<LambdaGroup> groups_;
  std::vector<TrajectoryRecord> recs_;
  /// Reads every record of the file into *all; false when there is no file.
  bool read_all(std::vector<TrajectoryRecord>* all) const;
};

}  // namespace dsonas
