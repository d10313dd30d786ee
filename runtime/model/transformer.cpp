#include "runtime/model/transformer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <string>

#include "kernels/adalora.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/dora.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/glu.h"
#include "kernels/lora_linear.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/softcap_math.h"
#include "runtime/model/model_constants.h"
#include "runtime/model/rope_table.h"
#include "runtime/rng.h"

namespace peftrun {

using cpu::gemm;
using cpu::Trans;

namespace {
// Rows of logits materialised at once by the lm_head + cross-entropy loop: bounds its memory to
// about 16M values (64 MiB in fp32) whatever the vocabulary (a 128k vocab never needs
// [tokens, vocab] in memory). Not smaller: the lm_head GEMMs of a chunk have only `rows` rows,
// and at 4M (131 rows of a 32k vocab) OpenBLAS ran them at ~80% of its large-GEMM rate
// (bench/NOTES.md section 6).
constexpr std::size_t kLogitBudget = std::size_t(1) << 24;
}  // namespace

template <typename T>
Transformer<T>::Transformer(PlanOnly, const ModelConfig& shape, const AdapterLayout& layout,
                            const AdapterConfig& adapter, int max_batch, int seq_len,
                            bool recompute_layers, std::size_t layer_elems,
                            std::size_t gather_slot_elems)
    : base_(nullptr),
      layout_(layout),
      m_(shape),
      dropout_(static_cast<float>(adapter.dropout)),
      max_batch_(max_batch),
      seq_len_(seq_len),
      layer_elems_(layer_elems),
      gather_slot_elems_(gather_slot_elems),
      recompute_(recompute_layers) {}

template <typename T>
Transformer<T>::Transformer(const BaseWeights& base, const AdapterLayout& layout,
                            const AdapterConfig& adapter, int max_batch, int seq_len,
                            Communicator* comm, bool recompute_layers)
    : base_(&base),
      layout_(layout),
      m_(base.shape()),
      rope_(m_),
      glu_(glu_activation(m_)),
      norm_offset_(static_cast<T>(norm_weight_offset(m_))),
      embed_scale_(static_cast<T>(embedding_scale(m_, DType::kF32))),
      dropout_(static_cast<float>(adapter.dropout)),
      max_batch_(max_batch),
      seq_len_(seq_len),
      layer_elems_(base.offsets().total),
      gather_slot_elems_(base.sharded() ? base.shard_elems() * std::size_t(base.shard_world()) : 0),
      recompute_(recompute_layers),
      comm_(comm) {
  if (base.sharded() && (!comm_ || comm_->world_size() != base.shard_world())) {
    throw std::invalid_argument("Transformer: a base sharded over " +
                                std::to_string(base.shard_world()) +
                                " ranks needs a communicator of that size");
  }
  // Grows a buffer to at least `size`: the shared set serves every layer, so it takes the
  // largest of each.
  plan_buffers([](auto& v, std::size_t size) {
    if (v.size() < size) v.resize(size);
  });
  const std::size_t D = m_.dim, V = m_.vocab_size;
  half_to_real(base.embedding(), embedding_.data(), V * D);
  half_to_real(base.final_norm(), final_norm_.data(), D);
  // Tied embeddings: the lm_head is the embedding table itself, not a second fp32 copy.
  lm_head_data_ = embedding_.data();
  if (!m_.tie_embeddings) {
    half_to_real(base.lm_head(), lm_head_.data(), V * D);
    lm_head_data_ = lm_head_.data();
  }
  // DoRA: ||W||^2 per output row is constant (the base is frozen): computed once here.
  if (layout.type() == AdapterType::kDora) {
    for (int l = 0; l < m_.n_layers; ++l) {
      stage_layer(l);
      for (int p = 0; p < int(Proj::kCount); ++p) {
        const int mi = layout.module_index(l, Proj(p));
        if (mi < 0) continue;
        const ProjShape s = proj_shape(m_, Proj(p));
        const int row = piece_row(m_, layout.modules()[mi].linear(), Proj(p));
        cpu::row_sq_norms(W(Proj(p)), s.out, s.in, w_sq_[mi].data() + row);
      }
    }
  }
  const std::size_t n = default_positions_.size();
  for (std::size_t i = 0; i < n; ++i) default_positions_[i] = static_cast<int>(i % seq_len);
}

// Every buffer the model holds, as fit(vector, elements) calls: the constructor resizes them,
// planned_bytes only adds them up, so the two cannot disagree.
template <typename T>
template <typename Fit>
void Transformer<T>::plan_buffers(Fit fit) {
  const std::size_t n = std::size_t(max_batch_) * seq_len_;
  const std::size_t D = m_.dim, F = m_.ffn_dim, V = m_.vocab_size;
  const std::size_t qd = std::size_t(m_.n_heads) * m_.head_dim();
  const std::size_t kvd = std::size_t(m_.n_kv_heads) * m_.head_dim();
  if (gather_slot_elems_ > 0) {
    for (auto& slot : slots_) fit(slot.buf, gather_slot_elems_);
  }
  fit(embedding_, V * D);
  fit(final_norm_, D);
  if (!m_.tie_embeddings) fit(lm_head_, V * D);
  fit(layer_w_, layer_elems_);

  acts_.resize(m_.n_layers);
  for (int l = 0; l < m_.n_layers; ++l) {
    fit(acts_[l].x_in, n * D);
    LayerActs& a = layer_acts(l);
    fit(a.h1, n * D);
    fit(a.rstd1, n);
    fit(a.q, n * qd);
    fit(a.k, n * kvd);
    fit(a.v, n * kvd);
    fit(a.probs, std::size_t(max_batch_) * m_.n_heads * seq_len_ * seq_len_);
    if (m_.qk_norm) {
      fit(a.q_pre, n * qd);
      fit(a.k_pre, n * kvd);
      fit(a.rstd_q, n * m_.n_heads);
      fit(a.rstd_k, n * m_.n_kv_heads);
    }
    fit(a.att, n * qd);
    if (m_.sandwich_norms) {
      fit(a.o_pre, n * D);
      fit(a.rstd_o, n);
      fit(a.down_pre, n * D);
      fit(a.rstd_down, n);
    }
    fit(a.x_mid, n * D);
    fit(a.h2, n * D);
    fit(a.rstd2, n);
    fit(a.gate, n * F);
    fit(a.up, n * F);
    fit(a.act, n * F);
    for (int p = 0; p < int(Proj::kCount); ++p) {
      const int mi = layout_.module_index(l, Proj(p));
      if (mi < 0) continue;
      // Each piece of a fused module keeps its own (its output's) buffers.
      const AdaptedModule& mod = layout_.modules()[mi];
      const ProjShape s = proj_shape(m_, Proj(p));
      fit(a.xa[p], n * mod.r);
      if (dropout_ > 0) {
        fit(a.x_drop[p], n * s.in);
        fit(a.keep[p], n * s.in);
      }
      if (layout_.type() == AdapterType::kDora) {
        fit(a.norm[p], s.out);
        fit(a.z[p], n * s.out);
      }
    }
  }
  fit(x_final_, n * D);
  fit(hf_, n * D);
  fit(rstdf_, n);
  const std::size_t chunk_rows = std::clamp<std::size_t>(kLogitBudget / V, 1, n);
  fit(logits_, chunk_rows * V);

  int max_r = 0;
  std::size_t adapter_work = 0, norm_work = 0;
  // (A fused module's whole shape: at least any of its pieces' need.)
  for (const auto& mod : layout_.modules()) {
    max_r = std::max(max_r, mod.r);
    if (layout_.type() == AdapterType::kDora) {
      adapter_work =
          std::max(adapter_work, cpu::dora_linear_workspace(int(n), mod.shape.out, mod.r));
      norm_work = std::max(norm_work, cpu::dora_norm_workspace(mod.shape.out, mod.r));
    } else if (layout_.type() == AdapterType::kAdaLora) {
      adapter_work =
          std::max(adapter_work, cpu::adalora_linear_workspace(int(n), mod.shape.in, mod.r));
    }
  }
  fit(adapter_work_, adapter_work);
  fit(norm_work_, norm_work);
  if (layout_.type() == AdapterType::kDora) {
    w_sq_.resize(layout_.modules().size());
    for (std::size_t mi = 0; mi < layout_.modules().size(); ++mi) {
      fit(w_sq_[mi], layout_.modules()[mi].shape.out);
    }
  }

  const std::size_t widest = std::max({D, F, qd});
  fit(dx_, n * D);
  fit(dh_, n * D);
  fit(dtmp_, n * widest);
  fit(datt_, n * qd);
  fit(dq_, n * qd);
  fit(dk_, n * kvd);
  fit(dv_, n * kvd);
  if (m_.qk_norm) {
    fit(dq_pre_, n * qd);
    fit(dk_pre_, n * kvd);
  }
  fit(dgate_, n * F);
  fit(dup_, n * F);
  fit(dact_, n * F);
  fit(dxa_, n * std::max(max_r, 1));
  fit(default_positions_, n);
}

template <typename T>
std::size_t Transformer<T>::planned_bytes(const BaseWeights& base, const AdapterLayout& layout,
                                          const AdapterConfig& adapter, int max_batch, int seq_len,
                                          bool recompute_layers) {
  return plan_bytes(
      Transformer(PlanOnly{}, base.shape(), layout, adapter, max_batch, seq_len, recompute_layers,
                  base.offsets().total,
                  base.sharded() ? base.shard_elems() * std::size_t(base.shard_world()) : 0));
}

template <typename T>
std::size_t Transformer<T>::planned_bytes(const ModelConfig& shape, const AdapterLayout& layout,
                                          const AdapterConfig& adapter, int max_batch, int seq_len,
                                          bool recompute_layers, int world) {
  const std::size_t layer_elems = LayerOffsets::for_model(shape, shape.proj_bias_mask).total;
  const std::size_t gather_slot_elems =
      world > 1 ? BaseWeights::shard_elems_for(layer_elems, world) * std::size_t(world) : 0;
  return plan_bytes(Transformer(PlanOnly{}, shape, layout, adapter, max_batch, seq_len,
                                recompute_layers, layer_elems, gather_slot_elems));
}

template <typename T>
std::size_t Transformer<T>::plan_bytes(Transformer&& plan) {
  // Each buffer once, at the largest size asked for (the shared set is fitted by every layer).
  std::map<const void*, std::size_t> bytes;
  plan.plan_buffers([&bytes](auto& v, std::size_t size) {
    std::size_t& b = bytes[&v];
    b = std::max(b, size * sizeof(v[0]));
  });
  std::size_t total = 0;
  for (const auto& [buffer, b] : bytes) total += b;
  return total;
}

template <typename T>
std::size_t Transformer<T>::activation_bytes() const {
  std::size_t bytes = 0;
  const auto add = [&bytes](const LayerActs& a) {
    for (const auto* v :
         {&a.x_in, &a.h1, &a.rstd1, &a.q, &a.k, &a.v, &a.probs, &a.att, &a.x_mid, &a.h2, &a.rstd2,
          &a.gate, &a.up, &a.act, &a.q_pre, &a.k_pre, &a.rstd_q, &a.rstd_k}) {
      bytes += v->size() * sizeof(T);
    }
    for (int p = 0; p < int(Proj::kCount); ++p) {
      bytes +=
          (a.xa[p].size() + a.x_drop[p].size() + a.norm[p].size() + a.z[p].size()) * sizeof(T) +
          a.keep[p].size();
    }
  };
  for (const auto& a : acts_) add(a);
  add(shared_acts_);
  return bytes;
}

// Starts the all-gather of layer l into a slot that is not holding the layer in use, unless a
// slot already holds (or is receiving) it. Every rank issues the same gathers in the same order.
template <typename T>
void Transformer<T>::begin_gather(int l) {
  for (auto& slot : slots_) {
    if (slot.layer == l) return;
  }
  // The slot with the older layer is free: the other one holds the layer being computed.
  GatherSlot& slot = slots_[0].layer == current_layer_ ? slots_[1] : slots_[0];
  comm_->wait(slot.handle);  // never pending here, but keep the buffer rule obvious
  const std::size_t bytes = base_->shard_elems() * sizeof(half_bits);
  slot.layer = l;
  slot.handle = comm_->start_all_gather(base_->layer_shard(l), slot.buf.data(), bytes);
  gathered_bytes_ += bytes * (base_->shard_world() - 1);
}

// --debug: the first non-finite value of a tensor ends the run naming the op, layer and tensor.
template <typename T>
void Transformer<T>::check_finite(const char* pass, int layer, const char* tensor, const T* data,
                                  std::size_t n) const {
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(data[i])) {
      throw std::runtime_error(std::string("--debug: non-finite value (") +
                               std::to_string(double(data[i])) + ") in " + tensor + " of layer " +
                               std::to_string(layer) + " during " + pass + ", at element " +
                               std::to_string(i) + " of " + std::to_string(n));
    }
  }
}

