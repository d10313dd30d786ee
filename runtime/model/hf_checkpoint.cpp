#include "runtime/model/hf_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "configs/hf_model_config.h"
#include "runtime/io/safetensors.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return out + "]";
}

std::string number_text(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
}

// "q_proj, k_proj, v_proj", or "no projection".
std::string bias_text(unsigned mask) {
  std::string out;
  for (int p = 0; p < int(Proj::kCount); ++p) {
    if (mask & bias_bit(Proj(p))) out += (out.empty() ? "" : ", ") + all_target_modules()[p];
  }
  return out.empty() ? "no projection" : out;
}

// The caller's shape must be the one config.json states: a shape typed into the YAML for a
// folder without config.json, or assembled by hand, would otherwise decide how the tensors are
// cut up (and whether lm_head is read) without anything checking it.
void check_shape_against_config_json(const std::string& dir, const ModelConfig& shape) {
  const HfModelConfig hf = read_hf_model_config(dir, 0);
  if (!hf.ok()) {
    std::string message = hf.errors.front().format();
    if (hf.errors.size() > 1) {
      message += " (and " + std::to_string(hf.errors.size() - 1) + " more problem(s))";
    }
    throw std::runtime_error(message);
  }
  const ModelConfig& want = hf.shape;
  auto expect = [&](const char* json_key, const char* field, const std::string& theirs,
                    const std::string& ours) {
    if (theirs == ours) return;
    throw std::runtime_error(hf.file + ": " + json_key + " gives " + theirs +
                             " but the model shape has " + field + " " + ours +
                             ", expected them equal (load the config with model.path set so the "
                             "shape comes from the checkpoint)");
  };
  expect("hidden_size", "dim", std::to_string(want.dim), std::to_string(shape.dim));
  expect("num_hidden_layers", "n_layers", std::to_string(want.n_layers),
         std::to_string(shape.n_layers));
  expect("num_attention_heads", "n_heads", std::to_string(want.n_heads),
         std::to_string(shape.n_heads));
  expect("num_key_value_heads", "n_kv_heads", std::to_string(want.n_kv_heads),
         std::to_string(shape.n_kv_heads));
  expect("intermediate_size", "ffn_dim", std::to_string(want.ffn_dim),
         std::to_string(shape.ffn_dim));
  expect("vocab_size", "vocab_size", std::to_string(want.vocab_size),
         std::to_string(shape.vocab_size));
  expect("max_position_embeddings", "max_seq_len", std::to_string(want.max_seq_len),
         std::to_string(shape.max_seq_len));
  expect("rope_theta", "rope_theta", number_text(want.rope_theta), number_text(shape.rope_theta));
  expect("tie_word_embeddings", "tie_embeddings", want.tie_embeddings ? "true" : "false",
         shape.tie_embeddings ? "true" : "false");
  expect("rms_norm_eps", "norm_eps", number_text(want.norm_eps), number_text(shape.norm_eps));
  expect("model_type/attention_bias/mlp_bias", "biases on", bias_text(want.proj_bias_mask),
         bias_text(shape.proj_bias_mask));
}

// Where each tensor lives: one file, or the shards of an index. Readers open lazily, so a
// sharded checkpoint only opens the shards that hold tensors the model needs.
class CheckpointFiles {
 public:
  explicit CheckpointFiles(const std::string& dir) : dir_(dir) {
    std::error_code ec;
    const fs::path single = fs::path(dir) / kSingleFile;
    const fs::path index = fs::path(dir) / kIndexFile;
    // transformers prefers the single file when both are present; so do we.
    if (fs::exists(single, ec)) {
      single_ = std::make_unique<SafetensorsReader>(single.lexically_normal().string());
    } else if (fs::exists(index, ec)) {
      read_index(index.lexically_normal().string());
    } else {
      throw std::runtime_error("checkpoint folder '" + dir + "' has neither " + kSingleFile +
                               " nor " + kIndexFile +
                               ", expected Hugging Face safetensors weights (pytorch_model.bin is "
                               "not supported)");
    }
  }

  // The file a missing tensor is reported against.
  const std::string& where() const { return single_ ? single_->path() : index_path_; }

