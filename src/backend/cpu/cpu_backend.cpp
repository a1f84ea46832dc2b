// cpu_backend.cpp — CpuBackend: construction, memory, elementwise ops, the head and
// the optimiser (the CUDA twin: cuda_backend.cu).  The other primitive families have
// one file each, named as their CUDA twins: cpu_bn.cpp, cpu_wsum.cpp, cpu_conv.cpp,
// cpu_pooling.cpp, cpu_retrain.cpp; cpu_gemm1x1.cpp holds the AVX-512 1×1 GEMM
// kernels and cpu_thread_pool.hpp the thread pool.
#include "cpu_backend.hpp"
#include "cpu_thread_pool.hpp"

#include <cblas.h>
#include <omp.h>

#ifdef __x86_64__
#include <immintrin.h>
#endif

#include <cmath>
#include <cstring>

#include "dsonas/core/error.hpp"

namespace dsonas {
using namespace cpu;

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

CpuBackend::CpuBackend(int threads) : nt_(threads > 0 ? threads : omp_get_num_procs()) {
  openblas_set_num_threads(1);  // we parallelise around the GEMMs ourselves
  omp_set_num_threads(nt_);
}

std::string CpuBackend::name() const { return str("cpu(openblas+openmp, ", nt_, " threads)"); }

namespace {

void check_same(const Tensor& a, const Tensor& b, const char* what) {
  DSO_CHECK(a.numel() == b.numel(), what, ": element counts differ: ", shape_str(a.shape()), " vs ",
            shape_str(b.shape()));
}

}  // namespace

// ---- memory ----------------------------------------------------------------------

void CpuBackend::fill(Tensor& t, float v) {
  float* p = t.data();
  const int64_t n = t.numel();
  par_range(n >= kParMin ? nt_ : 1, n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) p[i] = v;
  });
}

void CpuBackend::copy(const Tensor& src, Tensor& dst) {
  check_same(src, dst, "copy");
  if (src.data() != dst.data() && src.numel() > 0) std::memcpy(dst.data(), src.data(), src.bytes());
}

void CpuBackend::upload(const float* host, Tensor& dst) {
  if (dst.numel() > 0) std::memcpy(dst.data(), host, dst.bytes());
}

void CpuBackend::download(const Tensor& src, float* host) {
  if (src.numel() > 0) std::memcpy(host, src.data(), src.bytes());
}

Tensor CpuBackend::act_from_nchw(const float* host, int n, int c, int h, int w) {
  Tensor t = alloc({c, n, h, w});
  float* p = t.data();
  const int64_t hw = static_cast<int64_t>(h) * w;
  for (int ci = 0; ci < c; ++ci)
    for (int ni = 0; ni < n; ++ni)
      std::memcpy(p + (static_cast<int64_t>(ci) * n + ni) * hw, host + (static_cast<int64_t>(ni) * c + ci) * hw,
                  static_cast<size_t>(hw) * sizeof(float));
  return t;
}

void CpuBackend::act_to_nchw(const Tensor& act, float* host) {
  DSO_CHECK(act.ndim() == 4, "act_to_nchw: not 4-D: ", shape_str(act.shape()));
  const int64_t c = act.dim(0), n = act.dim(1), hw = act.dim(2) * act.dim(3);
  const float* p = act.data();
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t ni = 0; ni < n; ++ni)
      std::memcpy(host + (ni * c + ci) * hw, p + (ci * n + ni) * hw, static_cast<size_t>(hw) * sizeof(float));
}

// ---- elementwise ------------------------------------------------------------------------

void CpuBackend::axpy(float alpha, const Tensor& x, Tensor& y) {
  check_same(x, y, "axpy");
  const float* __restrict xp = x.data();
  float* __restrict yp = y.data();
  const int64_t n = x.numel();
  par_range(n >= kParMin ? nt_ : 1, n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) yp[i] += alpha * xp[i];
  });
}

void CpuBackend::add(const Tensor& a, const Tensor& b, Tensor& y) {
  check_same(a, y, "add");
  check_same(b, y, "add");
  const float* ap = a.data();
  const float* bp = b.data();
  float* yp = y.data();
  const int64_t n = y.numel();
  par_range(n >= kParMin ? nt_ : 1, n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) yp[i] = ap[i] + bp[i];
  });
}

