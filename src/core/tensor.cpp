// tensor.cpp — Tensor and the CPU caching allocator.
#include "dsonas/core/tensor.hpp"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "dsonas/core/error.hpp"

namespace dsonas {

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    DSO_CHECK(d >= 0, "negative dimension in ", shape_str(s));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

namespace {

/// Size-bucketed cache of 64-byte aligned blocks. Buckets are the exact byte
/// counts asked for: a training step asks for the same sizes every time.
class CpuCachingAllocator final : public Allocator {
 public:
  ~CpuCachingAllocator() override { release_cache(); }
  void* alloc(size_t bytes) override {
    if (bytes == 0) bytes = 64;
    std::lock_guard<std::mutex> g(mu_);
    in_use_ += bytes;
    if (in_use_ > peak_) peak_ = in_use_;
    auto it = cache_.find(bytes);
    if (it != cache_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      cached_ -= bytes;
      return p;
    }
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) {
      in_use_ -= bytes;
      throw Error(kExitInternal, str("out of host memory allocating ", bytes, " bytes"));
    }
    return p;
  }
  void free(void* p, size_t bytes) override {
    if (bytes == 0) bytes = 64;
    std::lock_guard<std::mutex> g(mu_);
    in_use_ -= bytes;
    cache_[bytes].push_back(p);
    cached_ += bytes;
  }
  size_t in_use() const override { return in_use_; }
  size_t peak() const override { return peak_; }
  void reset_peak() override {
    std::lock_guard<std::mutex> g(mu_);
    peak_ = in_use_;
  }
  void release_cache() override {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& kv : cache_)
      for (void* p : kv.second) std::free(p);
    cache_.clear();
    cached_ = 0;
  }

 private:
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> cache_;
  size_t in_use_ = 0, peak_ = 0, cached_ = 0;
};

Allocator* g_alloc[2] = {nullptr, nullptr};

}  // namespace

Allocator& allocator(Device d) {
  if (d == Device::CPU) {
    static CpuCachingAllocator* cpu = new CpuCachingAllocator();  // never destroyed: tensors may outlive statics
    return *cpu;
  }
  Allocator* a = g_alloc[1];
  if (!a) fail_usage("--device cuda: this dsonas was built without CUDA (rebuild with USE_CUDA=1)");
  return *a;
}

void register_allocator(Device d, Allocator* a) { g_alloc[d == Device::CPU ? 0 : 1] = a; }

Tensor Tensor::empty(const Shape& shape, Device dev) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.device_ = dev;
  size_t bytes = static_cast<size_t>(t.numel_) * sizeof(float);
  Allocator* a = &allocator(dev);
  float* p = static_cast<float*>(a->alloc(bytes));
  t.storage_ = std::shared_ptr<float>(p, [a, bytes](float* q) { a->free(q, bytes); });
  return t;
}

Tensor Tensor::zeros(const Shape& shape) {
  Tensor t = empty(shape, Device::CPU);
  std::memset(t.data(), 0, t.bytes());
  return t;
}

Tensor Tensor::view(int64_t offset, const Shape& shape) const {
  int64_t n = shape_numel(shape);
  DSO_CHECK(offset >= 0 && offset + n <= numel_, "view [", offset, ",", offset + n, ") out of range of ",
            shape_str(shape_));
  Tensor t = *this;
  t.offset_ = offset_ + offset;
  t.shape_ = shape;
  t.numel_ = n;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  DSO_CHECK(shape_numel(shape) == numel_, "reshape ", shape_str(shape_), " -> ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

}  // namespace dsonas
