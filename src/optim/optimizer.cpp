// optimizer.cpp — host NAG, APG-NAG, clipping and the weight-decay name rule.
//
// The arithmetic is kept in float and in the exact order of docs/method.md §4.2/§4.3
// so that a device implementation doing the same float operations can be compared
// bit for bit (no FMA contraction is relied on: each step is written as its own
// statement).
#include "dsonas/optim/optimizer.hpp"

#include <cmath>  // defines: std::fabs, std::isnan

#include "dsonas/core/error.hpp"  // defines: DSO_CHECK

namespace dsonas {

void nag_step(float* w, const float* g, float* m, size_t n, float lr, float mom, float wd) {
  for (size_t i = 0; i < n; ++i) {
    const float gi = g[i] + wd * w[i];
    m[i] = mom * m[i] + gi;
    w[i] = w[i] - lr * (gi + mom * m[i]);
  }
}

void apg_nag_step(float* lam, float* v, const float* g, const float* gamma_e, const uint8_t* mask, size_t n, float lr,
                  float mom) {
  for (size_t i = 0; i < n; ++i) {
    if (mask && !mask[i]) {  // removed edge: held at exactly 0, excluded
      lam[i] = 0.0f;
      v[i] = 0.0f;
      continue;
    }
    const float thr = lr * gamma_e[i];
    float vi = mom * v[i];
    float z = lam[i] - lr * g[i];
    const float mag = std::fabs(z) - thr;
    z = mag > 0.0f ? (z > 0.0f ? mag : -mag) : 0.0f;  // sign(z)·max(0, |z| − ηγ_e)
    vi = z - lam[i] + vi;
    float l = z + mom * vi;
    lam[i] = l > 0.0f ? l : 0.0f;  // max(0, λ); also maps −0 to +0
    v[i] = vi;
  }
}

void apg_nag_step(float* lam, float* v, const float* g, float gamma, const uint8_t* mask, size_t n, float lr,
                  float mom) {
  for (size_t i = 0; i < n; ++i) {
    // Same as above with γ_e = γ; written out so no temporary vector is needed.
    apg_nag_step(lam + i, v + i, g + i, &gamma, mask ? mask + i : nullptr, 1, lr, mom);
  }
}

void clip_elementwise(float* g, size_t n, float c) {
  DSO_CHECK(c > 0.0f, "clip bound ", c);
  for (size_t i = 0; i < n; ++i) {
    if (g[i] > c)
      g[i] = c;
    else if (g[i] < -c)
      g[i] = -c;
  }
}

}  // namespace dsonas