void CpuBackend::dot_accumulate(const Tensor& a, const Tensor& b, float* out) {
  check_same(a, b, "dot_accumulate");
  const int64_t n = a.numel(), nc = ceil_div(n, kRedChunk);
  std::vector<double> part(static_cast<size_t>(nc));
  const float* ap = a.data();
  const float* bp = b.data();
  par_for(n >= kParMin ? nt_ : 1, nc, [&](int64_t c, int) {
    const int64_t i0 = c * kRedChunk;
    part[static_cast<size_t>(c)] = dot_d(ap + i0, bp + i0, std::min(kRedChunk, n - i0));
  });
  double s = 0;
  for (double v : part) s += v;
  *out = static_cast<float>(static_cast<double>(*out) + s);
}

void CpuBackend::clip(Tensor& g, float lo, float hi) {
  float* p = g.data();
  const int64_t n = g.numel();
  par_range(n >= kParMin ? nt_ : 1, n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float v = p[i];
      v = v < lo ? lo : v;
      p[i] = v > hi ? hi : v;
    }
  });
}

bool CpuBackend::all_finite(const Tensor& t) {
  const float* p = t.data();
  const int64_t n = t.numel(), nc = ceil_div(n, kRedChunk);
  std::vector<uint8_t> bad(static_cast<size_t>(nc), 0);
  par_for(n >= kParMin ? nt_ : 1, nc, [&](int64_t c, int) {
    const int64_t i0 = c * kRedChunk, i1 = std::min(n, i0 + kRedChunk);
    int b = 0;
    for (int64_t i = i0; i < i1; ++i) b |= !(p[i] - p[i] == 0.f);  // NaN/Inf give NaN
    bad[static_cast<size_t>(c)] = static_cast<uint8_t>(b);
  });
  for (uint8_t b : bad)
    if (b) return false;
  return true;
}

double CpuBackend::sum_squares(const Tensor& t) {
  const int64_t n = t.numel(), nc = ceil_div(n, kRedChunk);
  std::vector<double> part(static_cast<size_t>(nc));
  const float* p = t.data();
  par_for(n >= kParMin ? nt_ : 1, nc, [&](int64_t c, int) {
    const int64_t i0 = c * kRedChunk;
    part[static_cast<size_t>(c)] = dot_d(p + i0, p + i0, std::min(kRedChunk, n - i0));
  });
  double s = 0;
  for (double v : part) s += v;
  return s;
}

// ---- head --------------------------------------------------------------------------------

void CpuBackend::global_avg_pool_forward(const Tensor& x, Tensor& y) {
  DSO_CHECK(x.ndim() == 4, "global_avg_pool: x must be 4-D, got ", shape_str(x.shape()));
  const int64_t C = x.dim(0), N = x.dim(1), HW = x.dim(2) * x.dim(3);
  DSO_CHECK(y.numel() == N * C, "global_avg_pool: y ", shape_str(y.shape()), " for x ", shape_str(x.shape()));
  const float* xp = x.data();
  float* yp = y.data();
  par_for(C * N * HW >= kParMin ? nt_ : 1, C * N, [&](int64_t pl, int) {
    const int64_t c = pl / N, n = pl % N;
    yp[n * C + c] = static_cast<float>(sum_d(xp + pl * HW, HW) / static_cast<double>(HW));
  });
}

void CpuBackend::global_avg_pool_backward(const Tensor& dy, Tensor& dx, float beta) {
  DSO_CHECK(dx.ndim() == 4, "global_avg_pool_backward: dx must be 4-D");
  const int64_t C = dx.dim(0), N = dx.dim(1), HW = dx.dim(2) * dx.dim(3);
  DSO_CHECK(dy.numel() == N * C, "global_avg_pool_backward: dy ", shape_str(dy.shape()));
  const float* dyp = dy.data();
  float* dxp = dx.data();
  const float inv = 1.f / static_cast<float>(HW);
  par_for(C * N * HW >= kParMin ? nt_ : 1, C * N, [&](int64_t pl, int) {
    const int64_t c = pl / N, n = pl % N;
    const float v = dyp[n * C + c] * inv;
    float* __restrict d = dxp + pl * HW;
    if (beta == 0.f)
      for (int64_t i = 0; i < HW; ++i) d[i] = v;
    else
      for (int64_t i = 0; i < HW; ++i) d[i] = v + beta * d[i];
  });
}

void CpuBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  DSO_CHECK(x.ndim() == 2 && w.ndim() == 2 && x.dim(1) == w.dim(1) && b.numel() == w.dim(0) &&
                y.numel() == x.dim(0) * w.dim(0),
            "linear shapes: x ", shape_str(x.shape()), " w ", shape_str(w.shape()), " b ", shape_str(b.shape()), " y ",
            shape_str(y.shape()));
  const int N = static_cast<int>(x.dim(0)), I = static_cast<int>(x.dim(1)), O = static_cast<int>(w.dim(0));
  float* yp = y.data();
  const float* bp = b.data();
  for (int n = 0; n < N; ++n) std::memcpy(yp + static_cast<int64_t>(n) * O, bp, static_cast<size_t>(O) * sizeof(float));
  if (N > 0 && O > 0 && I > 0)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, O, I, 1.f, x.data(), I, w.data(), I, 1.f, yp, O);
}

