// Warp-level 16 x 16 x 16 matrix products on tensor cores (CUDA's WMMA), behind the same seam as
// kernels/block_context.h so that a kernel using them also runs in the CPU block emulator.
//
// A warp (32 consecutive threads of a block) holds each fragment collectively: every thread of
// the warp must make the same calls, with the same arguments, at the same point (no call inside
// a branch that splits a warp). Fragments are only loaded from and stored to shared memory and
// multiplied; their elements are never touched one by one (CUDA leaves their distribution over
// the threads unspecified), which is what makes the host emulation exact in meaning: there each
// thread holds the whole 16 x 16 tile, as fp32, and computes the full product itself.
//
//   FragA<St>    16 x 16 tile a(i, k) of 16-bit elements (St = F16Storage or BF16Storage)
//   FragB<St>    16 x 16 tile b(k, j)
//   FragAcc      16 x 16 fp32 accumulator c(i, j)
//   load_a(a, s, off, ld)       a(i, k) = s[off + i ld + k]       (row-major)
//   load_b_rows(b, s, off, ld)  b(k, j) = s[off + k ld + j]       (row-major: V [key, d])
//   load_b_cols(b, s, off, ld)  b(k, j) = s[off + j ld + k]       (column-major: K^T from K [key,
//   d]) load_acc / store_acc        c(i, j) = s[off + i ld + j]       (fp32, row-major) mma(d, a,
//   b, c)             d = a b + c, products accumulated in fp32
//
// WMMA's rules, checked by the emulator: the tile's first element 32-byte aligned, ld a
// multiple of 16 bytes. The accumulation order inside a tensor-core product is the hardware's,
// so results match the CPU to fp32 rounding, not bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "kernels/block_context.h"
#include "kernels/storage.h"

#if defined(__CUDA_ARCH__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#endif

