#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/nonfinite.h"

namespace peftrun::cpu {
namespace {

// Inf / NaN by the exponent bits (all ones), so fp16 and bf16 need no conversion.
bool nonfinite_at(const void* x, DType type, std::size_t i) {
  if (type == DType::kF32) {
    std::uint32_t b;
    std::memcpy(&b, static_cast<const unsigned char*>(x) + 4 * i, 4);
    return (b & 0x7f800000u) == 0x7f800000u;
  }
  std::uint16_t b;
  std::memcpy(&b, static_cast<const unsigned char*>(x) + 2 * i, 2);
  const std::uint16_t exp = type == DType::kF16 ? 0x7c00u : 0x7f80u;
  return (b & exp) == exp;
}

}  // namespace

void nonfinite_scan(const void* x, DType type, std::size_t n, NonfiniteReport& report) {
  for (std::size_t i = 0; i < n; ++i) {
    if (!nonfinite_at(x, type, i)) continue;
    if (report.count == 0 || i < report.first_index) report.first_index = i;
    ++report.count;
  }
}

}  // namespace peftrun::cpu
