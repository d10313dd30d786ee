// A small Hugging Face checkpoint folder made on the spot (config.json + model.safetensors) with
// random weights of realistic scale, for tests that need a base other than the golden fixtures:
// Qwen2-style q/k/v biases, tied embeddings, F32 or BF16 storage. transformers loads it too
// (model_type qwen2 for q/k/v biases, llama otherwise).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "configs/config.h"
#include "runtime/io/safetensors.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/hf_checkpoint.h"
#include "runtime/model/weight_rounding.h"

namespace peftrun::testing_support {

inline constexpr unsigned kQwen2Biases =
    bias_bit(Proj::kQ) | bias_bit(Proj::kK) | bias_bit(Proj::kV);

// The Qwen2-style shape the merge tests use: 2 layers, dim 64, 4 heads over 2 KV heads, ffn 96,
// vocab 256 (the shipped byte corpus), rms_norm_eps 1e-6, q/k/v biases.
inline ModelConfig small_qwen2_shape() {
  ModelConfig m;
  m.dim = 64;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn_dim = 96;
  m.vocab_size = 256;
  m.max_seq_len = 64;
  m.norm_eps = 1e-6;
  m.proj_bias_mask = kQwen2Biases;
  return m;
}

// Writes `dir` (created) for model `m`; its proj_bias_mask must be 0 or kQwen2Biases. Values:
// projections and lm_head N(0, 1/fan_in), embedding N(0, 1), norms 1 + N(0, 0.1^2), biases
// N(0, 0.3^2); dtype F32, F16 or BF16.
inline void write_synthetic_hf_checkpoint(const std::string& dir, const ModelConfig& m,
                                          TensorDType dtype, std::uint64_t seed) {
  std::filesystem::create_directories(dir);
  const bool qwen2 = m.proj_bias_mask == kQwen2Biases;
  nlohmann::json cfg = {{"architectures", {qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
                        {"model_type", qwen2 ? "qwen2" : "llama"},
                        {"hidden_act", "silu"},
                        {"hidden_size", m.dim},
                        {"intermediate_size", m.ffn_dim},
                        {"max_position_embeddings", m.max_seq_len},
                        {"num_attention_heads", m.n_heads},
                        {"num_hidden_layers", m.n_layers},
                        {"num_key_value_heads", m.n_kv_heads},
                        {"rms_norm_eps", m.norm_eps},
                        {"rope_theta", m.rope_theta},
                        {"tie_word_embeddings", m.tie_embeddings},
                        {"vocab_size", m.vocab_size},
                        {"torch_dtype", dtype == TensorDType::kF32   ? "float32"
                                        : dtype == TensorDType::kF16 ? "float16"
                                                                     : "bfloat16"}};
  std::ofstream(std::filesystem::path(dir) / "config.json") << cfg.dump(2) << "\n";

  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const HfTensor& t : hf_model_tensors(m)) {
    std::size_t n = 1;
    for (const std::int64_t d : t.shape) n *= std::size_t(d);
    float mean = 0, sd = 1;
    switch (t.kind) {
      case HfTensor::Kind::kProjWeight:
      case HfTensor::Kind::kLmHead:
        sd = 1.0f / std::sqrt(float(t.shape[1]));
        break;
      case HfTensor::Kind::kProjBias:
        sd = 0.3f;
        break;
      case HfTensor::Kind::kEmbedding:
        break;
      default:  // norms
        mean = 1.0f;
        sd = 0.1f;
    }
    std::vector<float> v(n);
    for (float& x : v) x = mean + sd * normal(rng);
    if (dtype == TensorDType::kF32) {
      w.add_f32(t.name, t.shape, v);
    } else {
      std::vector<std::uint16_t> bits(n);
      round_weights_to_16bit(v.data(), bits.data(), n, dtype == TensorDType::kBF16);
      w.add(t.name, dtype, t.shape, bits.data(), n * 2);
    }
  }
  w.write(dir + "/model.safetensors");
}

}  // namespace peftrun::testing_support
