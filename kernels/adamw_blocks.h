// AdamW and the gradient-norm reduction over the flat fp32 buffers as block functors (see
// kernels/block_context.h) and their launch code, shared by adamw_cuda.cu and the CPU emulator
// tests. adamw_element is the CPU's formula with individually rounded operations, so the update
// is bit-identical to cpu::adamw_step.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/adamw_math.h"
#include "kernels/block_context.h"

namespace peftrun::blocks {

inline constexpr int kSumSquaresThreads = 256;  // a power of two (block_sum)
inline constexpr std::int64_t kMaxSumSquaresBlocks = 1024;

// Blocks of the first reduction pass over n elements: one double partial each. The grid is a
// function of n only, so the summation order (and the result) is fixed for a given n.
inline int sum_squares_blocks(std::size_t n) {
  const std::int64_t b =
      (static_cast<std::int64_t>(n) + kSumSquaresThreads - 1) / kSumSquaresThreads;
  return static_cast<int>(std::clamp<std::int64_t>(b, 1, kMaxSumSquaresBlocks));
}

// params, m, v updated in place from grads, element by element.
struct AdamWStep {
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<float> params;
  Span<const float> grads;
  Span<float> m, v;
  std::int64_t n;
  AdamWScalars s;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t j = static_cast<std::size_t>(i);
      adamw_element(params[j], grads[j], m[j], v[j], s);
    }
  }
};

struct SumSquaresShared {
  Span<double> scratch;
  PEFTRUN_HD static SumSquaresShared carve(SharedCarver& c) {
    return {c.take<double>(kSumSquaresThreads)};
  }
};

// partial[block] = sum of x[i]^2 over the block's grid-stride indices, in double (a float's
// square is exact in a double), tree-summed over the block.
struct SumSquaresPartial {
  static constexpr int kMaxThreads = kSumSquaresThreads;
  Span<const float> x;
  Span<double> partial;  // [grid_x]
  std::int64_t n;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Span<double> scratch = SumSquaresShared::carve(carver).scratch;
    double acc = 0.0;
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const double d = x[static_cast<std::size_t>(i)];
      acc += d * d;
    }
    const double total = block_sum(ctx, scratch, acc);
    if (ctx.thread() == 0) partial[static_cast<std::size_t>(ctx.block_x())] = total;
  }
};

// *result = the partials summed by one block in a fixed order.
struct SumPartials {
  static constexpr int kMaxThreads = kSumSquaresThreads;
  Span<const double> partial;
  Span<double> result;  // [1]
  int count;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Span<double> scratch = SumSquaresShared::carve(carver).scratch;
    double acc = 0.0;
    for (int i = ctx.thread(); i < count; i += ctx.threads()) {
      acc += partial[static_cast<std::size_t>(i)];
    }
    const double total = block_sum(ctx, scratch, acc);
    if (ctx.thread() == 0) result[0] = total;
  }
};

template <class Launcher>
void launch_adamw_step(const Launcher& launch, float* params, const float* grads, float* m,
                       float* v, std::size_t n, const AdamWScalars& s) {
  if (n == 0) return;
  require(params && grads && m && v, "adamw_step", "null tensor");
  const AdamWStep k{{params, n}, {grads, n}, {m, n}, {v, n}, static_cast<std::int64_t>(n), s};
  launch("adamw_step", pointwise_geometry(static_cast<std::int64_t>(n)), k);
}

// work: sum_squares_blocks(n) doubles. n = 0 gives *result = 0.
template <class Launcher>
void launch_sum_squares(const Launcher& launch, const float* x, std::size_t n, double* result,
                        double* work) {
  require(result && work && (x || n == 0), "sum_squares", "null tensor");
  const int blocks = sum_squares_blocks(n);
  LaunchGeometry g;
  g.grid_x = blocks;
  g.threads = kSumSquaresThreads;
  g.smem_bytes = shared_bytes<SumSquaresShared>();
  const std::size_t nb = static_cast<std::size_t>(blocks);
  launch("sum_squares_partial", g,
         SumSquaresPartial{{x, n}, {work, nb}, static_cast<std::int64_t>(n)});
  g.grid_x = 1;
  launch("sum_squares_total", g, SumPartials{{work, nb}, {result, 1}, blocks});
}

}  // namespace peftrun::blocks