template <typename T>
void Transformer<T>::stage_layer(int l, int next) {
  if (!base_->sharded()) {
    half_to_real(base_->layer(l), layer_w_.data(), layer_w_.size());
    return;
  }
  // Rebuild the layer from every rank's slice (forward, and again in backward unless it is
  // still in a slot), then prefetch `next` while this layer computes.
  begin_gather(l);
  GatherSlot& slot = slots_[0].layer == l ? slots_[0] : slots_[1];
  comm_->wait(slot.handle);
  slot.handle = 0;
  current_layer_ = l;
  half_to_real(slot.buf.data(), layer_w_.data(), layer_w_.size());
  if (next >= 0 && next < m_.n_layers) begin_gather(next);
}

template <typename T>
const T* Transformer<T>::W(Proj p) const {
  return layer_w_.data() + base_->offsets().proj[int(p)];
}

// The LoRA part of any adapter's arguments: shapes, weights, saved buffers and, when the last
// forward generated one, the dropout mask. A piece of a fused module (Phi-3's q of qkv_proj)
// is a linear of its own with the shared A and the piece's rows of B.
template <typename T>
cpu::LoraLinearArgs<T> Transformer<T>::lora_args(int l, Proj p, const T* params, LayerActs& a,
                                                 int n) const {
  const ProjShape s = proj_shape(m_, p);
  const AdaptedModule& mod = layout_.modules()[layout_.module_index(l, p)];
  const std::size_t row = piece_row(m_, mod.linear(), p);
  const std::size_t bias_at = base_->offsets().bias[int(p)];
  cpu::LoraLinearArgs<T> args;
  args.n = n;
  args.in = s.in;
  args.out = s.out;
  args.r = mod.r;
  args.scale = static_cast<T>(layout_.scale());
  args.W = W(p);
  args.bias = bias_at == kNoOffset ? nullptr : layer_w_.data() + bias_at;
  args.A = params + mod.a;
  args.B = params + mod.b + row * mod.r;
  args.xa = a.xa[int(p)].data();
  if (a.masked[int(p)]) {
    args.keep = a.keep[int(p)].data();
    args.keep_scale = static_cast<T>(1.0 / (1.0 - double(dropout_)));
    args.x_drop = a.x_drop[int(p)].data();
  }
  return args;
}

