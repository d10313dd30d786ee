#include "kernels/rope.h"

#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/parallel.h"
#include "kernels/rope_math.h"

namespace peftrun::cpu {
namespace {

// inv_freq[i] for i < head_dim / 2 (rope_math.h), so the angles -- and hence the rotated
// activations -- match the reference model bit-for-bit as far as libm allows.
std::vector<float> inverse_frequencies(int head_dim, float theta) {
  const int half = head_dim / 2;
  std::vector<float> inv_freq(static_cast<std::size_t>(half));
  for (int i = 0; i < half; ++i)
    inv_freq[static_cast<std::size_t>(i)] = rope_inv_freq(i, head_dim, theta);
  return inv_freq;
}

// Rotates every head of every token by angle = pos * inv_freq (sign = +1) or by its inverse
// (sign = -1). The rotation of pair (i, i + half) is
//   [a'; b'] = [cos, -s sin; s sin, cos] [a; b].
template <typename T>
void rotate(T* x, const std::int32_t* pos, int tokens, int n_heads, int head_dim, float theta,
            T sign) {
  const int half = head_dim / 2;
  const std::vector<float> inv_freq = inverse_frequencies(head_dim, theta);
  // Tokens are independent: split them over the kernel threads (parallel.h).
  const std::size_t min_tokens = min_part_for(static_cast<std::size_t>(n_heads) * head_dim);
  parallel_for(static_cast<std::size_t>(tokens), min_tokens, [&](std::size_t t0, std::size_t t1) {
    std::vector<T> cos_t(static_cast<std::size_t>(half));  // [half] for the current token
    std::vector<T> sin_t(static_cast<std::size_t>(half));  // [half], already multiplied by sign
    for (std::size_t t = t0; t < t1; ++t) {
      // Angle, cos and sin in float (HF computes cos/sin in fp32 and casts to the model dtype);
      // computed once per token and reused by all heads.
      const float p = static_cast<float>(pos[t]);
      for (int i = 0; i < half; ++i) {
        const float angle = p * inv_freq[static_cast<std::size_t>(i)];
        cos_t[static_cast<std::size_t>(i)] = static_cast<T>(std::cos(angle));
        sin_t[static_cast<std::size_t>(i)] = sign * static_cast<T>(std::sin(angle));
      }
      T* xt = x + t * n_heads * head_dim;  // [n_heads, head_dim]
      for (int h = 0; h < n_heads; ++h) {
        T* a = xt + static_cast<std::size_t>(h) * head_dim;  // first half  [half]
        T* b = a + half;                                     // second half [half]
        for (int i = 0; i < half; ++i) {
          const T c = cos_t[static_cast<std::size_t>(i)];
          const T s = sin_t[static_cast<std::size_t>(i)];
          rope_rotate_pair(a[i], b[i], c, s, &a[i], &b[i]);
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void rope_forward(T* x, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                  float theta) {
  rotate(x, pos, tokens, n_heads, head_dim, theta, T(1));
}

// The forward map is an orthogonal rotation R, so the gradient R^T dy is the rotation by -angle:
// the same code with sin negated (which uses the very same float cos/sin values, so backward is
// the exact transpose of forward).
template <typename T>
void rope_backward(T* dx, const std::int32_t* pos, int tokens, int n_heads, int head_dim,
                   float theta) {
  rotate(dx, pos, tokens, n_heads, head_dim, theta, T(-1));
}

template void rope_forward<float>(float*, const std::int32_t*, int, int, int, float);
template void rope_forward<double>(double*, const std::int32_t*, int, int, int, float);
template void rope_backward<float>(float*, const std::int32_t*, int, int, int, float);
template void rope_backward<double>(double*, const std::int32_t*, int, int, int, float);

}  // namespace peftrun::cpu
