// The JSONL dataset formats: one JSON object -> token ids plus, per token, whether the model is
// trained to predict it (docs/DATA.md):
//
//   text               {"text": "..."}                     every token trained
//   prompt_completion  {"prompt": "...", "completion": "..."}  only completion tokens trained
//   chat               {"messages": [{"role": ..., "content": ...}, ...]}
//                                                          only assistant replies trained
//
// text and prompt_completion get the model's BOS/EOS convention (ModelTokens: prefix and
// suffix) and, with append_eos, the EOS after the document; a chat is rendered with a built-in
// template (chat_template.h), which writes its own BOS and end-of-turn tokens. The whole text of
// an example is encoded in one piece, as a model sees it at inference; a token is trained when
// the original bytes it came from overlap the trained part (so a token straddling the
// prompt/completion boundary is trained, as in transformers' assistant masks).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "configs/config.h"
#include "runtime/tokenizer/model_tokens.h"
#include "runtime/tokenizer/tokenizer.h"

namespace peftrun {

struct TokenizedExample {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> trained;  // 1 = a loss target when the model predicts this token
};

struct FormatContext {
  const Tokenizer& tokenizer;
  const ModelTokens& model_tokens;
  ChatTemplate chat_template;  // resolved (not kAuto) for the chat format
  bool append_eos;
};

// Throws std::invalid_argument saying what is wrong with `example` (a missing or mistyped
// field, a bad conversation, text that is not valid UTF-8); the caller adds FILE:LINE.
TokenizedExample tokenize_example(const nlohmann::json& example, DataFormat format,
                                  const FormatContext& context);

}  // namespace peftrun
