// cpu_thread_pool.cpp — see cpu_thread_pool.hpp.
//
// One process-wide pool; workers are made on demand, up to the largest nt
// asked for.  A job is published as
//   fields (call, ctx, share bounds)         written only while no job runs
//   share[r] = (nt:8 | count:24 | next:32)   one claim word per share r < nt
//   gen                                       job counter, the workers' futex word
// Thread tid claims chunk `next` of share r by a compare-and-swap next → next+1
// on share[r], made only if next < count and tid < nt (threads beyond the
// job's nt never run its chunks: their tid would index past the caller's
// per-thread scratch).  A claim is always on the job being run: a job cannot
// finish while one of its chunks is claimed and not done, and the master
// rewrites the fields and the words only after all chunks are done.  So a
// worker may arrive late or look at a word of a later job; its claim, if it
// succeeds, is that job's.  The fields are written before the words are
// (release) and read after a claim (acquire), so a claimer sees them.
#include "cpu_thread_pool.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <exception>
#include <mutex>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace dsonas {
namespace cpu {
namespace {

constexpr int kMaxThreads = 64;
/// How long an idle worker spins for the next job before it sleeps.
constexpr auto kSpin = std::chrono::microseconds(300);
/// How long the caller spins for the workers' last chunks before it sleeps.
constexpr auto kMasterSpin = std::chrono::microseconds(100);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

long futex(std::atomic<uint32_t>* addr, int op, uint32_t val) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex word");
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), op, val, nullptr, nullptr, 0);
}

thread_local bool t_in_chunk = false;

class Pool {
 public:
  static Pool& get() {
    static Pool* p = new Pool();  // never destroyed: the workers live until exit
    return *p;
  }

  void run(int nt, int64_t n, void (*call)(const void*, int64_t, int), const void* ctx) {
    nt = static_cast<int>(std::min<int64_t>(std::min(nt, kMaxThreads), n));
    std::unique_lock<std::mutex> lk(busy_, std::defer_lock);
    if (nt <= 1 || t_in_chunk || n >= (int64_t{1} << 24) || !lk.try_lock()) {  // serial
      serial_for(n, [&](int64_t i) { call(ctx, i, 0); });
      return;
    }
    ensure_workers(nt - 1);
    // publish: fields, then the claim words (release), then wake the workers
    call_ = call;
    ctx_ = ctx;
    for (int r = 0; r <= nt; ++r) lo_[r] = n * r / nt;  // schedule(static)'s split
    done_.store(0, std::memory_order_relaxed);
    for (int r = 0; r < nt; ++r)
      share_[r].w.store((static_cast<uint64_t>(nt) << 56) | (static_cast<uint64_t>(lo_[r + 1] - lo_[r]) << 32),
                        std::memory_order_release);
    gen_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) futex(&gen_, FUTEX_WAKE_PRIVATE, INT_MAX);
    work(0);
    // Wait only for chunks that workers have claimed: spin, then sleep until
    // the last of them reports (a preempted worker may need this core).
    auto t0 = std::chrono::steady_clock::now();
    for (int k = 0;;) {
      const uint32_t d = done_.load(std::memory_order_acquire);
      if (d >= static_cast<uint32_t>(n)) break;
      cpu_relax();
      if ((++k & 255) == 0 && std::chrono::steady_clock::now() - t0 > kMasterSpin) {
        master_waits_.store(1, std::memory_order_seq_cst);
        if (done_.load(std::memory_order_seq_cst) == d) futex(&done_, FUTEX_WAIT_PRIVATE, d);
        master_waits_.store(0, std::memory_order_relaxed);
      }
    }
    if (err_) {
      std::exception_ptr e;
      std::swap(e, err_);
      std::rethrow_exception(e);
    }
  }

 private:
  struct alignas(64) Word {
    std::atomic<uint64_t> w{0};
  };

  void ensure_workers(int want) {
    while (static_cast<int>(workers_.size()) < want) {
      const int tid = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, tid] { worker(tid); });
      workers_.back().detach();
    }
  }

  /// Claims and runs chunks: own share first, then the others' in turn.  The
  /// count of chunks run is reported once at the end (one shared-line RMW per
  /// job and thread rather than per chunk).
  void work(int tid) {
    // the job's nt as this thread's own word shows it (a stale value only
    // changes which shares it looks at; every claim is checked by itself)
    const int nt = static_cast<int>(share_[tid < kMaxThreads ? tid : 0].w.load(std::memory_order_acquire) >> 56);
    if (tid >= nt) return;
    int64_t ran = 0;
    t_in_chunk = true;
    for (int q = 0; q < nt; ++q) {
      const int r = (tid + q) % nt;
      std::atomic<uint64_t>& word = share_[r].w;
      uint64_t c = word.load(std::memory_order_acquire);
      for (;;) {
        const int64_t idx = static_cast<int64_t>(c & 0xffffffffu);
        const int64_t cnt = static_cast<int64_t>((c >> 32) & 0xffffffu);
        if (idx >= cnt || tid >= static_cast<int>(c >> 56)) break;
        if (!word.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
        try {
          call_(ctx_, lo_[r] + idx, tid);
        } catch (...) {  // keep the job's accounting intact; the caller rethrows
          std::lock_guard<std::mutex> g(err_mu_);
          if (!err_) err_ = std::current_exception();
        }
        ++ran;
        c = word.load(std::memory_order_acquire);
      }
    }
    t_in_chunk = false;
    if (ran) {
      done_.fetch_add(static_cast<uint32_t>(ran), std::memory_order_seq_cst);
      if (tid != 0 && master_waits_.load(std::memory_order_seq_cst)) futex(&done_, FUTEX_WAKE_PRIVATE, 1);
    }
  }

  void worker(int tid) {
    uint32_t seen = gen_.load(std::memory_order_acquire);
    for (;;) {
      auto t0 = std::chrono::steady_clock::now();
      uint32_t g;
      int k = 0;
      while ((g = gen_.load(std::memory_order_acquire)) == seen) {
        cpu_relax();
        if ((++k & 255) == 0 && std::chrono::steady_clock::now() - t0 > kSpin) {
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          if (gen_.load(std::memory_order_seq_cst) == seen) futex(&gen_, FUTEX_WAIT_PRIVATE, seen);
          sleepers_.fetch_sub(1, std::memory_order_seq_cst);
          t0 = std::chrono::steady_clock::now();
        }
      }
      seen = g;
      work(tid);
    }
  }

  std::mutex busy_;
  std::mutex err_mu_;
  std::exception_ptr err_;  // first exception of the running job's chunks
  std::vector<std::thread> workers_;
  void (*call_)(const void*, int64_t, int) = nullptr;
  const void* ctx_ = nullptr;
  int64_t lo_[kMaxThreads + 1] = {};
  Word share_[kMaxThreads];
  alignas(64) std::atomic<uint32_t> done_{0};
  std::atomic<int> master_waits_{0};
  alignas(64) std::atomic<uint32_t> gen_{0};
  std::atomic<int> sleepers_{0};
};

}  // namespace

void pool_run(int nt, int64_t n, void (*call)(const void*, int64_t, int), const void* ctx) {
  Pool::get().run(nt, n, call, ctx);
}

}  // namespace cpu
}  // namespace dsonas
