#include "runtime/data/chat_template.h"

#include <initializer_list>
#include <string_view>

#include "runtime/tokenizer/unicode.h"

namespace peftrun {

namespace {

// Python's str.strip() (what Jinja's trim and .strip() do): White_Space plus U+001C..U+001F.
std::string strip(const std::string& s) {
  auto space = [](char32_t cp) { return tok::is_whitespace(cp) || (cp >= 0x1C && cp <= 0x1F); };
  std::size_t b = 0, e = s.size();
  while (b < e) {
    std::size_t n = 0;
    if (!space(tok::decode_utf8(s, b, &n))) break;
    b += n;
  }
  while (e > b) {
    std::size_t start = e - 1;
    while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    std::size_t n = 0;
    if (!space(tok::decode_utf8(s, start, &n))) break;
    e = start;
  }
  return s.substr(b, e - b);
}

// Concatenation by appending: chains of operator+ starting at a literal trip GCC 12's
// -Wrestrict false positive.
std::string cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

class Builder {
 public:
  void text(const std::string& s) { out_.text += s; }
  void trained(const std::string& s) {
    const std::size_t b = out_.text.size();
    out_.text += s;
    if (!s.empty()) out_.trained.emplace_back(b, out_.text.size());
  }
  RenderedChat take() { return std::move(out_); }

 private:
  RenderedChat out_;
};

void need(const std::string& token, const char* what, const char* tmpl) {
  if (token.empty()) {
    throw std::invalid_argument(std::string("the ") + tmpl + " chat template needs a " + what +
                                " token, and the tokenizer has none");
  }
}

RenderedChat chatml(const std::vector<ChatMessage>& messages) {
  Builder b;
  for (const ChatMessage& m : messages) {
    b.text(cat({"<|im_start|>", m.role, "\n"}));
    if (m.role == "assistant") {
      b.trained(cat({m.content, "<|im_end|>"}));
    } else {
      b.text(cat({m.content, "<|im_end|>"}));
    }
    b.text("\n");
  }
  return b.take();
}

RenderedChat llama3(const std::vector<ChatMessage>& messages, const std::string& bos) {
  need(bos, "BOS", "llama3");
  Builder b;
  b.text(bos);
  for (const ChatMessage& m : messages) {
    b.text(cat({"<|start_header_id|>", m.role, "<|end_header_id|>\n\n"}));
    const std::string body = cat({strip(m.content), "<|eot_id|>"});
    if (m.role == "assistant") {
      b.trained(body);
    } else {
      b.text(body);
    }
  }
  return b.take();
}

// llama2 and mistral: an optional system message, then user/assistant alternating from user.
void check_alternation(const std::vector<ChatMessage>& messages, std::size_t first,
                       const char* tmpl) {
  for (std::size_t i = first; i < messages.size(); ++i) {
    const char* expected = (i - first) % 2 == 0 ? "user" : "assistant";
    if (messages[i].role != expected) {
      throw std::invalid_argument(std::string("the ") + tmpl +
                                  " chat template needs an optional system message and then "
                                  "user/assistant turns alternating from user; message " +
                                  std::to_string(i) + " is '" + messages[i].role + "', expected '" +
                                  expected + "'");
    }
  }
}

// The [INST] templates (llama2, mistral) need BOS and EOS and turns alternating from user after
// an optional system message; returns the index of the first user turn.
std::size_t inst_turns_start(const std::vector<ChatMessage>& messages, const std::string& bos,
                             const std::string& eos, const char* tmpl) {
  need(bos, "BOS", tmpl);
  need(eos, "EOS", tmpl);
  const std::size_t first = !messages.empty() && messages[0].role == "system" ? 1 : 0;
  check_alternation(messages, first, tmpl);
  return first;
}

RenderedChat llama2(const std::vector<ChatMessage>& messages, const std::string& bos,
                    const std::string& eos) {
  const std::size_t first = inst_turns_start(messages, bos, eos, "llama2");
  const bool has_system = first == 1;
  Builder b;
  for (std::size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      std::string content = m.content;
      if (i == first && has_system) {
        content = cat({"<<SYS>>\n", messages[0].content, "\n<</SYS>>\n\n", m.content});
      }
      b.text(cat({bos, "[INST] ", strip(content), " [/INST]"}));
    } else {
      b.trained(cat({" ", strip(m.content), " ", eos}));
    }
  }
  return b.take();
}

RenderedChat mistral(const std::vector<ChatMessage>& messages, const std::string& bos,
                     const std::string& eos) {
  const std::size_t first = inst_turns_start(messages, bos, eos, "mistral");
  const bool has_system = first == 1;
  Builder b;
  b.text(bos);
  for (std::size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      const std::string content =
          i == first && has_system ? cat({messages[0].content, "\n\n", m.content}) : m.content;
      b.text(cat({"[INST] ", content, " [/INST]"}));
    } else {
      b.trained(cat({m.content, eos}));
    }
  }
  return b.take();
}

