// SHA-256 (FIPS 180-4), for content digests that key caches: a tokenized dataset is reused only
// when the tokenizer files and the source file hash to what the cache recorded.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace peftrun {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // The digest; the object must not be updated afterwards.
  std::array<std::uint8_t, 32> finish();
  // finish() as 64 lowercase hex digits.
  std::string finish_hex();

 private:
  void block(const std::uint8_t* p);
  std::uint32_t h_[8];
  std::uint8_t buffer_[64];
  std::size_t buffered_ = 0;
  std::uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view data);
// The digest of a whole file, read in chunks; throws std::runtime_error naming the file.
std::string sha256_file_hex(const std::string& path);

}  // namespace peftrun
