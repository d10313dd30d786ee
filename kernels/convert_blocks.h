// The storage conversions of kernels/convert.h as block functors (see kernels/block_context.h)
// and their launch code, shared by convert_cuda.cu and the CPU emulator tests. Every value goes
// through fp32 and is rounded to nearest even by the destination's storage policy, as the host
// conversions of half.h / dtype.h do.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/block_context.h"
#include "kernels/exact_math.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

// dst[i] = src[i] through fp32.
template <class Src, class Dst>
struct Convert {
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<const typename Src::Elem> src;
  Span<typename Dst::Elem> dst;
  std::int64_t n;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t j = static_cast<std::size_t>(i);
      dst[j] = Dst::from_float(Src::to_float(src[j]));
    }
  }
};

// dst[e] = round(src[e] * row_scale[e / cols]) (no row_scale: a plain cast), one fp32 product.
template <class Dst>
struct CastRowsScaled {
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<const float> src;
  Span<const float> row_scale;  // [rows], or empty
  Span<typename Dst::Elem> dst;
  std::int64_t n;
  int cols;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    const bool scaled = row_scale.ptr != nullptr;
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t j = static_cast<std::size_t>(i);
      const float v =
          scaled ? mul_rn(src[j], row_scale[static_cast<std::size_t>(i / cols)]) : src[j];
      dst[j] = Dst::from_float(v);
    }
  }
};

template <class Launcher>
void launch_convert(const Launcher& launch, const void* src, DType src_type, void* dst,
                    DType dst_type, std::size_t n) {
  if (n == 0) return;
  require(src && dst, "convert", "null tensor");
  with_storage(src_type, [&](auto s) {
    using Src = decltype(s);
    with_storage(dst_type, [&](auto d) {
      using Dst = decltype(d);
      const Convert<Src, Dst> k{{static_cast<const typename Src::Elem*>(src), n},
                                {static_cast<typename Dst::Elem*>(dst), n},
                                static_cast<std::int64_t>(n)};
      launch("convert", pointwise_geometry(static_cast<std::int64_t>(n)), k);
    });
  });
}

template <class Launcher>
void launch_cast_rows_scaled(const Launcher& launch, const float* src, const float* row_scale,
                             int rows, int cols, DType dst_type, void* dst) {
  if (rows <= 0 || cols <= 0) return;
  require(src && dst, "cast_rows_scaled", "null tensor");
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
  with_storage(dst_type, [&](auto d) {
    using Dst = decltype(d);
    const CastRowsScaled<Dst> k{{src, n},
                                {row_scale, row_scale ? static_cast<std::size_t>(rows) : 0},
                                {static_cast<typename Dst::Elem*>(dst), n},
                                static_cast<std::int64_t>(n),
                                cols};
    launch("cast_rows_scaled", pointwise_geometry(static_cast<std::int64_t>(n)), k);
  });
}

}  // namespace peftrun::blocks
