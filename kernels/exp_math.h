// e^x for x <= 0, the only exponentials the element-wise ops need: the sigmoid takes e^-|x|,
// softmax and cross-entropy take e^(x - max).
//
// In float it is computed from adds, multiplies and bit operations only, for two reasons:
//   - GCC vectorises the loops that call it. glibc's expf is a call per element, and with it
//     SwiGLU and the cross-entropy were ~8% of a CPU training step (bench/NOTES.md section 6).
//   - The CPU and the GPU compute the same bits: every operation is individually rounded
//     (kernels/exact_math.h), where libm's expf and CUDA's expf may differ in the last bit.
// In double it is libm's exp: the finite-difference gradient checks want full precision there.
#pragma once

#include <math.h>

#include <cstdint>

#include "kernels/exact_math.h"
#include "kernels/host_device.h"

namespace peftrun {

// x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2. ln2 is split into a head with 9
// significant bits (so n * head is exact for every n reached) and a float tail: r carries
// ~2^-30 absolute error at most. e^r is its Taylor polynomial of degree 7 (the truncation error,
// r^8 / 8!, is below 0.1 ulp on that interval), evaluated by Horner; e^x = e^r 2^n with 2^n
// written straight into the exponent field. Within 2 ulp of the exact value
// (ExpMath.FloatWithinTwoUlp sweeps the domain).
//
// Edge cases: x < ln(FLT_MIN) (about -87.34) gives 0, flushing the subnormal results (absolute
// error below 1.2e-38), so also e^-inf = 0; NaN gives NaN; e^0 = 1 exactly. x > 0 is outside the
// domain and gives wrong values: callers pass -|x| or x - max.
PEFTRUN_HD float exp_nonpositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Head = 0.693359375f;       // 355 / 512
  constexpr float kLn2Tail = -2.12194440e-4f;    // ln 2 - kLn2Head, rounded
  constexpr float kRound = 12582912.0f;          // 1.5 * 2^23: x + kRound - kRound rounds x to
                                                 // an integer (|x| < 2^22), ties to even
  constexpr float kMinArg = -87.3365447505531f;  // ln(FLT_MIN)
  const float n = sub_rn(add_rn(mul_rn(x, kLog2e), kRound), kRound);
  // The comparison is false for NaN (and n = -inf for x = -inf): the clamp keeps the integer
  // conversion below defined; the result is then replaced (x < kMinArg) or NaN anyway (r).
  const float nc = n >= -126.0f ? n : -126.0f;
  const float r = sub_rn(sub_rn(x, mul_rn(nc, kLn2Head)), mul_rn(nc, kLn2Tail));
  float p = 1.0f / 5040.0f;
  p = add_rn(mul_rn(p, r), 1.0f / 720.0f);
  p = add_rn(mul_rn(p, r), 1.0f / 120.0f);
  p = add_rn(mul_rn(p, r), 1.0f / 24.0f);
  p = add_rn(mul_rn(p, r), 1.0f / 6.0f);
  p = add_rn(mul_rn(p, r), 0.5f);
  p = add_rn(mul_rn(p, r), 1.0f);
  p = add_rn(mul_rn(p, r), 1.0f);
  // 2^nc for nc in [-126, 0]: biased exponent nc + 127 in [1, 127], a normal float.
  const std::uint32_t two_n_bits = static_cast<std::uint32_t>(static_cast<int>(nc) + 127) << 23;
  float two_n;
  __builtin_memcpy(&two_n, &two_n_bits, sizeof(two_n));  // as half.h: host and device alike
  return x < kMinArg ? 0.0f : mul_rn(p, two_n);
}

PEFTRUN_HD double exp_nonpositive(double x) {
  return exp(x);
}

}  // namespace peftrun
