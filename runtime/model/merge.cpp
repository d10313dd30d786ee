#include "runtime/model/merge.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kernels/half.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/adapters/adapter_merge.h"
#include "runtime/adapters/peft_export.h"
#include "runtime/io/file_io.h"
#include "runtime/io/staged_folder.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/hf_checkpoint.h"
#include "runtime/model/hf_checkpoint_files.h"
#include "runtime/model/rope_table.h"
#include "runtime/model/weight_rounding.h"

namespace peftrun {

namespace fs = std::filesystem;

namespace {

constexpr const char* kConfigFile = "config.json";
constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// Files of a model folder that describe the tokenizer and generation, copied as they are.
const std::vector<std::string>& copied_file_names() {
  static const std::vector<std::string> names = {"tokenizer.json",
                                                 "tokenizer_config.json",
                                                 "special_tokens_map.json",
                                                 "tokenizer.model",
                                                 "vocab.json",
                                                 "merges.txt",
                                                 "added_tokens.json",
                                                 "chat_template.jinja",
                                                 "chat_template.json",
                                                 "generation_config.json"};
  return names;
}

const char* torch_dtype_name(TensorDType t) {
  return t == TensorDType::kBF16 ? "bfloat16" : "float16";
}

// ---------------------------------------------------------------------------------------------
// --out: what may be replaced
// ---------------------------------------------------------------------------------------------

// a == b or a inside b (paths made absolute and normal first; symlinks resolved where they exist).
bool is_within(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  const fs::path ca = fs::weakly_canonical(fs::absolute(a), ec);
  const fs::path cb = fs::weakly_canonical(fs::absolute(b), ec);
  const fs::path rel = ca.lexically_relative(cb);
  return !rel.empty() && *rel.begin() != "..";
}

// Returns true when an existing --out will be replaced; throws MergeRefused when it may not be.
bool check_out_dir(const std::string& out,
                   const std::vector<std::pair<std::string, std::string>>& inputs, bool force) {
  for (const auto& [what, path] : inputs) {
    if (!path.empty() && is_within(path, out)) {
      throw MergeRefused("--out '" + out + "' holds the merge's input " + what + " '" + path +
                         "', which the merged folder would replace; choose another --out");
    }
  }
  std::error_code ec;
  const fs::file_status st = fs::status(out, ec);
  if (!fs::exists(st)) return false;
  if (!fs::is_directory(st)) {
    throw MergeRefused("--out '" + out +
                       "' exists and is not a folder; expected a folder to create or replace");
  }
  if (fs::is_empty(out, ec)) return true;
  if (fs::is_regular_file(fs::path(out) / kMergeMarkerFile, ec)) return true;
  if (force) return true;
  throw MergeRefused("--out '" + out + "' already exists, is not empty and is not a previous " +
                     "peftrun merge output (no " + kMergeMarkerFile +
                     "); pass --force to replace it, or choose another folder");
}

// ---------------------------------------------------------------------------------------------
// Where the base tensors come from
// ---------------------------------------------------------------------------------------------

class BaseSource {
 public:
  virtual ~BaseSource() = default;
  // The tensor in fp32, checked to have t.shape.
  virtual std::vector<float> read(const HfTensor& t) = 0;
  virtual std::string describe() const = 0;
};

// A checkpoint folder, read tensor by tensor.
class CheckpointSource : public BaseSource {
 public:
  explicit CheckpointSource(const std::string& dir) : dir_(dir), files_(dir) {}

  std::vector<float> read(const HfTensor& t) override {
    const CheckedTensor c = files_.check(t.name, t.shape);
    return c.reader->read_tensor_f32(t.name);
  }
  std::string describe() const override { return "'" + dir_ + "'"; }
  // How the checkpoint stores tensor `t` (F32, F16 or BF16).
  TensorDType stored_dtype(const HfTensor& t) { return files_.check(t.name, t.shape).info->dtype; }

