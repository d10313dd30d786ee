// transformers' _compute_*_rope_parameters, step by step in the same precision: Python floats
// (double) where it computes on scalars, float where it computes on the float32 tensor, with a
// Python scalar meeting a float32 tensor rounded to float first (as torch does).
#include "kernels/rope_frequencies.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/rope_math.h"

namespace peftrun {
namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("rope_inverse_frequencies: " + what);
}

// 1 / base^(arange(0, dim, 2) / dim) with base rounded to float (torch.pow(scalar, tensor)).
std::vector<float> default_frequencies(int head_dim, double base) {
  std::vector<float> inv(static_cast<std::size_t>(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i) {
    inv[static_cast<std::size_t>(i)] = rope_inv_freq(i, head_dim, static_cast<float>(base));
  }
  return inv;
}

// Llama 3.1: wavelengths above original / low_freq_factor are divided by factor, those below
// original / high_freq_factor kept, and the band between blends the two linearly in
// original / wavelength.
void apply_llama3(std::vector<float>& inv, const RopeParams& p) {
  const double old_context = p.original_max_positions;
  const float low_freq_wavelen = static_cast<float>(old_context / p.low_freq_factor);
  const float high_freq_wavelen = static_cast<float>(old_context / p.high_freq_factor);
  const float factor = static_cast<float>(p.factor);
  const float low = static_cast<float>(p.low_freq_factor);
  const float band = static_cast<float>(p.high_freq_factor - p.low_freq_factor);
  const float two_pi = static_cast<float>(2.0 * M_PI);
  for (float& f : inv) {
    // 2 pi / inv_freq: torch's reverse division is reciprocal(t) * scalar.
    const float wavelen = (1.0f / f) * two_pi;
    const float scaled = wavelen > low_freq_wavelen ? f / factor : f;
    const float smooth = ((1.0f / wavelen) * static_cast<float>(old_context) - low) / band;
    const float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    f = medium ? smoothed : scaled;
  }
}

// YaRN: dimension i interpolates (inv_freq / factor) where its wavelength is long against the
// original context and extrapolates (inv_freq) where it is short, with a linear ramp between
// the dimensions that turn beta_fast and beta_slow times over the context.
std::vector<float> yarn_frequencies(int head_dim, const RopeParams& p) {
  const double dim = head_dim, base = p.theta, context = p.original_max_positions;
  auto correction_dim = [&](double rotations) {  // the dimension that turns `rotations` times
    return (dim * std::log(context / (rotations * 2 * M_PI))) / (2 * std::log(base));
  };
  double low = correction_dim(p.beta_fast), high = correction_dim(p.beta_slow);
  if (p.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1);
  if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
  const float low_f = static_cast<float>(low), width = static_cast<float>(high - low);
  const float factor = static_cast<float>(p.factor);
  std::vector<float> inv(static_cast<std::size_t>(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float pos_freq = std::pow(static_cast<float>(base), expo);
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (factor * pos_freq);
    const float ramp = std::clamp((static_cast<float>(i) - low_f) / width, 0.0f, 1.0f);
    const float keep = 1.0f - ramp;  // the share of the extrapolated (original) frequency
    inv[static_cast<std::size_t>(i)] = interpolation * (1.0f - keep) + extrapolation * keep;
  }
  return inv;
}

}  // namespace

float rope_attention_scaling(const RopeParams& p) {
  if (p.type != RopeType::kYarn && p.type != RopeType::kLongrope) return 1.0f;
  if (p.attention_factor > 0) return static_cast<float>(p.attention_factor);
  if (p.factor <= 1) return 1.0f;
  if (p.type == RopeType::kYarn) return static_cast<float>(0.1 * std::log(p.factor) + 1.0);
  return static_cast<float>(
      std::sqrt(1.0 + std::log(p.factor) / std::log(double(p.original_max_positions))));
}

std::vector<float> rope_inverse_frequencies(int head_dim, const RopeParams& p) {
  require(head_dim >= 2 && head_dim % 2 == 0,
          "head_dim " + std::to_string(head_dim) + " must be even and >= 2");
  require(std::isfinite(p.theta) && p.theta > 0, "theta must be > 0");
  if (p.type == RopeType::kDefault) return default_frequencies(head_dim, p.theta);
  require(std::isfinite(p.factor) && p.factor > 0, "factor must be > 0");
  switch (p.type) {
    case RopeType::kDefault:
      break;
    case RopeType::kLinear: {
      std::vector<float> inv = default_frequencies(head_dim, p.theta);
      const float factor = static_cast<float>(p.factor);
      for (float& f : inv) f /= factor;
      return inv;
    }
    case RopeType::kDynamic: {
      // HF builds the table for seq_len = max(seq_len, max_position_embeddings), i.e. for
      // max_positions itself while the sequence fits: base * (factor - (factor - 1))^(d/(d-2)),
      // which is base up to double rounding. Computed as HF does, for the same bits.
      require(p.max_positions > 0, "dynamic needs max_positions > 0");
      const double seq = p.max_positions, d = head_dim;
      const double base =
          p.theta * std::pow((p.factor * seq / p.max_positions) - (p.factor - 1.0), d / (d - 2.0));
      return default_frequencies(head_dim, base);
    }
    case RopeType::kYarn:
      require(p.original_max_positions > 0, "yarn needs original_max_positions > 0");
      require(p.beta_fast > 0 && p.beta_slow > 0, "yarn needs beta_fast, beta_slow > 0");
      return yarn_frequencies(head_dim, p);
    case RopeType::kLongrope: {
      // 1.0 / (ext_factors * base ** (arange(0, dim, 2).float() / dim)), the factors a float32
      // tensor.
      require(p.ext_factors.size() == std::size_t(head_dim / 2),
              "longrope needs head_dim / 2 = " + std::to_string(head_dim / 2) + " factors, got " +
                  std::to_string(p.ext_factors.size()));
      std::vector<float> inv(static_cast<std::size_t>(head_dim / 2));
      for (int i = 0; i < head_dim / 2; ++i) {
        const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
        const float ext = static_cast<float>(p.ext_factors[static_cast<std::size_t>(i)]);
        require(std::isfinite(ext) && ext > 0, "longrope factors must be > 0");
        inv[static_cast<std::size_t>(i)] =
            1.0f / (ext * std::pow(static_cast<float>(p.theta), expo));
      }
      return inv;
    }
    case RopeType::kLlama3: {
      require(p.original_max_positions > 0, "llama3 needs original_max_positions > 0");
      require(p.low_freq_factor > 0 && p.high_freq_factor > p.low_freq_factor,
              "llama3 needs 0 < low_freq_factor < high_freq_factor");
      std::vector<float> inv = default_frequencies(head_dim, p.theta);
      apply_llama3(inv, p);
      return inv;
    }
  }
  return default_frequencies(head_dim, p.theta);
}

}  // namespace peftrun
