// cpu_retrain.cpp — the CPU implementation of the retraining primitives of
// backend.hpp: label-smoothed softmax cross-entropy, counter-based inverted
// dropout and per-(group, sample) scaling (drop-path).
//
// Design note.  All three are elementwise or per-row; none reduces across
// threads (the loss is summed row by row on one thread, in double), so the
// results are bit-identical for any thread count.  Dropout draws its mask from
// mix64(key, stream, index) (core/rng.hpp): the mask is never stored, the
// backward pass regenerates it, and a CUDA kernel computing the same integer
// hash gives the same mask.
#include <cmath>

#include "cpu_backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"

namespace dsonas {

namespace {
/// Stream of the dropout hash: ASCII "dropout" (documented in backend.hpp).
constexpr uint64_t kDropoutStream = 0x64726f706f7574ull;
}  // namespace

void CpuBackend::softmax_xent_smoothed(const Tensor& logits, const int32_t* labels, float smoothing, float grad_scale,
                                       Tensor& dlogits, double* loss_sum, int64_t* correct) {
  DSO_CHECK(logits.ndim() == 2 && dlogits.numel() == logits.numel(), "softmax_xent_smoothed shapes: logits ",
            shape_str(logits.shape()), " dlogits ", shape_str(dlogits.shape()));
  DSO_CHECK(smoothing >= 0.f && smoothing < 1.f, "softmax_xent_smoothed: smoothing ", smoothing);
  const int64_t N = logits.dim(0), K = logits.dim(1);
  DSO_CHECK(K >= 2, "softmax_xent_smoothed: ", K, " classes");
  for (int64_t n = 0; n < N; ++n)
    if (labels[n] < 0 || labels[n] >= K)
      fail_usage(str("softmax_xent: label ", labels[n], " at index ", n, " is outside [0,", K, ")"));
  const double on = 1.0 - static_cast<double>(smoothing);             // q at the label
  const double off = static_cast<double>(smoothing) / double(K - 1);  // q elsewhere
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
    double se = 0, zsum = 0;
    for (int64_t k = 0; k < K; ++k) {
      se += std::exp(static_cast<double>(z[k]) - mx);
      zsum += static_cast<double>(z[k]);
    }
    const double lse = mx + std::log(se);
    const int32_t lab = labels[n];
    // −Σ q_k (z_k − lse) = lse − on·z_lab − off·(Σ_k z_k − z_lab)   (Σ q_k = 1)
    const double zl = static_cast<double>(z[lab]);
    loss += lse - on * zl - off * (zsum - zl);
    if (am == lab) ++hits;
    for (int64_t k = 0; k < K; ++k) {
      const double pk = std::exp(static_cast<double>(z[k]) - lse);
      dz[k] = static_cast<float>(grad_scale * (pk - (k == lab ? on : off)));
    }
  }
  if (loss_sum) *loss_sum += loss;
  if (correct) *correct += hits;
}

void CpuBackend::dropout_apply(const Tensor& x, float p, uint64_t key, int64_t index_base, Tensor& y) {
  DSO_CHECK(x.numel() == y.numel(), "dropout_apply shapes: x ", shape_str(x.shape()), " y ", shape_str(y.shape()));
  DSO_CHECK(p >= 0.f && p < 1.f, "dropout_apply: p = ", p);
  const float keep = 1.f - p;
  const float inv = 1.f / keep;
  const float* xp = x.data();
  float* yp = y.data();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) num_threads(nt_) if (n >= cpu::kParMin)
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t bits = mix64(key, kDropoutStream, static_cast<uint64_t>(index_base + i));
    const float u = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
    yp[i] = u < keep ? xp[i] * inv : 0.f;
  }
}

void CpuBackend::scale_samples(const Tensor& x, int groups, const float* scale, Tensor& y, float beta) {
  DSO_CHECK(x.ndim() == 4 && y.numel() == x.numel(), "scale_samples shapes: x ", shape_str(x.shape()), " y ",
            shape_str(y.shape()));
  const int64_t C = x.dim(0), N = x.dim(1), HW = x.dim(2) * x.dim(3);
  DSO_CHECK(groups >= 1 && C % groups == 0, "scale_samples: ", C, " channels in ", groups, " groups");
  const int64_t cg = C / groups;
  const float* xp = x.data();
  float* yp = y.data();
#pragma omp parallel for schedule(static) num_threads(nt_) if (C * N * HW >= cpu::kParMin)
  for (int64_t cn = 0; cn < C * N; ++cn) {
    const int64_t c = cn / N, n = cn % N;
    const float s = scale[(c / cg) * N + n];
    const float* xs = xp + cn * HW;  // no __restrict: x and y may alias
    float* ys = yp + cn * HW;
    if (beta == 0.f) {
      for (int64_t i = 0; i < HW; ++i) ys[i] = s * xs[i];
    } else {
      for (int64_t i = 0; i < HW; ++i) ys[i] = s * xs[i] + beta * ys[i];
    }
  }
}

}  // namespace dsonas
