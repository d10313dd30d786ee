#include "comm/nccl_id_exchange.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>

#include "comm/collective_report.h"

namespace peftrun {

std::string format_nccl_version(int code) {
  // 2.8.4 is 2804; 2.9.0 became 20900 when the minor version outgrew one digit.
  const int major = code >= 10000 ? code / 10000 : code / 1000;
  const int minor = code >= 10000 ? code / 100 % 100 : code / 100 % 10;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(code % 100);
}

namespace {

constexpr std::size_t kHostAt = 4;
constexpr std::size_t kIdAt = kHostAt + kNcclIdFrameHostBytes;

[[noreturn]] void fail(const Agreement& a) {
  throw std::runtime_error("cannot create the NCCL communicator: " + a.describe());
}

}  // namespace

NcclUniqueIdBytes exchange_nccl_unique_id(Communicator& host, int nccl_version,
                                          const std::function<NcclUniqueIdBytes()>& make_id) {
  std::array<unsigned char, kNcclIdFrameBytes> frame{};
  const std::string here = local_host_name();
  std::string error;
  if (host.rank() == 0) {
    try {
      const NcclUniqueIdBytes id = make_id();
      const std::int32_t version = nccl_version;
      std::memcpy(frame.data(), &version, sizeof version);
      std::memcpy(frame.data() + kHostAt, here.data(),
                  std::min(here.size(), kNcclIdFrameHostBytes - 1));
      std::memcpy(frame.data() + kIdAt, id.data(), id.size());
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (const Agreement made = host.agree(error.empty(), error); !made.ok) fail(made);

  host.broadcast(frame.data(), frame.size(), 0);
  std::int32_t root_version = 0;
  std::memcpy(&root_version, frame.data(), sizeof root_version);
  const char* root_host = reinterpret_cast<const char*>(frame.data() + kHostAt);
  std::string mismatch;
  if (root_version != nccl_version) {
    mismatch = "NCCL " + format_nccl_version(nccl_version) + " on this rank (host " + here +
               ") but " + format_nccl_version(root_version) + " on rank 0 (host " +
               std::string(root_host, ::strnlen(root_host, kNcclIdFrameHostBytes)) +
               "): every rank must load the same libnccl";
  }
  if (const Agreement same = host.agree(mismatch.empty(), mismatch); !same.ok) fail(same);

  NcclUniqueIdBytes id;
  std::memcpy(id.data(), frame.data() + kIdAt, id.size());
  return id;
}

}  // namespace peftrun
