// The frozen base model's weights, stored fp16 (DESIGN §3).
//
// Each decoder layer is ONE flat fp16 buffer (so a later issue can shard it across ranks and
// all-gather it just before use); LayerOffsets says where each tensor sits inside it. The
// non-layer tensors (embedding, final norm, lm_head) are separate buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "configs/config.h"
#include "kernels/half.h"

namespace peftrun {

// Index of a projection inside a layer; the order of all_target_modules().
enum class Proj : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kCount };

struct ProjShape {
  int out = 0, in = 0;
};

// [out, in] of each projection for a model shape.
ProjShape proj_shape(const ModelConfig& m, Proj p);

// One Linear module of the transformers model: `pieces` consecutive projections from `first`.
// Each projection is its own Linear except with model.fused_projections (Phi-3), where q, k, v
// are one qkv_proj and gate, up one gate_up_proj. A layer buffer holds the projections' weights
// back to back in Proj order, so a fused Linear's weight [sum of the pieces' out, in] is one
// contiguous block there as in the checkpoint, and its output is the pieces' outputs side by
// side (q's columns, then k's, then v's).
struct HfLinear {
  Proj first = Proj::kQ;
  int pieces = 1;
  bool holds(Proj p) const { return int(p) >= int(first) && int(p) < int(first) + pieces; }
};

// A layer's Linears in Proj order: 7 of one piece each, or qkv, o, gate_up, down.
std::vector<HfLinear> hf_linears(const ModelConfig& m);
// The Linear that computes projection p.
HfLinear hf_linear_of(const ModelConfig& m, Proj p);
// [sum of the pieces' out, in].
ProjShape linear_shape(const ModelConfig& m, HfLinear lin);
// Its module name in transformers: "q_proj", ..., or "qkv_proj" / "gate_up_proj".
const std::string& linear_name(HfLinear lin);
// The first row of p's output (and of its rows of the weight) inside lin's.
int piece_row(const ModelConfig& m, HfLinear lin, Proj p);

inline constexpr std::size_t kNoOffset = static_cast<std::size_t>(-1);

// Bit p set = projection p has a bias (Qwen2: q, k, v; Llama with attention_bias: q, k, v, o).
using BiasMask = unsigned;
inline constexpr BiasMask bias_bit(Proj p) {
  return 1u << int(p);
}

// Element offsets of one layer's tensors inside its flat buffer.
struct LayerOffsets {
  std::size_t attn_norm = 0;                 // [dim]
  std::size_t proj[int(Proj::kCount)] = {};  // [out, in] each
  std::size_t mlp_norm = 0;                  // [dim]
  std::size_t bias[int(Proj::kCount)] = {};  // [out] each, or kNoOffset
  std::size_t q_norm = kNoOffset;            // [head_dim] when the model has qk_norm
  std::size_t k_norm = kNoOffset;            // [head_dim] when the model has qk_norm
  std::size_t post_attn_norm = kNoOffset;    // [dim] when the model has sandwich_norms
  std::size_t post_mlp_norm = kNoOffset;     // [dim] when the model has sandwich_norms
  std::size_t total = 0;                     // elements per layer

  static LayerOffsets for_model(const ModelConfig& m, BiasMask biases = 0);
};

class BaseWeights {
 public:
  // Deterministic random base (no checkpoint): see base_weights.cpp for the distributions.
  static BaseWeights random(const ModelConfig& m, std::uint64_t seed);

  // Takes ownership of already-converted fp16 tensors (e.g. from an HF checkpoint). Each layer
  // buffer must follow LayerOffsets::for_model(m, biases); lm_head must be empty when the
  // embeddings are tied. Throws std::invalid_argument on any size mismatch.
  static BaseWeights from_parts(const ModelConfig& m, BiasMask biases,
                                std::vector<std::vector<half_bits>> layers,
                                std::vector<half_bits> embedding, std::vector<half_bits> final_norm,
                                std::vector<half_bits> lm_head);

  // The state shard(rank, world) leaves behind, built without ever holding a full layer (an HF
  // checkpoint read slice by slice, load_hf_checkpoint_shard): layer_slices[l] is this rank's
  // slice of layer l, exactly shard_elems_for(...) elements, zero past the end of the layer.
  // world 1 is from_parts. Throws std::invalid_argument on any size mismatch or a rank outside
  // [0, world).
  static BaseWeights from_shards(const ModelConfig& m, BiasMask biases, int rank, int world,
                                 std::vector<std::vector<half_bits>> layer_slices,
                                 std::vector<half_bits> embedding,
                                 std::vector<half_bits> final_norm, std::vector<half_bits> lm_head);
  // Elements of each rank's slice of a layer of `layer_total` elements: ceil(total / world).
  static std::size_t shard_elems_for(std::size_t layer_total, int world) {
    return (layer_total + std::size_t(world) - 1) / std::size_t(world);
  }

  // fp16 bytes of a whole base of `m` whose layers are laid out by `offsets` (unsharded_bytes of
  // such a base, without loading it).
  static std::size_t bytes_for(const ModelConfig& m, const LayerOffsets& offsets);

  const ModelConfig& shape() const { return shape_; }
  const LayerOffsets& offsets() const { return offsets_; }
  BiasMask biases() const { return biases_; }
  // Layer l's full flat buffer [offsets().total]; only while not sharded.
  const half_bits* layer(int l) const;

  // Keeps only this rank's slice of every layer buffer (DESIGN §3): layer buffers are padded to
  // world * shard_elems() elements and rank r keeps [r * shard_elems(), (r+1) * shard_elems()).
  // The layer is rebuilt just before use with an all-gather (Transformer::stage_layer).
  // Embedding, final norm and lm_head stay replicated.
  void shard(int rank, int world);
  bool sharded() const { return world_ > 1; }
  int shard_world() const { return world_; }
  std::size_t shard_elems() const { return shard_elems_; }
  const half_bits* layer_shard(int l) const { return layers_[l].data(); }
  const half_bits* embedding() const { return embedding_.data(); }    // [vocab, dim]
  const half_bits* final_norm() const { return final_norm_.data(); }  // [dim]
  // [vocab, dim]; the embedding table itself when embeddings are tied.
  const half_bits* lm_head() const {
    return shape_.tie_embeddings ? embedding_.data() : lm_head_.data();
  }
  std::size_t bytes() const;  // resident on this rank
  // What the base takes unsharded (the same on every rank), for logs that compare the two.
  std::size_t unsharded_bytes() const;

 private:
  // layer_elems: each layer buffer's required length, kNoOffset for a whole layer.
  static BaseWeights assemble(const char* who, const ModelConfig& m, BiasMask biases,
                              std::size_t layer_elems, std::vector<std::vector<half_bits>> layers,
                              std::vector<half_bits> embedding, std::vector<half_bits> final_norm,
                              std::vector<half_bits> lm_head);

  ModelConfig shape_;
  BiasMask biases_ = 0;
  LayerOffsets offsets_;
  std::vector<std::vector<half_bits>> layers_;  // full buffers, or this rank's slices
  int world_ = 1;
  std::size_t shard_elems_ = 0;
  std::vector<half_bits> embedding_, final_norm_, lm_head_;
};

}  // namespace peftrun
