// Folding a trained adapter into its frozen base weight, as HF PEFT's merge_and_unload does, so
// the merged model computes the adapted layer (in eval mode, no dropout) with a plain Linear:
//
//   LoRA / rsLoRA:  W' = W + s B A                          s = alpha / r (alpha / sqrt(r))
//   DoRA:           W' = (m / ||W + s B A||_row) * (W + s B A)    (row j scaled by m[j] / n[j])
//   AdaLoRA:        W' = W + c B (E * A)                    c = alpha / (init_r + 1e-5), E
//                                                           scaling the rows of A
//                                                           (kernels/adalora.h)
//
// s and c are AdapterLayout::scale(). Biases are untouched by all three (DoRA scales only the
// x W^T + s x A^T B^T part, kernels/dora.h), so y = x W'^T + b is the adapted layer's output.
// Pruned AdaLoRA triplets have E = 0 and add nothing.
//
// W [out, in], A [r, in], B [out, r], m [out], E [r]. The arithmetic is fp32 (one sgemm with
// beta = 1; DoRA's row norms of W' accumulated in double), so the caller rounds W' once to the
// output dtype.
#pragma once

#include <vector>

#include "runtime/adapters/adapter_layout.h"

namespace peftrun {

// W (module `m`'s [out, in] base weight, fp32) becomes the merged weight, in place. `params` is
// the flat adapter buffer of `layout`; `scratch` is reused between calls (AdaLoRA's E * A).
void merge_adapter_into_weight(const AdapterLayout& layout, const AdaptedModule& m,
                               const float* params, float* W, std::vector<float>& scratch);

}  // namespace peftrun
