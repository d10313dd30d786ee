// config.json -> ModelConfig: the shapes of real LLaMA-family configs (llama, SmolLM, mistral,
// qwen2), each refusal with its config.json LINE:COL, and the config-loader hook that takes the
// shape from model.path (explicit YAML keys may agree with it, never contradict it).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "configs/config.h"
#include "configs/hf_model_config.h"
#include "runtime/model/base_weights.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string all_errors(const std::vector<ConfigError>& errors) {
  std::string out;
  for (const ConfigError& e : errors) out += "\n  " + e.format();
  return out.empty() ? " (none)" : out;
}

std::string where(const ConfigError& e) {
  return e.file + ":" + std::to_string(e.line) + ":" + std::to_string(e.column);
}

class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "peftrun_hf_config_test_XXXXXX").string();
    path_ = mkdtemp(pattern.data());
    write_text(path_ / "train.tok", std::string("\x01\x02\x03\x04", 4));
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

  // A checkpoint folder holding only config.json (the loader reads nothing else).
  std::string checkpoint(const std::string& name, const std::string& json) const {
    fs::create_directories(path_ / name);
    write_text(path_ / name / "config.json", json);
    return (path_ / name).string();
  }

 private:
  fs::path path_;
};

// ---------------------------------------------------------------------------------------------
// config.json texts. One key per line, so key i of a Fields list sits on line i + 2 and its
// value starts at column (key length + 7): positions in the expectations are computed, not typed.
// ---------------------------------------------------------------------------------------------

using Fields = std::vector<std::pair<std::string, std::string>>;

std::string json(const Fields& fields) {
  std::string out = "{\n";
  for (std::size_t i = 0; i < fields.size(); ++i) {
    out += "  \"" + fields[i].first + "\": " + fields[i].second;
    out += i + 1 < fields.size() ? ",\n" : "\n";
  }
  return out + "}\n";
}

// "LINE:COL" of `key`'s value in json(fields).
std::string pos(const Fields& fields, const std::string& key) {
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (fields[i].first == key) {
      return std::to_string(i + 2) + ":" + std::to_string(key.size() + 7);
    }
  }
  return "?";
}

std::string line_of(const Fields& fields, const std::string& key) {
  const std::string at = pos(fields, key);
  return at.substr(0, at.find(':'));
}

Fields with(Fields fields, const std::string& key, const std::string& value) {
  for (auto& [k, v] : fields) {
    if (k == key) {
      v = value;
      return fields;
    }
  }
  fields.emplace_back(key, value);
  return fields;
}

Fields without(Fields fields, const std::string& key) {
  std::erase_if(fields, [&](const auto& kv) { return kv.first == key; });
  return fields;
}

// HuggingFaceTB/SmolLM-135M's config.json (model_type llama, tied embeddings).
const Fields kSmolLm = {{"architectures", "[\"LlamaForCausalLM\"]"},
                        {"attention_bias", "false"},
                        {"attention_dropout", "0.0"},
                        {"bos_token_id", "0"},
                        {"eos_token_id", "0"},
                        {"hidden_act", "\"silu\""},
                        {"hidden_size", "576"},
                        {"initializer_range", "0.02"},
                        {"intermediate_size", "1536"},
                        {"max_position_embeddings", "2048"},
                        {"mlp_bias", "false"},
                        {"model_type", "\"llama\""},
                        {"num_attention_heads", "9"},
                        {"num_hidden_layers", "30"},
                        {"num_key_value_heads", "3"},
                        {"pretraining_tp", "1"},
                        {"rms_norm_eps", "1e-05"},
                        {"rope_scaling", "null"},
                        {"rope_theta", "10000.0"},
                        {"tie_word_embeddings", "true"},
                        {"torch_dtype", "\"float32\""},
                        {"transformers_version", "\"4.40.1\""},
                        {"use_cache", "true"},
                        {"vocab_size", "49152"}};

// meta-llama/Llama-2-7b-hf's: no num_key_value_heads, no rope_theta (both defaulted).
const Fields kLlama2 = {{"architectures", "[\"LlamaForCausalLM\"]"},
                        {"bos_token_id", "1"},
                        {"eos_token_id", "2"},
                        {"hidden_act", "\"silu\""},
                        {"hidden_size", "4096"},
                        {"initializer_range", "0.02"},
                        {"intermediate_size", "11008"},
                        {"max_position_embeddings", "4096"},
                        {"model_type", "\"llama\""},
                        {"num_attention_heads", "32"},
                        {"num_hidden_layers", "32"},
                        {"pretraining_tp", "1"},
                        {"rms_norm_eps", "1e-05"},
                        {"rope_scaling", "null"},
                        {"tie_word_embeddings", "false"},
                        {"torch_dtype", "\"float16\""},
                        {"vocab_size", "32000"}};

// mistralai/Mistral-7B-v0.1's: a 4096-token sliding window.
const Fields kMistral = {{"architectures", "[\"MistralForCausalLM\"]"},
                         {"hidden_act", "\"silu\""},
                         {"hidden_size", "4096"},
                         {"intermediate_size", "14336"},
                         {"max_position_embeddings", "32768"},
                         {"model_type", "\"mistral\""},
                         {"num_attention_heads", "32"},
                         {"num_hidden_layers", "32"},
                         {"num_key_value_heads", "8"},
                         {"rms_norm_eps", "1e-05"},
                         {"rope_theta", "10000.0"},
                         {"sliding_window", "4096"},
                         {"tie_word_embeddings", "false"},
                         {"torch_dtype", "\"bfloat16\""},
                         {"vocab_size", "32000"}};

// Qwen/Qwen2.5-0.5B's: q/k/v biases, a sliding window that is switched off.
const Fields kQwen2 = {{"architectures", "[\"Qwen2ForCausalLM\"]"},
                       {"attention_dropout", "0.0"},
                       {"hidden_act", "\"silu\""},
                       {"hidden_size", "896"},
                       {"intermediate_size", "4864"},
                       {"max_position_embeddings", "32768"},
                       {"max_window_layers", "24"},
                       {"model_type", "\"qwen2\""},
                       {"num_attention_heads", "14"},
                       {"num_hidden_layers", "24"},
                       {"num_key_value_heads", "2"},
                       {"rms_norm_eps", "1e-06"},
                       {"rope_theta", "1000000.0"},
                       {"sliding_window", "32768"},
                       {"tie_word_embeddings", "true"},
                       {"torch_dtype", "\"bfloat16\""},
                       {"use_sliding_window", "false"},
                       {"vocab_size", "151936"}};

constexpr unsigned kQkv = bias_bit(Proj::kQ) | bias_bit(Proj::kK) | bias_bit(Proj::kV);

HfModelConfig parse(const Fields& fields) {
  return parse_hf_model_config(json(fields), "/ckpt/config.json");
}

// ---------------------------------------------------------------------------------------------
// Accepted configs
// ---------------------------------------------------------------------------------------------

TEST(HfConfigJson, SmolLmIsLlamaWithTiedEmbeddings) {
  const HfModelConfig hf = parse(kSmolLm);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_EQ(hf.model_type, "llama");
  const ModelConfig& m = hf.shape;
  EXPECT_EQ(m.dim, 576);
  EXPECT_EQ(m.n_layers, 30);
  EXPECT_EQ(m.n_heads, 9);
  EXPECT_EQ(m.n_kv_heads, 3);
  EXPECT_EQ(m.head_dim(), 64);
  EXPECT_EQ(m.ffn_dim, 1536);
  EXPECT_EQ(m.vocab_size, 49152);
  EXPECT_EQ(m.max_seq_len, 2048);
  EXPECT_EQ(m.rope_theta, 10000.0);
  EXPECT_EQ(m.norm_eps, 1e-5);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_EQ(m.proj_bias_mask, 0u);
  // Fields config.json does not decide keep their defaults.
  EXPECT_EQ(m.path, ModelConfig{}.path);
  EXPECT_EQ(m.init_std, ModelConfig{}.init_std);
}

TEST(HfConfigJson, Llama2DefaultsKvHeadsToHeadsAndRopeThetaTo10000) {
  const HfModelConfig hf = parse(kLlama2);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_EQ(hf.shape.n_heads, 32);
  EXPECT_EQ(hf.shape.n_kv_heads, 32);
  EXPECT_EQ(hf.shape.rope_theta, 10000.0);
  EXPECT_FALSE(hf.shape.tie_embeddings);
  EXPECT_EQ(hf.shape.ffn_dim, 11008);
}

TEST(HfConfigJson, TieWordEmbeddingsDefaultsToFalse) {
  const HfModelConfig hf = parse(without(kSmolLm, "tie_word_embeddings"));
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_FALSE(hf.shape.tie_embeddings);
}

// Mistral slides in every layer, whatever data.seq_len is (shorter sequences are unaffected).
TEST(HfConfigJson, MistralSlidesInEveryLayer) {
  {
    const HfModelConfig hf = parse(kMistral);
    ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
    EXPECT_EQ(hf.model_type, "mistral");
    EXPECT_EQ(hf.shape.n_kv_heads, 8);
    EXPECT_EQ(hf.shape.ffn_dim, 14336);
    EXPECT_EQ(hf.shape.proj_bias_mask, 0u);
    EXPECT_EQ(hf.shape.sliding_window, 4096);
    EXPECT_TRUE(hf.shape.layer_types.empty());
  }
  EXPECT_EQ(parse(with(kMistral, "sliding_window", "null")).shape.sliding_window, 0);
  EXPECT_EQ(parse(with(kMistral, "sliding_window", "0")).errors.size(), 1u);
}

