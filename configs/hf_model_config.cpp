// config.json -> ModelConfig shape. See hf_model_config.h for what is accepted and why.
#include "configs/hf_model_config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace peftrun {
namespace {

namespace fs = std::filesystem;

// Bit p = projection p in all_target_modules() order (the runtime's bias_bit; configs/ cannot
// include runtime/ headers, so the indices are spelled out here).
constexpr unsigned kQ = 1u << 0, kK = 1u << 1, kV = 1u << 2, kO = 1u << 3;
constexpr unsigned kGate = 1u << 4, kUp = 1u << 5, kDown = 1u << 6;

// HF's defaults for keys a config.json may omit (LlamaConfig, MistralConfig, Qwen2Config agree).
constexpr double kDefaultRopeTheta = 10000.0;

// The shape keys and the config.json keys behind them, in schema order.
const std::vector<std::pair<std::string, std::string>>& shape_key_table() {
  static const std::vector<std::pair<std::string, std::string>> table = {
      {"model.dim", "hidden_size"},
      {"model.n_layers", "num_hidden_layers"},
      {"model.n_heads", "num_attention_heads"},
      {"model.n_kv_heads", "num_key_value_heads"},
      {"model.head_dim", "head_dim"},
      {"model.ffn_dim", "intermediate_size"},
      {"model.vocab_size", "vocab_size"},
      {"model.max_seq_len", "max_position_embeddings"},
      {"model.rope_theta", "rope_theta"},
      // rope_scaling.* (transformers < 5) or rope_parameters.* (>= 5): set_source_of names the
      // one the file uses.
      {"model.rope_scaling", "rope_scaling.rope_type"},
      {"model.rope_factor", "rope_scaling.factor"},
      {"model.rope_low_freq_factor", "rope_scaling.low_freq_factor"},
      {"model.rope_high_freq_factor", "rope_scaling.high_freq_factor"},
      {"model.rope_original_max_seq_len", "rope_scaling.original_max_position_embeddings"},
      {"model.rope_beta_fast", "rope_scaling.beta_fast"},
      {"model.rope_beta_slow", "rope_scaling.beta_slow"},
      {"model.rope_attention_factor", "rope_scaling.attention_factor"},
      {"model.rope_truncate", "rope_scaling.truncate"},
      {"model.partial_rotary_factor", "partial_rotary_factor"},
      {"model.rope_short_factor", "rope_scaling.short_factor"},
      {"model.rope_long_factor", "rope_scaling.long_factor"},
      {"model.tie_embeddings", "tie_word_embeddings"},
      {"model.qk_norm", "model_type"},
      {"model.qk_norm_full_width", "model_type"},
      {"model.mlp_activation", "hidden_act"},
      {"model.norm_one_plus_weight", "model_type"},
      {"model.scale_embeddings", "model_type"},
      {"model.sandwich_norms", "model_type"},
      {"model.input_norms", "model_type"},
      {"model.fused_projections", "model_type"},
      {"model.query_pre_attn_scalar", "query_pre_attn_scalar"},
      {"model.rope_local_theta", "rope_local_base_freq"},
      {"model.attn_logit_softcapping", "attn_logit_softcapping"},
      {"model.final_logit_softcapping", "final_logit_softcapping"},
      {"model.embedding_multiplier", "embedding_multiplier"},
      {"model.residual_multiplier", "residual_multiplier"},
      {"model.attention_multiplier", "attention_multiplier"},
      {"model.logits_scaling", "logits_scaling"},
      {"model.sliding_window", "sliding_window"},
      {"model.layer_types", "layer_types"},
      {"model.no_rope_layers", "no_rope_layers"},
      {"model.norm_eps", "rms_norm_eps"},
  };
  return table;
}

// yaml-cpp tags plain (unquoted) scalars "?" and quoted ones "!": that is how a JSON number or
// boolean is told apart from a string that merely looks like one ("576").
bool is_plain(const YAML::Node& node) {
  return node.IsScalar() && node.Tag() == "?";
}
bool is_string(const YAML::Node& node) {
  return node.IsScalar() && node.Tag() != "?";
}

std::string describe(const YAML::Node& node) {
  if (node.IsNull()) return "null";
  if (node.IsMap()) return "an object";
  if (node.IsSequence()) return "a list";
  if (is_string(node)) return "the string \"" + node.Scalar() + "\"";
  return node.Scalar();
}

// Reads one config.json and collects every problem with its position, like the YAML loader.
class JsonConfigReader {
 public:
  explicit JsonConfigReader(HfModelConfig& out) : out_(out) {}

  void run(const std::string& text) {
    if (!parse(text)) return;
    if (!enter_text_config()) return;
    read_model_type();
    read_shape();
    read_head_dim();
    read_unsupported_features();
    read_biases();
    read_granite_multipliers();
    read_sliding_window();
    check_heads();
    if (nested_) {
      for (HfShapeSource& src : out_.sources) src.json_key = kTextConfig + src.json_key;
    }
  }

 private:
  struct Entry {
    YAML::Node key;
    YAML::Node value;
  };

  void error(const YAML::Mark& mark, const std::string& key, const std::string& message) {
    ConfigError e;
    e.file = out_.file;
    if (!mark.is_null() && mark.line >= 0 && mark.column >= 0) {
      e.line = mark.line + 1;
      e.column = mark.column + 1;
    }
    e.key = key.empty() ? key : key_prefix_ + key;
    e.message = message;
    out_.errors.push_back(std::move(e));
  }

  bool parse(const std::string& text) {
    // yaml-cpp also accepts block YAML; requiring the object's '{' keeps a stray YAML file (or an
    // HTML error page saved as config.json) from being read as a checkpoint description.
    std::size_t at = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
    int line = 0, column = 0;
    auto blank = [](char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; };
    for (; at < text.size() && blank(text[at]); ++at) {
      if (text[at] == '\n') {
        ++line;
        column = 0;
      } else {
        ++column;
      }
    }
    YAML::Mark first = YAML::Mark::null_mark();
    first.line = line;
    first.column = column;
    if (at == text.size()) {
      error(first, "", "is empty, expected a JSON object");
      return false;
    }
    if (text[at] != '{') {
      error(first, "", "is not a JSON object (it does not start with '{'), expected config.json");
      return false;
    }
    try {
      root_ = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      error(e.mark, "", "malformed JSON: " + e.msg);
      return false;
    }
    if (!root_.IsMap()) {
      error(root_.Mark(), "", "got " + describe(root_) + ", expected a JSON object");
      return false;
    }
    collect_entries(root_);
    return true;
  }

