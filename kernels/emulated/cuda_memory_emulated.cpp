// kernels/cuda_memory.h in the emulated-device build: "device" memory is host memory from the
// C++ allocator, 256-byte aligned like cudaMalloc's, and filled with 0xFF bytes (NaN in every
// float type) when allocated, so a kernel or copy that reads memory nobody wrote shows up as
// NaN instead of passing on zeros. Copies are memcpy; synchronize() has nothing to wait for.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "kernels/cuda_memory.h"

namespace peftrun::cuda {
namespace {

constexpr std::size_t kAlignment = 256;

struct Allocations {
  std::mutex mutex;
  std::unordered_map<const void*, std::size_t> live;  // pointer -> bytes
  std::size_t bytes_in_use = 0;
  std::size_t count = 0;  // successful device_malloc calls
};

Allocations& allocations() {
  static Allocations a;
  return a;
}

// The emulated device has no copy engine to fault on a bad pointer: a null pointer with a
// non-zero size is the one mistake it can name.
void check_pointer(const void* p, std::size_t bytes, const char* call) {
  if (bytes > 0 && p == nullptr) {
    throw std::runtime_error(std::string(call) + " of " + std::to_string(bytes) +
                             " bytes: null pointer (emulated device)");
  }
}

}  // namespace

void set_device(int device) {
  if (device != 0) {
    throw std::runtime_error("set_device(" + std::to_string(device) +
                             "): the emulated device has only device 0");
  }
}

void* device_malloc(std::size_t bytes) {
  const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = ::operator new(rounded == 0 ? kAlignment : rounded, std::align_val_t(kAlignment),
                           std::nothrow);
  if (!p) {
    throw std::runtime_error("cudaMalloc of " + std::to_string(bytes) +
                             " bytes failed: out of host memory (emulated device)");
  }
  std::memset(p, 0xFF, rounded);
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mutex);
  a.live.emplace(p, bytes);
  a.bytes_in_use += bytes;
  ++a.count;
  return p;
}

std::size_t device_allocation_count() {
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mutex);
  return a.count;
}

void device_free(void* p) noexcept {
  if (!p) return;
  Allocations& a = allocations();
  {
    std::lock_guard<std::mutex> lock(a.mutex);
    auto it = a.live.find(p);
    if (it == a.live.end()) std::abort();  // freeing what device_malloc never returned
    a.bytes_in_use -= it->second;
    a.live.erase(it);
  }
  ::operator delete(p, std::align_val_t(kAlignment));
}

void copy_host_to_device(void* dst, const void* src, std::size_t bytes) {
  check_pointer(dst, bytes, "cudaMemcpy host to device");
  check_pointer(src, bytes, "cudaMemcpy host to device");
  if (bytes) std::memmove(dst, src, bytes);
}

void copy_device_to_host(void* dst, const void* src, std::size_t bytes) {
  check_pointer(dst, bytes, "cudaMemcpy device to host");
  check_pointer(src, bytes, "cudaMemcpy device to host");
  if (bytes) std::memmove(dst, src, bytes);
}

void copy_device_to_device(void* dst, const void* src, std::size_t bytes) {
  check_pointer(dst, bytes, "cudaMemcpy device to device");
  check_pointer(src, bytes, "cudaMemcpy device to device");
  if (bytes) std::memmove(dst, src, bytes);
}

void device_memset(void* p, int byte, std::size_t bytes) {
  check_pointer(p, bytes, "cudaMemset");
  if (bytes) std::memset(p, byte, bytes);
}

void synchronize() {}

std::size_t device_bytes_in_use() {
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mutex);
  return a.bytes_in_use;
}

}  // namespace peftrun::cuda