// Qwen2 / Qwen3 slide only with use_sliding_window, in the layers at or above
// max_window_layers, or where layer_types (transformers 5) says so.
TEST(HfConfigJson, QwenSlidesInTheLayersItsConfigNames) {
  const Fields used = with(with(kQwen2, "use_sliding_window", "true"), "sliding_window", "1024");
  const HfModelConfig derived = parse(with(used, "max_window_layers", "21"));
  ASSERT_TRUE(derived.ok()) << all_errors(derived.errors);
  EXPECT_EQ(derived.shape.sliding_window, 1024);
  ASSERT_EQ(derived.shape.layer_types.size(), 24u);
  EXPECT_EQ(derived.shape.layer_types[20], "full_attention");
  EXPECT_EQ(derived.shape.layer_types[21], "sliding_attention");
  EXPECT_EQ(derived.shape.layer_types[23], "sliding_attention");
  std::string listed = "[";
  for (int l = 0; l < 24; ++l) {
    listed += std::string(l ? ", " : "") + (l % 2 ? "\"sliding_attention\"" : "\"full_attention\"");
  }
  const HfModelConfig given = parse(with(used, "layer_types", listed + "]"));
  ASSERT_TRUE(given.ok()) << all_errors(given.errors);
  EXPECT_EQ(given.shape.layer_types[0], "full_attention");
  EXPECT_EQ(given.shape.layer_types[1], "sliding_attention");
  const HfModelConfig short_list =
      parse(with(used, "layer_types", "[\"full_attention\", \"sliding_attention\"]"));
  ASSERT_EQ(short_list.errors.size(), 1u);
  EXPECT_EQ(short_list.errors[0].key, "layer_types");
  // Switched off: no window, whatever layer_types says.
  const HfModelConfig off = parse(with(kQwen2, "layer_types", listed + "]"));
  ASSERT_TRUE(off.ok()) << all_errors(off.errors);
  EXPECT_EQ(off.shape.sliding_window, 0);
  EXPECT_TRUE(off.shape.layer_types.empty());
}

TEST(HfConfigJson, MistralV03NullWindowAndMatchingHeadDimAreAccepted) {
  Fields v03 = with(with(kMistral, "sliding_window", "null"), "head_dim", "128");
  v03 = with(with(v03, "rope_theta", "1000000.0"), "vocab_size", "32768");
  const HfModelConfig hf = parse(v03);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_EQ(hf.shape.rope_theta, 1e6);
  EXPECT_EQ(hf.shape.vocab_size, 32768);
}

TEST(HfConfigJson, Qwen2HasQkvBiasesAndItsUnusedWindowIsIgnored) {
  const HfModelConfig hf = parse(kQwen2);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_EQ(hf.model_type, "qwen2");
  EXPECT_EQ(hf.shape.proj_bias_mask, kQkv);
  EXPECT_EQ(hf.shape.dim, 896);
  EXPECT_EQ(hf.shape.n_heads, 14);
  EXPECT_EQ(hf.shape.n_kv_heads, 2);
  EXPECT_EQ(hf.shape.rope_theta, 1e6);
  EXPECT_EQ(hf.shape.norm_eps, 1e-6);
  EXPECT_TRUE(hf.shape.tie_embeddings);
}

TEST(HfConfigJson, BiasMaskBitsAreTheRuntimeBiasBits) {
  // configs/ spells the bit indices out (it cannot include runtime/); they must be bias_bit's.
  EXPECT_EQ(parse(with(kSmolLm, "attention_bias", "true")).shape.proj_bias_mask,
            kQkv | bias_bit(Proj::kO));
  EXPECT_EQ(parse(with(kSmolLm, "mlp_bias", "true")).shape.proj_bias_mask,
            bias_bit(Proj::kGate) | bias_bit(Proj::kUp) | bias_bit(Proj::kDown));
}

TEST(HfConfigJson, RopeThetaMayComeFromRopeParameters) {
  const Fields v5 = with(without(kSmolLm, "rope_theta"), "rope_parameters",
                         "{\"rope_type\": \"default\", \"rope_theta\": 100000.0}");
  const HfModelConfig hf = parse(v5);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_EQ(hf.shape.rope_theta, 1e5);
}

// Qwen3-0.6B's config.json (its own head_dim 128 against 1024 / 16 = 64).
const Fields kQwen3 = {{"architectures", "[\"Qwen3ForCausalLM\"]"},
                       {"attention_bias", "false"},
                       {"head_dim", "128"},
                       {"hidden_act", "\"silu\""},
                       {"hidden_size", "1024"},
                       {"intermediate_size", "3072"},
                       {"max_position_embeddings", "40960"},
                       {"max_window_layers", "28"},
                       {"model_type", "\"qwen3\""},
                       {"num_attention_heads", "16"},
                       {"num_hidden_layers", "28"},
                       {"num_key_value_heads", "8"},
                       {"rms_norm_eps", "1e-06"},
                       {"rope_scaling", "null"},
                       {"rope_theta", "1000000"},
                       {"sliding_window", "null"},
                       {"tie_word_embeddings", "true"},
                       {"use_sliding_window", "false"},
                       {"vocab_size", "151936"}};

TEST(HfConfigJson, Qwen3HasQkNormItsOwnHeadDimAndNoBiases) {
  const HfModelConfig hf = parse(kQwen3);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_EQ(hf.model_type, "qwen3");
  EXPECT_TRUE(hf.shape.qk_norm);
  EXPECT_EQ(hf.shape.head_dim(), 128);
  EXPECT_EQ(hf.shape.proj_bias_mask, 0u);
  EXPECT_TRUE(hf.shape.tie_embeddings);
  // Qwen3Config's defaults: head_dim 128 when absent; attention_bias puts biases on q/k/v/o.
  const HfModelConfig bare = parse(with(without(kQwen3, "head_dim"), "attention_bias", "true"));
  ASSERT_TRUE(bare.ok()) << all_errors(bare.errors);
  EXPECT_EQ(bare.shape.head_dim(), 128);
  EXPECT_EQ(bare.shape.proj_bias_mask, kQkv | bias_bit(Proj::kO));
  // A used window is read as for Qwen2 (max_window_layers 28 here: every layer full).
  const HfModelConfig window =
      parse(with(with(kQwen3, "use_sliding_window", "true"), "sliding_window", "1024"));
  ASSERT_TRUE(window.ok()) << all_errors(window.errors);
  EXPECT_EQ(window.shape.sliding_window, 1024);
  EXPECT_EQ(window.shape.layer_types, std::vector<std::string>(28, "full_attention"));
  // Llama checkpoints have no q_norm.
  EXPECT_FALSE(parse(kSmolLm).shape.qk_norm);
}

// google/gemma-2b's config.json: the legacy hidden_act "gelu" beside hidden_activation, a head
// wider than hidden_size / heads, one KV head, tied embeddings by default.
const Fields kGemma = {{"architectures", "[\"GemmaForCausalLM\"]"},
                       {"attention_bias", "false"},
                       {"attention_dropout", "0.0"},
                       {"bos_token_id", "2"},
                       {"eos_token_id", "1"},
                       {"head_dim", "256"},
                       {"hidden_act", "\"gelu\""},
                       {"hidden_activation", "\"gelu_pytorch_tanh\""},
                       {"hidden_size", "2048"},
                       {"initializer_range", "0.02"},
                       {"intermediate_size", "16384"},
                       {"max_position_embeddings", "8192"},
                       {"model_type", "\"gemma\""},
                       {"num_attention_heads", "8"},
                       {"num_hidden_layers", "18"},
                       {"num_key_value_heads", "1"},
                       {"pad_token_id", "0"},
                       {"rms_norm_eps", "1e-06"},
                       {"rope_scaling", "null"},
                       {"rope_theta", "10000.0"},
                       {"torch_dtype", "\"bfloat16\""},
                       {"vocab_size", "256000"}};

TEST(HfConfigJson, GemmaHasGeGluOnePlusWeightNormsAndScaledEmbeddings) {
  const HfModelConfig hf = parse(kGemma);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_EQ(hf.model_type, "gemma");
  EXPECT_EQ(hf.shape.mlp_activation, MlpActivation::kGeluTanh);
  EXPECT_TRUE(hf.shape.norm_one_plus_weight);
  EXPECT_TRUE(hf.shape.scale_embeddings);
  EXPECT_FALSE(hf.shape.qk_norm);
  EXPECT_EQ(hf.shape.head_dim(), 256);
  EXPECT_EQ(hf.shape.n_kv_heads, 1);
  EXPECT_EQ(hf.shape.proj_bias_mask, 0u);
  EXPECT_TRUE(hf.shape.tie_embeddings);  // absent: GemmaConfig's default
  // GemmaConfig's defaults and transformers 5's single key: head_dim 256, hidden_act alone.
  const HfModelConfig bare = parse(with(without(without(kGemma, "head_dim"), "hidden_activation"),
                                        "hidden_act", "\"gelu_pytorch_tanh\""));
  ASSERT_TRUE(bare.ok()) << all_errors(bare.errors);
  EXPECT_EQ(bare.shape, hf.shape);
  // "gelu" alone is the tanh approximation in a Gemma config (GemmaConfig rewrites it so) ...
  const HfModelConfig legacy = parse(without(kGemma, "hidden_activation"));
  ASSERT_TRUE(legacy.ok()) << all_errors(legacy.errors);
  EXPECT_EQ(legacy.shape.mlp_activation, MlpActivation::kGeluTanh);
  // ... and hidden_activation, which the MLP read first, is checked like hidden_act.
  const HfModelConfig exact = parse(with(kGemma, "hidden_activation", "\"gelu_fast\""));
  ASSERT_EQ(exact.errors.size(), 1u);
  EXPECT_EQ(exact.errors[0].key, "hidden_activation");
  // Encoder-style attention is refused, not ignored.
  const HfModelConfig bidirectional = parse(with(kGemma, "use_bidirectional_attention", "true"));
  ASSERT_EQ(bidirectional.errors.size(), 1u);
  EXPECT_EQ(bidirectional.errors[0].key, "use_bidirectional_attention");
  EXPECT_TRUE(parse(with(kGemma, "use_bidirectional_attention", "null")).ok());
  // attention_bias puts biases on q/k/v/o; a Llama config may use the tanh GELU too.
  EXPECT_EQ(parse(with(kGemma, "attention_bias", "true")).shape.proj_bias_mask,
            kQkv | bias_bit(Proj::kO));
  const HfModelConfig llama = parse(with(kSmolLm, "hidden_act", "\"gelu_pytorch_tanh\""));
  ASSERT_TRUE(llama.ok()) << all_errors(llama.errors);
  EXPECT_EQ(llama.shape.mlp_activation, MlpActivation::kGeluTanh);
  EXPECT_FALSE(llama.shape.norm_one_plus_weight);
  EXPECT_FALSE(llama.shape.scale_embeddings);
}

