#include "runtime/adapters/adalora_regulariser.h"

#include <algorithm>
#include <cstddef>

#include "kernels/adalora.h"

namespace peftrun {

double add_adalora_orth_regulariser(const AdapterLayout& layout, const AdapterConfig& cfg,
                                    const float* params, float* grads, std::vector<float>& work,
                                    double grad_scale) {
  const std::size_t matrices = 2 * layout.modules().size();
  if (cfg.orth_reg_weight <= 0 || matrices == 0) return 0;
  // d(weight * mean_i ||C_i||)/dP_i = (weight / #matrices) d||C_i||/dP_i (times the scale the
  // gradients carry; exact for 1 and any power of two).
  const float w = static_cast<float>(cfg.orth_reg_weight / double(matrices) * grad_scale);
  double sum = 0;
  for (const AdaptedModule& m : layout.modules()) {
    work.resize(std::max({work.size(), cpu::orth_reg_workspace(m.r, m.shape.in, true),
                          cpu::orth_reg_workspace(m.shape.out, m.r, false)}));
    sum += cpu::orth_reg(params + m.a, m.r, m.shape.in, true, w, grads + m.a, work.data());
    sum += cpu::orth_reg(params + m.b, m.shape.out, m.r, false, w, grads + m.b, work.data());
  }
  return cfg.orth_reg_weight * sum / double(matrices);
}

}  // namespace peftrun
