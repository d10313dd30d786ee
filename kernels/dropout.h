// Dropout keep masks (HF PEFT's lora_dropout is nn.Dropout on the adapter branch's input):
//
//   keep[i] = uniform01(key, i) >= p        (1 = kept, scaled by 1 / (1 - p); 0 = dropped)
//
// key identifies the stream (the model derives it from seed, step, micro-batch and module, see
// runtime/rng.h), i is the element's flat index in the [n, in] input. The draw is counter-based
// and PEFTRUN_HD, so the CPU and the GPU produce bit-identical masks for the same key.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/counter_rng.h"
#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"
#include "kernels/host_device.h"

namespace peftrun {

// p is compared in double, exactly as `uniform01(key, i) >= p` with a float p promoted.
PEFTRUN_HD std::uint8_t dropout_keep(std::uint64_t key, std::uint64_t i, float p) {
  return uniform01(key, i) >= static_cast<double>(p) ? 1 : 0;
}

namespace cpu {

// keep[0..n) overwritten.
void dropout_keep_mask(std::uint64_t key, float p, std::size_t n, std::uint8_t* keep);

}  // namespace cpu

namespace cuda {

// Device twin of cpu::dropout_keep_mask: keep is a device buffer of n bytes.
void dropout_keep_mask(std::uint64_t key, float p, std::size_t n, std::uint8_t* keep,
                       Stream stream);

// x_drop[i] = keep[i] ? x[i] * keep_scale : 0 (computed in fp32, stored in `type`), and when
// x_rest is not nullptr also x_rest[i] = x[i] - x_drop[i] (the part dropout removed; DoRA's
// dropout form uses it). x, x_drop, x_rest: n elements of `type`; keep: n bytes.
void apply_dropout(const void* x, const std::uint8_t* keep, float keep_scale, std::size_t n,
                   DType type, void* x_drop, void* x_rest, Stream stream);

// g[i] = keep[i] ? g[i] * keep_scale : 0 in place: the dropout Jacobian applied to a gradient.
void mask_by_keep(void* g, const std::uint8_t* keep, float keep_scale, std::size_t n, DType type,
                  Stream stream);

}  // namespace cuda
}  // namespace peftrun
