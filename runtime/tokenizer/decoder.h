// tokenizer.json "decoder": turns token strings back into text. Supported: ByteLevel, Metaspace,
// Replace, ByteFallback, Fuse, Strip and Sequence (what GPT-2 / Llama 3 / Qwen2 / SmolLM and
// Llama 2 / Mistral files use). Without a decoder, tokens are joined with spaces, as in
// tokenizers.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/tokenizer/json_fields.h"

namespace peftrun::tok {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // One step of the chain: tokens in, tokens out (tokenizers' decode_chain).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

std::unique_ptr<Decoder> parse_decoder(const Json& spec, const std::string& where);

// Bytes -> text, each maximal invalid UTF-8 subpart replaced by U+FFFD (Rust's
// String::from_utf8_lossy, which tokenizers' ByteLevel decoder uses).
std::string utf8_lossy(const std::string& bytes);

}  // namespace peftrun::tok
