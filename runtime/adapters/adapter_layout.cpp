#include "runtime/adapters/adapter_layout.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "runtime/rng.h"

namespace peftrun {

std::size_t TrainableTensor::numel() const {
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

std::string hf_decoder_module_prefix(const ModelConfig& m) {
  return m.multimodal_checkpoint ? "model.language_model." : "model.";
}

std::string hf_module_name(int layer, const std::string& linear, const std::string& decoder) {
  const bool attention = linear == "q_proj" || linear == "k_proj" || linear == "v_proj" ||
                         linear == "qkv_proj" || linear == "o_proj";
  return decoder + "layers." + std::to_string(layer) + (attention ? ".self_attn." : ".mlp.") +
         linear;
}

std::string hf_module_name(int layer, Proj p, const std::string& decoder) {
  return hf_module_name(layer, all_target_modules()[int(p)], decoder);
}

namespace {
// Tensors start on 64-byte boundaries so vectorised and (later) CUDA kernels can use aligned
// loads over any single tensor as well as over the whole buffer.
constexpr std::size_t kAlignElems = 16;
std::size_t align_up(std::size_t n) {
  return (n + kAlignElems - 1) / kAlignElems * kAlignElems;
}
}  // namespace

AdapterLayout AdapterLayout::plan(const ModelConfig& model, const AdapterConfig& adapter) {
  AdapterLayout lay;
  lay.type_ = adapter.type;
  const bool adalora = adapter.type == AdapterType::kAdaLora;
  // AdaLoRA scales by alpha / (ranknum + 1e-5) with ranknum fixed at init_r (PEFT), computed
  // in float as PEFT does.
  lay.scale_ = adalora ? static_cast<float>(adapter.alpha > 0 ? adapter.alpha : adapter.init_r) /
                             (static_cast<float>(adapter.init_r) + 1e-5f)
                       : static_cast<float>(adapter.scaling());
  lay.index_.assign(std::size_t(model.n_layers) * int(Proj::kCount), -1);
  std::size_t at = 0;
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape) {
    TrainableTensor t{name, std::move(shape), at};
    at = align_up(at + t.numel());
    lay.tensors_.push_back(t);
    return t.offset;
  };
  const std::string decoder = hf_decoder_module_prefix(model);
  for (int l = 0; l < model.n_layers; ++l) {
    for (const HfLinear& lin : hf_linears(model)) {
      const auto& targets = adapter.target_modules;
      const std::string& name = linear_name(lin);
      if (std::find(targets.begin(), targets.end(), name) == targets.end()) continue;
      AdaptedModule m;
      m.layer = l;
      m.proj = lin.first;
      m.pieces = lin.pieces;
      m.shape = linear_shape(model, lin);
      m.r = adalora ? adapter.init_r : adapter.r;
      m.module = hf_module_name(l, name, decoder);
      const std::string prefix = "base_model.model." + m.module;
      if (adalora) {  // PEFT keeps AdaLoRA's tensors as bare parameters: no ".weight"
        m.a = add(prefix + ".lora_A", {m.r, m.shape.in});
        m.b = add(prefix + ".lora_B", {m.shape.out, m.r});
        m.e = add(prefix + ".lora_E", {m.r, 1});
      } else {
        m.a = add(prefix + ".lora_A.weight", {m.r, m.shape.in});
        m.b = add(prefix + ".lora_B.weight", {m.shape.out, m.r});
      }
      if (adapter.type == AdapterType::kDora) {
        m.m = add(prefix + ".lora_magnitude_vector", {m.shape.out});
      }
      for (int i = 0; i < lin.pieces; ++i) {
        lay.index_[l * int(Proj::kCount) + int(lin.first) + i] =
            static_cast<int>(lay.modules_.size());
      }
      lay.modules_.push_back(m);
    }
  }
  lay.total_ = at;
  return lay;
}

void AdapterLayout::init_params(float* params, std::uint64_t seed) const {
  std::fill(params, params + total_, 0.0f);  // B = 0, E = 0 (and alignment padding)
  const std::uint64_t key = derive_key(seed, std::uint64_t(RngTag::kAdapterInit));
  for (std::size_t i = 0; i < modules_.size(); ++i) {
    const AdaptedModule& m = modules_[i];
    const std::uint64_t k = derive_key(key, i);
    float* a = params + m.a;
    const std::size_t a_size = std::size_t(m.r) * m.shape.in;
    if (type_ == AdapterType::kAdaLora) {
      float* b = params + m.b;
      for (std::size_t j = 0; j < a_size; ++j) a[j] = static_cast<float>(0.02 * normal01(k, j));
      const std::uint64_t kb = derive_key(k, 1);
      for (std::size_t j = 0; j < std::size_t(m.shape.out) * m.r; ++j) {
        b[j] = static_cast<float>(0.02 * normal01(kb, j));
      }
    } else {
      const double bound = 1.0 / std::sqrt(double(m.shape.in));
      for (std::size_t j = 0; j < a_size; ++j) {
        a[j] = static_cast<float>((2.0 * uniform01(k, j) - 1.0) * bound);
      }
    }
  }
}

}  // namespace peftrun
