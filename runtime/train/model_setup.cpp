#include "runtime/train/model_setup.h"

#include <cmath>
#include <stdexcept>

#include "runtime/model/hf_checkpoint.h"

namespace peftrun {

BaseWeights load_base(const Config& config) {
  if (!config.model.path.empty()) return load_hf_checkpoint(config.model.path, config.model);
  return BaseWeights::random(config.model, config.train.seed);
}

std::vector<double> base_row_norms(const BaseWeights& base, int layer, Proj p) {
  const ProjShape s = proj_shape(base.shape(), p);
  const half_bits* w = base.layer(layer) + base.offsets().proj[int(p)];
  std::vector<double> norms(s.out);
  for (int j = 0; j < s.out; ++j) {
    double sq = 0;
    for (int i = 0; i < s.in; ++i) {
      const double v = half_to_float(w[std::size_t(j) * s.in + i]);
      sq += v * v;
    }
    norms[j] = std::sqrt(sq);
  }
  return norms;
}

std::vector<float> initial_params(const Config& config, const BaseWeights& base,
                                  const AdapterLayout& layout, const std::string& adapter_dir,
                                  RankPattern* rank_pattern) {
  std::vector<float> params(layout.total(), 0.0f);
  if (rank_pattern) rank_pattern->clear();
  if (!adapter_dir.empty()) {
    read_peft_adapter(adapter_dir, config, layout, params.data(), rank_pattern);
    return params;
  }
  layout.init_params(params.data(), config.train.seed);
  if (layout.type() == AdapterType::kDora) {
    // PEFT initialises m = ||W + s B A|| row-wise, which is ||W|| since B = 0.
    for (const AdaptedModule& m : layout.modules()) {
      const std::vector<double> norms = base_row_norms(base, m.layer, m.proj);
      for (int j = 0; j < m.shape.out; ++j) params[m.m + j] = static_cast<float>(norms[j]);
    }
  }
  return params;
}

}  // namespace peftrun
