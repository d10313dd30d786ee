// Internal to the CUDA adapter ops (lora_linear_cuda.cu, dora_cuda.cu, adalora_cuda.cu): the
// LoRA matmul sequence on adapter matrices that are already in the activation type, plus the
// small helpers they share. Plain C++ declarations; not part of any contract.
#pragma once

#include <cstdint>

#include "kernels/gemm.h"
#include "kernels/lora_linear.h"
#include "kernels/workspace.h"

namespace peftrun::cuda::detail {

using peftrun::cuda::make_gemm;  // kernels/gemm.h

// Throws std::invalid_argument naming `op` and the first missing or inconsistent field.
void validate_lora_args(const LoraLinearArgs& a, const char* op);

// Adapter matrices in the activation type: pointers into the workspace, or the fp32
// parameters themselves when act is fp32 and no row scaling is needed.
struct ActAdapter {
  const void* A = nullptr;  // [r, in]
  const void* B = nullptr;  // [out, r]
};

// Carves room for A and B in `act` (nothing for fp32 unless `always`: AdaLoRA's E * A needs a
// buffer even in fp32).
struct ActAdapterSlots {
  void* A = nullptr;
  void* B = nullptr;
};
ActAdapterSlots carve_act_adapter(WorkspaceCarver& w, int in, int out, int r, DType act,
                                  bool always_A, bool always_B);

// forward: [x_drop = drop(x)]; y = x W^T + bias; xa = x~ A^T; y += s xa B^T.
void lora_forward_core(BlasLt& lt, const LoraLinearArgs& a, const ActAdapter& ad, const void* x,
                       void* y, Stream stream);

// backward: dB += s dy^T xa; dxa = s dy B; dA = dA_beta * dA + dxa^T x~; then dx (when not
// nullptr) = dy W + keep-masked dxa A. dxa: [n, r] act scratch.
void lora_backward_core(BlasLt& lt, const LoraLinearArgs& a, const ActAdapter& ad, const void* x,
                        const void* dy, void* dx, float* dA, float dA_beta, float* dB, void* dxa,
                        Stream stream);

}  // namespace peftrun::cuda::detail