  // entries_ from the keys of the object `map`.
  void collect_entries(const YAML::Node& map) {
    entries_.clear();
    for (const auto& kv : map) {
      if (!is_string(kv.first)) {
        error(kv.first.Mark(), "", "got " + describe(kv.first) + " as a key, expected a string");
        continue;
      }
      const std::string& name = kv.first.Scalar();
      const auto [it, inserted] = entries_.emplace(name, Entry{kv.first, kv.second});
      if (!inserted) {
        // Python's json keeps the last copy; guessing which one the author meant is not safe.
        error(kv.first.Mark(), name,
              "given twice (first on line " + std::to_string(it->second.key.Mark().line + 1) +
                  "), expected each key once");
      }
    }
  }

  // A multimodal Gemma 3 (model_type gemma3, Gemma3ForConditionalGeneration) nests its decoder's
  // config in text_config, which save_pretrained writes without the keys at their defaults: the
  // rest of the reader then reads that object (errors named text_config.KEY), with
  // Gemma3TextConfig's defaults for what it omits. False when there is nothing left to read.
  bool enter_text_config() {
    const YAML::Node* type = find("model_type");
    if (type == nullptr || !is_string(*type) || type->Scalar() != "gemma3") return true;
    const YAML::Node* text = find("text_config");
    if (text == nullptr || !text->IsMap()) {
      error(text != nullptr ? text->Mark() : root_.Mark(), "text_config",
            text == nullptr ? "missing, expected the text model's object (model_type gemma3)"
                            : "got " + describe(*text) + ", expected an object");
      return false;
    }
    const YAML::Node object = *text;  // entries_ is rebuilt below
    collect_entries(object);
    root_.reset(object);  // rebinds (operator= would overwrite the node it refers to)
    key_prefix_ = kTextConfig;
    nested_ = true;
    out_.shape.multimodal_checkpoint = true;
    return true;
  }

  // Gemma3TextConfig's default for an integer shape key text_config omits, or 0.
  int nested_default(const std::string& name) const {
    if (!nested_) return 0;
    static const std::map<std::string, int> defaults = {{"hidden_size", 2304},
                                                        {"num_hidden_layers", 26},
                                                        {"num_attention_heads", 8},
                                                        {"num_key_value_heads", 4},
                                                        {"intermediate_size", 9216},
                                                        {"vocab_size", 262208},
                                                        {"max_position_embeddings", 131072}};
    const auto it = defaults.find(name);
    return it == defaults.end() ? 0 : it->second;
  }

  // The value of `name`, or nullptr when absent. A JSON null counts as absent for optional keys,
  // which is what transformers does when it reads `"head_dim": null`.
  const YAML::Node* find(const std::string& name) {
    const auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second.value;
  }
  const YAML::Node* find_optional(const std::string& name) {
    const YAML::Node* v = find(name);
    return v == nullptr || v->IsNull() ? nullptr : v;
  }

  void missing(const std::string& name, const std::string& expected) {
    error(root_.Mark(), name, "missing, expected " + expected);
  }

  bool read_int(const YAML::Node& v, const std::string& name, int& out) {
    const std::string expected = "an integer > 0";
    if (!is_plain(v)) {
      error(v.Mark(), name, "got " + describe(v) + ", expected " + expected);
      return false;
    }
    const std::string& text = v.Scalar();
    int value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range) {
      error(v.Mark(), name,
            "got " + text + ", expected " + expected + " up to " +
                std::to_string(std::numeric_limits<int>::max()));
      return false;
    }
    if (ec != std::errc() || end != text.data() + text.size() || value <= 0) {
      error(v.Mark(), name, "got " + describe(v) + ", expected " + expected);
      return false;
    }
    out = value;
    return true;
  }

  bool read_positive(const YAML::Node& v, const std::string& name, double& out) {
    const std::string expected = "a finite number > 0";
    double value = 0.0;
    bool ok = is_plain(v);
    if (ok) {
      const std::string& text = v.Scalar();
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      ok = ec == std::errc() && end == text.data() + text.size() && std::isfinite(value) &&
           value > 0.0;
    }
    if (!ok) {
      error(v.Mark(), name, "got " + describe(v) + ", expected " + expected);
      return false;
    }
    out = value;
    return true;
  }

  bool read_bool(const YAML::Node& v, const std::string& name, bool& out) {
    if (!is_plain(v) || (v.Scalar() != "true" && v.Scalar() != "false")) {
      error(v.Mark(), name, "got " + describe(v) + ", expected true or false");
      return false;
    }
    out = v.Scalar() == "true";
    return true;
  }

  bool read_string(const YAML::Node& v, const std::string& name, std::string& out) {
    if (!is_string(v)) {
      error(v.Mark(), name, "got " + describe(v) + ", expected a string");
      return false;
    }
    out = v.Scalar();
    return true;
  }

  void set_source(const std::string& json_key, const YAML::Node& v) {
    for (HfShapeSource& s : out_.sources) {
      if (s.json_key != json_key) continue;
      s.line = v.Mark().line + 1;
      s.column = v.Mark().column + 1;
    }
  }

  void read_model_type() {
    const YAML::Node* v = find("model_type");
    if (v == nullptr && nested_) {
      out_.model_type = "gemma3_text";  // what Gemma3Config makes of a text_config without one
      set_gemma_flags(out_.model_type);
      return;
    }
    if (v == nullptr) {
      missing("model_type",
              "one of llama, mistral, qwen2, qwen3, smollm3, granite, olmo2, phi3, gemma, "
              "gemma2, gemma3_text, gemma3");
      return;
    }
    std::string type;
    if (!read_string(*v, "model_type", type)) return;
    if (type != "llama" && type != "mistral" && type != "qwen2" && type != "qwen3" &&
        type != "smollm3" && type != "granite" && type != "olmo2" && type != "phi3" &&
        type != "gemma" && type != "gemma2" && type != "gemma3_text") {
      error(v->Mark(), "model_type",
            "unknown model type '" + type +
                "', expected one of llama, mistral, qwen2, qwen3, smollm3, granite, olmo2, phi3, "
                "gemma, gemma2, gemma3_text, gemma3 (the LLaMA-family decoders peftrun "
                "implements)");
      return;
    }
    if (nested_ && type != "gemma3_text") {
      error(v->Mark(), "model_type",
            "got '" + type + "', expected gemma3_text (the text model of a gemma3 checkpoint)");
      return;
    }
    out_.model_type = type;
    set_gemma_flags(type);
    set_source("model_type", *v);
  }

