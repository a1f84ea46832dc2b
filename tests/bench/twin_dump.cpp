// twin_dump.cpp — writes one supergraph training step as a DSOD file for the
// PyTorch twin (tests/bench/test_twin.py): parameters, BN statistics, λ and live
// mask before the step, the input batch, and what the C++ side computed: logits,
// mean loss, every gradient, the running statistics after the forward.
//
//   twin_dump --preset NAME [--share] [--seed S] [--batch B] [--zero-frac P] --out FILE
// λ are drawn uniformly from [0.25, 1.25] (so λ scaling is really tested), a
// fraction P of them set to 0, then pruned by the §6.1 rule (so the execution
// plan really drops ops, edges and branches).
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/core/rng.hpp"
#include "dsonas/io/dump.hpp"
#include "dsonas/model/supergraph.hpp"
#include "dsonas/model/prune.hpp"

using namespace dsonas;

static std::vector<float> host(Backend& be, const Tensor& t) {
  std::vector<float> h(static_cast<size_t>(t.numel()));
  be.download(t, h.data());
  return h;
}

int main(int argc, char** argv) {
  std::string preset = "tiny", out;
  bool share = false;
  uint64_t seed = 1;
  int batch = 4;
  double zero_frac = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--preset")
      preset = val();
    else if (a == "--share")
      share = true;
    else if (a == "--seed")
      seed = std::stoull(val());
    else if (a == "--batch")
      batch = std::stoi(val());
    else if (a == "--zero-frac")
      zero_frac = std::stod(val());
    else if (a == "--out")
      out = val();
    else {
      std::cerr << "unknown option " << a << "\n";
      return 2;
    }
  }
  if (out.empty()) {
    std::cerr << "--out is required\n";
    return 2;
  }
  try {
    SearchSpace sp = SearchSpace::preset_named(preset);
    sp.share = share;
    auto be = make_backend(Device::CPU, 2);
    Supergraph g(sp, *be, seed);
    Rng rng(seed, 777);
    for (float& l : g.lambda()) {
      l = 0.25f + rng.uniform();
      if (rng.uniform() < zero_frac) l = 0.f;
    }
    prune_all(sp, g.lambda(), g.mask());
    g.rebuild_plan();

    DumpFile d;
    d.put_text("meta/space", sp.to_json());
    for (Param& p : g.params()) {
      std::vector<float> h = host(*be, p.value);
      d.put_f32(p.name, p.value.shape(), h.data());
    }
    for (BnStats& b : g.bn_stats()) {
      std::vector<float> m = host(*be, b.mean), v = host(*be, b.var);
      d.put_f32(b.prefix + "/mean", b.mean.shape(), m.data());
      d.put_f32(b.prefix + "/var", b.var.shape(), v.data());
    }
    for (const LambdaGroup& grp : g.lambda_groups()) {
      d.put_f32(grp.name, {grp.size}, g.lambda().data() + grp.offset);
      std::vector<float> mk(static_cast<size_t>(grp.size));
      for (int i = 0; i < grp.size; ++i) mk[static_cast<size_t>(i)] = g.mask()[static_cast<size_t>(grp.offset + i)];
      d.put_f32("mask/" + grp.name, {grp.size}, mk.data());
    }
    const int64_t img = static_cast<int64_t>(sp.in_channels) * sp.in_height * sp.in_width;
    std::vector<float> x(static_cast<size_t>(batch * img));
    std::vector<int32_t> y(static_cast<size_t>(batch));
    Rng drng(seed, 4242);
    for (float& v : x) v = static_cast<float>(drng.normal());
    for (int32_t& v : y) v = static_cast<int32_t>(drng.below(static_cast<uint32_t>(sp.classes)));
    d.put_f32("input/x", {batch, sp.in_channels, sp.in_height, sp.in_width}, x.data());
    d.put_i32("input/y", {batch}, y.data());

    StepResult r = g.train_step(x.data(), y.data(), batch, 1.f / static_cast<float>(batch), true, true);
    std::vector<float> logits = g.last_logits();
    d.put_f32("out/logits", {batch, sp.classes}, logits.data());
    float loss = static_cast<float>(r.loss_sum / batch);
    d.put_f32("out/loss", {1}, &loss);
    for (Param& p : g.params()) {
      if (p.frozen) continue;
      std::vector<float> h = host(*be, p.grad);
      d.put_f32("grad/" + p.name, p.grad.shape(), h.data());
    }
    std::vector<float> dl = host(*be, g.lambda_grad());
    for (const LambdaGroup& grp : g.lambda_groups()) d.put_f32("grad/" + grp.name, {grp.size}, dl.data() + grp.offset);
    for (BnStats& b : g.bn_stats()) {
      std::vector<float> m = host(*be, b.mean), v = host(*be, b.var);
      d.put_f32("after/" + b.prefix + "/mean", b.mean.shape(), m.data());
      d.put_f32("after/" + b.prefix + "/var", b.var.shape(), v.data());
    }
    d.write(out);
    std::cout << "twin_dump: " << preset << (share ? " share" : " full") << " batch " << batch << " live ops "
              << g.live_ops() << " -> " << out << "\n";
  } catch (const Error& e) {
    std::cerr << "twin_dump: " << e.what() << "\n";
    return e.code();
  }
  return 0;
}