// y[n, out] = x[n, in] W^T + bias, plus the adapter branch when (l, p) is adapted.
template <typename T>
void Transformer<T>::linear_forward(int l, Proj p, const T* x, T* y, const T* params, LayerActs& a,
                                    int n, bool train, std::uint64_t dropout_key) {
  const ProjShape s = proj_shape(m_, p);
  const int mi = layout_.module_index(l, p);
  if (mi < 0) {
    gemm<T>(Trans::kNo, Trans::kYes, n, s.out, s.in, T(1), x, s.in, W(p), s.in, T(0), y, s.out);
    const std::size_t bias_at = base_->offsets().bias[int(p)];
    if (bias_at != kNoOffset) {
      const T* bias = layer_w_.data() + bias_at;
      for (int i = 0; i < n; ++i) {
        for (int j = 0; j < s.out; ++j) y[std::size_t(i) * s.out + j] += bias[j];
      }
    }
    return;
  }
  a.masked[int(p)] = train && dropout_ > 0;
  if (a.masked[int(p)]) {
    std::uint8_t* keep = a.keep[int(p)].data();
    if (dropout_mask_override_) {  // test hook: a recorded mask replaces the RNG
      // (One mask per module: a fused module's pieces all read the first piece's.)
      const std::uint8_t* given = dropout_mask_override_(l, layout_.modules()[mi].proj);
      std::copy(given, given + std::size_t(n) * s.in, keep);
    } else {
      // Counter-based mask: element i of module mi in this micro-batch, whatever the thread
      // count (so the pieces of a fused module draw the same mask, as PEFT's one dropout).
      const std::uint64_t key = derive_key(dropout_key, std::uint64_t(mi));
      for (std::size_t i = 0; i < std::size_t(n) * s.in; ++i) {
        keep[i] = uniform01(key, i) >= dropout_ ? 1 : 0;
      }
    }
  }
  const AdaptedModule& mod = layout_.modules()[mi];
  const std::size_t row = piece_row(m_, mod.linear(), p);
  const cpu::LoraLinearArgs<T> lora = lora_args(l, p, params, a, n);
  switch (layout_.type()) {
    case AdapterType::kLora:
      cpu::lora_linear_forward(lora, x, y);
      break;
    case AdapterType::kDora: {
      // n = ||W + sBA||_row from the rank-r identity; held constant by this step's backward.
      T* norm = a.norm[int(p)].data();
      if (!dora_norms_frozen_) {
        cpu::dora_weight_norm(lora.W, w_sq_[mi].data() + row, lora.A, lora.B, s.out, s.in, mod.r,
                              lora.scale, norm, norm_work_.data());
      }
      const cpu::DoraLinearArgs<T> d{lora, params + mod.m + row, norm, a.z[int(p)].data(),
                                     adapter_work_.data()};
      cpu::dora_linear_forward(d, x, y);
      break;
    }
    case AdapterType::kAdaLora: {
      const cpu::AdaLoraLinearArgs<T> ada{lora, params + mod.e, adapter_work_.data()};
      cpu::adalora_linear_forward(ada, x, y);
      break;
    }
  }
}

