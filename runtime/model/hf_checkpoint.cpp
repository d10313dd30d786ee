#include "runtime/model/hf_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "configs/hf_model_config.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/io/safetensors.h"
#include "runtime/model/hf_checkpoint_files.h"

namespace peftrun {
namespace {

std::string number_text(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
}

std::string list_text(const std::vector<double>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ", ";
    out += number_text(values[i]);
  }
  return out + "]";
}

// Every RoPE scaling field at once: they only mean something together.
std::string rope_text(const ModelConfig& m) {
  return std::string(to_string(m.rope_scaling)) + " (factor " + number_text(m.rope_factor) +
         ", low/high_freq_factor " + number_text(m.rope_low_freq_factor) + "/" +
         number_text(m.rope_high_freq_factor) + ", original_max_position_embeddings " +
         std::to_string(m.rope_original_max_seq_len) + ", beta_fast/slow " +
         number_text(m.rope_beta_fast) + "/" + number_text(m.rope_beta_slow) +
         ", attention_factor " + number_text(m.rope_attention_factor) + ", truncate " +
         (m.rope_truncate ? "true" : "false") + ", short_factor " + list_text(m.rope_short_factor) +
         ", long_factor " + list_text(m.rope_long_factor) + ")";
}

// "q_proj, k_proj, v_proj", or "no projection".
std::string bias_text(unsigned mask) {
  std::string out;
  for (int p = 0; p < int(Proj::kCount); ++p) {
    if (mask & bias_bit(Proj(p))) out += (out.empty() ? "" : ", ") + all_target_modules()[p];
  }
  return out.empty() ? "no projection" : out;
}

}  // namespace

// The caller's shape must be the one config.json states: a shape typed into the YAML for a
// folder without config.json, or assembled by hand, would otherwise decide how the tensors are
// cut up (and whether lm_head is read) without anything checking it.
void check_shape_against_config_json(const std::string& dir, const ModelConfig& shape) {
  const HfModelConfig hf = read_hf_model_config(dir);
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
  expect("head_dim", "head_dim", std::to_string(want.head_dim()), std::to_string(shape.head_dim()));
  expect("intermediate_size", "ffn_dim", std::to_string(want.ffn_dim),
         std::to_string(shape.ffn_dim));
  expect("vocab_size", "vocab_size", std::to_string(want.vocab_size),
         std::to_string(shape.vocab_size));
  expect("max_position_embeddings", "max_seq_len", std::to_string(want.max_seq_len),
         std::to_string(shape.max_seq_len));
  expect("rope_theta", "rope_theta", number_text(want.rope_theta), number_text(shape.rope_theta));
  expect("rope_scaling / rope_parameters", "RoPE scaling", rope_text(want), rope_text(shape));
  expect("partial_rotary_factor", "partial_rotary_factor", number_text(want.partial_rotary_factor),
         number_text(shape.partial_rotary_factor));
  auto flag = [](bool b) { return std::string(b ? "true" : "false"); };
  expect("tie_word_embeddings", "tie_embeddings", flag(want.tie_embeddings),
         flag(shape.tie_embeddings));
  expect("rms_norm_eps", "norm_eps", number_text(want.norm_eps), number_text(shape.norm_eps));
  expect("model_type/attention_bias/mlp_bias", "biases on", bias_text(want.proj_bias_mask),
         bias_text(shape.proj_bias_mask));
  expect("model_type", "qk_norm", flag(want.qk_norm), flag(shape.qk_norm));
  expect("hidden_act", "mlp_activation", to_string(want.mlp_activation),
         to_string(shape.mlp_activation));
  expect("model_type", "norm_one_plus_weight", flag(want.norm_one_plus_weight),
         flag(shape.norm_one_plus_weight));
  expect("model_type", "scale_embeddings", flag(want.scale_embeddings),
         flag(shape.scale_embeddings));
  expect("model_type", "input_norms", flag(want.input_norms), flag(shape.input_norms));
  expect("model_type", "qk_norm_full_width", flag(want.qk_norm_full_width),
         flag(shape.qk_norm_full_width));
  expect("model_type", "sandwich_norms", flag(want.sandwich_norms), flag(shape.sandwich_norms));
  expect("model_type", "fused_projections", flag(want.fused_projections),
         flag(shape.fused_projections));
  expect("model_type", "a multimodal checkpoint", flag(want.multimodal_checkpoint),
         flag(shape.multimodal_checkpoint));
  // The scalars config.json sets under the same names as the YAML keys.
  const std::pair<const char*, double ModelConfig::*> scalars[] = {
      {"query_pre_attn_scalar", &ModelConfig::query_pre_attn_scalar},
      {"attn_logit_softcapping", &ModelConfig::attn_logit_softcapping},
      {"final_logit_softcapping", &ModelConfig::final_logit_softcapping},
      {"embedding_multiplier", &ModelConfig::embedding_multiplier},
      {"residual_multiplier", &ModelConfig::residual_multiplier},
      {"attention_multiplier", &ModelConfig::attention_multiplier},
      {"logits_scaling", &ModelConfig::logits_scaling}};
  for (const auto& [key, field] : scalars) {
    expect(key, key, number_text(want.*field), number_text(shape.*field));
  }
  expect("rope_local_base_freq", "rope_local_theta", number_text(want.rope_local_theta),
         number_text(shape.rope_local_theta));
  expect("sliding_window", "sliding_window", std::to_string(want.sliding_window),
         std::to_string(shape.sliding_window));
  auto list_text = [](const auto& items) {
    std::string s;
    for (const auto& x : items) {
      if (!s.empty()) s += ',';
      if constexpr (std::is_same_v<std::decay_t<decltype(x)>, std::string>) {
        s += x;
      } else {
        s += std::to_string(x);
      }
    }
    return "[" + s + "]";
  };
  expect("layer_types", "layer_types", list_text(want.layer_types), list_text(shape.layer_types));
  expect("no_rope_layers", "no_rope_layers", list_text(want.no_rope_layers),
         list_text(shape.no_rope_layers));
}

