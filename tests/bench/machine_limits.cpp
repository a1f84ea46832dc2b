// machine_limits.cpp — this machine's own limits, the roofs of `make bench`'s roofline
// (issue 17): what a primitive's achieved GFLOP/s and GB/s are compared with.
//
//   peak FP32 FMA throughput: a register-resident loop of independent fused multiply-adds
//     (12 accumulators: more than latency × pipes on the x86-64 cores we know), AVX-512 where
//     the CPU has it and DSONAS_CPU_AVX512 is not 0 (the switch dsonas's own kernels obey),
//     else AVX2 + FMA; on 1 thread and on T threads at once;
//   OpenBLAS sgemm on n × n matrices (n = 2048; 1536 with --quick), 1 thread and T threads;
//   memory bandwidth: a STREAM-style triad a[i] = b[i] + s·c[i] over three arrays of
//     64 MiB each (far beyond the caches), 1 thread and T threads, counted as STREAM does
//     (12 bytes per element: two reads, one write; the write-allocate read not counted);
//   cache bandwidth: the same triad on arrays that together take half of the L2 (per
//     core, sizes from sysfs) or of the L3, swept many times by the same T threads: the
//     roofs of primitives whose tensors stay in those caches.
// Each figure: the best and the median of R repetitions (best: the STREAM convention).
//
// usage: machine_limits [--threads T] [--reps R] [--quick] [--json FILE]
//   T defaults to the cores this process may run on; the JSON goes to FILE and stdout.
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

struct Stat {
  double best = 0, median = 0;
};
Stat stat_of(std::vector<double> v) {  // higher is better
  std::sort(v.begin(), v.end());
  Stat s;
  s.best = v.back();
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  return s;
}

// ---- FMA peak -------------------------------------------------------------------
// Each returns the FLOPs done (2 per lane per FMA) and a value that depends on every
// accumulator, so the compiler keeps the loop.
__attribute__((target("avx512f"))) double fma_avx512(int64_t iters, float* sink) {
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(0.001f * static_cast<float>(i + 1));
  const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t k = 0; k < iters; ++k)
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  float t[16];
  _mm512_storeu_ps(t, s);
  float r = 0;
  for (float v : t) r += v;
  *sink = r;
  return 2.0 * 16 * 12 * static_cast<double>(iters);
}

__attribute__((target("avx2,fma"))) double fma_avx2(int64_t iters, float* sink) {
  __m256 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(0.001f * static_cast<float>(i + 1));
  const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t k = 0; k < iters; ++k)
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  __m256 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
  float t[8];
  _mm256_storeu_ps(t, s);
  *sink = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
  return 2.0 * 8 * 12 * static_cast<double>(iters);
}

/// GFLOP/s of `threads` threads each running the FMA loop (wall time of the slowest).
double fma_gflops(int threads, bool avx512, int64_t iters) {
  double flops = 0;
  std::vector<float> sink(static_cast<size_t>(threads) * 16);
  double t0 = 0, t1 = 0;
#pragma omp parallel num_threads(threads) reduction(+ : flops)
  {
    const int t = omp_get_thread_num();
#pragma omp barrier
#pragma omp single
    t0 = now_s();
    flops += avx512 ? fma_avx512(iters, &sink[static_cast<size_t>(t) * 16])
                    : fma_avx2(iters, &sink[static_cast<size_t>(t) * 16]);
#pragma omp barrier
#pragma omp single
    t1 = now_s();
  }
  return flops / (t1 - t0) / 1e9;
}

// ---- sgemm ------------------------------------------------------------------------
double sgemm_gflops(int n, int threads) {
  openblas_set_num_threads(threads);
  std::vector<float> A(static_cast<size_t>(n) * n), B(A.size()), C(A.size());
  for (size_t i = 0; i < A.size(); ++i) {
    A[i] = static_cast<float>((i * 7) % 13) * 0.01f;
    B[i] = static_cast<float>((i * 5) % 11) * 0.01f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n);
  const double t0 = now_s();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n);
  const double t = now_s() - t0;
  return 2.0 * n * static_cast<double>(n) * n / t / 1e9;
}

// ---- triad -------------------------------------------------------------------------
double triad_gbs(float* a, const float* b, const float* c, int64_t n, int threads, int passes = 1) {
  const float s = 3.f;
  const double t0 = now_s();
#pragma omp parallel num_threads(threads)
  for (int q = 0; q < passes; ++q) {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
  }
  const double t = now_s() - t0;
  return 12.0 * static_cast<double>(n) * passes / t / 1e9;
}

/// Bytes of the level-`level` data (or unified) cache seen by CPU 0, from sysfs (a
/// VM's sysconf may report the host's); 0 if unknown.
int64_t cache_bytes(int level) {
  for (int i = 0; i < 8; ++i) {
    const std::string d = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream lv(d + "level"), ty(d + "type"), sz(d + "size");
    int l = 0;
    std::string type, size;
    if (!(lv >> l) || !(ty >> type) || !(sz >> size)) continue;
    if (l != level || type == "Instruction" || size.empty()) continue;
    int64_t v = std::atoll(size.c_str());
    if (size.back() == 'K') v <<= 10;
    if (size.back() == 'M') v <<= 20;
    return v;
  }
  return 0;
}

