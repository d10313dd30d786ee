// The embedding lookup's CUDA kernel as a block functor (see kernels/block_context.h) and its
// launch code, shared by embedding_cuda.cu and the CPU emulator tests.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/block_context.h"
#include "kernels/half.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

// out[i, d] = table[tokens[i], d] converted from fp16 to the activation dtype (then times scale,
// rounded to that dtype again, when scale != 1); one thread per
// output element, grid-stride. A token id outside [0, vocab) (which the data loader should have
// refused) yields a NaN row, so --debug's non-finite check names it instead of reading out of
// bounds.
template <class St>
struct EmbeddingForward {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<const std::int32_t> tokens;  // [n]
  Span<const half_bits> table;      // [vocab, dim]
  Span<E> out;                      // [n, dim]
  int n, dim, vocab;
  float scale;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    const std::int64_t total = static_cast<std::int64_t>(n) * dim;
    for (std::int64_t e = pointwise_first(ctx); e < total; e += pointwise_stride(ctx)) {
      const std::int32_t tok = tokens[static_cast<std::size_t>(e / dim)];
      const int d = static_cast<int>(e % dim);
      const float v = (tok >= 0 && tok < vocab)
                          ? F16Storage::to_float(table[static_cast<std::size_t>(tok) * dim + d])
                          : float_nan();
      const E row_value = St::from_float(v);
      out[static_cast<std::size_t>(e)] =
          scale == 1.0f ? row_value : St::from_float(St::to_float(row_value) * scale);
    }
  }
};

template <class Launcher>
void launch_embedding_forward(const Launcher& launch, const std::int32_t* tokens,
                              const half_bits* table, void* out, int n, int dim, int vocab,
                              float scale, DType out_dtype) {
  require(n >= 0 && dim >= 1 && vocab >= 1, "embedding_forward",
          "n must be >= 0, dim and vocab >= 1");
  if (n == 0) return;
  require(tokens && table && out, "embedding_forward", "null tensor");
  with_storage(out_dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const EmbeddingForward<St> k{{tokens, static_cast<std::size_t>(n)},
                                 {table, static_cast<std::size_t>(vocab) * dim},
                                 {static_cast<E*>(out), static_cast<std::size_t>(n) * dim},
                                 n,
                                 dim,
                                 vocab,
                                 scale};
    launch("embedding_forward", pointwise_geometry(static_cast<std::int64_t>(n) * dim), k);
  });
}

}  // namespace peftrun::blocks
