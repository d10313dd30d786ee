// Built-in chat templates: a conversation (JSONL "messages") rendered to the exact text the
// model family's own Jinja template produces for plain system/user/assistant turns, plus the
// byte ranges of that text the model is trained on (the assistant replies with their end
// token). peftrun has no Jinja engine; docs/DATA.md gives each template in full.
//
//   chatml   (Qwen2, SmolLM)  <|im_start|>ROLE\nCONTENT<|im_end|>\n  for every message
//   llama3                    BOS then
//   <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>
//                             (CONTENT stripped of surrounding whitespace)
//   llama2                    BOS[INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER [/INST] REPLY EOS ...
//                             (roles alternate user/assistant after an optional system message)
//   mistral                   BOS[INST] USER [/INST]REPLYEOS[INST] ...  (a system message is put
//                             before the first user message, separated by a blank line)
//   gemma                     BOS<start_of_turn>user\nUSER<end_of_turn>\n
//                             <start_of_turn>model\nREPLY<end_of_turn>\n ...  (Gemma 3's: a
//                             system message and a blank line open the first user turn)
//
// Trained: chatml "CONTENT<|im_end|>", llama3 "CONTENT<|eot_id|>", llama2 " REPLY EOS",
// mistral "REPLYEOS", gemma "REPLY<end_of_turn>", for assistant messages only.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "configs/config.h"

namespace peftrun {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

struct RenderedChat {
  std::string text;
  std::vector<std::pair<std::size_t, std::size_t>> trained;  // byte ranges of `text`
};

// `bos` / `eos` are the tokenizer's special token texts ("" when it has none). Throws
// std::invalid_argument saying what is wrong with the conversation (unknown role, roles out of
// order for llama2/mistral, no BOS/EOS where the template needs one).
RenderedChat render_chat(ChatTemplate tmpl, const std::vector<ChatMessage>& messages,
                         const std::string& bos, const std::string& eos);

// The built-in template matching a model's Jinja chat template, recognised by the markers
// each family uses; kAuto when none matches.
ChatTemplate detect_chat_template(const std::string& jinja);

}  // namespace peftrun
