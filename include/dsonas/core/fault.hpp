// fault.hpp — fault injection for tests (RELIABILITY.md §5).
//
// DSONAS_FAULT=<point>:<step> makes the process kill itself (SIGKILL) when it
// reaches the named point at that step; `signal-after-step` sends SIGUSR1 to
// itself instead (the graceful path).  Points:
//   kill-after-step, signal-after-step   after a training step completes
//   ckpt-after-data      checkpoint file written, not yet flushed/fsynced
//   ckpt-before-rename   temporary file fsynced, not yet renamed
//   ckpt-before-latest   renamed, `latest` not yet updated
// Unset (the normal case) it costs one getenv at start-up.
#pragma once
#include <cstdint>

namespace dsonas {

void fault_point(const char* point, int64_t step);

}  // namespace dsonas