  // What model_type alone decides about the decoder.
  void set_gemma_flags(const std::string& type) {
    const bool gemma = type == "gemma" || type == "gemma2" || type == "gemma3_text";
    const bool gemma3 = type == "gemma3_text";
    // Qwen3Attention's and Gemma3Attention's q_norm / k_norm.
    // OLMo 2's over all heads at once, and only after its blocks (no input norms).
    out_.shape.qk_norm = type == "qwen3" || gemma3 || type == "olmo2";
    out_.shape.qk_norm_full_width = type == "olmo2";
    out_.shape.input_norms = type != "olmo2";
    // GemmaRMSNorm scales by 1 + weight; GemmaTextScaledWordEmbedding by sqrt(hidden_size).
    out_.shape.norm_one_plus_weight = gemma;
    out_.shape.scale_embeddings = gemma;
    // Gemma2DecoderLayer's and Gemma3DecoderLayer's four norms.
    out_.shape.sandwich_norms = type == "gemma2" || gemma3 || type == "olmo2";
    // Phi3Attention's qkv_proj and Phi3MLP's gate_up_proj.
    out_.shape.fused_projections = type == "phi3";
  }

  bool is_gemma() const {
    return out_.model_type == "gemma" || out_.model_type == "gemma2" ||
           out_.model_type == "gemma3_text";
  }

  void required_int(const std::string& name, int& field) {
    const YAML::Node* v = find(name);
    if (v == nullptr && nested_default(name) > 0) {
      field = nested_default(name);
      have_[name] = true;
    } else if (v == nullptr) {
      missing(name, "an integer > 0");
    } else if (read_int(*v, name, field)) {
      set_source(name, *v);
      have_[name] = true;
    }
  }

  void read_shape() {
    ModelConfig& m = out_.shape;
    required_int("hidden_size", m.dim);
    required_int("num_hidden_layers", m.n_layers);
    required_int("num_attention_heads", m.n_heads);
    required_int("intermediate_size", m.ffn_dim);
    required_int("vocab_size", m.vocab_size);
    required_int("max_position_embeddings", m.max_seq_len);
    // Plain multi-head attention (older LLaMA configs) omits the key: one KV head per query head.
    if (const YAML::Node* v = find_optional("num_key_value_heads")) {
      if (read_int(*v, "num_key_value_heads", m.n_kv_heads)) {
        set_source("num_key_value_heads", *v);
        have_["num_key_value_heads"] = true;
      }
    } else if (nested_) {
      m.n_kv_heads = nested_default("num_key_value_heads");
      have_["num_key_value_heads"] = true;
    } else {
      m.n_kv_heads = m.n_heads;
      have_["num_key_value_heads"] = have_["num_attention_heads"];
    }

    if (const YAML::Node* v = find("rms_norm_eps"); v == nullptr && nested_) {
      m.norm_eps = 1e-6;  // Gemma3TextConfig's
    } else if (v == nullptr) {
      missing("rms_norm_eps", "a finite number > 0");
    } else if (read_positive(*v, "rms_norm_eps", m.norm_eps)) {
      set_source("rms_norm_eps", *v);
    }

    if (out_.model_type == "gemma3_text") {
      read_gemma3_rope();
    } else {
      read_rope(kDefaultRopeTheta);
    }

    // GemmaConfig's, Gemma3TextConfig's and SmolLM3Config's default when absent.
    m.tie_embeddings = is_gemma() || out_.model_type == "smollm3";
    if (const YAML::Node* v = find_optional("tie_word_embeddings")) {
      if (read_bool(*v, "tie_word_embeddings", m.tie_embeddings)) {
        set_source("tie_word_embeddings", *v);
      }
    }
  }

  // rope_theta (`default_theta` when absent) and the RoPE variant.
  void read_rope(double default_theta) {
    ModelConfig& m = out_.shape;
    m.rope_theta = default_theta;
    if (const YAML::Node* v = find_optional("rope_theta")) {
      if (read_positive(*v, "rope_theta", m.rope_theta)) set_source("rope_theta", *v);
    }
    // transformers >= 5 moves rope_theta (and the scaling type) into `rope_parameters`; older
    // files have a separate `rope_scaling`, which wins when both are there (as in transformers).
    const YAML::Node* parameters = find_optional("rope_parameters");
    if (parameters != nullptr) read_rope_parameters(*parameters);
    if (const YAML::Node* v = find_optional("rope_scaling")) {
      if (!v->IsMap()) {
        error(v->Mark(), "rope_scaling", "got " + describe(*v) + ", expected null or an object");
      } else {
        read_rope_variant(*v, "rope_scaling");
      }
    } else if (parameters != nullptr && parameters->IsMap()) {
      read_rope_variant(*parameters, "rope_parameters");
    }
  }

  // Gemma 3: the full-attention layers rotate with rope_theta (default 1e6) and the RoPE
  // scaling, the sliding-window ones plainly with rope_local_base_freq (default 1e4).
  // transformers >= 5 writes both under rope_parameters.{full_attention, sliding_attention};
  // older files have rope_theta, rope_local_base_freq and rope_scaling (for the full layers).
  void read_gemma3_rope() {
    ModelConfig& m = out_.shape;
    m.rope_local_theta = 1e4;
    const YAML::Node* parameters = find_optional("rope_parameters");
    if (parameters != nullptr && parameters->IsMap() && (*parameters)["full_attention"]) {
      m.rope_theta = 1e6;
      const YAML::Node full = (*parameters)["full_attention"];
      const YAML::Node local = (*parameters)["sliding_attention"];
      if (full.IsMap()) {
        const YAML::Node theta = full["rope_theta"];
        if (theta && !theta.IsNull() &&
            read_positive(theta, "rope_parameters.full_attention.rope_theta", m.rope_theta)) {
          set_source_of("model.rope_theta", "rope_parameters.full_attention.rope_theta", theta);
        }
        read_rope_variant(full, "rope_parameters.full_attention");
      }
      if (local && local.IsMap()) {
        const YAML::Node theta = local["rope_theta"];
        if (theta && !theta.IsNull() &&
            read_positive(theta, "rope_parameters.sliding_attention.rope_theta",
                          m.rope_local_theta)) {
          set_source_of("model.rope_local_theta", "rope_parameters.sliding_attention.rope_theta",
                        theta);
        }
        const YAML::Node type = local["rope_type"];
        if (type && !type.IsNull() && !(is_string(type) && type.Scalar() == "default")) {
          error(type.Mark(), "rope_parameters.sliding_attention.rope_type",
                "got " + describe(type) +
                    ", expected \"default\" (the sliding layers' RoPE is plain in Gemma 3)");
        }
      }
      return;
    }
    read_rope(1e6);
    if (const YAML::Node* v = find_optional("rope_local_base_freq")) {
      if (read_positive(*v, "rope_local_base_freq", m.rope_local_theta)) {
        set_source("rope_local_base_freq", *v);
      }
    }
  }

