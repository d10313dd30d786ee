// AdaLoRA budget allocator: PEFT 0.21's RankAllocator over the flat trainable buffer. Scores and
// EMAs are fp32 like PEFT's tensors; see the header for the step semantics.
#include "runtime/adapters/adalora_allocator.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/adalora.h"
#include "runtime/rng.h"

namespace peftrun {

AdaLoraBudget adalora_budget_schedule(int step, int init_budget, int target_budget, int tinit,
                                      int tfinal, int total_step, int deltaT) {
  if (step <= tinit) return {init_budget, false};  // warm-up: full rank, no masking
  if (step > total_step - tfinal) return {target_budget, true};
  // Python: 1 - (step - tinit) / (total_step - tfinal - tinit) (true division in double),
  // mul_coeff ** 3 (C pow), then int() truncation of a non-negative value.
  const double mul =
      1.0 - static_cast<double>(step - tinit) / static_cast<double>(total_step - tfinal - tinit);
  const double b = static_cast<double>(init_budget - target_budget) * std::pow(mul, 3.0) +
                   static_cast<double>(target_budget);
  return {static_cast<int>(b), step % deltaT == 0};
}

AdaLoraAllocator::AdaLoraAllocator(const AdapterLayout& layout, const AdapterConfig& config,
                                   int train_steps)
    : modules_(layout.modules()),
      init_r_(config.init_r),
      tinit_(config.tinit),
      tfinal_(config.tfinal),
      deltaT_(config.deltaT),
      total_step_(config.adalora_total_step(train_steps)),
      beta1_(config.beta1),
      beta2_(config.beta2) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("adalora: " + what); };
  if (layout.type() != AdapterType::kAdaLora) fail("the adapter layout is not of type adalora");
  if (total_step_ <= 0) fail("total_step must be > 0");
  if (tinit_ >= total_step_ - tfinal_) {
    fail("tinit (" + std::to_string(tinit_) + ") must be < total_step - tfinal (" +
         std::to_string(total_step_ - tfinal_) + "): no budgeting phase is left");
  }
  if (deltaT_ < 1) fail("deltaT must be >= 1");
  if (!(beta1_ > 0.0 && beta1_ < 1.0) || !(beta2_ > 0.0 && beta2_ < 1.0)) {
    fail("beta1 and beta2 must lie in (0, 1)");
  }
  for (const AdaptedModule& m : modules_) {
    if (m.r != init_r_ || m.a == kNoTensor || m.b == kNoTensor || m.e == kNoTensor) {
      fail("every module must have lora_A, lora_B, lora_E at rank init_r");
    }
  }
  // PEFT: init_bgt = sum of lora_A rows, target_bgt = target_r * #modules.
  init_budget_ = init_r_ * static_cast<int>(modules_.size());
  target_budget_ = config.target_r * static_cast<int>(modules_.size());
  state_.ipt_ema.assign(layout.total(), 0.0f);
  state_.unc_ema.assign(layout.total(), 0.0f);
  state_.mask.assign(modules_.size() * static_cast<std::size_t>(init_r_), 1.0f);
  scores_.assign(state_.mask.size(), 0.0f);
  sorted_.assign(state_.mask.size(), 0.0f);
}

AdaLoraBudget AdaLoraAllocator::budget_schedule(int step) const {
  return adalora_budget_schedule(step, init_budget_, target_budget_, tinit_, tfinal_, total_step_,
                                 deltaT_);
}

AdaLoraStepPlan AdaLoraAllocator::plan_step(int step) const {
  const int final_start = total_step_ - tfinal_;
  AdaLoraStepPlan plan;
  if (step < final_start) {
    // Budget phase (and warm-up): every A, B, E entry, then a mask when the schedule says so.
    plan.update_ema = true;
    const AdaLoraBudget b = budget_schedule(step);
    plan.mask = b.mask;
    plan.budget = b.budget;
  } else if (step == final_start) {
    // PEFT skips the EMA update here (its update_ipt is guarded by step < T - tfinal) and
    // forces a mask; the schedule's cubic is exactly the target budget at this step.
    plan.mask = true;
    plan.budget = budget_schedule(step).budget;
    plan.fix = true;
  } else {
    plan.reapply = true;
  }
  return plan;
}