namespace {

class Loader {
 public:
  explicit Loader(const std::string& dir) : files_(dir) {}

  // Only the file's header is consulted, so a rank that reads none of a tensor still refuses a
  // checkpoint that is wrong.
  CheckedTensor check(const std::string& name, const std::vector<std::int64_t>& shape) {
    return files_.check(name, shape);
  }

  // Elements [first, first + count) of a checked tensor as fp16 into dst[0 .. count): a whole
  // tensor and one rank's slice of it go through this same code, so both give the same bits.
  // Element indices in errors count from the tensor's start.
  void read(const CheckedTensor& t, std::size_t first, std::size_t count, half_bits* dst) {
    const std::size_t elem = dtype_size(t.info->dtype);
    bytes_read_ += count * elem;
    if (t.info->dtype == TensorDType::kF16) {
      // Bit-exact: the checkpoint's own fp16 values are the base.
      t.reader->read_tensor_elements(t.info->name, first, count, dst);
      for (std::size_t i = 0; i < count; ++i) {
        if ((dst[i] & 0x7c00u) == 0x7c00u) non_finite(t.what, first + i, half_to_float(dst[i]));
      }
      return;
    }
    // Raw bytes go into one reusable scratch buffer (the only per-tensor copy, and only of the
    // range asked for), then through a small float chunk into fp16 with round-to-nearest-even.
    raw_.resize(count * elem);
    t.reader->read_tensor_elements(t.info->name, first, count, raw_.data());
    constexpr std::size_t kChunk = 4096;
    float chunk[kChunk];
    for (std::size_t start = 0; start < count; start += kChunk) {
      const std::size_t n = std::min(kChunk, count - start);
      convert_to_float(t.info->dtype, raw_.data() + start * elem, chunk, n);
      for (std::size_t j = 0; j < n; ++j) {
        const float v = chunk[j];
        const std::size_t at = first + start + j;
        if (!std::isfinite(v)) non_finite(t.what, at, v);
        const half_bits h = float_to_half(v);
        if ((h & 0x7c00u) == 0x7c00u) {
          throw std::runtime_error(t.what + " has " + number_text(v) + " at element " +
                                   std::to_string(at) +
                                   ", which overflows fp16 (largest finite 65504); the frozen "
                                   "base is kept in fp16 and would hold inf");
        }
        dst[start + j] = h;
      }
    }
  }

  // The whole tensor `name`, which must have `shape`, into dst[0 .. numel).
  void read_whole(const std::string& name, const std::vector<std::int64_t>& shape, half_bits* dst) {
    const CheckedTensor t = check(name, shape);
    read(t, 0, t.info->numel(), dst);
  }

  bool has(const std::string& name) const { return files_.has(name); }
  const std::string& where() const { return files_.where(); }
  std::uint64_t bytes_read() const { return bytes_read_; }

 private:
  [[noreturn]] static void non_finite(const std::string& what, std::size_t i, float v) {
    throw std::runtime_error(what + " has a non-finite value (" + number_text(v) + ") at element " +
                             std::to_string(i) + ", expected finite weights");
  }

