// A frozen linear layer with a LoRA branch (HF PEFT's definition, DESIGN §4):
//
//   y = x W^T + bias + s * drop(x) A^T B^T
//
// x: [n, in]; W: [out, in] (frozen, already converted to T); bias: [out] or nullptr;
// A: [r, in]; B: [out, r]; y: [n, out]. drop(x) = x * keep / (1 - p) with keep a 0/1 mask
// [n, in] (nullptr = no dropout, and then x_drop may be nullptr too).
//
// Saved for backward (caller-owned, planned at start-up):
//   x_drop: [n, in] dropped input (only when keep != nullptr)
//   xa:     [n, r]  drop(x) A^T
//
// CUDA twin (namespace peftrun::cuda, lora_linear_cuda.cu): the same math on device buffers,
// every product a cuBLASLt matmul (kernels/gemm.h): the base GEMM carries the bias in its
// epilogue, the LoRA up-projection accumulates into the same y (beta = 1, s in alpha), and in
// backward dx = dy W and dxa A accumulate into one dx. dA and dB accumulate in fp32.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/blaslt.h"
#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"

namespace peftrun::cpu {

template <typename T>
struct LoraLinearArgs {
  int n = 0, in = 0, out = 0, r = 0;
  T scale = 0;                         // s = alpha / r (or alpha / sqrt(r))
  const T* W = nullptr;                // [out, in]
  const T* bias = nullptr;             // [out] or nullptr
  const T* A = nullptr;                // [r, in]
  const T* B = nullptr;                // [out, r]
  const std::uint8_t* keep = nullptr;  // [n, in] dropout keep mask or nullptr
  T keep_scale = 1;                    // 1 / (1 - p)
  T* x_drop = nullptr;                 // [n, in] workspace saved for backward (when keep)
  T* xa = nullptr;                     // [n, r] saved for backward
};

// y overwritten.
template <typename T>
void lora_linear_forward(const LoraLinearArgs<T>& a, const T* x, T* y);

// dx overwritten (nullptr = not needed); dA, dB ACCUMULATED (+=) so micro-batches add up.
// Uses a [n, r] workspace `dxa`.
template <typename T>
void lora_linear_backward(const LoraLinearArgs<T>& a, const T* x, const T* dy, T* dx, T* dA, T* dB,
                          T* dxa);

}  // namespace peftrun::cpu

namespace peftrun::cuda {

// Device pointers. Activation-type (`act`) storage: x, y, dx, dy, W, bias, x_drop, xa (what a
// matmul reads or writes next to x). W is the frozen base in `act`: the fp16 base as it is for
// fp16 activations; for bf16 / fp32 activations the caller stages a converted copy
// (cuda::convert), as the CPU model stages fp16 -> T. A, B and their gradients are fp32 (the
// flat trainable buffers); for 16-bit activations they are cast into the workspace first.
// Accumulation is fp32 everywhere; xa is rounded to `act` once, as under autocast.
struct LoraLinearArgs {
  int n = 0, in = 0, out = 0, r = 0;
  float scale = 0.0f;  // s
  DType act = DType::kF16;
  const void* W = nullptr;             // [out, in] act
  const void* bias = nullptr;          // [out] act, or nullptr
  const float* A = nullptr;            // [r, in]
  const float* B = nullptr;            // [out, r]
  const std::uint8_t* keep = nullptr;  // [n, in] keep mask (cuda::dropout_keep_mask) or nullptr
  float keep_scale = 1.0f;             // 1 / (1 - p)
  void* x_drop = nullptr;              // [n, in] act, saved for backward (when keep)
  void* xa = nullptr;                  // [n, r] act, saved for backward
  void* work = nullptr;                // lora_linear_workspace_bytes(...), scratch (not saved)
};

// Scratch of forward and backward: A and B cast to `act` (none for fp32) + dxa [n, r] act.
std::size_t lora_linear_workspace_bytes(int n, int in, int out, int r, DType act);

// y [n, out] act overwritten; fills xa (and x_drop with dropout).
void lora_linear_forward(BlasLt& lt, const LoraLinearArgs& a, const void* x, void* y,
                         Stream stream);

// dx [n, in] act overwritten (nullptr = not needed); dA [r, in] and dB [out, r] fp32
// ACCUMULATED. x is the forward input, dy [n, out] act.
void lora_linear_backward(BlasLt& lt, const LoraLinearArgs& a, const void* x, const void* dy,
                          void* dx, float* dA, float* dB, Stream stream);

}  // namespace peftrun::cuda
