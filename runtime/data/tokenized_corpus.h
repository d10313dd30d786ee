// A tokenized JSONL dataset: every document's ids and trained flags, back to back. This is what
// the cache stores (dataset_cache.h) and what rows are packed from (packed_rows.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/data/example_formats.h"

namespace peftrun {

struct TokenizedCorpus {
  std::vector<std::int32_t> tokens;
  std::vector<std::uint8_t> trained;          // per token: 1 = a loss target when predicted
  std::vector<std::uint64_t> doc_offsets{0};  // document d = [doc_offsets[d], doc_offsets[d+1])

  std::size_t num_docs() const { return doc_offsets.size() - 1; }
  void add(const TokenizedExample& ex);
};

struct CorpusStats {
  std::uint64_t lines = 0;      // non-blank lines read
  std::uint64_t bad_lines = 0;  // malformed, skipped (data.skip_bad_lines)
  std::uint64_t no_target = 0;  // well-formed but nothing to train on (e.g. empty text)
  std::string first_bad;        // "FILE:LINE: why" of the first skipped line
};

// Reads and tokenizes every line of a JSONL file. A malformed line throws DataLineError
// ("FILE:LINE: what is wrong") unless `skip_bad_lines`, which counts it in `stats` instead.
// Documents with no trained token after the first (nothing to predict) are dropped and counted.
TokenizedCorpus tokenize_jsonl(const std::string& path, DataFormat format,
                               const FormatContext& context, bool skip_bad_lines,
                               CorpusStats& stats);

}  // namespace peftrun