  // Names the checkpoint holds that are not part of the model of `tensors`; a bias the model
  // has no slot for is an error, as when training loads it (dropping it changes the model).
  // Only names starting with `decoder_root` are the decoder's ("" = all; a multimodal Gemma 3's
  // vision tower has biases of its own).
  std::vector<std::string> extra_tensors(const std::vector<HfTensor>& tensors,
                                         const std::string& decoder_root) const {
    std::set<std::string> wanted;
    for (const HfTensor& t : tensors) wanted.insert(t.name);
    std::vector<std::string> extra;
    for (const std::string& name : files_.names()) {
      if (wanted.count(name)) continue;
      if (name.rfind(decoder_root, 0) == 0 && name.size() > 5 &&
          name.compare(name.size() - 5, 5, ".bias") == 0) {
        throw std::runtime_error(files_.where() + ": has tensor '" + name +
                                 "', which the model described by config.json has no place for "
                                 "(model_type, attention_bias, mlp_bias)");
      }
      extra.push_back(name);
    }
    return extra;
  }

  // A multimodal Gemma 3's tensors outside its decoder (outside `decoder_root`: the vision
  // tower, the projector), taken out of `extra` to be carried over unchanged: the adapter
  // touches the decoder only, and the merged folder must still load as the checkpoint's
  // architecture.
  std::vector<HfTensor> carried_tensors(const std::string& decoder_root,
                                        std::vector<std::string>& extra) {
    std::vector<HfTensor> carried;
    std::vector<std::string> left;
    for (const std::string& name : extra) {
      if (name.rfind(decoder_root, 0) == 0) {
        left.push_back(name);
        continue;
      }
      HfTensor t;
      t.name = name;
      t.shape = files_.reader_for(name).info(name).shape;
      t.kind = HfTensor::Kind::kCarried;
      carried.push_back(std::move(t));
    }
    extra = std::move(left);
    return carried;
  }

 private:
  std::string dir_;
  HfCheckpointFiles files_;
};

// The random base training used (BaseWeights::random from train.seed).
class RandomSource : public BaseSource {
 public:
  RandomSource(const ModelConfig& shape, std::uint64_t seed)
      : seed_(seed), base_(BaseWeights::random(shape, seed)) {}

  std::vector<float> read(const HfTensor& t) override {
    const half_bits* src = nullptr;
    switch (t.kind) {
      case HfTensor::Kind::kEmbedding:
        src = base_.embedding();
        break;
      case HfTensor::Kind::kFinalNorm:
        src = base_.final_norm();
        break;
      case HfTensor::Kind::kLmHead:
        src = base_.lm_head();
        break;
      default:
        src = base_.layer(t.layer) + layer_offset(base_.offsets(), t);
    }
    std::size_t n = 1;
    for (const std::int64_t d : t.shape) n *= std::size_t(d);
    std::vector<float> out(n);
    half_to_real(src, out.data(), n);
    return out;
  }
  std::string describe() const override {
    return "the random base of train.seed " + std::to_string(seed_);
  }