void CpuBackend::linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                                 Tensor* db) {
  DSO_CHECK(x.ndim() == 2 && w.ndim() == 2 && x.dim(1) == w.dim(1) && dy.numel() == x.dim(0) * w.dim(0),
            "linear_backward shapes: x ", shape_str(x.shape()), " w ", shape_str(w.shape()), " dy ",
            shape_str(dy.shape()));
  const int N = static_cast<int>(x.dim(0)), I = static_cast<int>(x.dim(1)), O = static_cast<int>(w.dim(0));
  if (dx) {
    DSO_CHECK(dx->numel() == x.numel(), "linear_backward: dx ", shape_str(dx->shape()));
    if (O == 0)
      std::memset(dx->data(), 0, dx->bytes());
    else if (N > 0 && I > 0)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, I, O, 1.f, dy.data(), O, w.data(), I, 0.f, dx->data(),
                  I);
  }
  if (dw) {
    DSO_CHECK(dw->numel() == w.numel(), "linear_backward: dw ", shape_str(dw->shape()));
    if (N == 0)
      std::memset(dw->data(), 0, dw->bytes());
    else if (O > 0 && I > 0)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, N, 1.f, dy.data(), O, x.data(), I, 0.f, dw->data(), I);
  }
  if (db) {
    DSO_CHECK(db->numel() == O, "linear_backward: db ", shape_str(db->shape()));
    const float* dyp = dy.data();
    float* dbp = db->data();
    for (int o = 0; o < O; ++o) {
      double s = 0;
      for (int n = 0; n < N; ++n) s += static_cast<double>(dyp[static_cast<int64_t>(n) * O + o]);
      dbp[o] = static_cast<float>(s);
    }
  }
}

void CpuBackend::softmax_xent(const Tensor& logits, const int32_t* labels, float grad_scale, Tensor& dlogits,
                              double* loss_sum, int64_t* correct) {
  DSO_CHECK(logits.ndim() == 2 && dlogits.numel() == logits.numel(), "softmax_xent shapes: logits ",
            shape_str(logits.shape()), " dlogits ", shape_str(dlogits.shape()));
  const int64_t N = logits.dim(0), K = logits.dim(1);
  for (int64_t n = 0; n < N; ++n)
    if (labels[n] < 0 || labels[n] >= K)
      fail_usage(str("softmax_xent: label ", labels[n], " at index ", n, " is outside [0,", K, ")"));
  const float* zp = logits.data();
  float* dp = dlogits.data();
  double loss = 0;
  int64_t hits = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* z = zp + n * K;
    float* dz = dp + n * K;
    int64_t am = 0;
    for (int64_t k = 1; k < K; ++k)
      if (z[k] > z[am]) am = k;
    const double mx = z[am];
    double se = 0;
    for (int64_t k = 0; k < K; ++k) se += std::exp(static_cast<double>(z[k]) - mx);
    const double lse = mx + std::log(se);
    const int32_t lab = labels[n];
    loss += lse - static_cast<double>(z[lab]);
    if (am == lab) ++hits;
    for (int64_t k = 0; k < K; ++k) {
      const double pk = std::exp(static_cast<double>(z[k]) - lse);
      dz[k] = static_cast<float>(grad_scale * (pk - (k == lab ? 1.0 : 0.0)));
    }
  }
  if (loss_sum) *loss_sum += loss;
  if (correct) *correct += hits;
}

// ---- optimiser ---------------------------------------------------------------------------

void CpuBackend::nag_update(Tensor& w, const Tensor& g, Tensor& m, float lr, float momentum, float wd) {
  check_same(w, g, "nag_update");
  check_same(w, m, "nag_update");
  float* __restrict wp = w.data();
  const float* __restrict gp = g.data();
  float* __restrict mp = m.data();
  const int64_t n = w.numel();
  par_range(n >= kParMin ? nt_ : 1, n, kElemGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float gg = gp[i] + wd * wp[i];
      const float mm = momentum * mp[i] + gg;
      mp[i] = mm;
      wp[i] = wp[i] - lr * (gg + momentum * mm);
    }
  });
}

std::string blas_library_config() {
  std::string blas = openblas_get_config();  // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64"
  while (!blas.empty() && (blas.back() == ' ' || blas.back() == '\n')) blas.pop_back();
  return blas;
}

}  // namespace dsonas
