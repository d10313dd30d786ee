// tokenizer.json "pre_tokenizer": cuts each normalised piece into the words BPE runs on (and,
// for byte-level models, rewrites the bytes into GPT-2's alphabet, byte_level.h).
//
// Supported types: ByteLevel (with or without its built-in GPT-2 regex), Split (regex or
// string; Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous; invert), Metaspace
// (prepend_scheme always/first/never, split), Digits and Sequence: what GPT-2, SmolLM, Llama 3,
// Qwen2 and Metaspace-style Llama 2 / Mistral files use. Others are refused naming the type.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/tokenizer/aligned_text.h"
#include "runtime/tokenizer/json_fields.h"

namespace peftrun::tok {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Appends the non-empty words `piece` splits into, in order.
  virtual void split(AlignedText piece, std::vector<AlignedText>& out) const = 0;
};

// `spec` is tokenizer.json's "pre_tokenizer" value; null gives nullptr (the piece is one word).
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const Json& spec, const std::string& where);

}  // namespace peftrun::tok
