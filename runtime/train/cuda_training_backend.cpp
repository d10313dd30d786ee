// The CUDA backend: CudaTransformer plus the trainer's flat state in device memory
// (cuda_state_plan.h). Per optimizer step the host reads a handful of scalars (each
// micro-batch's loss, the gradient norm, AdaLoRA's per-matrix orthogonality norms); the state
// comes back to the host only for checkpoints and exports (pull_*). AdaLoRA's orthogonality
// term runs on the device (cuda::adalora_orth_reg, one launch over a descriptor table uploaded
// at start); only for a rank above the kernel's bound (kAdaLoraOrthMaxRank) does it fall back to
// the host function over copies of the parameters and gradients, which is logged once.
#include "runtime/train/training_backend.h"

#if PEFTRUN_WITH_CUDA

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <stdexcept>
#include <vector>

#include "kernels/adalora.h"
#include "kernels/adamw.h"
#include "kernels/cuda_memory.h"
#include "kernels/device.h"
#include "kernels/elementwise.h"
#include "kernels/nonfinite.h"
#include "runtime/adapters/adalora_regulariser.h"
#include "runtime/model/cuda_transformer.h"
#include "runtime/model/device_arena.h"
#include "runtime/train/cuda_state_plan.h"

#if PEFTRUN_WITH_NCCL
#include "comm/nccl_communicator.h"
#endif

namespace peftrun {

namespace {

constexpr cuda::Stream kCompute = nullptr;  // CudaTransformer's stream: everything in order

// The CUDA device of this process: the NCCL communicator's (chosen from the local rank when it
// was created), else device 0 of what CUDA_VISIBLE_DEVICES shows.
int training_device(Communicator* comm) {
#if PEFTRUN_WITH_NCCL
  if (auto* nccl = dynamic_cast<NcclCommunicator*>(comm)) return nccl->device();
#endif
    // On the emulated device, device memory is host memory: the host communicator (MPI) reduces
    // it directly, and every rank uses device 0.
#if !PEFTRUN_CUDA_EMULATION
  if (comm && comm->world_size() > 1) {
    throw std::runtime_error(
        "runtime.device: cuda with " + std::to_string(comm->world_size()) +
        " ranks needs the NCCL communicator (gradients are all-reduced in device memory), got '" +
        comm->backend() + "'");
  }
#endif
  return 0;
}

class CudaTrainingBackend final : public TrainingBackend {
 public:
  CudaTrainingBackend(const BackendSetup& s, DType compute)
      : cfg_(*s.config), st_(*s.state), layout_(*s.layout), device_(training_device(s.comm)) {
    cuda::set_device(device_);
    plan_ = plan_cuda_train_state(layout_);
    arena_ = DeviceArena(plan_.arena);
    model_ = std::make_unique<CudaTransformer>(*s.base, layout_, cfg_.adapter, s.max_batch,
                                               s.seq_len, compute, s.comm, s.recompute_layers);
    model_->set_debug_checks(s.debug);
    if (std::ostream* log = s.log) {
      model_->set_fallback_listener(
          [log](const std::string& what) { *log << "cuBLASLt fallback: " << what << "\n"; });
    }
    describe_ = "cuda:" + std::to_string(device_) + " " + cuda_device_description(device_) + ", " +
                dtype_name(compute) + " compute";
    if (layout_.type() == AdapterType::kAdaLora) {
      std::vector<std::uint64_t> e(layout_.modules().size());
      for (std::size_t i = 0; i < e.size(); ++i) e[i] = layout_.modules()[i].e;
      cuda::copy_host_to_device(at(plan_.e_offsets), e.data(), e.size() * sizeof(e[0]));
      setup_orth_regulariser(s.log);
    }
    zero_grads();
    cuda::synchronize();
    allocations_at_start_ = cuda::device_allocation_count();
    peak_in_use_ = cuda::device_bytes_in_use();
  }

  std::string describe() const override { return describe_; }
  std::string memory_summary() const override {
    return "device arenas " + format_bytes(model_->arena_bytes() + plan_.arena.total_bytes()) +
           " (" + model_->plan().arena.summary() + ", " + plan_.arena.summary() + ")" +
           (model_->plan().recompute_layers ? ", gradient checkpointing" : "");
  }

  float* grads() override { return at<float>(plan_.grads); }
  void zero_grads() override { cuda::device_memset(grads(), 0, plan_.grads.bytes); }
  double train_micro_batch(const Batch& b, float grad_scale, std::uint64_t key) override {
    return model_->train_micro_batch(b, params(), grads(), grad_scale, key);
  }
  void set_layer_backward_hook(std::function<void(int)> hook) override {
    model_->set_layer_backward_hook(std::move(hook));
  }
  double eval_micro_batch(const Batch& b, float* logits_out) override {
    return model_->eval_micro_batch(b, params(), logits_out);
  }
  int vocab_size() const override { return model_->vocab_size(); }
  std::size_t gathered_bytes() const override { return model_->gathered_bytes(); }