// google/gemma-3-1b-it's config.json (transformers 4.50 layout): the local RoPE base as its own
// key, the window pattern as an integer, query_pre_attn_scalar.
const Fields kGemma3 = {{"architectures", "[\"Gemma3ForCausalLM\"]"},
                        {"attention_bias", "false"},
                        {"attn_logit_softcapping", "null"},
                        {"final_logit_softcapping", "null"},
                        {"head_dim", "256"},
                        {"hidden_activation", "\"gelu_pytorch_tanh\""},
                        {"hidden_size", "1152"},
                        {"intermediate_size", "6912"},
                        {"max_position_embeddings", "32768"},
                        {"model_type", "\"gemma3_text\""},
                        {"num_attention_heads", "4"},
                        {"num_hidden_layers", "26"},
                        {"num_key_value_heads", "1"},
                        {"query_pre_attn_scalar", "256"},
                        {"rms_norm_eps", "1e-06"},
                        {"rope_local_base_freq", "10000"},
                        {"rope_scaling", "null"},
                        {"rope_theta", "1000000"},
                        {"sliding_window", "512"},
                        {"sliding_window_pattern", "6"},
                        {"vocab_size", "262144"}};

TEST(HfConfigJson, Gemma3HasSandwichNormsWindowsAndTwoRopeBases) {
  const HfModelConfig hf = parse(kGemma3);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  const ModelConfig& m = hf.shape;
  EXPECT_EQ(hf.model_type, "gemma3_text");
  EXPECT_TRUE(m.sandwich_norms && m.qk_norm && m.norm_one_plus_weight && m.scale_embeddings);
  EXPECT_EQ(m.mlp_activation, MlpActivation::kGeluTanh);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_EQ(m.head_dim(), 256);
  EXPECT_EQ(m.query_pre_attn_scalar, 256.0);
  EXPECT_EQ(m.rope_theta, 1e6);
  EXPECT_EQ(m.rope_local_theta, 1e4);
  EXPECT_EQ(m.rope_scaling, RopeScaling::kNone);
  EXPECT_EQ(m.sliding_window, 512);
  // Every sixth layer (5, 11, 17, 23) is full attention, the others slide.
  ASSERT_EQ(m.layer_types.size(), 26u);
  for (int l = 0; l < 26; ++l) {
    EXPECT_EQ(m.layer_types[l], l % 6 == 5 ? "full_attention" : "sliding_attention") << l;
  }
  // The 4B and larger text configs scale the full layers' RoPE linearly.
  const HfModelConfig scaled =
      parse(with(kGemma3, "rope_scaling", "{\"factor\": 8.0, \"rope_type\": \"linear\"}"));
  ASSERT_TRUE(scaled.ok()) << all_errors(scaled.errors);
  EXPECT_EQ(scaled.shape.rope_scaling, RopeScaling::kLinear);
  EXPECT_EQ(scaled.shape.rope_factor, 8.0);
  // No soft caps (null here, and Gemma3TextConfig's default when absent); a number is read.
  EXPECT_EQ(m.attn_logit_softcapping, 0.0);
  EXPECT_EQ(m.final_logit_softcapping, 0.0);
  EXPECT_EQ(parse(without(kGemma3, "final_logit_softcapping")).shape.final_logit_softcapping, 0.0);
  const HfModelConfig capped = parse(with(kGemma3, "final_logit_softcapping", "30.0"));
  ASSERT_TRUE(capped.ok()) << all_errors(capped.errors);
  EXPECT_EQ(capped.shape.final_logit_softcapping, 30.0);
  // Defaults when absent, as Gemma3TextConfig's: window 4096, scalar 256, both RoPE bases.
  const HfModelConfig bare =
      parse(without(without(without(without(kGemma3, "sliding_window"), "query_pre_attn_scalar"),
                            "rope_local_base_freq"),
                    "rope_theta"));
  ASSERT_TRUE(bare.ok()) << all_errors(bare.errors);
  EXPECT_EQ(bare.shape.sliding_window, 4096);
  EXPECT_EQ(bare.shape.query_pre_attn_scalar, 256.0);
  EXPECT_EQ(bare.shape.rope_theta, 1e6);
  EXPECT_EQ(bare.shape.rope_local_theta, 1e4);
}

// google/gemma-2-2b's config.json (transformers 4.42 layout, no layer_types): sandwich norms
// without q/k norms, soft caps on the scores and the final logits, windows in every other layer.
const Fields kGemma2 = {{"architectures", "[\"Gemma2ForCausalLM\"]"},
                        {"attention_bias", "false"},
                        {"attn_logit_softcapping", "50.0"},
                        {"final_logit_softcapping", "30.0"},
                        {"head_dim", "256"},
                        {"hidden_act", "\"gelu_pytorch_tanh\""},
                        {"hidden_activation", "\"gelu_pytorch_tanh\""},
                        {"hidden_size", "2304"},
                        {"intermediate_size", "9216"},
                        {"max_position_embeddings", "8192"},
                        {"model_type", "\"gemma2\""},
                        {"num_attention_heads", "8"},
                        {"num_hidden_layers", "26"},
                        {"num_key_value_heads", "4"},
                        {"query_pre_attn_scalar", "256"},
                        {"rms_norm_eps", "1e-06"},
                        {"rope_theta", "10000.0"},
                        {"sliding_window", "4096"},
                        {"vocab_size", "256000"}};

TEST(HfConfigJson, Gemma2HasSoftCapsSandwichNormsAndAlternatingWindows) {
  const HfModelConfig hf = parse(kGemma2);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  const ModelConfig& m = hf.shape;
  EXPECT_EQ(hf.model_type, "gemma2");
  EXPECT_TRUE(m.sandwich_norms && m.norm_one_plus_weight && m.scale_embeddings);
  EXPECT_FALSE(m.qk_norm);
  EXPECT_EQ(m.mlp_activation, MlpActivation::kGeluTanh);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_EQ(m.head_dim(), 256);
  EXPECT_EQ(m.query_pre_attn_scalar, 256.0);
  EXPECT_EQ(m.attn_logit_softcapping, 50.0);
  EXPECT_EQ(m.final_logit_softcapping, 30.0);
  EXPECT_EQ(m.rope_theta, 1e4);
  EXPECT_EQ(m.rope_local_theta, 0.0);  // one RoPE base for every layer
  EXPECT_EQ(m.sliding_window, 4096);
  // Gemma2Config: layer l slides when (l + 1) % 2 != 0, so the even layers slide.
  ASSERT_EQ(m.layer_types.size(), 26u);
  for (int l = 0; l < 26; ++l) {
    EXPECT_EQ(m.layer_types[l], l % 2 == 0 ? "sliding_attention" : "full_attention") << l;
  }
  // Absent caps take Gemma2Config's defaults (50, 30), null ones none; a bad one is named.
  const HfModelConfig bare =
      parse(without(without(kGemma2, "attn_logit_softcapping"), "final_logit_softcapping"));
  ASSERT_TRUE(bare.ok()) << all_errors(bare.errors);
  EXPECT_EQ(bare.shape.attn_logit_softcapping, 50.0);
  EXPECT_EQ(bare.shape.final_logit_softcapping, 30.0);
  const HfModelConfig uncapped = parse(with(kGemma2, "attn_logit_softcapping", "null"));
  ASSERT_TRUE(uncapped.ok()) << all_errors(uncapped.errors);
  EXPECT_EQ(uncapped.shape.attn_logit_softcapping, 0.0);
  EXPECT_EQ(uncapped.shape.final_logit_softcapping, 30.0);
  const HfModelConfig bad = parse(with(kGemma2, "final_logit_softcapping", "-1"));
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_EQ(bad.errors[0].key, "final_logit_softcapping");
  // layer_types, where the file has it, wins over the alternation.
  const HfModelConfig listed = parse(with(with(kGemma2, "num_hidden_layers", "2"), "layer_types",
                                          "[\"full_attention\", \"sliding_attention\"]"));
  ASSERT_TRUE(listed.ok()) << all_errors(listed.errors);
  EXPECT_EQ(listed.shape.layer_types,
            (std::vector<std::string>{"full_attention", "sliding_attention"}));
}

// google/gemma-3-4b-it's config.json (Gemma3ForConditionalGeneration, model_type gemma3): the
// decoder's config nested in text_config and written without the keys at Gemma3TextConfig's
// defaults, next to the vision tower's.
const std::string kGemma3TextConfig =
    "{\"hidden_size\": 2560, \"intermediate_size\": 10240, \"model_type\": \"gemma3_text\", "
    "\"num_hidden_layers\": 34, \"rope_scaling\": {\"factor\": 8.0, \"rope_type\": \"linear\"}, "
    "\"sliding_window\": 1024}";
