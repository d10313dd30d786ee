// tokenizer.json "model" of type BPE: a vocabulary, ranked merges and the options real files
// use: byte_fallback (<0xNN> tokens for characters outside the vocabulary, Llama 2 / Mistral),
// unk_token with fuse_unk, ignore_merges (a word that is itself in the vocabulary is one token,
// Llama 3), continuing_subword_prefix / end_of_word_suffix. Merges may be "a b" strings or
// ["a", "b"] pairs. BPE dropout is refused (it makes encoding random).
//
// Merging follows tokenizers exactly: repeatedly apply the lowest-ranked merge among adjacent
// symbol pairs, leftmost first, with a heap (O(n log n) per word); results are cached per word.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/tokenizer/json_fields.h"

namespace peftrun::tok {

struct WordToken {
  std::int32_t id;
  std::uint32_t begin, end;  // byte offsets inside the word
};

class BpeModel {
 public:
  // `spec` is tokenizer.json's "model"; throws naming `where` on anything malformed (a merge of
  // unknown tokens, a merge result missing from the vocabulary, an unk_token not in it, ...).
  static BpeModel parse(const Json& spec, const std::string& where);

  BpeModel() = default;
  BpeModel(BpeModel&& other) noexcept;
  BpeModel& operator=(BpeModel&& other) noexcept;

  // Appends the tokens of one pre-tokenized, non-empty word.
  void tokenize(std::string_view word, std::vector<WordToken>& out) const;

  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  // nullptr when `id` is not in the vocabulary.
  const std::string* id_to_token(std::int32_t id) const;
  std::int32_t max_id() const { return static_cast<std::int32_t>(id_to_token_.size()) - 1; }

 private:
  void merge_word(std::string_view word, std::vector<WordToken>& out) const;

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>> vocab_;
  std::vector<std::string> id_to_token_;  // "" for ids the vocabulary skips
  std::vector<bool> has_id_;
  struct Merge {
    std::int32_t rank, new_id;
  };
  std::unordered_map<std::uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  std::optional<std::int32_t> unk_id_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::string continuing_prefix_, end_suffix_;
  std::int32_t byte_ids_[256] = {};  // <0xNN> ids when byte_fallback (-1 = missing)

  // Word -> tokens. Encoding is single-threaded in practice; the mutex keeps it correct anyway.
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<WordToken>, StringHash, std::equal_to<>>
      cache_;
};

}  // namespace peftrun::tok
