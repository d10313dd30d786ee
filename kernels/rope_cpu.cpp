#include "kernels/rope.h"

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "kernels/parallel.h"
#include "kernels/rope_math.h"

namespace peftrun::cpu {
namespace {

constexpr int kMaxHalf = kRopeMaxHeadDim / 2;  // pairs per head

// Rotates every head of every token by angle = pos * inv_freq (sign = +1) or by its inverse
// (sign = -1), cos and sin multiplied by `scale` in float (transformers' cos * attention_scaling,
// then cast). The rotation of pair (i, i + half) is
//   [a'; b'] = [cos, -s sin; s sin, cos] [a; b].
template <typename T>
void rotate(T* x, const std::int32_t* pos, int tokens, int n_heads, int head_dim, int rotary_dim,
            const float* inv_freq, float scale, T sign) {
  if (head_dim < 2 || head_dim / 2 > kMaxHalf) {
    throw std::invalid_argument("rope: head_dim " + std::to_string(head_dim) + " must be in [2, " +
                                std::to_string(2 * kMaxHalf) + "]");
  }
  if (rotary_dim < 2 || rotary_dim % 2 != 0 || rotary_dim > head_dim) {
    throw std::invalid_argument("rope: rotary_dim " + std::to_string(rotary_dim) +
                                " must be even and in [2, head_dim " + std::to_string(head_dim) +
                                "]");
  }
  const int half = rotary_dim / 2;  // channels [rotary_dim, head_dim) are not rotated
  // Tokens are independent: split them over the kernel threads (parallel.h).
  const std::size_t min_tokens = min_part_for(static_cast<std::size_t>(n_heads) * head_dim);
  parallel_for(static_cast<std::size_t>(tokens), min_tokens, [&](std::size_t t0, std::size_t t1) {
    T cos_t[kMaxHalf];  // [half] for the current token
    T sin_t[kMaxHalf];  // [half], already multiplied by sign
    for (std::size_t t = t0; t < t1; ++t) {
      // Angle, cos and sin in float (HF computes cos/sin in fp32 and casts to the model dtype);
      // computed once per token and reused by all heads.
      const float p = static_cast<float>(pos[t]);
      for (int i = 0; i < half; ++i) {
        const float angle = p * inv_freq[i];
        cos_t[i] = static_cast<T>(std::cos(angle) * scale);
        sin_t[i] = sign * static_cast<T>(std::sin(angle) * scale);
      }
      T* xt = x + t * n_heads * head_dim;  // [n_heads, head_dim]
      for (int h = 0; h < n_heads; ++h) {
        T* a = xt + static_cast<std::size_t>(h) * head_dim;  // first half  [half]
        T* b = a + half;                                     // second half [half]
        for (int i = 0; i < half; ++i)
          rope_rotate_pair(a[i], b[i], cos_t[i], sin_t[i], &a[i], &b[i]);
      }
    }
  });
}

}  // namespace

template <typename T>
void rope_forward(T* x, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                  int rotary_dim, const float* inv_freq, float cos_sin_scale) {
  rotate(x, pos, tokens, n_heads, head_dim, rotary_dim, inv_freq, cos_sin_scale, T(1));
}

// The forward map is s R, a rotation R scaled by cos_sin_scale s, so the gradient s R^T dy is the
// rotation by -angle with the same scale: the same code with sin negated (which uses the very
// same float cos/sin values, so backward is the exact transpose of forward).
template <typename T>
void rope_backward(T* dx, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                   int rotary_dim, const float* inv_freq, float cos_sin_scale) {
  rotate(dx, pos, tokens, n_heads, head_dim, rotary_dim, inv_freq, cos_sin_scale, T(-1));
}

template void rope_forward<float>(float*, const std::int32_t*, int, int, int, int, const float*,
                                  float);
template void rope_forward<double>(double*, const std::int32_t*, int, int, int, int, const float*,
                                   float);
template void rope_backward<float>(float*, const std::int32_t*, int, int, int, int, const float*,
                                   float);
template void rope_backward<double>(double*, const std::int32_t*, int, int, int, int, const float*,
                                    float);

}  // namespace peftrun::cpu
