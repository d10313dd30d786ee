// Device memory for the CUDA backend as a plain C++ API (no CUDA headers), so runtime/ and
// tests/ compile with the host compiler. Implemented in cuda_memory.cu; declared in every
// build but defined only where PEFTRUN_WITH_CUDA is set (calling it elsewhere fails to link).
//
// Every function throws std::runtime_error naming the call, the size and CUDA's message: a
// failed allocation or copy is never a silent corruption.
#pragma once

#include <cstddef>
#include <utility>

// cudaStream_t is `struct CUstream_st*`: naming the struct lets plain C++ headers pass streams
// without including the CUDA runtime. nullptr is the default (legacy) stream.
struct CUstream_st;

namespace peftrun::cuda {

using Stream = CUstream_st*;

void set_device(int device);
void* device_malloc(std::size_t bytes);
// Successful device_malloc calls of this process so far. The training step loop must not
// change it (the device model plans every buffer at start-up; tests assert the count).
std::size_t device_allocation_count();
void device_free(void* p) noexcept;
void copy_host_to_device(void* dst, const void* src, std::size_t bytes);
void copy_device_to_host(void* dst, const void* src, std::size_t bytes);
void copy_device_to_device(void* dst, const void* src, std::size_t bytes);
void device_memset(void* p, int byte, std::size_t bytes);
// cudaDeviceSynchronize; throws with the first asynchronous error of any earlier launch.
void synchronize();
// Bytes of device memory in use on the current device (cudaMemGetInfo: total - free, so it
// counts every process and the CUDA context itself).
std::size_t device_bytes_in_use();

// Owns n elements of T in device memory. Move-only.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n)
      : data_(n ? static_cast<T*>(device_malloc(n * sizeof(T))) : nullptr), size_(n) {}
  ~DeviceBuffer() { device_free(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      device_free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t bytes() const { return size_ * sizeof(T); }

  void upload(const T* host) { copy_host_to_device(data_, host, bytes()); }
  void download(T* host) const { copy_device_to_host(host, data_, bytes()); }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace peftrun::cuda