void AdaLoraAllocator::update_and_allocate(int step, float* params, const float* grads,
                                           double grad_scale) {
  const AdaLoraStepPlan plan = plan_step(step);
  if (plan.update_ema) {
    // Each tensor a contiguous range.
    for (const AdaptedModule& m : modules_) {
      const std::size_t r = static_cast<std::size_t>(m.r);
      const std::size_t ranges[3][2] = {{m.a, r * static_cast<std::size_t>(m.shape.in)},
                                        {m.b, static_cast<std::size_t>(m.shape.out) * r},
                                        {m.e, r}};
      for (const auto& [off, n] : ranges) {
        cpu::adalora_update_importance(params + off, grads + off, state_.ipt_ema.data() + off,
                                       state_.unc_ema.data() + off, n, beta1_, beta2_, grad_scale);
      }
    }
  }
  if (plan.mask) mask_to_budget(plan.budget, params);
  if (plan.fix) fix_pattern();
  if (plan.reapply) apply_mask(params);
}

void AdaLoraAllocator::fix_pattern() {
  state_.fixed = true;
  std::fill(state_.ipt_ema.begin(), state_.ipt_ema.end(), 0.0f);  // reset_ipt
  std::fill(state_.unc_ema.begin(), state_.unc_ema.end(), 0.0f);
}

void AdaLoraAllocator::mask_to_budget(int budget, float* params) {
  const std::size_t r = static_cast<std::size_t>(init_r_);
  for (std::size_t i = 0; i < modules_.size(); ++i) {
    const AdaptedModule& m = modules_[i];
    const AdaLoraModuleView view{m.a, m.b, m.e, m.r, m.shape.in, m.shape.out};
    cpu::adalora_triplet_scores(state_.ipt_ema.data(), state_.unc_ema.data(), view,
                                scores_.data() + i * r);
  }
  decide_mask(budget);
  apply_mask(params);
}

void AdaLoraAllocator::decide_mask(int budget) {
  const long long n_prune = static_cast<long long>(init_budget_) - budget;
  state_.has_pattern = true;
  if (n_prune <= 0 || scores_.empty()) {
    std::fill(state_.mask.begin(), state_.mask.end(), 1.0f);
    return;
  }
  // torch.kthvalue (1-based k) with NaN ordered last, as torch sorts it.
  const std::size_t kth =
      std::min(static_cast<std::size_t>(n_prune), scores_.size()) - 1;  // 0-based
  std::copy(scores_.begin(), scores_.end(), sorted_.begin());
  auto less_nan_last = [](float x, float y) { return x < y || (!std::isnan(x) && std::isnan(y)); };
  std::nth_element(sorted_.begin(), sorted_.begin() + static_cast<std::ptrdiff_t>(kth),
                   sorted_.end(), less_nan_last);
  const float threshold = sorted_[kth];
  for (std::size_t t = 0; t < scores_.size(); ++t) {
    state_.mask[t] = scores_[t] <= threshold ? 0.0f : 1.0f;  // PEFT's masked_fill_(S <= thr)
  }
}

void AdaLoraAllocator::apply_mask(float* params) const {
  const std::size_t r = static_cast<std::size_t>(init_r_);
  for (std::size_t i = 0; i < modules_.size(); ++i) {
    float* e = params + modules_[i].e;  // [r]
    for (std::size_t k = 0; k < r; ++k) {
      if (state_.mask[i * r + k] == 0.0f) e[k] = 0.0f;
    }
  }
}

std::vector<std::vector<bool>> AdaLoraAllocator::rank_pattern() const {
  const std::size_t r = static_cast<std::size_t>(init_r_);
  std::vector<std::vector<bool>> out(modules_.size(), std::vector<bool>(r));
  for (std::size_t i = 0; i < modules_.size(); ++i) {
    for (std::size_t k = 0; k < r; ++k) out[i][k] = state_.mask[i * r + k] != 0.0f;
  }
  return out;
}

std::vector<int> AdaLoraAllocator::ranks() const {
  const std::size_t r = static_cast<std::size_t>(init_r_);
  std::vector<int> out(modules_.size(), 0);
  for (std::size_t i = 0; i < modules_.size(); ++i) {
    for (std::size_t k = 0; k < r; ++k) out[i] += state_.mask[i * r + k] != 0.0f ? 1 : 0;
  }
  return out;
}

std::uint64_t AdaLoraAllocator::mask_checksum() const {
  // Chained splitmix64 over the shape and the bits packed 64 to a word: any flipped bit,
  // reordering or shape change gives another digest.
  std::uint64_t h = splitmix64(0xada10ca11ull ^ modules_.size());
  h = splitmix64(h ^ static_cast<std::uint64_t>(init_r_));
  std::uint64_t word = 0;
  std::size_t bits = 0;
  for (float v : state_.mask) {
    word |= static_cast<std::uint64_t>(v != 0.0f ? 1 : 0) << bits;
    if (++bits == 64) {
      h = splitmix64(h ^ word);
      word = 0;
      bits = 0;
    }
  }
  if (bits > 0) h = splitmix64(h ^ word);
  return splitmix64(h ^ state_.mask.size());
}

}  // namespace peftrun
