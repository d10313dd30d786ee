// tokenizer.json "normalizer": rewrites each piece of input text between added tokens before
// pre-tokenization, keeping the byte alignment to the original (aligned_text.h).
//
// Supported types: NFC, NFD, NFKC, NFKD (utf8proc), Lowercase, Replace, Prepend, Strip,
// StripAccents and Sequence of these: what Llama 2 / Mistral (Prepend + Replace) and Qwen2 (NFC)
// files use. Anything else is refused naming the file and the type.
#pragma once

#include <memory>
#include <string>

#include "runtime/tokenizer/aligned_text.h"
#include "runtime/tokenizer/json_fields.h"

namespace peftrun::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(AlignedText& text) const = 0;
};

// `spec` is tokenizer.json's "normalizer" value; null gives nullptr (no normalizer).
std::unique_ptr<Normalizer> parse_normalizer(const Json& spec, const std::string& where);

}  // namespace peftrun::tok
