// Turns a token stream into next-token-prediction training windows.
//
// The mapping is STATELESS: global sample index -> window is a pure function of (seed, index),
// so resuming at step s only needs s (no saved loader state or RNG), and ranks of a data-parallel
// run can each take their slice of the same global sample sequence. See docs/DATA.md.
//
//   num_windows = (num_tokens - 1) / seq_len; window w = tokens[w*seq_len, w*seq_len + seq_len]
//   (seq_len + 1 tokens; inputs are the first seq_len, targets the last seq_len).
//   Sample i is in epoch e = i / num_windows and uses window perm_e[i % num_windows], where
//   perm_e = window_permutation(num_windows, seed, e). Every window is used once per epoch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/data/data_source.h"
#include "runtime/data/token_file.h"

namespace peftrun {

// The permutation of [0, num_windows) for one epoch: Fisher-Yates driven by splitmix64 seeded
// from (seed, epoch), with a rejection-sampled bounded draw. Defined bit-exactly (docs/DATA.md)
// rather than with <random> distributions, whose output differs between standard libraries.
std::vector<std::uint64_t> window_permutation(std::uint64_t num_windows, std::uint64_t seed,
                                              std::uint64_t epoch);

class BatchLoader {
 public:
  // Throws std::invalid_argument if seq_len < 1, and std::runtime_error naming the file, its
  // token count and seq_len when it holds fewer than seq_len + 1 tokens (not one full window).
  BatchLoader(TokenFile file, int seq_len, std::uint64_t seed);

  const std::string& path() const { return file_.path; }
  const TokenFile& file() const { return file_; }
  int seq_len() const { return seq_len_; }
  std::uint64_t seed() const { return seed_; }
  std::uint64_t num_tokens() const { return file_.tokens.size(); }
  std::uint64_t num_windows() const { return num_windows_; }

  std::uint64_t epoch_of(std::uint64_t sample) const { return sample / num_windows_; }
  // The window (index in file order) that global sample `sample` trains on.
  std::uint64_t window_of(std::uint64_t sample);

  // Training batch: rows r = 0..batch_size-1 hold samples first_sample + r. inputs, targets
  // and positions are [batch_size, seq_len] row-major; positions are 0..seq_len-1 in every row
  // (positions may be null when the caller does not need them). A batch may straddle an epoch
  // boundary. Not thread-safe: it caches the current epoch's permutation, so the common case
  // (consecutive batches of one epoch) costs one copy per row.
  void fill_batch(std::uint64_t first_sample, int batch_size, std::int32_t* inputs,
                  std::int32_t* targets, std::int32_t* positions);

  // Evaluation walks all windows once, in file order, without shuffling:
  // ceil(num_windows / batch_size) batches. Batch b holds windows b*batch_size + r. When the
  // last batch is partial, its missing rows get inputs 0 and targets kIgnoreIndex (-100, see
  // kernels/cross_entropy.h), so they add nothing to the loss; the return value is the number
  // of real rows. Throws std::out_of_range for a batch_index outside [0, num_eval_batches).
  int num_eval_batches(int batch_size) const;
  int fill_eval_batch(int batch_index, int batch_size, std::int32_t* inputs, std::int32_t* targets,
                      std::int32_t* positions) const;

 private:
  void copy_window(std::uint64_t window, std::size_t row, std::int32_t* inputs,
                   std::int32_t* targets, std::int32_t* positions) const;

  TokenFile file_;
  int seq_len_;
  std::uint64_t seed_;
  std::uint64_t num_windows_;
  SampleOrder order_;  // the current epoch's permutation, regenerated once per epoch
};

}  // namespace peftrun
