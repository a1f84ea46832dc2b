// fault.hpp — fault injection for tests (RELIABILITY.md §5).
//
// DSONAS_FAULT=<point>:<step>[@<rank>] acts when the process reaches the named
// point at that step (on every rank, or only on the given rank):
//   kill-after-step      SIGKILL after a training step completes
//   signal-after-step    SIGUSR1 to itself after a step (the graceful path)
//   ckpt-after-data      SIGKILL: checkpoint file written, not yet flushed/fsynced
//   ckpt-before-rename   SIGKILL: temporary file fsynced, not yet renamed
//   ckpt-before-latest   SIGKILL: renamed, `latest` not yet updated
//   nan-grad             no signal: fault_active() is true, and the trainer
//                        poisons that step's input with a NaN (tests that a
//                        non-finite gradient is caught before the reduction)
// Unset (the normal case) it costs one getenv at start-up.
#pragma once
#include <cstdint>

namespace dsonas {

/// True when DSONAS_FAULT names this point, step and (if it names one) rank.
bool fault_active(const char* point, int64_t step, int rank = 0);
/// Raises the point's signal when fault_active() (nothing for nan-grad).
void fault_point(const char* point, int64_t step, int rank = 0);

}  // namespace dsonas
