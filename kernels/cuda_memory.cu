#include "kernels/cuda_memory.h"

#include <atomic>
#include <string>

#include "kernels/cuda_check.h"

namespace peftrun::cuda {

void set_device(int device) {
  PEFTRUN_CUDA_CHECK(cudaSetDevice(device));
}

namespace {
std::atomic<std::size_t> g_allocations{0};
}  // namespace

void* device_malloc(std::size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw std::runtime_error("cudaMalloc of " + std::to_string(bytes) +
                             " bytes failed: " + cudaGetErrorString(err));
  }
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return p;
}

std::size_t device_allocation_count() {
  return g_allocations.load(std::memory_order_relaxed);
}

void device_free(void* p) noexcept {
  if (p) (void)cudaFree(p);
}

void copy_host_to_device(void* dst, const void* src, std::size_t bytes) {
  PEFTRUN_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void copy_device_to_host(void* dst, const void* src, std::size_t bytes) {
  PEFTRUN_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void copy_device_to_device(void* dst, const void* src, std::size_t bytes) {
  PEFTRUN_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

void device_memset(void* p, int byte, std::size_t bytes) {
  PEFTRUN_CUDA_CHECK(cudaMemset(p, byte, bytes));
}

void synchronize() {
  PEFTRUN_CUDA_CHECK(cudaDeviceSynchronize());
}

std::size_t device_bytes_in_use() {
  std::size_t free_b = 0, total_b = 0;
  PEFTRUN_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b - free_b;
}

}  // namespace peftrun::cuda
