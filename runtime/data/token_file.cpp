#include "runtime/data/token_file.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "runtime/io/file_io.h"

namespace peftrun {

namespace {

// Token ids are int32 in memory (what the embedding and loss kernels take), so the largest
// usable vocabulary is 2^31.
constexpr std::uint64_t kMaxVocab = std::uint64_t{1} << 31;

[[noreturn]] void fail(const std::string& path, const std::string& msg) {
  throw std::runtime_error("token file '" + path + "': " + msg);
}

// The header is decoded byte by byte (not memcpy'd into a struct) so its little-endian layout
// is explicit and independent of struct padding.
std::uint64_t load_le(const std::uint8_t* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

void store_le(std::uint8_t* p, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

}  // namespace

TokenFile TokenFile::load(const std::string& path) {
  ReadOnlyFile file(path);
  const std::uint64_t size = file.size();

  std::uint8_t h[kTokenFileHeaderBytes] = {};
  const std::size_t head = static_cast<std::size_t>(std::min<std::uint64_t>(size, sizeof(h)));
  file.read_at(0, h, head);
  // Check the magic before the header size so a random file says "not a token file" rather
  // than "truncated".
  if (head < sizeof(kTokenFileMagic) ||
      std::memcmp(h, kTokenFileMagic, sizeof(kTokenFileMagic)) != 0) {
    fail(path, "bad magic (expected \"PEFTTOK1\"); not a peftrun token file? (see docs/DATA.md)");
  }
  if (head < kTokenFileHeaderBytes) {
    fail(path, "truncated header: file is " + std::to_string(size) + " bytes, the header needs " +
                   std::to_string(kTokenFileHeaderBytes));
  }
  const auto version = static_cast<std::uint32_t>(load_le(h + 8, 4));
  const auto bpt = static_cast<std::uint32_t>(load_le(h + 12, 4));
  const auto vocab = static_cast<std::uint32_t>(load_le(h + 16, 4));
  const auto reserved = static_cast<std::uint32_t>(load_le(h + 20, 4));
  const std::uint64_t num_tokens = load_le(h + 24, 8);

  if (version != kTokenFileVersion) {
    fail(path, "unsupported version " + std::to_string(version) + " (this build reads version " +
                   std::to_string(kTokenFileVersion) + ")");
  }
  if (bpt != 1 && bpt != 2 && bpt != 4) {
    fail(path, "bad bytes_per_token " + std::to_string(bpt) + " (must be 1, 2 or 4)");
  }
  if (vocab == 0 || vocab > kMaxVocab) {
    fail(path, "bad vocab_size " + std::to_string(vocab) + " (must be in [1, 2^31])");
  }
  if (reserved != 0) {
    fail(path, "reserved header field is " + std::to_string(reserved) + ", must be 0 in version 1");
  }
  // Exact size match catches both truncation (interrupted copy) and trailing garbage (e.g. two
  // files concatenated by mistake). Division avoids overflow on a corrupt num_tokens.
  const std::uint64_t body = size - kTokenFileHeaderBytes;
  if (body % bpt != 0 || body / bpt != num_tokens) {
    fail(path, "size mismatch: header says " + std::to_string(num_tokens) + " tokens of " +
                   std::to_string(bpt) + " bytes, but the file has " + std::to_string(body) +
                   " bytes after the " + std::to_string(kTokenFileHeaderBytes) +
                   "-byte header (truncated or corrupt?)");
  }

  TokenFile out;
  out.path = path;
  out.vocab_size = vocab;
  out.bytes_per_token = bpt;
  out.tokens.resize(static_cast<std::size_t>(num_tokens));

  // Read in chunks so a large file costs one int32 array, not that plus a full raw copy.
  constexpr std::size_t kChunkTokens = std::size_t{1} << 20;
  std::vector<std::uint8_t> raw;
  for (std::uint64_t start = 0; start < num_tokens; start += kChunkTokens) {
    const auto n =
        static_cast<std::size_t>(std::min<std::uint64_t>(kChunkTokens, num_tokens - start));
    raw.resize(n * bpt);
    file.read_at(kTokenFileHeaderBytes + start * bpt, raw.data(), raw.size());
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t v = load_le(raw.data() + i * bpt, static_cast<int>(bpt));
      if (v >= vocab) {
        const std::uint64_t index = start + i;
        fail(path, "token " + std::to_string(index) + " (byte offset " +
                       std::to_string(kTokenFileHeaderBytes + index * bpt) + ") has value " +
                       std::to_string(v) + " >= vocab_size " + std::to_string(vocab));
      }
      out.tokens[start + i] = static_cast<std::int32_t>(v);
    }
  }
  return out;
}

void write_token_file(const std::string& path, std::span<const std::int32_t> tokens,
                      std::uint32_t vocab_size) {
  if (vocab_size == 0 || vocab_size > kMaxVocab) {
    throw std::invalid_argument("write_token_file '" + path + "': bad vocab_size " +
                                std::to_string(vocab_size) + " (must be in [1, 2^31])");
  }
  const std::uint32_t bpt = vocab_size <= (1u << 8) ? 1 : vocab_size <= (1u << 16) ? 2 : 4;

  std::uint8_t header[kTokenFileHeaderBytes] = {};
  std::memcpy(header, kTokenFileMagic, sizeof(kTokenFileMagic));
  store_le(header + 8, kTokenFileVersion, 4);
  store_le(header + 12, bpt, 4);
  store_le(header + 16, vocab_size, 4);
  store_le(header + 20, 0, 4);
  store_le(header + 24, tokens.size(), 8);

  std::vector<std::uint8_t> body(tokens.size() * bpt);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::int32_t t = tokens[i];
    if (t < 0 || static_cast<std::uint32_t>(t) >= vocab_size) {
      throw std::invalid_argument("write_token_file '" + path + "': token " + std::to_string(i) +
                                  " has value " + std::to_string(t) + ", outside [0, " +
                                  std::to_string(vocab_size) + ")");
    }
    store_le(body.data() + i * bpt, static_cast<std::uint32_t>(t), static_cast<int>(bpt));
  }
  const ByteChunk chunks[] = {ByteChunk(header, sizeof(header)), ByteChunk(body)};
  write_file_atomic(path, chunks);
}

void check_vocab_fits(const TokenFile& file, std::int64_t model_vocab_size) {
  if (static_cast<std::int64_t>(file.vocab_size) > model_vocab_size) {
    throw std::runtime_error(
        "token file '" + file.path + "' has vocab_size " + std::to_string(file.vocab_size) +
        ", larger than the model's vocab_size " + std::to_string(model_vocab_size) +
        "; its token ids may not fit the embedding table (tokenize the data "
        "for this model, or use a model with a larger vocabulary)");
  }
}

}  // namespace peftrun
