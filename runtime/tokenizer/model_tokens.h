// What a model folder says about its special tokens, beyond tokenizer.json: BOS and EOS, whether
// each document starts/ends with them, and the chat template. The sources, in order:
//
//   tokenizer_config.json  bos_token / eos_token (a string or {"content": ...}),
//                          add_bos_token / add_eos_token (when present they decide, as
//                          transformers' Llama/Mistral fast tokenizers do), chat_template
//                          (a string, or a list of {name, template}: "default" or the first)
//   chat_template.jinja    the chat template, when tokenizer_config.json has none
//   generation_config.json eos_token_id (an id or a list: the first), then config.json's
//                          eos_token_id / bos_token_id, for ids tokenizer_config.json lacks
//   tokenizer.json         the post-processor's template (what add_special_tokens=True adds)
//                          when add_bos_token / add_eos_token are absent
//
// Llama 2 / Mistral: "<s>" before every document (template and add_bos_token), EOS "</s>";
// Llama 3: "<|begin_of_text|>" from the template, EOS from tokenizer_config.json; Qwen2: no
// BOS, EOS "<|im_end|>" (instruct) or "<|endoftext|>" (base); GPT-2 / SmolLM: no BOS added.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace peftrun {

struct ModelTokens {
  std::vector<std::int32_t> prefix;  // ids put before every document (BOS when the model adds it)
  std::vector<std::int32_t> suffix;  // ids put after every document by the tokenizer itself
  std::optional<std::int32_t> bos_id, eos_id;
  std::string bos_token, eos_token;  // their text; "" when there is none
  std::string chat_template;         // Jinja source; "" when the folder has none
  std::string chat_template_source;  // the file it came from
  std::string digest;                // SHA-256 over the files read, for cache keys

  std::string describe(const Tokenizer& tokenizer) const;  // one line for the log
};

// `tokenizer_path` is what Tokenizer::load was given (a folder or a tokenizer.json); the other
// files are looked for next to it and are all optional. Throws std::runtime_error naming the
// file on malformed JSON or a token that is not in the vocabulary.
ModelTokens read_model_tokens(const std::string& tokenizer_path, const Tokenizer& tokenizer);

}  // namespace peftrun