  void read_rope_parameters(const YAML::Node& v) {
    if (!v.IsMap()) {
      error(v.Mark(), "rope_parameters", "got " + describe(v) + ", expected an object");
      return;
    }
    const YAML::Node theta = v["rope_theta"];
    if (!theta || theta.IsNull()) return;
    double value = 0.0;
    if (!read_positive(theta, "rope_parameters.rope_theta", value)) return;
    const YAML::Node* top = find_optional("rope_theta");
    if (top != nullptr && is_plain(*top) && value != out_.shape.rope_theta) {
      error(
          theta.Mark(), "rope_parameters.rope_theta",
          theta.Scalar() + " disagrees with rope_theta " + top->Scalar() + ", expected one value");
      return;
    }
    out_.shape.rope_theta = value;
    set_source("rope_theta", theta);
  }

  // Where config.json sets `yaml_key`, under the name `json_key`.
  void set_source_of(const std::string& yaml_key, const std::string& json_key,
                     const YAML::Node& v) {
    for (HfShapeSource& s : out_.sources) {
      if (s.yaml_key != yaml_key) continue;
      s.json_key = json_key;
      s.line = v.Mark().line + 1;
      s.column = v.Mark().column + 1;
    }
  }

  // A number > 0 at `where`.`name`; `required` as transformers' variant reads it with [].
  void read_rope_number(const YAML::Node& v, const std::string& where, const std::string& name,
                        const std::string& yaml_key, bool required, double& out) {
    const YAML::Node n = v[name];
    if (!n || n.IsNull()) {
      if (required) {
        error(v.Mark(), where + "." + name,
              "missing, expected a finite number > 0 (rope_type " +
                  std::string(to_string(out_.shape.rope_scaling)) + " reads it)");
      }
      return;
    }
    if (read_positive(n, where + "." + name, out)) set_source_of(yaml_key, where + "." + name, n);
  }

  // The RoPE variant of a rope_scaling / rope_parameters object: "rope_type" (or the older
  // "type"; absent = "default") and the parameters that variant reads. Other keys are ignored,
  // as transformers ignores them (llama3 does not read attention_factor, say).
  void read_rope_variant(const YAML::Node& v, const std::string& where) {
    ModelConfig& m = out_.shape;
    // (A yaml-cpp node for a missing key cannot be assigned to, hence two of them.)
    const YAML::Node rope_type = v["rope_type"];
    const bool has_rope_type = rope_type && !rope_type.IsNull();
    const std::string key = has_rope_type ? "rope_type" : "type";
    const YAML::Node type = has_rope_type ? rope_type : v["type"];
    if (const YAML::Node partial = v["partial_rotary_factor"]; partial && !partial.IsNull()) {
      read_partial_rotary_factor(partial, where + ".partial_rotary_factor", /*in_rope=*/true);
    }
    if (!type || type.IsNull()) return;
    std::string name;
    if (!read_string(type, where + "." + key, name)) return;
    // Phi3Config reads its older "su" and "yarn" as longrope: not yarn's formula.
    if (out_.model_type == "phi3" && (name == "su" || name == "yarn")) name = "longrope";
    static const std::map<std::string, RopeScaling> kinds = {
        {"default", RopeScaling::kNone},    {"linear", RopeScaling::kLinear},
        {"dynamic", RopeScaling::kDynamic}, {"llama3", RopeScaling::kLlama3},
        {"yarn", RopeScaling::kYarn},       {"longrope", RopeScaling::kLongrope}};
    const auto kind = kinds.find(name);
    if (kind == kinds.end()) {
      error(type.Mark(), where + "." + key,
            "got \"" + name +
                "\", expected one of default, linear, dynamic, llama3, yarn, longrope: RoPE "
                "scaling \"" +
                name + "\" is not supported yet");
      return;
    }
    m.rope_scaling = kind->second;
    set_source_of("model.rope_scaling", where + "." + key, type);
    if (m.rope_scaling == RopeScaling::kNone) return;
    // longrope's factor is optional: it only sets the attention factor (below).
    const bool longrope = m.rope_scaling == RopeScaling::kLongrope;
    read_rope_number(v, where, "factor", "model.rope_factor", !longrope, m.rope_factor);
    if (m.rope_scaling == RopeScaling::kLinear || m.rope_scaling == RopeScaling::kDynamic) return;
    if (m.rope_scaling == RopeScaling::kLlama3) {
      read_rope_number(v, where, "low_freq_factor", "model.rope_low_freq_factor", true,
                       m.rope_low_freq_factor);
      read_rope_number(v, where, "high_freq_factor", "model.rope_high_freq_factor", true,
                       m.rope_high_freq_factor);
    }
    // transformers takes a top-level original_max_position_embeddings over the object's, and
    // max_position_embeddings when neither is there (0 here means exactly that).
    const YAML::Node* top = find_optional("original_max_position_embeddings");
    const YAML::Node inner = v["original_max_position_embeddings"];
    const std::string inner_name = where + ".original_max_position_embeddings";
    if (top != nullptr) {
      if (read_int(*top, "original_max_position_embeddings", m.rope_original_max_seq_len)) {
        set_source_of("model.rope_original_max_seq_len", "original_max_position_embeddings", *top);
      }
    } else if (inner && !inner.IsNull()) {
      if (read_int(inner, inner_name, m.rope_original_max_seq_len)) {
        set_source_of("model.rope_original_max_seq_len", inner_name, inner);
      }
    }
    if (m.rope_scaling == RopeScaling::kYarn) read_yarn_parameters(v, where);
    if (longrope) read_longrope_parameters(v, where);
  }