// Gemma 3's template (Gemma 1 and 2 refuse a system message instead): BOS, then
// <start_of_turn>ROLE\nCONTENT<end_of_turn>\n per turn with the assistant's role written
// "model" and CONTENT stripped, turns alternating from user; a system message's text, unstripped,
// and a blank line open the first user turn.
RenderedChat gemma(const std::vector<ChatMessage>& messages, const std::string& bos) {
  need(bos, "BOS", "gemma");
  const std::size_t first = messages[0].role == "system" ? 1 : 0;
  check_alternation(messages, first, "gemma");
  Builder b;
  b.text(bos);
  for (std::size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      const std::string prefix = i == first && first == 1 ? cat({messages[0].content, "\n\n"}) : "";
      b.text(cat({"<start_of_turn>user\n", prefix, strip(m.content), "<end_of_turn>\n"}));
    } else {
      b.text("<start_of_turn>model\n");
      b.trained(cat({strip(m.content), "<end_of_turn>"}));
      b.text("\n");
    }
  }
  return b.take();
}

}  // namespace

RenderedChat render_chat(ChatTemplate tmpl, const std::vector<ChatMessage>& messages,
                         const std::string& bos, const std::string& eos) {
  if (messages.empty()) throw std::invalid_argument("'messages' is empty");
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant") {
      throw std::invalid_argument("message " + std::to_string(i) + " has role '" + r +
                                  "', expected system, user or assistant");
    }
    if (r == "system" && i != 0) {
      throw std::invalid_argument("message " + std::to_string(i) +
                                  " is a system message; only the first message may be one");
    }
  }
  switch (tmpl) {
    case ChatTemplate::kChatml:
      return chatml(messages);
    case ChatTemplate::kLlama3:
      return llama3(messages, bos);
    case ChatTemplate::kLlama2:
      return llama2(messages, bos, eos);
    case ChatTemplate::kMistral:
      return mistral(messages, bos, eos);
    case ChatTemplate::kGemma:
      return gemma(messages, bos);
    case ChatTemplate::kAuto:
      break;
  }
  throw std::invalid_argument("render_chat: the template must be resolved first");
}

ChatTemplate detect_chat_template(const std::string& jinja) {
  if (jinja.find("<|im_start|>") != std::string::npos) return ChatTemplate::kChatml;
  if (jinja.find("<|start_header_id|>") != std::string::npos) return ChatTemplate::kLlama3;
  if (jinja.find("<<SYS>>") != std::string::npos) return ChatTemplate::kLlama2;
  if (jinja.find("[INST]") != std::string::npos) return ChatTemplate::kMistral;
  if (jinja.find("<start_of_turn>") != std::string::npos) return ChatTemplate::kGemma;
  return ChatTemplate::kAuto;
}

}  // namespace peftrun
