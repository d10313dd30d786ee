#include "runtime/train/metrics.h"

#include <cerrno>
#include <cstring>
#include <span>
#include <stdexcept>

#include "runtime/io/file_io.h"

namespace peftrun {

MetricsWriter::MetricsWriter(const std::string& path, bool append)
    : path_(path), out_(path, append ? std::ios::app : std::ios::trunc) {
  if (!out_) {
    throw std::runtime_error("cannot open metrics file '" + path + "': " + std::strerror(errno));
  }
}

void MetricsWriter::write(const nlohmann::json& record) {
  out_ << record.dump() << '\n';
  out_.flush();
  if (!out_) throw std::runtime_error("cannot write metrics file '" + path_ + "'");
}

}  // namespace peftrun

namespace peftrun {

void drop_metrics_after(const std::string& path, int step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    // A record cut short by a kill (or any non-record line) is dropped with the rest.
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int>() <= step) {
      kept += line + "\n";
    }
  }
  const ByteChunk chunk(reinterpret_cast<const std::uint8_t*>(kept.data()), kept.size());
  write_file_atomic(path, std::span<const ByteChunk>(&chunk, 1));
}

}  // namespace peftrun