// dx[n, in] = dy W (+ the adapter branch's input gradient); adapter grads accumulate.
template <typename T>
void Transformer<T>::linear_backward(int l, Proj p, const T* x, const T* dy, T* dx, const T* params,
                                     T* grads, LayerActs& a, int n) {
  const ProjShape s = proj_shape(m_, p);
  const int mi = layout_.module_index(l, p);
  if (mi < 0) {
    gemm<T>(Trans::kNo, Trans::kNo, n, s.in, s.out, T(1), dy, s.out, W(p), s.in, T(0), dx, s.in);
    return;
  }
  // A fused module's pieces each add their part to the shared dA (and AdaLoRA's dE); dB and
  // DoRA's dm get the piece's rows.
  const AdaptedModule& mod = layout_.modules()[mi];
  const std::size_t row = piece_row(m_, mod.linear(), p);
  T* dB = grads + mod.b + row * mod.r;
  const cpu::LoraLinearArgs<T> lora = lora_args(l, p, params, a, n);
  switch (layout_.type()) {
    case AdapterType::kLora:
      cpu::lora_linear_backward(lora, x, dy, dx, grads + mod.a, dB, dxa_.data());
      break;
    case AdapterType::kDora: {
      const cpu::DoraLinearArgs<T> d{lora, params + mod.m + row, a.norm[int(p)].data(),
                                     a.z[int(p)].data(), adapter_work_.data()};
      cpu::dora_linear_backward(d, x, dy, dx, grads + mod.a, dB, grads + mod.m + row);
      break;
    }
    case AdapterType::kAdaLora: {
      const cpu::AdaLoraLinearArgs<T> ada{lora, params + mod.e, adapter_work_.data()};
      cpu::adalora_linear_backward(ada, x, dy, dx, grads + mod.a, grads + mod.e, dB);
      break;
    }
  }
}