  HfCheckpointFiles files_;
  std::vector<std::uint8_t> raw_;
  std::uint64_t bytes_read_ = 0;
};

std::string linear_prefix(int layer, HfLinear lin, const std::string& decoder) {
  return hf_module_name(layer, linear_name(lin), decoder);
}

}  // namespace

std::string hf_decoder_tensor_prefix(const ModelConfig& m) {
  return m.multimodal_checkpoint ? "language_model.model." : "model.";
}

std::string hf_proj_weight_name(int layer, Proj p, const std::string& decoder) {
  return linear_prefix(layer, {p, 1}, decoder) + ".weight";
}

std::string hf_proj_bias_name(int layer, Proj p, const std::string& decoder) {
  return linear_prefix(layer, {p, 1}, decoder) + ".bias";
}

std::vector<HfTensor> hf_model_tensors(const ModelConfig& shape) {
  std::vector<HfTensor> out;
  const std::int64_t dim = shape.dim, vocab = shape.vocab_size;
  const std::string decoder = hf_decoder_tensor_prefix(shape);
  out.push_back(
      {decoder + "embed_tokens.weight", {vocab, dim}, HfTensor::Kind::kEmbedding, -1, Proj::kQ});
  for (int l = 0; l < shape.n_layers; ++l) {
    // A fused Linear's weight (and bias) is its pieces' back to back, which is how the layer
    // buffer holds them: one tensor at the first piece's offset.
    for (const HfLinear& lin : hf_linears(shape)) {
      const ProjShape s = linear_shape(shape, lin);
      const std::string prefix = linear_prefix(l, lin, decoder);
      out.push_back({prefix + ".weight", {s.out, s.in}, HfTensor::Kind::kProjWeight, l, lin.first});
      if (shape.proj_bias_mask & bias_bit(lin.first)) {
        out.push_back({prefix + ".bias", {s.out}, HfTensor::Kind::kProjBias, l, lin.first});
      }
    }
    const std::string prefix = decoder + "layers." + std::to_string(l) + ".";
    // OLMo 2 (input_norms false) normalises only the blocks' outputs: no input_layernorm and
    // no MLP input norm.
    if (shape.input_norms) {
      out.push_back(
          {prefix + "input_layernorm.weight", {dim}, HfTensor::Kind::kAttnNorm, l, Proj::kQ});
    }
    if (shape.sandwich_norms) {
      // Gemma 2 / 3: post_attention_layernorm normalises the attention output; the MLP's input
      // norm is pre_feedforward_layernorm.
      out.push_back({prefix + "post_attention_layernorm.weight",
                     {dim},
                     HfTensor::Kind::kPostAttnNorm,
                     l,
                     Proj::kQ});
      if (shape.input_norms) {
        out.push_back({prefix + "pre_feedforward_layernorm.weight",
                       {dim},
                       HfTensor::Kind::kMlpNorm,
                       l,
                       Proj::kQ});
      }
      out.push_back({prefix + "post_feedforward_layernorm.weight",
                     {dim},
                     HfTensor::Kind::kPostMlpNorm,
                     l,
                     Proj::kQ});
    } else if (shape.input_norms) {
      out.push_back({prefix + "post_attention_layernorm.weight",
                     {dim},
                     HfTensor::Kind::kMlpNorm,
                     l,
                     Proj::kQ});
    }
    if (shape.qk_norm) {
      const std::int64_t qw = shape.qk_norm_width(shape.n_heads);
      const std::int64_t kw = shape.qk_norm_width(shape.n_kv_heads);
      out.push_back(
          {prefix + "self_attn.q_norm.weight", {qw}, HfTensor::Kind::kQNorm, l, Proj::kQ});
      out.push_back(
          {prefix + "self_attn.k_norm.weight", {kw}, HfTensor::Kind::kKNorm, l, Proj::kK});
    }
  }
  out.push_back({decoder + "norm.weight", {dim}, HfTensor::Kind::kFinalNorm, -1, Proj::kQ});
  if (!shape.tie_embeddings) {
    const std::string lm_head =
        shape.multimodal_checkpoint ? "language_model.lm_head.weight" : "lm_head.weight";
    out.push_back({lm_head, {vocab, dim}, HfTensor::Kind::kLmHead, -1, Proj::kQ});
  }
  return out;
}

std::size_t layer_offset(const LayerOffsets& offsets, const HfTensor& t) {
  switch (t.kind) {
    case HfTensor::Kind::kAttnNorm:
      return offsets.attn_norm;
    case HfTensor::Kind::kMlpNorm:
      return offsets.mlp_norm;
    case HfTensor::Kind::kQNorm:
      return offsets.q_norm;
    case HfTensor::Kind::kKNorm:
      return offsets.k_norm;
    case HfTensor::Kind::kPostAttnNorm:
      return offsets.post_attn_norm;
    case HfTensor::Kind::kPostMlpNorm:
      return offsets.post_mlp_norm;
    case HfTensor::Kind::kProjWeight:
      return offsets.proj[int(t.proj)];
    case HfTensor::Kind::kProjBias:
      return offsets.bias[int(t.proj)];
    default:
      return kNoOffset;
  }
}

