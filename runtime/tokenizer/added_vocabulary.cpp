#include "runtime/tokenizer/added_vocabulary.h"

#include <algorithm>

#include "runtime/tokenizer/unicode.h"

namespace peftrun::tok {

namespace {

// The code point that ends text[0, end) (end > 0).
char32_t last_char(const std::string& text, std::size_t end) {
  std::size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  std::size_t n = 0;
  return decode_utf8(text, start, &n);
}

}  // namespace

AddedVocabulary AddedVocabulary::parse(const Json& list, const std::string& where,
                                       const Normalizer* normalizer) {
  AddedVocabulary v;
  if (list.is_null()) return v;
  if (!list.is_array()) json_fail(where, "expected a list of added tokens");
  for (std::size_t i = 0; i < list.size(); ++i) {
    const Json& t = list[i];
    const std::string at = where + "[" + std::to_string(i) + "]";
    AddedToken a;
    const Json& id = json_field(t, "id", at);
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 ||
        id.get<std::int64_t>() >= (std::int64_t{1} << 31)) {
      json_fail(at + ".id", "expected an integer in [0, 2^31), got " + json_excerpt(id));
    }
    a.id = static_cast<std::int32_t>(id.get<std::int64_t>());
    a.content = json_string(t, "content", at);
    a.single_word = json_bool_or(t, "single_word", false, at);
    a.lstrip = json_bool_or(t, "lstrip", false, at);
    a.rstrip = json_bool_or(t, "rstrip", false, at);
    a.special = json_bool_or(t, "special", false, at);
    a.normalized = json_bool_or(t, "normalized", !a.special, at);
    if (a.content.empty()) continue;  // tokenizers ignores empty added tokens
    if (find_invalid_utf8(a.content) != std::string::npos) {
      json_fail(at + ".content", "is not valid UTF-8");
    }
    a.pattern = a.content;
    if (a.normalized && normalizer != nullptr) {
      AlignedText normalized = AlignedText::identity(a.content, 0);
      normalizer->normalize(normalized);
      if (!normalized.empty()) a.pattern = normalized.text;
    }
    v.by_content_[a.content] = v.tokens_.size();
    v.by_id_[a.id] = v.tokens_.size();
    v.tokens_.push_back(std::move(a));
  }
  for (std::size_t k = 0; k < v.tokens_.size(); ++k) {
    const AddedToken& a = v.tokens_[k];
    v.by_first_byte_[a.normalized ? 1 : 0][static_cast<unsigned char>(a.pattern[0])].push_back(k);
  }
  for (auto& pass : v.by_first_byte_) {
    for (auto& bucket : pass) {
      std::stable_sort(bucket.begin(), bucket.end(), [&](std::size_t x, std::size_t y) {
        return v.tokens_[x].pattern.size() > v.tokens_[y].pattern.size();
      });
    }
  }
  return v;
}

std::optional<std::int32_t> AddedVocabulary::token_to_id(const std::string& content) const {
  const auto it = by_content_.find(content);
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const AddedToken* AddedVocabulary::find_id(std::int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

bool AddedVocabulary::is_special(const std::string& content) const {
  const auto it = by_content_.find(content);
  return it != by_content_.end() && tokens_[it->second].special;
}

void AddedVocabulary::split(const AlignedText& piece, bool normalized,
                            std::vector<InputPiece>& out) const {
  const std::string& s = piece.text;
  const auto& buckets = by_first_byte_[normalized ? 1 : 0];
  std::size_t done = 0;  // end of the last emitted piece
  std::size_t i = 0;
  while (i < s.size()) {
    // Leftmost-longest: the longest candidate starting at the first position that has one.
    const AddedToken* match = nullptr;
    for (std::size_t k : buckets[static_cast<unsigned char>(s[i])]) {
      const std::string& c = tokens_[k].pattern;
      if (s.compare(i, c.size(), c) == 0) {
        match = &tokens_[k];
        break;
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    std::size_t start = i, stop = i + match->pattern.size();
    i = stop;  // a match that fails its conditions below is still consumed, as in tokenizers
    if (match->single_word) {
      const bool word_before = start > 0 && is_word_char(last_char(s, start));
      std::size_t n = 0;
      const bool word_after = stop < s.size() && is_word_char(decode_utf8(s, stop, &n));
      if (word_before || word_after) continue;
    }
    if (match->lstrip) {
      while (start > done) {
        std::size_t p = start - 1;
        while (p > done && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
        std::size_t n = 0;
        if (!is_whitespace(decode_utf8(s, p, &n))) break;
        start = p;
      }
    }
    if (match->rstrip) {
      std::size_t n = 0;
      while (stop < s.size() && is_whitespace(decode_utf8(s, stop, &n))) stop += n;
      i = stop;
    }
    if (done < start) out.push_back({piece.slice(done, start), -1});
    out.push_back({piece.slice(start, stop), match->id});
    done = stop;
  }
  if (done < s.size()) out.push_back({piece.slice(done, s.size()), -1});
}

}  // namespace peftrun::tok
