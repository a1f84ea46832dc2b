// train.hpp — the stages: pretrain, search, and the step benchmark.
#pragma once
#include "dsonas/run/config.hpp"

namespace dsonas {

/// `dsonas pretrain`: the supergraph with λ fixed at 1 and no penalty, trained
/// with NAG on the W-half (docs/method.md §7.1 step 1).  Writes DIR/model.h5.
int run_pretrain(const RunConfig& cfg);
/// `dsonas search`: W-steps on the W-half and λ-steps (APG-NAG, §4.3) on the
/// λ-half, alternating (§4.4); pruning after every λ-step (§6.1).
int run_search(const RunConfig& cfg);
/// `dsonas bench`: times search steps (W and λ alternating) on synthetic data.
int run_bench(const RunConfig& cfg);

}  // namespace dsonas
