// The LLaMA-family decoder with adapters: explicit forward and backward, block by block
// (llm.c style), no autograd. T is the compute type: float for training, double for the
// finite-difference gradient checks.
//
//   tokens [B,T] -> embedding -> N x block -> RMSNorm -> lm_head -> cross-entropy
//   block:  x += o_proj(attn(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))),  h = rmsnorm(x)
//           x += down_proj(silu(gate_proj(h)) * up_proj(h)),                    h = rmsnorm(x)
//
// The base is frozen (fp16, BaseWeights): backward computes input gradients through W and
// parameter gradients only for the adapters, into the flat trainable buffer. Every activation
// buffer is planned in the constructor from (max_batch, seq_len): the step loop never allocates.
//
// Gradient checkpointing (`recompute_layers`): only each layer's input is kept from the
// forward; backward recomputes one layer's forward into a single shared set of activations
// just before that layer's backward. Dropout masks are counter-based and everything else is
// deterministic, so the recomputed activations, and hence losses and gradients, are
// bit-identical to those of a run that keeps every layer's activations; the cost is one more
// forward of every layer per micro-batch.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "configs/config.h"
#include "kernels/activations.h"
#include "kernels/lora_linear.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/rope_table.h"

namespace peftrun {

// One micro-batch of token windows, all arrays [batch, seq_len].
struct Batch {
  int batch = 0;
  int seq_len = 0;
  const std::int32_t* inputs = nullptr;
  const std::int32_t* targets = nullptr;    // -100 = ignored
  const std::int32_t* positions = nullptr;  // RoPE positions
  const std::int32_t* segments = nullptr;   // document ids for packing; nullptr = one per row
};

template <typename T>
class Transformer {
 public:
  // `comm` is needed only when `base` is sharded: each layer is all-gathered before use.
  // `recompute_layers`: gradient checkpointing (above); always right for a model that only
  // evaluates, as forward alone never needs more than one layer's activations.
  Transformer(const BaseWeights& base, const AdapterLayout& layout, const AdapterConfig& adapter,
              int max_batch, int seq_len, Communicator* comm = nullptr,
              bool recompute_layers = false);

  // Forward + backward of one micro-batch. Returns the SUM of token losses; adds
  // d(grad_scale * loss_sum)/d(params) into `grads` (so grad_scale = 1 / global token count
  // makes the accumulated gradient that of the mean loss). Dropout masks come from
  // `dropout_key` (counter-based, see runtime/rng.h). When `logits_out` is given it receives
  // the logits of this training forward [batch * seq_len, vocab] (dropout included).
  double train_micro_batch(const Batch& b, const T* params, T* grads, T grad_scale,
                           std::uint64_t dropout_key, T* logits_out = nullptr);

  // Forward only, no dropout. Returns the sum of token losses; when `logits_out` is given it
  // receives the logits [batch * seq_len, vocab].
  double eval_micro_batch(const Batch& b, const T* params, T* logits_out = nullptr);

  // Test hook for finite-difference checks of DoRA: while frozen, forward reuses the weight
  // norms n of the previous forward instead of recomputing them, which is exactly the
  // "n is a constant" semantics of backward (PEFT detaches n).
  void freeze_dora_norms(bool frozen) { dora_norms_frozen_ = frozen; }

  // TEST HOOK (tests/golden_test.cpp; training never sets it): while set, a training forward
  // with dropout takes the keep mask of adapted module (layer, p) from the returned
  // [batch * seq_len, in] bytes (1 = keep) instead of drawing it from the counter-based RNG, so
  // masks recorded from PyTorch can be replayed and PEFT's dropout outputs compared exactly.
  // An empty function restores the RNG.
  using DropoutMaskOverride = std::function<const std::uint8_t*(int layer, Proj p)>;
  void set_dropout_mask_override(DropoutMaskOverride fn) { dropout_mask_override_ = std::move(fn); }

  // Called after layer l's backward has produced its adapter gradients (layers run from the
  // last down to 0); the trainer starts gradient-bucket all-reduces from here. Empty = none.
  void set_layer_backward_hook(std::function<void(int layer)> hook) {
    layer_backward_hook_ = std::move(hook);
  }

  // --debug: after every layer's forward and backward, check each activation, gradient and
  // adapter gradient for non-finite values and fail naming the op, layer and tensor.
  void set_debug_checks(bool on) { debug_checks_ = on; }

  // Bytes of the activations kept for backward (every layer's, or, with recompute_layers, the
  // layer inputs plus one layer's set).
  std::size_t activation_bytes() const;
  // Host bytes a model of this shape would allocate (activations, workspaces, the fp32 staging
  // of the embedding, lm_head and one layer, the gather slots), without allocating them: what
  // the trainer checks against the memory it may use before building the model.
  static std::size_t planned_bytes(const BaseWeights& base, const AdapterLayout& layout,
                                   const AdapterConfig& adapter, int max_batch, int seq_len,
                                   bool recompute_layers);
  // The same from the shape alone (`peftrun check`, before any weight is read): the base
  // sharded over `world` ranks when world > 1.
  static std::size_t planned_bytes(const ModelConfig& shape, const AdapterLayout& layout,
                                   const AdapterConfig& adapter, int max_batch, int seq_len,
                                   bool recompute_layers, int world = 1);
  bool recomputes_layers() const { return recompute_; }
  // fp16 bytes this rank received through layer all-gathers so far (0 when not sharded).
  std::size_t gathered_bytes() const { return gathered_bytes_; }
  int vocab_size() const { return m_.vocab_size; }

