// Cross-entropy's CUDA kernels as block functors (see kernels/block_context.h) and their launch
// code, shared by cross_entropy_cuda.cu and the CPU emulator tests.
//
// One block per row of the logits chunk. Pass 1 keeps, per thread, an online (max, sum of
// e^(x - max)) over its strided share of the vocabulary, and a fixed-shape tree merges the
// pairs; pass 2 writes the gradient in place. The row's loss goes to row_loss[row]; a second,
// single-block kernel adds the rows, in a fixed order and in fp64, to *loss_sum, so the loss is
// deterministic. With a softcap, every pass reads the capped logit softcapped(x) (and the
// gradient pass multiplies by its derivative), computed from x where it is read.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/block_context.h"
#include "kernels/cross_entropy.h"
#include "kernels/cross_entropy_math.h"
#include "kernels/softcap_math.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

inline constexpr int kCrossEntropyThreads = 256;  // a power of two (tree merge)

// (m, s) pairs stand for s * e^m; merging rescales both to the larger max. A pair with m = -inf
// holds nothing (s = 0).
PEFTRUN_HD void merge_max_sum(float m2, float s2, float* m, float* s) {
  const float mm = fmax2(*m, m2);
  if (mm == -float_inf()) return;
  *s = *s * std::exp(*m - mm) + s2 * std::exp(m2 - mm);
  *m = mm;
}

template <class St>
struct CrossEntropyRows {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kCrossEntropyThreads;
  Span<const E> logits;              // [n, V]
  Span<const std::int32_t> targets;  // [n]
  Span<E> dlogits;                   // [n, V] (may alias logits); size 0: loss only
  Span<float> row_loss;              // [n]
  int V;
  float grad_scale;
  float softcap;  // softcap_math.h; 0 = none

  struct Shared {
    Span<float> max, sum;  // per-thread (max, sum) pairs of the merge tree
    PEFTRUN_HD static Shared carve(SharedCarver& c) {
      return {c.take<float>(kCrossEntropyThreads), c.take<float>(kCrossEntropyThreads)};
    }
  };

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Shared sh = Shared::carve(carver);
    const Span<float> s_max = sh.max, s_sum = sh.sum;
    const int t = ctx.thread(), nt = ctx.threads();
    const std::size_t r = static_cast<std::size_t>(ctx.block_x());
    const std::size_t base = r * static_cast<std::size_t>(V);
    const bool grad = dlogits.size > 0;
    const std::int32_t target = targets[r];
    // Uniform over the block, so returning early keeps the barriers aligned.
    if (target == cpu::kIgnoreIndex || target < 0 || target >= V) {
      // Ignored rows contribute 0; a target outside [0, V) poisons the row with NaN so the
      // non-finite checks name it (the CPU contract assumes valid targets).
      const float fill = target == cpu::kIgnoreIndex ? 0.0f : float_nan();
      if (t == 0) row_loss[r] = fill;
      if (grad) {
        for (int j = t; j < V; j += nt) dlogits[base + j] = St::from_float(fill);
      }
      return;
    }
    // Read before any thread of the block writes the (possibly aliased) row.
    const float x_target = t == 0 ? softcapped(St::to_float(logits[base + target]), softcap) : 0.0f;
    float m = -float_inf(), s = 0.0f;
    for (int j = t; j < V; j += nt) {
      const float x = softcapped(St::to_float(logits[base + j]), softcap);
      if (x > m) {
        s = s * std::exp(m - x) + 1.0f;
        m = x;
      } else {
        s += std::exp(x - m);
      }
    }
    s_max[static_cast<std::size_t>(t)] = m;
    s_sum[static_cast<std::size_t>(t)] = s;
    ctx.sync();
    for (int half = nt / 2; half > 0; half /= 2) {
      if (t < half) {
        const std::size_t a = static_cast<std::size_t>(t), b = a + half;
        float ma = s_max[a], sa = s_sum[a];
        merge_max_sum(s_max[b], s_sum[b], &ma, &sa);
        s_max[a] = ma;
        s_sum[a] = sa;
      }
      ctx.sync();
    }
    const float row_max = s_max[0], sum_exp = s_sum[0];
    if (t == 0) row_loss[r] = ce_row_loss(row_max, sum_exp, x_target);
    if (!grad) return;
    const float k = grad_scale / sum_exp;
    for (int j = t; j < V; j += nt) {
      const float z = softcapped(St::to_float(logits[base + j]), softcap);
      float g = ce_softmax_grad(std::exp(z - row_max), k);
      if (j == target) g = ce_target_grad(g, grad_scale);
      dlogits[base + j] = St::from_float(g * softcapped_grad(z, softcap));
    }
  }
};

// *loss_sum += sum of row_loss[0, n) in fp64, one block, fixed order.
struct SumRowLosses {
  static constexpr int kMaxThreads = kCrossEntropyThreads;
  struct Shared {
    Span<double> scratch;  // block_sum
    PEFTRUN_HD static Shared carve(SharedCarver& c) {
      return {c.take<double>(kCrossEntropyThreads)};
    }
  };
  Span<const float> row_loss;
  Span<double> loss_sum;  // [1]

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Span<double> scratch = Shared::carve(carver).scratch;
    double part = 0.0;
    for (std::size_t i = static_cast<std::size_t>(ctx.thread()); i < row_loss.size;
         i += static_cast<std::size_t>(ctx.threads())) {
      part += static_cast<double>(row_loss[i]);
    }
    const double total = block_sum(ctx, scratch, part);
    if (ctx.thread() == 0) loss_sum[0] += total;
  }
};

template <class Launcher>
void launch_cross_entropy_forward_backward(const Launcher& launch, const void* logits,
                                           const std::int32_t* targets, void* dlogits,
                                           float* row_loss, double* loss_sum, int n, int V,
                                           float grad_scale, float softcap, DType dtype) {
  const char* op = "cross_entropy_forward_backward";
  require(n >= 0 && V >= 1, op, "n must be >= 0 and V >= 1");
  require(std::isfinite(softcap) && softcap >= 0.0f, op,
          "softcap must be finite and >= 0 (0 = none)");
  if (n == 0) return;
  require(logits && targets && row_loss, op, "null tensor");
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const std::size_t elems = static_cast<std::size_t>(n) * V;
    const CrossEntropyRows<St> k{{static_cast<const E*>(logits), elems},
                                 {targets, static_cast<std::size_t>(n)},
                                 {static_cast<E*>(dlogits), dlogits ? elems : 0},
                                 {row_loss, static_cast<std::size_t>(n)},
                                 V,
                                 grad_scale,
                                 softcap};
    LaunchGeometry g;
    g.grid_x = n;
    g.threads = kCrossEntropyThreads;
    g.smem_bytes = shared_bytes<typename CrossEntropyRows<St>::Shared>();
    launch(op, g, k);
  });
  if (loss_sum) {
    const SumRowLosses k{{row_loss, static_cast<std::size_t>(n)}, {loss_sum, 1}};
    LaunchGeometry g;
    g.threads = kCrossEntropyThreads;
    g.smem_bytes = shared_bytes<SumRowLosses::Shared>();
    launch("cross_entropy_sum_rows", g, k);
  }
}

}  // namespace peftrun::blocks
