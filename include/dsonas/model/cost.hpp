// cost.hpp — the MACs and parameters of every piece of a network, one formula
// each (docs/method.md §11.1: a convolution costs its weights × its output
// positions; BN, ReLU, pooling, sums and the global pool cost no MACs; a BN has
// γ and β).  The supergraph's live cost (live_macs), an architecture's
// (Architecture::macs, params) and a built Network's all count with these.
#pragma once
#include "dsonas/model/search_space.hpp"  // defines: OpKind, op_is_conv, op_kernel

namespace dsonas {
namespace cost {

/// A convolution with cout filters of cin_per_group × k × k weights, out_positions outputs per filter.
inline double conv_macs(double cout, double cin_per_group, int k, double out_positions) {
  return cout * cin_per_group * k * k * out_positions;
}
/// γ and β of a BN over c channels.
inline double bn_params(double c) { return 2.0 * c; }

/// An op of a block at width F on hw positions: sepk = depthwise k×k + pointwise 1×1; pooling: none.
inline double op_macs(OpKind t, double F, double hw) {
  if (!op_is_conv(t)) return 0.0;
  return conv_macs(F, 1, op_kernel(t), hw) + conv_macs(F, F, 1, hw);
}
/// Its weights and its BN.
inline double op_params(OpKind t, double F) {
  const double w = op_is_conv(t) ? conv_macs(F, 1, op_kernel(t), 1) + conv_macs(F, F, 1, 1) : 0.0;
  return w + bn_params(F);
}

/// One output branch (its 1×1 conv into the block output), or the first block's 1×1 shortcut.
inline double pointwise_macs(double F, double hw) { return conv_macs(F, F, 1, hw); }

/// Reduction branch i (0: 1×1, 1: 3×3, both stride 2) from fin channels to fout on out_hw positions.
inline int reduction_kernel(int i) { return i == 0 ? 1 : 3; }
inline double reduction_branch_macs(int i, double fin, double fout, double out_hw) {
  return conv_macs(fout, fin, reduction_kernel(i), out_hw);
}
inline double reduction_branch_params(int i, double fin, double fout) {
  return conv_macs(fout, fin, reduction_kernel(i), 1) + bn_params(fout);
}

/// The head's classifier (global pool → FC with bias).
inline double head_macs(double F, int classes) { return F * classes; }
inline double head_params(double F, int classes) { return bn_params(F) + F * classes + classes; }

}  // namespace cost
}  // namespace dsonas