  // The rest of a longrope object: short_factor and long_factor (required), attention_factor;
  // without a factor, transformers takes max_position_embeddings / original for it.
  void read_longrope_parameters(const YAML::Node& v, const std::string& where) {
    ModelConfig& m = out_.shape;
    read_factor_list(v, where, "short_factor", "model.rope_short_factor", m.rope_short_factor);
    read_factor_list(v, where, "long_factor", "model.rope_long_factor", m.rope_long_factor);
    read_rope_number(v, where, "attention_factor", "model.rope_attention_factor", false,
                     m.rope_attention_factor);
    const YAML::Node factor = v["factor"];
    if ((!factor || factor.IsNull()) && have_["max_position_embeddings"]) {
      const int original =
          m.rope_original_max_seq_len > 0 ? m.rope_original_max_seq_len : m.max_seq_len;
      m.rope_factor = double(m.max_seq_len) / double(original);
    }
  }

  // A required list of numbers > 0 at `where`.`name`.
  void read_factor_list(const YAML::Node& v, const std::string& where, const std::string& name,
                        const std::string& yaml_key, std::vector<double>& out) {
    const YAML::Node list = v[name];
    const std::string full = where + "." + name;
    if (!list || list.IsNull()) {
      error(v.Mark(), full,
            "missing, expected a list of numbers > 0 (rope_type longrope reads it)");
      return;
    }
    if (!list.IsSequence()) {
      error(list.Mark(), full, "got " + describe(list) + ", expected a list of numbers > 0");
      return;
    }
    std::vector<double> values;
    for (const YAML::Node& item : list) {
      double x = 0.0;
      if (!read_positive(item, full, x)) return;
      values.push_back(x);
    }
    out = std::move(values);
    set_source_of(yaml_key, full, list);
  }

  // The rest of a yarn object; DeepSeek's mscale / mscale_all_dim are refused, not ignored.
  void read_yarn_parameters(const YAML::Node& v, const std::string& where) {
    ModelConfig& m = out_.shape;
    read_rope_number(v, where, "beta_fast", "model.rope_beta_fast", false, m.rope_beta_fast);
    read_rope_number(v, where, "beta_slow", "model.rope_beta_slow", false, m.rope_beta_slow);
    read_rope_number(v, where, "attention_factor", "model.rope_attention_factor", false,
                     m.rope_attention_factor);
    if (const YAML::Node t = v["truncate"]; t && !t.IsNull()) {
      if (read_bool(t, where + ".truncate", m.rope_truncate)) {
        set_source_of("model.rope_truncate", where + ".truncate", t);
      }
    }
    for (const char* key : {"mscale", "mscale_all_dim"}) {
      const YAML::Node n = v[key];
      if (n && !n.IsNull()) {
        error(n.Mark(), where + "." + key,
              "is set, expected it absent: yarn's mscale / mscale_all_dim attention factor "
              "(DeepSeek's) is not supported yet");
      }
    }
  }

  // Phi-3's attention rotates the first int(head_dim * factor) channels of each head (Phi-4-mini:
  // 0.75). Other model types here rotate whole heads in transformers, so only 1 is theirs. A
  // factor inside rope_parameters / rope_scaling wins over the top-level one, as in
  // transformers (which copies the top-level one in only when the object has none).
  void read_partial_rotary_factor(const YAML::Node& v, const std::string& name, bool in_rope) {
    if (!in_rope && partial_from_rope_) return;
    double factor = 0.0;
    if (!read_positive(v, name, factor)) return;
    if (factor == 1.0) {
      out_.shape.partial_rotary_factor = 1.0;
    } else if (out_.model_type != "phi3") {
      error(v.Mark(), name,
            "got " + v.Scalar() + ", expected 1 (transformers' " + out_.model_type +
                " rotates whole heads; partial rotary embeddings are Phi-3's, model_type phi3)");
      return;
    } else if (factor > 1.0) {
      error(v.Mark(), name, "got " + v.Scalar() + ", expected a factor in (0, 1]");
      return;
    }
    out_.shape.partial_rotary_factor = factor;
    partial_from_rope_ = in_rope;
    set_source_of("model.partial_rotary_factor", name, v);
  }

