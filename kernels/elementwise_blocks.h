// The element-wise kernels of kernels/elementwise.h as block functors (see
// kernels/block_context.h) and their launch code, shared by elementwise_cuda.cu and the CPU
// emulator tests.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/block_context.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

// y[i] = y[i] + x[i], in fp32, rounded once to the storage type.
template <class St>
struct AddInPlace {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<E> y;
  Span<const E> x;
  std::int64_t n;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t j = static_cast<std::size_t>(i);
      y[j] = St::from_float(St::to_float(y[j]) + St::to_float(x[j]));
    }
  }
};

// y[i] = alpha x[i], in fp32, rounded once to the storage type (y and x may be the same).
template <class St>
struct Scale {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<E> y;
  Span<const E> x;
  float alpha;
  std::int64_t n;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t j = static_cast<std::size_t>(i);
      y[j] = St::from_float(alpha * St::to_float(x[j]));
    }
  }
};

// One thread per (group, entry): data[offsets[g] + k] = 0 where the mask says pruned.
struct ZeroMaskedRows {
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<float> data;
  Span<const std::uint64_t> offsets;
  Span<const float> mask;
  std::int64_t groups, per_group;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    const std::int64_t n = groups * per_group;
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t t = static_cast<std::size_t>(i);
      if (mask[t] == 0.0f) {
        const std::size_t g = static_cast<std::size_t>(i / per_group);
        const std::size_t k = static_cast<std::size_t>(i % per_group);
        data[static_cast<std::size_t>(offsets[g]) + k] = 0.0f;
      }
    }
  }
};

template <class Launcher>
void launch_add_inplace(const Launcher& launch, void* y, const void* x, std::size_t n,
                        DType dtype) {
  if (n == 0) return;
  require(y && x, "add_inplace", "null tensor");
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const AddInPlace<St> k{
        {static_cast<E*>(y), n}, {static_cast<const E*>(x), n}, static_cast<std::int64_t>(n)};
    launch("add_inplace", pointwise_geometry(static_cast<std::int64_t>(n)), k);
  });
}

template <class Launcher>
void launch_scale(const Launcher& launch, void* y, const void* x, float alpha, std::size_t n,
                  DType dtype) {
  if (n == 0) return;
  require(y && x, "scale", "null tensor");
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const Scale<St> k{{static_cast<E*>(y), n},
                      {static_cast<const E*>(x), n},
                      alpha,
                      static_cast<std::int64_t>(n)};
    launch("scale", pointwise_geometry(static_cast<std::int64_t>(n)), k);
  });
}

// data_elems: the flat buffer's length (bounds for the emulator; the device does not check).
template <class Launcher>
void launch_zero_masked_rows(const Launcher& launch, float* data, std::size_t data_elems,
                             const std::uint64_t* offsets, const float* mask, int groups,
                             int per_group) {
  if (groups <= 0 || per_group <= 0) return;
  require(data && offsets && mask, "zero_masked_rows", "null tensor");
  const std::size_t g = static_cast<std::size_t>(groups), r = static_cast<std::size_t>(per_group);
  const ZeroMaskedRows k{{data, data_elems}, {offsets, g}, {mask, g * r}, groups, per_group};
  launch("zero_masked_rows", pointwise_geometry(static_cast<std::int64_t>(g * r)), k);
}

}  // namespace peftrun::blocks
