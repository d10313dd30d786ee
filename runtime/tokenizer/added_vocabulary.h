// tokenizer.json "added_tokens": special and added tokens, matched in the text before anything
// else so that "<|im_start|>" typed in the input becomes its id, not BPE pieces.
//
// As in tokenizers: tokens with normalized: false are matched in the raw text first; the rest of
// the text is normalised and then tokens with normalized: true are matched in the normalised
// text. Matching is leftmost-longest; single_word tokens match only between non-word characters;
// lstrip / rstrip tokens swallow the whitespace on their left / right.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/tokenizer/aligned_text.h"
#include "runtime/tokenizer/json_fields.h"
#include "runtime/tokenizer/normalizer.h"

namespace peftrun::tok {

struct AddedToken {
  std::int32_t id = 0;
  std::string content;
  // What is matched and what decode() writes: `content`, or for normalized tokens `content`
  // after the normalizer (tokenizers matches those in normalised text).
  std::string pattern;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// A piece of input: an added token (id >= 0) or text still to tokenize (id < 0).
struct InputPiece {
  AlignedText text;
  std::int32_t id = -1;
};

class AddedVocabulary {
 public:
  // `list` is tokenizer.json's "added_tokens" array; `normalizer` (may be null) gives the
  // patterns of normalized tokens.
  static AddedVocabulary parse(const Json& list, const std::string& where,
                               const Normalizer* normalizer);

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  std::optional<std::int32_t> token_to_id(const std::string& content) const;
  const AddedToken* find_id(std::int32_t id) const;
  bool is_special(const std::string& content) const;

  // Splits `piece` around the tokens whose `normalized` flag equals `normalized`, appending the
  // pieces (empty ones dropped) to `out`.
  void split(const AlignedText& piece, bool normalized, std::vector<InputPiece>& out) const;

 private:
  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string, std::size_t> by_content_;
  std::unordered_map<std::int32_t, std::size_t> by_id_;
  // Candidates per first byte, longest content first, separately for the two passes.
  std::vector<std::size_t> by_first_byte_[2][256];
};

}  // namespace peftrun::tok
