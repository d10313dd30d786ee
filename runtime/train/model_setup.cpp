#include "runtime/train/model_setup.h"

#include <cmath>
#include <stdexcept>

#include "runtime/model/hf_checkpoint.h"

namespace peftrun {

BaseWeights load_base(const Config& config) {
  if (!config.model.path.empty()) return load_hf_checkpoint(config.model.path, config.model);
  return BaseWeights::random(config.model, config.train.seed);
}

BaseWeights load_base(const Config& config, int rank, int world, bool shard) {
  if (!shard || world <= 1) return load_base(config);
  if (!config.model.path.empty()) {
    return load_hf_checkpoint_shard(config.model.path, config.model, rank, world);
  }
  // The random base is generated, not read: holding it whole for a moment costs no I/O.
  BaseWeights base = BaseWeights::random(config.model, config.train.seed);
  base.shard(rank, world);
  return base;
}

std::vector<double> base_row_norms(const BaseWeights& base, int layer, HfLinear lin) {
  return base_row_norms(base, base.layer(layer), lin);
}

std::vector<double> base_row_norms(const BaseWeights& base, const half_bits* layer, HfLinear lin) {
  const ProjShape s = linear_shape(base.shape(), lin);
  const half_bits* w = layer + base.offsets().proj[int(lin.first)];
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
                                  RankPattern* rank_pattern, Communicator* comm) {
  std::vector<float> params(layout.total(), 0.0f);
  if (rank_pattern) rank_pattern->clear();
  if (!adapter_dir.empty()) {
    read_peft_adapter(adapter_dir, config, layout, params.data(), rank_pattern);
    return params;
  }
  layout.init_params(params.data(), config.train.seed);
  if (layout.type() == AdapterType::kDora) {
    // PEFT initialises m = ||W + s B A|| row-wise, which is ||W|| since B = 0.
    auto init_magnitude = [&](const AdaptedModule& m, const half_bits* layer) {
      const std::vector<double> norms = base_row_norms(base, layer, m.linear());
      for (int j = 0; j < m.shape.out; ++j) params[m.m + j] = static_cast<float>(norms[j]);
    };
    if (!base.sharded()) {
      for (const AdaptedModule& m : layout.modules()) init_magnitude(m, base.layer(m.layer));
      return params;
    }
    if (!comm || comm->world_size() != base.shard_world()) {
      throw std::logic_error(
          "initial_params: DoRA on a sharded base needs the communicator it is sharded over");
    }
    // One gathered layer at a time, in layer order: every rank has the same layout, so all make
    // the same all_gather calls, and peak memory grows by one layer, not the model.
    const std::size_t slice = base.shard_elems();
    std::vector<half_bits> full(slice * std::size_t(base.shard_world()));
    for (int l = 0; l < base.shape().n_layers; ++l) {
      bool gathered = false;
      for (const AdaptedModule& m : layout.modules()) {
        if (m.layer != l) continue;
        if (!gathered) {
          comm->all_gather(base.layer_shard(l), full.data(), slice * sizeof(half_bits));
          gathered = true;
        }
        init_magnitude(m, full.data());
      }
    }
  }
  return params;
}

}  // namespace peftrun
