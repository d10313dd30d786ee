// Text on its way through normalizers and pre-tokenizers that remembers, for every byte, which
// bytes of the original input it came from (a reduced form of tokenizers' NormalizedString).
// peftrun needs the alignment for one thing: the original byte span of every token, so that a
// dataset can tell prompt tokens from completion tokens of one whole-string encoding.
//
// Alignment is kept per byte as [src_begin, src_end): for untouched text byte i maps to
// [i, i + 1); text a normalizer produced maps to the whole original span it replaced; inserted
// text (a prepended '▁' or ' ') maps to the empty span where it was inserted.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/regex.h"

namespace peftrun::tok {

struct AlignedText {
  std::string text;
  std::vector<std::uint32_t> src_begin, src_end;  // one entry per byte of `text`

  // `original` aligned to itself, its bytes numbered from `offset`.
  static AlignedText identity(std::string_view original, std::uint32_t offset);

  bool empty() const { return text.empty(); }
  std::size_t size() const { return text.size(); }
  // Original span of bytes [b, e) of `text` (e > b).
  std::uint32_t original_begin(std::size_t b) const { return src_begin[b]; }
  std::uint32_t original_end(std::size_t e) const { return src_end[e - 1]; }

  AlignedText slice(std::size_t b, std::size_t e) const;
  // Prepends `s` as text with no source: the empty span where the first character starts.
  void prepend(std::string_view s);
  // Replaces every match of `re` with `content`, aligned to the matched original span.
  void replace_all(const Regex& re, std::string_view content);
  // Rebuilds the text character by character: `map(cp, out)` appends what the character at
  // [b, e) becomes (possibly nothing), aligned to that character.
  void map_chars(const std::function<void(char32_t cp, std::string& out)>& map);
};

}  // namespace peftrun::tok