namespace peftrun::tc {

inline constexpr int kTile = 16;   // m = n = k of every product
inline constexpr int kWarp = 32;   // threads per warp
inline constexpr int kAlign = 32;  // bytes: WMMA's pointer alignment

#if defined(__CUDA_ARCH__)

template <class St>
struct DeviceElem;
template <>
struct DeviceElem<F16Storage> {
  using type = __half;
};
template <>
struct DeviceElem<BF16Storage> {
  using type = __nv_bfloat16;
};

namespace wmma = nvcuda::wmma;
template <class St>
using FragA =
    wmma::fragment<wmma::matrix_a, 16, 16, 16, typename DeviceElem<St>::type, wmma::row_major>;
template <class St>
using FragBRows =
    wmma::fragment<wmma::matrix_b, 16, 16, 16, typename DeviceElem<St>::type, wmma::row_major>;
template <class St>
using FragBCols =
    wmma::fragment<wmma::matrix_b, 16, 16, 16, typename DeviceElem<St>::type, wmma::col_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

template <class St>
__device__ __forceinline__ const typename DeviceElem<St>::type* device_ptr(
    Span<const typename St::Elem> s, std::size_t off) {
  return reinterpret_cast<const typename DeviceElem<St>::type*>(s.ptr + off);
}

__device__ __forceinline__ void fill(FragAcc& c, float v) {
  wmma::fill_fragment(c, v);
}
template <class St>
__device__ __forceinline__ void load_a(FragA<St>& a, Span<const typename St::Elem> s,
                                       std::size_t off, int ld) {
  wmma::load_matrix_sync(a, device_ptr<St>(s, off), static_cast<unsigned>(ld));
}
template <class St>
__device__ __forceinline__ void load_b_rows(FragBRows<St>& b, Span<const typename St::Elem> s,
                                            std::size_t off, int ld) {
  wmma::load_matrix_sync(b, device_ptr<St>(s, off), static_cast<unsigned>(ld));
}
template <class St>
__device__ __forceinline__ void load_b_cols(FragBCols<St>& b, Span<const typename St::Elem> s,
                                            std::size_t off, int ld) {
  wmma::load_matrix_sync(b, device_ptr<St>(s, off), static_cast<unsigned>(ld));
}
__device__ __forceinline__ void load_acc(FragAcc& c, Span<const float> s, std::size_t off, int ld) {
  wmma::load_matrix_sync(c, s.ptr + off, static_cast<unsigned>(ld), wmma::mem_row_major);
}
template <class Ctx>
__device__ __forceinline__ void store_acc(const Ctx&, Span<float> s, std::size_t off, int ld,
                                          const FragAcc& c) {
  wmma::store_matrix_sync(s.ptr + off, c, static_cast<unsigned>(ld), wmma::mem_row_major);
}
template <class A, class B>
__device__ __forceinline__ void mma(FragAcc& d, const A& a, const B& b, const FragAcc& c) {
  wmma::mma_sync(d, a, b, c);
}

#else  // the host: the CPU block emulator

struct Tile16 {
  float v[kTile * kTile];  // element (row, col) at row * 16 + col
};
template <class St>
struct FragA : Tile16 {};
template <class St>
struct FragBRows : Tile16 {};
template <class St>
struct FragBCols : Tile16 {};
struct FragAcc : Tile16 {};

// WMMA's alignment rules; a violation is reported like an out-of-bounds access.
template <typename T>
inline void check_wmma_access(const T* base, std::size_t off, int ld) {
  const auto addr = reinterpret_cast<std::uintptr_t>(base + off);
  if (addr % kAlign != 0 || (static_cast<std::size_t>(ld) * sizeof(T)) % 16 != 0) {
    if (emu::g_out_of_bounds.empty()) {
      emu::g_out_of_bounds = "wmma tile at element " + std::to_string(off) + " with ld " +
                             std::to_string(ld) +
                             ": needs a 32-byte aligned start and ld a multiple of 16 bytes";
    }
  }
}

inline void fill(FragAcc& c, float v) {
  for (float& x : c.v) x = v;
}
// dst(r, c) = s[off + r * row_step + c * col_step], read through the bounds-checked Span.
template <class St, typename E>
inline void load_tile(Tile16& dst, Span<const E> s, std::size_t off, std::size_t row_step,
                      std::size_t col_step) {
  for (int r = 0; r < kTile; ++r) {
    for (int c = 0; c < kTile; ++c) {
      const E e = s[off + static_cast<std::size_t>(r) * row_step + c * col_step];
      if constexpr (std::is_same_v<E, float>) {
        dst.v[r * kTile + c] = e;
      } else {
        dst.v[r * kTile + c] = St::to_float(e);
      }
    }
  }
}
template <class St>
inline void load_a(FragA<St>& a, Span<const typename St::Elem> s, std::size_t off, int ld) {
  check_wmma_access(s.ptr, off, ld);
  load_tile<St>(a, s, off, static_cast<std::size_t>(ld), 1);  // a(i, k): i rows
}
template <class St>
inline void load_b_rows(FragBRows<St>& b, Span<const typename St::Elem> s, std::size_t off,
                        int ld) {
  check_wmma_access(s.ptr, off, ld);
  load_tile<St>(b, s, off, static_cast<std::size_t>(ld), 1);  // b(k, j): k rows
}
template <class St>
inline void load_b_cols(FragBCols<St>& b, Span<const typename St::Elem> s, std::size_t off,
                        int ld) {
  check_wmma_access(s.ptr, off, ld);
  load_tile<St>(b, s, off, 1, static_cast<std::size_t>(ld));  // b(k, j) at j * ld + k
}
inline void load_acc(FragAcc& c, Span<const float> s, std::size_t off, int ld) {
  check_wmma_access(s.ptr, off, ld);
  load_tile<F32Storage>(c, s, off, static_cast<std::size_t>(ld), 1);
}
// The warp stores once: only lane 0 writes. The emulator runs a warp's threads one after another
// between barriers, so if every lane stored, a lane that loads a tile after another lane stored
// it (O += P V read-modify-writes O) would see the update twice. On the device the warp's
// loads all happen before its store; letting one lane store reproduces that: the other lanes'
// copies are never written back.
template <class Ctx>
inline void store_acc(const Ctx& ctx, Span<float> s, std::size_t off, int ld, const FragAcc& c) {
  check_wmma_access(s.ptr, off, ld);
  if (ctx.thread() % kWarp != 0) return;
  for (int r = 0; r < kTile; ++r) {
    for (int col = 0; col < kTile; ++col) {
      s[off + static_cast<std::size_t>(r) * ld + col] = c.v[r * kTile + col];
    }
  }
}
// d = a b + c in fp32; d may be c.
inline void mma(FragAcc& d, const Tile16& a, const Tile16& b, const FragAcc& c) {
  Tile16 out;
  for (int i = 0; i < kTile; ++i) {
    for (int j = 0; j < kTile; ++j) {
      float acc = c.v[i * kTile + j];
      for (int k = 0; k < kTile; ++k) acc += a.v[i * kTile + k] * b.v[k * kTile + j];
      out.v[i * kTile + j] = acc;
    }
  }
  static_cast<Tile16&>(d) = out;
}

#endif

}  // namespace peftrun::tc