const Fields kGemma3Multimodal = {
    {"architectures", "[\"Gemma3ForConditionalGeneration\"]"},
    {"boi_token_index", "255999"},
    {"eoi_token_index", "256000"},
    {"eos_token_id", "[1, 106]"},
    {"image_token_index", "262144"},
    {"initializer_range", "0.02"},
    {"mm_tokens_per_image", "256"},
    {"model_type", "\"gemma3\""},
    {"text_config", kGemma3TextConfig},
    {"torch_dtype", "\"bfloat16\""},
    {"vision_config",
     "{\"hidden_size\": 1152, \"image_size\": 896, \"intermediate_size\": 4304, \"model_type\": "
     "\"siglip_vision_model\", \"num_attention_heads\": 16, \"num_hidden_layers\": 27, "
     "\"patch_size\": 14, \"vision_use_head\": false}"}};

TEST(HfConfigJson, Gemma3MultimodalReadsTheTextConfigWithItsDefaults) {
  const HfModelConfig hf = parse(kGemma3Multimodal);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  const ModelConfig& m = hf.shape;
  EXPECT_TRUE(m.multimodal_checkpoint);
  EXPECT_EQ(hf.model_type, "gemma3_text");
  EXPECT_TRUE(m.sandwich_norms && m.qk_norm && m.norm_one_plus_weight && m.scale_embeddings);
  EXPECT_EQ(m.dim, 2560);
  EXPECT_EQ(m.n_layers, 34);
  EXPECT_EQ(m.ffn_dim, 10240);
  // Gemma3TextConfig's defaults for what the file leaves out.
  EXPECT_EQ(m.n_heads, 8);
  EXPECT_EQ(m.n_kv_heads, 4);
  EXPECT_EQ(m.head_dim(), 256);
  EXPECT_EQ(m.vocab_size, 262208);
  EXPECT_EQ(m.max_seq_len, 131072);
  EXPECT_EQ(m.norm_eps, 1e-6);
  EXPECT_EQ(m.query_pre_attn_scalar, 256.0);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_EQ(m.mlp_activation, MlpActivation::kGeluTanh);
  EXPECT_EQ(m.rope_theta, 1e6);
  EXPECT_EQ(m.rope_local_theta, 1e4);
  EXPECT_EQ(m.rope_scaling, RopeScaling::kLinear);
  EXPECT_EQ(m.rope_factor, 8.0);
  EXPECT_EQ(m.final_logit_softcapping, 0.0);
  EXPECT_EQ(m.sliding_window, 1024);
  ASSERT_EQ(m.layer_types.size(), 34u);
  for (int l = 0; l < 34; ++l) {
    EXPECT_EQ(m.layer_types[l], l % 6 == 5 ? "full_attention" : "sliding_attention") << l;
  }
  // Sources and errors name the nested keys.
  for (const HfShapeSource& src : hf.sources) {
    if (src.yaml_key == "model.dim") {
      EXPECT_EQ(src.json_key, "text_config.hidden_size");
    }
  }
  const HfModelConfig bad =
      parse(with(kGemma3Multimodal, "text_config",
                 "{\"hidden_size\": 2560, \"intermediate_size\": 10240, \"num_hidden_layers\": 34, "
                 "\"sliding_window\": 0}"));
  ASSERT_EQ(bad.errors.size(), 1u) << all_errors(bad.errors);
  EXPECT_EQ(bad.errors[0].key, "text_config.sliding_window");
  const HfModelConfig other = parse(
      with(kGemma3Multimodal, "text_config", "{\"hidden_size\": 64, \"model_type\": \"llama\"}"));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.errors[0].key, "text_config.model_type");
  const HfModelConfig bare = parse(without(kGemma3Multimodal, "text_config"));
  ASSERT_EQ(bare.errors.size(), 1u) << all_errors(bare.errors);
  EXPECT_EQ(bare.errors[0].key, "text_config");
  // A plain text checkpoint is not multimodal.
  EXPECT_FALSE(parse(kGemma3).shape.multimodal_checkpoint);
}

// HuggingFaceTB/SmolLM3-3B's config.json: Llama's decoder with every fourth layer NoPE.
const Fields kSmolLm3 = {{"architectures", "[\"SmolLM3ForCausalLM\"]"},
                         {"attention_bias", "false"},
                         {"hidden_act", "\"silu\""},
                         {"hidden_size", "2048"},
                         {"intermediate_size", "11008"},
                         {"max_position_embeddings", "65536"},
                         {"mlp_bias", "false"},
                         {"model_type", "\"smollm3\""},
                         {"no_rope_layer_interval", "4"},
                         {"no_rope_layers", "[1, 1, 1, 0, 1, 1, 1, 0]"},
                         {"num_attention_heads", "16"},
                         {"num_hidden_layers", "8"},
                         {"num_key_value_heads", "4"},
                         {"rms_norm_eps", "1e-06"},
                         {"rope_scaling", "null"},
                         {"rope_theta", "5000000.0"},
                         {"sliding_window", "null"},
                         {"use_sliding_window", "false"},
                         {"vocab_size", "128256"}};

TEST(HfConfigJson, SmolLM3HasNoPeLayers) {
  const HfModelConfig hf = parse(kSmolLm3);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  const ModelConfig& m = hf.shape;
  EXPECT_EQ(hf.model_type, "smollm3");
  EXPECT_EQ(m.no_rope_layers, (std::vector<int>{1, 1, 1, 0, 1, 1, 1, 0}));
  EXPECT_TRUE(m.tie_embeddings);  // SmolLM3Config's default when absent
  EXPECT_EQ(m.rope_theta, 5e6);
  EXPECT_EQ(m.sliding_window, 0);
  EXPECT_TRUE(m.layer_types.empty());
  EXPECT_FALSE(m.qk_norm || m.sandwich_norms || m.norm_one_plus_weight);
  // Without the list, every no_rope_layer_interval-th layer is NoPE.
  const HfModelConfig derived =
      parse(with(without(kSmolLm3, "no_rope_layers"), "no_rope_layer_interval", "2"));
  ASSERT_TRUE(derived.ok()) << all_errors(derived.errors);
  EXPECT_EQ(derived.shape.no_rope_layers, (std::vector<int>{1, 0, 1, 0, 1, 0, 1, 0}));
  // use_sliding_window slides the NoPE layers unless layer_types says otherwise.
  const HfModelConfig windowed =
      parse(with(with(kSmolLm3, "use_sliding_window", "true"), "sliding_window", "512"));
  ASSERT_TRUE(windowed.ok()) << all_errors(windowed.errors);
  EXPECT_EQ(windowed.shape.sliding_window, 512);
  ASSERT_EQ(windowed.shape.layer_types.size(), 8u);
  for (int l = 0; l < 8; ++l) {
    EXPECT_EQ(windowed.shape.layer_types[l], l % 4 == 3 ? "sliding_attention" : "full_attention");
  }
  // A list of the wrong length or with other values is named.
  const HfModelConfig short_list = parse(with(kSmolLm3, "no_rope_layers", "[1, 0]"));
  ASSERT_EQ(short_list.errors.size(), 1u);
  EXPECT_EQ(short_list.errors[0].key, "no_rope_layers");
  const HfModelConfig bad = parse(with(kSmolLm3, "no_rope_layers", "[1, 1, 1, 2, 1, 1, 1, 0]"));
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_EQ(bad.errors[0].key, "no_rope_layers");
  // A Llama config's no_rope_layers (no such key there) is not read.
  EXPECT_TRUE(parse(with(kSmolLm, "no_rope_layers", "[0]")).shape.no_rope_layers.empty());
}

// ibm-granite/granite-3.1-2b-instruct's config.json: Llama's decoder with four multipliers.
const Fields kGranite = {{"architectures", "[\"GraniteForCausalLM\"]"},
                         {"attention_bias", "false"},
                         {"attention_multiplier", "0.015625"},
                         {"embedding_multiplier", "12.0"},
                         {"hidden_act", "\"silu\""},
                         {"hidden_size", "2048"},
                         {"intermediate_size", "8192"},
                         {"logits_scaling", "8.0"},
                         {"max_position_embeddings", "131072"},
                         {"mlp_bias", "false"},
                         {"model_type", "\"granite\""},
                         {"num_attention_heads", "32"},
                         {"num_hidden_layers", "40"},
                         {"num_key_value_heads", "8"},
                         {"residual_multiplier", "0.22"},
                         {"rms_norm_eps", "1e-05"},
                         {"rope_scaling", "null"},
                         {"rope_theta", "5000000.0"},
                         {"tie_word_embeddings", "true"},
                         {"vocab_size", "49155"}};

TEST(HfConfigJson, GraniteHasItsFourMultipliers) {
  const HfModelConfig hf = parse(kGranite);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  const ModelConfig& m = hf.shape;
  EXPECT_EQ(hf.model_type, "granite");
  EXPECT_EQ(m.attention_multiplier, 0.015625);
  EXPECT_EQ(m.embedding_multiplier, 12.0);
  EXPECT_EQ(m.residual_multiplier, 0.22);
  EXPECT_EQ(m.logits_scaling, 8.0);
  EXPECT_EQ(m.head_dim(), 64);
  EXPECT_TRUE(m.tie_embeddings);
  // GraniteConfig's defaults are 1 for each, the scores' included (not 1 / sqrt(head_dim)).
  Fields bare = kGranite;
  for (const char* k :
       {"attention_multiplier", "embedding_multiplier", "residual_multiplier", "logits_scaling"}) {
    bare = without(bare, k);
  }
  const HfModelConfig ones = parse(bare);
  ASSERT_TRUE(ones.ok()) << all_errors(ones.errors);
  EXPECT_EQ(ones.shape.attention_multiplier, 1.0);
  EXPECT_EQ(ones.shape.embedding_multiplier, 1.0);
  EXPECT_EQ(ones.shape.residual_multiplier, 1.0);
  EXPECT_EQ(ones.shape.logits_scaling, 1.0);
  const HfModelConfig bad = parse(with(kGranite, "logits_scaling", "0"));
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_EQ(bad.errors[0].key, "logits_scaling");
  // Other model types leave them at peftrun's defaults, whatever the file says.
  const HfModelConfig llama = parse(with(kSmolLm, "residual_multiplier", "0.5"));
  EXPECT_EQ(llama.shape.residual_multiplier, 1.0);
  EXPECT_EQ(llama.shape.attention_multiplier, 0.0);
}

