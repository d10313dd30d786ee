// The Communicator: the only way ranks talk to each other. Nothing outside comm/ calls MPI or
// NCCL. Implementations: Local (world = 1), MPI (host buffers, comm/mpi_communicator.h) and, with
// the CUDA backend, NCCL (comm/nccl_communicator.h: device buffers, the same calls with pointers
// into device memory).
//
// Which memory a call takes: the bulk calls — all_reduce_sum(float*), all_gather, broadcast and
// the non-blocking start_* calls — take the backend's buffers (host for Local and MPI, device for
// NCCL). The small host values of a step — the double reductions (loss, token counts, timings),
// barrier() and agree() — take host memory in every backend; NCCL carries them over the host
// communicator it wraps (host()).
//
// Every call is a collective: all ranks must make the same calls in the same order with the same
// sizes (and the same root). A collective that does not complete within timeout() seconds — a
// peer died, hangs, or took another code path — ends the whole job with exit code
// kExitCommTimeout and one line on stderr naming the rank and the operation, instead of hanging.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace peftrun {

// Job exit status when a collective timed out (the MPI_Abort error code). Distinct from main's
// 1 (runtime error), 2 (bad command line/config) and 3 (diverged) so scripts can tell a dead or
// stuck peer from a failure of this rank.
inline constexpr int kExitCommTimeout = 4;

// Result of Communicator::agree: the same on every rank.
struct Agreement {
  bool ok = true;        // every rank reported local_ok = true
  int failed_rank = -1;  // lowest rank that reported a failure (-1 when ok)
  int failed_ranks = 0;  // how many ranks reported a failure
  int world_size = 1;
  std::string what;  // failed_rank's description (truncated to kMaxWhat bytes)
  static constexpr std::size_t kMaxWhat = 1000;

  // "rank 2 of 4: cannot read data/train.bin (and 1 other rank)"; "all 4 ranks ok" when ok.
  std::string describe() const;
};

class Communicator {
 public:
  static constexpr double kDefaultTimeoutS = 600;

  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // "local", "mpi" or "nccl": for log lines.
  virtual const char* backend() const = 0;
  // The communicator for host buffers: this one for Local and MPI, the wrapped MPI or Local
  // communicator for NCCL. Host data that is not a double (a checksum, a flag array) goes here.
  virtual Communicator& host() { return *this; }

  // In-place sum over ranks of n floats.
  virtual void all_reduce_sum(float* data, std::size_t n) = 0;
  // In-place sum over ranks of n doubles (losses, token counts, norms). Host memory.
  virtual void all_reduce_sum(double* data, std::size_t n) = 0;
  // In-place element-wise maximum over ranks (e.g. slowest step time, largest memory use). Host
  // memory.
  virtual void all_reduce_max(double* data, std::size_t n) = 0;
  // out[world * bytes_per_rank] <- each rank's `in` [bytes_per_rank], rank order. `in` may be
  // out + rank * bytes_per_rank (in place); any other overlap is an error. Uneven shards are
  // padded by the caller to a common bytes_per_rank.
  virtual void all_gather(const void* in, void* out, std::size_t bytes_per_rank) = 0;
  // data[bytes] of rank `root` is copied to every rank. Throws std::invalid_argument for a root
  // outside [0, world).
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // Non-blocking in-place sum of n floats, for gradient buckets reduced while backward still
  // runs: it starts now and is complete after wait_all(). `data` must not be touched until then.
  // Every rank must start the same reductions in the same order. The default is blocking.
  virtual void start_all_reduce_sum(float* data, std::size_t n) { all_reduce_sum(data, n); }
  // Lets started reductions advance (MPI progresses them only inside MPI calls); cheap.
  virtual void progress() {}
  // Non-blocking all_gather (same layout as all_gather) for prefetching the next layer's
  // weights while the current one computes. Returns a handle for wait(); `in` and `out` must
  // not be touched until then. The default is blocking.
  virtual std::size_t start_all_gather(const void* in, void* out, std::size_t bytes_per_rank) {
    all_gather(in, out, bytes_per_rank);
    return 0;
  }
  // Completes one started operation (a no-op for a handle already completed).
  virtual void wait(std::size_t handle) { (void)handle; }
  // Completes every started operation, each under the timeout counted from its start.
  virtual void wait_all() {}

  // Collective: every rank says whether its local work succeeded; all ranks get the same answer,
  // including the description given by the lowest failing rank. Use it wherever one rank can fail
  // alone (a data file, a non-finite loss on its shard, a checkpoint write) so that every rank
  // stops with the same message instead of the others waiting in the next collective until the
  // timeout. Costs one tiny all_gather when every rank is ok (plus one broadcast otherwise), on
  // host() (host memory in every backend).
  Agreement agree(bool local_ok, const std::string& what);

  // Seconds one collective may take before the job is aborted (comm.timeout_s). Must be > 0 and
  // finite; std::invalid_argument otherwise. Long enough for the slowest legitimate wait: a rank
  // that writes a checkpoint while the others wait in the next collective, for example.
  // Virtual so a wrapping backend (NCCL over MPI) passes it on to the communicator it wraps.
  virtual void set_timeout(double seconds);
  double timeout() const { return timeout_s_; }

 protected:
  // all_gather's buffer rule: true when `in` is this rank's slot of `out` (in place), false when
  // the two do not overlap; std::invalid_argument for any other overlap.
  static bool gather_in_place(const void* in, const void* out, std::size_t bytes_per_rank, int rank,
                              int world);

  // What the current collective is part of (e.g. "agree(\"read data\")"), for timeout messages.
  const std::string& context() const { return context_; }

 private:
  double timeout_s_ = kDefaultTimeoutS;
  std::string context_;
};

// world = 1: every collective is the identity.
std::unique_ptr<Communicator> make_local_communicator();

// True when this build carries the MPI communicator (CMake PEFTRUN_MPI found an MPI).
bool comm_built_with_mpi();
// True when this build carries the NCCL communicator (the CUDA backend and libnccl were found).
bool comm_built_with_nccl();

// What the launcher said about this process (launch/world.h fills it from the environment).
struct CommRequest {
  int world_size = 1;  // <= 0: the launcher did not say; MPI's MPI_COMM_WORLD decides
  int rank = 0;        // < 0: unknown
  std::string origin;  // where world_size came from, for messages ("OMPI_COMM_WORLD_SIZE")
  double timeout_s = Communicator::kDefaultTimeoutS;
  int local_rank = 0;  // index among the ranks on this node: the CUDA device of a GPU rank
  // Ask for the NCCL backend (GPU ranks: the bulk calls take device pointers). False (every CPU
  // run) gives the host backend exactly as before.
  bool device_buffers = false;
};

// The host communicator: MPI when MPI is initialised (see comm/mpi_runtime.h), Local for a single
// process without MPI. With `device_buffers`, NCCL wrapped around that host communicator (which
// carries the NCCL id and the host values; see comm/nccl_communicator.h), on CUDA device
// local_rank. Throws std::runtime_error with a clear message when the request asks for more than
// one rank but this build has no MPI, or MPI was not initialised, or MPI's world disagrees with
// the launcher's; or asks for device buffers but this build has no NCCL or this rank no GPU.
std::unique_ptr<Communicator> make_communicator(const CommRequest& request);

}  // namespace peftrun
