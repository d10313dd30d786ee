// A Hugging Face tokenizer.json, run natively: the same ids as the `tokenizers` library for the
// BPE families peftrun fine-tunes (byte-level BPE: GPT-2, SmolLM, Llama 3, Qwen2;
// SentencePiece-style BPE with byte fallback: Llama 2, Mistral). tests/tokenizer_test.cpp
// checks every id against fixtures made by tests/tokenizer/make_fixtures.py.
//
//   text -> added tokens matched (raw) -> normalizer -> added tokens matched (normalised)
//        -> pre_tokenizer -> BPE per word -> [post_processor's special tokens]
//
// Every token also gets the byte span of the original text it came from, which is how datasets
// mask prompt tokens of a whole-string encoding (runtime/data/).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/added_vocabulary.h"
#include "runtime/tokenizer/bpe_model.h"
#include "runtime/tokenizer/decoder.h"
#include "runtime/tokenizer/normalizer.h"
#include "runtime/tokenizer/post_processor.h"
#include "runtime/tokenizer/pre_tokenizer.h"

namespace peftrun {

struct Encoding {
  std::vector<std::int32_t> ids;
  // Byte span [begin, end) of the input each token came from; a special token added by the
  // post-processor has the empty span at the start (prefix) or end (suffix) of the input.
  std::vector<tok::ByteSpan> offsets;
};

class Tokenizer {
 public:
  // `path` is a model folder holding tokenizer.json, or the tokenizer.json file itself. Throws
  // std::runtime_error naming the file (and the JSON key) on anything it cannot read or does
  // not support.
  static Tokenizer load(const std::string& path);
  // From tokenizer.json text; `source` names it in messages.
  static Tokenizer from_json(std::string_view json_text, const std::string& source);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Throws std::runtime_error when `text` is not valid UTF-8 (naming the byte offset).
  Encoding encode(std::string_view text, bool add_special_tokens) const;
  std::vector<std::int32_t> encode_ids(std::string_view text, bool add_special_tokens) const {
    return encode(text, add_special_tokens).ids;
  }
  // tokenizers' decode: ids outside the vocabulary are skipped; with skip_special_tokens the
  // special added tokens are too.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const;

  // Added tokens first, then the model vocabulary.
  std::optional<std::int32_t> token_to_id(const std::string& token) const;
  std::optional<std::string> id_to_token(std::int32_t id) const;
  bool is_special(std::int32_t id) const;
  // One more than the largest id of the vocabulary and the added tokens: the embedding rows a
  // model needs.
  std::int32_t vocab_size() const;

  const std::string& source() const { return source_; }
  // SHA-256 of the tokenizer.json bytes (hex).
  const std::string& digest() const { return digest_; }
  // The special ids encode(..., true) adds before and after the text.
  const tok::PostProcessor& post_processor() const { return post_; }

 private:
  Tokenizer() = default;
  std::string source_, digest_;
  std::unique_ptr<tok::Normalizer> normalizer_;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer_;
  tok::BpeModel model_;
  tok::AddedVocabulary added_;
  tok::PostProcessor post_;
  std::unique_ptr<tok::Decoder> decoder_;
};

}  // namespace peftrun
