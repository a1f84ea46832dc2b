// cpu_thread_pool.hpp — private to src/backend/cpu: the thread pool CpuBackend's
// kernels run on (instead of OpenMP parallel regions).
//
// par_for(nt, n, body) runs body(i, tid) for every chunk i in [0, n) on up to
// nt threads, the caller being tid 0.  The chunks are fixed by the caller (by
// the problem size), and every kernel writes a chunk's results to places that
// depend on i only, so results never depend on which thread ran a chunk or
// when; per-thread scratch (indexed by tid) must be fully rewritten by each
// chunk before use.  Reductions keep per-chunk partials summed in chunk order
// by the caller, as before.
//
// Why not OpenMP: an OpenMP parallel region ends with a barrier that waits for
// every thread of the team.  On a loaded machine (the shared 2-core
// development box runs other builds and tests) a worker that has been
// preempted holds up every one of the ~800 regions of a search step for a
// scheduler time slice; search steps then took 3–4 s instead of 0.3 s, 4×
// slower than with one thread.  Here chunks are claimed, not assigned: thread t
// starts on its own contiguous share (the same split as schedule(static), so
// the same data stays with the same core when all threads run) and then helps
// with the others' shares; the caller waits only for chunks that a worker has
// actually started.  A worker that is not running when a job arrives simply
// misses it.
//
// Workers spin briefly between jobs (a step issues them back to back), then
// sleep on a futex.  Nested calls (from inside a chunk) and calls while the
// pool is busy on another thread run serially on the calling thread.  An
// exception thrown by a chunk is rethrown by par_for in the calling thread
// once every claimed chunk has finished (the other chunks still run).
#pragma once
#include <cstdint>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace dsonas {
namespace cpu {

/// f(i) for i in [0, n) in order; an exception is rethrown after the loop
/// (the other iterations still run), as from the pool.
template <class F>
void serial_for(int64_t n, F&& f) {
  std::exception_ptr err;
  for (int64_t i = 0; i < n; ++i) {
    try {
      f(i);
    } catch (...) {
      if (!err) err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
}

/// Runs call(ctx, i, tid) for i in [0, n) on up to nt threads.
void pool_run(int nt, int64_t n, void (*call)(const void*, int64_t, int), const void* ctx);

/// body(i, tid) for i in [0, n); serial when nt ≤ 1 or n ≤ 1.
template <class F>
void par_for(int nt, int64_t n, F&& body) {
  if (n <= 0) return;
  if (nt <= 1 || n == 1) {
    serial_for(n, [&](int64_t i) { body(i, 0); });
    return;
  }
  using B = typename std::remove_reference<F>::type;
  pool_run(
      nt, n, [](const void* c, int64_t i, int tid) { (*static_cast<B*>(const_cast<void*>(c)))(i, tid); },
      static_cast<const void*>(&body));
}

/// body(i0, i1) over [0, n) cut into ranges of `grain` elements (fixed).
template <class F>
void par_range(int nt, int64_t n, int64_t grain, F&& body) {
  const int64_t nc = (n + grain - 1) / grain;
  par_for(nt, nc, [&](int64_t c, int) { body(c * grain, c + 1 == nc ? n : (c + 1) * grain); });
}

/// Per-thread scratch objects, made on first use by their own thread.
template <class T>
class PerThread {
 public:
  explicit PerThread(int nt) : v_(static_cast<size_t>(nt > 0 ? nt : 1)) {}
  template <class... A>
  T& get(int tid, A&&... args) {
    auto& p = v_[static_cast<size_t>(tid)];
    if (!p) p = std::make_unique<T>(std::forward<A>(args)...);
    return *p;
  }

 private:
  std::vector<std::unique_ptr<T>> v_;
};

}  // namespace cpu
}  // namespace dsonas
