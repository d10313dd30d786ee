// The LLaMA-family decoder with adapters on the GPU: the device twin of Transformer<float>
// (runtime/model/transformer.h), with the same explicit forward and backward, block by block,
// and the same Batch. Plain C++ over the peftrun::cuda:: op API (no CUDA headers here); defined
// only in CUDA builds.
//
//   tokens [B,T] -> embedding -> N x block -> RMSNorm -> lm_head -> cross-entropy
//   block:  x += o_proj(attn(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))),  h = rmsnorm(x)
//           x += down_proj(silu(gate_proj(h)) * up_proj(h)),                    h = rmsnorm(x)
//
// Memory: every buffer is a region of ONE device allocation planned at construction
// (runtime/model/cuda_model_plan.h); nothing is allocated afterwards. The frozen base is fp16
// on the device (each layer resident, or, sharded, this rank's slice of it plus two gather
// slots). Activations and their gradients are stored in the compute dtype `act` (fp32, fp16 or
// bf16); every matmul accumulates in fp32. For act != fp16 a layer's weights are converted into
// one staging buffer just before use (the CPU model's seam), as cuBLASLt cannot mix bf16 and
// fp16 inputs; RMSNorm reads the fp16 norm weights directly. Trainable parameters and gradients
// are the trainer's flat fp32 DEVICE buffers, passed per call.
//
// Gradient checkpointing (`recompute_layers`): the plan gives every layer its own x_in but one
// shared set of the other activation slots, and backward recomputes a layer's forward into it
// just before that layer's backward (deterministic, so the results are those of a run that
// keeps every layer's activations). See runtime/model/transformer.h.
//
// Streams and syncs: every op runs on the legacy default stream (the compute stream), in
// order. A sharded layer is all-gathered by the NCCL communicator on its own stream into the
// slot not in use while the current layer computes; the compute stream waits for it on the
// device (NcclCommunicator::stream_wait), the host never does. The host syncs once per
// micro-batch, reading the loss; --debug syncs after every op.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "configs/config.h"
#include "kernels/activations.h"
#include "kernels/blaslt.h"
#include "kernels/dtype.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/cuda_model_plan.h"
#include "runtime/model/device_arena.h"
#include "runtime/model/rope_table.h"
#include "runtime/model/transformer.h"

namespace peftrun {

class CudaTransformer {
 public:
  // Uploads the base to the current CUDA device (cuda::set_device first). `comm` is needed only
  // when `base` is sharded, and must then be the NCCL communicator (device buffers) of that
  // many ranks. Throws std::runtime_error naming the buffer when device memory runs out.
  CudaTransformer(const BaseWeights& base, const AdapterLayout& layout,
                  const AdapterConfig& adapter, int max_batch, int seq_len, DType act,
                  Communicator* comm = nullptr, bool recompute_layers = false);
  ~CudaTransformer();
  CudaTransformer(const CudaTransformer&) = delete;
  CudaTransformer& operator=(const CudaTransformer&) = delete;

  // As Transformer<float>::train_micro_batch, with `params` and `grads` flat fp32 DEVICE
  // buffers (the layout's) and the Batch's arrays on the host (uploaded here). Returns the SUM
  // of token losses; adds d(grad_scale * loss_sum)/d(params) into grads. With fp16 compute the
  // caller folds the loss scale into grad_scale. `logits_out` (host, optional) receives the
  // logits [batch * seq_len, vocab] as fp32.
  double train_micro_batch(const Batch& b, const float* params, float* grads, float grad_scale,
                           std::uint64_t dropout_key, float* logits_out = nullptr);

  // Forward only, no dropout. Returns the sum of token losses.
  double eval_micro_batch(const Batch& b, const float* params, float* logits_out = nullptr);

  // Called after layer l's backward has queued its adapter gradients (layers from the last down
  // to 0): the trainer starts the NCCL bucket all-reduces from here (the communication stream
  // waits for the queued work before reading them).
  void set_layer_backward_hook(std::function<void(int layer)> hook) {
    layer_backward_hook_ = std::move(hook);
  }

