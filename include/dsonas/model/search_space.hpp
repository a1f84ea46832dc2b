// search_space.hpp — the pure description of a DSO-NAS supergraph.
//
// A SearchSpace says how many levels (L) and which ops (N) a block has, the
// macro structure (stem, stages, normal units per stage, widths, reductions),
// the input and the classes, and whether λ are shared (docs/method.md §1–3).
// It holds no tensors.  Presets: fmnist, bench_fmnist, cifar10, imagenet, tiny.
//
// λ layout (one flat float vector for the whole network, docs/method.md §3
// "adflops layout", generalised to any L and N):
//   normal block (124 entries for L = N = 4):
//     for l = 2..L, for j = 1..N: row λ(l,j) of length K_l = 1 + N(l−1)
//       (index 0 = block input, index 1 + N(l'−1) + (j'−1) = op j' of level l')
//     then λ_after, N·L entries, index k = N(l−1) + (j−1)
//   reduction block: 2 entries (branch 0: 1×1 s2, branch 1: 3×3 s2)
//   full: [stage 1 normal blocks][red 1][stage 2 normal blocks][red 2]...
//   share: [one shared normal block][red 1][red 2]...
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsonas {

struct JsonValue;

enum class OpKind { Sep3, Sep5, Max3, Avg3 };
const char* op_name(OpKind k);
/// Parses "sep3", "sep5", "max3", "avg3"; fails with exit 2 naming `field`.
OpKind parse_op(const std::string& s, const std::string& field);
inline bool op_is_conv(OpKind k) { return k == OpKind::Sep3 || k == OpKind::Sep5; }
inline int op_kernel(OpKind k) { return k == OpKind::Sep5 ? 5 : 3; }

enum class StemKind {
  Conv3,       // 3×3 conv stride 1 → BN → ReLU            (CIFAR, Fashion-MNIST)
  ImageNet2x,  // 3×3 s2 to C/2 → BN → ReLU → 3×3 s2 to C → BN → ReLU
};

/// Offsets of one normal block's λ inside its 124-entry (L=N=4) segment.
struct BlockLayout {
  int L = 4, N = 4;
  int in_len(int l) const { return 1 + N * (l - 1); }  // K_l, l ≥ 2
  int row_offset(int l, int j) const;                  // λ(l,j), l ≥ 2, j 1-based
  int after_offset() const { return edges(); }         // λ_after start
  int after_index(int l, int j) const { return N * (l - 1) + (j - 1); }
  int input_index(int lp, int jp) const { return 1 + N * (lp - 1) + (jp - 1); }  // inside a row
  int edges() const { return N * (L - 1) + N * N * L * (L - 1) / 2; }
  int size() const { return edges() + N * L; }
};

struct SearchSpace {
  std::string preset = "custom";
  int levels = 4;  // L
  std::vector<OpKind> ops = {OpKind::Sep3, OpKind::Sep5, OpKind::Max3, OpKind::Avg3};
  int in_channels = 1, in_height = 28, in_width = 28, classes = 10;
  StemKind stem = StemKind::Conv3;
  int stem_channels = 16;                     // C
  std::vector<int> normal_units = {2, 2, 2};  // per stage
  std::vector<int> widths = {16, 32, 64};     // per stage
  bool share = false;

  int N() const { return static_cast<int>(ops.size()); }
  int stages() const { return static_cast<int>(normal_units.size()); }
  BlockLayout block_layout() const { return BlockLayout{levels, N()}; }
  int num_normal_blocks() const;
  int num_reductions() const { return stages() - 1; }
  /// Flat λ offset of normal block (s, u) (0-based); in share mode always 0.
  int block_lambda_offset(int s, int u) const;
  /// Flat λ offset of the reduction after stage s (0-based, s < stages−1).
  int reduction_lambda_offset(int s) const;
  int total_lambda() const;
  /// Spatial size at the start of stage s.
  int stage_height(int s) const;
  int stage_width(int s) const;

  /// Checks every field; fails with exit 2 naming the field.
  void validate() const;
  /// Canonical JSON (stable key order), stored in checkpoints.
  std::string to_json() const;

  static SearchSpace preset_named(const std::string& name);
  /// Parses to_json()'s output (as stored in model, checkpoint and trajectory
  /// files) strictly: every field present once with its type and range, no other
  /// field, total_lambda consistent; fails with exit 3 naming `source` and the field.
  static SearchSpace from_json(const std::string& json, const std::string& source);
  /// The same from a parsed object (e.g. the "space" member of an architecture
  /// file, field path `path`), failing with exit `code`.
  static SearchSpace from_json_value(const JsonValue& v, const std::string& path, const std::string& file, int code);
};

}  // namespace dsonas
