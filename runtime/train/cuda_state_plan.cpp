#include "runtime/train/cuda_state_plan.h"

#if PEFTRUN_WITH_CUDA

#include <cstdint>

#include "kernels/adalora.h"
#include "kernels/adamw.h"
#include "kernels/nonfinite.h"

namespace peftrun {

CudaStatePlan plan_cuda_train_state(const AdapterLayout& layout) {
  CudaStatePlan p;
  ArenaPlan& a = p.arena;
  const std::size_t P = layout.total(), f32 = sizeof(float);
  p.params = a.add("state/params", P, f32);
  p.grads = a.add("state/grads", P, f32);
  p.adam_m = a.add("state/adam_m", P, f32);
  p.adam_v = a.add("state/adam_v", P, f32);
  if (layout.type() == AdapterType::kAdaLora) {
    std::size_t triplets = 0;
    for (const AdaptedModule& m : layout.modules()) triplets += std::size_t(m.r);
    p.ipt_ema = a.add("state/adalora_ipt_ema", P, f32);
    p.unc_ema = a.add("state/adalora_unc_ema", P, f32);
    p.scores = a.add("state/adalora_scores", triplets, f32);
    p.mask = a.add("state/adalora_mask", triplets, f32);
    p.e_offsets = a.add("state/adalora_e_offsets", layout.modules().size(), sizeof(std::uint64_t));
    const std::size_t matrices = 2 * layout.modules().size();
    p.orth_matrices = a.add("state/adalora_orth_matrices", matrices, sizeof(AdaLoraOrthMatrix));
    p.orth_norms = a.add("state/adalora_orth_norms", matrices, sizeof(double));
  }
  p.sum_squares = a.add("state/grad_sum_squares", 1, sizeof(double));
  p.sum_squares_work = a.add("state/grad_sum_squares_work", cuda::sum_squares_workspace_bytes(P));
  p.report = a.add("state/nonfinite_report", 1, sizeof(NonfiniteReport));
  return p;
}

}  // namespace peftrun

#endif  // PEFTRUN_WITH_CUDA