template <typename T>
void Transformer<T>::forward(const Batch& b, const T* params, bool train,
                             std::uint64_t dropout_key) {
  if (b.batch > max_batch_ || b.seq_len != seq_len_) {
    throw std::invalid_argument("Transformer: batch [" + std::to_string(b.batch) + ", " +
                                std::to_string(b.seq_len) + "] does not fit the planned [" +
                                std::to_string(max_batch_) + ", " + std::to_string(seq_len_) + "]");
  }
  const int n = b.batch * b.seq_len;
  const int D = m_.dim;
  last_train_ = train;
  last_dropout_key_ = dropout_key;
  const std::int32_t* pos = b.positions ? b.positions : default_positions_.data();
  rope_long_ = rope_.long_context(*std::max_element(pos, pos + n));
  cpu::embedding_forward(b.inputs, embedding_.data(), acts_[0].x_in.data(), n, D, embed_scale_);
  for (int l = 0; l < m_.n_layers; ++l) {
    stage_layer(l, l + 1);  // prefetch the next layer
    T* x_out = l + 1 < m_.n_layers ? acts_[l + 1].x_in.data() : x_final_.data();
    forward_layer(l, layer_acts(l), acts_[l].x_in.data(), x_out, b, params, train, dropout_key);
  }
  cpu::rmsnorm_forward(x_final_.data(), final_norm_.data(), norm_offset_, hf_.data(), rstdf_.data(),
                       n, D, static_cast<T>(m_.norm_eps));
}

