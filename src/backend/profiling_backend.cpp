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
  /// Per primitive (and shape class): time, calls, and the work model's FLOPs and bytes.
  struct Row {
    double ms = 0;
    long calls = 0;
    double flops = 0, bytes = 0;
  };
  std::map<std::string, Row> totals;

  void fill(Tensor& t, float v) override {
    auto t0 = clk::now();
    in_.fill(t, v);
    in_.synchronize();
    add("fill", t0, 0, 4.0 * t.numel());
  }
  void copy(const Tensor& src, Tensor& dst) override {
    auto t0 = clk::now();
    in_.copy(src, dst);
    in_.synchronize();
    add("copy", t0, 0, 8.0 * src.numel());
  }
  void upload(const float* host, Tensor& dst) override {
    auto t0 = clk::now();
    in_.upload(host, dst);
    in_.synchronize();
    add("upload", t0, 0, 8.0 * dst.numel());
  }
  void download(const Tensor& src, float* host) override {
    auto t0 = clk::now();
    in_.download(src, host);
    in_.synchronize();
    add("download", t0, 0, 8.0 * src.numel());
  }
  Tensor act_from_nchw(const float* host, int n, int c, int h, int w) override {
    auto t0 = clk::now();
    auto r = in_.act_from_nchw(host, n, c, h, w);
    in_.synchronize();
    add("act_from_nchw", t0, 0, 8.0 * r.numel());
    return r;
  }
  void act_to_nchw(const Tensor& act, float* host) override {
    auto t0 = clk::now();
    in_.act_to_nchw(act, host);
    in_.synchronize();
    add("act_to_nchw", t0, 0, 8.0 * act.numel());
  }
  void conv_forward(const ConvDesc& d, const Tensor& x, const Tensor& w, Tensor& y, float alpha, float beta) override {
    auto t0 = clk::now();
    in_.conv_forward(d, x, w, y, alpha, beta);
    in_.synchronize();
    add(std::string("conv_forward") + conv_kind(d), t0, conv_flops(d, y),
        4.0 * (x.numel() + w.numel() + y.numel() * (beta != 0.f ? 2 : 1)));
  }
  void conv_backward_data(const ConvDesc& d, const Tensor& dy, const Tensor& w, Tensor& dx, float alpha,
                          float beta) override {
    auto t0 = clk::now();
    in_.conv_backward_data(d, dy, w, dx, alpha, beta);
    in_.synchronize();
    add(std::string("conv_backward_data") + conv_kind(d), t0, conv_flops(d, dy),
        4.0 * (dy.numel() + w.numel() + dx.numel() * (beta != 0.f ? 2 : 1)));
  }
  void conv_backward_filter(const ConvDesc& d, const Tensor& x, const Tensor& dy, Tensor& dw, float alpha,
                            float beta) override {
    auto t0 = clk::now();
    in_.conv_backward_filter(d, x, dy, dw, alpha, beta);
    in_.synchronize();
    add(std::string("conv_backward_filter") + conv_kind(d), t0, conv_flops(d, dy),
        4.0 * (x.numel() + dy.numel() + dw.numel() * (beta != 0.f ? 2 : 1)));
  }
  void pool_forward(const PoolDesc& d, const Tensor& x, Tensor& y) override {
    auto t0 = clk::now();
    in_.pool_forward(d, x, y);
    in_.synchronize();
    add(std::string("pool_forward") + (d.kind == PoolKind::Max ? " max" : " avg"), t0, 1.0 * d.k * d.k * y.numel(),
        4.0 * (x.numel() + y.numel()));
  }
  void pool_backward(const PoolDesc& d, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                     float beta) override {
    auto t0 = clk::now();
    in_.pool_backward(d, x, y, dy, dx, beta);
    in_.synchronize();
    add(std::string("pool_backward") + (d.kind == PoolKind::Max ? " max" : " avg"), t0, 1.0 * d.k * d.k * dy.numel(),
        4.0 *
            ((d.kind == PoolKind::Max ? x.numel() + y.numel() : 0) + dy.numel() + dx.numel() * (beta != 0.f ? 2 : 1)));
  }
  void bn_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& run_mean, Tensor& run_var,
                        float momentum, float eps, Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                        bool relu) override {
    auto t0 = clk::now();
    in_.bn_forward_train(x, gamma, beta, run_mean, run_var, momentum, eps, y, save_mean, save_invstd, relu);
    in_.synchronize();
    add("bn_forward_train", t0, 7.0 * x.numel(), 4.0 * (2 * x.numel() + y.numel()));
  }
  void bn_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& run_mean,
                        const Tensor& run_var, float eps, Tensor& y, bool relu) override {
    auto t0 = clk::now();
    in_.bn_forward_infer(x, gamma, beta, run_mean, run_var, eps, y, relu);
    in_.synchronize();
    add("bn_forward_infer", t0, 3.0 * x.numel(), 4.0 * (x.numel() + y.numel()));
  }
  void bn_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                   const Tensor& save_invstd, Tensor& dx, Tensor* dgamma, Tensor* dbeta, bool relu,
                   float beta_dx) override {
    auto t0 = clk::now();
    in_.bn_backward(x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, relu, beta_dx);
    in_.synchronize();
    add("bn_backward", t0, 9.0 * x.numel(),
        4.0 * (2 * x.numel() + y.numel() + 2 * dy.numel() + dx.numel() * (beta_dx != 0.f ? 2 : 1)));
  }
  void wsum_forward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                    const std::vector<Tensor*>& ys) override {
    auto t0 = clk::now();
    in_.wsum_forward(J, K, lam, live, xs, ys);
    in_.synchronize();
    add("wsum_forward", t0, wsum_flops(J, K, live, xs), wsum_bytes(J, K, live, xs, false));
  }
  void wsum_backward(int J, int K, const float* lam, const uint8_t* live, const std::vector<const Tensor*>& xs,
                     const std::vector<const Tensor*>& dys, const std::vector<Tensor*>& dxs, float* dlam) override {
    auto t0 = clk::now();
    in_.wsum_backward(J, K, lam, live, xs, dys, dxs, dlam);
    in_.synchronize();
    add("wsum_backward", t0, 2 * wsum_flops(J, K, live, xs), wsum_bytes(J, K, live, xs, true));
  }
  void concat_scaled_columns(const std::vector<const Tensor*>& ws, const float* scale, Tensor& out) override {
    auto t0 = clk::now();
    in_.concat_scaled_columns(ws, scale, out);
    in_.synchronize();
    add("concat_scaled_columns", t0, 1.0 * out.numel(), 8.0 * out.numel());
  }
  void concat_scaled_columns_backward(const std::vector<const Tensor*>& ws, const float* scale, const Tensor& m,
                                      const std::vector<Tensor*>& dws, const std::vector<float*>& dscale) override {
    auto t0 = clk::now();
    in_.concat_scaled_columns_backward(ws, scale, m, dws, dscale);
    in_.synchronize();
    add("concat_scaled_columns_backward", t0, 2.0 * m.numel(), 12.0 * m.numel());
  }
  void axpy(float alpha, const Tensor& x, Tensor& y) override {
    auto t0 = clk::now();
    in_.axpy(alpha, x, y);
    in_.synchronize();
    add("axpy", t0, 2.0 * x.numel(), 12.0 * x.numel());
  }
  void add(const Tensor& a, const Tensor& b, Tensor& y) override {
    auto t0 = clk::now();
    in_.add(a, b, y);
    in_.synchronize();
    add("add", t0, 1.0 * y.numel(), 12.0 * y.numel());
  }
  void dot_accumulate(const Tensor& a, const Tensor& b, float* out) override {
    auto t0 = clk::now();
    in_.dot_accumulate(a, b, out);
    in_.synchronize();
    add("dot_accumulate", t0, 2.0 * a.numel(), 8.0 * a.numel());
  }
  void clip(Tensor& g, float lo, float hi) override {
    auto t0 = clk::now();
    in_.clip(g, lo, hi);
    in_.synchronize();
    add("clip", t0, 2.0 * g.numel(), 8.0 * g.numel());
  }
  bool all_finite(const Tensor& t) override {
    auto t0 = clk::now();
    auto r = in_.all_finite(t);
    in_.synchronize();
    add("all_finite", t0, 1.0 * t.numel(), 4.0 * t.numel());
    return r;
  }
  double sum_squares(const Tensor& t) override {
    auto t0 = clk::now();
    auto r = in_.sum_squares(t);
    in_.synchronize();
    add("sum_squares", t0, 2.0 * t.numel(), 4.0 * t.numel());
    return r;
  }
  void global_avg_pool_forward(const Tensor& x, Tensor& y) override {
    auto t0 = clk::now();
    in_.global_avg_pool_forward(x, y);
    in_.synchronize();
    add("global_avg_pool_forward", t0, 1.0 * x.numel(), 4.0 * (x.numel() + y.numel()));
  }
  void global_avg_pool_backward(const Tensor& dy, Tensor& dx, float beta) override {
    auto t0 = clk::now();
    in_.global_avg_pool_backward(dy, dx, beta);
    in_.synchronize();
    add("global_avg_pool_backward", t0, 1.0 * dx.numel(), 4.0 * (dy.numel() + dx.numel() * (beta != 0.f ? 2 : 1)));
  }
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override {
    auto t0 = clk::now();
    in_.linear_forward(x, w, b, y);
    in_.synchronize();
    add("linear_forward", t0, 2.0 * x.dim(0) * w.numel(), 4.0 * (x.numel() + w.numel() + b.numel() + y.numel()));
  }
  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                       Tensor* db) override {
    auto t0 = clk::now();
    in_.linear_backward(x, w, dy, dx, dw, db);
    in_.synchronize();
    add("linear_backward", t0, 2.0 * x.dim(0) * w.numel() * ((dx ? 1 : 0) + (dw ? 1 : 0)),
        4.0 * (x.numel() + w.numel() + dy.numel() + (dx ? dx->numel() : 0) + (dw ? 2 * dw->numel() : 0)));
  }
  void softmax_xent(const Tensor& logits, const int32_t* labels, float grad_scale, Tensor& dlogits, double* loss_sum,
                    int64_t* correct) override {
    auto t0 = clk::now();
    in_.softmax_xent(logits, labels, grad_scale, dlogits, loss_sum, correct);
    in_.synchronize();
    add("softmax_xent", t0, 5.0 * logits.numel(), 8.0 * logits.numel());
  }
  void nag_update(Tensor& w, const Tensor& g, Tensor& m, float lr, float momentum, float wd) override {
    auto t0 = clk::now();
    in_.nag_update(w, g, m, lr, momentum, wd);
    in_.synchronize();
    add("nag_update", t0, 6.0 * w.numel(), 20.0 * w.numel());
  }
  void softmax_xent_smoothed(const Tensor& logits, const int32_t* labels, float smoothing, float grad_scale,
                             Tensor& dlogits, double* loss_sum, int64_t* correct) override {
    auto t0 = clk::now();
    in_.softmax_xent_smoothed(logits, labels, smoothing, grad_scale, dlogits, loss_sum, correct);
    in_.synchronize();
    add("softmax_xent_smoothed", t0, 6.0 * logits.numel(), 8.0 * logits.numel());
  }
  void dropout_apply(const Tensor& x, float p, uint64_t key, int64_t index_base, Tensor& y) override {
    auto t0 = clk::now();
    in_.dropout_apply(x, p, key, index_base, y);
    in_.synchronize();
    add("dropout_apply", t0, 2.0 * x.numel(), 8.0 * x.numel());
  }
  void scale_samples(const Tensor& x, int groups, const float* scale, Tensor& y, float beta) override {
    auto t0 = clk::now();
    in_.scale_samples(x, groups, scale, y, beta);
    in_.synchronize();
    add("scale_samples", t0, 1.0 * x.numel(), 4.0 * (x.numel() + y.numel() * (beta != 0.f ? 2 : 1)));
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
  void add(const std::string& what, clk::time_point t0, double flops, double bytes) {
    Row& e = totals[what];
    e.ms += std::chrono::duration<double, std::milli>(clk::now() - t0).count();
    e.calls += 1;
    e.flops += flops;
    e.bytes += bytes;
  }
  // ---- the work model (docs/performance.md, the roofline): FLOPs as multiply-adds × 2, bytes as
  // the tensors each call must read and write once (an ideal cache); no primitive
  // is credited with more.
  /// A convolution whose output (or output gradient) is `out`: 2 · out · (cin/groups) · k².
  static double conv_flops(const ConvDesc& d, const Tensor& out) {
    return 2.0 * static_cast<double>(out.numel()) * (d.cin / d.groups) * d.k * d.k;
  }
  static int64_t wsum_plane(const std::vector<const Tensor*>& xs) {
    for (const Tensor* x : xs)
      if (x) return x->numel();
    return 0;
  }
  /// One FMA per live (j, k) pair and element.
  static double wsum_flops(int J, int K, const uint8_t* live, const std::vector<const Tensor*>& xs) {
    double n = 0;
    for (int i = 0; i < J * K; ++i) n += live[i] ? 1 : 0;
    return 2.0 * n * static_cast<double>(wsum_plane(xs));
  }
  /// Forward: each input used read once, each output written once; backward: the
  /// output gradients read, each input used read (for dλ) and its gradient read and written.
  static double wsum_bytes(int J, int K, const uint8_t* live, const std::vector<const Tensor*>& xs, bool backward) {
    int in = 0, out = 0;
    for (int k = 0; k < K; ++k) {
      bool used = false;
      for (int j = 0; j < J; ++j) used = used || live[j * K + k];
      in += used;
    }
    for (int j = 0; j < J; ++j) {
      bool any = false;
      for (int k = 0; k < K; ++k) any = any || live[j * K + k];
      out += any;
    }
    return 4.0 * static_cast<double>(wsum_plane(xs)) * (backward ? out + 3 * in : in + out);
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
    rows.push_back({kv.second.ms, kv.first});
    total += kv.second.ms;
  }
  std::sort(rows.rbegin(), rows.rend());
  std::string out = "primitive                             ms/step   share  calls/step  GFLOP/s    GB/s\n";
  char buf[200];
  for (auto& r : rows) {
    const ProfilingBackend::Row& e = p->totals[r.second];
    const double sec = e.ms / 1e3;
    std::snprintf(buf, sizeof buf, "%-36s %8.2f  %5.1f%%  %8.1f  %8.2f  %7.2f\n", r.second.c_str(), r.first / steps,
                  100.0 * r.first / total, double(e.calls) / steps, sec > 0 ? e.flops / sec / 1e9 : 0.0,
                  sec > 0 ? e.bytes / sec / 1e9 : 0.0);
    out += buf;
  }
  std::snprintf(buf, sizeof buf, "%-36s %8.2f\n", "total in primitives", total / steps);
  out += buf;
  p->totals.clear();
  return out;
}

std::string profiling_json(Backend& b, int steps) {
  auto* p = dynamic_cast<ProfilingBackend*>(&b);
  if (!p) return "[]";
  std::string out = "[";
  char buf[320];
  bool first = true;
  for (const auto& kv : p->totals) {
    const ProfilingBackend::Row& e = kv.second;
    std::snprintf(buf, sizeof buf,
                  "%s{\"primitive\":\"%s\",\"ms_per_step\":%.4f,\"calls_per_step\":%.2f,\"flop_per_step\":%.6g,"
                  "\"bytes_per_step\":%.6g}",
                  first ? "" : ",", kv.first.c_str(), e.ms / steps, double(e.calls) / steps, e.flops / steps,
                  e.bytes / steps);
    out += buf;
    first = false;
  }
  return out + "]";
}

}  // namespace dsonas
