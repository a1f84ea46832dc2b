// random_arch.cpp — see random_arch.hpp.
#include "dsonas/model/random_arch.hpp"

#include <cmath>
#include <numeric>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/model/prune.hpp"

namespace dsonas {
namespace {

int block_entries(const ArchBlock& b) {
  int k = 0;
  for (const ArchOp& o : b.ops) {
    if (o.level >= 2) k += static_cast<int>(o.inputs.size());
    k += o.output ? 1 : 0;
  }
  return k;
}

/// One block of K live entries at random positions that is a fixed point of §6.1.
/// Writes the block's λ (0/1) into `out` (layout: BlockLayout, size lay.size()).
void draw_block(const BlockLayout& lay, int K, Rng& rng, const RandomArchOptions& opt, int64_t* redraws, float* out) {
  const int S = lay.size();
  std::vector<int> pos(static_cast<size_t>(S));
  std::vector<float> lam(static_cast<size_t>(S)), pruned;
  for (int64_t draw = 0;; ++draw) {
    if (draw >= opt.max_draws)
      fail_usage(
          str("derive --random: no random block with ", K, " live λ entries that §6.1 keeps after ", draw, " draws"));
    std::iota(pos.begin(), pos.end(), 0);
    std::fill(lam.begin(), lam.end(), 0.f);
    for (int i = 0; i < K; ++i) {  // partial Fisher-Yates: K distinct positions
      const int j = i + static_cast<int>(rng.below(static_cast<uint32_t>(S - i)));
      std::swap(pos[static_cast<size_t>(i)], pos[static_cast<size_t>(j)]);
      lam[static_cast<size_t>(pos[static_cast<size_t>(i)])] = 1.f;
    }
    pruned = lam;
    prune_block(pruned.data(), lay);
    if (pruned == lam) {  // nothing dead: exactly K live entries (K > 0 implies an output branch)
      std::copy(lam.begin(), lam.end(), out);
      return;
    }
    ++*redraws;
  }
}

}  // namespace

std::vector<int> live_entries_per_block(const Architecture& a) {
  std::vector<int> k;
  for (const ArchBlock& b : a.blocks()) {
    k.push_back(block_entries(b));
    if (a.space().share) break;  // every physical block has the shared topology
  }
  return k;
}

RandomArch sample_random_like(const Architecture& found, uint64_t seed, int index, const RandomArchOptions& opt) {
  const SearchSpace& sp = found.space();
  const BlockLayout lay = sp.block_layout();
  const std::vector<int> K = live_entries_per_block(found);
  const double target = opt.target_macs > 0 ? opt.target_macs : found.macs();
  if (!(opt.tolerance > 0)) fail_usage("derive --random: the MAC tolerance must be > 0");
  RandomArch r;
  Rng rng(seed, 0x72616e64617263ull + static_cast<uint64_t>(index));  // "randarc" + k
  std::vector<float> lam(static_cast<size_t>(sp.total_lambda()), 0.f);
  // reductions as searched
  for (int s = 0; s + 1 < sp.stages(); ++s)
    for (int i = 0; i < 2; ++i)
      lam[static_cast<size_t>(sp.reduction_lambda_offset(s) + i)] =
          found.reductions()[static_cast<size_t>(s)].branch[i] ? 1.f : 0.f;
  for (int64_t attempt = 0;; ++attempt) {
    if (attempt >= opt.max_draws)
      fail_usage(str("derive --random: no sample within ±", opt.tolerance * 100, " % of ", target, " MACs after ",
                     attempt, " samples"));
    size_t b = 0;
    for (int s = 0; s < sp.stages() && b < K.size(); ++s)
      for (int u = 0; u < sp.normal_units[static_cast<size_t>(s)] && b < K.size(); ++u, ++b)
        draw_block(lay, K[b], rng, opt, &r.block_redraws, lam.data() + sp.block_lambda_offset(s, u));
    Architecture a = Architecture::from_lambda(sp, lam.data(), nullptr);
    DSO_CHECK(live_entries_per_block(a) == K, "random architecture: live entries per block differ from the draw");
    const int C = width_for_target(a, target, CostKind::Macs);
    Architecture w = a.at_width(C);
    if (std::fabs(w.macs() - target) <= opt.tolerance * target) {
      w.source = found.source.empty() ? "random" : str("random like ", found.source);
      w.stage = "random";
      w.step = index;
      r.arch = std::move(w);
      r.lambda = lam;
      r.width = C;
      return r;
    }
    ++r.width_redraws;
  }
}

}  // namespace dsonas
