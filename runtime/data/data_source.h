// Where the trainer and the evaluator get their batches: token files (token_window_source.h) or
// tokenized JSONL rows (packed_source.h). Every buffer is [batch, seq_len] row-major:
//   inputs     token ids
//   targets    the id to predict, or -100 (kernels/cross_entropy.h's ignore index)
//   positions  RoPE positions
//   segments   document id per token, for attention that stays inside a document
//
// Training batches are a pure function of the global sample index (and the seed): sample i is
// row perm_e[i % num_rows] of epoch e = i / num_rows (window_permutation, docs/DATA.md), so
// resume and data-parallel sharding only need the index.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace peftrun {

struct BatchBuffers {
  std::int32_t* inputs;
  std::int32_t* targets;
  std::int32_t* positions;
  std::int32_t* segments;  // filled only when DataSource::uses_segments()
};

class DataSource {
 public:
  virtual ~DataSource() = default;

  virtual std::uint64_t num_rows() const = 0;  // rows (training samples) per epoch
  // Whether rows hold several documents: then Batch::segments must be passed to the model.
  virtual bool uses_segments() const = 0;
  // For the log: "1234 training windows of 128 tokens".
  virtual std::string describe() const = 0;

  // Rows r = 0..batch-1 hold global samples first_sample + r (shuffled per epoch).
  virtual void fill_batch(std::uint64_t first_sample, int batch, const BatchBuffers& out) = 0;
  // Every row once, in order: ceil(num_rows / batch) batches; a partial last batch is padded
  // with rows whose targets are all -100. Returns the number of real rows.
  int num_eval_batches(int batch) const;
  virtual int fill_eval_batch(int batch_index, int batch, const BatchBuffers& out) const = 0;
};

// The row sample i trains on: perm_e[i % n] of epoch e = i / n, with perm_e =
// window_permutation(n, seed, e) (batch_loader.h), the current epoch's permutation cached.
class SampleOrder {
 public:
  SampleOrder(std::uint64_t num_rows, std::uint64_t seed) : n_(num_rows), seed_(seed) {}
  std::uint64_t row_of(std::uint64_t sample);

 private:
  std::uint64_t n_, seed_;
  bool cached_ = false;
  std::uint64_t epoch_ = 0;
  std::vector<std::uint64_t> perm_;
};

}  // namespace peftrun