  double add_adalora_orth_regulariser(const AdapterConfig& adapter, double grad_scale) override {
    const std::size_t matrices = orth_norms_.size();
    if (adapter.orth_reg_weight <= 0 || matrices == 0) return 0;
    if (orth_on_host_) {
      // Ranks above the kernel's bound: on the host, over copies, exactly the CPU's function.
      download(st_.params, plan_.params);
      download(st_.grads, plan_.grads);
      const double term = peftrun::add_adalora_orth_regulariser(
          layout_, adapter, st_.params.data(), st_.grads.data(), orth_work_, grad_scale);
      cuda::copy_host_to_device(grads(), st_.grads.data(), plan_.grads.bytes);
      return term;
    }
    // One launch for every A and B; the host reads back one double per matrix and forms the
    // term in the CPU function's order.
    double* norms = at<double>(plan_.orth_norms);
    cuda::adalora_orth_reg(params(), grads(), at<AdaLoraOrthMatrix>(plan_.orth_matrices),
                           static_cast<int>(matrices), orth_max_rank_,
                           adalora_orth_weight(adapter, matrices, grad_scale), norms, kCompute);
    cuda::copy_device_to_host(orth_norms_.data(), norms, plan_.orth_norms.bytes);
    return adalora_orth_term(adapter, orth_norms_.data(), matrices);
  }
  double grad_sum_squares() override {
    double* result = at<double>(plan_.sum_squares);
    cuda::sum_squares(grads(), layout_.total(), result, at(plan_.sum_squares_work), kCompute);
    double sum = 0;
    cuda::copy_device_to_host(&sum, result, sizeof(sum));
    return sum;
  }
  void adamw_step(const AdamWHyper& h) override {
    cuda::adamw_step(params(), grads(), at<float>(plan_.adam_m), at<float>(plan_.adam_v),
                     layout_.total(), h, kCompute);
  }

  // AdaLoRA: the EMAs and the triplet scores on the device, the ranking and the mask on the
  // host (AdaLoraAllocator, identical on every rank), the pruned E zeroed on the device.
  void adalora_step(AdaLoraAllocator& a, int step, double grad_scale) override {
    const AdaLoraStepPlan plan = a.plan_step(step);
    float* ipt = at<float>(plan_.ipt_ema);
    float* unc = at<float>(plan_.unc_ema);
    if (plan.update_ema) {
      // Over the whole flat buffer at once: outside A, B and E (the alignment padding) params
      // and grads are 0, so those EMAs stay exactly 0, as the CPU's per-tensor loop leaves them.
      cuda::adalora_update_importance(params(), grads(), ipt, unc, layout_.total(),
                                      cfg_.adapter.beta1, cfg_.adapter.beta2, grad_scale, kCompute);
    }
    if (plan.mask) {
      float* scores = at<float>(plan_.scores);
      std::size_t at_score = 0;
      for (const AdaptedModule& m : layout_.modules()) {
        const AdaLoraModuleView view{m.a, m.b, m.e, m.r, m.shape.in, m.shape.out};
        cuda::adalora_triplet_scores(ipt, unc, view, scores + at_score, kCompute);
        at_score += std::size_t(m.r);
      }
      cuda::copy_device_to_host(a.scores_buffer(), scores, plan_.scores.bytes);
      a.decide_mask(plan.budget);
      upload_mask(a);
      zero_pruned_e();
    }
    if (plan.fix) {
      a.fix_pattern();
      cuda::device_memset(ipt, 0, plan_.ipt_ema.bytes);
      cuda::device_memset(unc, 0, plan_.unc_ema.bytes);
    }
    if (plan.reapply) zero_pruned_e();
  }

  std::string first_nonfinite_param() override {
    NonfiniteReport* report = at<NonfiniteReport>(plan_.report);
    for (const TrainableTensor& t : layout_.tensors()) {
      cuda::nonfinite_reset(report, kCompute);
      cuda::nonfinite_scan(params() + t.offset, DType::kF32, t.numel(), report, kCompute);
      NonfiniteReport found;
      cuda::copy_device_to_host(&found, report, sizeof(found));
      if (found.found()) return t.name;
    }
    return "";
  }