  bool has(const std::string& tensor) const {
    return single_ ? single_->contains(tensor) : weight_map_.count(tensor) > 0;
  }

  const SafetensorsReader& reader_for(const std::string& tensor) {
    if (!has(tensor)) {
      throw std::runtime_error(where() + ": missing tensor '" + tensor + "'" +
                               (single_ ? "" : " (not in weight_map)"));
    }
    if (single_) return *single_;
    const std::string& shard = weight_map_.at(tensor);
    auto& reader = shards_[shard];
    if (!reader) {
      const fs::path path = fs::path(dir_) / shard;
      std::error_code ec;
      if (!fs::exists(path, ec)) {
        throw std::runtime_error(index_path_ + ": weight_map puts tensor '" + tensor +
                                 "' in shard '" + shard + "', which does not exist in '" + dir_ +
                                 "'");
      }
      reader = std::make_unique<SafetensorsReader>(path.lexically_normal().string());
    }
    if (!reader->contains(tensor)) {
      throw std::runtime_error(reader->path() + ": missing tensor '" + tensor + "' (" +
                               index_path_ + " says it is in this shard)");
    }
    return *reader;
  }

  std::size_t shards_opened() const { return shards_.size(); }

 private:
  void read_index(const std::string& path) {
    index_path_ = path;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot be opened");
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(path + ": malformed JSON: " + e.what());
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw std::runtime_error(path +
                               ": expected a JSON object with a \"weight_map\" object "
                               "(tensor name -> shard file)");
    }
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string()) {
        throw std::runtime_error(path + ": weight_map entry for tensor '" + tensor + "' is " +
                                 file.dump() + ", expected a shard file name");
      }
      const std::string name = file.get<std::string>();
      // Shards sit next to the index; a path would let a downloaded index read arbitrary files.
      if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
        throw std::runtime_error(path + ": weight_map entry for tensor '" + tensor + "' is '" +
                                 name + "', expected a file name in the same folder");
      }
      weight_map_.emplace(tensor, name);
    }
  }

  std::string dir_;
  std::unique_ptr<SafetensorsReader> single_;
  std::string index_path_;
  std::map<std::string, std::string> weight_map_;
  std::map<std::string, std::unique_ptr<SafetensorsReader>> shards_;
};

class Loader {
 public:
  explicit Loader(const std::string& dir) : files_(dir) {}

  // Reads tensor `name`, which must have `shape`, as fp16 into dst[0 .. numel).
  void read(const std::string& name, const std::vector<std::int64_t>& shape, half_bits* dst) {
    const SafetensorsReader& reader = files_.reader_for(name);
    const TensorInfo& info = reader.info(name);
    const std::string what = reader.path() + ": tensor '" + name + "'";
    if (info.shape != shape) {
      throw std::runtime_error(what + " has shape " + shape_text(info.shape) + ", expected " +
                               shape_text(shape));
    }
    const std::size_t n = info.numel();
    switch (info.dtype) {
      case DType::kF16:
        // Bit-exact: the checkpoint's own fp16 values are the base.
        reader.read_tensor_into(name, dst, n * sizeof(half_bits));
        for (std::size_t i = 0; i < n; ++i) {
          if ((dst[i] & 0x7c00u) == 0x7c00u) non_finite(what, i, half_to_float(dst[i]));
        }
        return;
      case DType::kBF16:
      case DType::kF32:
        convert(reader, info, what, dst);
        return;
      default:
        throw std::runtime_error(what + " has dtype " + std::string(dtype_name(info.dtype)) +
                                 ", expected F32, F16 or BF16");
    }
  }

  bool has(const std::string& name) const { return files_.has(name); }
  const std::string& where() const { return files_.where(); }

 private:
  [[noreturn]] static void non_finite(const std::string& what, std::size_t i, float v) {
    throw std::runtime_error(what + " has a non-finite value (" + number_text(v) + ") at element " +
                             std::to_string(i) + ", expected finite weights");
  }

