// GPT-2's byte-level alphabet: every byte 0..255 stands for one printable Unicode character, so
// byte-level BPE vocabularies (GPT-2, Llama 3, Qwen2, SmolLM) are plain strings. Printable
// Latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) map to themselves; the other 68 bytes map, in
// order, to U+0100, U+0101, ... (so ' ' is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace peftrun::tok {

// The character byte `b` is written as.
char32_t byte_to_char(std::uint8_t b);
// The UTF-8 text of byte_to_char(b) (1 or 2 bytes), precomputed.
const std::string& byte_to_utf8(std::uint8_t b);
// The byte a character stands for; nullopt for characters outside the alphabet.
std::optional<std::uint8_t> char_to_byte(char32_t cp);

}  // namespace peftrun::tok
