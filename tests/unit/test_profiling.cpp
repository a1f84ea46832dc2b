// The profiling backend's work model (the roofline of `make bench`): FLOPs and bytes
// per call, computed here by hand from the shapes, and the calls forwarded unchanged.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dsonas/backend/backend.hpp"
#include "dsonas/backend/profiling.hpp"
#include "dsonas/core/json.hpp"

namespace dsonas {
namespace {

struct Row {
  double ms = -1, calls = 0, flop = 0, bytes = 0;
};

Row row_of(Backend& prof, const std::string& primitive) {
  const JsonValue v = parse_json(profiling_json(prof, 1), "profile");
  Row r;
  for (const JsonValue& e : v.arr) {
    std::string name;
    for (const auto& kv : e.obj)
      if (kv.first == "primitive") name = kv.second.text;
    if (name != primitive) continue;
    for (const auto& kv : e.obj) {
      if (kv.first == "ms_per_step") r.ms = std::stod(kv.second.text);
      if (kv.first == "calls_per_step") r.calls = std::stod(kv.second.text);
      if (kv.first == "flop_per_step") r.flop = std::stod(kv.second.text);
      if (kv.first == "bytes_per_step") r.bytes = std::stod(kv.second.text);
    }
  }
  return r;
}

TEST(Profiling, ConvWorkModelAndForwarding) {
  std::unique_ptr<Backend> cpu = make_backend(Device::CPU, 1);
  std::unique_ptr<Backend> prof = make_profiling_backend(*cpu);
  // 1×1 conv 8 → 16 channels, batch 2, 5×6: y = 16·2·5·6 = 960 values, 8 MACs each
  ConvDesc d;
  d.cin = 8;
  d.cout = 16;
  Tensor x = prof->alloc({8, 2, 5, 6}), w = prof->alloc({16, 8, 1, 1}), y = prof->alloc({16, 2, 5, 6});
  prof->fill(x, 1.f);
  prof->fill(w, 0.5f);
  prof->conv_forward(d, x, w, y);
  std::vector<float> out(static_cast<size_t>(y.numel()));
  prof->download(y, out.data());
  EXPECT_FLOAT_EQ(out[0], 4.f);  // Σ over 8 inputs of 1 · 0.5: the call reached the CPU backend
  const Row r = row_of(*prof, "conv_forward 1x1 8->16");
  EXPECT_EQ(r.calls, 1);
  EXPECT_GE(r.ms, 0);
  EXPECT_DOUBLE_EQ(r.flop, 2.0 * 960 * 8);
  EXPECT_DOUBLE_EQ(r.bytes, 4.0 * (480 + 128 + 960));  // x, w read; y written (β = 0)
  // depthwise 3×3 on 4 channels: 9 MACs per output; β = 1 reads y as well
  ConvDesc dw;
  dw.cin = dw.cout = dw.groups = 4;
  dw.k = 3;
  dw.pad = 1;
  Tensor a = prof->alloc({4, 1, 7, 7}), k = prof->alloc({4, 1, 3, 3}), b = prof->alloc({4, 1, 7, 7});
  prof->fill(a, 1.f);
  prof->fill(k, 1.f);
  prof->fill(b, 0.f);
  prof->conv_forward(dw, a, k, b, 1.f, 1.f);
  const Row q = row_of(*prof, "conv_forward dw3x3");
  EXPECT_DOUBLE_EQ(q.flop, 2.0 * 196 * 9);
  EXPECT_DOUBLE_EQ(q.bytes, 4.0 * (196 + 36 + 2 * 196));
}

TEST(Profiling, ElementwiseAndWsumWorkModel) {
  std::unique_ptr<Backend> cpu = make_backend(Device::CPU, 1);
  std::unique_ptr<Backend> prof = make_profiling_backend(*cpu);
  Tensor x0 = prof->alloc({3, 1, 4, 4}), x1 = prof->alloc({3, 1, 4, 4}), x2 = prof->alloc({3, 1, 4, 4});
  Tensor y0 = prof->alloc({3, 1, 4, 4}), y1 = prof->alloc({3, 1, 4, 4});
  for (Tensor* t : {&x0, &x1, &x2}) prof->fill(*t, 1.f);
  prof->add(x0, x1, y0);
  const Row add = row_of(*prof, "add");
  EXPECT_DOUBLE_EQ(add.flop, 48);
  EXPECT_DOUBLE_EQ(add.bytes, 12.0 * 48);
  // 2 outputs × 3 inputs; live: y0 ← x0, x1; y1 ← x1 (x2 unused): 3 FMAs per element
  const float lam[6] = {1, 2, 3, 4, 5, 6};
  const uint8_t live[6] = {1, 1, 0, 0, 1, 0};
  prof->wsum_forward(2, 3, lam, live, {&x0, &x1, &x2}, {&y0, &y1});
  const Row ws = row_of(*prof, "wsum_forward");
  EXPECT_DOUBLE_EQ(ws.flop, 2.0 * 3 * 48);
  EXPECT_DOUBLE_EQ(ws.bytes, 4.0 * 48 * (2 + 2));  // x0, x1 read once; y0, y1 written
  std::vector<float> out(48);
  prof->download(y1, out.data());
  EXPECT_FLOAT_EQ(out[5], 5.f);
  // the report resets the totals; the JSON does not
  EXPECT_EQ(row_of(*prof, "add").calls, 1);
  EXPECT_NE(profiling_report(*prof, 1).find("wsum_forward"), std::string::npos);
  EXPECT_EQ(row_of(*prof, "add").calls, 0);
}

}  // namespace
}  // namespace dsonas
