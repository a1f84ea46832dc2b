// penalty.cpp — per-entry γ of docs/method.md §5 (adaptive FLOPs proxy/exact, adaptive MAC).
#include "dsonas/optim/penalty.hpp"

#include "dsonas/core/error.hpp"  // defines: fail_usage, DSO_CHECK, str

namespace dsonas {
namespace {

inline bool entry_live(const float* lam, const uint8_t* mask, int e) {
  return (mask == nullptr || mask[e] != 0) && lam[e] > 0.0f;
}

bool row_live(const float* lam, const uint8_t* mask, int off, int len) {
  for (int i = 0; i < len; ++i)
    if (entry_live(lam, mask, off + i)) return true;
  return false;
}

// §5.2 reference geometry: CIFAR stage 2 of the C = 48 supernet.
constexpr double kH = 16, kW = 16, kF = 96;
double mac_sep(double k) { return 4 * kH * kW * kF + k * k * kF + kF * kF; }

}  // namespace

PenaltyMode parse_penalty_mode(const std::string& s, const std::string& field) {
  if (s == "none") return PenaltyMode::None;
  if (s == "adaptive-flops") return PenaltyMode::AdaptiveFlopsProxy;
  if (s == "adaptive-flops-exact") return PenaltyMode::AdaptiveFlopsExact;
  if (s == "adaptive-mac") return PenaltyMode::AdaptiveMac;
  if (s == "adaptive-latency") return PenaltyMode::AdaptiveLatency;
  fail_usage(str(field, ": unknown penalty mode '", s,
                 "' (expected none, adaptive-flops, adaptive-flops-exact, adaptive-mac or adaptive-latency)"));
}

const char* penalty_mode_name(PenaltyMode m) {
  switch (m) {
    case PenaltyMode::None: return "none";
    case PenaltyMode::AdaptiveFlopsProxy: return "adaptive-flops";
    case PenaltyMode::AdaptiveFlopsExact: return "adaptive-flops-exact";
    case PenaltyMode::AdaptiveMac: return "adaptive-mac";
    case PenaltyMode::AdaptiveLatency: return "adaptive-latency";
  }
  return "?";
}

double adaptive_mac_factor(OpKind op) {
  const double norm = mac_sep(5);
  if (op_is_conv(op)) return mac_sep(op_kernel(op)) / norm;
  return 2 * kH * kW * kF / norm;  // MAC_pool
}

double adaptive_mac_after_factor() { return (2 * kH * kW * kF + kF) / mac_sep(5); }

double block_penalty_factor(const SearchSpace& sp, const float* lam, const uint8_t* mask, int stage, PenaltyMode mode) {
  if (mode == PenaltyMode::None || mode == PenaltyMode::AdaptiveMac || mode == PenaltyMode::AdaptiveLatency) return 1.0;
  const BlockLayout b = sp.block_layout();
  const int L = b.L, N = b.N;
  const double F = sp.widths[stage];
  // weight of one live sep conv of kernel k and of one live output conv, per unit HW
  auto conv_cost = [&](OpKind op) -> double {
    if (mode == PenaltyMode::AdaptiveFlopsProxy) return 1.0;
    const double k = op_kernel(op);
    return k * k * F + F * F;
  };
  const double out_cost = mode == PenaltyMode::AdaptiveFlopsProxy ? 1.0 : F * F;

  double live = 0.0, full = 0.0;
  for (int j = 1; j <= N; ++j) {
    const OpKind op = sp.ops[j - 1];
    if (!op_is_conv(op)) continue;
    full += L * conv_cost(op);
    live += conv_cost(op);  // level 1: always counted
    for (int l = 2; l <= L; ++l)
      if (row_live(lam, mask, b.row_offset(l, j), b.in_len(l))) live += conv_cost(op);
  }
  full += N * L * out_cost;
  for (int k = 0; k < N * L; ++k)
    if (entry_live(lam, mask, b.after_offset() + k)) live += out_cost;

  if (mode == PenaltyMode::AdaptiveFlopsProxy) return (live + 1.0) / (full + 1.0);
  return full > 0.0 ? live / full : 1.0;  // no conv op at all: nothing to scale
}

void penalty_gamma(const SearchSpace& sp, const float* lam, const uint8_t* mask, float gamma, PenaltyMode mode,
                   float* out) {
  const BlockLayout b = sp.block_layout();
  const int bs = b.size();
  const int total = sp.total_lambda();
  for (int e = 0; e < total; ++e) out[e] = gamma;  // reductions keep this
  if (mode == PenaltyMode::None || mode == PenaltyMode::AdaptiveLatency) return;

  auto fill_block = [&](int off, int stage) {
    if (mode == PenaltyMode::AdaptiveMac) {
      for (int l = 2; l <= b.L; ++l)
        for (int j = 1; j <= b.N; ++j) {
          const float f = static_cast<float>(gamma * adaptive_mac_factor(sp.ops[j - 1]));
          const int row = off + b.row_offset(l, j);
          for (int i = 0; i < b.in_len(l); ++i) out[row + i] = f;
        }
      const float fa = static_cast<float>(gamma * adaptive_mac_after_factor());
      for (int k = 0; k < b.N * b.L; ++k) out[off + b.after_offset() + k] = fa;
      return;
    }
    const double f = block_penalty_factor(sp, lam + off, mask ? mask + off : nullptr, stage, mode);
    const float g = static_cast<float>(gamma * f);
    for (int e = off; e < off + bs; ++e) out[e] = g;
  };

  if (sp.share) {
    fill_block(0, 0);  // shared block: stage-0 geometry for the exact mode
  } else {
    for (int s = 0; s < sp.stages(); ++s)
      for (int u = 0; u < sp.normal_units[s]; ++u) fill_block(sp.block_lambda_offset(s, u), s);
  }
}

std::vector<float> penalty_gamma(const SearchSpace& sp, const std::vector<float>& lam, const std::vector<uint8_t>* mask,
                                 float gamma, PenaltyMode mode) {
  DSO_CHECK(static_cast<int>(lam.size()) == sp.total_lambda(), "λ has ", lam.size(), " entries");
  DSO_CHECK(!mask || mask->size() == lam.size(), "mask has ", mask->size(), " entries");
  std::vector<float> out(lam.size());
  penalty_gamma(sp, lam.data(), mask ? mask->data() : nullptr, gamma, mode, out.data());
  return out;
}

}  // namespace dsonas
