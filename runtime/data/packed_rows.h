// How documents become training rows of seq_len next-token predictions (docs/DATA.md).
//
// A document of n tokens gives n - 1 predictions (input token k, target token k + 1). Longer
// documents are cut into chunks of at most seq_len predictions; a chunk continues where the
// previous one stopped (every target is predicted once) and starts its own positions at 0.
// Chunks with no trained target are dropped. Then
//   packing: chunks are packed into rows by best-fit decreasing (longest first, each into the
//            fullest row it still fits), so rows are nearly full; attention and RoPE positions
//            restart at every chunk (segment ids), so packed documents never see each other;
//   padding: one chunk per row, the rest of the row ignored.
// The plan is a pure function of the corpus and seq_len; the sample order over rows is the same
// seeded per-epoch permutation as for token files.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/data/tokenized_corpus.h"

namespace peftrun {

struct PackedRows {
  struct Chunk {
    std::uint64_t first;   // corpus index of the first input token
    std::uint32_t length;  // predictions: inputs tokens[first, first + length), targets + 1
  };
  std::vector<Chunk> chunks;                  // grouped by row
  std::vector<std::uint64_t> row_offsets{0};  // row r = chunks[row_offsets[r], row_offsets[r+1])

  std::uint64_t num_rows() const { return row_offsets.size() - 1; }
};

PackedRows plan_rows(const TokenizedCorpus& corpus, int seq_len, bool packing);

}  // namespace peftrun