namespace {

// Layer l's elements [begin, begin + dst_elems) into dst (the part past the layer's end is left
// alone: it is the shard padding). Every tensor of the layer is checked against its header, but
// only the part that overlaps the range is read.
void read_layer_range(Loader& loader, const ModelConfig& shape, const LayerOffsets& offsets, int l,
                      std::size_t begin, std::size_t dst_elems, half_bits* dst) {
  const std::size_t end = std::min(begin + dst_elems, offsets.total);
  auto part = [&](const std::string& name, const std::vector<std::int64_t>& tensor_shape,
                  std::size_t at) {
    const CheckedTensor t = loader.check(name, tensor_shape);
    const std::size_t lo = std::max(at, begin);
    const std::size_t hi = std::min(at + std::size_t(t.info->numel()), end);
    if (lo < hi) loader.read(t, lo - at, hi - lo, dst + (lo - begin));
  };
  for (const HfTensor& t : hf_model_tensors(shape)) {
    if (t.layer == l) part(t.name, t.shape, layer_offset(offsets, t));
  }
  for (const HfLinear& lin : hf_linears(shape)) {
    const std::string bias = linear_prefix(l, lin, hf_decoder_tensor_prefix(shape)) + ".bias";
    if (!(shape.proj_bias_mask & bias_bit(lin.first)) && loader.has(bias)) {
      // Dropping it would quietly compute a different model than the checkpoint's.
      throw std::runtime_error(loader.where() + ": has tensor '" + bias + "', but config.json (" +
                               "model_type, attention_bias, mlp_bias) gives " + linear_name(lin) +
                               " no bias");
    }
  }
}

}  // namespace

// The whole load is the sharded one with world 1 (a slice that is the whole layer), so the two
// cannot drift apart: a rank's slice is bit-for-bit what shard() would cut from the full load.
BaseWeights load_hf_checkpoint_shard(const std::string& dir, const ModelConfig& shape, int rank,
                                     int world, HfReadStats* stats) {
  if (world < 1 || rank < 0 || rank >= world) {
    throw std::invalid_argument("load_hf_checkpoint_shard: rank " + std::to_string(rank) +
                                " of world " + std::to_string(world) +
                                ", expected 0 <= rank < world");
  }
  check_shape_against_config_json(dir, shape);
  Loader loader(dir);
  const LayerOffsets offsets = LayerOffsets::for_model(shape, shape.proj_bias_mask);
  const std::size_t slice = BaseWeights::shard_elems_for(offsets.total, world);
  const std::int64_t dim = shape.dim;
  const std::int64_t vocab = shape.vocab_size;

  std::vector<std::vector<half_bits>> layers(shape.n_layers);
  for (int l = 0; l < shape.n_layers; ++l) {
    layers[l].assign(slice, 0);  // zero padding past the layer's end, as shard() leaves it
    read_layer_range(loader, shape, offsets, l, std::size_t(rank) * slice, slice, layers[l].data());
  }
  std::vector<half_bits> embedding(std::size_t(vocab) * dim), final_norm(dim), lm_head;
  // Tied checkpoints sometimes still carry a copy of the embedding as lm_head.weight; the tie
  // in config.json is what HF uses, so the copy is not even read.
  if (!shape.tie_embeddings) lm_head.resize(std::size_t(vocab) * dim);
  for (const HfTensor& t : hf_model_tensors(shape)) {
    if (t.kind == HfTensor::Kind::kEmbedding) loader.read_whole(t.name, t.shape, embedding.data());
    if (t.kind == HfTensor::Kind::kFinalNorm) loader.read_whole(t.name, t.shape, final_norm.data());
    if (t.kind == HfTensor::Kind::kLmHead) loader.read_whole(t.name, t.shape, lm_head.data());
  }
  if (stats) stats->tensor_bytes_read = loader.bytes_read();
  return BaseWeights::from_shards(shape, shape.proj_bias_mask, rank, world, std::move(layers),
                                  std::move(embedding), std::move(final_norm), std::move(lm_head));
}

BaseWeights load_hf_checkpoint(const std::string& dir, const ModelConfig& shape) {
  return load_hf_checkpoint_shard(dir, shape, 0, 1);
}

}  // namespace peftrun
