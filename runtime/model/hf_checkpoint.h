// Loading a Hugging Face LLaMA-family checkpoint folder (llama, mistral, qwen2; SmolLM is llama)
// as peftrun's frozen fp16 base.
//
// A folder holds config.json plus either model.safetensors or model.safetensors.index.json,
// whose "weight_map" names the shard file of every tensor. Only the shards that hold needed
// tensors are opened, and each tensor is read by its own byte range and converted straight into
// its slot of the layer buffer, so peak memory is about the fp16 model plus one tensor.
//
// HF stores every Linear weight as [out, in], which is peftrun's layout, and peftrun's RoPE uses
// HF's rotate-half channel order, so tensors are copied without any permutation. F16 tensors are
// kept bit-exact; F32 and BF16 are rounded to the nearest fp16 (ties to even). A value that
// overflows fp16, or any inf/NaN, is refused naming the tensor: a frozen base that is silently
// partly infinite would only show up as a diverged run much later.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "configs/config.h"
#include "runtime/model/base_weights.h"

namespace peftrun {

// Where the decoder's tensors sit in a checkpoint of `m`: "model." for the causal LMs, and
// "language_model.model." in a multimodal Gemma 3 (m.multimodal_checkpoint, the layout
// transformers writes for Gemma3ForConditionalGeneration), whose lm_head, if stored, is
// "language_model.lm_head.weight".
std::string hf_decoder_tensor_prefix(const ModelConfig& m);

// HF's names, e.g. "model.layers.3.self_attn.q_proj.weight" and "model.layers.3.mlp.up_proj.bias"
// (`decoder` = hf_decoder_tensor_prefix), of a model whose projections are each their own
// Linear (hf_model_tensors names fused ones, qkv_proj and gate_up_proj).
std::string hf_proj_weight_name(int layer, Proj p, const std::string& decoder = "model.");
std::string hf_proj_bias_name(int layer, Proj p, const std::string& decoder = "model.");

// One tensor of an HF LLaMA-family checkpoint and the BaseWeights slot it fills.
struct HfTensor {
  enum class Kind {
    kEmbedding,
    kProjWeight,
    kProjBias,
    kAttnNorm,
    kMlpNorm,
    kQNorm,  // Qwen3's self_attn.q_norm / k_norm
    kKNorm,
    kPostAttnNorm,  // Gemma 2 / 3's sandwich norms
    kPostMlpNorm,
    kFinalNorm,
    kLmHead,
    kCarried  // merge: a multimodal checkpoint's tensor outside the decoder, copied as it is
  };
  std::string name;
  std::vector<std::int64_t> shape;
  Kind kind = Kind::kEmbedding;
  int layer = -1;        // the decoder layer; -1 for embedding, final norm and lm_head
  Proj proj = Proj::kQ;  // for kProjWeight / kProjBias: the Linear's first piece (qkv_proj: q)
};

// Every tensor of a model of `shape` (the biases of shape.proj_bias_mask; no lm_head when the
// embeddings are tied), in the order transformers' state_dict lists them; a multimodal Gemma 3's
// vision tower and projector are not among them.
std::vector<HfTensor> hf_model_tensors(const ModelConfig& shape);

// Where a layer tensor (layer >= 0) starts inside its layer buffer; kNoOffset for the others.
std::size_t layer_offset(const LayerOffsets& offsets, const HfTensor& t);

// Throws std::runtime_error naming `dir`/config.json and the key when `shape` (normally the
// resolved config's model section) differs from what that config.json says, or config.json
// cannot be read or is not a supported model.
void check_shape_against_config_json(const std::string& dir, const ModelConfig& shape);

// Loads `dir` into a BaseWeights of `shape`, with the biases of shape.proj_bias_mask laid out by
// LayerOffsets::for_model(shape, shape.proj_bias_mask). `shape` is normally the resolved
// config's model section, whose shape fields the config loader took from `dir`/config.json; it
// must agree with that config.json. An lm_head.weight is ignored when the embeddings are tied.
//
// Throws std::runtime_error naming the file (and the tensor, where there is one) for: no
// config.json or one that disagrees with `shape`; neither model.safetensors nor an index; a
// malformed index or one naming a missing shard; a missing tensor; a wrong shape (expected vs
// got); a dtype other than F32/F16/BF16; a bias tensor the shape has no slot for; a value that
// is not finite in fp16.
BaseWeights load_hf_checkpoint(const std::string& dir, const ModelConfig& shape);

// What a load read from the tensor data (headers not counted), for tests and logs.
struct HfReadStats {
  std::uint64_t tensor_bytes_read = 0;
};

// Rank `rank` of `world`'s part of the base, bit-identical to load_hf_checkpoint(dir, shape)
// followed by shard(rank, world), without ever holding a whole layer: of each layer only the
// byte ranges of this rank's slice are read (BaseWeights::shard's layout); the embedding, final
// norm and lm_head are read whole (they stay replicated). Every layer tensor's shape and dtype is
// still checked from its file's header, so each rank refuses a bad checkpoint with the same
// message whatever it reads; values (non-finite, fp16 overflow) are checked only where they are
// read. world 1 is load_hf_checkpoint. Throws what load_hf_checkpoint throws, and
// std::invalid_argument for a rank outside [0, world).
BaseWeights load_hf_checkpoint_shard(const std::string& dir, const ModelConfig& shape, int rank,
                                     int world, HfReadStats* stats = nullptr);

}  // namespace peftrun
