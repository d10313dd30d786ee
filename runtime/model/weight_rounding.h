// fp32 -> 16-bit storage (fp16 or bf16) for weights peftrun writes, e.g. a merged model.
// Uses the bf16 conversion the CUDA kernels use (kernels/dtype.h); its peftrun::DType no longer
// clashes with the file format's element types, which are peftrun::TensorDType.
#pragma once

#include <cstddef>
#include <cstdint>

namespace peftrun {

// dst[i] = src[i] rounded to nearest even (fp16 when !bf16, else bf16), for i < n. Returns the
// index of the first element whose rounded value is not finite (NaN, inf, or a value beyond the
// format's range: fp16 overflows above 65504), or n when every element is finite.
std::size_t round_weights_to_16bit(const float* src, std::uint16_t* dst, std::size_t n, bool bf16);

}  // namespace peftrun
