#include "runtime/adapters/adapter_merge.h"

#include <cmath>
#include <cstddef>

#include "kernels/gemm.h"

namespace peftrun {

void merge_adapter_into_weight(const AdapterLayout& layout, const AdaptedModule& m,
                               const float* params, float* W, std::vector<float>& scratch) {
  const int out = m.shape.out, in = m.shape.in, r = m.r;
  const float* A = params + m.a;
  if (layout.type() == AdapterType::kAdaLora) {
    // A~ = E * A (row k of A times E[k]); the layer is then plain LoRA with A~.
    scratch.resize(std::size_t(r) * in);
    for (int k = 0; k < r; ++k) {
      const float e = params[m.e + k];
      for (int c = 0; c < in; ++c)
        scratch[std::size_t(k) * in + c] = e * A[std::size_t(k) * in + c];
    }
    A = scratch.data();
  }
  // W [out, in] += scale * B [out, r] @ A [r, in]
  cpu::gemm(cpu::Trans::kNo, cpu::Trans::kNo, out, in, r, layout.scale(), params + m.b, r, A, in,
            1.0f, W, in);
  if (layout.type() != AdapterType::kDora) return;
  // PEFT's DoRA merge: the magnitude over the norm of the merged row, m / ||W + s B A||.
  const float* magnitude = params + m.m;
  for (int j = 0; j < out; ++j) {
    float* row = W + std::size_t(j) * in;
    double sq = 0.0;
    for (int c = 0; c < in; ++c) sq += double(row[c]) * row[c];
    const float factor = magnitude[j] / static_cast<float>(std::sqrt(sq));
    for (int c = 0; c < in; ++c) row[c] *= factor;
  }
}

}  // namespace peftrun
