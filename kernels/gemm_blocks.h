// The two small kernels around cuda::gemm as block functors (see kernels/block_context.h) and
// their launch code, shared by gemm_cuda.cu and the CPU emulator tests:
//   empty_product   K = 0: D = beta C + bias (C not read when beta = 0)
//   scale_columns   D[i, j] = Z[i, j] * scale[j], Z the fp32 product (DoRA's fallback where no
//                   matmul takes an alpha vector)
// Both walk the [rows, cols] block of a row-major matrix with row stride ldd >= cols
// element-wise (grid-stride); the padding columns [cols, ldd) are never touched.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/block_context.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

// Elements a [rows, cols] block with row stride ldd spans, from its first element to its last.
inline std::size_t strided_extent(int rows, int cols, int ldd) {
  if (rows <= 0 || cols <= 0) return 0;
  return static_cast<std::size_t>(rows - 1) * static_cast<std::size_t>(ldd) +
         static_cast<std::size_t>(cols);
}

// D[i, j] = (beta == 0 ? 0 : beta C[i, j]) + bias[j], in fp32, rounded once to the storage type.
// C may be D itself.
template <class St>
struct EmptyProduct {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<E> D;           // [rows, ldd]
  Span<const E> C;     // D's layout
  Span<const E> bias;  // [cols], or empty
  std::int64_t n;      // rows * cols
  int cols, ldd;
  float beta;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    const bool with_bias = bias.ptr != nullptr;
    for (std::int64_t e = pointwise_first(ctx); e < n; e += pointwise_stride(ctx)) {
      const std::size_t i = static_cast<std::size_t>(e / cols);
      const std::size_t j = static_cast<std::size_t>(e % cols);
      const std::size_t at = i * static_cast<std::size_t>(ldd) + j;
      float v = beta == 0.0f ? 0.0f : beta * St::to_float(C[at]);
      if (with_bias) v += St::to_float(bias[j]);
      D[at] = St::from_float(v);
    }
  }
};

// D[i, j] = Z[i, j] * scale[j], in fp32, rounded once to the storage type (Z fp32, the same
// strides as D).
template <class St>
struct ScaleColumns {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<const float> Z;      // [rows, ldd]
  Span<E> D;                // [rows, ldd]
  Span<const float> scale;  // [cols]
  std::int64_t n;           // rows * cols
  int cols, ldd;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    for (std::int64_t e = pointwise_first(ctx); e < n; e += pointwise_stride(ctx)) {
      const std::size_t i = static_cast<std::size_t>(e / cols);
      const std::size_t j = static_cast<std::size_t>(e % cols);
      const std::size_t at = i * static_cast<std::size_t>(ldd) + j;
      D[at] = St::from_float(Z[at] * scale[j]);
    }
  }
};

// D = beta C + bias over [rows, cols] (row stride ldd, d_type storage); C nullptr = D (in
// place); bias [cols] of d_type or nullptr.
template <class Launcher>
void launch_empty_product(const Launcher& launch, void* D, const void* C, DType d_type, int rows,
                          int cols, int ldd, float beta, const void* bias) {
  if (rows <= 0 || cols <= 0) return;
  require(ldd >= cols, "gemm_empty_product", "ldd shorter than a row");
  require(D != nullptr, "gemm_empty_product", "D is null");
  with_storage(d_type, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const std::size_t extent = strided_extent(rows, cols, ldd);
    const std::int64_t n = static_cast<std::int64_t>(rows) * cols;
    const E* c = static_cast<const E*>(C ? C : D);
    const E* b = static_cast<const E*>(bias);
    const EmptyProduct<St> k{{static_cast<E*>(D), extent},
                             {c, extent},
                             {b, b ? static_cast<std::size_t>(cols) : 0},
                             n,
                             cols,
                             ldd,
                             beta};
    launch("gemm_empty_product", pointwise_geometry(n), k);
  });
}

// D[i, j] = Z[i, j] * scale[j] for i < rows, j < cols (row stride ldd for both, Z fp32, D
// d_type storage, scale fp32 [cols]).
template <class Launcher>
void launch_scale_columns(const Launcher& launch, const float* Z, void* D, DType d_type, int rows,
                          int cols, int ldd, const float* scale) {
  if (rows <= 0 || cols <= 0) return;
  require(ldd >= cols, "scale_columns", "ldd shorter than a row");
  require(Z && D && scale, "scale_columns", "null tensor");
  with_storage(d_type, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const std::int64_t n = static_cast<std::int64_t>(rows) * cols;
    const std::size_t extent = strided_extent(rows, cols, ldd);
    const ScaleColumns<St> k{
        {Z, extent}, {static_cast<E*>(D), extent}, {scale, static_cast<std::size_t>(cols)}, n, cols,
        ldd};
    launch("scale_columns", pointwise_geometry(n), k);
  });
}

}  // namespace peftrun::blocks
