// profiling.hpp — a Backend decorator that times every primitive (wall clock,
// synchronising the wrapped backend after each call) and reports the totals.
// `dsonas bench --bench.profile true` uses it to show where a step's time goes.
#pragma once
#include <memory>
#include <string>

#include "dsonas/backend/backend.hpp"

namespace dsonas {

class ProfilingBackend;

/// Wraps `inner` (which must outlive the wrapper).
std::unique_ptr<Backend> make_profiling_backend(Backend& inner);
/// Table of the totals since the last reset (ms and share per primitive, and the
/// GFLOP/s and GB/s of the work model: see profiling_backend.cpp); resets.
std::string profiling_report(Backend& profiling_backend, int steps);
/// The same totals as JSON, per step: [{"primitive", "ms_per_step", "calls_per_step",
/// "flop_per_step", "bytes_per_step"}, …]; does not reset.
std::string profiling_json(Backend& profiling_backend, int steps);

}  // namespace dsonas
