// architecture.hpp — the derived (final) network of a DSO-NAS search, ALGORITHM.md §6.3.
//
// Design note.  An Architecture is pure topology plus geometry: for every normal
// block its live ops (level, op index, type), each op's live inputs (block input or
// earlier ops, summed unweighted in the derived net), its live output branches, the
// shortcut kind (id_conv in the first unit of a stage, identity elsewhere) and
// whether the block collapsed to its shortcut; for every reduction its live
// branches.  It is built from a flat λ vector and live mask by from_lambda(), which
// applies §6.1 (prune_all) on copies, so the caller's λ is untouched.  λ values are
// discarded (§6.3 step 3): only the structure is kept.
//
// The width is a property of the SearchSpace the Architecture is built with:
// scale_width() rescales stem_channels and the stage widths, and the λ layout does
// not depend on the widths, so from_lambda(scale_width(space, C), λ, mask) is the
// same topology at width C.
//
// Counts follow §11.1 (MACs of conv/FC weights; params with BN = 2 per channel):
// stem, per normal block Σ live sep convs + Σ live 1×1 output branches + the
// block-output BN (only when a branch is live) + id_conv (first unit, kept even
// when the block is empty), reductions' live branches, head BN + FC with bias.
// to_json() / to_dot() are deterministic: the same input gives the same bytes.
// The later retrain command builds its Network from blocks / reductions.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsonas/model/search_space.hpp"

namespace dsonas {

/// One live op of a derived normal block (1-based level / op as in ALGORITHM.md).
struct ArchOp {
  int level = 1, op = 1;
  OpKind type = OpKind::Sep3;
  /// Live inputs as λ-row indices: 0 = block input, 1 + N(l'−1) + (j'−1) = op (l',j').
  /// Level-1 ops: {0} (they always read the block input).
  std::vector<int> inputs;
  bool output = false;  // live output branch (λ_after > 0)
};

struct ArchBlock {
  std::string name;        // "s1/u1"
  int stage = 1, unit = 1;  // 1-based
  int channels = 0, height = 0, width = 0;
  bool id_conv = false;    // shortcut = id_conv (first unit of a stage), else identity
  bool empty = true;       // no live output branch: the block is its shortcut
  std::vector<ArchOp> ops;  // live ops, level-major, op order

  int live_branches() const;
};

struct ArchReduction {
  std::string name;  // "s1/red"
  int stage = 1;     // 1-based: the reduction after this stage
  int in_channels = 0, out_channels = 0, out_height = 0, out_width = 0;
  bool branch[2] = {true, true};  // [0] 1×1 stride 2, [1] 3×3 stride 2
  bool lambda_zero = false;       // both λ were 0; the branch kept by prune_all is reported
};

/// The space at stem width C: stem_channels = C, widths[s] = widths[s]·C / stem_channels
/// (integer, at least 1).  C ≤ 0 returns the space unchanged.
SearchSpace scale_width(const SearchSpace& space, int C);

class Architecture {
 public:
  /// §6.1 on copies of λ and mask (mask nullptr = all set), then the live structure.
  static Architecture from_lambda(const SearchSpace& space, const float* lam, const uint8_t* mask);

  const SearchSpace& space() const { return space_; }
  const std::vector<ArchBlock>& blocks() const { return blocks_; }
  const std::vector<ArchReduction>& reductions() const { return reductions_; }

  /// Derived network (§11.1 conventions).
  double macs() const;
  double params() const;
  /// Dense supernet of the same space and width.
  double macs_full() const;
  double params_full() const;

  int live_ops() const;
  /// Live ops over every physical normal block, per op index j−1 (size N) / level l−1 (size L).
  std::vector<int64_t> survivors_per_type() const;
  std::vector<int64_t> survivors_per_level() const;
  /// Collapse warnings (pooling share > 60 %, blocks reduced to their shortcut,
  /// blocks with only level-1 survivors, reductions with both λ = 0, no op at all).
  std::vector<std::string> warnings() const;

  /// Provenance written into the JSON (set by the caller; defaults "" / 0).
  std::string source, stage;
  int64_t step = 0;
  /// Extra warnings the caller adds (e.g. "source is a pretrain model").
  std::vector<std::string> extra_warnings;

  /// "dsonas-architecture" format_version 1, 2-space indentation, stable key order.
  std::string to_json() const;
  /// Graphviz digraph, one cluster per normal block and per reduction.
  std::string to_dot() const;

  /// Input name of a λ-row index: "in" or "l{l}/o{j}".
  std::string input_name(int row_index) const;

 private:
  SearchSpace space_;
  std::vector<ArchBlock> blocks_;
  std::vector<ArchReduction> reductions_;
};

}  // namespace dsonas
