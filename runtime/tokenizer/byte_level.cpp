#include "runtime/tokenizer/byte_level.h"

#include <array>

#include "runtime/tokenizer/unicode.h"

namespace peftrun::tok {

namespace {

bool printable(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Tables {
  std::array<char32_t, 256> to_char{};
  std::array<std::string, 256> to_utf8;
  Tables() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      to_char[b] = printable(b) ? static_cast<char32_t>(b) : next++;
      append_utf8(to_utf8[b], to_char[b]);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

char32_t byte_to_char(std::uint8_t b) {
  return tables().to_char[b];
}

const std::string& byte_to_utf8(std::uint8_t b) {
  return tables().to_utf8[b];
}

std::optional<std::uint8_t> char_to_byte(char32_t cp) {
  if (cp < 256 && printable(static_cast<int>(cp))) return static_cast<std::uint8_t>(cp);
  if (cp >= 256 && cp < 256 + 68) {
    // The n-th non-printable byte maps to 256 + n.
    int n = static_cast<int>(cp - 256);
    for (int b = 0; b < 256; ++b) {
      if (!printable(b) && n-- == 0) return static_cast<std::uint8_t>(b);
    }
  }
  return std::nullopt;
}

}  // namespace peftrun::tok
