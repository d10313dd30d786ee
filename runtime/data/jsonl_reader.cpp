#include "runtime/data/jsonl_reader.h"

namespace peftrun {

DataLineError::DataLineError(const std::string& p, std::uint64_t l, const std::string& m)
    : std::runtime_error(p + ":" + std::to_string(l) + ": " + m), path(p), line(l), message(m) {}

JsonlReader::JsonlReader(const std::string& path) : path_(path), in_(path, std::ios::binary) {
  if (!in_) throw std::runtime_error("cannot open data file '" + path + "'");
}

bool JsonlReader::next(nlohmann::json& value) {
  while (std::getline(in_, buffer_)) {
    ++line_;
    if (line_ == 1 && buffer_.compare(0, 3, "\xEF\xBB\xBF") == 0) buffer_.erase(0, 3);
    if (!buffer_.empty() && buffer_.back() == '\r') buffer_.pop_back();
    if (buffer_.find_first_not_of(" \t") == std::string::npos) continue;
    try {
      value = nlohmann::json::parse(buffer_);
    } catch (const nlohmann::json::parse_error& e) {
      // nlohmann's text starts "[json.exception.parse_error.101] parse error at line 1, column
      // N: ..."; the column is what helps here.
      std::string why = e.what();
      const std::size_t at = why.find("column ");
      if (at != std::string::npos) why = why.substr(at);
      throw DataLineError(path_, line_, "not valid JSON: " + why);
    }
    return true;
  }
  if (in_.bad()) throw std::runtime_error("error reading data file '" + path_ + "'");
  return false;
}

}  // namespace peftrun
