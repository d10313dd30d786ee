// RoPE's inverse frequencies, inv_freq[i] for i < head_dim / 2, and the factor cos and sin are
// multiplied by: what HF's RoPE variants handled here change (transformers' ROPE_INIT_FUNCTIONS
// "default", "linear", "dynamic", "llama3", "yarn" and "longrope"; only yarn's and longrope's
// factor is not 1).
// Computed on the host, once per model, in float with the operations in transformers' order, so
// the table equals HF's bit for bit, but for one thing: theta^x is libm's powf (correctly
// rounded), where torch's vectorised pow (SLEEF, within 1 ulp) now and then rounds the other
// way; of the 408 entries RopeFrequencies.* checks against tables transformers wrote, two are
// 1 ulp apart (the same theta^x of the two theta 1e6, head_dim 128 tables; Qwen2's and Qwen3's
// plain RoPE have it too). The CPU and CUDA kernels (rope.h) both take the table.
#pragma once

#include <vector>

namespace peftrun {

enum class RopeType {
  kDefault,   // inv_freq[i] = 1 / theta^(2i / head_dim)
  kLinear,    // default / factor (position interpolation)
  kDynamic,   // dynamic NTK: theta grows with the sequence beyond max_positions; at or below it,
              // which is where peftrun trains (data.seq_len <= model.max_seq_len), the default
  kLlama3,    // Llama 3.1's: low frequencies / factor, high ones kept, a smooth ramp between
  kYarn,      // YaRN (Qwen2.5 / Qwen3 long context): a ramp between inv_freq / factor and
              // inv_freq over the dimensions, and cos / sin scaled by the attention factor
  kLongrope,  // LongRoPE (Phi-3 / Phi-3.5 long context): inv_freq[i] / ext_factors[i], and cos /
              // sin scaled by sqrt(1 + ln(factor) / ln(original_max_positions))
};

struct RopeParams {
  double theta = 10000.0;
  RopeType type = RopeType::kDefault;
  double factor = 1.0;             // linear, dynamic, llama3
  double low_freq_factor = 1.0;    // llama3
  double high_freq_factor = 4.0;   // llama3; must exceed low_freq_factor
  int original_max_positions = 0;  // llama3, yarn, longrope: the pretraining context length
  int max_positions = 0;           // dynamic: max_position_embeddings
  double beta_fast = 32.0;         // yarn: the ramp's ends, in rotations over the context
  double beta_slow = 1.0;
  double attention_factor = 0.0;  // yarn, longrope: the cos / sin factor; 0 = the variant's
  bool truncate = true;           // yarn: the ramp's ends rounded out to whole dimensions
  // longrope: [head_dim / 2] divisors, the short or the long set (rope_table.h picks).
  std::vector<double> ext_factors = {};
};

// [head_dim / 2]. Throws std::invalid_argument for an odd head_dim or parameters outside the
// ranges above (the config loader reports those first, naming the key).
std::vector<float> rope_inverse_frequencies(int head_dim, const RopeParams& p);

// What cos and sin are multiplied by (in float, as transformers' `cos * attention_scaling`):
// yarn's and longrope's attention factor, 1 for every other variant.
float rope_attention_scaling(const RopeParams& p);

}  // namespace peftrun
