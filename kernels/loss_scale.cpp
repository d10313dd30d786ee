#include "kernels/loss_scale.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace peftrun {

DynamicLossScale::DynamicLossScale(const LossScaleConfig& c) : config_(c), scale_(c.init_scale) {
  if (!(c.init_scale > 0.0) || !std::isfinite(c.init_scale)) {
    throw std::invalid_argument("loss scale: init_scale must be finite and > 0, got " +
                                std::to_string(c.init_scale));
  }
  if (!(c.growth > 1.0) || !(c.backoff > 0.0 && c.backoff < 1.0) || c.growth_interval < 1 ||
      !(c.min_scale > 0.0)) {
    throw std::invalid_argument(
        "loss scale: expected growth > 1, 0 < backoff < 1, growth_interval >= 1, min_scale > 0");
  }
}

bool DynamicLossScale::update(bool found_nonfinite) {
  if (found_nonfinite) {
    scale_ = std::max(scale_ * config_.backoff, config_.min_scale);
    good_steps_ = 0;
    return false;
  }
  if (++good_steps_ >= config_.growth_interval) {
    scale_ *= config_.growth;
    good_steps_ = 0;
  }
  return true;
}

void DynamicLossScale::restore(double scale, int good_steps) {
  if (!(scale > 0.0) || !std::isfinite(scale) || good_steps < 0) {
    throw std::invalid_argument("loss scale: cannot restore scale " + std::to_string(scale) +
                                " with " + std::to_string(good_steps) + " good steps");
  }
  scale_ = scale;
  good_steps_ = good_steps;
}

}  // namespace peftrun