/// Triad bandwidth on arrays that fit a cache level: the three arrays together take
/// half of `bytes` (per thread for a private cache), swept `passes` times by the same
/// threads in the same static partition, so each thread's share stays in its cache.
struct CacheTriad {
  int64_t array_bytes = 0;
  std::vector<double> gbs;
};
void cache_triad(CacheTriad& ct, int64_t bytes, int threads, int passes) {
  const int64_t n = std::max<int64_t>(4096, bytes / 2 / 12);  // floats per array
  ct.array_bytes = 4 * n;
  std::vector<float> a(static_cast<size_t>(n), 0.f), b(a.size(), 1.f), c(a.size(), 2.f);
  triad_gbs(a.data(), b.data(), c.data(), n, threads, 2);  // warm
  ct.gbs.push_back(triad_gbs(a.data(), b.data(), c.data(), n, threads, passes));
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

std::string stat_json(const Stat& s) {
  char b[96];
  std::snprintf(b, sizeof b, "{\"best\": %.2f, \"median\": %.2f}", s.best, s.median);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  cpu_set_t set;
  int threads = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  int reps = 5;
  bool quick = false;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: machine_limits [--threads T] [--reps R] [--quick] [--json FILE]\n");
      return 2;
    }
  }
  if (threads < 1 || reps < 1) {
    std::fprintf(stderr, "machine_limits: --threads and --reps must be >= 1\n");
    return 2;
  }
  const char* env = std::getenv("DSONAS_CPU_AVX512");
  const bool avx512 = __builtin_cpu_supports("avx512f") && !(env && std::strcmp(env, "0") == 0);
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::fprintf(stderr, "machine_limits: this CPU has no AVX2 + FMA\n");
    return 1;
  }
  const int64_t iters = quick ? 20000000 : 50000000;
  const int n = quick ? 1536 : 2048;
  const int64_t elems = int64_t(16) << 20;  // 64 MiB per array
  std::vector<float> a(static_cast<size_t>(elems)), b(a.size()), c(a.size());
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < elems; ++i) {  // first touch by the threads that use them
    a[static_cast<size_t>(i)] = 0.f;
    b[static_cast<size_t>(i)] = 1.f;
    c[static_cast<size_t>(i)] = 2.f;
  }
  std::vector<double> f1, fT, g1, gT, s1, sT;
  const int64_t l2 = cache_bytes(2), l3 = cache_bytes(3);
  CacheTriad t2, t3;
  for (int r = 0; r < reps; ++r) {
    if (l2 > 0) cache_triad(t2, l2 * threads, threads, quick ? 2000 : 5000);  // L2: private, one per core
    if (l3 > 0) cache_triad(t3, l3, threads, quick ? 100 : 250);
    f1.push_back(fma_gflops(1, avx512, iters));
    fT.push_back(fma_gflops(threads, avx512, iters));
    g1.push_back(sgemm_gflops(n, 1));
    gT.push_back(sgemm_gflops(n, threads));
    s1.push_back(triad_gbs(a.data(), b.data(), c.data(), elems, 1));
    sT.push_back(triad_gbs(a.data(), b.data(), c.data(), elems, threads));
  }
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::ostringstream j;
  j << "{\"cpu\": \"" << cpu_model() << "\", \"threads\": " << threads << ", \"reps\": " << reps << ", \"fma_isa\": \""
    << (avx512 ? "avx512" : "avx2") << "\", \"fma_gflops_1thread\": " << stat_json(stat_of(f1))
    << ", \"fma_gflops_node\": " << stat_json(stat_of(fT)) << ", \"sgemm_n\": " << n
    << ", \"sgemm_gflops_1thread\": " << stat_json(stat_of(g1)) << ", \"sgemm_gflops_node\": " << stat_json(stat_of(gT))
    << ", \"triad_gbs_1thread\": " << stat_json(stat_of(s1)) << ", \"triad_gbs_node\": " << stat_json(stat_of(sT))
    << ", \"triad_array_mib\": " << (elems * 4 >> 20);
  if (l2 > 0)
    j << ", \"l2_bytes\": " << l2 << ", \"triad_l2_gbs_node\": " << stat_json(stat_of(t2.gbs))
      << ", \"triad_l2_array_kib\": " << (t2.array_bytes >> 10);
  if (l3 > 0)
    j << ", \"l3_bytes\": " << l3 << ", \"triad_l3_gbs_node\": " << stat_json(stat_of(t3.gbs))
      << ", \"triad_l3_array_kib\": " << (t3.array_bytes >> 10);
  j << ", \"openblas_coretype\": \"" << (coretype ? coretype : "") << "\", \"openblas_config\": \""
    << openblas_get_config() << "\"}";
  std::printf("%s\n", j.str().c_str());
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    if (!(f << j.str() << "\n")) {
      std::fprintf(stderr, "machine_limits: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}
