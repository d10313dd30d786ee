// The seam that lets one kernel body run on a GPU and, emulated, on the CPU.
//
// Every CUDA kernel of kernels/*_blocks.h is written as a functor whose
//   template <class Ctx> PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const
// is the work of ONE thread of a block: `ctx` answers thread(), threads(), block_x/y/z(),
// grid_x() and sync() (= __syncthreads), `smem` is the block's dynamic shared memory. On the
// device Ctx is CudaBlock below (the CUDA built-ins); the CPU test suite runs the very same
// functor under kernels/emulated/block_emulator.h, one fiber per thread, with barriers, so index
// math, tails, masks and barrier placement are tested on machines without a GPU.
//
// Memory is reached through Span (pointer + element count): on the device operator[] is a plain
// load, on the host (the emulator) every index is bounds-checked and the first violation is
// recorded for the emulator to report, naming the buffer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "kernels/host_device.h"

#include <stdexcept>
#include <string>
#include <type_traits>

namespace peftrun {

// Grid and block shape of one launch: a 1-D block of `threads` threads, a 3-D grid, and the
// dynamic shared memory each block needs.
struct LaunchGeometry {
  int grid_x = 1, grid_y = 1, grid_z = 1;
  int threads = 0;
  std::size_t smem_bytes = 0;
  bool empty() const { return grid_x <= 0 || grid_y <= 0 || grid_z <= 0 || threads <= 0; }
};

// The CUDA launch limits every geometry must respect (checked by both launchers): at most 1024
// threads, grid y/z below 2^16, and the shared memory an sm_80 block can opt in to (the smaller
// of our two targets: 163 KB on A100, 227 KB on H100).
inline constexpr int kMaxGridYZ = 65535;
inline constexpr std::size_t kMaxSharedBytesSm80 = 166912;
// Above this a kernel must opt in with cudaFuncSetAttribute (done by the CUDA launcher).
inline constexpr std::size_t kDefaultSharedBytes = 48 * 1024;

#if !defined(__CUDA_ARCH__)
namespace emu {
// First out-of-bounds access seen by emulated kernels on this thread (empty = none).
inline thread_local std::string g_out_of_bounds;

template <typename T>
T& out_of_bounds(std::size_t i, std::size_t n) {
  if (g_out_of_bounds.empty()) {
    g_out_of_bounds =
        "index " + std::to_string(i) + " outside a buffer of " + std::to_string(n) + " elements";
  }
  static thread_local std::remove_const_t<T> dummy{};
  dummy = {};
  return dummy;
}

// What an emulated kernel may touch on the emulated device (kernels/emulated/): the address
// range all device memory (the emulated blocks' shared memory included) comes from. A GPU
// faults on a host pointer; the emulated device reports it instead of reading host memory.
struct AddressRange {
  std::uintptr_t begin = 0, end = 0;
  bool contains(const void* p) const {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    return a >= begin && a < end;
  }
};
inline AddressRange g_device_memory;  // set by cuda_memory_emulated.cpp

template <typename T>
T& not_device_memory(const void* p) {
  if (g_out_of_bounds.empty()) {
    char where[32];
    std::snprintf(where, sizeof(where), "%p", p);
    g_out_of_bounds = std::string("access to ") + where +
                      ", which is not device memory (a host pointer passed to a kernel?)";
  }
  static thread_local std::remove_const_t<T> dummy{};
  dummy = {};
  return dummy;
}
}  // namespace emu
#endif

// A bounds-carrying view of device (or, emulated, host) memory.
template <typename T>
struct Span {
  T* ptr = nullptr;
  std::size_t size = 0;

  PEFTRUN_HD T& operator[](std::size_t i) const {
#if !defined(__CUDA_ARCH__)
    if (i >= size) return emu::out_of_bounds<T>(i, size);
#if PEFTRUN_CUDA_EMULATION
    if (!emu::g_device_memory.contains(ptr + i)) return emu::not_device_memory<T>(ptr + i);
#endif
#endif
    return ptr[i];
  }
};

template <typename T>
PEFTRUN_HD Span<T> make_span(T* p, std::size_t n) {
  return Span<T>{p, n};
}

// Elements [offset, offset + n) of s as a span of their own (a row of a matrix, for a per-row
// function). In the emulator a range reaching past s is reported (and yields an empty span).
template <typename T>
PEFTRUN_HD Span<T> subspan(Span<T> s, std::size_t offset, std::size_t n) {
#if !defined(__CUDA_ARCH__)
  if (offset > s.size || n > s.size - offset) {
    emu::out_of_bounds<unsigned char>(offset + n, s.size);
    return Span<T>{s.ptr, 0};
  }
#endif
  return Span<T>{s.ptr + offset, n};
}

// Hands out consecutive, 16-byte aligned pieces of a block's shared memory. Each kernel carves
// its layout in one function that also sizes the launch: run on SharedCarver::measure() (no
// memory, unbounded) it hands out empty pointers and used() is the bytes the layout needs, so
// the launch size and the carving cannot disagree. In the emulator a take beyond the launched
// size is reported (and yields an empty span).
class SharedCarver {
 public:
  PEFTRUN_HD explicit SharedCarver(Span<unsigned char> smem) : smem_(smem) {}
  static SharedCarver measure() {
    return SharedCarver(Span<unsigned char>{nullptr, ~std::size_t(0)});
  }

