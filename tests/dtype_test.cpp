// bf16 conversions round exactly like CUDA's __float2bfloat16_rn (nearest even, NaN kept).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/dtype.h"

namespace peftrun {
namespace {

float from_bits(std::uint32_t x) {
  float f;
  std::memcpy(&f, &x, sizeof(f));
  return f;
}

TEST(Bf16, WideningIsExactAndRoundTripsEveryPattern) {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const float f = bf16_to_float(static_cast<bf16_bits>(b));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f)))) << b;
    } else {
      EXPECT_EQ(float_to_bf16(f), b) << b;
    }
  }
}

TEST(Bf16, RoundsToNearestEven) {
  // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties go to the even mantissa (1).
  EXPECT_EQ(float_to_bf16(from_bits(0x3f808000u)), 0x3f80u);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even.
  EXPECT_EQ(float_to_bf16(from_bits(0x3f818000u)), 0x3f82u);
  // Just above halfway rounds up.
  EXPECT_EQ(float_to_bf16(from_bits(0x3f808001u)), 0x3f81u);
  // The largest finite float overflows to infinity, as on the GPU.
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7f80u);
}

TEST(Bf16, NanStaysNan) {
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(from_bits(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
}

}  // namespace
}  // namespace peftrun
