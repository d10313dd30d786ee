// The regular expressions of tokenizer.json (Split pre-tokenizers, Replace normalizers and
// decoders), run with PCRE2 in UTF + UCP mode so \p{L}, \p{N} and lookaheads such as \s+(?!\S)
// mean what they mean in the `tokenizers` library (which uses Oniguruma).
//
// One known difference is translated away: PCRE2 counts U+180E (MONGOLIAN VOWEL SEPARATOR, a
// space before Unicode 6.3) as \s, Oniguruma follows the current White_Space property. So \s
// (outside and inside character classes) and \S (outside classes) are rewritten to the explicit
// White_Space set before compiling. \w and \d keep PCRE2's Unicode meaning; the families peftrun
// supports do not use them.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace peftrun::tok {

using ByteSpan = std::pair<std::size_t, std::size_t>;  // [begin, end) byte offsets

class Regex {
 public:
  // Throws std::runtime_error naming `where`, the pattern and PCRE2's message on a bad pattern.
  static Regex pattern(std::string_view pattern, const std::string& where);
  // Matches `text` literally (tokenizer.json's {"String": ...} patterns).
  static Regex literal(std::string_view text, const std::string& where);

  // All non-overlapping matches, left to right, in valid UTF-8 `text`. An empty match is
  // reported and the search resumes one character later (Oniguruma's find_iter).
  void find_all(std::string_view text, std::vector<ByteSpan>& out) const;

  // Onig -> PCRE2 pattern rewrite described above (exposed for tests).
  static std::string translate(std::string_view onig_pattern);

 private:
  std::shared_ptr<void> code_;  // pcre2_code (kept out of this header), JIT-compiled when possible
};

}  // namespace peftrun::tok
