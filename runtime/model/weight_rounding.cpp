#include "runtime/model/weight_rounding.h"

#include "kernels/dtype.h"
#include "kernels/half.h"

namespace peftrun {

std::size_t round_weights_to_16bit(const float* src, std::uint16_t* dst, std::size_t n, bool bf16) {
  std::size_t first_bad = n;
  // All-ones exponent = inf or NaN in both formats.
  const std::uint16_t exp_mask = bf16 ? 0x7f80u : 0x7c00u;
  for (std::size_t i = 0; i < n; ++i) {
    dst[i] = bf16 ? float_to_bf16(src[i]) : float_to_half(src[i]);
    if (first_bad == n && (dst[i] & exp_mask) == exp_mask) first_bad = i;
  }
  return first_bad;
}

}  // namespace peftrun
