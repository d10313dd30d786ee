// tokenizer.json "post_processor": the special tokens encode(..., add_special_tokens=true) puts
// around a single sequence. TemplateProcessing (Llama 2 / Mistral "<s> $A", Llama 3
// "<|begin_of_text|> $A"), ByteLevel (offsets only: no ids) and Sequence of these are supported;
// pair templates are read but not used (peftrun encodes single sequences).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tokenizer/json_fields.h"

namespace peftrun::tok {

struct PostProcessor {
  std::vector<std::int32_t> prefix;  // special ids before the sequence ($A)
  std::vector<std::int32_t> suffix;  // and after it

  // `spec` is tokenizer.json's "post_processor" (null = nothing added).
  static PostProcessor parse(const Json& spec, const std::string& where);
};

}  // namespace peftrun::tok
