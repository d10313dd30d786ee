#include "runtime/model/base_weights.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "runtime/rng.h"

namespace peftrun {

ProjShape proj_shape(const ModelConfig& m, Proj p) {
  const int q_dim = m.n_heads * m.head_dim();
  const int kv_dim = m.n_kv_heads * m.head_dim();
  switch (p) {
    case Proj::kQ:
      return {q_dim, m.dim};
    case Proj::kK:
      return {kv_dim, m.dim};
    case Proj::kV:
      return {kv_dim, m.dim};
    case Proj::kO:
      return {m.dim, q_dim};
    case Proj::kGate:
      return {m.ffn_dim, m.dim};
    case Proj::kUp:
      return {m.ffn_dim, m.dim};
    case Proj::kDown:
      return {m.dim, m.ffn_dim};
    case Proj::kCount:
      break;
  }
  return {};
}

std::vector<HfLinear> hf_linears(const ModelConfig& m) {
  if (!m.fused_projections) {
    std::vector<HfLinear> out;
    for (int p = 0; p < int(Proj::kCount); ++p) out.push_back({Proj(p), 1});
    return out;
  }
  return {{Proj::kQ, 3}, {Proj::kO, 1}, {Proj::kGate, 2}, {Proj::kDown, 1}};
}

HfLinear hf_linear_of(const ModelConfig& m, Proj p) {
  for (const HfLinear& lin : hf_linears(m)) {
    if (lin.holds(p)) return lin;
  }
  return {p, 1};  // not reached: the Linears cover every projection
}

ProjShape linear_shape(const ModelConfig& m, HfLinear lin) {
  ProjShape s{0, proj_shape(m, lin.first).in};
  for (int i = 0; i < lin.pieces; ++i) s.out += proj_shape(m, Proj(int(lin.first) + i)).out;
  return s;
}

const std::string& linear_name(HfLinear lin) {
  if (lin.pieces == 1) return all_target_modules()[int(lin.first)];
  return fused_target_modules()[lin.first == Proj::kQ ? 0 : 2];  // qkv_proj, gate_up_proj
}

int piece_row(const ModelConfig& m, HfLinear lin, Proj p) {
  int row = 0;
  for (int i = int(lin.first); i < int(p); ++i) row += proj_shape(m, Proj(i)).out;
  return row;
}

LayerOffsets LayerOffsets::for_model(const ModelConfig& m, BiasMask biases) {
  LayerOffsets o;
  std::size_t at = 0;
  o.attn_norm = at;
  at += m.dim;
  for (int p = 0; p < int(Proj::kCount); ++p) {
    const ProjShape s = proj_shape(m, Proj(p));
    o.proj[p] = at;
    at += std::size_t(s.out) * s.in;
  }
  o.mlp_norm = at;
  at += m.dim;
  for (int p = 0; p < int(Proj::kCount); ++p) {
    o.bias[p] = kNoOffset;
    if (biases & bias_bit(Proj(p))) {
      o.bias[p] = at;
      at += proj_shape(m, Proj(p)).out;
    }
  }
  if (m.qk_norm) {  // after everything else, so models without it keep their layout
    o.q_norm = at;
    at += m.qk_norm_width(m.n_heads);
    o.k_norm = at;
    at += m.qk_norm_width(m.n_kv_heads);
  }
  if (m.sandwich_norms) {  // likewise last
    o.post_attn_norm = at;
    at += m.dim;
    o.post_mlp_norm = at;
    at += m.dim;
  }
  o.total = at;
  return o;
}

namespace {

void fill_normal(std::vector<half_bits>& dst, std::uint64_t key, double std_dev) {
  for (std::size_t i = 0; i < dst.size(); ++i) {
    dst[i] = float_to_half(static_cast<float>(std_dev * normal01(key, i)));
  }
}

}  // namespace

// Random base distributions. HF's N(0, 0.02) everywhere would leave a frozen random lm_head able
// to express logits of only about +-2.5, so LoRA could barely lower the loss of the tiny demo.
// Instead: embedding N(0, init_std^2); every projection and the lm_head N(0, 1/fan_in), which
// keeps activations O(1) through the frozen layers; norm weights 1 (0 where the norms scale by
// 1 + weight, as Gemma's).
BaseWeights BaseWeights::random(const ModelConfig& m, std::uint64_t seed) {
  BaseWeights w;
  w.shape_ = m;
  w.offsets_ = LayerOffsets::for_model(m);
  const std::uint64_t base_key = derive_key(seed, std::uint64_t(RngTag::kBaseInit));
  const half_bits one = float_to_half(m.norm_one_plus_weight ? 0.0f : 1.0f);  // the norms' scale 1

  w.layers_.resize(m.n_layers);
  for (int l = 0; l < m.n_layers; ++l) {
    auto& buf = w.layers_[l];
    buf.assign(w.offsets_.total, one);  // norm weights stay 1
    for (int p = 0; p < int(Proj::kCount); ++p) {
      const ProjShape s = proj_shape(m, Proj(p));
      const std::uint64_t key = derive_key(base_key, std::uint64_t(1000 + l * 16 + p));
      const double std_dev = 1.0 / std::sqrt(double(s.in));
      half_bits* dst = buf.data() + w.offsets_.proj[p];
      for (std::size_t i = 0; i < std::size_t(s.out) * s.in; ++i) {
        dst[i] = float_to_half(static_cast<float>(std_dev * normal01(key, i)));
      }
    }
  }
  w.embedding_.resize(std::size_t(m.vocab_size) * m.dim);
  fill_normal(w.embedding_, derive_key(base_key, 1), m.init_std);
  w.final_norm_.assign(m.dim, one);
  if (!m.tie_embeddings) {
    w.lm_head_.resize(std::size_t(m.vocab_size) * m.dim);
    fill_normal(w.lm_head_, derive_key(base_key, 2), 1.0 / std::sqrt(double(m.dim)));
  }
  return w;
}

// from_parts and from_shards: the same checks and moves, differing only in how long each layer
// buffer must be (a whole layer, or one rank's slice of it).
BaseWeights BaseWeights::assemble(const char* who, const ModelConfig& m, BiasMask biases,
                                  std::size_t layer_elems,
                                  std::vector<std::vector<half_bits>> layers,
                                  std::vector<half_bits> embedding,
                                  std::vector<half_bits> final_norm,
                                  std::vector<half_bits> lm_head) {
  BaseWeights w;
  w.shape_ = m;
  w.biases_ = biases;
  w.offsets_ = LayerOffsets::for_model(m, biases);
  auto expect = [who](const char* what, std::size_t got, std::size_t want) {
    if (got != want) {
      throw std::invalid_argument(std::string("BaseWeights::") + who + ": " + what + " has " +
                                  std::to_string(got) + " elements, expected " +
                                  std::to_string(want));
    }
  };
  expect("layer count", layers.size(), std::size_t(m.n_layers));
  const std::size_t want_layer = layer_elems == kNoOffset ? w.offsets_.total : layer_elems;
  for (const auto& l : layers) expect("a layer buffer", l.size(), want_layer);
  expect("embedding", embedding.size(), std::size_t(m.vocab_size) * m.dim);
  expect("final_norm", final_norm.size(), std::size_t(m.dim));
  expect("lm_head", lm_head.size(), m.tie_embeddings ? 0 : std::size_t(m.vocab_size) * m.dim);
  w.layers_ = std::move(layers);
  w.embedding_ = std::move(embedding);
  w.final_norm_ = std::move(final_norm);
  w.lm_head_ = std::move(lm_head);
  return w;
}

BaseWeights BaseWeights::from_parts(const ModelConfig& m, BiasMask biases,
                                    std::vector<std::vector<half_bits>> layers,
                                    std::vector<half_bits> embedding,
                                    std::vector<half_bits> final_norm,
                                    std::vector<half_bits> lm_head) {
  return assemble("from_parts", m, biases, kNoOffset, std::move(layers), std::move(embedding),
                  std::move(final_norm), std::move(lm_head));
}

BaseWeights BaseWeights::from_shards(const ModelConfig& m, BiasMask biases, int rank, int world,
                                     std::vector<std::vector<half_bits>> layer_slices,
                                     std::vector<half_bits> embedding,
                                     std::vector<half_bits> final_norm,
                                     std::vector<half_bits> lm_head) {
  if (world < 1 || rank < 0 || rank >= world) {
    throw std::invalid_argument("BaseWeights::from_shards: rank " + std::to_string(rank) +
                                " of world " + std::to_string(world) +
                                ", expected 0 <= rank < world");
  }
  if (world == 1) {
    return from_parts(m, biases, std::move(layer_slices), std::move(embedding),
                      std::move(final_norm), std::move(lm_head));
  }
  const std::size_t slice = shard_elems_for(LayerOffsets::for_model(m, biases).total, world);
  BaseWeights w = assemble("from_shards", m, biases, slice, std::move(layer_slices),
                           std::move(embedding), std::move(final_norm), std::move(lm_head));
  // What shard(rank, world) sets; the rank itself is not stored there either.
  w.shard_elems_ = slice;
  w.world_ = world;
  return w;
}

const half_bits* BaseWeights::layer(int l) const {
  if (sharded()) {
    throw std::logic_error("BaseWeights::layer: the base is sharded; all-gather the layer first");
  }
  return layers_[l].data();
}

void BaseWeights::shard(int rank, int world) {
  if (sharded() || world <= 1) return;
  shard_elems_ = shard_elems_for(offsets_.total, world);
  for (auto& full : layers_) {
    std::vector<half_bits> mine(shard_elems_, 0);
    const std::size_t begin = std::size_t(rank) * shard_elems_;
    for (std::size_t i = 0; i < shard_elems_ && begin + i < full.size(); ++i) {
      mine[i] = full[begin + i];
    }
    full = std::move(mine);  // the full copy is freed here
  }
  world_ = world;
}

std::size_t BaseWeights::bytes_for(const ModelConfig& m, const LayerOffsets& offsets) {
  const std::size_t VD = std::size_t(m.vocab_size) * m.dim;
  return (std::size_t(m.n_layers) * offsets.total + VD * (m.tie_embeddings ? 1 : 2) + m.dim) *
         sizeof(half_bits);
}

std::size_t BaseWeights::unsharded_bytes() const {
  return bytes_for(shape_, offsets_);
}

std::size_t BaseWeights::bytes() const {
  std::size_t n = embedding_.size() + final_norm_.size() + lm_head_.size();
  for (const auto& l : layers_) n += l.size();
  return n * sizeof(half_bits);
}

}  // namespace peftrun
