// architecture.hpp — the derived (final) network of a DSO-NAS search, docs/method.md §6.3.
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
//
// Retraining (§6.3) starts from a file: from_json() parses exactly what to_json()
// writes (strictly: every field present, typed and consistent with the space, no
// unknown field; a malformed file fails with exit 2 and one line naming the file
// and the field), check_fits() compares it with a config's space, at_width() /
// width_for_target() pick the retrain width C for a MAC or parameter budget, and
// baseline() is the hand-made comparison design.  model/network.hpp builds the
// trainable network from blocks() / reductions().
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsonas/model/search_space.hpp"

namespace dsonas {

/// One live op of a derived normal block (1-based level / op as in docs/method.md).
struct ArchOp {
  int level = 1, op = 1;
  OpKind type = OpKind::Sep3;
  /// Live inputs as λ-row indices: 0 = block input, 1 + N(l'−1) + (j'−1) = op (l',j').
  /// Level-1 ops: {0} (they always read the block input).
  std::vector<int> inputs;
  bool output = false;  // live output branch (λ_after > 0)
};

struct ArchBlock {
  std::string name;         // "s1/u1"
  int stage = 1, unit = 1;  // 1-based
  int channels = 0, height = 0, width = 0;
  bool id_conv = false;     // shortcut = id_conv (first unit of a stage), else identity
  bool empty = true;        // no live output branch: the block is its shortcut
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

/// What a width budget counts (§11.1 conventions, see Architecture::macs / params).
enum class CostKind { Macs, Params };

class Architecture {
 public:
  /// §6.1 on copies of λ and mask (mask nullptr = all set), then the live structure.
  static Architecture from_lambda(const SearchSpace& space, const float* lam, const uint8_t* mask);

  /**
   * Parses to_json()'s output ("dsonas-architecture", format_version 1);
   * to_json(from_json(to_json(a))) == to_json(a) byte for byte.
   *
   * Strict: every field to_json() writes must be present with its type, no other
   * field may appear, and the structure must be consistent with the space — blocks
   * in (stage, unit) order with the space's names, widths and sizes, shortcut
   * id_conv exactly in unit 1, each op's type equal to the space's op at its index,
   * ops level-major without repeats, level-1 inputs ["in"], level ≥ 2 inputs earlier
   * ops of the same block (sorted, no repeats), every op feeding the output or a
   * later op, `empty` ⇔ no output branch, reductions with a non-empty subset of
   * ["1x1", "3x3"].  The derived fields (survivors, macs, params, macs_full,
   * params_full) must equal what the structure gives.  `warnings`: the built-in
   * ones are recomputed; an entry "<red>: both branch lambdas are 0 …" restores
   * ArchReduction::lambda_zero, any other entry that the structure does not
   * produce becomes an extra_warning.
   *
   * Any violation: exit 2 with one line "FILE: FIELD: what is wrong", e.g.
   * "arch.json: blocks[3].ops[1].inputs: expected an array of input names";
   * JSON syntax errors name the line and column.
   */
  static Architecture from_json(const std::string& text, const std::string& file);

  /**
   * The hand-made comparison design on `space`: every normal block is a chain of
   * `kind` ops — level 1 reads the block input, level l reads level l−1, the last
   * level alone feeds the block output — and both branches of every reduction are
   * live.  Built through from_lambda on a λ pattern, so it obeys every rule a
   * derived architecture does.  Fails with exit 2 if `kind` is not one of the
   * space's ops.  Pair it with width_for_target() to compare designs at equal
   * MACs or parameters.  source and stage are "baseline".
   */
  static Architecture baseline(const SearchSpace& space, OpKind kind = OpKind::Sep3);

  /// The same topology at stem width C (space scale_width(space(), C): every block
  /// and reduction takes its stage's new width; sizes, ops and edges unchanged;
  /// provenance and extra warnings kept).  C ≤ 0 or C = the current width: a copy.
  Architecture at_width(int C) const;

  /**
   * Refuses (exit 2) an architecture that cannot be retrained under a config whose
   * space is `config_space`: levels (L), number of ops (N), the op list, the stem
   * kind, the number of stages, the normal units per stage, the input shape or the
   * classes differ.  One line "FILE: FIELD: arch=A config=B" with FIELD one of
   * levels, N, ops, stem, stages, normal_units, input, classes.  Widths may differ
   * (the retrain width is chosen separately, see at_width) and so may share.
   */
  void check_fits(const SearchSpace& config_space, const std::string& file) const;

  /// "" when `other` builds the same network (space fields except preset/share,
  /// every block's ops, inputs, outputs and shortcut, every reduction's branches);
  /// else the first difference as "FIELD: this=A other=B" (the labels are
  /// this_label / other_label), FIELD in from_json's naming, e.g.
  /// "blocks[2].ops[1].inputs: this=[in, l1/o2] other=[in]".  Provenance and
  /// warnings are ignored.
  std::string structural_difference(const Architecture& other, const char* this_label = "this",
                                    const char* other_label = "other") const;

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

/**
 * The stem width C whose network at_width(C) has the MACs (kind = Macs) or
 * parameters (kind = Params) closest to `target`; a tie goes to the smaller C.
 * The cost is non-decreasing in C (every width is ⌊w·C/C₀⌋), so this is a
 * bisection over C ∈ [1, 2²⁰] (C ≥ 2 with the ImageNet stem, whose first conv
 * has C/2 channels).  A target below the cost at the smallest C returns that C.
 * target must be finite and > 0 (else exit 2 naming --target-macs or
 * --target-params), and reachable below C = 2²⁰ (else exit 2).
 */
int width_for_target(const Architecture& arch, double target, CostKind kind);

}  // namespace dsonas