 private:
  struct LayerActs;
  struct PlanOnly {};
  // Shapes only, no buffer and no base (planned_bytes): a layer's fp16 elements and the
  // gather slots' (0 unless sharded).
  Transformer(PlanOnly, const ModelConfig& shape, const AdapterLayout& layout,
              const AdapterConfig& adapter, int max_batch, int seq_len, bool recompute_layers,
              std::size_t layer_elems, std::size_t gather_slot_elems);
  template <typename Fit>
  void plan_buffers(Fit fit);
  static std::size_t plan_bytes(Transformer&& plan);  // what plan_buffers would allocate
  void forward(const Batch& b, const T* params, bool train, std::uint64_t dropout_key);
  // One block: x_out = block_l(x_in), filling `a` with what its backward reads. The layer's
  // weights must be staged.
  void forward_layer(int l, LayerActs& a, const T* x_in, T* x_out, const Batch& b, const T* params,
                     bool train, std::uint64_t dropout_key);
  // The activations layer l's backward reads: its own, or the shared recomputed set.
  LayerActs& layer_acts(int l) { return recompute_ ? shared_acts_ : acts_[l]; }
  double head(const Batch& b, bool backward, T grad_scale, T* logits_out);
  void backward(const Batch& b, const T* params, T* grads);
  // Makes layer l's weights available in layer_w_ (all-gathered when the base is sharded) and,
  // when `next` >= 0, starts gathering layer `next` so it arrives while layer l computes.
  void stage_layer(int l, int next = -1);
  void begin_gather(int l);
  void check_finite(const char* pass, int layer, const char* tensor, const T* data,
                    std::size_t n) const;
  const T* W(Proj p) const;
  cpu::LoraLinearArgs<T> lora_args(int l, Proj p, const T* params, LayerActs& a, int n) const;
  void linear_forward(int l, Proj p, const T* x, T* y, const T* params, LayerActs& a, int n,
                      bool train, std::uint64_t dropout_key);
  void linear_backward(int l, Proj p, const T* x, const T* dy, T* dx, const T* params, T* grads,
                       LayerActs& a, int n);

  const BaseWeights* base_;  // nullptr only in a PlanOnly model
  const AdapterLayout& layout_;
  ModelConfig m_;
  LayerRope rope_;                            // each layer's RoPE table and cos/sin scale
  bool rope_long_ = false;                    // this micro-batch rotates with longrope's long table
  GluActivation glu_ = GluActivation::kSilu;  // model_constants.h, from m_
  T norm_offset_ = 0;
  T embed_scale_ = 1;
  float dropout_ = 0;
  int max_batch_, seq_len_;
  std::size_t layer_elems_ = 0;        // fp16 elements of one layer's weights
  std::size_t gather_slot_elems_ = 0;  // of each gather slot; 0 when the base is not sharded

  // Non-layer weights staged once in T; layer weights staged per use (the seam where a sharded
  // base will all-gather).
  std::vector<T> embedding_, final_norm_, lm_head_, layer_w_;
  const T* lm_head_data_ = nullptr;  // lm_head_, or embedding_ when the embeddings are tied

  struct LayerActs {
    std::vector<T> x_in, h1, rstd1, q, k, v, probs, att, x_mid, h2, rstd2, gate, up, act;
    // qk_norm: the projections before their per-head RMSNorm, and its 1 / rms per head row.
    std::vector<T> q_pre, k_pre, rstd_q, rstd_k;
    // sandwich_norms: o_proj's and down_proj's outputs before their RMSNorms, and its 1 / rms.
    std::vector<T> o_pre, rstd_o, down_pre, rstd_down;
    std::vector<T> xa[int(Proj::kCount)], x_drop[int(Proj::kCount)];
    std::vector<std::uint8_t> keep[int(Proj::kCount)];
    bool masked[int(Proj::kCount)] = {};  // the last forward applied dropout to this module
    // DoRA: the detached weight norm n [out] and the pre-scale product z [n, out].
    std::vector<T> norm[int(Proj::kCount)], z[int(Proj::kCount)];
  };
  // acts_[l].x_in is layer l's input; the rest of acts_[l] is sized only without
  // recompute_layers, when shared_acts_ (one layer's set, x_in unused) holds it instead.
  std::vector<LayerActs> acts_;
  LayerActs shared_acts_;
  bool recompute_ = false;
  // The last forward's mode and key: the recomputation must draw the same dropout masks.
  bool last_train_ = false;
  std::uint64_t last_dropout_key_ = 0;
  std::vector<T> x_final_, hf_, rstdf_, logits_;
  // Backward workspaces, shared by all layers.
  std::vector<T> dx_, dh_, dtmp_, datt_, dq_, dk_, dv_, dgate_, dup_, dact_, dxa_;
  std::vector<T> dq_pre_, dk_pre_;  // qk_norm: the gradients of q_pre / k_pre
  // Adapter scratch shared by all modules (DoRA / AdaLoRA), and DoRA's constant ||W||^2_row
  // per adapted module.
  std::vector<T> adapter_work_, norm_work_;
  std::vector<std::vector<T>> w_sq_;
  bool dora_norms_frozen_ = false;
  Communicator* comm_ = nullptr;
  std::function<void(int)> layer_backward_hook_;
  // Two gather slots (current layer + prefetched next), each [world * shard_elems] fp16.
  struct GatherSlot {
    int layer = -1;          // the layer it holds or is receiving
    std::size_t handle = 0;  // pending all_gather, 0 = complete
    std::vector<half_bits> buf;
  };
  GatherSlot slots_[2];
  int current_layer_ = -1;
  bool debug_checks_ = false;  // the layer whose weights are in layer_w_
  std::size_t gathered_bytes_ = 0;
  DropoutMaskOverride dropout_mask_override_;  // test hook, see set_dropout_mask_override
  std::vector<std::int32_t> default_positions_;
};

extern template class Transformer<float>;
extern template class Transformer<double>;

}  // namespace peftrun
