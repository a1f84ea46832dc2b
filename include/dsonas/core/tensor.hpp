// tensor.hpp — a float32 tensor: shape, device and a shared, owning buffer.
//
// A Tensor is a (storage, offset, shape) triple.  Copies share the storage;
// view() makes a sub-tensor of a contiguous range (used for the flat gradient
// buffer, whose per-parameter slices are views).  Memory comes from a caching
// allocator per device, so a training step that frees and re-allocates the same
// sizes never goes back to the system allocator (on CUDA: never cudaMalloc in
// the step loop).
//
// Activations are 4-D with logical dims (C, N, H, W); their memory layout is the
// backend's business (see backend.hpp).  Parameters are stored in the file
// layout of docs/design.md §5: OIHW conv weights, [out,in] linear weights.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dsonas {

enum class Device { CPU, CUDA };
const char* device_name(Device d);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

/// Raw memory source for one device.  The CPU one is a size-bucketed cache of
/// 64-byte aligned blocks; the CUDA one (backend/cuda) a pool over cudaMalloc.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* p, size_t bytes) = 0;
  /// Bytes handed out right now, and the high-water mark since reset_peak().
  virtual size_t in_use() const = 0;
  virtual size_t peak() const = 0;
  virtual void reset_peak() = 0;
  /// Return cached blocks to the system.
  virtual void release_cache() = 0;
};

/// The allocator of a device; CUDA's is registered by the CUDA backend and
/// asking for it in a build without CUDA fails loudly.
Allocator& allocator(Device d);
void register_allocator(Device d, Allocator* a);

class Tensor {
 public:
  Tensor() = default;
  /// Uninitialised tensor of the given shape.
  static Tensor empty(const Shape& shape, Device dev = Device::CPU);
  /// Zero-filled (CPU only; use Backend::fill on other devices).
  static Tensor zeros(const Shape& shape);

  bool defined() const { return static_cast<bool>(storage_); }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(static_cast<size_t>(i)); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }
  size_t bytes() const { return static_cast<size_t>(numel_) * sizeof(float); }

  float* data() { return storage_ ? storage_.get() + offset_ : nullptr; }
  const float* data() const { return storage_ ? storage_.get() + offset_ : nullptr; }

  /// A view of `numel(shape)` elements starting `offset` elements into this
  /// tensor; shares the storage.
  Tensor view(int64_t offset, const Shape& shape) const;
  /// Same data, another shape with the same element count.
  Tensor reshape(const Shape& shape) const;

 private:
  std::shared_ptr<float> storage_;
  int64_t offset_ = 0;
  Shape shape_;
  int64_t numel_ = 0;
  Device device_ = Device::CPU;
};

}  // namespace dsonas
