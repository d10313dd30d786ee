#include "runtime/adapters/adalora_regulariser.h"

#include <algorithm>
#include <cstddef>

namespace peftrun {
namespace {

double term_from_sum(const AdapterConfig& cfg, double sum_of_norms, std::size_t matrices) {
  return cfg.orth_reg_weight * sum_of_norms / double(matrices);
}

}  // namespace

double add_adalora_orth_regulariser(const AdapterLayout& layout, const AdapterConfig& cfg,
                                    const float* params, float* grads, std::vector<float>& work,
                                    double grad_scale) {
  const std::size_t matrices = 2 * layout.modules().size();
  if (cfg.orth_reg_weight <= 0 || matrices == 0) return 0;
  const float w = adalora_orth_weight(cfg, matrices, grad_scale);
  double sum = 0;
  for (const AdaptedModule& m : layout.modules()) {
    work.resize(std::max({work.size(), cpu::orth_reg_workspace(m.r, m.shape.in, true),
                          cpu::orth_reg_workspace(m.shape.out, m.r, false)}));
    sum += cpu::orth_reg(params + m.a, m.r, m.shape.in, true, w, grads + m.a, work.data());
    sum += cpu::orth_reg(params + m.b, m.shape.out, m.r, false, w, grads + m.b, work.data());
  }
  return term_from_sum(cfg, sum, matrices);
}

std::vector<AdaLoraOrthMatrix> adalora_orth_matrices(const AdapterLayout& layout) {
  std::vector<AdaLoraOrthMatrix> mats;
  mats.reserve(2 * layout.modules().size());
  for (const AdaptedModule& m : layout.modules()) {
    AdaLoraOrthMatrix a;
    a.offset = m.a;
    a.rows = m.r;
    a.cols = m.shape.in;
    a.is_A = 1;
    mats.push_back(a);
    AdaLoraOrthMatrix b;
    b.offset = m.b;
    b.rows = m.shape.out;
    b.cols = m.r;
    b.is_A = 0;
    mats.push_back(b);
  }
  return mats;
}

float adalora_orth_weight(const AdapterConfig& cfg, std::size_t matrices, double grad_scale) {
  return static_cast<float>(cfg.orth_reg_weight / double(matrices) * grad_scale);
}

double adalora_orth_term(const AdapterConfig& cfg, const double* norms, std::size_t matrices) {
  double sum = 0;
  for (std::size_t i = 0; i < matrices; ++i) sum += norms[i];
  return term_from_sum(cfg, sum, matrices);
}

}  // namespace peftrun
