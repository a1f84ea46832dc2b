// checkpoint.hpp — the life of a run's checkpoints in DIR/ckpt, apart from what is in
// them (model_file.hpp, network_file.hpp): their names, the `latest` pointer, the order
// in which --resume tries them, retention, and setting aside the checkpoints of a run
// with another world size.  Files only; no training state, no configuration.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsonas {

/// "step_%08d.h5"
std::string ckpt_name(int64_t step);
/// Writes DIR/ckpt/latest naming `name` (atomically; after the checkpoint).
void write_latest_pointer(const std::string& out, const std::string& name, int64_t step);
/// Candidate checkpoints, best first: the one `latest` names, then every
/// step_*.h5 from the newest down.  Orphaned *.tmp files are removed.
std::vector<std::string> checkpoint_candidates(const std::string& out);
/// Retention: keep the newest `keep_last` (0 = all) and multiples of
/// `keep_every`; never the one `latest` names.
void prune_checkpoints(const std::string& out, int64_t keep_last, int64_t keep_every);
/// After a resume that changed the world size, the checkpoints in DIR/ckpt are
/// numbered in the old run's steps, which retention and resume's fallback
/// order would mix with the new numbering.  Moves every DIR/ckpt/step_*.h5 but
/// `keep` into DIR/ckpt/world<world_then>_until_step<step_then>/ (kept, never
/// deleted); returns a line for the log, "" when nothing moved.  Called at the
/// resume with keep = the checkpoint loaded, and again after the first new
/// checkpoint with keep = that one.
std::string set_aside_checkpoints(const std::string& out, const std::string& keep, int world_then, int64_t step_then);

}  // namespace dsonas