  template <typename T>
  PEFTRUN_HD Span<T> take(std::size_t n) {
    const std::size_t bytes = (n * sizeof(T) + 15) / 16 * 16;
#if !defined(__CUDA_ARCH__)
    if (bytes > smem_.size - used_) {
      emu::out_of_bounds<unsigned char>(used_ + bytes, smem_.size);
      return Span<T>{reinterpret_cast<T*>(smem_.ptr), 0};
    }
#endif
    T* p = smem_.ptr ? reinterpret_cast<T*>(smem_.ptr + used_) : nullptr;
    used_ += bytes;
    return Span<T>{p, n};
  }
  PEFTRUN_HD std::size_t used() const {
    return used_;
  }

 private:
  Span<unsigned char> smem_;
  std::size_t used_ = 0;
};

// Bytes of shared memory a kernel's layout (a type with a static carve(SharedCarver&, args...))
// takes.
template <class Layout, class... A>
std::size_t shared_bytes(const A&... args) {
  SharedCarver c = SharedCarver::measure();
  (void)Layout::carve(c, args...);
  return c.used();
}

// The CUDA built-ins as a Ctx. Its host-side bodies are never executed (a kernel body is only
// ever called from a __global__ function on the device); they exist so the HD templates compile
// in nvcc's host pass too.
struct CudaBlock {
#if defined(__CUDA_ARCH__)
  __device__ __forceinline__ int thread() const {
    return static_cast<int>(threadIdx.x);
  }
  __device__ __forceinline__ int threads() const {
    return static_cast<int>(blockDim.x);
  }
  __device__ __forceinline__ int block_x() const {
    return static_cast<int>(blockIdx.x);
  }
  __device__ __forceinline__ int block_y() const {
    return static_cast<int>(blockIdx.y);
  }
  __device__ __forceinline__ int block_z() const {
    return static_cast<int>(blockIdx.z);
  }
  __device__ __forceinline__ int grid_x() const {
    return static_cast<int>(gridDim.x);
  }
  __device__ __forceinline__ void sync() const {
    __syncthreads();
  }
#else
  int thread() const {
    return 0;
  }
  int threads() const {
    return 1;
  }
  int block_x() const {
    return 0;
  }
  int block_y() const {
    return 0;
  }
  int block_z() const {
    return 0;
  }
  int grid_x() const {
    return 1;
  }
  void sync() const {}
#endif
};

// Sum of one value per thread over the block, returned to every thread; `scratch` holds
// ctx.threads() elements and threads() must be a power of two. The tree has a fixed shape, so
// the result is deterministic. Ends with a barrier, so `scratch` may be reused at once.
template <typename T, class Ctx>
PEFTRUN_HD T block_sum(const Ctx& ctx, Span<T> scratch, T value) {
  const int t = ctx.thread();
  scratch[static_cast<std::size_t>(t)] = value;
  ctx.sync();
  for (int half = ctx.threads() / 2; half > 0; half /= 2) {
    if (t < half) {
      scratch[static_cast<std::size_t>(t)] += scratch[static_cast<std::size_t>(t + half)];
    }
    ctx.sync();
  }
  const T total = scratch[0];
  ctx.sync();
  return total;
}

// Integer atomics, for reductions whose result does not depend on the order of the updates
// (sums and minima of integers), so they stay deterministic. In the emulator the threads of a
// block run one at a time between barriers and blocks run one after another, so a plain
// read-modify-write is already atomic there.
PEFTRUN_HD void atomic_add(Span<unsigned long long> s, std::size_t i, unsigned long long v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(s.ptr + i, v);
#else
  s[i] += v;
#endif
}
PEFTRUN_HD void atomic_min(Span<unsigned long long> s, std::size_t i, unsigned long long v) {
#if defined(__CUDA_ARCH__)
  atomicMin(s.ptr + i, v);
#else
  if (v < s[i]) s[i] = v;
#endif
}

// A grid-stride launch over n elements: blocks of 256 threads, at most 4096 blocks (each thread
// then loops).
inline constexpr int kPointwiseThreads = 256;
inline LaunchGeometry pointwise_geometry(std::int64_t n) {
  LaunchGeometry g;
  g.threads = kPointwiseThreads;
  g.grid_x = static_cast<int>(
      std::min<std::int64_t>(4096, (n + kPointwiseThreads - 1) / kPointwiseThreads));
  return g;
}
// First element and stride of the calling thread in a pointwise_geometry launch.
template <class Ctx>
PEFTRUN_HD std::int64_t pointwise_first(const Ctx& ctx) {
  return static_cast<std::int64_t>(ctx.block_x()) * ctx.threads() + ctx.thread();
}
template <class Ctx>
PEFTRUN_HD std::int64_t pointwise_stride(const Ctx& ctx) {
  return static_cast<std::int64_t>(ctx.grid_x()) * ctx.threads();
}

// Host-side argument check of the ops' launch code: throws std::invalid_argument "op: what".
inline void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(op) + ": " + what);
}

// +inf and a quiet NaN as plain floats in host and device code (std::numeric_limits is not
// usable in device code without relaxed constexpr).
PEFTRUN_HD float float_inf() {
  return __builtin_huge_valf();
}
PEFTRUN_HD float float_nan() {
  return __builtin_nanf("");
}
PEFTRUN_HD float fmax2(float a, float b) {
  return a > b ? a : b;
}

PEFTRUN_HD int imin(int a, int b) {
  return a < b ? a : b;
}
PEFTRUN_HD int ceil_div(int a, int b) {
  return (a + b - 1) / b;
}
PEFTRUN_HD std::int64_t ceil_div64(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

}  // namespace peftrun
