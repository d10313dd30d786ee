// Where every trainable tensor lives inside the ONE flat fp32 trainable buffer (DESIGN §3).
//
// Each adapted module (layer l, projection p) owns a few tensors: LoRA has A [r, in] and
// B [out, r]; DoRA will add the magnitude m [out]; AdaLoRA the singular values E [r, 1]. Tensors
// are views (offsets) into the flat params buffer, with twin grads / AdamW moment buffers of the
// same layout, so accumulation, clipping, all-reduce and AdamW all run over flat memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "configs/config.h"
#include "runtime/model/base_weights.h"

namespace peftrun {

inline constexpr std::size_t kNoTensor = static_cast<std::size_t>(-1);

struct TrainableTensor {
  std::string
      name;  // HF PEFT key, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;  // elements into the flat buffer
  std::size_t numel() const;
};

// One adapted Linear. With model.fused_projections it computes several projections (Phi-3's
// qkv_proj: q, k, v), and its adapter is PEFT's on the fused Linear: one A [r, in] shared by
// the pieces, and B [out, r] (and DoRA's m [out]) whose rows are the pieces' rows back to back
// (piece_row). The models run each piece as its own linear with B's (and m's) rows of that
// piece; the pieces' gradients of A (and AdaLoRA's E) add up in the one tensor.
struct AdaptedModule {
  int layer = 0;
  Proj proj = Proj::kQ;  // the first piece
  int pieces = 1;
  // Its path in the transformers model PEFT wraps (hf_module_name with the model's decoder
  // prefix), e.g. "model.layers.0.self_attn.q_proj"; the tensors' names start with
  // "base_model.model." + this.
  std::string module;
  ProjShape shape;            // the whole Linear's
  int r = 0;                  // rank (AdaLoRA: init_r; pruned triplets are masked, not removed)
  std::size_t a = kNoTensor;  // lora_A: [r, in]   (AdaLoRA: P)
  std::size_t b = kNoTensor;  // lora_B: [out, r]  (AdaLoRA: Q)
  std::size_t m = kNoTensor;  // DoRA lora_magnitude_vector: [out]
  std::size_t e = kNoTensor;  // AdaLoRA lora_E (singular values Lambda): [r, 1]
  HfLinear linear() const { return {proj, pieces}; }
};

class AdapterLayout {
 public:
  // Plans the flat buffer for the adapter config over a model shape.
  static AdapterLayout plan(const ModelConfig& model, const AdapterConfig& adapter);

  const std::vector<AdaptedModule>& modules() const { return modules_; }
  const std::vector<TrainableTensor>& tensors() const { return tensors_; }
  // modules() index of the module computing (layer, proj), or -1 when that projection is not
  // adapted.
  int module_index(int layer, Proj p) const { return index_[layer * int(Proj::kCount) + int(p)]; }
  std::size_t total() const { return total_; }  // elements in the flat buffer
  float scale() const { return scale_; }

  AdapterType type() const { return type_; }

  // HF PEFT's initialisation (DESIGN §4), from a counter-based stream keyed by `seed`:
  //   LoRA/DoRA: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform, a = sqrt(5)), B = 0;
  //   AdaLoRA:   A, B ~ N(0, 0.02^2), E = 0.
  // DoRA's magnitude needs the base weights (m = row norms of W): the caller fills it.
  void init_params(float* params, std::uint64_t seed) const;

 private:
  std::vector<AdaptedModule> modules_;
  std::vector<TrainableTensor> tensors_;
  std::vector<int> index_;
  std::size_t total_ = 0;
  float scale_ = 0;
  AdapterType type_ = AdapterType::kLora;
};

// Where the decoder sits in the transformers model: "model." for the causal LMs, and
// "model.language_model." in a multimodal Gemma 3 (Gemma3ForConditionalGeneration; its
// checkpoint stores the same tensors under another name, hf_decoder_tensor_prefix).
std::string hf_decoder_module_prefix(const ModelConfig& m);

// "model.layers.3.self_attn.q_proj" / "model.layers.3.mlp.down_proj" (HF LLaMA module names;
// `decoder` = hf_decoder_module_prefix); `linear` is linear_name's, e.g. "qkv_proj".
std::string hf_module_name(int layer, const std::string& linear,
                           const std::string& decoder = "model.");
std::string hf_module_name(int layer, Proj p, const std::string& decoder = "model.");

}  // namespace peftrun
