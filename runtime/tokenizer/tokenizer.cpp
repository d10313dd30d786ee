#include "runtime/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/io/sha256.h"
#include "runtime/tokenizer/unicode.h"

namespace peftrun {

using tok::AlignedText;
using tok::InputPiece;
using tok::Json;

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::string file = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) file = (fs::path(path) / "tokenizer.json").string();
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw std::runtime_error("cannot open tokenizer '" + file +
                             "' (expected a model folder with tokenizer.json, or the file)");
  }
  std::ostringstream text;
  text << in.rdbuf();
  return from_json(text.str(), file);
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& source) {
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::parse_error& e) {
    throw std::runtime_error(source + ": not valid JSON: " + e.what());
  }
  if (!root.is_object()) throw std::runtime_error(source + ": expected a JSON object");
  Tokenizer t;
  t.source_ = source;
  t.digest_ = sha256_hex(json_text);
  const std::string& w = source;
  t.normalizer_ = tok::parse_normalizer(root.value("normalizer", Json()), w + ": normalizer");
  t.pre_tokenizer_ =
      tok::parse_pre_tokenizer(root.value("pre_tokenizer", Json()), w + ": pre_tokenizer");
  t.model_ = tok::BpeModel::parse(tok::json_field(root, "model", w), w + ": model");
  t.added_ = tok::AddedVocabulary::parse(root.value("added_tokens", Json()), w + ": added_tokens",
                                         t.normalizer_.get());
  t.post_ = tok::PostProcessor::parse(root.value("post_processor", Json()), w + ": post_processor");
  t.decoder_ = tok::parse_decoder(root.value("decoder", Json()), w + ": decoder");
  // "truncation" and "padding" are ignored: peftrun packs and pads sequences itself.
  return t;
}

Encoding Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const std::size_t bad = tok::find_invalid_utf8(text);
  if (bad != std::string_view::npos) {
    throw std::runtime_error("text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  Encoding enc;
  if (add_special_tokens) {
    for (std::int32_t id : post_.prefix) {
      enc.ids.push_back(id);
      enc.offsets.emplace_back(0, 0);
    }
  }
  std::vector<InputPiece> raw, pieces;
  added_.split(AlignedText::identity(text, 0), /*normalized=*/false, raw);
  for (InputPiece& p : raw) {
    if (p.id >= 0) {
      pieces.push_back(std::move(p));
      continue;
    }
    if (normalizer_) normalizer_->normalize(p.text);
    if (!p.text.empty()) added_.split(p.text, /*normalized=*/true, pieces);
  }
  std::vector<AlignedText> words;
  std::vector<tok::WordToken> tokens;
  for (InputPiece& p : pieces) {
    if (p.id >= 0) {
      enc.ids.push_back(p.id);
      enc.offsets.emplace_back(p.text.original_begin(0), p.text.original_end(p.text.size()));
      continue;
    }
    words.clear();
    if (pre_tokenizer_) {
      pre_tokenizer_->split(std::move(p.text), words);
    } else {
      words.push_back(std::move(p.text));
    }
    for (const AlignedText& w : words) {
      tokens.clear();
      model_.tokenize(w.text, tokens);
      for (const tok::WordToken& t : tokens) {
        enc.ids.push_back(t.id);
        enc.offsets.emplace_back(w.original_begin(t.begin), w.original_end(t.end));
      }
    }
  }
  if (add_special_tokens) {
    for (std::int32_t id : post_.suffix) {
      enc.ids.push_back(id);
      enc.offsets.emplace_back(text.size(), text.size());
    }
  }
  return enc;
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (std::int32_t id : ids) {
    if (const tok::AddedToken* a = added_.find_id(id)) {
      if (!(skip_special_tokens && a->special)) tokens.push_back(a->pattern);
      continue;
    }
    const std::string* s = model_.id_to_token(id);
    if (s == nullptr) continue;
    if (skip_special_tokens && added_.is_special(*s)) continue;
    tokens.push_back(*s);
  }
  if (!decoder_) {
    std::string out;
    for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  decoder_->decode_chain(tokens);
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

std::optional<std::int32_t> Tokenizer::token_to_id(const std::string& token) const {
  if (auto id = added_.token_to_id(token)) return id;
  return model_.token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(std::int32_t id) const {
  if (const tok::AddedToken* a = added_.find_id(id)) return a->content;
  if (const std::string* s = model_.id_to_token(id)) return *s;
  return std::nullopt;
}

bool Tokenizer::is_special(std::int32_t id) const {
  const tok::AddedToken* a = added_.find_id(id);
  return a != nullptr && a->special;
}

std::int32_t Tokenizer::vocab_size() const {
  std::int32_t max_id = model_.max_id();
  for (const tok::AddedToken& a : added_.tokens()) max_id = std::max(max_id, a.id);
  return max_id + 1;
}

}  // namespace peftrun