  void pull_state() override {
    download(st_.params, plan_.params);
    download(st_.adam_m, plan_.adam_m);
    download(st_.adam_v, plan_.adam_v);
    if (st_.allocator) {
      AdaLoraState& s = st_.allocator->state();
      download(s.ipt_ema, plan_.ipt_ema);
      download(s.unc_ema, plan_.unc_ema);
    }
  }
  void pull_params() override { download(st_.params, plan_.params); }
  void push_state() override {
    upload(st_.params, plan_.params);
    upload(st_.adam_m, plan_.adam_m);
    upload(st_.adam_v, plan_.adam_v);
    if (st_.allocator) {
      const AdaLoraState& s = st_.allocator->state();
      upload(s.ipt_ema, plan_.ipt_ema);
      upload(s.unc_ema, plan_.unc_ema);
      upload_mask(*st_.allocator);
    }
  }

  void end_of_step() override {
    peak_in_use_ = std::max(peak_in_use_, cuda::device_bytes_in_use());
  }
  std::string end_of_run_report() const override {
    return "device memory: arenas " +
           format_bytes(model_->arena_bytes() + plan_.arena.total_bytes()) + ", peak in use " +
           format_bytes(peak_in_use_) +
           " (cudaMemGetInfo: the whole device, CUDA context and libraries included); device "
           "allocations after start-up: " +
           std::to_string(device_allocations_since_start()) + "\n";
  }
  long long device_allocations_since_start() const override {
    return static_cast<long long>(cuda::device_allocation_count() - allocations_at_start_);
  }

 private:
  template <typename T = void>
  T* at(const ArenaSlot& s) const {
    return arena_.at<T>(s);
  }
  float* params() { return at<float>(plan_.params); }

  // Host vector <-> a state slot of the same size (an empty vector means "not held").
  void download(std::vector<float>& host, const ArenaSlot& slot) {
    host.resize(slot.bytes / sizeof(float));
    cuda::copy_device_to_host(host.data(), at(slot), slot.bytes);
  }
  void upload(const std::vector<float>& host, const ArenaSlot& slot) {
    if (host.size() * sizeof(float) != slot.bytes) {
      throw std::invalid_argument("CudaTrainingBackend: host state of " +
                                  std::to_string(host.size()) + " floats for a device buffer of " +
                                  std::to_string(slot.bytes / sizeof(float)));
    }
    cuda::copy_host_to_device(at(slot), host.data(), slot.bytes);
  }
  void upload_mask(const AdaLoraAllocator& a) { upload(a.state().mask, plan_.mask); }
  // The regulariser's descriptor table goes to the device once; the step only launches.
  void setup_orth_regulariser(std::ostream* log) {
    const std::vector<AdaLoraOrthMatrix> mats = adalora_orth_matrices(layout_);
    orth_norms_.assign(mats.size(), 0.0);
    orth_max_rank_ = 1;
    for (const AdaptedModule& m : layout_.modules()) orth_max_rank_ = std::max(orth_max_rank_, m.r);
    orth_on_host_ = orth_max_rank_ > kAdaLoraOrthMaxRank;
    if (orth_on_host_) {
      if (log) {
        *log << "AdaLoRA orthogonality regulariser on the host: rank " << orth_max_rank_
             << " is above the device kernel's bound " << kAdaLoraOrthMaxRank
             << " (its Gram matrix would not fit in shared memory), so params and grads are "
                "copied to the host and back every step\n";
      }
      return;
    }
    if (!mats.empty()) {
      cuda::copy_host_to_device(at(plan_.orth_matrices), mats.data(), plan_.orth_matrices.bytes);
    }
  }
  void zero_pruned_e() {
    const int r = cfg_.adapter.init_r;
    cuda::zero_masked_rows(params(), at<std::uint64_t>(plan_.e_offsets), at<float>(plan_.mask),
                           static_cast<int>(layout_.modules().size()), r, kCompute);
  }

  const Config& cfg_;
  TrainState& st_;
  const AdapterLayout& layout_;
  int device_ = 0;
  CudaStatePlan plan_;
  DeviceArena arena_;
  std::unique_ptr<CudaTransformer> model_;
  std::string describe_;
  std::vector<float> orth_work_;    // the host fallback's workspace
  std::vector<double> orth_norms_;  // [2 * #modules] (AdaLoRA), read back every step
  int orth_max_rank_ = 1;           // the largest rank d over all A and B
  bool orth_on_host_ = false;       // rank above kAdaLoraOrthMaxRank: the host fallback
  std::size_t allocations_at_start_ = 0;
  std::size_t peak_in_use_ = 0;
};

}  // namespace

std::unique_ptr<TrainingBackend> make_cuda_training_backend(const BackendSetup& setup,
                                                            DType compute) {
  return std::make_unique<CudaTrainingBackend>(setup, compute);
}

}  // namespace peftrun

#endif  // PEFTRUN_WITH_CUDA
