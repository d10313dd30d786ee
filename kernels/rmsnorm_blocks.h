// RMSNorm's CUDA kernels as block functors (see kernels/block_context.h) and their launch code,
// shared by rmsnorm_cuda.cu and the CPU emulator tests. One block per row; the row's sums are
// block-wide tree reductions in fp32; the formulas are rmsnorm_math.h's.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/block_context.h"
#include "kernels/half.h"
#include "kernels/rmsnorm_math.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

inline constexpr int kRmsNormThreads = 256;  // a power of two (block_sum)

// Shared memory of both kernels: the block_sum scratch.
struct RmsNormShared {
  Span<float> scratch;
  PEFTRUN_HD static RmsNormShared carve(SharedCarver& c) {
    return {c.take<float>(kRmsNormThreads)};
  }
};

inline LaunchGeometry rmsnorm_geometry(int rows) {
  LaunchGeometry g;
  g.grid_x = rows;
  g.threads = kRmsNormThreads;
  g.smem_bytes = shared_bytes<RmsNormShared>();
  return g;
}

// y[r, :] = x[r, :] * rstd[r] * (w_offset + w),  rstd[r] = 1 / sqrt(mean(x[r, :]^2) + eps).
template <class St>
struct RmsNormForward {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kRmsNormThreads;
  Span<const E> x;          // [rows, dim]
  Span<const half_bits> w;  // [dim], frozen fp16
  Span<E> y;                // [rows, dim]
  Span<float> rstd;         // [rows]
  int dim;
  float eps;
  float w_offset;  // 0, or 1 for Gemma's (1 + w)

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Span<float> scratch = RmsNormShared::carve(carver).scratch;
    const std::size_t row = static_cast<std::size_t>(ctx.block_x()) * dim;
    float ss = 0.0f;
    for (int i = ctx.thread(); i < dim; i += ctx.threads()) {
      const float v = St::to_float(x[row + i]);
      ss += v * v;
    }
    const float rs = rmsnorm_rstd(block_sum(ctx, scratch, ss), dim, eps);
    if (ctx.thread() == 0) rstd[static_cast<std::size_t>(ctx.block_x())] = rs;
    for (int i = ctx.thread(); i < dim; i += ctx.threads()) {
      const float wi =
          rmsnorm_weight(w_offset, F16Storage::to_float(w[static_cast<std::size_t>(i)]));
      y[row + i] = St::from_float(rmsnorm_scale(St::to_float(x[row + i]), rs, wi));
    }
  }
};

// dx[r, :] = rstd dy w - (sum(dy w x) / dim * rstd^3) x, w = w_offset + the weight. Every element
// of a row is read before the block's barrier and written after it by the thread that read it, so
// dx may alias dy.
template <class St>
struct RmsNormBackward {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kRmsNormThreads;
  Span<const E> dy, x;      // [rows, dim]
  Span<const half_bits> w;  // [dim]
  Span<const float> rstd;   // [rows]
  Span<E> dx;               // [rows, dim]
  int dim;
  float w_offset;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Span<float> scratch = RmsNormShared::carve(carver).scratch;
    const std::size_t row = static_cast<std::size_t>(ctx.block_x()) * dim;
    float dot = 0.0f;
    for (int i = ctx.thread(); i < dim; i += ctx.threads()) {
      const float wi =
          rmsnorm_weight(w_offset, F16Storage::to_float(w[static_cast<std::size_t>(i)]));
      dot += St::to_float(dy[row + i]) * wi * St::to_float(x[row + i]);
    }
    const float rs = rstd[static_cast<std::size_t>(ctx.block_x())];
    const float c = rmsnorm_dx_coef(block_sum(ctx, scratch, dot), dim, rs);
    for (int i = ctx.thread(); i < dim; i += ctx.threads()) {
      const float wi =
          rmsnorm_weight(w_offset, F16Storage::to_float(w[static_cast<std::size_t>(i)]));
      dx[row + i] = St::from_float(
          rmsnorm_dx(rs, St::to_float(dy[row + i]), wi, c, St::to_float(x[row + i])));
    }
  }
};

inline void check_rmsnorm_shape(const char* op, int rows, int dim) {
  require(rows >= 0 && dim >= 1, op, "rows must be >= 0 and dim >= 1");
}

template <class Launcher>
void launch_rmsnorm_forward(const Launcher& launch, const void* x, const half_bits* weight,
                            float weight_offset, void* y, float* rstd, int rows, int dim, float eps,
                            DType dtype) {
  check_rmsnorm_shape("rmsnorm_forward", rows, dim);
  if (rows == 0) return;
  require(x && weight && y && rstd, "rmsnorm_forward", "null tensor");
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const std::size_t n = static_cast<std::size_t>(rows) * dim;
    const RmsNormForward<St> k{{static_cast<const E*>(x), n},
                               {weight, static_cast<std::size_t>(dim)},
                               {static_cast<E*>(y), n},
                               {rstd, static_cast<std::size_t>(rows)},
                               dim,
                               eps,
                               weight_offset};
    launch("rmsnorm_forward", rmsnorm_geometry(rows), k);
  });
}

template <class Launcher>
void launch_rmsnorm_backward(const Launcher& launch, const void* dy, const void* x,
                             const half_bits* weight, float weight_offset, const float* rstd,
                             void* dx, int rows, int dim, DType dtype) {
  check_rmsnorm_shape("rmsnorm_backward", rows, dim);
  if (rows == 0) return;
  require(dy && x && weight && rstd && dx, "rmsnorm_backward", "null tensor");
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const std::size_t n = static_cast<std::size_t>(rows) * dim;
    const RmsNormBackward<St> k{{static_cast<const E*>(dy), n},
                                {static_cast<const E*>(x), n},
                                {weight, static_cast<std::size_t>(dim)},
                                {rstd, static_cast<std::size_t>(rows)},
                                {static_cast<E*>(dx), n},
                                dim,
                                weight_offset};
    launch("rmsnorm_backward", rmsnorm_geometry(rows), k);
  });
}

}  // namespace peftrun::blocks