  // Raw bytes go into one reusable scratch buffer (the only per-tensor copy), then through a
  // small float chunk into fp16 with round-to-nearest-even.
  void convert(const SafetensorsReader& reader, const TensorInfo& info, const std::string& what,
               half_bits* dst) {
    raw_.resize(info.nbytes());
    reader.read_tensor_into(info.name, raw_.data(), raw_.size());
    const std::size_t n = info.numel();
    const std::size_t elem = dtype_size(info.dtype);
    constexpr std::size_t kChunk = 4096;
    float chunk[kChunk];
    for (std::size_t start = 0; start < n; start += kChunk) {
      const std::size_t count = std::min(kChunk, n - start);
      convert_to_float(info.dtype, raw_.data() + start * elem, chunk, count);
      for (std::size_t j = 0; j < count; ++j) {
        const float v = chunk[j];
        if (!std::isfinite(v)) non_finite(what, start + j, v);
        const half_bits h = float_to_half(v);
        if ((h & 0x7c00u) == 0x7c00u) {
          throw std::runtime_error(what + " has " + number_text(v) + " at element " +
                                   std::to_string(start + j) +
                                   ", which overflows fp16 (largest finite 65504); the frozen "
                                   "base is kept in fp16 and would hold inf");
        }
        dst[start + j] = h;
      }
    }
  }

  CheckpointFiles files_;
  std::vector<std::uint8_t> raw_;
};

std::string proj_prefix(int layer, Proj p) {
  const bool attention = p == Proj::kQ || p == Proj::kK || p == Proj::kV || p == Proj::kO;
  return "model.layers." + std::to_string(layer) + (attention ? ".self_attn." : ".mlp.") +
         all_target_modules()[int(p)];
}

}  // namespace

std::string hf_proj_weight_name(int layer, Proj p) {
  return proj_prefix(layer, p) + ".weight";
}

std::string hf_proj_bias_name(int layer, Proj p) {
  return proj_prefix(layer, p) + ".bias";
}

BaseWeights load_hf_checkpoint(const std::string& dir, const ModelConfig& shape) {
  check_shape_against_config_json(dir, shape);
  Loader loader(dir);
  const BiasMask biases = shape.proj_bias_mask;
  const LayerOffsets offsets = LayerOffsets::for_model(shape, biases);
  const std::int64_t dim = shape.dim;
  const std::int64_t vocab = shape.vocab_size;

  std::vector<std::vector<half_bits>> layers(shape.n_layers);
  for (int l = 0; l < shape.n_layers; ++l) {
    std::vector<half_bits>& buf = layers[l];
    buf.resize(offsets.total);
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    loader.read(prefix + "input_layernorm.weight", {dim}, buf.data() + offsets.attn_norm);
    loader.read(prefix + "post_attention_layernorm.weight", {dim}, buf.data() + offsets.mlp_norm);
    for (int p = 0; p < int(Proj::kCount); ++p) {
      const ProjShape s = proj_shape(shape, Proj(p));
      loader.read(hf_proj_weight_name(l, Proj(p)), {s.out, s.in}, buf.data() + offsets.proj[p]);
      const std::string bias = hf_proj_bias_name(l, Proj(p));
      if (biases & bias_bit(Proj(p))) {
        loader.read(bias, {s.out}, buf.data() + offsets.bias[p]);
      } else if (loader.has(bias)) {
        // Dropping it would quietly compute a different model than the checkpoint's.
        throw std::runtime_error(loader.where() + ": has tensor '" + bias + "', but config.json (" +
                                 "model_type, attention_bias, mlp_bias) gives " +
                                 all_target_modules()[p] + " no bias");
      }
    }
  }
  std::vector<half_bits> embedding(std::size_t(vocab) * dim);
  loader.read("model.embed_tokens.weight", {vocab, dim}, embedding.data());
  std::vector<half_bits> final_norm(dim);
  loader.read("model.norm.weight", {dim}, final_norm.data());
  std::vector<half_bits> lm_head;
  // Tied checkpoints sometimes still carry a copy of the embedding as lm_head.weight; the tie
  // in config.json is what HF uses, so the copy is not even read.
  if (!shape.tie_embeddings) {
    lm_head.resize(std::size_t(vocab) * dim);
    loader.read("lm_head.weight", {vocab, dim}, lm_head.data());
  }
  return BaseWeights::from_parts(shape, biases, std::move(layers), std::move(embedding),
                                 std::move(final_norm), std::move(lm_head));
}

}  // namespace peftrun