// allenai/OLMo-2-1124-7B's config.json: post-block norms only, q/k norms over all heads.
const Fields kOlmo2 = {{"architectures", "[\"Olmo2ForCausalLM\"]"},
                       {"attention_bias", "false"},
                       {"hidden_act", "\"silu\""},
                       {"hidden_size", "4096"},
                       {"intermediate_size", "11008"},
                       {"max_position_embeddings", "4096"},
                       {"model_type", "\"olmo2\""},
                       {"num_attention_heads", "32"},
                       {"num_hidden_layers", "32"},
                       {"num_key_value_heads", "32"},
                       {"rms_norm_eps", "1e-06"},
                       {"rope_scaling", "null"},
                       {"rope_theta", "500000"},
                       {"tie_word_embeddings", "false"},
                       {"vocab_size", "100352"}};

TEST(HfConfigJson, Olmo2NormalisesBlockOutputsAndWholeQAndK) {
  const HfModelConfig hf = parse(kOlmo2);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  const ModelConfig& m = hf.shape;
  EXPECT_EQ(hf.model_type, "olmo2");
  EXPECT_FALSE(m.input_norms);
  EXPECT_TRUE(m.sandwich_norms && m.qk_norm && m.qk_norm_full_width);
  EXPECT_FALSE(m.norm_one_plus_weight || m.scale_embeddings || m.tie_embeddings);
  EXPECT_EQ(m.head_dim(), 128);
  EXPECT_EQ(m.rope_theta, 5e5);
  EXPECT_EQ(parse(with(kOlmo2, "attention_bias", "true")).shape.proj_bias_mask,
            kQkv | bias_bit(Proj::kO));
  // The others keep input norms and per-head q/k norms.
  EXPECT_TRUE(parse(kSmolLm).shape.input_norms);
  EXPECT_FALSE(parse(kGemma3).shape.qk_norm_full_width);
}

// microsoft/Phi-3-mini-4k-instruct's config.json: fused qkv_proj / gate_up_proj, a window of
// 2047 in every layer, plain RoPE, base-model dropouts of 0.
const Fields kPhi3 = {{"architectures", "[\"Phi3ForCausalLM\"]"},
                      {"attention_dropout", "0.0"},
                      {"bos_token_id", "1"},
                      {"embd_pdrop", "0.0"},
                      {"eos_token_id", "32000"},
                      {"hidden_act", "\"silu\""},
                      {"hidden_size", "3072"},
                      {"initializer_range", "0.02"},
                      {"intermediate_size", "8192"},
                      {"max_position_embeddings", "4096"},
                      {"model_type", "\"phi3\""},
                      {"num_attention_heads", "32"},
                      {"num_hidden_layers", "32"},
                      {"num_key_value_heads", "32"},
                      {"original_max_position_embeddings", "4096"},
                      {"pad_token_id", "32000"},
                      {"resid_pdrop", "0.0"},
                      {"rms_norm_eps", "1e-05"},
                      {"rope_scaling", "null"},
                      {"rope_theta", "10000.0"},
                      {"sliding_window", "2047"},
                      {"tie_word_embeddings", "false"},
                      {"vocab_size", "32064"}};

TEST(HfConfigJson, Phi3FusesItsProjectionsAndSlidesInEveryLayer) {
  const HfModelConfig hf = parse(kPhi3);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  const ModelConfig& m = hf.shape;
  EXPECT_EQ(hf.model_type, "phi3");
  EXPECT_TRUE(m.fused_projections);
  EXPECT_EQ(m.sliding_window, 2047);
  EXPECT_TRUE(m.layer_types.empty());  // every layer
  EXPECT_EQ(m.head_dim(), 96);
  EXPECT_EQ(m.proj_bias_mask, 0u);
  EXPECT_FALSE(m.tie_embeddings || m.qk_norm || m.sandwich_norms);
  EXPECT_EQ(parse(with(kPhi3, "sliding_window", "null")).shape.sliding_window, 0);
  // Phi-4 (model_type phi3 too) has no window and GQA.
  const HfModelConfig phi4 =
      parse(with(with(kPhi3, "sliding_window", "null"), "num_key_value_heads", "8"));
  ASSERT_TRUE(phi4.ok()) << all_errors(phi4.errors);
  EXPECT_EQ(phi4.shape.n_kv_heads, 8);
  EXPECT_FALSE(parse(kSmolLm).shape.fused_projections);
}

// Phi-3-mini-128k / Phi-3.5-mini: longrope, which older Phi-3 files call "su" (or "yarn"), with
// its factor max_position_embeddings / original when the object has none.
TEST(HfConfigJson, Phi3LongropeUnderAllThreeNames) {
  for (const char* name : {"longrope", "su", "yarn"}) {
    const Fields f = with(with(kPhi3, "max_position_embeddings", "131072"), "rope_scaling",
                          std::string("{\"type\": \"") + name +
                              "\", \"short_factor\": [1.0, 1.5], \"long_factor\": [2.0, 30.0]}");
    const HfModelConfig hf = parse(f);
    ASSERT_TRUE(hf.ok()) << name << ": " << all_errors(hf.errors);
    const ModelConfig& m = hf.shape;
    EXPECT_EQ(m.rope_scaling, RopeScaling::kLongrope) << name;
    EXPECT_EQ(m.rope_short_factor, (std::vector<double>{1.0, 1.5}));
    EXPECT_EQ(m.rope_long_factor, (std::vector<double>{2.0, 30.0}));
    EXPECT_EQ(m.rope_original_max_seq_len, 4096);  // the top-level key
    EXPECT_EQ(m.rope_factor, 32.0);                // 131072 / 4096
    EXPECT_EQ(m.rope_attention_factor, 0.0);       // derived from the factor
  }
  // Phi-4-mini: 0.75 of each head rotates; the RoPE object's factor wins over a top-level one.
  const HfModelConfig partial = parse(with(kPhi3, "partial_rotary_factor", "0.75"));
  ASSERT_TRUE(partial.ok()) << all_errors(partial.errors);
  EXPECT_EQ(partial.shape.partial_rotary_factor, 0.75);
  EXPECT_EQ(partial.shape.rotary_dim(), 72);  // int(96 * 0.75)
  const HfModelConfig inner =
      parse(with(with(kPhi3, "partial_rotary_factor", "1.0"), "rope_scaling",
                 "{\"rope_type\": \"default\", \"partial_rotary_factor\": 0.5}"));
  ASSERT_TRUE(inner.ok()) << all_errors(inner.errors);
  EXPECT_EQ(inner.shape.partial_rotary_factor, 0.5);
  // Elsewhere "yarn" is yarn.
  EXPECT_EQ(parse(with(kSmolLm, "rope_scaling", "{\"type\": \"yarn\", \"factor\": 4.0}"))
                .shape.rope_scaling,
            RopeScaling::kYarn);
}

// Qwen3 / Mistral-Nemo style: heads narrower or wider than hidden_size / num_attention_heads.
TEST(HfConfigJson, AnExplicitHeadDimIsKeptAndADerivableOneIsNot) {
  const HfModelConfig apart = parse(with(kSmolLm, "head_dim", "128"));
  ASSERT_TRUE(apart.ok()) << all_errors(apart.errors);
  EXPECT_EQ(apart.shape.explicit_head_dim, 128);
  EXPECT_EQ(apart.shape.head_dim(), 128);
  const HfModelConfig same = parse(with(kSmolLm, "head_dim", "64"));  // 576 / 9
  ASSERT_TRUE(same.ok()) << all_errors(same.errors);
  EXPECT_EQ(same.shape.explicit_head_dim, 0);
  EXPECT_EQ(same.shape, parse(kSmolLm).shape);
  // With its own head_dim, hidden_size need not divide into the heads.
  const HfModelConfig uneven = parse(with(with(kSmolLm, "hidden_size", "580"), "head_dim", "64"));
  ASSERT_TRUE(uneven.ok()) << all_errors(uneven.errors);
  EXPECT_EQ(uneven.shape.head_dim(), 64);
}

// Llama 3.2 1B's RoPE, in the rope_scaling layout its config.json has.
TEST(HfConfigJson, Llama3RopeScalingIsRead) {
  const std::string rope =
      "{\"factor\": 32.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, "
      "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}";
  const Fields fields = with(with(kSmolLm, "rope_theta", "500000.0"), "rope_scaling", rope);
  const HfModelConfig hf = parse(fields);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_EQ(hf.shape.rope_theta, 500000.0);
  EXPECT_EQ(hf.shape.rope_scaling, RopeScaling::kLlama3);
  EXPECT_EQ(hf.shape.rope_factor, 32.0);
  EXPECT_EQ(hf.shape.rope_low_freq_factor, 1.0);
  EXPECT_EQ(hf.shape.rope_high_freq_factor, 4.0);
  EXPECT_EQ(hf.shape.rope_original_max_seq_len, 8192);
  // Errors about these keys point into the object.
  const std::string line = line_of(fields, "rope_scaling");
  for (const HfShapeSource& src : hf.sources) {
    const std::string k = src.yaml_key;
    if (k != "model.rope_scaling" && k != "model.rope_factor" &&
        k != "model.rope_low_freq_factor" && k != "model.rope_high_freq_factor" &&
        k != "model.rope_original_max_seq_len") {
      continue;  // plain rope_theta, and yarn's keys (absent here)
    }
    EXPECT_EQ(std::to_string(src.line), line) << src.yaml_key;
    EXPECT_EQ(src.json_key.rfind("rope_scaling.", 0), 0u) << src.json_key;
  }
}

