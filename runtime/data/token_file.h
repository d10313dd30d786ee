// Pre-tokenized training data: one binary file holding a stream of token ids (docs/DATA.md has
// the byte layout). Tokenization happens offline (scripts/text_to_tokens.py for byte-level
// text), so the trainer only validates and loads ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace peftrun {

// "PEFTTOK1" names the format family and stays the same across versions; `version` below is
// what distinguishes layouts.
inline constexpr char kTokenFileMagic[8] = {'P', 'E', 'F', 'T', 'T', 'O', 'K', '1'};
inline constexpr std::uint32_t kTokenFileVersion = 1;
inline constexpr std::size_t kTokenFileHeaderBytes = 32;

struct TokenFile {
  std::string path;              // for error messages
  std::uint32_t vocab_size = 0;  // every token is < vocab_size
  std::uint32_t bytes_per_token = 0;
  std::vector<std::int32_t> tokens;

  // Reads and fully validates a token file; every problem throws std::runtime_error naming the
  // file: bad magic, unsupported version, bad bytes_per_token, non-zero reserved field, bad
  // vocab_size, wrong size for num_tokens (truncated or trailing bytes), a token >= vocab_size.
  static TokenFile load(const std::string& path);
};

// Writes tokens crash-safely (temp file + rename) with the smallest bytes_per_token (1, 2 or 4)
// that holds vocab_size - 1. Throws std::invalid_argument if vocab_size is 0 or above 2^31, or a
// token is outside [0, vocab_size); std::runtime_error naming the file on I/O failure.
void write_token_file(const std::string& path, std::span<const std::int32_t> tokens,
                      std::uint32_t vocab_size);

// The trainer's compatibility check: a file whose vocabulary is larger than the model's could
// hold ids past the end of the embedding table. Throws std::runtime_error naming the file and
// both sizes. (A smaller file vocabulary is fine: e.g. byte-level data for a larger model.)
void check_vocab_fits(const TokenFile& file, std::int64_t model_vocab_size);

}  // namespace peftrun
