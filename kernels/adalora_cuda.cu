// AdaLoRA on the GPU (see adalora.h): the LoRA matmul sequence with A~ = E * A, the E chain
// rule, the allocator's per-element importance update and triplet scores, and the
// orthogonality regulariser (the block functor of adalora_blocks.h, launched by CudaLauncher).
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
#include "kernels/reduce_cuda.cuh"

namespace peftrun::cuda {
namespace {

constexpr int kRowThreads = 256;

std::size_t sz(int a, int b) {
  return static_cast<std::size_t>(a) * static_cast<std::size_t>(b);
}

// Row k of the chain rule through A~[k, :] = E[k] A[k, :] (one block per row):
//   dA[k, :] += E[k] dA~[k, :];  dE[k] += sum_j dA~[k, j] A[k, j]  (double)
__global__ void e_chain_kernel(const float* dA_scaled, const float* A, const float* E, int in,
                               float* dA, float* dE) {
  __shared__ double part[kRowThreads];
  const std::size_t row = static_cast<std::size_t>(blockIdx.x) * static_cast<std::size_t>(in);
  const float e = E[blockIdx.x];
  double acc = 0.0;
  for (int j = threadIdx.x; j < in; j += kRowThreads) {
    const float g = dA_scaled[row + j];
    dA[row + j] += e * g;
    acc += static_cast<double>(g) * static_cast<double>(A[row + j]);
  }
  part[threadIdx.x] = acc;
  block_sum<kRowThreads>(part);
  if (threadIdx.x == 0) dE[blockIdx.x] += static_cast<float>(part[0]);
}

__global__ void importance_kernel(const float* p, const float* g, float* ipt, float* unc,
                                  std::size_t n, ImportanceCoeffs<float> c) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    importance_element(p[i], g[i], ipt[i], unc[i], c);
  }
}

// One block per triplet k: the element scores of A's row k and B's column k summed in double.
__global__ void triplet_scores_kernel(const float* ipt, const float* unc, AdaLoraModuleView m,
                                      float* scores) {
  __shared__ double part_a[kRowThreads];
  __shared__ double part_b[kRowThreads];
  const std::size_t k = blockIdx.x;
  const std::size_t r = static_cast<std::size_t>(m.r);
  double sa = 0.0, sb = 0.0;
  for (int j = threadIdx.x; j < m.in; j += kRowThreads) {
    const std::size_t o = m.a + k * static_cast<std::size_t>(m.in) + j;  // A[k, j]
    sa += static_cast<double>(mul_rn(ipt[o], unc[o]));
  }
  for (int j = threadIdx.x; j < m.out; j += kRowThreads) {
    const std::size_t o = m.b + static_cast<std::size_t>(j) * r + k;  // B[j, k]
    sb += static_cast<double>(mul_rn(ipt[o], unc[o]));
  }
  part_a[threadIdx.x] = sa;
  part_b[threadIdx.x] = sb;
  block_sum<kRowThreads>(part_a);
  block_sum<kRowThreads>(part_b);
  if (threadIdx.x == 0) {
    const std::size_t oe = m.e + k;
    scores[k] = triplet_score(ipt[oe], unc[oe], part_a[0], m.in, part_b[0], m.out);
  }
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
  e_chain_kernel<<<static_cast<unsigned>(l.r), kRowThreads, 0, stream>>>(k.dA_scaled, l.A, a.E,
                                                                         l.in, dA, dE);
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

void adalora_update_importance(const float* p, const float* g, float* ipt_ema, float* unc_ema,
                               std::size_t n, double beta1, double beta2, double grad_scale,
                               Stream stream) {
  if (n == 0) return;
  importance_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
      p, g, ipt_ema, unc_ema, n, importance_coeffs<float>(beta1, beta2, grad_scale));
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

void adalora_triplet_scores(const float* ipt_ema, const float* unc_ema, const AdaLoraModuleView& m,
                            float* scores, Stream stream) {
  if (m.r <= 0) return;
  if (m.in <= 0 || m.out <= 0) {
    throw std::invalid_argument("cuda::adalora_triplet_scores: in and out must be > 0");
  }
  triplet_scores_kernel<<<static_cast<unsigned>(m.r), kRowThreads, 0, stream>>>(ipt_ema, unc_ema, m,
                                                                                scores);
  PEFTRUN_CUDA_CHECK_LAUNCH();
}

void adalora_orth_reg(const float* params, float* grads, const AdaLoraOrthMatrix* mats, int count,
                      int max_rank, float weight, double* norms, Stream stream) {
  // The device does not bounds-check Spans, so the buffer length only matters to the emulator.
  blocks::launch_adalora_orth_reg(CudaLauncher(stream), params, grads, ~std::size_t(0), mats, count,
                                  max_rank, weight, norms);
}

}  // namespace peftrun::cuda