TEST(HfConfigJson, RopeParametersLayoutCarriesTheVariantToo) {
  const Fields v5 = with(without(kSmolLm, "rope_theta"), "rope_parameters",
                         "{\"rope_type\": \"linear\", \"rope_theta\": 100000.0, \"factor\": 2.0}");
  const HfModelConfig hf = parse(v5);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_EQ(hf.shape.rope_theta, 1e5);
  EXPECT_EQ(hf.shape.rope_scaling, RopeScaling::kLinear);
  EXPECT_EQ(hf.shape.rope_factor, 2.0);
  for (const HfShapeSource& src : hf.sources) {
    if (src.yaml_key == "model.rope_scaling") {
      EXPECT_EQ(src.json_key, "rope_parameters.rope_type");
    }
    if (src.yaml_key == "model.rope_factor") {
      EXPECT_EQ(src.json_key, "rope_parameters.factor");
    }
  }
}

// Qwen3's documented long-context setting, with the optional keys after it.
TEST(HfConfigJson, YarnRopeScalingIsRead) {
  const HfModelConfig qwen3 = parse(with(kSmolLm, "rope_scaling",
                                         "{\"rope_type\": \"yarn\", \"factor\": 4.0, "
                                         "\"original_max_position_embeddings\": 32768}"));
  ASSERT_TRUE(qwen3.ok()) << all_errors(qwen3.errors);
  EXPECT_EQ(qwen3.shape.rope_scaling, RopeScaling::kYarn);
  EXPECT_EQ(qwen3.shape.rope_factor, 4.0);
  EXPECT_EQ(qwen3.shape.rope_original_max_seq_len, 32768);
  EXPECT_EQ(qwen3.shape.rope_beta_fast, 32.0);
  EXPECT_TRUE(qwen3.shape.rope_truncate);
  const HfModelConfig all =
      parse(with(kSmolLm, "rope_scaling",
                 "{\"type\": \"yarn\", \"factor\": 8.0, \"beta_fast\": 24.0, \"beta_slow\": 2.0, "
                 "\"attention_factor\": 0.9, \"truncate\": false}"));
  ASSERT_TRUE(all.ok()) << all_errors(all.errors);
  EXPECT_EQ(all.shape.rope_beta_fast, 24.0);
  EXPECT_EQ(all.shape.rope_beta_slow, 2.0);
  EXPECT_EQ(all.shape.rope_attention_factor, 0.9);
  EXPECT_FALSE(all.shape.rope_truncate);
  EXPECT_EQ(all.shape.rope_original_max_seq_len, 0);  // = max_position_embeddings
  const HfModelConfig deepseek = parse(
      with(kSmolLm, "rope_scaling",
           "{\"type\": \"yarn\", \"factor\": 8.0, \"mscale\": 1.0, \"mscale_all_dim\": 1.0}"));
  ASSERT_EQ(deepseek.errors.size(), 2u) << all_errors(deepseek.errors);
  EXPECT_EQ(deepseek.errors[0].key, "rope_scaling.mscale");
}

TEST(HfConfigJson, DefaultOrDynamicRopeTypesAreAccepted) {
  const HfModelConfig plain = parse(with(kSmolLm, "rope_scaling", "{\"rope_type\": \"default\"}"));
  ASSERT_TRUE(plain.ok()) << all_errors(plain.errors);
  EXPECT_EQ(plain.shape.rope_scaling, RopeScaling::kNone);
  const HfModelConfig dynamic =
      parse(with(kSmolLm, "rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2.0}"));
  ASSERT_TRUE(dynamic.ok()) << all_errors(dynamic.errors);
  EXPECT_EQ(dynamic.shape.rope_scaling, RopeScaling::kDynamic);
  EXPECT_EQ(dynamic.shape.rope_factor, 2.0);
}

// As transformers: a top-level original_max_position_embeddings wins over the object's, and
// without either the pretraining context is max_position_embeddings (recorded as 0).
TEST(HfConfigJson, Llama3OriginalContextComesFromTheTopLevelFirst) {
  const std::string rope =
      "{\"factor\": 8.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, "
      "\"rope_type\": \"llama3\"%s}";
  auto rope_with = [&](const std::string& extra) {
    std::string r = rope;
    return r.replace(r.find("%s"), 2, extra);
  };
  const HfModelConfig none = parse(with(kSmolLm, "rope_scaling", rope_with("")));
  ASSERT_TRUE(none.ok()) << all_errors(none.errors);
  EXPECT_EQ(none.shape.rope_original_max_seq_len, 0);
  const HfModelConfig both = parse(
      with(with(kSmolLm, "rope_scaling", rope_with(", \"original_max_position_embeddings\": 4096")),
           "original_max_position_embeddings", "1024"));
  ASSERT_TRUE(both.ok()) << all_errors(both.errors);
  EXPECT_EQ(both.shape.rope_original_max_seq_len, 1024);
}

TEST(HfConfigJson, SourcesGiveThePositionOfEveryShapeKey) {
  const Fields fields = without(kSmolLm, "rope_theta");
  const HfModelConfig hf = parse(fields);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  ASSERT_EQ(hf.sources.size(), hf_shape_keys().size());
  for (std::size_t i = 0; i < hf.sources.size(); ++i) {
    const HfShapeSource& s = hf.sources[i];
    EXPECT_EQ(s.yaml_key, hf_shape_keys()[i]);
    const std::string at = std::to_string(s.line) + ":" + std::to_string(s.column);
    if (pos(fields, s.json_key) == "?") {  // rope_theta, and rope_scaling's (it is null)
      EXPECT_EQ(at, "0:0") << s.json_key << ": an absent key has no position";
    } else {
      EXPECT_EQ(at, pos(fields, s.json_key)) << s.json_key;
    }
  }
}

TEST(HfConfigJson, CopyHfShapeCopiesExactlyTheShapeKeysAndBiasMask) {
  ModelConfig from = parse(kQwen2).shape;
  ModelConfig to;
  to.path = "/somewhere";
  to.init_std = 0.5;
  copy_hf_shape(from, to);
  EXPECT_EQ(to.path, "/somewhere");
  EXPECT_EQ(to.init_std, 0.5);
  to.path = from.path;
  to.init_std = from.init_std;
  EXPECT_EQ(to, from);
}

TEST(HfConfigJson, ReadsTheFolderConfigJson) {
  ScratchDir scratch;
  const std::string dir = scratch.checkpoint("smol", json(kSmolLm));
  const HfModelConfig hf = read_hf_model_config(dir);
  ASSERT_TRUE(hf.ok()) << all_errors(hf.errors);
  EXPECT_EQ(hf.file, dir + "/config.json");
  EXPECT_EQ(hf.shape.dim, 576);
}

TEST(HfConfigJson, MissingConfigJsonIsOneErrorNamingIt) {
  ScratchDir scratch;
  fs::create_directory(scratch.path() / "empty");
  const HfModelConfig hf = read_hf_model_config(scratch.file("empty"));
  ASSERT_EQ(hf.errors.size(), 1u) << all_errors(hf.errors);
  EXPECT_EQ(hf.errors[0].file, scratch.file("empty") + "/config.json");
  EXPECT_NE(hf.errors[0].message.find("cannot be read"), std::string::npos);
}

TEST(HfConfigJson, GarbageNeverThrows) {
  const std::vector<std::string> texts = {"",
                                          "{",
                                          "}",
                                          "{\"a\": [",
                                          "\x01\x02",
                                          "{\"a\": {\"b\": }}",
                                          "[1, 2]",
                                          "{\"model_type\": [\"llama\"]}",
                                          "{{}: 1}",
                                          "null",
                                          std::string("\0{}", 3),
                                          "{\"a\": !!binary x}"};
  for (const std::string& text : texts) {
    HfModelConfig hf;
    EXPECT_NO_THROW(hf = parse_hf_model_config(text, "c.json")) << text;
    EXPECT_FALSE(hf.ok()) << text;
  }
}

// ---------------------------------------------------------------------------------------------
// Refused configs: exactly one error, at config.json's LINE:COL, naming the key.
// ---------------------------------------------------------------------------------------------

struct HfBadCase {
  std::string name;
  std::string text;  // config.json
  std::string key;
  std::string message;  // substring
  std::string where;    // "LINE:COL"
};

// `pos_key` is the key whose value the error points at: "" = `key` itself, "-" = the object's
// opening brace (where a missing key is reported).
HfBadCase bad(std::string name, const Fields& fields, const std::string& key,
              const std::string& message, const std::string& pos_key = "") {
  const std::string at = pos_key == "-" ? "1:1" : pos(fields, pos_key.empty() ? key : pos_key);
  return {std::move(name), json(fields), key, message, at};
}

// A case whose error points inside `outer`'s object value, `prefix.size()` characters after its
// opening brace.
HfBadCase bad_inside(std::string name, const Fields& fields, const std::string& outer,
                     const std::string& prefix, const std::string& key,
                     const std::string& message) {
  const std::string at = pos(fields, outer);
  const std::size_t colon = at.find(':');
  const int column = std::stoi(at.substr(colon + 1)) + static_cast<int>(prefix.size());
  return {std::move(name), json(fields), key, message,
          at.substr(0, colon) + ":" + std::to_string(column)};
}

// json(fields) without the comma that ends `key`'s line.
std::string missing_comma_after(const Fields& fields, const std::string& key) {
  std::string text = json(fields);
  const std::size_t at = text.find("\"" + key + "\"");
  text.erase(text.find(",\n", at), 1);
  return text;
}