 private:
  std::uint64_t seed_;
  BaseWeights base_;
};

// ---------------------------------------------------------------------------------------------
// Output layout
// ---------------------------------------------------------------------------------------------

struct Shard {
  std::string file;
  std::vector<const HfTensor*> tensors;
  std::uint64_t bytes = 0;
};

std::uint64_t numel(const HfTensor& t) {
  std::uint64_t n = 1;
  for (const std::int64_t d : t.shape) n *= std::uint64_t(d);
  return n;
}

// Consecutive tensors fill a shard until the next would pass max_bytes (a tensor larger than
// max_bytes gets a shard of its own), as transformers' save_pretrained splits.
std::vector<Shard> plan_shards(const std::vector<HfTensor>& tensors, std::uint64_t elem_bytes,
                               std::uint64_t max_bytes) {
  std::vector<Shard> shards(1);
  for (const HfTensor& t : tensors) {
    const std::uint64_t bytes = numel(t) * elem_bytes;
    if (!shards.back().tensors.empty() && shards.back().bytes + bytes > max_bytes) {
      shards.emplace_back();
    }
    shards.back().tensors.push_back(&t);
    shards.back().bytes += bytes;
  }
  if (shards.size() == 1) {
    shards[0].file = kSingleFile;
    return shards;
  }
  for (std::size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    shards[i].file = name;
  }
  return shards;
}

// The transformers architecture (and its model_type) that computes what peftrun's decoder
// computes for `m`, or none (a random base mixing Gemma's norms with Qwen3's q/k norms, say).
struct HfArchitecture {
  const char* name;
  const char* model_type;
};

std::optional<HfArchitecture> hf_architecture(const ModelConfig& m) {
  // Gemma 2's and 3's pieces: a random base with them is not written as a Gemma2ForCausalLM /
  // Gemma3ForCausalLM yet.
  if (m.sandwich_norms || m.query_pre_attn_scalar > 0 || m.rope_local_theta > 0 ||
      m.attn_logit_softcapping > 0 || m.final_logit_softcapping > 0) {
    return {};
  }
  // Phi-3's fused projections and partial rotary: not written as a Phi3ForCausalLM yet.
  if (m.fused_projections || m.partial_rotary_factor != 1.0) return {};
  // OLMo 2's norms: not written as an Olmo2ForCausalLM yet.
  if (!m.input_norms || m.qk_norm_full_width) return {};
  // Granite's multipliers: not written as a GraniteForCausalLM yet.
  if (m.embedding_multiplier != 1.0 || m.residual_multiplier != 1.0 || m.attention_multiplier > 0 ||
      m.logits_scaling != 1.0) {
    return {};
  }
  // NoPE layers (SmolLM3's): not written as a SmolLM3ForCausalLM yet either.
  if (std::find(m.no_rope_layers.begin(), m.no_rope_layers.end(), 0) != m.no_rope_layers.end()) {
    return {};
  }
  const bool gemma = m.norm_one_plus_weight && m.scale_embeddings;
  if (gemma != (m.norm_one_plus_weight || m.scale_embeddings)) return {};
  if (gemma) {
    if (m.qk_norm || m.sliding_window > 0) return {};
    return HfArchitecture{"GemmaForCausalLM", "gemma"};
  }
  // q_norm / k_norm exist in transformers' Qwen3 only, which also takes per-layer windows; both
  // it and Llama / Mistral read hidden_act, so either activation is expressible.
  if (m.qk_norm) return HfArchitecture{"Qwen3ForCausalLM", "qwen3"};
  if (m.sliding_window > 0) {
    if (!m.layer_types.empty()) return {};  // Qwen2's per-layer windows come with biases
    return HfArchitecture{"MistralForCausalLM", "mistral"};
  }
  return HfArchitecture{"LlamaForCausalLM", "llama"};
}

// config.json of the merged folder: the checkpoint's own with the dtype entries updated, or a
// description of the random base in the transformers architecture that computes it.
nlohmann::json merged_config_json(const ModelConfig& m, TensorDType dtype) {
  if (!m.path.empty()) {
    const std::string path = (fs::path(m.path) / kConfigFile).string();
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open '" + path + "'");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(path + ": malformed JSON: " + e.what());
    }
    // transformers >= 5 writes "dtype", older versions "torch_dtype"; both read "torch_dtype".
    bool had = false;
    for (const char* key : {"dtype", "torch_dtype"}) {
      if (j.contains(key)) {
        j[key] = torch_dtype_name(dtype);
        had = true;
      }
    }
    if (!had) j["torch_dtype"] = torch_dtype_name(dtype);
    return j;
  }
  const std::optional<HfArchitecture> arch = hf_architecture(m);
  if (!arch) {
    throw std::runtime_error(
        "the random base (model.qk_norm " + std::string(m.qk_norm ? "true" : "false") +
        ", model.norm_one_plus_weight " + (m.norm_one_plus_weight ? "true" : "false") +
        ", model.scale_embeddings " + (m.scale_embeddings ? "true" : "false") +
        ", model.sliding_window " + std::to_string(m.sliding_window) +
        ") is no transformers architecture, so its config.json cannot be written; expected the "
        "two Gemma keys together and without qk_norm or a sliding window, or neither (a "
        "sliding window in every layer is Mistral's, per-layer ones need qk_norm: Qwen3)");
  }
  nlohmann::json j;
  j["architectures"] = {arch->name};
  j["model_type"] = arch->model_type;
  if (m.sliding_window > 0) {
    j["sliding_window"] = m.sliding_window;
    if (m.qk_norm) {  // Qwen3: the window is used only with use_sliding_window, per layer
      j["use_sliding_window"] = true;
      j["layer_types"] = m.layer_types.empty() ? std::vector<std::string>(std::size_t(m.n_layers),
                                                                          "sliding_attention")
                                               : m.layer_types;
    }
  }
  j["hidden_size"] = m.dim;
  j["intermediate_size"] = m.ffn_dim;
  j["num_hidden_layers"] = m.n_layers;
  j["num_attention_heads"] = m.n_heads;
  j["num_key_value_heads"] = m.n_kv_heads;
  j["head_dim"] = m.head_dim();
  j["vocab_size"] = m.vocab_size;
  j["max_position_embeddings"] = m.max_seq_len;
  j["rms_norm_eps"] = m.norm_eps;
  j["rope_theta"] = m.rope_theta;
  j["tie_word_embeddings"] = m.tie_embeddings;
  j["hidden_act"] = m.mlp_activation == MlpActivation::kGeluTanh ? "gelu_pytorch_tanh" : "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["rope_scaling"] = nullptr;
  if (m.rope_scaling != RopeScaling::kNone) {
    // The layout both transformers 4 and 5 read (5 moves it into rope_parameters on load).
    nlohmann::json r;
    r["rope_type"] = to_string(m.rope_scaling);
    r["factor"] = m.rope_factor;
    const int original = rope_params(m).original_max_positions;  // 0 resolved
    if (m.rope_scaling == RopeScaling::kLlama3) {
      r["low_freq_factor"] = m.rope_low_freq_factor;
      r["high_freq_factor"] = m.rope_high_freq_factor;
      r["original_max_position_embeddings"] = original;
    }
    if (m.rope_scaling == RopeScaling::kYarn) {
      r["original_max_position_embeddings"] = original;
      r["beta_fast"] = m.rope_beta_fast;
      r["beta_slow"] = m.rope_beta_slow;
      r["truncate"] = m.rope_truncate;
      if (m.rope_attention_factor > 0) r["attention_factor"] = m.rope_attention_factor;
    }
    if (m.rope_scaling == RopeScaling::kLongrope) {
      r["original_max_position_embeddings"] = original;
      r["short_factor"] = m.rope_short_factor;
      r["long_factor"] = m.rope_long_factor;
      if (m.rope_attention_factor > 0) r["attention_factor"] = m.rope_attention_factor;
    }
    j["rope_scaling"] = r;
  }
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype_name(dtype);
  return j;
}

void write_text_file(const std::string& path, const std::string& text) {
  WriteOnlyFile f(path);
  f.write(text.data(), text.size());
  f.finish();
}

void copy_file_synced(const std::string& from, const std::string& to) {
  ReadOnlyFile in(from);
  WriteOnlyFile out(to);
  std::vector<char> buf(1 << 20);
  for (std::uint64_t at = 0; at < in.size();) {
    const std::size_t n = std::size_t(std::min<std::uint64_t>(buf.size(), in.size() - at));
    in.read_at(at, buf.data(), n);
    out.write(buf.data(), n);
    at += n;
  }
  out.finish();
}

std::string human_bytes(std::uint64_t b) {
  std::ostringstream o;
  o.precision(3);
  if (b >= 1'000'000'000) {
    o << double(b) / 1e9 << " GB";
  } else if (b >= 1'000'000) {
    o << double(b) / 1e6 << " MB";
  } else {
    o << double(b) / 1e3 << " kB";
  }
  return o.str();
}

}  // namespace

