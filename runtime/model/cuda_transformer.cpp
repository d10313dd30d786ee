#include "runtime/model/cuda_transformer.h"

#if PEFTRUN_WITH_CUDA

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/adalora.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/cross_entropy.h"
#include "kernels/dora.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/glu.h"
#include "kernels/lora_linear.h"
#include "kernels/nonfinite.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/softcap_math.h"
#include "runtime/model/model_constants.h"
#include "runtime/model/rope_table.h"
#include "runtime/rng.h"

#if PEFTRUN_WITH_NCCL
#include "comm/nccl_communicator.h"
#endif

namespace peftrun {

namespace {

constexpr cuda::Stream kCompute = nullptr;  // the legacy default stream: every op, in order

// p advanced by `elems` elements of `t`.
const void* offset(const void* p, std::size_t elems, DType t) {
  return static_cast<const unsigned char*>(p) + elems * dtype_size(t);
}
void* offset(void* p, std::size_t elems, DType t) {
  return static_cast<unsigned char*>(p) + elems * dtype_size(t);
}

// Row-major D[M, N] = A op(B) in `t` (fp32 accumulation), alpha 1, beta 0.
cuda::GemmArgs matmul(Trans tb, int M, int N, int K, const void* A, int lda, const void* B, int ldb,
                      void* D, int ldd, DType t) {
  return cuda::make_gemm(Trans::kNo, tb, M, N, K, A, lda, B, ldb, t, D, ldd, t);
}

// Whether `comm` can gather into this process's device memory: the NCCL communicator, or, on
// the emulated device (kernels/emulated/), where device memory is host memory, any one.
bool gathers_device_buffers(Communicator* comm) {
#if PEFTRUN_WITH_NCCL
  if (dynamic_cast<NcclCommunicator*>(comm)) return true;
#endif
#if PEFTRUN_CUDA_EMULATION
  return comm != nullptr;
#else
  return false;
#endif
}

// Makes the compute stream wait for the started gather `handle`: on the device only with NCCL,
// by the host with a host communicator (the emulated device).
void compute_stream_waits_for(Communicator* comm, std::size_t handle) {
#if PEFTRUN_WITH_NCCL
  if (auto* nccl = dynamic_cast<NcclCommunicator*>(comm)) {
    nccl->stream_wait(handle, kCompute);  // device-side wait only
    return;
  }
#endif
  comm->wait(handle);
}

// Host fp32 values of n elements of `t`.
void decode_to_float(const unsigned char* src, DType t, std::size_t n, float* dst) {
  if (t == DType::kF32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    std::uint16_t b;
    std::memcpy(&b, src + 2 * i, 2);
    dst[i] = t == DType::kF16 ? half_to_float(b) : bf16_to_float(b);
  }
}

}  // namespace

CudaTransformer::CudaTransformer(const BaseWeights& base, const AdapterLayout& layout,
                                 const AdapterConfig& adapter, int max_batch, int seq_len,
                                 DType act, Communicator* comm, bool recompute_layers)
    : base_(base),
      layout_(layout),
      m_(base.shape()),
      rope_(m_),
      glu_(glu_activation(m_)),
      norm_offset_(norm_weight_offset(m_)),
      dropout_(static_cast<float>(adapter.dropout)),
      max_batch_(max_batch),
      seq_len_(seq_len),
      act_(act),
      comm_(comm) {
  if (base.sharded()) {
    if (!comm_ || comm_->world_size() != base.shard_world()) {
      throw std::invalid_argument("CudaTransformer: a base sharded over " +
                                  std::to_string(base.shard_world()) +
                                  " ranks needs a communicator of that size");
    }
    if (!gathers_device_buffers(comm_)) {
      throw std::invalid_argument(
          "CudaTransformer: a sharded base is gathered in device memory, which needs the NCCL "
          "communicator (got '" +
          std::string(comm_->backend()) + "')");
    }
  }
  if (!cuda::attention_head_dim_supported(m_.head_dim())) {
    throw std::invalid_argument("runtime.device: cuda: head_dim " + std::to_string(m_.head_dim()) +
                                " is not supported by the attention kernel (a multiple of 8 in "
                                "[8, 256] is)");
  }
  CudaModelSpec spec = cuda_model_spec(m_, base.offsets(), layout, dropout_ > 0, max_batch, seq_len,
                                       act, recompute_layers);
  spec.world = base.sharded() ? base.shard_world() : 1;
  spec.shard_elems = base.shard_elems();
  plan_ = plan_cuda_model(spec);
  try {
    arena_ = DeviceArena(plan_.arena);
  } catch (const std::runtime_error& e) {
    // Say what the arena holds and what would fit better, not only the failed byte count.
    std::string hint;
    if (!recompute_layers) {
      spec.recompute_layers = true;
      hint = "; runtime.gradient_checkpointing: true plans " +
             format_bytes(plan_cuda_model(spec).arena.total_bytes());
    }
    throw std::runtime_error("runtime.device: cuda: the device model's arena of " +
                             format_bytes(plan_.arena.total_bytes()) + " (" +
                             plan_.arena.summary() + ") for train.micro_batch_size " +
                             std::to_string(max_batch) + " x data.seq_len " +
                             std::to_string(seq_len) + " does not fit: " + e.what() + hint);
  }
  lt_ = std::make_unique<cuda::BlasLt>(at(plan_.blas_work), plan_.blas_work.bytes);

  // The frozen base, fp16, as BaseWeights holds it (this rank's slices when sharded).
  for (int l = 0; l < m_.n_layers; ++l) {
    const ArenaSlot& w = plan_.layers[l].weights;
    cuda::copy_host_to_device(at(w), base.sharded() ? base.layer_shard(l) : base.layer(l), w.bytes);
  }
  const std::size_t VD = std::size_t(m_.vocab_size) * m_.dim;
  cuda::copy_host_to_device(at(plan_.embedding), base.embedding(), VD * sizeof(half_bits));
  cuda::copy_host_to_device(at(plan_.final_norm), base.final_norm(),
                            std::size_t(m_.dim) * sizeof(half_bits));
  const half_bits* lm16 = at<half_bits>(plan_.embedding);
  if (!m_.tie_embeddings) {
    cuda::copy_host_to_device(at(plan_.lm_head), base.lm_head(), VD * sizeof(half_bits));
    lm16 = at<half_bits>(plan_.lm_head);
  }
  if (act_ == DType::kF16) {
    lm_head_act_ = lm16;
  } else {
    cuda::convert(lm16, DType::kF16, at(plan_.lm_head_act), act_, VD, kCompute);
    lm_head_act_ = at(plan_.lm_head_act);
  }

  masked_.assign(m_.n_layers, std::vector<bool>(int(Proj::kCount), false));
  const std::size_t n = std::size_t(max_batch) * seq_len;
  default_positions_.resize(n);
  for (std::size_t i = 0; i < n; ++i) default_positions_[i] = static_cast<int>(i % seq_len);
  logits_host_.resize(plan_.logits.bytes);

  // DoRA: ||W||^2 per output row is constant (the base is frozen): computed once, from fp16.
  if (layout.type() == AdapterType::kDora) {
    for (int l = 0; l < m_.n_layers; ++l) {
      stage_layer(l);
      for (int p = 0; p < int(Proj::kCount); ++p) {
        if (layout.module_index(l, Proj(p)) < 0) continue;
        const ProjShape s = proj_shape(m_, Proj(p));
        cuda::row_sq_norms(layer16_ + base.offsets().proj[p], DType::kF16, s.out, s.in,
                           at<float>(plan_.layers[l].module[p].w_sq), kCompute);
      }
    }
  }
  cuda::synchronize();  // uploads and conversions done, errors surface here
}

CudaTransformer::~CudaTransformer() {
  // Gathers may still be in flight into the arena: let the communicator finish them before the
  // memory goes (no-op without a sharded base).
  if (comm_ && base_.sharded()) {
    try {
      comm_->wait_all();
    } catch (...) {
    }
  }
}

void CudaTransformer::set_fallback_listener(cuda::BlasLt::FallbackListener listener) {
  lt_->set_fallback_listener(std::move(listener));
}

// Starts the all-gather of layer l into the slot that does not hold the layer in use, unless a
// slot already holds (or is receiving) it. Every rank issues the same gathers in the same order.
// The communication stream first waits for the compute stream's queued work (NcclCommunicator),
// so the kernels still reading the slot's previous layer finish before it is overwritten.
void CudaTransformer::begin_gather(int l) {
  for (auto& slot : slots_) {
    if (slot.layer == l) return;
  }
  const int free_slot = slots_[0].layer == current_layer_ ? 1 : 0;
  GatherSlot& slot = slots_[free_slot];
  const std::size_t bytes = base_.shard_elems() * sizeof(half_bits);
  slot.layer = l;
  slot.handle =
      comm_->start_all_gather(at(plan_.layers[l].weights), at(plan_.gather_slot[free_slot]), bytes);
  gathered_bytes_ += bytes * (base_.shard_world() - 1);
}

void CudaTransformer::stage_layer(int l, int next) {
  if (!base_.sharded()) {
    layer16_ = at<half_bits>(plan_.layers[l].weights);
  } else {
    begin_gather(l);
    const int s = slots_[0].layer == l ? 0 : 1;
    if (slots_[s].handle != 0) {
      compute_stream_waits_for(comm_, slots_[s].handle);
      slots_[s].handle = 0;
    }
    current_layer_ = l;
    layer16_ = at<half_bits>(plan_.gather_slot[s]);
    if (next >= 0 && next < m_.n_layers) begin_gather(next);
  }
  if (act_ == DType::kF16) {
    layer_act_ = layer16_;
  } else {
    cuda::convert(layer16_, DType::kF16, at(plan_.staged_layer), act_, base_.offsets().total,
                  kCompute);
    layer_act_ = at(plan_.staged_layer);
  }
}

void CudaTransformer::upload_batch(const Batch& b) {
  if (b.batch > max_batch_ || b.seq_len != seq_len_ || b.batch <= 0) {
    throw std::invalid_argument("CudaTransformer: batch [" + std::to_string(b.batch) + ", " +
                                std::to_string(b.seq_len) + "] does not fit the planned [" +
                                std::to_string(max_batch_) + ", " + std::to_string(seq_len_) + "]");
  }
  const std::size_t bytes = std::size_t(b.batch) * b.seq_len * sizeof(std::int32_t);
  cuda::copy_host_to_device(at(plan_.inputs), b.inputs, bytes);
  cuda::copy_host_to_device(at(plan_.targets), b.targets, bytes);
  const std::int32_t* pos = b.positions ? b.positions : default_positions_.data();
  cuda::copy_host_to_device(at(plan_.positions), pos, bytes);
  rope_long_ = rope_.long_context(*std::max_element(pos, pos + std::size_t(b.batch) * b.seq_len));
  has_segments_ = b.segments != nullptr;
  if (has_segments_) cuda::copy_host_to_device(at(plan_.segments), b.segments, bytes);
}

void CudaTransformer::check(const char* pass, int layer, const std::string& tensor, const void* x,
                            std::size_t n, DType type) const {
  if (!debug_checks_ || n == 0) return;
  const std::string where = tensor + " of layer " + std::to_string(layer) + " during " + pass;
  try {
    cuda::synchronize();  // a launch that faulted is named here, not ops later
  } catch (const std::exception& e) {
    throw std::runtime_error("--debug: CUDA error in the op producing " + where + ": " + e.what());
  }
  NonfiniteReport* report = at<NonfiniteReport>(plan_.report);
  cuda::nonfinite_reset(report, kCompute);
  cuda::nonfinite_scan(x, type, n, report, kCompute);
  NonfiniteReport found;
  cuda::copy_device_to_host(&found, report, sizeof(found));
  if (!found.found()) return;
  unsigned char raw[4] = {};
  cuda::copy_device_to_host(raw, offset(x, found.first_index, type), dtype_size(type));
  float value = 0;
  decode_to_float(raw, type, 1, &value);
  throw std::runtime_error("--debug: non-finite value (" + std::to_string(value) + ") in " + where +
                           ", at element " + std::to_string(found.first_index) + " of " +
                           std::to_string(n) + " (" + std::to_string(found.count) + " non-finite)");
}

void CudaTransformer::check_adapter_grads(int l, Proj p, const float* grads) const {
  if (!debug_checks_) return;
  const int mi = layout_.module_index(l, p);
  if (mi < 0) return;
  const std::string module = layout_.modules()[mi].module + ".";
  for (const TrainableTensor& t : layout_.tensors()) {
    if (t.name.find(module) != std::string::npos) {
      check("backward", l, "grad of " + t.name, grads + t.offset, t.numel(), DType::kF32);
    }
  }
}

// y[n, out] = x[n, in] W^T + bias, plus the adapter branch when (l, p) is adapted.
void CudaTransformer::linear_forward(int l, Proj p, const void* x, void* y, const float* params,
                                     int n, bool train, std::uint64_t layer_key) {
  const ProjShape s = proj_shape(m_, p);
  const int mi = layout_.module_index(l, p);
  const void* W = offset(layer_act_, base_.offsets().proj[int(p)], act_);
  const std::size_t bias_at = base_.offsets().bias[int(p)];
  const void* bias = bias_at == kNoOffset ? nullptr : offset(layer_act_, bias_at, act_);
  if (mi < 0) {
    cuda::GemmArgs g = matmul(Trans::kYes, n, s.out, s.in, x, s.in, W, s.in, y, s.out, act_);
    g.bias = bias;
    cuda::gemm(*lt_, g, kCompute);
    return;
  }
  // A piece of a fused module (Phi-3's q of qkv_proj) runs as a linear of its own with the
  // shared A and its rows of B (and of DoRA's m).
  const AdaptedModule& mod = layout_.modules()[mi];
  const std::size_t row = piece_row(m_, mod.linear(), p);
  const CudaModuleSlots& M = plan_.layers[l].module[int(p)];
  const bool masked = train && dropout_ > 0;
  masked_[l][int(p)] = masked;
  cuda::LoraLinearArgs a;
  a.n = n;
  a.in = s.in;
  a.out = s.out;
  a.r = mod.r;
  a.scale = layout_.scale();
  a.act = act_;
  a.W = W;
  a.bias = bias;
  a.A = params + mod.a;
  a.B = params + mod.b + row * mod.r;
  a.xa = at(M.xa);
  a.work = at(plan_.adapter_work);
  if (masked) {
    // The CPU model's counter-based mask: element i of module mi in this micro-batch (one
    // mask for all pieces of a fused module).
    cuda::dropout_keep_mask(derive_key(layer_key, std::uint64_t(mi)), dropout_,
                            std::size_t(n) * s.in, at<std::uint8_t>(M.keep), kCompute);
    a.keep = at<std::uint8_t>(M.keep);
    a.keep_scale = static_cast<float>(1.0 / (1.0 - double(dropout_)));
    a.x_drop = at(M.x_drop);
  }
  switch (layout_.type()) {
    case AdapterType::kLora:
      cuda::lora_linear_forward(*lt_, a, x, y, kCompute);
      break;
    case AdapterType::kDora: {
      // n = ||W + sBA||_row from the rank-r identity; held constant by this step's backward.
      const bool fp32 = act_ == DType::kF32;
      const void* Wn = fp32 ? W : static_cast<const void*>(layer16_ + base_.offsets().proj[int(p)]);
      cuda::dora_weight_norm(*lt_, Wn, fp32 ? DType::kF32 : DType::kF16, at<float>(M.w_sq), a.A,
                             a.B, s.out, s.in, mod.r, a.scale, at<float>(M.norm),
                             at(plan_.norm_work), kCompute);
      cuda::DoraLinearArgs d;
      d.lora = a;
      d.magnitude = params + mod.m + row;
      d.weight_norm = at<float>(M.norm);
      d.v = at(M.v);
      d.work = at(plan_.adapter_work);
      cuda::dora_linear_forward(*lt_, d, x, y, kCompute);
      break;
    }
    case AdapterType::kAdaLora: {
      cuda::AdaLoraLinearArgs d;
      d.lora = a;
      d.E = params + mod.e;
      d.work = at(plan_.adapter_work);
      cuda::adalora_linear_forward(*lt_, d, x, y, kCompute);
      break;
    }
  }
}

// dx[n, in] = dy W (+ the adapter branch's input gradient); adapter grads accumulate.
void CudaTransformer::linear_backward(int l, Proj p, const void* x, const void* dy, void* dx,
                                      const float* params, float* grads, int n) {
  const ProjShape s = proj_shape(m_, p);
  const int mi = layout_.module_index(l, p);
  const void* W = offset(layer_act_, base_.offsets().proj[int(p)], act_);
  if (mi < 0) {
    cuda::gemm(*lt_, matmul(Trans::kNo, n, s.in, s.out, dy, s.out, W, s.in, dx, s.in, act_),
               kCompute);
    return;
  }
  // The pieces of a fused module each add to the shared dA (and dE); dB and dm get their rows.
  const AdaptedModule& mod = layout_.modules()[mi];
  const std::size_t row = piece_row(m_, mod.linear(), p);
  float* dB = grads + mod.b + row * mod.r;
  const CudaModuleSlots& M = plan_.layers[l].module[int(p)];
  const std::size_t bias_at = base_.offsets().bias[int(p)];
  cuda::LoraLinearArgs a;
  a.n = n;
  a.in = s.in;
  a.out = s.out;
  a.r = mod.r;
  a.scale = layout_.scale();
  a.act = act_;
  a.W = W;
  a.bias = bias_at == kNoOffset ? nullptr : offset(layer_act_, bias_at, act_);
  a.A = params + mod.a;
  a.B = params + mod.b + row * mod.r;
  a.xa = at(M.xa);
  a.work = at(plan_.adapter_work);
  if (masked_[l][int(p)]) {
    a.keep = at<std::uint8_t>(M.keep);
    a.keep_scale = static_cast<float>(1.0 / (1.0 - double(dropout_)));
    a.x_drop = at(M.x_drop);
  }
  switch (layout_.type()) {
    case AdapterType::kLora:
      cuda::lora_linear_backward(*lt_, a, x, dy, dx, grads + mod.a, dB, kCompute);
      break;
    case AdapterType::kDora: {
      cuda::DoraLinearArgs d;
      d.lora = a;
      d.magnitude = params + mod.m + row;
      d.weight_norm = at<float>(M.norm);
      d.v = at(M.v);
      d.work = at(plan_.adapter_work);
      cuda::dora_linear_backward(*lt_, d, x, dy, dx, grads + mod.a, dB, grads + mod.m + row,
                                 kCompute);
      break;
    }
    case AdapterType::kAdaLora: {
      cuda::AdaLoraLinearArgs d;
      d.lora = a;
      d.E = params + mod.e;
      d.work = at(plan_.adapter_work);
      cuda::adalora_linear_backward(*lt_, d, x, dy, dx, grads + mod.a, grads + mod.e, dB, kCompute);
      break;
    }
  }
  check_adapter_grads(l, p, grads);
}

void CudaTransformer::forward(const Batch& b, const float* params, bool train,
                              std::uint64_t dropout_key) {
  const int n = b.batch * b.seq_len;
  const int D = m_.dim;
  const std::size_t nD = std::size_t(n) * D;
  const float eps = static_cast<float>(m_.norm_eps);
  last_train_ = train;
  last_dropout_key_ = dropout_key;

  cuda::embedding_forward(at<std::int32_t>(plan_.inputs), at<half_bits>(plan_.embedding),
                          at(plan_.layers[0].x_in), n, D, m_.vocab_size, embedding_scale(m_, act_),
                          act_, kCompute);
  check("forward", 0, "embedding output", at(plan_.layers[0].x_in), nD, act_);
  for (int l = 0; l < m_.n_layers; ++l) {
    stage_layer(l, l + 1);  // prefetch the next layer
    void* x_out = l + 1 < m_.n_layers ? at(plan_.layers[l + 1].x_in) : at(plan_.x_final);
    forward_layer(l, x_out, b, params, train, dropout_key);
  }
  cuda::rmsnorm_forward(at(plan_.x_final), at<half_bits>(plan_.final_norm), norm_offset_,
                        at(plan_.hf), at<float>(plan_.rstdf), n, D, eps, act_, kCompute);
  check("forward", m_.n_layers - 1, "final norm output", at(plan_.hf), nD, act_);
  if (base_.sharded()) comm_->progress();  // retire the gathers that completed
}

// One block: x_out = block_l(layer l's x_in), filling layer l's activation slots (shared by
// every layer under gradient checkpointing). The layer's weights must be staged.
void CudaTransformer::forward_layer(int l, void* x_out, const Batch& b, const float* params,
                                    bool train, std::uint64_t dropout_key) {
  const int n = b.batch * b.seq_len;
  const int D = m_.dim, F = m_.ffn_dim, H = m_.n_heads, KV = m_.n_kv_heads, hd = m_.head_dim();
  const std::size_t nD = std::size_t(n) * D, nF = std::size_t(n) * F;
  const std::size_t nq = std::size_t(n) * H * hd, nkv = std::size_t(n) * KV * hd;
  const float eps = static_cast<float>(m_.norm_eps);
  const std::int32_t* pos = at<std::int32_t>(plan_.positions);
  const std::int32_t* seg = has_segments_ ? at<std::int32_t>(plan_.segments) : nullptr;
  const LayerOffsets& off = base_.offsets();
  const CudaLayerSlots& L = plan_.layers[l];
  const std::uint64_t lkey = derive_key(dropout_key, std::uint64_t(l));
  // Attention half: h1 = rmsnorm(x_in); x_mid = x_in + o_proj(attention(q, k, v)).
  // OLMo 2 (no input norms): the projections read the layer input itself.
  const void* h1 = m_.input_norms ? at(L.h1) : at(L.x_in);
  if (m_.input_norms) {
    cuda::rmsnorm_forward(at(L.x_in), layer16_ + off.attn_norm, norm_offset_, at(L.h1),
                          at<float>(L.rstd1), n, D, eps, act_, kCompute);
    check("forward", l, "input_layernorm output", at(L.h1), nD, act_);
  }
  if (m_.qk_norm) {
    const NormRows qr = qk_norm_rows(m_, n, H), kr = qk_norm_rows(m_, n, KV);
    // Qwen3: q = rmsnorm_per_head(q_proj(h1)), k likewise, before RoPE.
    linear_forward(l, Proj::kQ, h1, at(L.q_pre), params, n, train, lkey);
    check("forward", l, "q_proj output", at(L.q_pre), nq, act_);
    linear_forward(l, Proj::kK, h1, at(L.k_pre), params, n, train, lkey);
    check("forward", l, "k_proj output", at(L.k_pre), nkv, act_);
    cuda::rmsnorm_forward(at(L.q_pre), layer16_ + off.q_norm, norm_offset_, at(L.q),
                          at<float>(L.rstd_q), qr.rows, qr.width, eps, act_, kCompute);
    check("forward", l, "q_norm output", at(L.q), nq, act_);
    cuda::rmsnorm_forward(at(L.k_pre), layer16_ + off.k_norm, norm_offset_, at(L.k),
                          at<float>(L.rstd_k), kr.rows, kr.width, eps, act_, kCompute);
    check("forward", l, "k_norm output", at(L.k), nkv, act_);
  } else {
    linear_forward(l, Proj::kQ, h1, at(L.q), params, n, train, lkey);
    check("forward", l, "q_proj output", at(L.q), nq, act_);
    linear_forward(l, Proj::kK, h1, at(L.k), params, n, train, lkey);
    check("forward", l, "k_proj output", at(L.k), nkv, act_);
  }
  linear_forward(l, Proj::kV, h1, at(L.v), params, n, train, lkey);
  check("forward", l, "v_proj output", at(L.v), nkv, act_);
  if (rope_.rotates(l)) {  // not in SmolLM3's NoPE layers
    const float* inv_freq =
        rope_.inv_freq(l, rope_long_);  // Gemma 3's sliding layers: their own table
    const float rope_cs = rope_.cos_sin_scale(l);
    const int rotary = m_.rotary_dim();  // partial rotary: the first channels only
    cuda::rope_forward(at(L.q), pos, n, H, hd, rotary, inv_freq, rope_cs, act_, kCompute);
    check("forward", l, "q after RoPE", at(L.q), nq, act_);
    cuda::rope_forward(at(L.k), pos, n, KV, hd, rotary, inv_freq, rope_cs, act_, kCompute);
    check("forward", l, "k after RoPE", at(L.k), nkv, act_);
  }
  cuda::attention_forward(at(L.q), at(L.k), at(L.v), seg, attention_window(m_, l),
                          attention_score_scale<float>(m_), attention_softcap(m_), at(L.att),
                          at<float>(L.lse), b.batch, b.seq_len, H, KV, hd, act_, kCompute);
  check("forward", l, "attention output", at(L.att), nq, act_);
  if (m_.sandwich_norms) {
    // Gemma 2 / 3: x_mid = x_in + rmsnorm(o_proj(attention)).
    linear_forward(l, Proj::kO, at(L.att), at(L.o_pre), params, n, train, lkey);
    check("forward", l, "o_proj output", at(L.o_pre), nD, act_);
    cuda::rmsnorm_forward(at(L.o_pre), layer16_ + off.post_attn_norm, norm_offset_, at(L.x_mid),
                          at<float>(L.rstd_o), n, D, eps, act_, kCompute);
    check("forward", l, "post_attention_layernorm (sandwich) output", at(L.x_mid), nD, act_);
  } else {
    linear_forward(l, Proj::kO, at(L.att), at(L.x_mid), params, n, train, lkey);
    check("forward", l, "o_proj output", at(L.x_mid), nD, act_);
  }
  const float rscale = residual_scale(m_);  // Granite's residual_multiplier
  if (rscale != 1.0f) cuda::scale(at(L.x_mid), at(L.x_mid), rscale, nD, act_, kCompute);
  cuda::add_inplace(at(L.x_mid), at(L.x_in), nD, act_, kCompute);
  check("forward", l, "o_proj output + residual", at(L.x_mid), nD, act_);
  // MLP half: h2 = rmsnorm(x_mid); x_out = x_mid + down(act(gate(h2)) * up(h2)).
  const void* h2 = m_.input_norms ? at(L.h2) : at(L.x_mid);  // OLMo 2: x_mid itself
  if (m_.input_norms) {
    cuda::rmsnorm_forward(at(L.x_mid), layer16_ + off.mlp_norm, norm_offset_, at(L.h2),
                          at<float>(L.rstd2), n, D, eps, act_, kCompute);
    check("forward", l, "post_attention_layernorm output", at(L.h2), nD, act_);
  }
  linear_forward(l, Proj::kGate, h2, at(L.gate), params, n, train, lkey);
  check("forward", l, "gate_proj output", at(L.gate), nF, act_);
  linear_forward(l, Proj::kUp, h2, at(L.up), params, n, train, lkey);
  check("forward", l, "up_proj output", at(L.up), nF, act_);
  cuda::glu_forward(glu_, at(L.gate), at(L.up), at(L.act), nF, act_, kCompute);
  check("forward", l, "act(gate) * up output", at(L.act), nF, act_);
  if (m_.sandwich_norms) {
    linear_forward(l, Proj::kDown, at(L.act), at(L.down_pre), params, n, train, lkey);
    check("forward", l, "down_proj output", at(L.down_pre), nD, act_);
    cuda::rmsnorm_forward(at(L.down_pre), layer16_ + off.post_mlp_norm, norm_offset_, x_out,
                          at<float>(L.rstd_down), n, D, eps, act_, kCompute);
    check("forward", l, "post_feedforward_layernorm output", x_out, nD, act_);
  } else {
    linear_forward(l, Proj::kDown, at(L.act), x_out, params, n, train, lkey);
    check("forward", l, "down_proj output", x_out, nD, act_);
  }
  if (rscale != 1.0f) cuda::scale(x_out, x_out, rscale, nD, act_, kCompute);
  cuda::add_inplace(x_out, at(L.x_mid), nD, act_, kCompute);
  check("forward", l, "down_proj output + residual", x_out, nD, act_);
}

// lm_head + cross-entropy over row chunks; with backward, leaves d(loss)/d(x_final) in dx.
void CudaTransformer::head(const Batch& b, bool backward, float grad_scale, float* logits_out) {
  const int n = b.batch * b.seq_len;
  const int D = m_.dim, V = m_.vocab_size;
  const int chunk = plan_.chunk_rows;
  const std::int32_t* targets = at<std::int32_t>(plan_.targets);
  double* loss_sum = at<double>(plan_.loss_sum);
  cuda::device_memset(loss_sum, 0, sizeof(double));
  void* logits = at(plan_.logits);
  for (int r0 = 0; r0 < n; r0 += chunk) {
    const int rows = std::min(chunk, n - r0);
    // logits[rows, V] = alpha hf[rows, D] lm_head^T (alpha: 1 / Granite's logits_scaling)
    cuda::GemmArgs fwd =
        matmul(Trans::kYes, rows, V, D, offset(at(plan_.hf), std::size_t(r0) * D, act_), D,
               lm_head_act_, D, logits, V, act_);
    fwd.alpha = logits_alpha(m_);
    cuda::gemm(*lt_, fwd, kCompute);
    check("forward", m_.n_layers - 1, "lm_head logits (rows from " + std::to_string(r0) + ")",
          logits, std::size_t(rows) * V, act_);
    if (logits_out) {
      const std::size_t elems = std::size_t(rows) * V;
      cuda::copy_device_to_host(logits_host_.data(), logits, elems * dtype_size(act_));
      float* out = logits_out + std::size_t(r0) * V;
      decode_to_float(logits_host_.data(), act_, elems, out);
      // The model's logits, capped as transformers returns them (from the stored dtype, in fp32).
      const float cap = logit_softcap(m_);
      for (std::size_t i = 0; i < elems; ++i) out[i] = softcapped(out[i], cap);
    }
    cuda::cross_entropy_forward_backward(logits, targets + r0, backward ? logits : nullptr,
                                         at<float>(plan_.row_loss), loss_sum, rows, V, grad_scale,
                                         logit_softcap(m_), act_, kCompute);
    if (backward) {
      check("backward", m_.n_layers - 1, "grad of the logits (cross-entropy)", logits,
            std::size_t(rows) * V, act_);
      // dhf[rows, D] = alpha dlogits[rows, V] lm_head[V, D]
      cuda::GemmArgs bwd = matmul(Trans::kNo, rows, D, V, logits, V, lm_head_act_, D,
                                  offset(at(plan_.dh), std::size_t(r0) * D, act_), D, act_);
      bwd.alpha = logits_alpha(m_);
      cuda::gemm(*lt_, bwd, kCompute);
    }
  }
  if (backward) {
    cuda::rmsnorm_backward(at(plan_.dh), at(plan_.x_final), at<half_bits>(plan_.final_norm),
                           norm_offset_, at<float>(plan_.rstdf), at(plan_.dx), n, D, act_,
                           kCompute);
    check("backward", m_.n_layers - 1, "grad of the final norm input", at(plan_.dx),
          std::size_t(n) * D, act_);
  }
}

void CudaTransformer::backward(const Batch& b, const float* params, float* grads) {
  const int n = b.batch * b.seq_len;
  const int D = m_.dim, F = m_.ffn_dim, H = m_.n_heads, KV = m_.n_kv_heads, hd = m_.head_dim();
  const std::size_t nD = std::size_t(n) * D, nF = std::size_t(n) * F;
  const std::size_t nq = std::size_t(n) * H * hd, nkv = std::size_t(n) * KV * hd;
  const std::int32_t* pos = at<std::int32_t>(plan_.positions);
  const std::int32_t* seg = has_segments_ ? at<std::int32_t>(plan_.segments) : nullptr;
  const LayerOffsets& off = base_.offsets();
  void *dx = at(plan_.dx), *dh = at(plan_.dh), *dtmp = at(plan_.dtmp), *datt = at(plan_.datt);
  void *dq = at(plan_.dq), *dk = at(plan_.dk), *dv = at(plan_.dv);
  void *dgate = at(plan_.dgate), *dup = at(plan_.dup), *dact = at(plan_.dact);

  // dx holds the gradient of the residual stream leaving the current layer.
  for (int l = m_.n_layers - 1; l >= 0; --l) {
    const CudaLayerSlots& L = plan_.layers[l];
    stage_layer(l, l - 1);  // prefetch the layer below
    if (plan_.recompute_layers) {
      // Gradient checkpointing: this layer's activations again, from its saved input. Its
      // output goes to dtmp, free until the MLP backward below.
      forward_layer(l, dtmp, b, params, last_train_, last_dropout_key_);
    }
    const void* h1 = m_.input_norms ? at(L.h1) : at(L.x_in);  // as forward_layer read them
    const void* h2 = m_.input_norms ? at(L.h2) : at(L.x_mid);
    // MLP half. With sandwich norms, down_proj's output gradient comes through its RMSNorm
    // (into dh, free until the gate / up backward below).
    const void* ddown = dx;
    if (m_.sandwich_norms) {
      cuda::rmsnorm_backward(dx, at(L.down_pre), layer16_ + off.post_mlp_norm, norm_offset_,
                             at<float>(L.rstd_down), dh, n, D, act_, kCompute);
      check("backward", l, "grad of down_proj output (post_feedforward_layernorm)", dh, nD, act_);
      ddown = dh;
    }
    // Granite: the branch's output was scaled by residual_multiplier, so is its gradient.
    const float rscale = residual_scale(m_);
    if (rscale != 1.0f) {
      cuda::scale(dh, ddown, rscale, nD, act_, kCompute);
      ddown = dh;
    }
    linear_backward(l, Proj::kDown, at(L.act), ddown, dact, params, grads, n);
    check("backward", l, "grad of act(gate) * up (down_proj backward)", dact, nF, act_);
    cuda::glu_backward(glu_, dact, at(L.gate), at(L.up), dgate, dup, nF, act_, kCompute);
    check("backward", l, "grad of gate_proj output (act(gate) * up backward)", dgate, nF, act_);
    check("backward", l, "grad of up_proj output (act(gate) * up backward)", dup, nF, act_);
    linear_backward(l, Proj::kGate, h2, dgate, dh, params, grads, n);
    check("backward", l, "grad of h2 through gate_proj", dh, nD, act_);
    linear_backward(l, Proj::kUp, h2, dup, dtmp, params, grads, n);
    check("backward", l, "grad of h2 through up_proj", dtmp, nD, act_);
    cuda::add_inplace(dh, dtmp, nD, act_, kCompute);
    if (m_.input_norms) {
      cuda::rmsnorm_backward(dh, at(L.x_mid), layer16_ + off.mlp_norm, norm_offset_,
                             at<float>(L.rstd2), dtmp, n, D, act_, kCompute);
      check("backward", l, "grad of x_mid through post_attention_layernorm", dtmp, nD, act_);
      cuda::add_inplace(dx, dtmp, nD, act_, kCompute);  // dx is now d(x_mid)
    } else {
      cuda::add_inplace(dx, dh, nD, act_, kCompute);  // (OLMo 2: h2 is x_mid)
    }
    check("backward", l, "grad of x_mid", dx, nD, act_);
    // Attention half (o_proj's output gradient likewise through its norm, into dh).
    const void* d_o = dx;
    if (m_.sandwich_norms) {
      cuda::rmsnorm_backward(dx, at(L.o_pre), layer16_ + off.post_attn_norm, norm_offset_,
                             at<float>(L.rstd_o), dh, n, D, act_, kCompute);
      check("backward", l, "grad of o_proj output (post_attention_layernorm)", dh, nD, act_);
      d_o = dh;
    }
    if (rscale != 1.0f) {
      cuda::scale(dh, d_o, rscale, nD, act_, kCompute);
      d_o = dh;
    }
    linear_backward(l, Proj::kO, at(L.att), d_o, datt, params, grads, n);
    check("backward", l, "grad of attention output (o_proj backward)", datt, nq, act_);
    cuda::attention_backward(datt, at(L.q), at(L.k), at(L.v), at(L.att), at<float>(L.lse), seg,
                             attention_window(m_, l), attention_score_scale<float>(m_),
                             attention_softcap(m_), dq, dk, dv, at(plan_.attention_work),
                             plan_.attention_work.bytes, b.batch, b.seq_len, H, KV, hd, act_,
                             kCompute);
    check("backward", l, "grad of q (attention backward)", dq, nq, act_);
    check("backward", l, "grad of k (attention backward)", dk, nkv, act_);
    check("backward", l, "grad of v (attention backward)", dv, nkv, act_);
    if (rope_.rotates(l)) {
      const float* inv_freq =
          rope_.inv_freq(l, rope_long_);  // Gemma 3's sliding layers: their own table
      const float rope_cs = rope_.cos_sin_scale(l);
      const int rotary = m_.rotary_dim();  // partial rotary: the first channels only
      cuda::rope_backward(dq, pos, n, H, hd, rotary, inv_freq, rope_cs, act_, kCompute);
      cuda::rope_backward(dk, pos, n, KV, hd, rotary, inv_freq, rope_cs, act_, kCompute);
      check("backward", l, "grad of q (RoPE backward)", dq, nq, act_);
      check("backward", l, "grad of k (RoPE backward)", dk, nkv, act_);
    }
    void* dq_proj = dq;  // the gradient of q_proj's output
    void* dk_proj = dk;
    if (m_.qk_norm) {
      dq_proj = at(plan_.dq_pre);
      dk_proj = at(plan_.dk_pre);
      const NormRows qr = qk_norm_rows(m_, n, H), kr = qk_norm_rows(m_, n, KV);
      cuda::rmsnorm_backward(dq, at(L.q_pre), layer16_ + off.q_norm, norm_offset_,
                             at<float>(L.rstd_q), dq_proj, qr.rows, qr.width, act_, kCompute);
      check("backward", l, "grad of q_proj output (q_norm backward)", dq_proj, nq, act_);
      cuda::rmsnorm_backward(dk, at(L.k_pre), layer16_ + off.k_norm, norm_offset_,
                             at<float>(L.rstd_k), dk_proj, kr.rows, kr.width, act_, kCompute);
      check("backward", l, "grad of k_proj output (k_norm backward)", dk_proj, nkv, act_);
    }
    linear_backward(l, Proj::kQ, h1, dq_proj, dh, params, grads, n);
    check("backward", l, "grad of h1 through q_proj", dh, nD, act_);
    linear_backward(l, Proj::kK, h1, dk_proj, dtmp, params, grads, n);
    check("backward", l, "grad of h1 through k_proj", dtmp, nD, act_);
    cuda::add_inplace(dh, dtmp, nD, act_, kCompute);
    linear_backward(l, Proj::kV, h1, dv, dtmp, params, grads, n);
    check("backward", l, "grad of h1 through v_proj", dtmp, nD, act_);
    cuda::add_inplace(dh, dtmp, nD, act_, kCompute);
    if (m_.input_norms) {
      cuda::rmsnorm_backward(dh, at(L.x_in), layer16_ + off.attn_norm, norm_offset_,
                             at<float>(L.rstd1), dtmp, n, D, act_, kCompute);
      check("backward", l, "grad of x_in through input_layernorm", dtmp, nD, act_);
      cuda::add_inplace(dx, dtmp, nD, act_, kCompute);  // dx is now d(x_in)
    } else {
      cuda::add_inplace(dx, dh, nD, act_, kCompute);  // (OLMo 2: h1 is x_in)
    }
    check("backward", l, "grad of the layer input", dx, nD, act_);
    if (layer_backward_hook_) layer_backward_hook_(l);
  }
  // The embedding is frozen: the gradient stops here.
}

double CudaTransformer::read_loss() const {
  double loss = 0;
  cuda::copy_device_to_host(&loss, at<double>(plan_.loss_sum), sizeof(loss));  // syncs
  return loss;
}

double CudaTransformer::train_micro_batch(const Batch& b, const float* params, float* grads,
                                          float grad_scale, std::uint64_t dropout_key,
                                          float* logits_out) {
  upload_batch(b);
  forward(b, params, /*train=*/true, dropout_key);
  head(b, /*backward=*/true, grad_scale, logits_out);
  backward(b, params, grads);
  return read_loss();  // after backward is queued: one host sync per micro-batch
}

double CudaTransformer::eval_micro_batch(const Batch& b, const float* params, float* logits_out) {
  upload_batch(b);
  forward(b, params, /*train=*/false, 0);
  head(b, /*backward=*/false, 0.0f, logits_out);
  return read_loss();
}

}  // namespace peftrun

#endif  // PEFTRUN_WITH_CUDA
