// Dropout's CUDA kernels as block functors (see kernels/block_context.h) and their launch code,
// shared by dropout_cuda.cu and the CPU emulator tests. The keep draw is dropout.h's
// counter-based dropout_keep, so masks are bit-identical to cpu::dropout_keep_mask.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/block_context.h"
#include "kernels/dropout.h"
#include "kernels/exact_math.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

// keep[i] = dropout_keep(key, i, p).
struct KeepMask {
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<std::uint8_t> keep;
  std::int64_t n;
  std::uint64_t key;
  float p;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      keep[static_cast<std::size_t>(i)] = dropout_keep(key, static_cast<std::uint64_t>(i), p);
    }
  }
};

// x_drop[i] = keep[i] ? x[i] * keep_scale : 0 and, when x_rest is given, x_rest[i] = x[i] -
// x_drop[i]; the product is rounded on its own (mul_rn), never fused into the difference.
template <class St>
struct ApplyDropout {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<const E> x;
  Span<const std::uint8_t> keep;
  Span<E> x_drop;
  Span<E> x_rest;  // empty = not wanted
  std::int64_t n;
  float keep_scale;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    const bool rest = x_rest.ptr != nullptr;
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t j = static_cast<std::size_t>(i);
      const float v = St::to_float(x[j]);
      const float d = keep[j] ? mul_rn(v, keep_scale) : 0.0f;
      x_drop[j] = St::from_float(d);
      if (rest) x_rest[j] = St::from_float(sub_rn(v, d));
    }
  }
};

// g[i] = keep[i] ? g[i] * keep_scale : 0, in place.
template <class St>
struct MaskByKeep {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<E> g;
  Span<const std::uint8_t> keep;
  std::int64_t n;
  float keep_scale;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t j = static_cast<std::size_t>(i);
      g[j] = St::from_float(keep[j] ? mul_rn(St::to_float(g[j]), keep_scale) : 0.0f);
    }
  }
};

template <class Launcher>
void launch_dropout_keep_mask(const Launcher& launch, std::uint64_t key, float p, std::size_t n,
                              std::uint8_t* keep) {
  if (n == 0) return;
  require(keep != nullptr, "dropout_keep_mask", "null tensor");
  launch("dropout_keep_mask", pointwise_geometry(static_cast<std::int64_t>(n)),
         KeepMask{{keep, n}, static_cast<std::int64_t>(n), key, p});
}

template <class Launcher>
void launch_apply_dropout(const Launcher& launch, const void* x, const std::uint8_t* keep,
                          float keep_scale, std::size_t n, DType type, void* x_drop, void* x_rest) {
  if (n == 0) return;
  require(x && keep && x_drop, "apply_dropout", "null tensor");
  with_storage(type, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const ApplyDropout<St> k{
        {static_cast<const E*>(x), n}, {keep, n},
        {static_cast<E*>(x_drop), n},  {static_cast<E*>(x_rest), x_rest ? n : 0},
        static_cast<std::int64_t>(n),  keep_scale};
    launch("apply_dropout", pointwise_geometry(static_cast<std::int64_t>(n)), k);
  });
}

template <class Launcher>
void launch_mask_by_keep(const Launcher& launch, void* g, const std::uint8_t* keep,
                         float keep_scale, std::size_t n, DType type) {
  if (n == 0) return;
  require(g && keep, "mask_by_keep", "null tensor");
  with_storage(type, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const MaskByKeep<St> k{
        {static_cast<E*>(g), n}, {keep, n}, static_cast<std::int64_t>(n), keep_scale};
    launch("mask_by_keep", pointwise_geometry(static_cast<std::int64_t>(n)), k);
  });
}

}  // namespace peftrun::blocks