template <typename T>
void Transformer<T>::forward_layer(int l, LayerActs& a, const T* x_in, T* x_out, const Batch& b,
                                   const T* params, bool train, std::uint64_t dropout_key) {
  const int n = b.batch * b.seq_len;
  const int D = m_.dim, F = m_.ffn_dim, H = m_.n_heads, KV = m_.n_kv_heads, hd = m_.head_dim();
  const std::int32_t* pos = b.positions ? b.positions : default_positions_.data();
  const T eps = static_cast<T>(m_.norm_eps);
  const T* lw = layer_w_.data();
  const std::uint64_t lkey = derive_key(dropout_key, std::uint64_t(l));
  // Attention half: h1 = rmsnorm(x_in); x_mid = x_in + o_proj(attention(q, k, v)).
  // OLMo 2 (no input norms): the projections read the layer input itself.
  const T* h1 = m_.input_norms ? a.h1.data() : x_in;
  if (m_.input_norms) {
    cpu::rmsnorm_forward(x_in, lw + base_->offsets().attn_norm, norm_offset_, a.h1.data(),
                         a.rstd1.data(), n, D, eps);
  }
  if (m_.qk_norm) {
    const NormRows qr = qk_norm_rows(m_, n, H), kr = qk_norm_rows(m_, n, KV);
    // Qwen3: q = rmsnorm_per_head(q_proj(h1)), k likewise, before RoPE.
    linear_forward(l, Proj::kQ, h1, a.q_pre.data(), params, a, n, train, lkey);
    linear_forward(l, Proj::kK, h1, a.k_pre.data(), params, a, n, train, lkey);
    cpu::rmsnorm_forward(a.q_pre.data(), lw + base_->offsets().q_norm, norm_offset_, a.q.data(),
                         a.rstd_q.data(), qr.rows, qr.width, eps);
    cpu::rmsnorm_forward(a.k_pre.data(), lw + base_->offsets().k_norm, norm_offset_, a.k.data(),
                         a.rstd_k.data(), kr.rows, kr.width, eps);
  } else {
    linear_forward(l, Proj::kQ, h1, a.q.data(), params, a, n, train, lkey);
    linear_forward(l, Proj::kK, h1, a.k.data(), params, a, n, train, lkey);
  }
  linear_forward(l, Proj::kV, h1, a.v.data(), params, a, n, train, lkey);
  if (rope_.rotates(l)) {  // not in SmolLM3's NoPE layers
    const float* inv_freq =
        rope_.inv_freq(l, rope_long_);  // Gemma 3's sliding layers: their own table
    const float rope_cs = rope_.cos_sin_scale(l);
    const int rotary = m_.rotary_dim();  // partial rotary: the first channels only
    cpu::rope_forward(a.q.data(), pos, n, H, hd, rotary, inv_freq, rope_cs);
    cpu::rope_forward(a.k.data(), pos, n, KV, hd, rotary, inv_freq, rope_cs);
  }
  cpu::attention_forward(a.q.data(), a.k.data(), a.v.data(), b.segments, attention_window(m_, l),
                         attention_score_scale<T>(m_), static_cast<T>(attention_softcap(m_)),
                         a.att.data(), a.probs.data(), b.batch, b.seq_len, H, KV, hd);
  if (m_.sandwich_norms) {
    // Gemma 2 / 3: x_mid = x_in + rmsnorm(o_proj(attention)).
    linear_forward(l, Proj::kO, a.att.data(), a.o_pre.data(), params, a, n, train, lkey);
    cpu::rmsnorm_forward(a.o_pre.data(), lw + base_->offsets().post_attn_norm, norm_offset_,
                         a.x_mid.data(), a.rstd_o.data(), n, D, eps);
  } else {
    linear_forward(l, Proj::kO, a.att.data(), a.x_mid.data(), params, a, n, train, lkey);
  }
  const T rscale = static_cast<T>(residual_scale(m_));  // Granite's residual_multiplier
  if (rscale != T(1)) cpu::scale(a.x_mid.data(), a.x_mid.data(), rscale, std::size_t(n) * D);
  cpu::add_inplace(a.x_mid.data(), x_in, std::size_t(n) * D);
  // MLP half: h2 = rmsnorm(x_mid); x_out = x_mid + down(act(gate(h2)) * up(h2)).
  const T* h2 = m_.input_norms ? a.h2.data() : a.x_mid.data();
  if (m_.input_norms) {
    cpu::rmsnorm_forward(a.x_mid.data(), lw + base_->offsets().mlp_norm, norm_offset_, a.h2.data(),
                         a.rstd2.data(), n, D, eps);
  }
  linear_forward(l, Proj::kGate, h2, a.gate.data(), params, a, n, train, lkey);
  linear_forward(l, Proj::kUp, h2, a.up.data(), params, a, n, train, lkey);
  cpu::glu_forward(glu_, a.gate.data(), a.up.data(), a.act.data(), std::size_t(n) * F);
  if (m_.sandwich_norms) {
    // x_out = x_mid + rmsnorm(down(...)).
    linear_forward(l, Proj::kDown, a.act.data(), a.down_pre.data(), params, a, n, train, lkey);
    cpu::rmsnorm_forward(a.down_pre.data(), lw + base_->offsets().post_mlp_norm, norm_offset_,
                         x_out, a.rstd_down.data(), n, D, eps);
  } else {
    linear_forward(l, Proj::kDown, a.act.data(), x_out, params, a, n, train, lkey);
  }
  if (rscale != T(1)) cpu::scale(x_out, x_out, rscale, std::size_t(n) * D);
  cpu::add_inplace(x_out, a.x_mid.data(), std::size_t(n) * D);
  if (debug_checks_) {
    // In the order the ops produced them, so the first bad tensor names the failing op.
    const std::size_t nn = std::size_t(n), nq = nn * H * hd, nkv = nn * KV * hd;
    check_finite("forward", l, "input_layernorm output", h1, nn * D);
    check_finite("forward", l, "q_proj output (after RoPE)", a.q.data(), nq);
    check_finite("forward", l, "k_proj output (after RoPE)", a.k.data(), nkv);
    check_finite("forward", l, "v_proj output", a.v.data(), nkv);
    check_finite("forward", l, "attention output", a.att.data(), nq);
    check_finite("forward", l, "o_proj output + residual", a.x_mid.data(), nn * D);
    check_finite("forward", l, "post_attention_layernorm output", h2, nn * D);
    check_finite("forward", l, "gate_proj output", a.gate.data(), nn * F);
    check_finite("forward", l, "up_proj output", a.up.data(), nn * F);
    check_finite("forward", l, "act(gate) * up output", a.act.data(), nn * F);
    check_finite("forward", l, "down_proj output + residual", x_out, nn * D);
  }
}

