// How GPU ranks agree on one NCCL communicator: rank 0 makes an ncclUniqueId and the host
// communicator (MPI, or Local for a world of 1) broadcasts it. Plain C++ over the Communicator
// interface, so the framing and the agreed failures are tested without NCCL or a device
// (tests/comm_nccl_setup_test.cpp with a fake communicator, tests/comm_mpi_test.cpp over MPI).
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <string>

#include "comm/communicator.h"

namespace peftrun {

// NCCL_UNIQUE_ID_BYTES (nccl_communicator.cpp checks the two agree at compile time).
inline constexpr std::size_t kNcclUniqueIdBytes = 128;
using NcclUniqueIdBytes = std::array<unsigned char, kNcclUniqueIdBytes>;

// "2.28.9" from ncclGetVersion's code: X*10000 + Y*100 + Z since 2.9, X*1000 + Y*100 + Z before.
std::string format_nccl_version(int code);

// What rank 0 broadcasts: its NCCL version and host name (so a mismatch names both sides), then
// the id. Fixed size, so no rank needs to know a length first.
inline constexpr std::size_t kNcclIdFrameHostBytes = 64;  // NUL-padded, cut to 63 characters
inline constexpr std::size_t kNcclIdFrameBytes = 4 + kNcclIdFrameHostBytes + kNcclUniqueIdBytes;

// Collective over `host` (every rank calls it at the same point): rank 0 calls make_id() (it may
// throw, e.g. ncclGetUniqueId finding no usable network interface), every rank receives that id
// together with rank 0's NCCL version and checks it against its own `nccl_version` (ranks of one
// job must load the same NCCL). Each failure is agreed (Communicator::agree) before anyone acts on
// it, so every rank throws the same std::runtime_error instead of the healthy ones waiting for the
// failed one until the timeout.
NcclUniqueIdBytes exchange_nccl_unique_id(Communicator& host, int nccl_version,
                                          const std::function<NcclUniqueIdBytes()>& make_id);

}  // namespace peftrun