Fields duplicated(Fields fields, const std::string& key, const std::string& value) {
  fields.emplace_back(key, value);
  return fields;
}

std::vector<HfBadCase> bad_cases() {
  return {
      bad("UnknownModelType", with(kSmolLm, "model_type", "\"phi\""), "model_type",
          "unknown model type 'phi', expected one of llama, mistral, qwen2, qwen3, smollm3, "
          "granite, olmo2, phi3, gemma, gemma2, gemma3_text, gemma3"),
      bad_inside("LongropeWithoutLongFactor",
                 with(kPhi3, "rope_scaling", "{\"type\": \"longrope\", \"short_factor\": [1.0]}"),
                 "rope_scaling", "", "rope_scaling.long_factor",
                 "missing, expected a list of numbers > 0 (rope_type longrope reads it)"),
      bad_inside("LongropeFactorThatIsNotPositive",
                 with(kPhi3, "rope_scaling",
                      "{\"type\": \"longrope\", \"short_factor\": [1.0, 0], \"long_factor\": []}"),
                 "rope_scaling", "{\"type\": \"longrope\", \"short_factor\": [1.0, ",
                 "rope_scaling.short_factor", "got 0, expected a finite number > 0"),
      bad("Phi3ResidualDropout", with(kPhi3, "resid_pdrop", "0.1"), "resid_pdrop",
          "got 0.1, expected 0 (peftrun applies no dropout inside the frozen base"),
      bad("Phi3EmbeddingDropout", with(kPhi3, "embd_pdrop", "\"0\""), "embd_pdrop",
          "got the string \"0\", expected 0"),
      bad("HiddenActOtherThanSilu", with(kSmolLm, "hidden_act", "\"gelu\""), "hidden_act",
          "got \"gelu\", expected \"silu\""),
      bad("OddExplicitHeadDim", with(kSmolLm, "head_dim", "63"), "head_dim",
          "63 is not an even number up to 256"),
      bad_inside("RopeScalingTypeNotSupportedYet",
                 with(kSmolLm, "rope_scaling", "{\"type\": \"mrope\", \"factor\": 4.0}"),
                 "rope_scaling", "{\"type\": ", "rope_scaling.type",
                 "RoPE scaling \"mrope\" is not supported yet"),
      bad_inside("Llama3RopeScalingWithoutLowFreqFactor",
                 with(kSmolLm, "rope_scaling",
                      "{\"rope_type\": \"llama3\", \"factor\": 32.0, \"high_freq_factor\": 4.0}"),
                 "rope_scaling", "", "rope_scaling.low_freq_factor",
                 "missing, expected a finite number > 0 (rope_type llama3 reads it)"),
      bad_inside("LinearRopeScalingWithAStringFactor",
                 with(kSmolLm, "rope_scaling", "{\"rope_type\": \"linear\", \"factor\": \"2\"}"),
                 "rope_scaling", "{\"rope_type\": \"linear\", \"factor\": ", "rope_scaling.factor",
                 "got the string \"2\", expected a finite number > 0"),
      bad("RopeScalingThatIsNotAnObject", with(kSmolLm, "rope_scaling", "\"llama3\""),
          "rope_scaling", "got the string \"llama3\", expected null or an object"),
      bad("PartialRotaryFactorOutsidePhi3", with(kSmolLm, "partial_rotary_factor", "0.5"),
          "partial_rotary_factor",
          "got 0.5, expected 1 (transformers' llama rotates whole heads; partial rotary "
          "embeddings are Phi-3's, model_type phi3)"),
      bad("PartialRotaryFactorAboveOne", with(kPhi3, "partial_rotary_factor", "1.5"),
          "partial_rotary_factor", "got 1.5, expected a factor in (0, 1]"),
      {"RopeParametersWithScalingType",
       json(with(kSmolLm, "rope_parameters", "{\"rope_type\": \"mrope\"}")),
       "rope_parameters.rope_type", "RoPE scaling \"mrope\" is not supported yet",
       std::to_string(kSmolLm.size() + 2) + ":36"},
      bad("LayerTypesOfAnotherKind",
          with(with(with(kQwen2, "use_sliding_window", "true"), "sliding_window", "1024"),
               "layer_types", "[\"chunked_attention\"]"),
          "layer_types", "expected \"full_attention\" or \"sliding_attention\""),
      // yaml-cpp reports where it noticed the problem: the key after a missing comma, the
      // stray bracket, or the end of a truncated file.
      {"MissingComma", missing_comma_after(kSmolLm, "hidden_size"), "",
       "malformed JSON: end of map flow not found",
       line_of(kSmolLm, "initializer_range") + ":22"},  // the ':' after the next key
      {"StrayBracket", json(with(kSmolLm, "vocab_size", "]")), "",
       "malformed JSON: illegal flow end", pos(kSmolLm, "vocab_size")},
      {"TruncatedFile", json(kSmolLm).substr(0, json(kSmolLm).rfind('}')), "",
       "malformed JSON: end of map flow not found", std::to_string(kSmolLm.size() + 2) + ":1"},
      {"NotAJsonObject", "model_type: llama\nhidden_size: 576\n", "", "is not a JSON object",
       "1:1"},
      {"TopLevelList", "\n  [1, 2]", "", "is not a JSON object", "2:3"},
      {"EmptyFile", " \n", "", "is empty", "2:1"},
      bad("MissingHiddenSize", without(kSmolLm, "hidden_size"), "hidden_size",
          "missing, expected an integer > 0", "-"),
      bad("MissingModelType", without(kSmolLm, "model_type"), "model_type",
          "missing, expected one of llama, mistral, qwen2", "-"),
      bad("MissingRmsNormEps", without(kSmolLm, "rms_norm_eps"), "rms_norm_eps", "missing", "-"),
      bad("QuotedNumber", with(kSmolLm, "hidden_size", "\"576\""), "hidden_size",
          "got the string \"576\", expected an integer > 0"),
      bad("FractionalInteger", with(kSmolLm, "num_hidden_layers", "30.5"), "num_hidden_layers",
          "got 30.5, expected an integer > 0"),
      bad("NegativeVocab", with(kSmolLm, "vocab_size", "-5"), "vocab_size",
          "got -5, expected an integer > 0"),
      bad("HugeInteger", with(kSmolLm, "intermediate_size", "99999999999"), "intermediate_size",
          "up to 2147483647"),
      bad("NullRequiredKey", with(kSmolLm, "max_position_embeddings", "null"),
          "max_position_embeddings", "got null"),
      bad("StringBoolean", with(kSmolLm, "tie_word_embeddings", "\"true\""), "tie_word_embeddings",
          "got the string \"true\", expected true or false"),
      bad("ListForNumber", with(kSmolLm, "rms_norm_eps", "[1e-05]"), "rms_norm_eps",
          "got a list, expected a finite number > 0"),
      bad("ZeroRopeTheta", with(kSmolLm, "rope_theta", "0"), "rope_theta",
          "expected a finite number > 0"),
      bad("ModelTypeNotAString", with(kSmolLm, "model_type", "7"), "model_type",
          "got 7, expected a string"),
      bad("HeadsNotDividingHidden",
          with(with(kSmolLm, "num_attention_heads", "7"), "num_key_value_heads", "1"),
          "num_attention_heads", "7 does not divide hidden_size 576"),
      bad("OddHeadDim",
          with(with(kSmolLm, "num_attention_heads", "64"), "num_key_value_heads", "8"),
          "num_attention_heads", "odd head dimension 576 / 64 = 9"),
      bad("KvHeadsNotDividingHeads", with(kSmolLm, "num_key_value_heads", "2"),
          "num_key_value_heads", "2 does not divide num_attention_heads 9"),
      {"DuplicateKey", json(duplicated(kSmolLm, "model_type", "\"qwen2\"")), "model_type",
       "given twice (first on line " + line_of(kSmolLm, "model_type") + ")",
       std::to_string(kSmolLm.size() + 2) + ":3"},
  };
}

void PrintTo(const HfBadCase& c, std::ostream* os) {
  *os << c.name;
}

class HfConfigRejects : public ::testing::TestWithParam<HfBadCase> {};

TEST_P(HfConfigRejects, ExactlyOneErrorAtTheKeysPosition) {
  const HfBadCase& c = GetParam();
  HfModelConfig hf;
  ASSERT_NO_THROW(hf = parse_hf_model_config(c.text, "/ckpt/config.json"));
  ASSERT_EQ(hf.errors.size(), 1u) << all_errors(hf.errors);
  const ConfigError& e = hf.errors[0];
  EXPECT_EQ(e.file, "/ckpt/config.json");
  EXPECT_EQ(e.key, c.key) << e.format();
  EXPECT_NE(e.message.find(c.message), std::string::npos) << e.format();
  EXPECT_EQ(std::to_string(e.line) + ":" + std::to_string(e.column), c.where) << e.format();
}

INSTANTIATE_TEST_SUITE_P(HfConfig, HfConfigRejects, ::testing::ValuesIn(bad_cases()),
                         [](const ::testing::TestParamInfo<HfBadCase>& p) { return p.param.name; });

// ---------------------------------------------------------------------------------------------
// The config-loader hook
// ---------------------------------------------------------------------------------------------

class HfConfigHook : public ::testing::Test {
 protected:
  // cfg.yaml with `model.path: <smol>` on line 2, `model_extra` from line 3 on, then the data
  // section with `data_extra` at its end.
  ConfigLoadResult load(const std::string& model_extra,
                        const std::vector<std::string>& overrides = {},
                        const Fields& fields = kSmolLm, const std::string& data_extra = "") {
    ckpt_ = scratch_.checkpoint("smol", json(fields));
    return load_config_text(
        "model:\n  path: smol\n" + model_extra + "data:\n  train: train.tok\n" + data_extra,
        "cfg.yaml", scratch_.path().string(), overrides);
  }
  std::string config_json() const { return ckpt_ + "/config.json"; }

