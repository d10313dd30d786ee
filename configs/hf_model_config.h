// Reading a Hugging Face checkpoint's config.json into the shape fields of ModelConfig.
//
// When `model.path` names a checkpoint folder, the model's shape is the checkpoint's, not the
// YAML's: the loader (config_loader.cpp) calls read_hf_model_config after the YAML and `--set`
// are applied and before cross-field validation, and a shape key written explicitly with a
// different value is an error. Accepted: model_type llama (SmolLM included), mistral, qwen2,
// qwen3 and gemma with SwiGLU or GeGLU (tanh) MLPs, RoPE plain or scaled by one of the rope types
// linear, dynamic, llama3 (Llama 3.1 and later), yarn, and causal attention with or without a
// sliding window per layer; anything else is refused with the config.json position rather than
// trained as a subtly different model (docs/CONFIG.md lists both).
//
// config.json is parsed with yaml-cpp (JSON is YAML 1.2 flow syntax), which keeps LINE:COL
// positions for every value, so problems print like YAML ones: `/ckpt/config.json:7:3: key: ...`.
#pragma once

#include <string>
#include <vector>

#include "configs/config.h"

namespace peftrun {

// Where config.json decides one ModelConfig field.
struct HfShapeSource {
  std::string yaml_key;  // "model.dim"
  std::string json_key;  // "hidden_size"
  int line = 0;          // 1-based position of the value; 0 = absent, so HF's default applies
  int column = 0;
};

struct HfModelConfig {
  std::string file;        // the config.json that was read
  std::string model_type;  // "llama" | "mistral" | "qwen2"
  // The shape fields (dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, max_seq_len,
  // rope_theta, the rope_scaling fields, tie_embeddings, norm_eps) and proj_bias_mask; path and
  // init_std keep defaults.
  ModelConfig shape;
  std::vector<HfShapeSource> sources;  // one per entry of hf_shape_keys(), in that order
  std::vector<ConfigError> errors;     // each with file = `file`; empty = usable
  bool ok() const { return errors.empty(); }
};

// The model.* YAML keys whose value a checkpoint's config.json decides, in schema order.
const std::vector<std::string>& hf_shape_keys();

// Copies the fields named by hf_shape_keys(), and proj_bias_mask, from `from` into `to`.
void copy_hf_shape(const ModelConfig& from, ModelConfig& to);

// Parses config.json text; `file` is used in messages. Never throws for bad input.
HfModelConfig parse_hf_model_config(const std::string& json_text, const std::string& file);

// Reads `<dir>/config.json`; a missing or unreadable file is one error naming it.
HfModelConfig read_hf_model_config(const std::string& dir);

}  // namespace peftrun
