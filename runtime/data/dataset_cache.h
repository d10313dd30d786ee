// Tokenized JSONL cached next to its source, so a run does not re-tokenize an unchanged file:
//
//   SOURCE.peftrun-cache/<id>.safetensors
//
// <id> is a digest of what shapes the tokens apart from the file's bytes (tokenizer files,
// format, BOS/EOS convention, chat template, skip_bad_lines), so each tokenizer/format pair has
// its own file. Inside, tensors `tokens` (I32), `trained` (U8) and `doc_offsets` (I64) and, as
// metadata, the full key (which adds the SHA-256 of the source file), a SHA-256 of the tensor
// bytes and the corpus statistics. A cache whose key differs (the source or tokenizer changed)
// is stale, one whose bytes do not hash to the recorded digest or do not form a valid corpus is
// corrupt: both are rebuilt, never trusted. Writes are atomic (runtime/io/file_io.h).
#pragma once

#include <optional>
#include <string>

#include "runtime/data/tokenized_corpus.h"

namespace peftrun {

struct DatasetCacheKey {
  std::string options;        // everything but the source bytes
  std::string source_digest;  // SHA-256 of the source file

  std::string path_for(const std::string& source) const;  // SOURCE.peftrun-cache/<id>.safetensors
  std::string full() const { return options + "|source=" + source_digest; }
};

// The cached corpus when `path` holds a valid cache for `key` (its token ids below
// `vocab_size`); else nullopt with `why` saying so ("no cache", "stale: ...", "corrupt: ...").
std::optional<TokenizedCorpus> load_dataset_cache(const std::string& path,
                                                  const DatasetCacheKey& key,
                                                  std::int32_t vocab_size, CorpusStats& stats,
                                                  std::string& why);

// Writes the cache atomically, creating the folder; throws std::runtime_error naming the file
// on failure.
void store_dataset_cache(const std::string& path, const DatasetCacheKey& key,
                         const TokenizedCorpus& corpus, const CorpusStats& stats);

}  // namespace peftrun
