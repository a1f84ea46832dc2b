// plane_bench.cpp — the stride-1 plane kernels of the CPU backend, their AVX-512 form
// (src/backend/cpu/cpu_corr_avx512.cpp) against the 8-wide one, side by side in one
// process (issue 17): depthwise 3×3 and 5×5 forward and backward-data, max and average
// pooling 3×3 forward and backward, on the search's three stages (C×N×H×W = 16×64×28²,
// 32×64×14², 64×64×7², `jobs/bench_fmnist.cfg` at batch 64).  Both forms give the same
// bits (test_backend_cpu: CorrAvx512MatchesAvx2), so only time differs.
//
// Each round times every kernel with both forms, alternating which goes first; a time is
// the median of `--reps` calls after 3 warm-up calls (the inputs stay in cache: a kernel's
// own speed, not the memory traffic of a training step — `dsonas bench --bench.profile`
// measures that).  Reported per kernel: the median over rounds of each form's time and of
// the per-round ratio 8-wide / AVX-512 (> 1: AVX-512 faster), with the ratio's min..max.
//
// usage: plane_bench [--threads T] [--rounds R] [--reps N] [--json FILE]
//   Without AVX-512 (CPU or DSONAS_CPU_AVX512=0) it says so and times the 8-wide form only.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "../../src/backend/cpu/cpu_backend.hpp"  // avx512_available / avx512_allow

using namespace dsonas;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double time_ms(const std::function<void()>& f, int reps) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  return median(t);
}

void fill(Tensor& t, uint32_t s) {
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    s = s * 1664525u + 1013904223u;
    p[i] = static_cast<float>((s >> 8) & 0xffff) / 65536.f - 0.5f;
  }
}

struct Kernel {
  std::string name;
  std::function<void()> run;
  std::vector<double> t[2];  // [0] AVX-512, [1] 8-wide
  std::vector<double> ratio;
};

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, rounds = 5, reps = 21;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "plane_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads")
      threads = std::atoi(next());
    else if (a == "--rounds")
      rounds = std::atoi(next());
    else if (a == "--reps")
      reps = std::atoi(next());
    else if (a == "--json")
      json = next();
    else {
      std::fprintf(stderr, "usage: plane_bench [--threads T] [--rounds R] [--reps N] [--json FILE]\n");
      return 2;
    }
  }
  if (threads < 1 || rounds < 1 || reps < 1) {
    std::fprintf(stderr, "plane_bench: --threads, --rounds and --reps must be >= 1\n");
    return 2;
  }
  const bool z = cpu::avx512_available();
  auto bep = make_cpu_backend(threads);
  Backend& be = *bep;
  struct Stage {
    int C, H;
  };
  const Stage stages[] = {{16, 28}, {32, 14}, {64, 7}};
  const int N = 64;
  std::deque<Tensor> keep;  // the tensors the kernels' closures use (stable addresses)
  std::vector<Kernel> ks;
  for (const Stage& s : stages) {
    const Shape sh = {s.C, N, s.H, s.H};
    keep.push_back(Tensor::zeros(sh));  // x
    keep.push_back(Tensor::zeros(sh));  // dy
    keep.push_back(Tensor::zeros(sh));  // y
    keep.push_back(Tensor::zeros(sh));  // dx
    Tensor &x = keep[keep.size() - 4], &dy = keep[keep.size() - 3], &y = keep[keep.size() - 2],
           &dx = keep[keep.size() - 1];
    fill(x, 1);
    fill(dy, 2);
    const std::string at = std::to_string(s.C) + "x" + std::to_string(N) + "x" + std::to_string(s.H) + "^2";
    for (int k : {3, 5}) {
      ConvDesc d{s.C, s.C, k, 1, k / 2, s.C};
      keep.push_back(Tensor::zeros(d.weight_shape()));
      Tensor& w = keep.back();
      fill(w, 3);
      const std::string dw = "dw" + std::to_string(k) + "x" + std::to_string(k);
      ks.push_back({dw + " forward " + at, [&be, d, &x, &w, &y] { be.conv_forward(d, x, w, y); }, {}, {}});
      ks.push_back({dw + " backward-data (beta 1) " + at,
                    [&be, d, &dy, &w, &dx] { be.conv_backward_data(d, dy, w, dx, 1.f, 1.f); },
                    {},
                    {}});
    }
    for (PoolKind kind : {PoolKind::Max, PoolKind::Avg}) {
      PoolDesc p;
      p.kind = kind;
      keep.push_back(Tensor::zeros(sh));  // this pooling's forward output, for its backward
      Tensor& yp = keep.back();
      be.pool_forward(p, x, yp);
      const std::string pn = kind == PoolKind::Max ? "max-pool 3x3" : "avg-pool 3x3";
      ks.push_back({pn + " forward " + at, [&be, p, &x, &y] { be.pool_forward(p, x, y); }, {}, {}});
      ks.push_back({pn + " backward (beta 1) " + at,
                    [&be, p, &x, &yp, &dy, &dx] { be.pool_backward(p, x, yp, dy, dx, 1.f); },
                    {},
                    {}});
    }
  }
  for (int r = 0; r < rounds; ++r)
    for (Kernel& k : ks) {
      double t[2] = {0, 0};
      for (int q = 0; q < 2; ++q) {
        const int form = (r + q) % 2;  // alternate which form goes first
        if (form == 0 && !z) continue;
        cpu::avx512_allow(form == 0);
        t[form] = time_ms(k.run, reps);
        k.t[form].push_back(t[form]);
      }
      cpu::avx512_allow(true);
      if (z) k.ratio.push_back(t[1] / t[0]);
    }
  std::printf("plane kernels, %d threads, %d rounds x median of %d calls; %s\n", threads, rounds, reps,
              z ? "AVX-512 form vs 8-wide form" : "no AVX-512 here: the 8-wide form only");
  std::printf("%-46s %10s %10s %8s  %s\n", "kernel", "avx512 ms", "8-wide ms", "ratio", "per-round ratios");
  std::ostringstream js;
  js << "{\"threads\": " << threads << ", \"rounds\": " << rounds << ", \"reps\": " << reps
     << ", \"avx512\": " << (z ? "true" : "false") << ", \"kernels\": [";
  for (size_t i = 0; i < ks.size(); ++i) {
    const Kernel& k = ks[i];
    const double t8 = median(k.t[1]);
    if (z) {
      const double t5 = median(k.t[0]), rm = median(k.ratio);
      const auto mm = std::minmax_element(k.ratio.begin(), k.ratio.end());
      std::printf("%-46s %10.3f %10.3f %8.2f  %.2f..%.2f\n", k.name.c_str(), t5, t8, rm, *mm.first, *mm.second);
      js << (i ? ", " : "") << "{\"kernel\": \"" << k.name << "\", \"avx512_ms\": " << t5 << ", \"avx2_ms\": " << t8
         << ", \"ratio\": " << rm << ", \"ratio_min\": " << *mm.first << ", \"ratio_max\": " << *mm.second << "}";
    } else {
      std::printf("%-46s %10s %10.3f %8s\n", k.name.c_str(), "-", t8, "-");
      js << (i ? ", " : "") << "{\"kernel\": \"" << k.name << "\", \"avx2_ms\": " << t8 << "}";
    }
  }
  js << "]}\n";
  if (!json.empty()) {
    std::ofstream f(json);
    f << js.str();
    if (!f) {
      std::fprintf(stderr, "plane_bench: cannot write %s\n", json.c_str());
      return 1;
    }
  }
  return 0;
}
