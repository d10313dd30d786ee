#include "runtime/train/metrics.h"

#include <cerrno>
#include <cstring>
#include <stdexcept>

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
