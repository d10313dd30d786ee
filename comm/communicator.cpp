// The parts of the Communicator that every backend shares: agree() built from all_gather and
// broadcast, the timeout setting, and the factory that picks a backend.
#include "comm/communicator.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#include "comm/mpi_runtime.h"
#if PEFTRUN_WITH_MPI
#include "comm/mpi_communicator.h"
#endif
#if PEFTRUN_WITH_NCCL
#include "comm/nccl_communicator.h"
#endif

namespace peftrun {

std::string Agreement::describe() const {
  if (ok) return "all " + std::to_string(world_size) + " ranks ok";
  std::string s = "rank " + std::to_string(failed_rank) + " of " + std::to_string(world_size) +
                  ": " + (what.empty() ? std::string("failed") : what);
  if (failed_ranks > 1) {
    const int others = failed_ranks - 1;
    s += " (and " + std::to_string(others) + " other rank" + (others == 1 ? "" : "s") + ")";
  }
  return s;
}

Agreement Communicator::agree(bool local_ok, const std::string& what) {
  // Flags and text are host memory: a device backend agrees over the communicator it wraps.
  if (Communicator& h = host(); &h != this) return h.agree(local_ok, what);
  // Named in a timeout message, so a hang here says which agreement the job was trying to reach.
  std::string saved = std::exchange(context_, "agree(\"" + what + "\")");
  struct Restore {
    std::string& target;
    std::string& value;
    ~Restore() { target = std::move(value); }
  } restore{context_, saved};

  Agreement a;
  a.world_size = world_size();
  // One byte per rank rather than a reduction: it yields the lowest failing rank and the count
  // in one collective, and the happy path moves only world bytes.
  std::vector<unsigned char> flags(static_cast<std::size_t>(a.world_size));
  const unsigned char mine = local_ok ? 0 : 1;
  all_gather(&mine, flags.data(), 1);
  for (int r = 0; r < a.world_size; ++r) {
    if (flags[static_cast<std::size_t>(r)] == 0) continue;
    if (a.failed_rank < 0) a.failed_rank = r;
    ++a.failed_ranks;
  }
  a.ok = a.failed_ranks == 0;
  if (!a.ok) {
    // Fixed size, so no rank needs to know the length first: one broadcast, failure path only.
    std::vector<char> text(Agreement::kMaxWhat + 1, '\0');
    if (rank() == a.failed_rank) {
      std::memcpy(text.data(), what.data(), std::min(what.size(), Agreement::kMaxWhat));
    }
    broadcast(text.data(), text.size(), a.failed_rank);
    a.what.assign(text.data(), ::strnlen(text.data(), Agreement::kMaxWhat));
  }
  return a;
}

bool Communicator::gather_in_place(const void* in, const void* out, std::size_t bytes_per_rank,
                                   int rank, int world) {
  const auto a = reinterpret_cast<std::uintptr_t>(in), b = reinterpret_cast<std::uintptr_t>(out);
  const std::size_t out_bytes = std::size_t(world) * bytes_per_rank;
  if (a == b + std::size_t(rank) * bytes_per_rank) return true;
  if (a < b + out_bytes && b < a + bytes_per_rank) {
    throw std::invalid_argument(
        "all_gather: the input overlaps the output other than at this rank's own slot");
  }
  return false;
}

void Communicator::set_timeout(double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds)) {
    throw std::invalid_argument("communicator timeout must be a positive number of seconds, got " +
                                std::to_string(seconds));
  }
  timeout_s_ = seconds;
}

bool comm_built_with_mpi() {
#if PEFTRUN_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool comm_built_with_nccl() {
#if PEFTRUN_WITH_NCCL
  return true;
#else
  return false;
#endif
}

namespace {

std::unique_ptr<Communicator> make_host_communicator(const CommRequest& request) {
  const std::string origin = request.origin.empty() ? "the launcher" : request.origin;
  if (mpi_runtime_active()) {
#if PEFTRUN_WITH_MPI
    auto comm = std::make_unique<MpiCommunicator>(request.timeout_s);
    // A launcher from another MPI (MPICH's mpiexec starting an Open MPI binary, or srun without
    // PMI support) starts N singletons that each see a world of 1: say so instead of training N
    // independent copies.
    if (request.world_size > 0 && comm->world_size() != request.world_size) {
      throw std::runtime_error(
          "MPI reports a world of " + std::to_string(comm->world_size()) + " rank(s) but " +
          origin + " says " + std::to_string(request.world_size) +
          ": the launcher (mpirun/srun) does not match the MPI library peftrun was built with");
    }
    if (request.world_size > 0 && request.rank >= 0 && comm->rank() != request.rank) {
      throw std::runtime_error("MPI says this process is rank " + std::to_string(comm->rank()) +
                               " but " + origin + " says rank " + std::to_string(request.rank));
    }
    return comm;
#endif
  }
  if (request.world_size == 1) {
    auto comm = make_local_communicator();
    comm->set_timeout(request.timeout_s);
    return comm;
  }
  const std::string who = request.world_size > 1
                              ? "launched as rank " + std::to_string(request.rank) + " of " +
                                    std::to_string(request.world_size) + " (" + origin + ")"
                              : "launched by an MPI launcher (" + origin + ")";
  if (!comm_built_with_mpi()) {
    throw std::runtime_error(
        who +
        ", but this peftrun was built without MPI; rebuild with libopenmpi-dev installed "
        "(cmake -DPEFTRUN_MPI=ON), or run a single process without mpirun");
  }
  throw std::runtime_error(who +
                           ", but MPI is not initialised: main() must create an MpiRuntime "
                           "before the communicator");
}

}  // namespace

std::unique_ptr<Communicator> make_communicator(const CommRequest& request) {
  std::unique_ptr<Communicator> host = make_host_communicator(request);
  if (!request.device_buffers) return host;
#if PEFTRUN_WITH_NCCL
  return NcclCommunicator::create(std::move(host), request.local_rank);
#elif PEFTRUN_CUDA_EMULATION
  // The emulated device's memory is host memory: the host communicator reduces it directly.
  return host;
#else
  throw std::runtime_error(
      "the NCCL communicator (device buffers) was requested, but this peftrun was built without "
      "NCCL: it needs the CUDA backend and libnccl (nccl.h and libnccl.so in the CUDA toolkit); "
      "rebuild with them, or run on the CPU (runtime.device: cpu)");
#endif
}

}  // namespace peftrun
