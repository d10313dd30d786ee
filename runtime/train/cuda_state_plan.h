// The CUDA trainer's flat state in device memory, planned before anything is allocated (one
// ArenaPlan, one cudaMalloc): params, grads and the AdamW moments [layout.total()] fp32, and for
// AdaLoRA the importance EMAs (same layout), the triplet scores and mask [#modules * init_r],
// each module's E offset, and the orthogonality regulariser's descriptor table and norms
// [2 * #modules] (one A and one B per module). Host code, tested without a GPU
// (tests/cuda_model_plan_test.cpp); defined only in CUDA builds.
#pragma once

#include "runtime/adapters/adapter_layout.h"
#include "runtime/model/arena_plan.h"

namespace peftrun {

struct CudaStatePlan {
  ArenaPlan arena;
  ArenaSlot params, grads, adam_m, adam_v;  // [P] fp32
  ArenaSlot ipt_ema, unc_ema;               // [P] fp32 (AdaLoRA)
  ArenaSlot scores, mask;                   // [#modules * init_r] fp32 (AdaLoRA)
  ArenaSlot e_offsets;                      // [#modules] uint64 element offsets of E (AdaLoRA)
  ArenaSlot orth_matrices;                  // [2 * #modules] AdaLoraOrthMatrix (AdaLoRA)
  ArenaSlot orth_norms;                     // [2 * #modules] double: ||C|| per matrix (AdaLoRA)
  ArenaSlot sum_squares;                    // one double: the gradient norm's reduction
  ArenaSlot sum_squares_work;               // its per-block partials
  ArenaSlot report;                         // a NonfiniteReport (--debug parameter check)
};

CudaStatePlan plan_cuda_train_state(const AdapterLayout& layout);

}  // namespace peftrun
