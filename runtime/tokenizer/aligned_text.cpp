#include "runtime/tokenizer/aligned_text.h"

#include "runtime/tokenizer/unicode.h"

namespace peftrun::tok {

AlignedText AlignedText::identity(std::string_view original, std::uint32_t offset) {
  AlignedText t;
  t.text.assign(original);
  t.src_begin.resize(original.size());
  t.src_end.resize(original.size());
  for (std::size_t i = 0; i < original.size(); ++i) {
    t.src_begin[i] = offset + static_cast<std::uint32_t>(i);
    t.src_end[i] = offset + static_cast<std::uint32_t>(i + 1);
  }
  return t;
}

AlignedText AlignedText::slice(std::size_t b, std::size_t e) const {
  AlignedText t;
  t.text = text.substr(b, e - b);
  t.src_begin.assign(src_begin.begin() + b, src_begin.begin() + e);
  t.src_end.assign(src_end.begin() + b, src_end.begin() + e);
  return t;
}

void AlignedText::prepend(std::string_view s) {
  if (text.empty() || s.empty()) return;
  const std::uint32_t at = src_begin[0];
  text.insert(0, s);
  src_begin.insert(src_begin.begin(), s.size(), at);
  src_end.insert(src_end.begin(), s.size(), at);
}

void AlignedText::replace_all(const Regex& re, std::string_view content) {
  if (text.empty()) return;
  std::vector<ByteSpan> matches;
  re.find_all(text, matches);
  if (matches.empty()) return;
  // One left-to-right pass: long texts with many matches (every space, for SentencePiece-style
  // normalisers) must not cost a vector shift per match.
  AlignedText out;
  out.text.reserve(text.size() + matches.size() * content.size());
  std::size_t done = 0;
  for (const auto& [b, e] : matches) {
    out.text.append(text, done, b - done);
    out.src_begin.insert(out.src_begin.end(), src_begin.begin() + done, src_begin.begin() + b);
    out.src_end.insert(out.src_end.end(), src_end.begin() + done, src_end.begin() + b);
    const std::uint32_t ob = b < e ? src_begin[b] : (b < size() ? src_begin[b] : src_end.back());
    const std::uint32_t oe = b < e ? src_end[e - 1] : ob;
    out.text += content;
    out.src_begin.insert(out.src_begin.end(), content.size(), ob);
    out.src_end.insert(out.src_end.end(), content.size(), oe);
    done = e;
  }
  out.text.append(text, done, std::string::npos);
  out.src_begin.insert(out.src_begin.end(), src_begin.begin() + done, src_begin.end());
  out.src_end.insert(out.src_end.end(), src_end.begin() + done, src_end.end());
  *this = std::move(out);
}

void AlignedText::map_chars(const std::function<void(char32_t, std::string&)>& map) {
  AlignedText out;
  out.text.reserve(text.size());
  std::string piece;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t n = 0;
    const char32_t cp = decode_utf8(text, i, &n);
    piece.clear();
    map(cp, piece);
    out.text += piece;
    out.src_begin.insert(out.src_begin.end(), piece.size(), src_begin[i]);
    out.src_end.insert(out.src_end.end(), piece.size(), src_end[i + n - 1]);
    i += n;
  }
  *this = std::move(out);
}

}  // namespace peftrun::tok
