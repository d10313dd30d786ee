// The device half of a training step behind one interface, so the trainer (trainer.cpp) reads
// the same for every backend: the model's forward + backward of a micro-batch, and the passes
// over the flat trainable buffers (gradient norm, AdamW, AdaLoRA's regulariser and importance).
//
//   CpuTrainingBackend   works on the host TrainState itself with Transformer<float>: exactly
//                        the computation the trainer did before backends existed
//   CudaTrainingBackend  params, grads, AdamW moments and AdaLoRA's EMAs in device memory
//                        (one planned allocation), CudaTransformer; the host TrainState is a
//                        mirror, refreshed by pull_* only for checkpoints, exports and --debug
//
// grads() is the backend's own memory (host or device): the trainer hands it to the
// communicator, whose bulk calls take exactly that memory (MPI/Local: host; NCCL: device).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "configs/config.h"
#include "kernels/adamw.h"
#include "runtime/adapters/adalora_allocator.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/model/base_weights.h"
#include "runtime/train/backend_choice.h"
#include "runtime/train/eval_model.h"
#include "runtime/train/train_state.h"

namespace peftrun {

class TrainingBackend : public EvalModel {
 public:
  // "cpu", or "cuda:0 (NVIDIA H200), bf16 compute" for the start-up line.
  virtual std::string describe() const = 0;
  // Memory the backend planned, for the start-up line ("activations 1.2 MiB" / the arena).
  virtual std::string memory_summary() const = 0;

  virtual float* grads() = 0;  // [layout.total()] in the backend's memory
  virtual void zero_grads() = 0;
  // Forward + backward of one micro-batch into grads(); returns the sum of token losses.
  virtual double train_micro_batch(const Batch& b, float grad_scale, std::uint64_t dropout_key) = 0;
  virtual void set_layer_backward_hook(std::function<void(int layer)> hook) = 0;
  virtual std::size_t gathered_bytes() const = 0;

  // After the gradient all-reduce. grad_scale: the factor grads() carries (the fp16 loss
  // scale; 1 otherwise).
  virtual double add_adalora_orth_regulariser(const AdapterConfig& adapter, double grad_scale) = 0;
  virtual double grad_sum_squares() = 0;  // sum of grads()^2 in double
  virtual void adamw_step(const AdamWHyper& h) = 0;
  // AdaLoraAllocator::update_and_allocate's step, with `grad_scale` the factor that turns
  // grads() into the clipped gradient.
  virtual void adalora_step(AdaLoraAllocator& allocator, int step, double grad_scale) = 0;
  // --debug after a step: "NAME" of the first trainable tensor holding a non-finite value, or
  // "" when all are finite.
  virtual std::string first_nonfinite_param() = 0;

  // Host mirror: everything a checkpoint holds (params, moments, AdaLoRA EMAs) / the params
  // only (an export); push_state uploads the host state (start, resume).
  virtual void pull_state() = 0;
  virtual void pull_params() = 0;
  virtual void push_state() = 0;

  // Once per optimizer step, after it (the CUDA backend samples its memory use here).
  virtual void end_of_step() {}
  // Lines for the end of the run (peak device memory, allocations in the step loop); "" = none.
  virtual std::string end_of_run_report() const { return ""; }
  // Device allocations made since the backend was built (-1: not a device backend).
  virtual long long device_allocations_since_start() const { return -1; }
};

struct BackendSetup {
  const Config* config = nullptr;
  const BaseWeights* base = nullptr;
  const AdapterLayout* layout = nullptr;
  TrainState* state = nullptr;     // params sized; grads / moments sized by the caller
  Communicator* comm = nullptr;    // the base is gathered over it when sharded
  int max_batch = 1, seq_len = 1;  // planned micro-batch shape
  // Keep only the layer inputs and recompute each layer before its backward
  // (runtime.gradient_checkpointing; always for a model that only evaluates).
  bool recompute_layers = false;
  // Ranks on this machine (the launcher's local size; 1 when it does not say): the CPU
  // backend's memory check gives each its share of the host's memory.
  int local_ranks = 1;
  bool debug = false;
  // cuBLASLt fallbacks are reported here once each, and (CUDA) why AdaLoRA's orthogonality
  // regulariser runs on the host when it does.
  std::ostream* log = nullptr;
};

// The setup for one config: the model's micro-batch shape from train.micro_batch_size and
// data.seq_len.
BackendSetup backend_setup(const Config& config, const BaseWeights& base,
                           const AdapterLayout& layout, TrainState& state, Communicator* comm,
                           std::ostream* log);

// The backend `choice` names. Throws std::runtime_error when the CUDA backend is asked for but
// not built, or when several CUDA ranks lack the NCCL communicator.
std::unique_ptr<TrainingBackend> make_training_backend(const BackendChoice& choice,
                                                       const BackendSetup& setup);

std::unique_ptr<TrainingBackend> make_cpu_training_backend(const BackendSetup& setup);

// The CPU backend's pre-flight check: "" when the model `setup` describes fits in this rank's
// share of the host's memory (host_memory.h), else the refusal with the numbers. Callers run it
// before make_training_backend and agree on it over the ranks, as the model's constructor may
// already take part in collectives (a sharded base's gathers).
std::string cpu_memory_problem(const BackendSetup& setup);
#if PEFTRUN_WITH_CUDA
std::unique_ptr<TrainingBackend> make_cuda_training_backend(const BackendSetup& setup,
                                                            DType compute);
#endif

}  // namespace peftrun