  // Features that would make the same weights compute a different function than peftrun's
  // decoder: refused, because training against a subtly wrong base fails silently.
  void read_unsupported_features() {
    read_activation();
    if (const YAML::Node* v = find_optional("partial_rotary_factor")) {
      read_partial_rotary_factor(*v, "partial_rotary_factor", /*in_rope=*/false);
    }
    // Phi-3's dropouts on the embedding and on each block's output act in a training forward
    // of transformers; peftrun's frozen base has none (Phi-3 and Phi-4 ship them as 0).
    if (out_.model_type == "phi3") {
      for (const char* key : {"resid_pdrop", "embd_pdrop", "attention_dropout"}) {
        const YAML::Node* v = find_optional(key);
        if (v == nullptr) continue;
        double p = -1.0;
        if (is_plain(*v)) {
          const std::string& text = v->Scalar();
          const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), p);
          if (ec != std::errc() || end != text.data() + text.size()) p = -1.0;
        }
        if (p != 0.0) {
          error(v->Mark(), key,
                "got " + describe(*v) +
                    ", expected 0 (peftrun applies no dropout inside the frozen base, only "
                    "adapter.dropout)");
        }
      }
    }
    // GemmaConfig's switch for encoder-style (non-causal) attention.
    if (const YAML::Node* v = find_optional("use_bidirectional_attention")) {
      bool bidirectional = false;
      if (read_bool(*v, "use_bidirectional_attention", bidirectional) && bidirectional) {
        error(v->Mark(), "use_bidirectional_attention",
              "is true, expected false or null (peftrun's attention is causal)");
      }
    }
  }

  // The gated MLP's activation, as transformers' ACT2FN names it. Gemma configs from before
  // transformers 4.42 also have hidden_activation, which their MLP read first; "gelu" in a Gemma
  // config means the tanh approximation (GemmaConfig rewrites it so), elsewhere the exact erf
  // GELU, which peftrun does not implement.
  void read_activation() {
    const bool gemma = is_gemma();
    std::string key = "hidden_act";
    const YAML::Node* v = nullptr;
    if (gemma) {
      v = find_optional("hidden_activation");
      if (v != nullptr) key = "hidden_activation";
    }
    if (v == nullptr) v = find_optional("hidden_act");
    out_.shape.mlp_activation = gemma ? MlpActivation::kGeluTanh : MlpActivation::kSilu;
    if (v == nullptr) return;
    std::string act;
    if (!read_string(*v, key, act)) return;
    if (act == "silu" || act == "swish") {
      out_.shape.mlp_activation = MlpActivation::kSilu;
    } else if (act == "gelu_pytorch_tanh" || act == "gelu_new" || (gemma && act == "gelu")) {
      out_.shape.mlp_activation = MlpActivation::kGeluTanh;
    } else {
      error(v->Mark(), key,
            "got \"" + act +
                "\", expected \"silu\" or \"gelu_pytorch_tanh\" (peftrun's gated MLP computes "
                "SwiGLU or GeGLU with GELU's tanh approximation)");
      return;
    }
    set_source_of("model.mlp_activation", key, *v);
  }

  // transformers: head_dim if given (and not null), else hidden_size // num_attention_heads. A
  // head_dim equal to that quotient is recorded as 0 (derived), so a checkpoint that merely
  // spells it out has the same config as one that does not.
  void read_head_dim() {
    ModelConfig& m = out_.shape;
    const bool derivable =
        have_["hidden_size"] && have_["num_attention_heads"] && m.dim % m.n_heads == 0;
    const int quotient = derivable ? m.dim / m.n_heads : 0;
    // Qwen3Config's and GemmaConfig's defaults when absent.
    int head_dim = out_.model_type == "qwen3" ? 128 : is_gemma() ? 256 : 0;
    const YAML::Node* v = find_optional("head_dim");
    if (v != nullptr) {
      if (!read_int(*v, "head_dim", head_dim)) return;
      set_source("head_dim", *v);
    }
    if (head_dim == 0 || head_dim == quotient) return;
    m.explicit_head_dim = head_dim;
    if (v != nullptr && (head_dim % 2 != 0 || head_dim > 256)) {
      error(v->Mark(), "head_dim",
            std::to_string(head_dim) +
                " is not an even number up to 256, expected one (RoPE rotates pairs of "
                "channels; the kernels take heads up to 256 wide)");
    }
  }

  void read_biases() {
    unsigned& mask = out_.shape.proj_bias_mask;
    mask = 0;
    if (out_.model_type == "qwen2") {
      mask = kQ | kK | kV;  // Qwen2Attention: q/k/v with bias, o_proj without, whatever the config
    } else if (out_.model_type == "qwen3" || out_.model_type == "olmo2" || is_gemma()) {
      // Qwen3Attention, GemmaAttention, Gemma3Attention: q/k/v/o with attention_bias; the MLP
      // never has one.
      bool flag = false;
      if (const YAML::Node* v = find_optional("attention_bias")) {
        if (read_bool(*v, "attention_bias", flag) && flag) mask |= kQ | kK | kV | kO;
      }
    } else if (out_.model_type == "llama" || out_.model_type == "smollm3" ||
               out_.model_type == "granite") {
      bool flag = false;
      if (const YAML::Node* v = find_optional("attention_bias")) {
        if (read_bool(*v, "attention_bias", flag) && flag) mask |= kQ | kK | kV | kO;
      }
      flag = false;
      if (const YAML::Node* v = find_optional("mlp_bias")) {
        if (read_bool(*v, "mlp_bias", flag) && flag) mask |= kGate | kUp | kDown;
      }
    }
  }

  // Sliding-window attention, as transformers applies it: Mistral slides in every layer when
  // sliding_window is not null; Qwen2 / Qwen3 only with use_sliding_window, in the layers
  // layer_types names sliding_attention (derived when absent: layers >= max_window_layers).
  // Granite's multipliers, each 1 when absent (GraniteConfig's defaults; an attention_multiplier
  // of 1 scales the scores by 1, not by 1 / sqrt(head_dim)).
  void read_granite_multipliers() {
    ModelConfig& m = out_.shape;
    if (out_.model_type != "granite") return;
    const std::pair<const char*, double*> keys[] = {
        {"embedding_multiplier", &m.embedding_multiplier},
        {"residual_multiplier", &m.residual_multiplier},
        {"attention_multiplier", &m.attention_multiplier},
        {"logits_scaling", &m.logits_scaling}};
    for (const auto& [key, field] : keys) {
      *field = 1.0;
      if (const YAML::Node* v = find_optional(key)) {
        if (read_positive(*v, key, *field)) set_source(key, *v);
      }
    }
  }

  void read_sliding_window() {
    ModelConfig& m = out_.shape;
    m.sliding_window = 0;
    m.layer_types.clear();
    if (out_.model_type == "gemma2" || out_.model_type == "gemma3_text") {
      read_gemma_attention();
      return;
    }
    if (out_.model_type == "smollm3") {
      read_smollm3_layers();
      return;
    }
    // Phi3Model slides in every layer too when sliding_window is not null.
    const bool mistral = out_.model_type == "mistral" || out_.model_type == "phi3";
    const bool qwen = out_.model_type == "qwen2" || out_.model_type == "qwen3";
    if (!mistral && !qwen) return;
    bool used = mistral;
    if (qwen) {
      if (const YAML::Node* v = find_optional("use_sliding_window")) {
        read_bool(*v, "use_sliding_window", used);
      }
    }
    if (!used) return;
    const YAML::Node* v = find_optional("sliding_window");
    if (v == nullptr || !read_window(*v)) return;  // null: no window
    if (mistral) return;
    if (const YAML::Node* types = find_optional("layer_types")) {
      read_layer_types(*types);
      return;
    }
    int max_window_layers = 28;  // Qwen2Config's default
    if (const YAML::Node* w = find_optional("max_window_layers")) {
      if (!read_int(*w, "max_window_layers", max_window_layers)) return;
    }
    derive_layer_types([&](int l) { return l >= max_window_layers; });
  }

  // model.sliding_window from a non-null sliding_window; false (and an error) when it is bad.
  bool read_window(const YAML::Node& v) {
    int window = 0;
    if (!read_int(v, "sliding_window", window)) return false;
    if (window < 1) {
      error(v.Mark(), "sliding_window", std::to_string(window) + ", expected null or >= 1");
      return false;
    }
    out_.shape.sliding_window = window;
    set_source("sliding_window", v);
    return true;
  }

  // layer_types from a rule, for files that predate the key.
  template <class Slides>
  void derive_layer_types(const Slides& slides) {
    ModelConfig& m = out_.shape;
    if (!have_["num_hidden_layers"]) return;
    for (int l = 0; l < m.n_layers; ++l) {
      m.layer_types.push_back(slides(l) ? "sliding_attention" : "full_attention");
    }
  }

  // Gemma 2's and Gemma 3's attention: scores scaled by query_pre_attn_scalar (default 256) and
  // soft-capped at attn_logit_softcapping, the final logits at final_logit_softcapping (Gemma
  // 2's defaults 50 and 30, Gemma 3's none; null = none); sliding_window (default 4096) in the
  // layers layer_types names, or, in files without it, every other layer from the first (Gemma
  // 2) or all but every sliding_window_pattern-th (Gemma 3, default 6).
  void read_gemma_attention() {
    ModelConfig& m = out_.shape;
    const bool gemma2 = out_.model_type == "gemma2";
    m.query_pre_attn_scalar = 256;
    if (const YAML::Node* v = find_optional("query_pre_attn_scalar")) {
      if (read_positive(*v, "query_pre_attn_scalar", m.query_pre_attn_scalar)) {
        set_source("query_pre_attn_scalar", *v);
      }
    }
    read_softcap("attn_logit_softcapping", gemma2 ? 50.0 : 0.0, m.attn_logit_softcapping);
    read_softcap("final_logit_softcapping", gemma2 ? 30.0 : 0.0, m.final_logit_softcapping);
    const YAML::Node* v = find("sliding_window");
    if (v == nullptr) {
      m.sliding_window = 4096;  // Gemma3TextConfig's default
    } else if (v->IsNull() || !read_window(*v)) {
      return;  // null: no window
    }
    if (const YAML::Node* types = find_optional("layer_types")) {
      read_layer_types(*types);
      return;
    }
    int pattern = gemma2 ? 2 : 6;  // Gemma2Config: layer l slides when (l + 1) % 2 != 0
    if (const YAML::Node* p = gemma2 ? nullptr : find_optional("sliding_window_pattern")) {
      if (!read_int(*p, "sliding_window_pattern", pattern)) return;
      if (pattern < 1) {
        error(p->Mark(), "sliding_window_pattern", std::to_string(pattern) + ", expected >= 1");
        return;
      }
    }
    derive_layer_types([&](int l) { return (l + 1) % pattern != 0; });
  }

  // SmolLM3: no_rope_layers (1 = the layer applies RoPE, 0 = NoPE), or, in files without it,
  // every no_rope_layer_interval-th layer (default 4) without RoPE; with use_sliding_window and
  // a sliding_window, the layers layer_types names slide, by default the NoPE ones.
  void read_smollm3_layers() {
    ModelConfig& m = out_.shape;
    m.no_rope_layers.clear();
    if (const YAML::Node* v = find_optional("no_rope_layers")) {
      if (!read_no_rope_layers(*v)) return;
    } else {
      int interval = 4;
      if (const YAML::Node* i = find_optional("no_rope_layer_interval")) {
        if (!read_int(*i, "no_rope_layer_interval", interval)) return;
      }
      if (!have_["num_hidden_layers"]) return;
      for (int l = 0; l < m.n_layers; ++l) m.no_rope_layers.push_back((l + 1) % interval != 0);
    }
    bool used = false;
    if (const YAML::Node* v = find_optional("use_sliding_window")) {
      read_bool(*v, "use_sliding_window", used);
    }
    if (!used) return;
    const YAML::Node* v = find_optional("sliding_window");
    if (v == nullptr || !read_window(*v)) return;  // null: no window
    if (const YAML::Node* types = find_optional("layer_types")) {
      read_layer_types(*types);
      return;
    }
    derive_layer_types([&](int l) { return m.no_rope_layers[static_cast<std::size_t>(l)] == 0; });
  }

  bool read_no_rope_layers(const YAML::Node& v) {
    ModelConfig& m = out_.shape;
    if (!v.IsSequence()) {
      error(v.Mark(), "no_rope_layers", "got " + describe(v) + ", expected a list of 0 / 1");
      return false;
    }
    std::vector<int> flags;
    for (const YAML::Node& item : v) {
      if (!is_plain(item) || (item.Scalar() != "0" && item.Scalar() != "1")) {
        error(v.Mark(), "no_rope_layers",
              "entry " + std::to_string(flags.size()) + " is " + describe(item) +
                  ", expected 1 (the layer applies RoPE) or 0 (it does not)");
        return false;
      }
      flags.push_back(item.Scalar() == "1" ? 1 : 0);
    }
    if (have_["num_hidden_layers"] && static_cast<int>(flags.size()) != m.n_layers) {
      error(v.Mark(), "no_rope_layers",
            "has " + std::to_string(flags.size()) + " entries, expected num_hidden_layers (" +
                std::to_string(m.n_layers) + ")");
      return false;
    }
    m.no_rope_layers = std::move(flags);
    set_source("no_rope_layers", v);
    return true;
  }

  // A soft cap: `fallback` when the key is absent, 0 (none) when it is null, else a number > 0.
  void read_softcap(const char* key, double fallback, double& out) {
    out = fallback;
    const YAML::Node* v = find(key);
    if (v == nullptr) return;
    out = 0.0;
    if (!v->IsNull() && read_positive(*v, key, out)) set_source(key, *v);
  }

  void read_layer_types(const YAML::Node& v) {
    ModelConfig& m = out_.shape;
    if (!v.IsSequence()) {
      error(v.Mark(), "layer_types", "got " + describe(v) + ", expected a list");
      return;
    }
    std::vector<std::string> types;
    for (const YAML::Node& item : v) {
      if (!is_string(item) ||
          (item.Scalar() != "full_attention" && item.Scalar() != "sliding_attention")) {
        error(v.Mark(), "layer_types",
              "entry " + std::to_string(types.size()) + " is " + describe(item) +
                  ", expected \"full_attention\" or \"sliding_attention\" (peftrun's attention "
                  "is causal, with or without a sliding window)");
        return;
      }
      types.push_back(item.Scalar());
    }
    if (have_["num_hidden_layers"] && static_cast<int>(types.size()) != m.n_layers) {
      error(v.Mark(), "layer_types",
            "has " + std::to_string(types.size()) + " entries, expected num_hidden_layers (" +
                std::to_string(m.n_layers) + ")");
      return;
    }
    m.layer_types = std::move(types);
    set_source("layer_types", v);
  }

  // The same rules as the schema's cross-checks, reported here so they point into config.json.
  void check_heads() {
    const ModelConfig& m = out_.shape;
    const YAML::Node* heads = find("num_attention_heads");
    if (have_["hidden_size"] && have_["num_attention_heads"] && m.explicit_head_dim == 0) {
      if (m.dim % m.n_heads != 0) {
        error(heads->Mark(), "num_attention_heads",
              std::to_string(m.n_heads) + " does not divide hidden_size " + std::to_string(m.dim) +
                  ", expected a divisor of hidden_size");
      } else if (m.head_dim() % 2 != 0) {
        error(heads->Mark(), "num_attention_heads",
              "gives an odd head dimension " + std::to_string(m.dim) + " / " +
                  std::to_string(m.n_heads) + " = " + std::to_string(m.head_dim()) +
                  ", expected an even one (RoPE rotates pairs of channels)");
      }
    }
    if (have_["num_key_value_heads"] && have_["num_attention_heads"] &&
        (m.n_kv_heads > m.n_heads || m.n_heads % m.n_kv_heads != 0)) {
      // Only reachable when the key is present: its absence means n_kv_heads = n_heads.
      const YAML::Node* kv = find_optional("num_key_value_heads");
      error(kv != nullptr ? kv->Mark() : root_.Mark(), "num_key_value_heads",
            std::to_string(m.n_kv_heads) + " does not divide num_attention_heads " +
                std::to_string(m.n_heads) + ", expected a divisor of it");
    }
  }

  static constexpr const char* kTextConfig = "text_config.";

  HfModelConfig& out_;
  YAML::Node root_;         // the object read: config.json's, or its text_config
  bool nested_ = false;     // reading a gemma3 checkpoint's text_config
  std::string key_prefix_;  // "text_config." then, for the keys in errors
  std::map<std::string, Entry> entries_;
  std::map<std::string, bool> have_;  // required integers read successfully
  bool partial_from_rope_ = false;    // partial_rotary_factor came from the RoPE object
};

}  // namespace