std::uint64_t parse_byte_size(const std::string& text) {
  auto bad = [&]() -> std::invalid_argument {
    return std::invalid_argument("'" + text +
                                 "' is not a size; expected a byte count or a number with one of "
                                 "kB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), "
                                 "e.g. 5GB");
  };
  std::size_t end = 0;
  double value = 0;
  try {
    value = std::stod(text, &end);
  } catch (const std::exception&) {
    throw bad();
  }
  if (!(value > 0) || !std::isdigit(static_cast<unsigned char>(text[0]))) throw bad();
  std::string unit = text.substr(end);
  for (char& ch : unit) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static const std::map<std::string, double> units = {
      {"", 1},     {"b", 1},        {"kb", 1e3},        {"mb", 1e6},
      {"gb", 1e9}, {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}};
  const auto it = units.find(unit);
  if (it == units.end()) throw bad();
  const double bytes = value * it->second;
  if (bytes < 1 || bytes > double(std::numeric_limits<std::uint64_t>::max() / 2)) throw bad();
  return static_cast<std::uint64_t>(bytes);
}

MergeSummary merge_adapter(const Config& cfg, const MergeOptions& opt, std::ostream& log) {
  if (opt.dtype && *opt.dtype != TensorDType::kF16 && *opt.dtype != TensorDType::kBF16) {
    throw std::invalid_argument("merge_adapter: the output dtype must be F16 or BF16, got " +
                                std::string(dtype_name(*opt.dtype)));
  }
  const std::string adapter_dir = opt.adapter_dir.empty() ? cfg.adapter.init_from : opt.adapter_dir;
  if (adapter_dir.empty()) {
    throw MergeRefused(
        "no adapter to merge: pass --adapter DIR (a PEFT adapter folder, e.g. a "
        "run's output_dir) or set adapter.init_from");
  }
  if (opt.out_dir.empty()) throw MergeRefused("no output folder: pass --out DIR");
  MergeSummary summary;
  summary.replaced = check_out_dir(
      opt.out_dir, {{"model.path", cfg.model.path}, {"--adapter", adapter_dir}}, opt.force);

  // The adapter first: a mismatched one is refused before any weight is read.
  const AdapterLayout layout = AdapterLayout::plan(cfg.model, cfg.adapter);
  std::vector<float> params(layout.total());
  read_peft_adapter(adapter_dir, cfg, layout, params.data());

  std::vector<HfTensor> tensors = hf_model_tensors(cfg.model);
  std::unique_ptr<BaseSource> source;
  if (cfg.model.path.empty()) {
    source = std::make_unique<RandomSource>(cfg.model, cfg.train.seed);
  } else {
    check_shape_against_config_json(cfg.model.path, cfg.model);
    auto checkpoint = std::make_unique<CheckpointSource>(cfg.model.path);
    // A multimodal Gemma 3's decoder is everything under "language_model.".
    const std::string decoder_root = cfg.model.multimodal_checkpoint ? "language_model." : "";
    summary.dropped_tensors = checkpoint->extra_tensors(tensors, decoder_root);
    if (cfg.model.multimodal_checkpoint) {
      for (HfTensor& t : checkpoint->carried_tensors(decoder_root, summary.dropped_tensors)) {
        tensors.push_back(std::move(t));
        ++summary.carried_tensors;
      }
    }
    if (!opt.dtype) {
      // A bf16 model merged into fp16 could overflow (fp16 tops out at 65504), and a user who
      // trained on a bf16 base expects a bf16 merge: follow the base's projection weights.
      const auto proj = std::find_if(tensors.begin(), tensors.end(), [](const HfTensor& t) {
        return t.kind == HfTensor::Kind::kProjWeight;
      });
      if (proj != tensors.end() && checkpoint->stored_dtype(*proj) == TensorDType::kBF16) {
        summary.dtype = TensorDType::kBF16;
      }
    }
    source = std::move(checkpoint);
  }
  if (opt.dtype) summary.dtype = *opt.dtype;
  const TensorDType out_dtype = summary.dtype;

  const bool bf16 = out_dtype == TensorDType::kBF16;
  const std::vector<Shard> shards = plan_shards(tensors, 2, opt.max_shard_bytes);
  StagedFolder staged(opt.out_dir);
  for (const std::string& path : staged.removed_leftovers()) {
    log << "removed " << path << " (left by an interrupted merge)\n";
  }
  const fs::path tmp = staged.path();
  std::vector<float> scratch;
  std::vector<std::uint16_t> rounded;
  nlohmann::json weight_map = nlohmann::json::object();
  for (const Shard& shard : shards) {
    std::vector<SafetensorsStreamWriter::Tensor> decl;
    for (const HfTensor* t : shard.tensors) decl.push_back({t->name, out_dtype, t->shape});
    SafetensorsStreamWriter writer((tmp / shard.file).string(), decl, {{"format", "pt"}});
    for (const HfTensor* t : shard.tensors) {
      std::vector<float> values = source->read(*t);
      const int module =
          t->kind == HfTensor::Kind::kProjWeight ? layout.module_index(t->layer, t->proj) : -1;
      if (module >= 0) {
        merge_adapter_into_weight(layout, layout.modules()[module], params.data(), values.data(),
                                  scratch);
        ++summary.merged_modules;
      }
      rounded.resize(values.size());
      const std::size_t bad =
          round_weights_to_16bit(values.data(), rounded.data(), values.size(), bf16);
      if (bad != values.size()) {
        std::ostringstream v;
        v.precision(9);
        v << values[bad];
        throw std::runtime_error(
            (module >= 0 ? "merged tensor '" : "base tensor '") + t->name + "' has " + v.str() +
            " at element " + std::to_string(bad) + ", which is not finite in " +
            (bf16 ? "bf16" : "fp16 (largest finite 65504; --dtype bf16 has fp32's range)") +
            "; nothing was written to '" + opt.out_dir + "'");
      }
      writer.append(t->name, rounded.data(), rounded.size() * sizeof(std::uint16_t));
      weight_map[t->name] = shard.file;
    }
    writer.finish();
    summary.weight_files.push_back(shard.file);
    summary.weight_bytes += writer.data_bytes();
    summary.tensors += shard.tensors.size();
  }
  if (shards.size() > 1) {
    nlohmann::json index;
    index["metadata"] = {{"total_size", summary.weight_bytes}};
    index["weight_map"] = weight_map;
    write_text_file((tmp / kIndexFile).string(), index.dump(2) + "\n");
  }
  write_text_file((tmp / kConfigFile).string(),
                  merged_config_json(cfg.model, out_dtype).dump(2) + "\n");
  if (!cfg.model.path.empty()) {
    for (const std::string& name : copied_file_names()) {
      const fs::path from = fs::path(cfg.model.path) / name;
      std::error_code ec;
      if (!fs::is_regular_file(from, ec)) continue;
      copy_file_synced(from.string(), (tmp / name).string());
      summary.copied_files.push_back(name);
    }
  }
  nlohmann::json marker;
  marker["producer"] = std::string("peftrun ") + PEFTRUN_VERSION;
  marker["base"] =
      cfg.model.path.empty() ? nlohmann::json(nullptr) : nlohmann::json(cfg.model.path);
  if (cfg.model.path.empty()) marker["random_base_seed"] = cfg.train.seed;
  marker["adapter"] = fs::absolute(adapter_dir).lexically_normal().string();
  marker["adapter_type"] = to_string(cfg.adapter.type);
  marker["merged_modules"] = summary.merged_modules;
  marker["dtype"] = torch_dtype_name(out_dtype);
  marker["weight_files"] = summary.weight_files;
  marker["dropped_tensors"] = summary.dropped_tensors;
  write_text_file((tmp / kMergeMarkerFile).string(), marker.dump(2) + "\n");
  staged.commit();
  summary.out_dir = staged.target();

  log << "merged " << to_string(cfg.adapter.type) << " adapter '" << adapter_dir << "' ("
      << summary.merged_modules << " modules) into " << source->describe() << "\n"
      << (summary.replaced ? "replaced " : "wrote ") << summary.out_dir << ": "
      << (shards.size() == 1 ? std::string(kSingleFile)
                             : std::to_string(shards.size()) + " shards + " + kIndexFile)
      << " (" << summary.tensors << " tensors, " << human_bytes(summary.weight_bytes) << " "
      << (bf16 ? "bf16" : "fp16") << (opt.dtype ? "" : ", as the base; --dtype to choose")
      << ") + config.json";
  for (const std::string& f : summary.copied_files) log << " + " << f;
  log << "\n";
  if (summary.carried_tensors > 0) {
    log << "carried over unchanged: " << summary.carried_tensors
        << " tensors outside the decoder (the vision tower and projector)\n";
  }
  if (!summary.dropped_tensors.empty()) {
    log << "not copied (not part of the model): ";
    for (std::size_t i = 0; i < summary.dropped_tensors.size(); ++i) {
      log << (i ? ", " : "") << summary.dropped_tensors[i];
    }
    log << "\n";
  }
  return summary;
}

}  // namespace peftrun
