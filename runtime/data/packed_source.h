// data.format: text, prompt_completion, chat. Rows planned by plan_rows (packed or padded) over
// a tokenized corpus. In a row, chunk j's tokens get positions 0, 1, ... and segment id j;
// unused slots get input 0, target -100, position 0 and segment -1.
#pragma once

#include <string>

#include "runtime/data/data_source.h"
#include "runtime/data/packed_rows.h"
#include "runtime/data/tokenized_corpus.h"

namespace peftrun {

class PackedSource : public DataSource {
 public:
  // Throws std::runtime_error naming `path` when the corpus gives no row at all.
  PackedSource(TokenizedCorpus corpus, int seq_len, bool packing, std::uint64_t seed,
               std::string path);

  std::uint64_t num_rows() const override { return rows_.num_rows(); }
  bool uses_segments() const override { return true; }
  std::string describe() const override;
  void fill_batch(std::uint64_t first_sample, int batch, const BatchBuffers& out) override;
  int fill_eval_batch(int batch_index, int batch, const BatchBuffers& out) const override;

  const TokenizedCorpus& corpus() const { return corpus_; }
  const PackedRows& rows() const { return rows_; }

 private:
  void fill_row(std::uint64_t row, std::size_t slot, const BatchBuffers& out) const;
  void fill_padding(std::size_t slot, const BatchBuffers& out) const;

  TokenizedCorpus corpus_;
  PackedRows rows_;
  int seq_len_;
  bool packing_;
  std::string path_;
  SampleOrder order_;
};

}  // namespace peftrun
