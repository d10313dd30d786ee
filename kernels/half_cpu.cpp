// Bulk fp16 -> fp32 with the x86 conversion instructions, chosen once at run time, so the
// default (portable x86-64) build still uses them where the CPU has them. Both are exact: every
// fp16 value is representable in fp32, including subnormals (the conversion ignores DAZ).
#include "kernels/half.h"
#include "kernels/parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace peftrun {
namespace {

void convert_scalar(const half_bits* src, float* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) void convert_avx512(const half_bits* src, float* dst,
                                                       std::size_t n) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    // maskz with a full mask is the plain conversion; GCC 12 warns (maybe-uninitialized) on
    // _mm512_cvtph_ps's undefined pass-through operand.
    _mm512_storeu_ps(dst + i, _mm512_maskz_cvtph_ps(0xffff, h));
  }
  convert_scalar(src + i, dst + i, n - i);
}

__attribute__((target("avx,f16c"))) void convert_f16c(const half_bits* src, float* dst,
                                                      std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  convert_scalar(src + i, dst + i, n - i);
}
#endif

using Converter = void (*)(const half_bits*, float*, std::size_t);

Converter pick_converter() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) return convert_avx512;
  if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx")) return convert_f16c;
#endif
  return convert_scalar;
}

}  // namespace

template <>
void half_to_real<float>(const half_bits* src, float* dst, std::size_t n) {
  static const Converter convert = pick_converter();
  // Element-wise, so split over the kernel threads: the layer staging (twice per step) would
  // otherwise run on one core while the others wait.
  cpu::parallel_for(n, cpu::min_part_for(1), [&](std::size_t begin, std::size_t end) {
    convert(src + begin, dst + begin, end - begin);
  });
}

}  // namespace peftrun
