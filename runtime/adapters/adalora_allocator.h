// AdaLoRA's global rank budget (HF PEFT 0.21 AdaLoraModel.update_and_allocate + RankAllocator).
//
// After every optimizer step the allocator updates a sensitivity EMA and an uncertainty EMA of
// every lora_A / lora_B / lora_E entry, and on a cubic schedule zeroes the singular values E of
// the least important triplets (E_k, A[k, :], B[:, k]) of ALL modules ranked together. Steps
// (0-based index t of the step just taken, T = total_step):
//   t <  T - tfinal   update the EMAs; t <= tinit: nothing else; otherwise mask when
//                     t % deltaT == 0 at budget b(t) = int((b0 - bT)(1 - (t - tinit) /
//                     (T - tfinal - tinit))^3 + bT), b0 = init_r * #modules, bT = target_r *
//                     #modules
//   t == T - tfinal   NO EMA update; mask at bT (the cubic gives exactly bT there); that mask is
//                     the final rank pattern; the EMAs are reset to 0 (PEFT's reset_ipt)
//   t >  T - tfinal   re-zero the E entries the rank pattern prunes (the optimizer regrows them)
// Between mask steps a pruned E is NOT held at 0: it trains again and is judged afresh at the
// next mask, exactly as in PEFT. The pruned triplets stay in the buffer (PEFT masks, it does
// not resize); export slices them out with rank_pattern().
//
// Scores: s = ipt_ema * unc_ema per entry; S_k = s(E_k) + (mean_j s(A[k, j]) + mean_i s(B[i, k]));
// with K = b0 - budget, threshold = the K-th smallest S over all modules and E_k is zeroed where
// S_k <= threshold (PEFT's rule: ties at the threshold are all pruned, so more than K may go).
// PEFT crashes for K = 0 (torch.kthvalue needs k >= 1); here K <= 0 prunes nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "configs/config.h"
#include "runtime/adapters/adapter_layout.h"

namespace peftrun {

struct AdaLoraBudget {
  int budget = 0;     // total rank kept over all modules
  bool mask = false;  // whether this step masks to the budget
};

// What update_and_allocate does after one step, in its order: update the EMAs with the step's
// gradients; rank all triplets and prune to `budget`; make that mask the final pattern and
// reset the EMAs; or only re-zero the E entries the final pattern prunes.
struct AdaLoraStepPlan {
  bool update_ema = false;
  bool mask = false;
  int budget = 0;
  bool fix = false;
  bool reapply = false;
};

// PEFT's RankAllocator.budget_schedule(step) (the cubic is evaluated in double and truncated,
// as Python's int() does). `step > total_step - tfinal` gives (target, true), as in PEFT.
AdaLoraBudget adalora_budget_schedule(int step, int init_budget, int target_budget, int tinit,
                                      int tfinal, int total_step, int deltaT);

// Everything the allocator carries from step to step; checkpoint it all to resume exactly.
// Vectors are flat fp32 so they can be written (and compared across ranks) like the params.
struct AdaLoraState {
  std::vector<float> ipt_ema;  // [layout.total()] sensitivity EMA; 0 outside A / B / E
  std::vector<float> unc_ema;  // [layout.total()] uncertainty EMA
  std::vector<float> mask;     // [#modules * init_r], module-major: 1 = triplet kept, 0 = pruned
  bool has_pattern = false;    // a mask was ever computed (PEFT: config.rank_pattern != None)
  bool fixed = false;          // the final pattern was decided (step T - tfinal was taken)
};

class AdaLoraAllocator {
 public:
  // layout must be of type kAdaLora; train_steps resolves config.adalora_total_step().
  // Throws std::invalid_argument on what PEFT rejects: total_step <= 0, tinit >= T - tfinal,
  // deltaT < 1, beta1 / beta2 outside (0, 1).
  AdaLoraAllocator(const AdapterLayout& layout, const AdapterConfig& config, int train_steps);

  // Call once per optimizer step, after AdamW, with the step's gradients still in `grads`
  // (same flat layout as params). step: 0-based index of the step just taken. grad_scale: the
  // factor the optimizer applied to grads (global-norm clipping), so the importance sees the
  // clipped gradient as PEFT does. Zeroes pruned E entries in params.
  void update_and_allocate(int step, float* params, const float* grads, double grad_scale = 1.0);

  // The same step for a backend that keeps the EMAs and computes the scores in its own memory
  // (the CUDA trainer): plan_step says what update_and_allocate would do at `step`; the
  // backend updates its EMAs, computes the triplet scores into scores_buffer() and calls
  // decide_mask (the host decision, identical on every rank), then fix_pattern() when plan.fix,
  // and zeroes E wherever state().mask is 0 after a mask or a reapply.
  AdaLoraStepPlan plan_step(int step) const;
  float* scores_buffer() { return scores_.data(); }  // [#modules * init_r], module-major
  void decide_mask(int budget);                      // from scores_buffer()
  void fix_pattern();                                // state().fixed, host EMAs cleared

  AdaLoraBudget budget_schedule(int step) const;

  // Ranks all triplets by the current EMAs and prunes to `budget` (zeroes E in params and sets
  // the mask). Public for tests; update_and_allocate calls it on schedule.
  void mask_to_budget(int budget, float* params);
  // Zeroes E wherever the current mask prunes.
  void apply_mask(float* params) const;

  // Triplet scores S of the last mask_to_budget ([#modules * init_r], module-major).
  const std::vector<float>& last_scores() const { return scores_; }

  // Per module (layout order), init_r flags: true = kept (PEFT's rank_pattern lists).
  std::vector<std::vector<bool>> rank_pattern() const;
  std::vector<int> ranks() const;  // kept triplets per module
  // 64-bit digest of (#modules, init_r, every mask bit): equal on every rank or the ranks
  // disagree about the pattern.
  std::uint64_t mask_checksum() const;

  int init_budget() const { return init_budget_; }
  int target_budget() const { return target_budget_; }
  int total_step() const { return total_step_; }
  int init_r() const { return init_r_; }
  std::size_t num_modules() const { return modules_.size(); }

  AdaLoraState& state() { return state_; }
  const AdaLoraState& state() const { return state_; }

 private:
  std::vector<AdaptedModule> modules_;
  int init_r_ = 0;
  int init_budget_ = 0, target_budget_ = 0;
  int tinit_ = 0, tfinal_ = 0, deltaT_ = 1, total_step_ = 0;
  double beta1_ = 0.85, beta2_ = 0.85;
  AdaLoraState state_;
  std::vector<float> scores_;  // [#modules * init_r]
  std::vector<float> sorted_;  // scratch for the k-th smallest (no allocation per step)
};

}  // namespace peftrun