// lm_head + cross-entropy over row chunks; with backward, leaves d(loss)/d(x_final) in dx_.
template <typename T>
double Transformer<T>::head(const Batch& b, bool backward, T grad_scale, T* logits_out) {
  const int n = b.batch * b.seq_len;
  const int D = m_.dim, V = m_.vocab_size;
  const int chunk = static_cast<int>(logits_.size() / V);
  const T alpha = static_cast<T>(logits_alpha(m_));  // 1 / Granite's logits_scaling
  double loss = 0;
  for (int r0 = 0; r0 < n; r0 += chunk) {
    const int rows = std::min(chunk, n - r0);
    // logits[rows, V] = alpha hf[rows, D] lm_head^T
    gemm<T>(Trans::kNo, Trans::kYes, rows, V, D, alpha, hf_.data() + std::size_t(r0) * D, D,
            lm_head_data_, D, T(0), logits_.data(), V);
    const T cap = static_cast<T>(logit_softcap(m_));  // Gemma 2's final logits; 0 = none
    if (logits_out) {
      // The model's logits, capped as transformers returns them.
      T* out = logits_out + std::size_t(r0) * V;
      for (std::size_t i = 0; i < std::size_t(rows) * V; ++i) out[i] = softcapped(logits_[i], cap);
    }
    loss += cpu::cross_entropy_forward_backward(logits_.data(), b.targets + r0,
                                                backward ? logits_.data() : nullptr, rows, V,
                                                grad_scale, cap);
    if (backward) {
      // dhf[rows, D] = alpha dlogits[rows, V] lm_head[V, D]
      gemm<T>(Trans::kNo, Trans::kNo, rows, D, V, alpha, logits_.data(), V, lm_head_data_, D, T(0),
              dh_.data() + std::size_t(r0) * D, D);
    }
  }
  if (backward) {
    cpu::rmsnorm_backward(dh_.data(), x_final_.data(), final_norm_.data(), norm_offset_,
                          rstdf_.data(), dx_.data(), n, D);
  }
  return loss;
}

