// Every device buffer of CudaTransformer (runtime/model/cuda_transformer.h), planned from the
// model shape, the adapter layout, the batch shape and the compute dtype before anything is
// allocated: one ArenaPlan, so the device model makes one cudaMalloc at construction and none
// afterwards. Host code (the sizes come from the ops' *_workspace_bytes functions), unit-tested
// without a GPU in tests/cuda_model_plan_test.cpp. Defined only in CUDA builds.
//
// Types: base weights fp16 (as BaseWeights holds them); activations and their gradients in
// `act`; per-row statistics (rstd, lse, row losses) fp32; the loss sum fp64; token ids int32.
#pragma once

#include <cstddef>
#include <vector>

#include "configs/config.h"
#include "kernels/dtype.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/model/arena_plan.h"
#include "runtime/model/base_weights.h"

namespace peftrun {

struct CudaModelSpec {
  ModelConfig shape;
  LayerOffsets offsets;         // of the base's layer buffers
  int world = 1;                // ranks the base is sharded over (1 = replicated)
  std::size_t shard_elems = 0;  // fp16 elements of each rank's slice of a layer (sharded)
  const AdapterLayout* layout = nullptr;
  bool dropout = false;  // adapter.dropout > 0: keep masks and dropped inputs are saved
  int max_batch = 1, seq_len = 1;
  DType act = DType::kBF16;
  std::size_t blas_workspace_bytes = 0;
  // Gradient checkpointing: every layer's activation slots but x_in are one shared set (sized
  // for the largest adapter rank of each projection); the model recomputes a layer into it.
  bool recompute_layers = false;

  bool sharded() const { return world > 1; }
  int tokens() const { return max_batch * seq_len; }
};

// Saved tensors of one adapted projection of one layer.
struct CudaModuleSlots {
  ArenaSlot xa;      // [n, r] act: x~ A^T
  ArenaSlot x_drop;  // [n, in] act (dropout only)
  ArenaSlot keep;    // [n, in] bytes (dropout only)
  ArenaSlot norm;    // [out] fp32 (DoRA): the detached weight norm n
  ArenaSlot v;       // [n, out] act (DoRA): g * (x~ W^T)
  ArenaSlot w_sq;    // [out] fp32 (DoRA): ||W||^2 per row, constant
};

struct CudaLayerSlots {
  ArenaSlot weights;  // [offsets.total] fp16 (replicated) or [shard_elems] fp16 (sharded)
  // Forward activations kept for backward (act unless noted).
  ArenaSlot x_in, h1, rstd1 /*fp32 [n]*/, q, k, v, att, lse /*fp32 [B, H, T]*/, x_mid, h2,
      rstd2 /*fp32 [n]*/, gate, up, act;
  // qk_norm only: q_proj / k_proj outputs before the per-head RMSNorm, its fp32 1 / rms per
  // head row ([n, H] and [n, KV]).
  ArenaSlot q_pre, k_pre, rstd_q, rstd_k;
  // sandwich_norms only: o_proj's and down_proj's outputs before their RMSNorms ([n, D]) and
  // its fp32 1 / rms ([n]).
  ArenaSlot o_pre, rstd_o, down_pre, rstd_down;
  CudaModuleSlots module[int(Proj::kCount)];  // empty where (layer, p) is not adapted
};

struct CudaModelPlan {
  ArenaPlan arena;
  bool recompute_layers = false;  // the spec's: layers[l] share all activation slots but x_in
  std::vector<CudaLayerSlots> layers;
  ArenaSlot gather_slot[2];  // sharded: [world * shard_elems] fp16 each
  ArenaSlot staged_layer;    // [offsets.total] act when act != fp16 (the layer in use)
  ArenaSlot embedding, final_norm, lm_head;  // fp16; lm_head empty when tied
  ArenaSlot lm_head_act;                     // [V, D] act when act != fp16
  ArenaSlot x_final, hf, rstdf;              // [n, D] act, [n, D] act, [n] fp32
  int chunk_rows = 1;                        // rows of logits per lm_head + CE chunk
  ArenaSlot logits;                          // [chunk_rows, V] act
  ArenaSlot row_loss;                        // [chunk_rows] fp32
  ArenaSlot loss_sum;                        // one double
  // Backward buffers shared by all layers (as the CPU model's).
  ArenaSlot dx, dh, dtmp, datt, dq, dk, dv, dgate, dup, dact;
  ArenaSlot dq_pre, dk_pre;  // qk_norm only
  ArenaSlot attention_work, adapter_work, norm_work, blas_work;
  ArenaSlot inputs, targets, positions, segments;  // [n] int32 each
  ArenaSlot report;                                // a NonfiniteReport (--debug)
};

// At most this many logits per chunk, so the [tokens, vocab] logits never exist. (The CPU
// model's budget is 16M, since OpenBLAS needs tall chunks; this one is untuned on a GPU.)
inline constexpr std::size_t kCudaLogitBudget = std::size_t(1) << 22;

CudaModelPlan plan_cuda_model(const CudaModelSpec& spec);

// The spec of a replicated device model (world 1; the caller sets world and shard_elems for a
// sharded base) with cuBLASLt's recommended workspace: what CudaTransformer plans, and what
// `peftrun check` reports before any weight is read.
CudaModelSpec cuda_model_spec(const ModelConfig& shape, const LayerOffsets& offsets,
                              const AdapterLayout& layout, bool dropout, int max_batch, int seq_len,
                              DType act, bool recompute_layers);

}  // namespace peftrun
