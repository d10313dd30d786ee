#include "runtime/model/cuda_model_plan.h"

#if PEFTRUN_WITH_CUDA

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/adalora.h"
#include "kernels/attention.h"
#include "kernels/blaslt.h"
#include "kernels/dora.h"
#include "kernels/lora_linear.h"
#include "kernels/nonfinite.h"

namespace peftrun {

namespace {

// The weight type DoRA's norm identity reads: the fp16 base itself for 16-bit compute (more
// precise than a bf16 copy), the staged fp32 copy (exact) for fp32 compute.
DType dora_norm_weight_type(DType act) {
  return act == DType::kF32 ? DType::kF32 : DType::kF16;
}

std::size_t adapter_workspace_bytes(const CudaModelSpec& s, const AdaptedModule& m) {
  const int n = s.tokens();
  switch (s.layout->type()) {
    case AdapterType::kLora:
      return cuda::lora_linear_workspace_bytes(n, m.shape.in, m.shape.out, m.r, s.act);
    case AdapterType::kDora:
      return cuda::dora_linear_workspace_bytes(n, m.shape.in, m.shape.out, m.r, s.act, s.dropout);
    case AdapterType::kAdaLora:
      return cuda::adalora_linear_workspace_bytes(n, m.shape.in, m.shape.out, m.r, s.act);
  }
  return 0;
}

}  // namespace

CudaModelSpec cuda_model_spec(const ModelConfig& shape, const LayerOffsets& offsets,
                              const AdapterLayout& layout, bool dropout, int max_batch, int seq_len,
                              DType act, bool recompute_layers) {
  CudaModelSpec spec;
  spec.shape = shape;
  spec.offsets = offsets;
  spec.layout = &layout;
  spec.dropout = dropout;
  spec.max_batch = max_batch;
  spec.seq_len = seq_len;
  spec.act = act;
  spec.blas_workspace_bytes = cuda::BlasLt::kRecommendedWorkspaceBytes;
  spec.recompute_layers = recompute_layers;
  return spec;
}

CudaModelPlan plan_cuda_model(const CudaModelSpec& s) {
  if (!s.layout) throw std::invalid_argument("plan_cuda_model: no adapter layout");
  if (s.max_batch <= 0 || s.seq_len <= 0) {
    throw std::invalid_argument("plan_cuda_model: batch [" + std::to_string(s.max_batch) + ", " +
                                std::to_string(s.seq_len) + "] must be positive");
  }
  const ModelConfig& m = s.shape;
  const std::size_t n = std::size_t(s.tokens());
  const std::size_t D = m.dim, F = m.ffn_dim, V = m.vocab_size, H = m.n_heads;
  const std::size_t qd = H * m.head_dim(), kvd = std::size_t(m.n_kv_heads) * m.head_dim();
  const std::size_t es = dtype_size(s.act), f16 = sizeof(half_bits), f32 = sizeof(float);
  const std::size_t i32 = sizeof(std::int32_t);
  const bool staged = s.act != DType::kF16;
  const bool dora = s.layout->type() == AdapterType::kDora;

  CudaModelPlan p;
  ArenaPlan& a = p.arena;
  // Weights: every layer resident (or this rank's slices plus two gather slots).
  p.layers.resize(m.n_layers);
  for (int l = 0; l < m.n_layers; ++l) {
    const std::string name = "weights/layer." + std::to_string(l);
    p.layers[l].weights = s.sharded() ? a.add(name + ".shard", s.shard_elems, f16)
                                      : a.add(name, s.offsets.total, f16);
  }
  if (s.sharded()) {
    for (int i = 0; i < 2; ++i) {
      p.gather_slot[i] = a.add("weights/gather_slot." + std::to_string(i),
                               std::size_t(s.world) * s.shard_elems, f16);
    }
  }
  if (staged) p.staged_layer = a.add("weights/staged_layer", s.offsets.total, es);
  p.embedding = a.add("weights/embedding", V * D, f16);
  p.final_norm = a.add("weights/final_norm", D, f16);
  if (!m.tie_embeddings) p.lm_head = a.add("weights/lm_head", V * D, f16);
  if (staged) p.lm_head_act = a.add("weights/lm_head_act", V * D, es);

  // Forward activations (what backward reads) and the saved adapter tensors: every layer's, or
  // under recompute_layers each layer's x_in plus one shared set that all layers' slots name.
  const auto add_layer_acts = [&](CudaLayerSlots& L, const std::string& at) {
    L.h1 = a.add(at + "h1", n * D, es);
    L.rstd1 = a.add(at + "rstd1", n, f32);
    L.q = a.add(at + "q", n * qd, es);
    L.k = a.add(at + "k", n * kvd, es);
    L.v = a.add(at + "v", n * kvd, es);
    if (m.qk_norm) {
      L.q_pre = a.add(at + "q_pre", n * qd, es);
      L.k_pre = a.add(at + "k_pre", n * kvd, es);
      L.rstd_q = a.add(at + "rstd_q", n * H, f32);
      L.rstd_k = a.add(at + "rstd_k", n * std::size_t(m.n_kv_heads), f32);
    }
    L.att = a.add(at + "att", n * qd, es);
    if (m.sandwich_norms) {
      L.o_pre = a.add(at + "o_pre", n * D, es);
      L.rstd_o = a.add(at + "rstd_o", n, f32);
      L.down_pre = a.add(at + "down_pre", n * D, es);
      L.rstd_down = a.add(at + "rstd_down", n, f32);
    }
    L.lse = a.add(at + "lse", std::size_t(s.max_batch) * H * s.seq_len, f32);
    L.x_mid = a.add(at + "x_mid", n * D, es);
    L.h2 = a.add(at + "h2", n * D, es);
    L.rstd2 = a.add(at + "rstd2", n, f32);
    L.gate = a.add(at + "gate", n * F, es);
    L.up = a.add(at + "up", n * F, es);
    L.act = a.add(at + "act", n * F, es);
  };
  // Per projection: a fused module's pieces (Phi-3's q, k, v of qkv_proj) keep their own.
  const auto add_module_acts = [&](CudaModuleSlots& M, const std::string& mt,
                                   const AdaptedModule& mod, Proj piece) {
    const ProjShape ps = proj_shape(m, piece);
    const std::size_t in = ps.in, out = ps.out, r = mod.r;
    M.xa = a.add(mt + "xa", n * r, es);
    if (s.dropout) {
      M.x_drop = a.add(mt + "x_drop", n * in, es);
      M.keep = a.add(mt + "keep", n * in, 1);
    }
    if (dora) {
      M.norm = a.add(mt + "norm", out, f32);
      M.v = a.add(mt + "v", n * out, es);
    }
  };
  std::size_t adapter_work = 0, norm_work = 0;
  for (int l = 0; l < m.n_layers; ++l) {
    CudaLayerSlots& L = p.layers[l];
    const std::string at = "activations/layer." + std::to_string(l) + ".";
    L.x_in = a.add(at + "x_in", n * D, es);
    if (!s.recompute_layers) add_layer_acts(L, at);
    for (int pi = 0; pi < int(Proj::kCount); ++pi) {
      const int mi = s.layout->module_index(l, Proj(pi));
      if (mi < 0) continue;
      const AdaptedModule& mod = s.layout->modules()[mi];
      CudaModuleSlots& M = L.module[pi];
      if (!s.recompute_layers) {
        add_module_acts(M, at + all_target_modules()[pi] + ".", mod, Proj(pi));
      }
      if (dora) {
        M.w_sq =
            a.add("weights/layer." + std::to_string(l) + "." + all_target_modules()[pi] + ".w_sq",
                  proj_shape(m, Proj(pi)).out, f32);
        norm_work =
            std::max(norm_work, cuda::dora_norm_workspace_bytes(mod.shape.out, mod.shape.in, mod.r,
                                                                dora_norm_weight_type(s.act)));
      }
      adapter_work = std::max(adapter_work, adapter_workspace_bytes(s, mod));
    }
  }
  p.recompute_layers = s.recompute_layers;
  if (s.recompute_layers) {
    CudaLayerSlots shared;
    add_layer_acts(shared, "activations/shared.");
    for (int pi = 0; pi < int(Proj::kCount); ++pi) {
      // The projection's largest rank over the layers that adapt it (ranks may differ).
      const AdaptedModule* widest = nullptr;
      for (int l = 0; l < m.n_layers; ++l) {
        const int mi = s.layout->module_index(l, Proj(pi));
        if (mi >= 0 && (!widest || s.layout->modules()[mi].r > widest->r)) {
          widest = &s.layout->modules()[mi];
        }
      }
      if (widest) {
        add_module_acts(shared.module[pi],
                        std::string("activations/shared.") + all_target_modules()[pi] + ".",
                        *widest, Proj(pi));
      }
    }
    for (int l = 0; l < m.n_layers; ++l) {
      CudaLayerSlots L = shared;
      L.weights = p.layers[l].weights;
      L.x_in = p.layers[l].x_in;
      for (int pi = 0; pi < int(Proj::kCount); ++pi) {
        if (s.layout->module_index(l, Proj(pi)) < 0) {
          L.module[pi] = CudaModuleSlots{};
        } else {
          L.module[pi].w_sq = p.layers[l].module[pi].w_sq;
        }
      }
      p.layers[l] = L;
    }
  }

  // The head: final norm, then lm_head + cross-entropy over chunks of rows.
  p.x_final = a.add("activations/x_final", n * D, es);
  p.hf = a.add("activations/hf", n * D, es);
  p.rstdf = a.add("activations/rstdf", n, f32);
  p.chunk_rows = static_cast<int>(std::clamp<std::size_t>(kCudaLogitBudget / V, 1, n));
  p.logits = a.add("activations/logits_chunk", std::size_t(p.chunk_rows) * V, es);
  p.row_loss = a.add("activations/row_loss", std::size_t(p.chunk_rows), f32);
  p.loss_sum = a.add("activations/loss_sum", 1, sizeof(double));

  // Backward: shared by all layers.
  const std::size_t widest = std::max({D, F, qd});
  p.dx = a.add("backward/dx", n * D, es);
  p.dh = a.add("backward/dh", n * D, es);
  p.dtmp = a.add("backward/dtmp", n * widest, es);
  p.datt = a.add("backward/datt", n * qd, es);
  p.dq = a.add("backward/dq", n * qd, es);
  p.dk = a.add("backward/dk", n * kvd, es);
  p.dv = a.add("backward/dv", n * kvd, es);
  if (m.qk_norm) {
    p.dq_pre = a.add("backward/dq_pre", n * qd, es);
    p.dk_pre = a.add("backward/dk_pre", n * kvd, es);
  }
  p.dgate = a.add("backward/dgate", n * F, es);
  p.dup = a.add("backward/dup", n * F, es);
  p.dact = a.add("backward/dact", n * F, es);

  p.attention_work = a.add("workspace/attention", cuda::attention_backward_workspace_bytes(
                                                      s.max_batch, s.seq_len, m.n_heads));
  p.adapter_work = a.add("workspace/adapter", adapter_work);
  p.norm_work = a.add("workspace/dora_norm", norm_work);
  p.blas_work = a.add("workspace/cublaslt", s.blas_workspace_bytes);

  p.inputs = a.add("batch/inputs", n, i32);
  p.targets = a.add("batch/targets", n, i32);
  p.positions = a.add("batch/positions", n, i32);
  p.segments = a.add("batch/segments", n, i32);
  p.report = a.add("workspace/nonfinite_report", 1, sizeof(NonfiniteReport));
  return p;
}

}  // namespace peftrun

#endif  // PEFTRUN_WITH_CUDA