  ScratchDir scratch_;
  std::string ckpt_;
};

TEST_F(HfConfigHook, ShapeComesFromConfigJson) {
  const ConfigLoadResult r = load("");
  ASSERT_TRUE(r.ok()) << all_errors(r.errors);
  ModelConfig expected = parse(kSmolLm).shape;
  expected.path = ckpt_;
  EXPECT_EQ(r.config.model, expected);
}

TEST_F(HfConfigHook, BiasMaskReachesModelConfig) {
  const ConfigLoadResult r = load("", {}, kQwen2);
  ASSERT_TRUE(r.ok()) << all_errors(r.errors);
  EXPECT_EQ(r.config.model.proj_bias_mask, kQkv);
}

TEST_F(HfConfigHook, ModelPathFromSetAlsoReadsConfigJson) {
  scratch_.checkpoint("qwen", json(kQwen2));
  const ConfigLoadResult r = load("", {"model.path=" + scratch_.file("qwen")});
  ASSERT_TRUE(r.ok()) << all_errors(r.errors);
  EXPECT_EQ(r.config.model.dim, 896);
}

TEST_F(HfConfigHook, ResolvedConfigPrintsTheCheckpointShapeAndRoundTrips) {
  const ConfigLoadResult r = load("");
  ASSERT_TRUE(r.ok()) << all_errors(r.errors);
  const std::string yaml = config_to_yaml(r.config);
  for (const std::string line : {"  dim: 576\n", "  n_layers: 30\n", "  n_heads: 9\n",
                                 "  n_kv_heads: 3\n", "  ffn_dim: 1536\n", "  vocab_size: 49152\n",
                                 "  max_seq_len: 2048\n", "  tie_embeddings: true\n"}) {
    EXPECT_NE(yaml.find(line), std::string::npos) << line << yaml;
  }
  // The printed config restates every shape key; loading it again must agree with config.json.
  ConfigLoadResult again = load_config_text(yaml, "resolved.yaml", "/");
  ASSERT_TRUE(again.ok()) << all_errors(again.errors) << "\n" << yaml;
  again.config.source_file = r.config.source_file;
  EXPECT_EQ(again.config, r.config);
}

TEST_F(HfConfigHook, AgreeingExplicitKeysAreAccepted) {
  const ConfigLoadResult r = load(
      "  dim: 576\n  n_kv_heads: 3\n  rope_theta: 1e4\n  norm_eps: 0.00001\n"
      "  tie_embeddings: true\n",
      {"model.n_layers=30"});
  ASSERT_TRUE(r.ok()) << all_errors(r.errors);
  EXPECT_EQ(r.config.model.dim, 576);
}

TEST_F(HfConfigHook, DisagreeingYamlKeyIsRejectedAtItsPosition) {
  const ConfigLoadResult r = load("  dim: 128\n");
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r.errors);
  EXPECT_EQ(r.errors[0].format(), "cfg.yaml:3:8: model.dim: 128 disagrees with " + config_json() +
                                      " hidden_size 576; remove it or make it match");
}

TEST_F(HfConfigHook, DisagreeingSetOverrideIsRejectedAtItsPosition) {
  const ConfigLoadResult r = load("", {"train.steps=30", "model.tie_embeddings=false"});
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r.errors);
  EXPECT_EQ(where(r.errors[0]), "--set:2:22");
  EXPECT_EQ(r.errors[0].key, "model.tie_embeddings");
  EXPECT_NE(r.errors[0].message.find("false disagrees with " + config_json() +
                                     " tie_word_embeddings true"),
            std::string::npos)
      << r.errors[0].format();
}

TEST_F(HfConfigHook, DisagreementWithAnAbsentKeyNamesItsDefault) {
  const ConfigLoadResult r = load("  rope_theta: 500000\n", {}, without(kSmolLm, "rope_theta"));
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r.errors);
  EXPECT_NE(r.errors[0].message.find("5.0e+05 disagrees with " + config_json() +
                                     " rope_theta 10000.0 (its default when absent)"),
            std::string::npos)
      << r.errors[0].format();
}

TEST_F(HfConfigHook, EveryDisagreeingKeyIsReported) {
  const ConfigLoadResult r = load("  dim: 64\n  n_heads: 4\n  vocab_size: 256\n");
  ASSERT_EQ(r.errors.size(), 3u) << all_errors(r.errors);
  EXPECT_EQ(r.errors[0].key, "model.dim");
  EXPECT_EQ(r.errors[1].key, "model.n_heads");
  EXPECT_EQ(r.errors[2].key, "model.vocab_size");
}

TEST_F(HfConfigHook, SeqLenAboveMaxPositionEmbeddingsIsRejected) {
  const ConfigLoadResult r = load("", {}, kSmolLm, "  seq_len: 4096\n");
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r.errors);
  EXPECT_EQ(r.errors[0].format(),
            "cfg.yaml:5:12: data.seq_len: 4096 is more than model.max_seq_len (2048), expected at "
            "most 2048");
  const ConfigLoadResult s = load("", {"data.seq_len=4096"});
  ASSERT_EQ(s.errors.size(), 1u) << all_errors(s.errors);
  EXPECT_EQ(where(s.errors[0]), "--set:1:14");
  // 2048 itself is allowed.
  EXPECT_TRUE(load("", {"data.seq_len=2048"}).ok());
}

TEST_F(HfConfigHook, DefaultSeqLenAboveMaxPositionEmbeddingsPointsIntoConfigJson) {
  const Fields short_context = with(kSmolLm, "max_position_embeddings", "64");
  const ConfigLoadResult r = load("", {}, short_context);
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r.errors);
  EXPECT_EQ(r.errors[0].key, "data.seq_len");
  EXPECT_EQ(where(r.errors[0]),
            config_json() + ":" + pos(short_context, "max_position_embeddings"));
  EXPECT_NE(r.errors[0].message.find("128 is more than model.max_seq_len (64)"), std::string::npos);
}

// The checkpoint's window is the model's: the YAML may restate it, not change it.
TEST_F(HfConfigHook, SlidingWindowComesFromTheCheckpoint) {
  const ConfigLoadResult ok = load("", {"data.seq_len=8192"}, kMistral);
  ASSERT_TRUE(ok.ok()) << all_errors(ok.errors);
  EXPECT_EQ(ok.config.model.sliding_window, 4096);
  EXPECT_TRUE(load("", {"model.sliding_window=4096"}, kMistral).ok());
  const ConfigLoadResult r = load("", {"model.sliding_window=1024"}, kMistral);
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r.errors);
  EXPECT_NE(r.errors[0].message.find("disagrees with"), std::string::npos) << r.errors[0].message;
}

TEST_F(HfConfigHook, ConfigJsonProblemsAreReportedOnceWithTheirPosition) {
  const Fields gelu = with(kSmolLm, "hidden_act", "\"gelu\"");
  // The YAML restates a key and sets seq_len above the (unusable) shape's default max_seq_len:
  // neither may add an echo of the config.json problem.
  const ConfigLoadResult r = load("  dim: 576\n", {"data.seq_len=1024"}, gelu);
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r.errors);
  EXPECT_EQ(r.errors[0].format(), config_json() + ":" + pos(gelu, "hidden_act") +
                                      ": hidden_act: got \"gelu\", expected \"silu\" or "
                                      "\"gelu_pytorch_tanh\" (peftrun's gated MLP computes SwiGLU "
                                      "or GeGLU with GELU's tanh approximation)");
}

TEST_F(HfConfigHook, ConfigJsonErrorsComeAfterTheYamlOnes) {
  const ConfigLoadResult r = load("adapter:\n  r: 0\n", {}, with(kSmolLm, "hidden_act", "1"));
  ASSERT_EQ(r.errors.size(), 2u) << all_errors(r.errors);
  EXPECT_EQ(r.errors[0].key, "adapter.r");
  EXPECT_EQ(r.errors[1].key, "hidden_act");
}

TEST_F(HfConfigHook, BadModelPathSkipsTheHook) {
  const ConfigLoadResult r = load_config_text(
      "model:\n  path: nowhere\ndata:\n  train: train.tok\n", "cfg.yaml", scratch_.path().string());
  ASSERT_EQ(r.errors.size(), 1u) << all_errors(r.errors);
  EXPECT_EQ(r.errors[0].key, "model.path");
}

TEST_F(HfConfigHook, FolderWithoutConfigJsonKeepsTheYamlShape) {
  // Documented behaviour: such a folder is refused by load_hf_checkpoint when training starts.
  fs::create_directory(scratch_.path() / "bare");
  const ConfigLoadResult r =
      load_config_text("model:\n  path: bare\n  dim: 64\ndata:\n  train: train.tok\n", "cfg.yaml",
                       scratch_.path().string());
  ASSERT_TRUE(r.ok()) << all_errors(r.errors);
  EXPECT_EQ(r.config.model.dim, 64);
  EXPECT_EQ(r.config.model.proj_bias_mask, 0u);
}

// `peftrun check` prints the resolved config, so it shows the checkpoint's shape.
TEST_F(HfConfigHook, CliCheckPrintsTheCheckpointShape) {
  ckpt_ = scratch_.checkpoint("smol", json(kSmolLm));
  write_text(scratch_.path() / "train.yaml", "model:\n  path: smol\ndata:\n  train: train.tok\n");
  const std::string cmd =
      std::string(PEFTRUN_BINARY) + " check " + scratch_.file("train.yaml") + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  std::array<char, 4096> buf;
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("  dim: 576\n"), std::string::npos) << out;
  EXPECT_NE(out.find("  vocab_size: 49152\n"), std::string::npos) << out;
}

}  // namespace
}  // namespace peftrun
