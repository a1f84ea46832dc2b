// profiling_backend.cpp — see profiling.hpp.  One forwarding method per
// Backend primitive, each timed; keep it in step with backend.hpp (a missing
// override fails to compile, since every primitive is pure virtual).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <vector>

#include "dsonas/backend/profiling.hpp"

namespace dsonas {

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& in) : in_(in) {}
  Device device() const override { return in_.device(); }
  std::string name() const override { return in_.name() + "+profiling"; }
  int threads() const override { return in_.threads(); }
  int64_t memory_free_bytes() const override { return in_.memory_free_bytes(); }
  void synchronize() override { in_.synchronize(); }
  std::map<std::string, std::pair<double, long>> totals;

  void fill(Tensor& t, float v) override {
    auto t0 = clk::now();
    in_.fill(t, v);
    in_.synchronize();
    add("fill", t0);
  }
  void copy(const Tensor& src, Tensor& dst) override {
    auto t0 = clk::now();
    in_.copy(src, dst);
    in_.synchronize();
    add("copy", t0);
  }
  void upload(const float* host, Tensor& dst) override {
    auto t0 = clk::now();
    in_.upload(host, dst);
    in_.synchronize();
    add("upload", t0);
  }
  void download(const Tensor& src, float* host) override {
    auto t0 = clk::now();
    in_.download(src, host);
    in_.synchronize();
    add("download", t0);
  }
  Tensor act_from_nchw(const float* host, int n, int c, int h, int w) override {
    auto t0 = clk::now();
    auto r = in_.act_from_nchw(host, n, c, h, w);
    in_.synchronize();
    add("act_from_nchw", t0);
    return r;
  }
  void act_to_nchw(const Tensor& act, float* host) override {
    auto t0 = clk::now();
    in_.act_to_nchw(act, host);
    in_.synchronize();
    add("act_to_nchw", t0);
  }
  void conv_forward(const ConvDesc& d, const Tensor& x, const Tensor& w, Tensor& y, float alpha, float beta) override {
    auto t0 = clk::now();
    in_.conv_forward(d, x, w, y, alpha, beta);
    in_.synchronize();
    add(std::string("conv_forward") + conv_kind(d), t0);
  }
  void conv_backward_data(const ConvDesc& d, const Tensor& dy, const Tensor& w, Tensor& dx, float alpha,
                          float beta) override {
    auto t0 = clk::now();
    in_.conv_backward_data(d, dy, w, dx, alpha, beta);
    in_.synchronize();
    add(std::string("conv_backward_data") + conv_kind(d), t0);
  }
  void conv_backward_filter(const ConvDesc& d, const Tensor& x, const Tensor& dy, Tensor& dw, float alpha,
                            float beta) override {
    auto t0 = clk::now();
    in_.conv_backward_filter(d, x, dy, dw, alpha, beta);
    in_.synchronize();
    add(std::string("conv_backward_filter") + conv_kind(d), t0);
  }
  void pool_forward(const PoolDesc& d, const Tensor& x, Tensor& y) override {
    auto t0 = clk::now();
    in_.pool_forward(d, x, y);
    in_.synchronize();
    add(std::string("pool_forward") + (d.kind == PoolKind::Max ? " max" : " avg"), t0);
  }
  void pool_backward(const PoolDesc& d, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                     float beta) override {
    auto t0 = clk::now();
    in_.pool_backward(d, x, y, dy, dx, beta);
    in_.synchronize();
    add(std::string("pool_backward") + (d.kind == PoolKind::Max ? " max" : " avg"), t0);
  }
  void bn_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& run_mean, Tensor& run_var,
                        float momentum, float eps, Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                        bool relu) override {
    auto t0 = clk::now();
    in_.bn_forward_train(x, gamma, beta, run_mean, run_var, momentum, eps, y, save_mean, save_invstd, relu);
    in_.synchronize();
    add("bn_forward_train", t0);
  }
  void bn_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& run_mean,
                        const Tensor& run_var, float eps, Tensor& y, bool relu) override {
    auto t0 = clk::now();
    in_.bn_forward_infer(x, gamma, beta, run_mean, run_var, eps, y, relu);
    in_.synchronize();
    add("bn_forward_infer", t0);
  }
  void bn_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                   const Tensor& save_invstd, Tensor& dx, Tensor* dgamma, Tensor* dbeta, bool relu,
                   float beta_dx) override {
    auto t0 = clk::now();
    in_.bn_backward(x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, relu, beta_dx);
    in_.synchronize();
    add("bn_backward", t0);
  }
  void wsum_forward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                    const std::vector<Tensor*>& ys) override {
    auto t0 = clk::now();
    in_.wsum_forward(J, K, lam, live, xs, ys);
    in_.synchronize();
    add("wsum_forward", t0);
  }
  void wsum_backward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                     const std::vector<const Tensor*>& dys, const std::vector<Tensor*>& dxs, float* dlam) override {
    auto t0 = clk::now();
    in_.wsum_backward(J, K, lam, live, xs, dys, dxs, dlam);
    in_.synchronize();
    add("wsum_backward", t0);
  }
  void concat_scaled_columns(const std::vector<const Tensor*>& ws, const float* scale, Tensor& out) override {
    auto t0 = clk::now();
    in_.concat_scaled_columns(ws, scale, out);
    in_.synchronize();
    add("concat_scaled_columns", t0);
  }
  void concat_scaled_columns_backward(const std::vector<const Tensor*>& ws, const float* scale, const Tensor& m,
                                      const std::vector<Tensor*>& dws, const std::vector<float*>& dscale) override {
    auto t0 = clk::now();
    in_.concat_scaled_columns_backward(ws, scale, m, dws, dscale);
    in_.synchronize();
    add("concat_scaled_columns_backward", t0);
  }
  void axpy(float alpha, const Tensor& x, Tensor& y) override {
    auto t0 = clk::now();
    in_.axpy(alpha, x, y);
    in_.synchronize();
    add("axpy", t0);
  }
  void add(const Tensor& a, const Tensor& b, Tensor& y) override {
    auto t0 = clk::now();
    in_.add(a, b, y);
    in_.synchronize();
    add("add", t0);
  }
  void dot_accumulate(const Tensor& a, const Tensor& b, float* out) override {
    auto t0 = clk::now();
    in_.dot_accumulate(a, b, out);
    in_.synchronize();
    add("dot_accumulate", t0);
  }
  void clip(Tensor& g, float lo, float hi) override {
    auto t0 = clk::now();
    in_.clip(g, lo, hi);
    in_.synchronize();
    add("clip", t0);
  }
  bool all_finite(const Tensor& t) override {
    auto t0 = clk::now();
    auto r = in_.all_finite(t);
    in_.synchronize();
    add("all_finite", t0);
    return r;
  }
  double sum_squares(const Tensor& t) override {
    auto t0 = clk::now();
    auto r = in_.sum_squares(t);
    in_.synchronize();
    add("sum_squares", t0);
    return r;
  }
  void global_avg_pool_forward(const Tensor& x, Tensor& y) override {
    auto t0 = clk::now();
    in_.global_avg_pool_forward(x, y);
    in_.synchronize();
    add("global_avg_pool_forward", t0);
  }
  void global_avg_pool_backward(const Tensor& dy, Tensor& dx, float beta) override {
    auto t0 = clk::now();
    in_.global_avg_pool_backward(dy, dx, beta);
    in_.synchronize();
    add("global_avg_pool_backward", t0);
  }
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override {
    auto t0 = clk::now();
    in_.linear_forward(x, w, b, y);
    in_.synchronize();
    add("linear_forward", t0);
  }
  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                       Tensor* db) override {
    auto t0 = clk::now();
    in_.linear_backward(x, w, dy, dx, dw, db);
    in_.synchronize();
    add("linear_backward", t0);
  }
  void softmax_xent(const Tensor& logits, const int32_t* labels, float grad_scale, Tensor& dlogits, double* loss_sum,
                    int64_t* correct) override {
    auto t0 = clk::now();
    in_.softmax_xent(logits, labels, grad_scale, dlogits, loss_sum, correct);
    in_.synchronize();
    add("softmax_xent", t0);
  }
  void nag_update(Tensor& w, const Tensor& g, Tensor& m, float lr, float momentum, float wd) override {
    auto t0 = clk::now();
    in_.nag_update(w, g, m, lr, momentum, wd);
    in_.synchronize();
    add("nag_update", t0);
  }
  void softmax_xent_smoothed(const Tensor& logits, const int32_t* labels, float smoothing, float grad_scale,
                             Tensor& dlogits, double* loss_sum, int64_t* correct) override {
    auto t0 = clk::now();
    in_.softmax_xent_smoothed(logits, labels, smoothing, grad_scale, dlogits, loss_sum, correct);
    in_.synchronize();
    add("softmax_xent_smoothed", t0);
  }
  void dropout_apply(const Tensor& x, float p, uint64_t key, int64_t index_base, Tensor& y) override {
    auto t0 = clk::now();
    in_.dropout_apply(x, p, key, index_base, y);
    in_.synchronize();
    add("dropout_apply", t0);
  }
  void scale_samples(const Tensor& x, int groups, const float* scale, Tensor& y, float beta) override {
    auto t0 = clk::now();
    in_.scale_samples(x, groups, scale, y, beta);
    in_.synchronize();
    add("scale_samples", t0);
  }

 private:
  using clk = std::chrono::steady_clock;
  static std::string conv_kind(const ConvDesc& d) {
    char b[64];
    if (d.depthwise())
      std::snprintf(b, sizeof b, " dw%dx%d", d.k, d.k);
    else if (d.k == 1 && d.stride == 1)
      std::snprintf(b, sizeof b, " 1x1 %d->%d", d.cin, d.cout);
    else
      std::snprintf(b, sizeof b, " %dx%d/s%d", d.k, d.k, d.stride);
    return b;
  }
  void add(const std::string& what, clk::time_point t0) {
    auto& e = totals[what];
    e.first += std::chrono::duration<double, std::milli>(clk::now() - t0).count();
    e.second += 1;
  }
  Backend& in_;
};

std::unique_ptr<Backend> make_profiling_backend(Backend& inner) {
  return std::unique_ptr<Backend>(new ProfilingBackend(inner));
}

std::string profiling_report(Backend& b, int steps) {
  auto* p = dynamic_cast<ProfilingBackend*>(&b);
  if (!p) return "";
  std::vector<std::pair<double, std::string>> rows;
  double total = 0;
  for (auto& kv : p->totals) {
    rows.push_back({kv.second.first, kv.first});
    total += kv.second.first;
  }
  std::sort(rows.rbegin(), rows.rend());
  std::string out = "primitive                             ms/step   share  calls/step\n";
  char buf[160];
  for (auto& r : rows) {
    std::snprintf(buf, sizeof buf, "%-36s %8.2f  %5.1f%%  %8.1f\n", r.second.c_str(), r.first / steps,
                  100.0 * r.first / total, double(p->totals[r.second].second) / steps);
    out += buf;
  }
  std::snprintf(buf, sizeof buf, "%-36s %8.2f\n", "total in primitives", total / steps);
  out += buf;
  p->totals.clear();
  return out;
}

}  // namespace dsonas
