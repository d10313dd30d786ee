// Individually rounded arithmetic for formulas that must give the same bits on the CPU and the
// GPU. nvcc contracts a * b + c into one fused multiply-add by default (one rounding instead
// of two), which changes results; the __f*_rn / __d*_rn intrinsics are never contracted. On the
// host these are the plain operators, and the kernels library is compiled with
// -ffp-contract=off (GCC would otherwise contract in C++ mode once -mfma / -march=native
// allows it), so CPU code calling them is unchanged bit for bit.
#pragma once

#include <math.h>

#include "kernels/host_device.h"

namespace peftrun {

#if defined(__CUDA_ARCH__)
PEFTRUN_HD float mul_rn(float a, float b) {
  return __fmul_rn(a, b);
}
PEFTRUN_HD float add_rn(float a, float b) {
  return __fadd_rn(a, b);
}
PEFTRUN_HD float sub_rn(float a, float b) {
  return __fsub_rn(a, b);
}
PEFTRUN_HD float div_rn(float a, float b) {
  return __fdiv_rn(a, b);
}
PEFTRUN_HD double mul_rn(double a, double b) {
  return __dmul_rn(a, b);
}
PEFTRUN_HD double add_rn(double a, double b) {
  return __dadd_rn(a, b);
}
PEFTRUN_HD double sub_rn(double a, double b) {
  return __dsub_rn(a, b);
}
PEFTRUN_HD double div_rn(double a, double b) {
  return __ddiv_rn(a, b);
}
PEFTRUN_HD double sqrt_rn(double a) {
  return __dsqrt_rn(a);
}
#else
PEFTRUN_HD float mul_rn(float a, float b) {
  return a * b;
}
PEFTRUN_HD float add_rn(float a, float b) {
  return a + b;
}
PEFTRUN_HD float sub_rn(float a, float b) {
  return a - b;
}
PEFTRUN_HD float div_rn(float a, float b) {
  return a / b;
}
PEFTRUN_HD double mul_rn(double a, double b) {
  return a * b;
}
PEFTRUN_HD double add_rn(double a, double b) {
  return a + b;
}
PEFTRUN_HD double sub_rn(double a, double b) {
  return a - b;
}
PEFTRUN_HD double div_rn(double a, double b) {
  return a / b;
}
PEFTRUN_HD double sqrt_rn(double a) {
  return sqrt(a);
}
#endif

// |x| by clearing the sign bit (std::abs on the host, fabs on the device: the same bits, also
// for -0 and NaN).
PEFTRUN_HD float abs_exact(float x) {
  return fabsf(x);
}
PEFTRUN_HD double abs_exact(double x) {
  return fabs(x);
}

}  // namespace peftrun
