#include "runtime/data/data_source.h"

#include <algorithm>
#include <climits>
#include <stdexcept>

#include "runtime/data/batch_loader.h"

namespace peftrun {

int DataSource::num_eval_batches(int batch) const {
  if (batch < 1) throw std::invalid_argument("num_eval_batches: batch must be >= 1");
  const std::uint64_t b =
      (num_rows() + static_cast<std::uint64_t>(batch) - 1) / static_cast<std::uint64_t>(batch);
  return static_cast<int>(std::min<std::uint64_t>(b, INT_MAX));
}

std::uint64_t SampleOrder::row_of(std::uint64_t sample) {
  const std::uint64_t epoch = sample / n_;
  if (!cached_ || epoch != epoch_) {
    perm_ = window_permutation(n_, seed_, epoch);
    epoch_ = epoch;
    cached_ = true;
  }
  return perm_[sample % n_];
}

}  // namespace peftrun