template <typename T>
void Transformer<T>::backward(const Batch& b, const T* params, T* grads) {
  const int n = b.batch * b.seq_len;
  const int D = m_.dim, F = m_.ffn_dim, H = m_.n_heads, KV = m_.n_kv_heads, hd = m_.head_dim();
  const std::int32_t* pos = b.positions ? b.positions : default_positions_.data();
  const std::size_t nD = std::size_t(n) * D;

  // dx_ holds the gradient of the residual stream leaving the current layer.
  for (int l = m_.n_layers - 1; l >= 0; --l) {
    LayerActs& a = layer_acts(l);
    const T* x_in = acts_[l].x_in.data();
    stage_layer(l, l - 1);  // prefetch the layer below
    const T* lw = layer_w_.data();
    if (recompute_) {
      // Gradient checkpointing: this layer's activations again, from its saved input. Its
      // output goes to dtmp_, free until the MLP backward below.
      forward_layer(l, a, x_in, dtmp_.data(), b, params, last_train_, last_dropout_key_);
    }
    const T* h1 = m_.input_norms ? a.h1.data() : x_in;  // as forward_layer read them
    const T* h2 = m_.input_norms ? a.h2.data() : a.x_mid.data();
    // MLP half. With sandwich norms, down_proj's output gradient comes through its RMSNorm
    // (into dh_, free until the gate / up backward below).
    const T* ddown = dx_.data();
    if (m_.sandwich_norms) {
      cpu::rmsnorm_backward(dx_.data(), a.down_pre.data(), lw + base_->offsets().post_mlp_norm,
                            norm_offset_, a.rstd_down.data(), dh_.data(), n, D);
      ddown = dh_.data();
    }
    // Granite: the branch's output was scaled by residual_multiplier, so is its gradient.
    const T rscale = static_cast<T>(residual_scale(m_));
    if (rscale != T(1)) {
      cpu::scale(dh_.data(), ddown, rscale, nD);
      ddown = dh_.data();
    }
    linear_backward(l, Proj::kDown, a.act.data(), ddown, dact_.data(), params, grads, a, n);
    cpu::glu_backward(glu_, dact_.data(), a.gate.data(), a.up.data(), dgate_.data(), dup_.data(),
                      std::size_t(n) * F);
    linear_backward(l, Proj::kGate, h2, dgate_.data(), dh_.data(), params, grads, a, n);
    linear_backward(l, Proj::kUp, h2, dup_.data(), dtmp_.data(), params, grads, a, n);
    cpu::add_inplace(dh_.data(), dtmp_.data(), nD);
    if (m_.input_norms) {
      cpu::rmsnorm_backward(dh_.data(), a.x_mid.data(), lw + base_->offsets().mlp_norm,
                            norm_offset_, a.rstd2.data(), dtmp_.data(), n, D);
      cpu::add_inplace(dx_.data(), dtmp_.data(), nD);  // dx_ is now d(x_mid)
    } else {
      cpu::add_inplace(dx_.data(), dh_.data(), nD);  // (OLMo 2: h2 is x_mid)
    }
    // Attention half (o_proj's output gradient likewise through its norm, into dh_).
    const T* d_o = dx_.data();
    if (m_.sandwich_norms) {
      cpu::rmsnorm_backward(dx_.data(), a.o_pre.data(), lw + base_->offsets().post_attn_norm,
                            norm_offset_, a.rstd_o.data(), dh_.data(), n, D);
      d_o = dh_.data();
    }
    if (rscale != T(1)) {
      cpu::scale(dh_.data(), d_o, rscale, nD);
      d_o = dh_.data();
    }
    linear_backward(l, Proj::kO, a.att.data(), d_o, datt_.data(), params, grads, a, n);
    cpu::attention_backward(datt_.data(), a.q.data(), a.k.data(), a.v.data(), a.probs.data(),
                            attention_window(m_, l), attention_score_scale<T>(m_),
                            static_cast<T>(attention_softcap(m_)), dq_.data(), dk_.data(),
                            dv_.data(), b.batch, b.seq_len, H, KV, hd);
    if (rope_.rotates(l)) {
      const float* inv_freq =
          rope_.inv_freq(l, rope_long_);  // Gemma 3's sliding layers: their own table
      const float rope_cs = rope_.cos_sin_scale(l);
      const int rotary = m_.rotary_dim();  // partial rotary: the first channels only
      cpu::rope_backward(dq_.data(), pos, n, H, hd, rotary, inv_freq, rope_cs);
      cpu::rope_backward(dk_.data(), pos, n, KV, hd, rotary, inv_freq, rope_cs);
    }
    T* dq_proj = dq_.data();  // the gradient of q_proj's output
    T* dk_proj = dk_.data();
    if (m_.qk_norm) {
      const NormRows qr = qk_norm_rows(m_, n, H), kr = qk_norm_rows(m_, n, KV);
      cpu::rmsnorm_backward(dq_.data(), a.q_pre.data(), lw + base_->offsets().q_norm, norm_offset_,
                            a.rstd_q.data(), dq_pre_.data(), qr.rows, qr.width);
      cpu::rmsnorm_backward(dk_.data(), a.k_pre.data(), lw + base_->offsets().k_norm, norm_offset_,
                            a.rstd_k.data(), dk_pre_.data(), kr.rows, kr.width);
      dq_proj = dq_pre_.data();
      dk_proj = dk_pre_.data();
    }
    linear_backward(l, Proj::kQ, h1, dq_proj, dh_.data(), params, grads, a, n);
    linear_backward(l, Proj::kK, h1, dk_proj, dtmp_.data(), params, grads, a, n);
    cpu::add_inplace(dh_.data(), dtmp_.data(), nD);
    linear_backward(l, Proj::kV, h1, dv_.data(), dtmp_.data(), params, grads, a, n);
    cpu::add_inplace(dh_.data(), dtmp_.data(), nD);
    if (m_.input_norms) {
      cpu::rmsnorm_backward(dh_.data(), x_in, lw + base_->offsets().attn_norm, norm_offset_,
                            a.rstd1.data(), dtmp_.data(), n, D);
      cpu::add_inplace(dx_.data(), dtmp_.data(), nD);  // dx_ is now d(x_in)
    } else {
      cpu::add_inplace(dx_.data(), dh_.data(), nD);  // (OLMo 2: h1 is x_in)
    }
    if (debug_checks_) {
      check_finite("backward", l, "grad of act(gate) * up (down_proj backward)", dact_.data(),
                   std::size_t(n) * F);
      check_finite("backward", l, "grad of q (attention + RoPE backward)", dq_.data(), dq_.size());
      check_finite("backward", l, "grad of k (attention + RoPE backward)", dk_.data(), dk_.size());
      check_finite("backward", l, "grad of v (attention backward)", dv_.data(), dv_.size());
      check_finite("backward", l, "grad of the layer input", dx_.data(), nD);
      for (int p = 0; p < int(Proj::kCount); ++p) {
        const int mi = layout_.module_index(l, Proj(p));
        if (mi < 0) continue;
        for (const TrainableTensor& t : layout_.tensors()) {
          if (t.name.find(layout_.modules()[mi].module + ".") != std::string::npos) {
            check_finite("backward", l, ("grad of " + t.name).c_str(), grads + t.offset, t.numel());
          }
        }
      }
    }
    if (layer_backward_hook_) layer_backward_hook_(l);
  }
  // The embedding is frozen: the gradient stops here.
}

template <typename T>
double Transformer<T>::train_micro_batch(const Batch& b, const T* params, T* grads, T grad_scale,
                                         std::uint64_t dropout_key, T* logits_out) {
  forward(b, params, /*train=*/true, dropout_key);
  const double loss = head(b, /*backward=*/true, grad_scale, logits_out);
  backward(b, params, grads);
  return loss;
}

template <typename T>
double Transformer<T>::eval_micro_batch(const Batch& b, const T* params, T* logits_out) {
  forward(b, params, /*train=*/false, 0);
  return head(b, /*backward=*/false, T(0), logits_out);
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace peftrun
