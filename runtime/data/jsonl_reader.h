// Reading a JSONL file one object per line, with every problem pinned to FILE:LINE. Blank
// lines are skipped; a UTF-8 byte-order mark on the first line and a trailing '\r' (CRLF files)
// are ignored. nlohmann's parser checks that strings are valid UTF-8.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>

namespace peftrun {

// A malformed line: what() is "FILE:LINE: message"; `message` alone is kept for summaries.
struct DataLineError : std::runtime_error {
  DataLineError(const std::string& path, std::uint64_t line, const std::string& message);
  std::string path;
  std::uint64_t line;
  std::string message;
};

class JsonlReader {
 public:
  // Throws std::runtime_error naming the file when it cannot be opened.
  explicit JsonlReader(const std::string& path);

  // The next non-blank line as JSON; false at the end of the file. A line that is not valid
  // JSON throws DataLineError, after which reading may continue with the next line.
  bool next(nlohmann::json& value);
  // 1-based number of the line next() returned (or failed on) last.
  std::uint64_t line() const { return line_; }
  const std::string& path() const { return path_; }
  std::uint64_t lines_read() const { return line_; }

 private:
  std::string path_;
  std::ifstream in_;
  std::string buffer_;
  std::uint64_t line_ = 0;
};

}  // namespace peftrun
