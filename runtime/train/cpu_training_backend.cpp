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

std::string cpu_memory_problem(const BackendSetup& s) {
  const std::optional<std::size_t> available = host_memory_available();
  if (!available) return "";
  const auto need = [&s](bool recompute) {
    return Transformer<float>::planned_bytes(*s.base, *s.layout, s.config->adapter, s.max_batch,
                                             s.seq_len, recompute);
  };
  return host_memory_refusal(
      need(s.recompute_layers),
      s.recompute_layers ? std::nullopt : std::optional<std::size_t>(need(true)), *available,
      s.local_ranks, s.max_batch, s.seq_len);
}

std::unique_ptr<TrainingBackend> make_cpu_training_backend(const BackendSetup& setup) {
  return std::make_unique<CpuTrainingBackend>(setup);
}

}  // namespace peftrun
