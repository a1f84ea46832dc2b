// prune.cpp — §6.1 dead-op rule, live mask upkeep, block topology and MAC counts.
#include "dsonas/model/prune.hpp"

#include "dsonas/core/error.hpp"  // defines: DSO_CHECK
#include "dsonas/model/cost.hpp"

namespace dsonas {
namespace {

inline bool entry_live(const float* lam, const uint8_t* mask, int e) {
  return (mask == nullptr || mask[e] != 0) && (lam == nullptr || lam[e] > 0.0f);
}

double row_sum(const float* row, int len) {
  double s = 0.0;
  for (int i = 0; i < len; ++i) s += row[i];
  return s;
}

/// (F, H, W) of stage s.
struct Geometry {
  double F, H, W;
};
Geometry stage_geometry(const SearchSpace& sp, int s) {
  return {static_cast<double>(sp.widths[s]), static_cast<double>(sp.stage_height(s)),
          static_cast<double>(sp.stage_width(s))};
}

/// MACs of one normal block's live ops and branches (no id_conv).
double block_macs(const SearchSpace& sp, const BlockTopology& t, const Geometry& g) {
  const double hw = g.H * g.W;
  double macs = 0.0;
  for (int li = 0; li < t.L; ++li)
    for (int ji = 0; ji < t.N; ++ji)
      if (t.op_alive[li][ji]) macs += cost::op_macs(sp.ops[ji], g.F, hw);
  macs += t.live_branches() * cost::pointwise_macs(g.F, hw);
  return macs;
}

}  // namespace

// ---- §6.1 ------------------------------------------------------------------------
void prune_block(float* lam, const BlockLayout& b) {
  const int L = b.L, N = b.N;
  float* after = lam + b.after_offset();
  // need[(l−1)·N + (j−1)], l = 1..L
  std::vector<double> need(static_cast<size_t>(L) * N);
  auto nd = [&](int l, int j) -> double& { return need[static_cast<size_t>((l - 1) * N + (j - 1))]; };
  for (int l = 1; l <= L; ++l)
    for (int j = 1; j <= N; ++j) nd(l, j) = after[b.after_index(l, j)];

  // Pass 1 (backward): seeds from the output.
  for (int l = L; l >= 2; --l) {
    for (int j = 1; j <= N; ++j) {
      const float* row = lam + b.row_offset(l, j);
      if (row_sum(row, b.in_len(l)) == 0.0) nd(l, j) = 0.0;
      if (nd(l, j) > 0.0) {
        for (int lp = 1; lp < l; ++lp)
          for (int jp = 1; jp <= N; ++jp) nd(lp, jp) += row[b.input_index(lp, jp)];
      }
    }
  }
  // Pass 2 (forward): kill ops without input or without need, and clean up.
  for (int l = 1; l <= L; ++l) {
    for (int j = 1; j <= N; ++j) {
      if (l > 1 && row_sum(lam + b.row_offset(l, j), b.in_len(l)) == 0.0) nd(l, j) = 0.0;
      if (nd(l, j) == 0.0) {
        after[b.after_index(l, j)] = 0.0f;
        for (int m = l + 1; m <= L; ++m)
          for (int n = 1; n <= N; ++n) lam[b.row_offset(m, n) + b.input_index(l, j)] = 0.0f;
        if (l > 1) {
          float* row = lam + b.row_offset(l, j);
          for (int i = 0; i < b.in_len(l); ++i) row[i] = 0.0f;
        }
      }
    }
  }
}

void prune_all(const SearchSpace& space, float* lam, uint8_t* mask, float* v, const float* lam_before) {
  DSO_CHECK(mask != nullptr, "prune_all needs the live mask");
  const BlockLayout b = space.block_layout();
  const int bs = b.size();
  const int total = space.total_lambda();

  // 1–2: normal blocks (share: the one shared block at offset 0).
  std::vector<int> offsets;
  if (space.share) {
    offsets.push_back(0);
  } else {
    for (int s = 0; s < space.stages(); ++s)
      for (int u = 0; u < space.normal_units[s]; ++u) offsets.push_back(space.block_lambda_offset(s, u));
  }
  for (int off : offsets) {
    prune_block(lam + off, b);
    for (int e = off; e < off + bs; ++e)
      if (!(lam[e] > 0.0f)) mask[e] = 0;
  }

  // 3: reductions.
  for (int s = 0; s < space.num_reductions(); ++s) {
    const int r = space.reduction_lambda_offset(s);
    const bool on[2] = {mask[r] != 0, mask[r + 1] != 0};
    bool keep[2] = {on[0] && lam[r] > 0.0f, on[1] && lam[r + 1] > 0.0f};
    if (!keep[0] && !keep[1]) {
      int k = 0;  // tie, or no usable information → branch 0
      if (on[1] && !on[0]) {
        k = 1;
      } else if (on[0] && on[1] && lam_before != nullptr && lam_before[r + 1] > lam_before[r]) {
        k = 1;
      }
      keep[k] = true;
    }
    mask[r] = keep[0] ? 1 : 0;
    mask[r + 1] = keep[1] ? 1 : 0;
  }

  // 4: masked entries are exactly λ = 0, v = 0.
  for (int e = 0; e < total; ++e) {
    if (!mask[e]) {
      lam[e] = 0.0f;
      if (v) v[e] = 0.0f;
    }
  }
}

// ---- topology ----------------------------------------------------------------------
int BlockTopology::live_ops() const {
  int n = 0;
  for (const auto& lv : op_alive)
    for (uint8_t a : lv) n += a;
  return n;
}

int BlockTopology::live_edges() const {
  int n = 0;
  for (const auto& lv : edge_live)
    for (const auto& row : lv)
      for (uint8_t a : row) n += a;
  return n;
}

int BlockTopology::live_branches() const {
  int n = 0;
  for (uint8_t a : after_live) n += a;
  return n;
}

int BlockTopology::live_inputs(int l, int j) const {
  int n = 0;
  for (uint8_t a : edge_live[l - 1][j - 1]) n += a;
  return n;
}

BlockTopology block_topology(const float* lam, const uint8_t* mask, const BlockLayout& b) {
  const int L = b.L, N = b.N;
  BlockTopology t;
  t.L = L;
  t.N = N;
  t.op_alive.assign(L, std::vector<uint8_t>(N, 0));
  t.edge_live.resize(L);
  for (int li = 0; li < L; ++li) {
    const int len = li == 0 ? 0 : b.in_len(li + 1);
    t.edge_live[li].assign(N, std::vector<uint8_t>(len, 0));
  }
  t.after_live.assign(static_cast<size_t>(N) * L, 0);

  // Producer of row index i ≥ 1: level 1 + (i−1)/N, op 1 + (i−1)%N.
  std::vector<std::vector<uint8_t>> reach(L, std::vector<uint8_t>(N, 0));
  std::vector<std::vector<uint8_t>> coreach(L, std::vector<uint8_t>(N, 0));
  for (int j = 1; j <= N; ++j) reach[0][j - 1] = 1;
  for (int l = 2; l <= L; ++l)
    for (int j = 1; j <= N; ++j) {
      const int row = b.row_offset(l, j);
      bool r = false;
      for (int i = 0; i < b.in_len(l) && !r; ++i) {
        if (!entry_live(lam, mask, row + i)) continue;
        r = i == 0 || reach[(i - 1) / N][(i - 1) % N];
      }
      reach[l - 1][j - 1] = r;
    }
  for (int l = L; l >= 1; --l)
    for (int j = 1; j <= N; ++j) {
      bool c = entry_live(lam, mask, b.after_offset() + b.after_index(l, j));
      for (int m = l + 1; m <= L && !c; ++m)
        for (int n = 1; n <= N && !c; ++n)
          c = coreach[m - 1][n - 1] && entry_live(lam, mask, b.row_offset(m, n) + b.input_index(l, j));
      coreach[l - 1][j - 1] = c;
    }
  for (int li = 0; li < L; ++li)
    for (int ji = 0; ji < N; ++ji) t.op_alive[li][ji] = reach[li][ji] && coreach[li][ji];

  for (int l = 2; l <= L; ++l)
    for (int j = 1; j <= N; ++j) {
      if (!t.op_alive[l - 1][j - 1]) continue;
      const int row = b.row_offset(l, j);
      for (int i = 0; i < b.in_len(l); ++i)
        t.edge_live[l - 1][j - 1][i] =
            entry_live(lam, mask, row + i) && (i == 0 || t.op_alive[(i - 1) / N][(i - 1) % N]);
    }
  t.block_empty = true;
  for (int l = 1; l <= L; ++l)
    for (int j = 1; j <= N; ++j) {
      const int k = b.after_index(l, j);
      t.after_live[k] = t.op_alive[l - 1][j - 1] && entry_live(lam, mask, b.after_offset() + k);
      if (t.after_live[k]) t.block_empty = false;
    }
  return t;
}

ReductionTopology reduction_topology(const SearchSpace& space, int s, const float* lam, const uint8_t* mask) {
  DSO_CHECK(s >= 0 && s < space.num_reductions(), "reduction ", s);
  const int r = space.reduction_lambda_offset(s);
  ReductionTopology t;
  t.branch_live[0] = entry_live(lam, mask, r);
  t.branch_live[1] = entry_live(lam, mask, r + 1);
  if (!t.branch_live[0] && !t.branch_live[1]) {
    const bool kept1 = mask != nullptr && mask[r + 1] != 0 && mask[r] == 0;
    t.branch_live[kept1 ? 1 : 0] = true;
  }
  return t;
}

// ---- counts ------------------------------------------------------------------------
ZeroCount count_zero(const float* lam, size_t n) {
  ZeroCount c;
  c.total = static_cast<int64_t>(n);
  for (size_t i = 0; i < n; ++i) c.zero += lam[i] == 0.0f;
  return c;
}

std::vector<int64_t> live_ops_per_type(const SearchSpace& space, const float* lam, const uint8_t* mask) {
  const BlockLayout b = space.block_layout();
  std::vector<int64_t> count(static_cast<size_t>(space.N()), 0);
  for (int s = 0; s < space.stages(); ++s)
    for (int u = 0; u < space.normal_units[s]; ++u) {
      const int off = space.block_lambda_offset(s, u);
      const BlockTopology t = block_topology(lam + off, mask ? mask + off : nullptr, b);
      for (int li = 0; li < b.L; ++li)
        for (int ji = 0; ji < b.N; ++ji) count[ji] += t.op_alive[li][ji];
    }
  return count;
}

double stem_macs(const SearchSpace& sp) {
  const double C = sp.stem_channels, cin = sp.in_channels;
  const double hw0 = static_cast<double>(sp.stage_height(0)) * sp.stage_width(0);
  if (sp.stem == StemKind::Conv3) return cost::conv_macs(C, cin, 3, hw0);
  const double half = sp.stem_channels / 2;                              // integer division, §2.2
  const double h1 = (sp.in_height + 1) / 2, w1 = (sp.in_width + 1) / 2;  // the first stride-2 conv's output
  return cost::conv_macs(half, cin, 3, h1 * w1) + cost::conv_macs(C, half, 3, hw0);
}

double live_macs(const SearchSpace& sp, const float* lam, const uint8_t* mask) {
  const BlockLayout b = sp.block_layout();
  double macs = stem_macs(sp);
  // Normal blocks, id_conv, reductions.
  for (int s = 0; s < sp.stages(); ++s) {
    const Geometry g = stage_geometry(sp, s);
    macs += cost::pointwise_macs(g.F, g.H * g.W);  // id_conv of the first block of the stage
    for (int u = 0; u < sp.normal_units[s]; ++u) {
      const int off = sp.block_lambda_offset(s, u);
      macs += block_macs(sp, block_topology(lam + off, mask ? mask + off : nullptr, b), g);
    }
    if (s + 1 < sp.stages()) {
      const ReductionTopology r = reduction_topology(sp, s, lam, mask);
      const double ohw = static_cast<double>(sp.stage_height(s + 1)) * sp.stage_width(s + 1);
      for (int i = 0; i < 2; ++i)
        if (r.branch_live[i]) macs += cost::reduction_branch_macs(i, g.F, sp.widths[s + 1], ohw);
    }
  }
  // Head FC.
  macs += cost::head_macs(sp.widths.back(), sp.classes);
  return macs;
}

double full_macs(const SearchSpace& space) {
  const std::vector<float> ones(static_cast<size_t>(space.total_lambda()), 1.0f);
  return live_macs(space, ones.data(), nullptr);
}

}  // namespace dsonas
