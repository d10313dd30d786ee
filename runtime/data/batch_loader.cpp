#include "runtime/data/batch_loader.h"

#include <algorithm>
#include <climits>
#include <numeric>
#include <stdexcept>
#include <utility>

#include "kernels/cross_entropy.h"

namespace peftrun {

namespace {

// splitmix64's output function: a bijection on 64-bit values with good avalanche, so nearby
// inputs (seed, seed + 1; epoch, epoch + 1) give unrelated streams.
std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t state) : state_(state) {}
  std::uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ull;
    return mix64(state_);
  }
  // Uniform in [0, n), n >= 1, without modulo bias: reject the lowest (2^64 mod n) raw values
  // so the remaining range is an exact multiple of n.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t threshold = (0 - n) % n;  // == 2^64 mod n
    for (;;) {
      const std::uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

 private:
  std::uint64_t state_;
};

}  // namespace

std::vector<std::uint64_t> window_permutation(std::uint64_t num_windows, std::uint64_t seed,
                                              std::uint64_t epoch) {
  std::vector<std::uint64_t> perm(num_windows);
  std::iota(perm.begin(), perm.end(), std::uint64_t{0});
  SplitMix64 rng(mix64(mix64(seed) + epoch));
  for (std::uint64_t i = num_windows; i > 1; --i) {
    const std::uint64_t j = rng.below(i);  // position i-1 swaps with a uniform j in [0, i)
    std::swap(perm[i - 1], perm[j]);
  }
  return perm;
}

BatchLoader::BatchLoader(TokenFile file, int seq_len, std::uint64_t seed)
    : file_(std::move(file)), seq_len_(seq_len), seed_(seed), num_windows_(0), order_(0, seed) {
  if (seq_len < 1) {
    throw std::invalid_argument("BatchLoader: seq_len must be >= 1, got " +
                                std::to_string(seq_len));
  }
  const std::uint64_t n = file_.tokens.size();
  num_windows_ = n == 0 ? 0 : (n - 1) / static_cast<std::uint64_t>(seq_len);
  if (num_windows_ == 0) {
    throw std::runtime_error("token file '" + file_.path + "' has " + std::to_string(n) +
                             " tokens, fewer than one training window of seq_len + 1 = " +
                             std::to_string(seq_len + std::uint64_t{1}) + " tokens (seq_len " +
                             std::to_string(seq_len) + "); use more data or a shorter seq_len");
  }
  order_ = SampleOrder(num_windows_, seed);
}

std::uint64_t BatchLoader::window_of(std::uint64_t sample) {
  return order_.row_of(sample);
}

void BatchLoader::copy_window(std::uint64_t window, std::size_t row, std::int32_t* inputs,
                              std::int32_t* targets, std::int32_t* positions) const {
  const auto L = static_cast<std::size_t>(seq_len_);
  const std::int32_t* src = file_.tokens.data() + window * L;
  std::copy(src, src + L, inputs + row * L);
  std::copy(src + 1, src + L + 1, targets + row * L);
  if (positions != nullptr) std::iota(positions + row * L, positions + (row + 1) * L, 0);
}

void BatchLoader::fill_batch(std::uint64_t first_sample, int batch_size, std::int32_t* inputs,
                             std::int32_t* targets, std::int32_t* positions) {
  if (batch_size < 0) throw std::invalid_argument("BatchLoader::fill_batch: negative batch_size");
  for (int r = 0; r < batch_size; ++r) {
    copy_window(window_of(first_sample + static_cast<std::uint64_t>(r)),
                static_cast<std::size_t>(r), inputs, targets, positions);
  }
}

int BatchLoader::num_eval_batches(int batch_size) const {
  if (batch_size < 1) {
    throw std::invalid_argument("BatchLoader::num_eval_batches: batch_size must be >= 1");
  }
  const std::uint64_t b = (num_windows_ + static_cast<std::uint64_t>(batch_size) - 1) /
                          static_cast<std::uint64_t>(batch_size);
  // More than INT_MAX eval batches is not a realistic evaluation; clamping keeps the int API.
  return static_cast<int>(std::min<std::uint64_t>(b, INT_MAX));
}

int BatchLoader::fill_eval_batch(int batch_index, int batch_size, std::int32_t* inputs,
                                 std::int32_t* targets, std::int32_t* positions) const {
  const int n_batches = num_eval_batches(batch_size);
  if (batch_index < 0 || batch_index >= n_batches) {
    throw std::out_of_range("BatchLoader::fill_eval_batch: batch " + std::to_string(batch_index) +
                            " outside [0, " + std::to_string(n_batches) + ") for '" + file_.path +
                            "'");
  }
  const auto L = static_cast<std::size_t>(seq_len_);
  const std::uint64_t first = static_cast<std::uint64_t>(batch_index) * batch_size;
  int real = 0;
  for (int r = 0; r < batch_size; ++r) {
    const auto row = static_cast<std::size_t>(r);
    const std::uint64_t w = first + static_cast<std::uint64_t>(r);
    if (w < num_windows_) {
      copy_window(w, row, inputs, targets, positions);
      ++real;
    } else {
      std::fill(inputs + row * L, inputs + (row + 1) * L, 0);
      std::fill(targets + row * L, targets + (row + 1) * L, cpu::kIgnoreIndex);
      if (positions != nullptr) std::iota(positions + row * L, positions + (row + 1) * L, 0);
    }
  }
  return real;
}

}  // namespace peftrun