  // --debug: synchronise after every op and check its output (and, in backward, the adapter
  // gradients it accumulated) for non-finite values, failing with the op, layer and tensor.
  void set_debug_checks(bool on) { debug_checks_ = on; }

  // cuBLASLt fallbacks (e.g. no alpha-vector algorithm for DoRA on a shape), once each.
  void set_fallback_listener(cuda::BlasLt::FallbackListener listener);

  const CudaModelPlan& plan() const { return plan_; }
  std::size_t arena_bytes() const { return plan_.arena.total_bytes(); }
  std::size_t activation_bytes() const { return plan_.arena.group_bytes("activations"); }
  // fp16 bytes this rank received through layer all-gathers so far (0 when not sharded).
  std::size_t gathered_bytes() const { return gathered_bytes_; }
  int vocab_size() const { return m_.vocab_size; }
  DType compute_dtype() const { return act_; }

 private:
  struct GatherSlot {
    int layer = -1;          // the layer it holds or is receiving
    std::size_t handle = 0;  // the all_gather that fills it (0 = complete or none)
  };

  template <typename T = void>
  T* at(const ArenaSlot& s) const {
    return arena_.at<T>(s);
  }
  void upload_batch(const Batch& b);
  void forward(const Batch& b, const float* params, bool train, std::uint64_t dropout_key);
  void forward_layer(int l, void* x_out, const Batch& b, const float* params, bool train,
                     std::uint64_t dropout_key);
  void head(const Batch& b, bool backward, float grad_scale, float* logits_out);
  void backward(const Batch& b, const float* params, float* grads);
  double read_loss() const;
  void stage_layer(int l, int next = -1);
  void begin_gather(int l);
  void linear_forward(int l, Proj p, const void* x, void* y, const float* params, int n, bool train,
                      std::uint64_t layer_key);
  void linear_backward(int l, Proj p, const void* x, const void* dy, void* dx, const float* params,
                       float* grads, int n);
  // --debug only: sync, then fail on the first non-finite element of x[0..n) of type `type`.
  void check(const char* pass, int layer, const std::string& tensor, const void* x, std::size_t n,
             DType type) const;
  void check_adapter_grads(int l, Proj p, const float* grads) const;

  const BaseWeights& base_;
  const AdapterLayout& layout_;
  ModelConfig m_;
  LayerRope rope_;                            // each layer's RoPE table and cos/sin scale
  bool rope_long_ = false;                    // this micro-batch rotates with longrope's long table
  GluActivation glu_ = GluActivation::kSilu;  // model_constants.h, from m_
  float norm_offset_ = 0.0f;
  float dropout_ = 0;
  int max_batch_, seq_len_;
  DType act_;
  Communicator* comm_ = nullptr;

  CudaModelPlan plan_;
  DeviceArena arena_;
  std::unique_ptr<cuda::BlasLt> lt_;

  // The layer in use: its fp16 buffer (resident or a gather slot) and its weights in act (the
  // staging buffer, or the fp16 buffer itself for fp16 compute).
  const half_bits* layer16_ = nullptr;
  const void* layer_act_ = nullptr;
  const void* lm_head_act_ = nullptr;
  GatherSlot slots_[2];
  int current_layer_ = -1;
  std::size_t gathered_bytes_ = 0;
  // Which adapted modules the last forward applied dropout to ([layer][proj]).
  std::vector<std::vector<bool>> masked_;
  bool has_segments_ = false;
  // The last forward's mode and key: the recomputation must draw the same dropout masks.
  bool last_train_ = false;
  std::uint64_t last_dropout_key_ = 0;

  std::function<void(int)> layer_backward_hook_;
  bool debug_checks_ = false;
  std::vector<std::int32_t> default_positions_;
  std::vector<unsigned char> logits_host_;  // one chunk, for logits_out
};

}  // namespace peftrun
