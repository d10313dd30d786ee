// UTF-8 and Unicode character helpers the tokenizer pipeline shares: decoding and encoding code
// points, validation, and the character classes tokenizers' Rust code takes from the standard
// library (char::is_numeric, char::is_whitespace, regex's \w). Classes come from utf8proc's
// Unicode tables.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace peftrun::tok {

// Byte length of the UTF-8 sequence that starts with `lead` (1 for a continuation byte, so a
// caller walking invalid text still advances).
std::size_t utf8_length(unsigned char lead);

// The code point at text[pos] (text must be valid UTF-8) and its byte length.
char32_t decode_utf8(std::string_view text, std::size_t pos, std::size_t* length);

void append_utf8(std::string& out, char32_t cp);

// Byte offset of the first invalid UTF-8 sequence, or npos when `text` is valid.
std::size_t find_invalid_utf8(std::string_view text);

// Unicode general categories Nd, Nl, No (Rust's char::is_numeric).
bool is_numeric(char32_t cp);
// The White_Space property (Rust's char::is_whitespace, Oniguruma's and regex's \s).
bool is_whitespace(char32_t cp);
// Letters, marks, decimal digits and connector punctuation: the regex crate's Unicode \w, which
// tokenizers uses for single_word added tokens.
bool is_word_char(char32_t cp);

}  // namespace peftrun::tok
