// kernels/cuda_memory.h in the emulated-device build: "device" memory is host memory, but all
// of it comes from one reserved address range (emu::g_device_memory, block_context.h), so the
// emulated kernels, copies and matmuls can tell device pointers from host pointers and refuse
// a host pointer where a GPU would fault. Each allocation gets its own pages (256-byte aligned,
// like cudaMalloc's), filled with 0xFF bytes (NaN in every float type), so a kernel or copy that
// reads memory nobody wrote shows up as NaN instead of passing on zeros; freed pages are made
// inaccessible and never handed out again, so a use after free faults. Copies are memmove;
// synchronize() has nothing to wait for.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "kernels/block_context.h"
#include "kernels/cuda_memory.h"

namespace peftrun::cuda {
namespace {

// Address space only (PROT_NONE, no memory behind it) until allocations claim pages of it.
constexpr std::size_t kRegionBytes = std::size_t(1) << 40;

struct Allocations {
  std::mutex mutex;
  std::unordered_map<const void*, std::size_t> live;  // pointer -> bytes
  std::size_t bytes_in_use = 0;
  std::size_t count = 0;    // successful device_malloc calls
  std::uintptr_t next = 0;  // first unused byte of the region
  std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));

  Allocations() {
    void* region =
        mmap(nullptr, kRegionBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) {
      throw std::runtime_error("emulated device: cannot reserve its address range");
    }
    next = reinterpret_cast<std::uintptr_t>(region);
    emu::g_device_memory = {next, next + kRegionBytes};
  }
};

Allocations& allocations() {
  static Allocations a;
  return a;
}

std::size_t pages_for(std::size_t bytes, std::size_t page) {
  return bytes == 0 ? page : (bytes + page - 1) / page * page;
}

// A copy or memset whose device side is not device memory is what a GPU refuses
// (cudaErrorInvalidValue) or faults on; name it.
void check_device(const void* p, std::size_t bytes, const char* call, const char* side) {
  if (bytes == 0) return;
  const auto* b = static_cast<const unsigned char*>(p);
  if (!p || !emu::g_device_memory.contains(b) || !emu::g_device_memory.contains(b + bytes - 1)) {
    char where[32];
    std::snprintf(where, sizeof(where), "%p", p);
    throw std::runtime_error(std::string(call) + " of " + std::to_string(bytes) + " bytes: the " +
                             side + " (" + where + ") is not device memory (emulated device)");
  }
}

void check_host(const void* p, std::size_t bytes, const char* call) {
  if (bytes > 0 && !p) {
    throw std::runtime_error(std::string(call) + " of " + std::to_string(bytes) +
                             " bytes: null host pointer (emulated device)");
  }
}

// Claims fresh pages of the region for `bytes`, filled with 0xFF. Caller holds a.mutex.
void* claim_pages(Allocations& a, std::size_t bytes) {
  const std::size_t span = pages_for(bytes, a.page);
  const std::uintptr_t end = emu::g_device_memory.end;
  if (span > end - a.next) {
    throw std::runtime_error("cudaMalloc of " + std::to_string(bytes) +
                             " bytes failed: the emulated device's address range is used up");
  }
  void* p = reinterpret_cast<void*>(a.next);
  if (mprotect(p, span, PROT_READ | PROT_WRITE) != 0) {
    throw std::runtime_error("cudaMalloc of " + std::to_string(bytes) +
                             " bytes failed: out of host memory (emulated device)");
  }
  a.next += span;
  std::memset(p, 0xFF, span);
  return p;
}

}  // namespace

void set_device(int device) {
  if (device != 0) {
    throw std::runtime_error("set_device(" + std::to_string(device) +
                             "): the emulated device has only device 0");
  }
}

void* device_malloc(std::size_t bytes) {
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mutex);
  void* p = claim_pages(a, bytes);
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
  std::lock_guard<std::mutex> lock(a.mutex);
  auto it = a.live.find(p);
  if (it == a.live.end()) std::abort();  // freeing what device_malloc never returned
  const std::size_t span = pages_for(it->second, a.page);
  a.bytes_in_use -= it->second;
  a.live.erase(it);
  // Give the memory back but keep the addresses: a later use of p faults.
  (void)madvise(p, span, MADV_DONTNEED);
  (void)mprotect(p, span, PROT_NONE);
}

void copy_host_to_device(void* dst, const void* src, std::size_t bytes) {
  check_device(dst, bytes, "cudaMemcpy host to device", "destination");
  check_host(src, bytes, "cudaMemcpy host to device");
  if (bytes) std::memmove(dst, src, bytes);
}

void copy_device_to_host(void* dst, const void* src, std::size_t bytes) {
  check_host(dst, bytes, "cudaMemcpy device to host");
  check_device(src, bytes, "cudaMemcpy device to host", "source");
  if (bytes) std::memmove(dst, src, bytes);
}

void copy_device_to_device(void* dst, const void* src, std::size_t bytes) {
  check_device(dst, bytes, "cudaMemcpy device to device", "destination");
  check_device(src, bytes, "cudaMemcpy device to device", "source");
  if (bytes) std::memmove(dst, src, bytes);
}

void device_memset(void* p, int byte, std::size_t bytes) {
  check_device(p, bytes, "cudaMemset", "destination");
  if (bytes) std::memset(p, byte, bytes);
}

void synchronize() {}

std::size_t device_bytes_in_use() {
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mutex);
  return a.bytes_in_use;
}

}  // namespace peftrun::cuda

namespace peftrun::emu {

unsigned char* allocate_shared_memory(std::size_t bytes) {
  cuda::Allocations& a = cuda::allocations();
  std::lock_guard<std::mutex> lock(a.mutex);
  return static_cast<unsigned char*>(cuda::claim_pages(a, bytes));
}

}  // namespace peftrun::emu
