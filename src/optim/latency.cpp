// latency.cpp — adaptive latency penalty factors (design in optim/latency.hpp).
#include "dsonas/optim/latency.hpp"

#include <algorithm>
#include <chrono>
#include <limits>

#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/network.hpp"

namespace dsonas {

LatencyPenalty::LatencyPenalty(const SearchSpace& space, int width, int iters, int warmup, Backend& be)
    : space_(space), width_(width > 0 ? width : space.stem_channels), iters_(iters), warmup_(warmup), be_(be) {
  if (!space.share)
    fail_usage("search.penalty: adaptive-latency needs the share space (space.share = true, docs/method.md §5.3)");
  if (iters_ < 1 || warmup_ < 0 || warmup_ >= iters_)
    fail_usage(str("search.latency-iters: ", iters_, " forwards with ", warmup_,
                   " warm-up ones leaves nothing to time (need iters > warm-up >= 0)"));
}

std::vector<int> LatencyPenalty::live_bits(const float* lam, const uint8_t* mask) const {
  // §6.1 on copies: Architecture::from_lambda applies it; read the live entries
  // back from the derived blocks would lose the edge identity, so apply the
  // rule through the architecture and keep the entries whose λ > 0 and whose
  // op / branch survived.
  const Architecture a = Architecture::from_lambda(space_, lam, mask);
  const BlockLayout b = space_.block_layout();
  std::vector<uint8_t> alive(static_cast<size_t>(b.N * b.L), 0), out(static_cast<size_t>(b.N * b.L), 0);
  for (const ArchBlock& blk : a.blocks())
    for (const ArchOp& op : blk.ops) {
      alive[static_cast<size_t>((op.level - 1) * b.N + (op.op - 1))] = 1;
      if (op.output) out[static_cast<size_t>((op.level - 1) * b.N + (op.op - 1))] = 1;
    }
  std::vector<int> bits;
  for (int l = 2; l <= b.L; ++l)
    for (int j = 1; j <= b.N; ++j) {
      if (!alive[static_cast<size_t>((l - 1) * b.N + (j - 1))]) continue;
      const int row = b.row_offset(l, j);
      for (int i = 0; i < b.in_len(l); ++i) {
        const int e = row + i;
        if (lam[e] <= 0.f || (mask && !mask[e])) continue;
        // input i: 0 = block input, else op (l', j') that must be alive itself
        if (i > 0 && !alive[static_cast<size_t>(i - 1)]) continue;
        bits.push_back(e);
      }
    }
  for (int k = 0; k < b.N * b.L; ++k) {
    const int e = b.after_offset() + k;
    if (lam[e] > 0.f && (!mask || mask[e]) && out[static_cast<size_t>(k)]) bits.push_back(e);
  }
  return bits;
}

double LatencyPenalty::time_code(const std::vector<float>& lam, const std::vector<uint8_t>& mask) {
  const BlockLayout b = space_.block_layout();
  std::string key(static_cast<size_t>(b.size()), '0');
  for (int e = 0; e < b.size(); ++e)
    if (lam[static_cast<size_t>(e)] > 0.f && mask[static_cast<size_t>(e)]) key[static_cast<size_t>(e)] = '1';
  auto it = cache_.find(key);
  if (it != cache_.end()) {
    ++cached_;
    return it->second;
  }
  const Architecture a = Architecture::from_lambda(scale_width(space_, width_), lam.data(), mask.data());
  Network net(a, be_, 1);
  const SearchSpace& sp = a.space();
  std::vector<float> x(static_cast<size_t>(sp.in_channels) * sp.in_height * sp.in_width);
  Rng r(7, 7);
  for (float& v : x) v = static_cast<float>(r.normal());
  const int32_t label = 0;
  double sum = 0;
  for (int i = 0; i < iters_; ++i) {
    be_.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    net.eval_batch(x.data(), &label, 1);
    be_.synchronize();
    if (i >= warmup_) sum += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double t = sum / (iters_ - warmup_);
  cache_[key] = t;
  ++timed_;
  return t;
}

std::vector<double> LatencyPenalty::time_removals(const float* lam, const uint8_t* mask, const std::vector<int>& bits,
                                                  int part, int parts) {
  const size_t T = static_cast<size_t>(space_.total_lambda());
  std::vector<float> l(lam, lam + T);
  std::vector<uint8_t> m(T, 1);
  if (mask) m.assign(mask, mask + T);
  std::vector<double> t(bits.size(), 0.0);
  for (size_t k = 0; k < bits.size(); ++k) {
    if (static_cast<int>(k % static_cast<size_t>(parts)) != part) continue;
    const float keep = l[static_cast<size_t>(bits[k])];
    l[static_cast<size_t>(bits[k])] = 0.f;
    t[k] = time_code(l, m);
    l[static_cast<size_t>(bits[k])] = keep;
  }
  return t;
}

std::vector<float> LatencyPenalty::factors(const std::vector<int>& bits, const std::vector<double>& t) const {
  std::vector<float> r(static_cast<size_t>(space_.total_lambda()), 1.f);
  if (bits.empty()) return r;
  double lo = std::numeric_limits<double>::max(), hi = -lo;
  for (double v : t) {
    lo = std::min(lo, -v);
    hi = std::max(hi, -v);
  }
  for (size_t k = 0; k < bits.size(); ++k) {
    const double s = (-t[k] - lo) / ((hi - lo) + 1e-9);
    r[static_cast<size_t>(bits[k])] = static_cast<float>(0.5 + 0.5 * s);
  }
  return r;
}

}  // namespace dsonas
