// kernels/exp_math.h: the float e^x (x <= 0) of the sigmoid, softmax and cross-entropy, against
// libm's exp in double.
#include "kernels/exp_math.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/activations.h"

namespace peftrun {
namespace {

float float_with_bits(std::uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// |approx - exact| in units of the last place of `exact` as a normal float.
double ulp_error(float approx, double exact) {
  const double ulp = std::ldexp(1.0, std::ilogb(exact) - 23);
  return std::abs(static_cast<double>(approx) - exact) / ulp;
}

// Every 61st float from -0 down to ln(FLT_MIN) (about 18 million values: negative floats grow
// in magnitude with their bit pattern), and the normal range's last values one by one.
TEST(ExpMath, FloatWithinTwoUlp) {
  const float min_arg = std::log(FLT_MIN);
  std::uint32_t last = 0;
  std::memcpy(&last, &min_arg, sizeof last);
  double worst = 0;
  float worst_x = 0;
  auto check = [&](std::uint32_t bits) {
    const float x = float_with_bits(bits);
    const double exact = std::exp(static_cast<double>(x));
    if (exact < FLT_MIN) return;  // flushed to 0: checked below
    const double err = ulp_error(exp_nonpositive(x), exact);
    if (err > worst) {
      worst = err;
      worst_x = x;
    }
  };
  for (std::uint32_t bits = 0x80000000u; bits <= last; bits += 61) check(bits);
  for (std::uint32_t bits = last - 4096; bits <= last; ++bits) check(bits);
  EXPECT_LE(worst, 2.0) << "at x = " << worst_x;
  std::printf("exp_nonpositive: worst error %.3f ulp at x = %.9g\n", worst, worst_x);
}

TEST(ExpMath, EdgeCases) {
  EXPECT_EQ(exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(exp_nonpositive(-0.0f), 1.0f);
  EXPECT_EQ(exp_nonpositive(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(exp_nonpositive(-88.0f), 0.0f);  // e^-88 is subnormal in float: flushed
  EXPECT_EQ(exp_nonpositive(-1e30f), 0.0f);
  EXPECT_EQ(exp_nonpositive(-std::numeric_limits<float>::max()), 0.0f);
  EXPECT_TRUE(std::isnan(exp_nonpositive(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_GE(exp_nonpositive(std::nextafter(std::log(FLT_MIN), 0.0f)), FLT_MIN);
  // double is libm's exp, bit for bit.
  for (double x : {0.0, -1e-300, -0.5, -3.0, -700.0, -800.0}) {
    EXPECT_EQ(exp_nonpositive(x), std::exp(x)) << x;
  }
}

// The float sigmoid built on it: within a few ulp of the double formula on both branches, and
// within FLT_MIN absolutely where e^x is flushed.
TEST(ExpMath, FloatSigmoidMatchesDouble) {
  double worst = 0;
  for (int i = -200000; i <= 200000; ++i) {
    const float x = static_cast<float>(i) * 5e-4f;  // [-100, 100]
    const double exact = 1.0 / (1.0 + std::exp(-static_cast<double>(x)));
    const float got = sigmoid(x);
    if (exact < FLT_MIN) {
      EXPECT_LE(std::abs(static_cast<double>(got) - exact), FLT_MIN) << x;
      continue;
    }
    worst = std::max(worst, ulp_error(got, exact));
  }
  EXPECT_LE(worst, 4.0);
  EXPECT_EQ(sigmoid(0.0f), 0.5f);
  EXPECT_EQ(sigmoid(100.0f), 1.0f);
  EXPECT_TRUE(std::isnan(sigmoid(std::numeric_limits<float>::quiet_NaN())));
}

}  // namespace
}  // namespace peftrun
