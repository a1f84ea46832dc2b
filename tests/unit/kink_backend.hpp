// kink_backend.hpp — a Backend decorator that makes finite-difference checks of a
// whole model independent of float rounding.
//
// The model's objective is piecewise smooth: its kinks are the ReLUs (y > 0 after a
// batch-norm with ReLU) and the winners of the max-pooling windows.  Every other
// primitive is smooth in its inputs (convolutions, λ sums, BN without ReLU, average
// pooling, softmax, dropout and drop-path with fixed masks).  The decorator
//
//  * Record: runs every primitive unchanged and records the discrete state — each
//    ReLU's pass/block bit and the first maximal cell of each max-pool window (the
//    one the backward pass routes to);
//  * Replay: runs the same forward pass with that state frozen — the BN's output
//    masked with the recorded bits instead of its own sign, each max-pool output
//    read from the recorded cell.
//
// With the state frozen at the point x0 where the analytic gradient was taken, the
// objective is one smooth function of the parameters, equal to the real objective at
// x0 and with the same derivative there (the backward pass uses exactly the recorded
// masks).  A finite difference of it crosses no kink, whatever h, so every
// coordinate can be checked and nothing depends on where float rounding puts a unit
// near zero — the BLAS kernel, the thread count and the SIMD path no longer decide
// which coordinates are checked.  (The old test skipped coordinates whose secant
// slopes jumped by more than a threshold; the count of such kinks sat at its quota
// and moved with the OpenBLAS kernel.)  The caller checks that the replayed
// objective at x0 equals the recorded one, so a forward pass that ignores its ReLU
// or pools the wrong cell is still caught.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"

namespace dsonas_test {

class KinkSignatureBackend final : public dsonas::Backend {
 public:
  explicit KinkSignatureBackend(dsonas::Backend& in) : in_(in) {}

  enum class Mode { Pass, Record, Replay };
  /// Pass: forward every call.  Record: clear the state, then record each forward
  /// pass's.  Replay: freeze the recorded state (each forward pass replays it from
  /// its start).
  void set_mode(Mode m) {
    mode_ = m;
    if (m == Mode::Record) sig_.clear();
    cursor_ = 0;
  }
  /// Call before each evaluation of the objective in Record or Replay mode.
  void start_pass() {
    if (mode_ == Mode::Record) sig_.clear();
    cursor_ = 0;
  }
  const std::vector<int32_t>& signature() const { return sig_; }
  /// Replay: every recorded entry was used by the last pass (the pass had the
  /// recorded shape).
  bool replay_complete() const { return cursor_ == sig_.size(); }

  // ---- recording ------------------------------------------------------------------
  void bn_forward_train(const dsonas::Tensor& x, const dsonas::Tensor& gamma, const dsonas::Tensor& beta,
                        dsonas::Tensor& run_mean, dsonas::Tensor& run_var, float momentum, float eps, dsonas::Tensor& y,
                        dsonas::Tensor& save_mean, dsonas::Tensor& save_invstd, bool relu) override {
    const bool frozen = relu && mode_ == Mode::Replay;
    in_.bn_forward_train(x, gamma, beta, run_mean, run_var, momentum, eps, y, save_mean, save_invstd, relu && !frozen);
    if (frozen)
      replay_relu(y);
    else if (relu && mode_ == Mode::Record)
      record_relu(y);
  }
  void bn_forward_infer(const dsonas::Tensor& x, const dsonas::Tensor& gamma, const dsonas::Tensor& beta,
                        const dsonas::Tensor& run_mean, const dsonas::Tensor& run_var, float eps, dsonas::Tensor& y,
                        bool relu) override {
    const bool frozen = relu && mode_ == Mode::Replay;
    in_.bn_forward_infer(x, gamma, beta, run_mean, run_var, eps, y, relu && !frozen);
    if (frozen)
      replay_relu(y);
    else if (relu && mode_ == Mode::Record)
      record_relu(y);
  }
  void pool_forward(const dsonas::PoolDesc& d, const dsonas::Tensor& x, dsonas::Tensor& y) override {
    if (d.kind == dsonas::PoolKind::Max && mode_ != Mode::Pass) {
      argmax(d, x, y);
    } else {
      in_.pool_forward(d, x, y);
    }
  }

