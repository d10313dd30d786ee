#include "runtime/train/memory_plan.h"

#include <cstddef>
#include <optional>

#include "runtime/adapters/adapter_layout.h"
#include "runtime/model/arena_plan.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/transformer.h"
#include "runtime/train/host_memory.h"

#if PEFTRUN_WITH_CUDA
#include "kernels/dtype.h"
#include "runtime/model/cuda_model_plan.h"
#include "runtime/train/backend_choice.h"
#include "runtime/train/cuda_state_plan.h"
#endif

namespace peftrun {

namespace {

// The one in effect, then the other: "1.2 GiB (with runtime.gradient_checkpointing: true 300 MiB)".
std::string both(std::size_t kept, std::size_t recomputed, bool checkpointing) {
  return checkpointing ? format_bytes(recomputed) + " (without gradient checkpointing " +
                             format_bytes(kept) + ")"
                       : format_bytes(kept) + " (with runtime.gradient_checkpointing: true " +
                             format_bytes(recomputed) + ")";
}

}  // namespace

std::string memory_plan_comment(const Config& config) {
  const ModelConfig& m = config.model;
  const AdapterLayout layout = AdapterLayout::plan(m, config.adapter);
  const int B = config.train.micro_batch_size, T = config.data.seq_len;
  const bool ckpt = config.runtime.gradient_checkpointing;
  const LayerOffsets offsets = LayerOffsets::for_model(m, m.proj_bias_mask);
  const std::size_t base_bytes = BaseWeights::bytes_for(m, offsets);

  std::string out = "# planned memory, one rank, train.micro_batch_size " + std::to_string(B) +
                    " x data.seq_len " + std::to_string(T) + ":\n";
  out += "#   fp16 base weights " + format_bytes(base_bytes) +
         " (with several ranks and runtime.shard_base, 1/ranks of the layers each)\n";
  const auto cpu = [&](bool recompute) {
    return Transformer<float>::planned_bytes(m, layout, config.adapter, B, T, recompute);
  };
  out += "#   cpu: model buffers " + both(cpu(false), cpu(true), ckpt) + ", trainable state " +
         format_bytes(layout.total() * sizeof(float) * 4) + "\n";
#if PEFTRUN_WITH_CUDA
  const DType act = cuda_compute_dtype(config.runtime.compute_dtype);
  const auto device = [&](bool recompute) {
    const CudaModelSpec spec =
        cuda_model_spec(m, offsets, layout, config.adapter.dropout > 0, B, T, act, recompute);
    return plan_cuda_model(spec).arena.total_bytes() +
           plan_cuda_train_state(layout).arena.total_bytes();
  };
  out += std::string("#   cuda (") + dtype_name(act) + " compute): device arenas " +
         both(device(false), device(true), ckpt) +
         " (the fp16 base included; CUDA context and libraries not)\n";
#endif
  if (const std::optional<std::size_t> available = host_memory_available()) {
    out += "#   host memory available here " + format_bytes(*available) + "\n";
  }
  return out;
}

}  // namespace peftrun
