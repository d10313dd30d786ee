// RoPE's CUDA kernel as a block functor (see kernels/block_context.h) and its launch code, shared
// by rope_cuda.cu and the CPU emulator tests.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/block_context.h"
#include "kernels/rope.h"
#include "kernels/rope_math.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

// One thread per rotated pair (token t, head h, i < rotary_dim / 2), grid-stride:
//   x[t, h, i], x[t, h, i + half] <- rotation by angle pos[t] * inv_freq[i] (sign -1: inverse);
// channels [rotary_dim, head_dim) are left alone.
template <class St>
struct RopeRotate {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<E> x;                     // [tokens, n_heads, head_dim], rotated in place
  Span<const std::int32_t> pos;  // [tokens]
  int tokens, n_heads, head_dim, rotary_dim;
  float sign;
  float scale;  // multiplies cos and sin
  float inv_freq[kRopeMaxHeadDim / 2];

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    const int half = rotary_dim / 2;
    const std::int64_t per_token = static_cast<std::int64_t>(n_heads) * half;
    const std::int64_t pairs = per_token * tokens;
    for (std::int64_t p = pointwise_first(ctx); p < pairs; p += pointwise_stride(ctx)) {
      const std::int64_t t = p / per_token;
      const int h = static_cast<int>((p % per_token) / half);
      const int i = static_cast<int>(p % half);
      // Angle, cos and sin in float, as the CPU (and HF) compute them.
      const float angle = static_cast<float>(pos[static_cast<std::size_t>(t)]) * inv_freq[i];
      const float c = std::cos(angle) * scale;
      const float s = sign * (std::sin(angle) * scale);
      const std::size_t a = static_cast<std::size_t>((t * n_heads + h) * head_dim + i);
      float ra = 0.0f, rb = 0.0f;
      rope_rotate_pair(St::to_float(x[a]), St::to_float(x[a + half]), c, s, &ra, &rb);
      x[a] = St::from_float(ra);
      x[a + half] = St::from_float(rb);
    }
  }
};

template <class Launcher>
void launch_rope(const Launcher& launch, const char* op, void* x, const std::int32_t* pos,
                 int tokens, int n_heads, int head_dim, int rotary_dim, const float* inv_freq,
                 float scale, float sign, DType dtype) {
  require(tokens >= 0 && n_heads >= 1, op, "tokens must be >= 0 and n_heads >= 1");
  require(head_dim >= 2 && head_dim <= kRopeMaxHeadDim, op,
          "head_dim " + std::to_string(head_dim) + " must be in [2, " +
              std::to_string(kRopeMaxHeadDim) + "]");
  require(rotary_dim >= 2 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, op,
          "rotary_dim " + std::to_string(rotary_dim) + " must be even and in [2, head_dim " +
              std::to_string(head_dim) + "]");
  if (tokens == 0) return;
  require(x && pos && inv_freq, op, "null tensor");
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const std::size_t n = static_cast<std::size_t>(tokens) * n_heads * head_dim;
    RopeRotate<St> k{{static_cast<E*>(x), n},
                     {pos, static_cast<std::size_t>(tokens)},
                     tokens,
                     n_heads,
                     head_dim,
                     rotary_dim,
                     sign,
                     scale,
                     {}};
    for (int i = 0; i < rotary_dim / 2; ++i) k.inv_freq[i] = inv_freq[i];
    launch(op, pointwise_geometry(static_cast<std::int64_t>(tokens) * n_heads * (rotary_dim / 2)),
           k);
  });
}

template <class Launcher>
void launch_rope_forward(const Launcher& launch, void* x, const std::int32_t* pos, int tokens,
                         int n_heads, int head_dim, int rotary_dim, const float* inv_freq,
                         float cos_sin_scale, DType dtype) {
  launch_rope(launch, "rope_forward", x, pos, tokens, n_heads, head_dim, rotary_dim, inv_freq,
              cos_sin_scale, 1.0f, dtype);
}

// The gradient of a rotation (times the scale) is its transpose: the same kernel with the sine
// negated.
template <class Launcher>
void launch_rope_backward(const Launcher& launch, void* dx, const std::int32_t* pos, int tokens,
                          int n_heads, int head_dim, int rotary_dim, const float* inv_freq,
                          float cos_sin_scale, DType dtype) {
  launch_rope(launch, "rope_backward", dx, pos, tokens, n_heads, head_dim, rotary_dim, inv_freq,
              cos_sin_scale, -1.0f, dtype);
}

}  // namespace peftrun::blocks