  // ---- forwarded unchanged ---------------------------------------------------------
  dsonas::Device device() const override { return in_.device(); }
  std::string name() const override { return in_.name() + "+kink-signature"; }
  int threads() const override { return in_.threads(); }
  int64_t memory_free_bytes() const override { return in_.memory_free_bytes(); }
  void synchronize() override { in_.synchronize(); }
  void fill(dsonas::Tensor& t, float v) override { in_.fill(t, v); }
  void copy(const dsonas::Tensor& s, dsonas::Tensor& d) override { in_.copy(s, d); }
  void upload(const float* h, dsonas::Tensor& d) override { in_.upload(h, d); }
  void download(const dsonas::Tensor& s, float* h) override { in_.download(s, h); }
  dsonas::Tensor act_from_nchw(const float* h, int n, int c, int hh, int w) override {
    return in_.act_from_nchw(h, n, c, hh, w);
  }
  void act_to_nchw(const dsonas::Tensor& a, float* h) override { in_.act_to_nchw(a, h); }
  void conv_forward(const dsonas::ConvDesc& d, const dsonas::Tensor& x, const dsonas::Tensor& w, dsonas::Tensor& y,
                    float alpha, float beta) override {
    in_.conv_forward(d, x, w, y, alpha, beta);
  }
  void conv_backward_data(const dsonas::ConvDesc& d, const dsonas::Tensor& dy, const dsonas::Tensor& w,
                          dsonas::Tensor& dx, float alpha, float beta) override {
    in_.conv_backward_data(d, dy, w, dx, alpha, beta);
  }
  void conv_backward_filter(const dsonas::ConvDesc& d, const dsonas::Tensor& x, const dsonas::Tensor& dy,
                            dsonas::Tensor& dw, float alpha, float beta) override {
    in_.conv_backward_filter(d, x, dy, dw, alpha, beta);
  }
  void pool_backward(const dsonas::PoolDesc& d, const dsonas::Tensor& x, const dsonas::Tensor& y,
                     const dsonas::Tensor& dy, dsonas::Tensor& dx, float beta) override {
    in_.pool_backward(d, x, y, dy, dx, beta);
  }
  void bn_backward(const dsonas::Tensor& x, const dsonas::Tensor& y, const dsonas::Tensor& dy,
                   const dsonas::Tensor& gamma, const dsonas::Tensor& save_mean, const dsonas::Tensor& save_invstd,
                   dsonas::Tensor& dx, dsonas::Tensor* dgamma, dsonas::Tensor* dbeta, bool relu,
                   float beta_dx) override {
    in_.bn_backward(x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, relu, beta_dx);
  }
  void wsum_forward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const dsonas::Tensor*>& xs,
                    const std::vector<dsonas::Tensor*>& ys) override {
    in_.wsum_forward(J, K, lam, live, xs, ys);
  }
  void wsum_backward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const dsonas::Tensor*>& xs,
                     const std::vector<const dsonas::Tensor*>& dys, const std::vector<dsonas::Tensor*>& dxs,
                     float* dlam) override {
    in_.wsum_backward(J, K, lam, live, xs, dys, dxs, dlam);
  }
  void concat_scaled_columns(const std::vector<const dsonas::Tensor*>& ws, const float* scale,
                             dsonas::Tensor& out) override {
    in_.concat_scaled_columns(ws, scale, out);
  }
  void concat_scaled_columns_backward(const std::vector<const dsonas::Tensor*>& ws, const float* scale,
                                      const dsonas::Tensor& m, const std::vector<dsonas::Tensor*>& dws,
                                      const std::vector<float*>& dscale) override {
    in_.concat_scaled_columns_backward(ws, scale, m, dws, dscale);
  }
  void axpy(float alpha, const dsonas::Tensor& x, dsonas::Tensor& y) override { in_.axpy(alpha, x, y); }
  void add(const dsonas::Tensor& a, const dsonas::Tensor& b, dsonas::Tensor& y) override { in_.add(a, b, y); }
  void dot_accumulate(const dsonas::Tensor& a, const dsonas::Tensor& b, float* out) override {
    in_.dot_accumulate(a, b, out);
  }
  void clip(dsonas::Tensor& g, float lo, float hi) override { in_.clip(g, lo, hi); }
  bool all_finite(const dsonas::Tensor& t) override { return in_.all_finite(t); }
  double sum_squares(const dsonas::Tensor& t) override { return in_.sum_squares(t); }
  void global_avg_pool_forward(const dsonas::Tensor& x, dsonas::Tensor& y) override {
    in_.global_avg_pool_forward(x, y);
  }
  void global_avg_pool_backward(const dsonas::Tensor& dy, dsonas::Tensor& dx, float beta) override {
    in_.global_avg_pool_backward(dy, dx, beta);
  }
  void linear_forward(const dsonas::Tensor& x, const dsonas::Tensor& w, const dsonas::Tensor& b,
                      dsonas::Tensor& y) override {
    in_.linear_forward(x, w, b, y);
  }
  void linear_backward(const dsonas::Tensor& x, const dsonas::Tensor& w, const dsonas::Tensor& dy, dsonas::Tensor* dx,
                       dsonas::Tensor* dw, dsonas::Tensor* db) override {
    in_.linear_backward(x, w, dy, dx, dw, db);
  }
  void softmax_xent(const dsonas::Tensor& logits, const int32_t* labels, float grad_scale, dsonas::Tensor& dlogits,
                    double* loss_sum, int64_t* correct) override {
    in_.softmax_xent(logits, labels, grad_scale, dlogits, loss_sum, correct);
  }
  void nag_update(dsonas::Tensor& w, const dsonas::Tensor& g, dsonas::Tensor& m, float lr, float momentum,
                  float wd) override {
    in_.nag_update(w, g, m, lr, momentum, wd);
  }
  void softmax_xent_smoothed(const dsonas::Tensor& logits, const int32_t* labels, float smoothing, float grad_scale,
                             dsonas::Tensor& dlogits, double* loss_sum, int64_t* correct) override {
    in_.softmax_xent_smoothed(logits, labels, smoothing, grad_scale, dlogits, loss_sum, correct);
  }
  void dropout_apply(const dsonas::Tensor& x, float p, uint64_t key, int64_t index_base, dsonas::Tensor& y) override {
    in_.dropout_apply(x, p, key, index_base, y);
  }
  void scale_samples(const dsonas::Tensor& x, int groups, const float* scale, dsonas::Tensor& y, float beta) override {
    in_.scale_samples(x, groups, scale, y, beta);
  }

 private:
  std::vector<float> host(const dsonas::Tensor& t) {
    std::vector<float> h(static_cast<size_t>(t.numel()));
    in_.download(t, h.data());
    return h;
  }
  int32_t next() {
    if (cursor_ >= sig_.size()) throw std::logic_error("KinkSignatureBackend: replay past the recorded state");
    return sig_[cursor_++];
  }
  void record_relu(const dsonas::Tensor& y) {
    for (float v : host(y)) sig_.push_back(v > 0.f);
  }
  void replay_relu(dsonas::Tensor& y) {
    std::vector<float> h = host(y);
    for (float& v : h)
      if (!next()) v = 0.f;
    in_.upload(h.data(), y);
  }
  // x {C,N,H,W} -> y {C,N,Ho,Wo}.  Record: the first maximal in-image cell of each
  // window (max-pooling ignores padded cells), computed here and checked against the
  // backend's own output.  Replay: the output read from the recorded cell.
  void argmax(const dsonas::PoolDesc& d, const dsonas::Tensor& x, dsonas::Tensor& y) {
    if (mode_ == Mode::Record) in_.pool_forward(d, x, y);
    const std::vector<float> hx = host(x);
    std::vector<float> hy = mode_ == Mode::Record ? host(y) : std::vector<float>(static_cast<size_t>(y.numel()));
    const int64_t planes = x.dim(0) * x.dim(1), H = x.dim(2), W = x.dim(3), Ho = y.dim(2), Wo = y.dim(3);
    size_t o = 0;
    for (int64_t p = 0; p < planes; ++p)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow, ++o) {
          auto at = [&](int64_t cell) {
            const int64_t h = oh * d.stride - d.pad + cell / d.k, w = ow * d.stride - d.pad + cell % d.k;
            return (h < 0 || h >= H || w < 0 || w >= W) ? -1 : (p * H + h) * W + w;
          };
          if (mode_ == Mode::Replay) {
            hy[o] = hx[static_cast<size_t>(at(next()))];
            continue;
          }
          int32_t best = -1;
          for (int32_t cell = 0; cell < d.k * d.k; ++cell) {
            const int64_t i = at(cell);
            if (i >= 0 && (best < 0 || hx[static_cast<size_t>(i)] > hx[static_cast<size_t>(at(best))])) best = cell;
          }
          if (best < 0 || hx[static_cast<size_t>(at(best))] != hy[o])
            throw std::logic_error("KinkSignatureBackend: max-pool output is not its window's maximum");
          sig_.push_back(best);
        }
    if (mode_ == Mode::Replay) in_.upload(hy.data(), y);
  }

  dsonas::Backend& in_;
  Mode mode_ = Mode::Pass;
  std::vector<int32_t> sig_;
  size_t cursor_ = 0;
};

}  // namespace dsonas_test