const std::vector<std::string>& hf_shape_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> out;
    for (const auto& entry : shape_key_table()) out.push_back(entry.first);
    return out;
  }();
  return keys;
}

void copy_hf_shape(const ModelConfig& from, ModelConfig& to) {
  to.dim = from.dim;
  to.n_layers = from.n_layers;
  to.n_heads = from.n_heads;
  to.n_kv_heads = from.n_kv_heads;
  to.explicit_head_dim = from.explicit_head_dim;
  to.ffn_dim = from.ffn_dim;
  to.vocab_size = from.vocab_size;
  to.max_seq_len = from.max_seq_len;
  to.rope_theta = from.rope_theta;
  to.rope_scaling = from.rope_scaling;
  to.rope_factor = from.rope_factor;
  to.rope_low_freq_factor = from.rope_low_freq_factor;
  to.rope_high_freq_factor = from.rope_high_freq_factor;
  to.rope_original_max_seq_len = from.rope_original_max_seq_len;
  to.rope_beta_fast = from.rope_beta_fast;
  to.rope_beta_slow = from.rope_beta_slow;
  to.rope_attention_factor = from.rope_attention_factor;
  to.rope_truncate = from.rope_truncate;
  to.partial_rotary_factor = from.partial_rotary_factor;
  to.rope_short_factor = from.rope_short_factor;
  to.rope_long_factor = from.rope_long_factor;
  to.tie_embeddings = from.tie_embeddings;
  to.qk_norm = from.qk_norm;
  to.qk_norm_full_width = from.qk_norm_full_width;
  to.input_norms = from.input_norms;
  to.fused_projections = from.fused_projections;
  to.mlp_activation = from.mlp_activation;
  to.norm_one_plus_weight = from.norm_one_plus_weight;
  to.scale_embeddings = from.scale_embeddings;
  to.sandwich_norms = from.sandwich_norms;
  to.query_pre_attn_scalar = from.query_pre_attn_scalar;
  to.rope_local_theta = from.rope_local_theta;
  to.attn_logit_softcapping = from.attn_logit_softcapping;
  to.final_logit_softcapping = from.final_logit_softcapping;
  to.embedding_multiplier = from.embedding_multiplier;
  to.residual_multiplier = from.residual_multiplier;
  to.attention_multiplier = from.attention_multiplier;
  to.logits_scaling = from.logits_scaling;
  to.sliding_window = from.sliding_window;
  to.layer_types = from.layer_types;
  to.no_rope_layers = from.no_rope_layers;
  to.norm_eps = from.norm_eps;
  to.proj_bias_mask = from.proj_bias_mask;
  to.multimodal_checkpoint = from.multimodal_checkpoint;
}

