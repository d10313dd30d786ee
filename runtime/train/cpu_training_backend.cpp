// The CPU backend: Transformer<float> over the host TrainState, with the CPU kernels for the
// flat-buffer passes. Every call is what the trainer computed before it had backends, in the
// same order, so CPU runs stay bit-identical.
#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/adamw.h"
#include "runtime/adapters/adalora_regulariser.h"
#include "runtime/model/arena_plan.h"
#include "runtime/model/transformer.h"
#include "runtime/train/host_memory.h"
#include "runtime/train/training_backend.h"

namespace peftrun {

namespace {

class CpuTrainingBackend final : public TrainingBackend {
 public:
  explicit CpuTrainingBackend(const BackendSetup& s)
      : st_(*s.state),
        layout_(*s.layout),
        model_(*s.base, *s.layout, s.config->adapter, s.max_batch, s.seq_len, s.comm,
               s.recompute_layers) {
    model_.set_debug_checks(s.debug);
  }

  std::string describe() const override { return "cpu"; }
  std::string memory_summary() const override {
    return "activations " + format_bytes(model_.activation_bytes()) +
           (model_.recomputes_layers() ? " (gradient checkpointing)" : "");
  }

  float* grads() override { return st_.grads.data(); }
  void zero_grads() override { std::fill(st_.grads.begin(), st_.grads.end(), 0.0f); }
  double train_micro_batch(const Batch& b, float grad_scale, std::uint64_t key) override {
    return model_.train_micro_batch(b, st_.params.data(), st_.grads.data(), grad_scale, key);
  }
  void set_layer_backward_hook(std::function<void(int)> hook) override {
    model_.set_layer_backward_hook(std::move(hook));
  }
  double eval_micro_batch(const Batch& b, float* logits_out) override {
    return model_.eval_micro_batch(b, st_.params.data(), logits_out);
  }
  int vocab_size() const override { return model_.vocab_size(); }
  std::size_t gathered_bytes() const override { return model_.gathered_bytes(); }

  double add_adalora_orth_regulariser(const AdapterConfig& adapter, double grad_scale) override {
    return peftrun::add_adalora_orth_regulariser(layout_, adapter, st_.params.data(),
                                                 st_.grads.data(), orth_work_, grad_scale);
  }
  double grad_sum_squares() override {
    return cpu::sum_squares(st_.grads.data(), st_.grads.size());
  }
  void adamw_step(const AdamWHyper& h) override {
    cpu::adamw_step(st_.params.data(), st_.grads.data(), st_.adam_m.data(), st_.adam_v.data(),
                    layout_.total(), h);
  }
  void adalora_step(AdaLoraAllocator& allocator, int step, double grad_scale) override {
    allocator.update_and_allocate(step, st_.params.data(), st_.grads.data(), grad_scale);
  }
  std::string first_nonfinite_param() override {
    for (const auto& t : layout_.tensors()) {
      for (std::size_t i = 0; i < t.numel(); ++i) {
        if (!std::isfinite(st_.params[t.offset + i])) return t.name;
      }
    }
    return "";
  }

  // The host state is the state.
  void pull_state() override {}
  void pull_params() override {}
  void push_state() override {}

 private:
  TrainState& st_;
  const AdapterLayout& layout_;
  Transformer<float> model_;
  std::vector<float> orth_work_;
};

}  // namespace

// A model whose buffers cannot fit is refused with the numbers (and what would fit) before
// anything is allocated; otherwise the kernel's OOM killer ends the run without a word.
void check_host_memory(const BackendSetup& s) {
  const std::optional<std::size_t> available = host_memory_available();
  if (!available) return;
  const auto need = [&s](bool recompute) {
    return Transformer<float>::planned_bytes(*s.base, *s.layout, s.config->adapter, s.max_batch,
                                             s.seq_len, recompute);
  };
  const std::size_t planned = need(s.recompute_layers);
  if (planned <= *available) return;
  std::string message = "runtime.device: cpu: the model's buffers for train.micro_batch_size " +
                        std::to_string(s.max_batch) + " x data.seq_len " +
                        std::to_string(s.seq_len) + " need " + format_bytes(planned) +
                        ", but only " + format_bytes(*available) +
                        " of host memory is available; expected ";
  if (!s.recompute_layers) {
    const std::size_t recomputed = need(true);
    message += "runtime.gradient_checkpointing: true (needs " + format_bytes(recomputed) +
               (recomputed <= *available ? ")" : ", still too much)") + ", or ";
  }
  throw std::runtime_error(message + "a smaller micro-batch or sequence length");
}

std::unique_ptr<TrainingBackend> make_cpu_training_backend(const BackendSetup& setup) {
  check_host_memory(setup);
  return std::make_unique<CpuTrainingBackend>(setup);
}

}  // namespace peftrun
