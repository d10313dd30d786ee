// AdaLoRA on the GPU (see adalora.h): the LoRA matmul sequence with A~ = E * A, then the kernels
// of adalora_blocks.h (the E chain rule, the allocator's importance update and triplet scores,
// and the orthogonality regulariser) launched by CudaLauncher.
#include <cstddef>
#include <stdexcept>
#include <string>

#include "kernels/adalora.h"
#include "kernels/adalora_blocks.h"
#include "kernels/adalora_math.h"
#include "kernels/convert.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_launch.cuh"
#include "kernels/dtype_cuda.cuh"
#include "kernels/lora_core_cuda.h"

namespace peftrun::cuda {
namespace {

std::size_t sz(int a, int b) {
  return static_cast<std::size_t>(a) * static_cast<std::size_t>(b);
}

struct AdaLoraWork {
  detail::ActAdapterSlots act;  // A~ always (E-scaled), B for 16-bit act
  float* dA_scaled = nullptr;   // [r, in]
  void* dxa = nullptr;          // [n, r] act
};

AdaLoraWork carve(WorkspaceCarver& w, int n, int in, int out, int r, DType act) {
  AdaLoraWork k;
  k.act = detail::carve_act_adapter(w, in, out, r, act, /*always_A=*/true, false);
  k.dA_scaled = w.take<float>(sz(r, in));
  k.dxa = w.take_bytes(sz(n, r) * dtype_size(act));
  return k;
}

detail::ActAdapter cast_adapter(const AdaLoraLinearArgs& a, const AdaLoraWork& k, Stream stream) {
  const LoraLinearArgs& l = a.lora;
  cast_rows_scaled(l.A, a.E, l.r, l.in, l.act, k.act.A, stream);  // A~ = E * A
  if (l.act == DType::kF32) return {k.act.A, l.B};
  cast_rows_scaled(l.B, nullptr, l.out, l.r, l.act, k.act.B, stream);
  return {k.act.A, k.act.B};
}

void validate(const AdaLoraLinearArgs& a, const char* op) {
  detail::validate_lora_args(a.lora, op);
  if (!a.E || !a.work) throw std::invalid_argument(std::string(op) + ": E and work must be set");
}

}  // namespace

std::size_t adalora_linear_workspace_bytes(int n, int in, int out, int r, DType act) {
  WorkspaceCarver w;
  carve(w, n, in, out, r, act);
  return w.bytes();
}

void adalora_linear_forward(BlasLt& lt, const AdaLoraLinearArgs& a, const void* x, void* y,
                            Stream stream) {
  validate(a, "cuda::adalora_linear_forward");
  WorkspaceCarver w(a.work);
  const AdaLoraWork k = carve(w, a.lora.n, a.lora.in, a.lora.out, a.lora.r, a.lora.act);
  detail::lora_forward_core(lt, a.lora, cast_adapter(a, k, stream), x, y, stream);
}

void adalora_linear_backward(BlasLt& lt, const AdaLoraLinearArgs& a, const void* x, const void* dy,
                             void* dx, float* dA, float* dE, float* dB, Stream stream) {
  validate(a, "cuda::adalora_linear_backward");
  const LoraLinearArgs& l = a.lora;
  WorkspaceCarver w(a.work);
  const AdaLoraWork k = carve(w, l.n, l.in, l.out, l.r, l.act);
  // dA~ = dxa^T x~ (overwritten, beta 0), which both dA and dE need; dB and dx as for LoRA
  // (dx through A~).
  detail::lora_backward_core(lt, l, cast_adapter(a, k, stream), x, dy, dx, k.dA_scaled, 0.0f, dB,
                             k.dxa, stream);
  adalora_e_chain(k.dA_scaled, l.A, a.E, l.r, l.in, dA, dE, stream);
}

void adalora_e_chain(const float* dA_scaled, const float* A, const float* E, int r, int in,
                     float* dA, float* dE, Stream stream) {
  blocks::launch_adalora_e_chain(CudaLauncher(stream), dA_scaled, A, E, r, in, dA, dE);
}

void adalora_update_importance(const float* p, const float* g, float* ipt_ema, float* unc_ema,
                               std::size_t n, double beta1, double beta2, double grad_scale,
                               Stream stream) {
  blocks::launch_adalora_update_importance(CudaLauncher(stream), p, g, ipt_ema, unc_ema, n, beta1,
                                           beta2, grad_scale);
}

void adalora_triplet_scores(const float* ipt_ema, const float* unc_ema, const AdaLoraModuleView& m,
                            float* scores, Stream stream) {
  blocks::launch_adalora_triplet_scores(CudaLauncher(stream), ipt_ema, unc_ema,
                                        blocks::adalora_module_extent(m), m, scores);
}

void adalora_orth_reg(const float* params, float* grads, const AdaLoraOrthMatrix* mats, int count,
                      int max_rank, float weight, double* norms, Stream stream) {
  // The device does not bounds-check Spans, so the buffer length only matters to the emulator.
  blocks::launch_adalora_orth_reg(CudaLauncher(stream), params, grads, ~std::size_t(0), mats, count,
                                  max_rank, weight, norms);
}

}  // namespace peftrun::cuda