HfModelConfig parse_hf_model_config(const std::string& json_text, const std::string& file) {
  HfModelConfig out;
  out.file = file;
  for (const auto& [yaml_key, json_key] : shape_key_table()) {
    out.sources.push_back(HfShapeSource{yaml_key, json_key, 0, 0});
  }
  try {
    JsonConfigReader(out).run(json_text);
  } catch (const std::exception& e) {
    // Bad input is reported as errors above; this is only for bugs and exhaustion, which must
    // not escape the config loader (documented as non-throwing) either.
    out.errors.push_back(
        ConfigError{file, 0, 0, "", std::string("internal error while reading: ") + e.what()});
  }
  return out;
}

HfModelConfig read_hf_model_config(const std::string& dir) {
  const std::string file = (fs::path(dir) / "config.json").lexically_normal().string();
  auto fail = [&](const std::string& why) {
    HfModelConfig out;
    out.file = file;
    out.errors.push_back(ConfigError{
        file, 0, 0, "",
        "cannot be read (" + why + "), expected the Hugging Face checkpoint's config.json"});
    return out;
  };
  std::error_code ec;
  if (fs::is_directory(file, ec)) return fail("it is a directory");
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    const int code = errno;
    return fail(std::strerror(code));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return fail("read failed");
  return parse_hf_model_config(text.str(), file);
}

}  // namespace peftrun
