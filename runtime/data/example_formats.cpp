#include "runtime/data/example_formats.h"

#include <stdexcept>

#include "runtime/data/chat_template.h"

namespace peftrun {

namespace {

using Json = nlohmann::json;
using Span = std::pair<std::size_t, std::size_t>;

const std::string& string_field(const Json& obj, const char* key) {
  const auto it = obj.find(key);
  if (it == obj.end()) throw std::invalid_argument(std::string("missing key \"") + key + "\"");
  if (!it->is_string()) {
    throw std::invalid_argument(std::string("\"") + key + "\" is " + it->type_name() +
                                ", expected a string");
  }
  return it->get_ref<const std::string&>();
}

Encoding encode(const FormatContext& c, const std::string& text) {
  try {
    return c.tokenizer.encode(text, /*add_special_tokens=*/false);
  } catch (const std::runtime_error& e) {
    throw std::invalid_argument(e.what());
  }
}

// trained[i] = token i's original bytes overlap one of `spans` (sorted, disjoint). A token with
// an empty span (text a normaliser inserted) counts as the byte where it was inserted.
void mark_trained(const Encoding& enc, const std::vector<Span>& spans,
                  std::vector<std::uint8_t>& trained) {
  std::size_t k = 0;
  for (std::size_t i = 0; i < enc.ids.size(); ++i) {
    const std::size_t b = enc.offsets[i].first;
    const std::size_t e = std::max(enc.offsets[i].second, b + 1);
    while (k < spans.size() && spans[k].second <= b) ++k;
    trained.push_back(k < spans.size() && spans[k].first < e ? 1 : 0);
  }
}

// [prefix] body [suffix] [EOS], where the trained flags of body are given; the suffix and the
// appended EOS end the trained part, the prefix (BOS) is context.
TokenizedExample assemble(const FormatContext& c, const Encoding& body,
                          const std::vector<std::uint8_t>& body_trained) {
  TokenizedExample ex;
  const ModelTokens& m = c.model_tokens;
  ex.ids = m.prefix;
  ex.trained.assign(m.prefix.size(), 0);
  ex.ids.insert(ex.ids.end(), body.ids.begin(), body.ids.end());
  ex.trained.insert(ex.trained.end(), body_trained.begin(), body_trained.end());
  ex.ids.insert(ex.ids.end(), m.suffix.begin(), m.suffix.end());
  ex.trained.insert(ex.trained.end(), m.suffix.size(), 1);
  if (c.append_eos && m.eos_id && (ex.ids.empty() || ex.ids.back() != *m.eos_id)) {
    ex.ids.push_back(*m.eos_id);
    ex.trained.push_back(1);
  }
  return ex;
}

TokenizedExample text_example(const Json& obj, const FormatContext& c) {
  const Encoding enc = encode(c, string_field(obj, "text"));
  if (enc.ids.empty()) return {};  // an empty text is no document (not a lone BOS -> EOS)
  return assemble(c, enc, std::vector<std::uint8_t>(enc.ids.size(), 1));
}

TokenizedExample prompt_completion_example(const Json& obj, const FormatContext& c) {
  const std::string& prompt = string_field(obj, "prompt");
  const std::string& completion = string_field(obj, "completion");
  const std::string full = prompt + completion;
  const Encoding enc = encode(c, full);
  std::vector<std::uint8_t> trained;
  mark_trained(enc, {{prompt.size(), full.size()}}, trained);
  return assemble(c, enc, trained);
}

TokenizedExample chat_example(const Json& obj, const FormatContext& c) {
  const auto it = obj.find("messages");
  if (it == obj.end()) throw std::invalid_argument("missing key \"messages\"");
  if (!it->is_array()) {
    throw std::invalid_argument(std::string("\"messages\" is ") + it->type_name() +
                                ", expected a list of {\"role\", \"content\"} objects");
  }
  std::vector<ChatMessage> messages;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const Json& m = (*it)[i];
    if (!m.is_object()) {
      throw std::invalid_argument("message " + std::to_string(i) + " is " + m.type_name() +
                                  ", expected an object with \"role\" and \"content\"");
    }
    try {
      messages.push_back({string_field(m, "role"), string_field(m, "content")});
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("message " + std::to_string(i) + ": " + e.what());
    }
  }
  const ModelTokens& t = c.model_tokens;
  const RenderedChat chat = render_chat(c.chat_template, messages, t.bos_token, t.eos_token);
  TokenizedExample ex;
  const Encoding enc = encode(c, chat.text);
  ex.ids = enc.ids;
  mark_trained(enc, chat.trained, ex.trained);
  return ex;
}

}  // namespace

TokenizedExample tokenize_example(const Json& example, DataFormat format,
                                  const FormatContext& context) {
  if (!example.is_object()) {
    throw std::invalid_argument(std::string("expected a JSON object, got ") + example.type_name());
  }
  switch (format) {
    case DataFormat::kText:
      return text_example(example, context);
    case DataFormat::kPromptCompletion:
      return prompt_completion_example(example, context);
    case DataFormat::kChat:
      return chat_example(example, context);
    case DataFormat::kTokens:
    case DataFormat::kSame:
      break;
  }
  throw std::invalid_argument("tokenize_example: not a JSONL format");
}

}  // namespace peftrun
