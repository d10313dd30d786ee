// Communicator over MPI_COMM_WORLD for host buffers. Requires MPI to be initialised (MpiRuntime).
//
// Every collective is started non-blocking (MPI_Iallreduce, MPI_Iallgather, MPI_Ibcast,
// MPI_Ibarrier) and polled with MPI_Test until it completes or timeout() seconds have passed
// since the call began; then this rank prints one line to stderr (rank, host, operation, time
// waited, likely cause) and aborts the job with kExitCommTimeout. Blocking MPI calls would wait
// forever for a peer that hangs, and MPI itself only notices peers that exit.
#pragma once

#if PEFTRUN_WITH_MPI

#include <cstddef>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace peftrun {

class MpiCommunicator final : public Communicator {
 public:
  // MPI counts are ints; buffers larger than this many bytes are moved in several collectives
  // (one deadline for the whole call). Tests lower it to exercise the split path.
  static constexpr std::size_t kDefaultMaxChunkBytes = std::size_t(1) << 30;

  explicit MpiCommunicator(double timeout_s = kDefaultTimeoutS,
                           std::size_t max_chunk_bytes = kDefaultMaxChunkBytes);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  const char* backend() const override { return "mpi"; }
  void all_reduce_sum(float* data, std::size_t n) override;
  void all_reduce_sum(double* data, std::size_t n) override;
  void all_reduce_max(double* data, std::size_t n) override;
  void all_gather(const void* in, void* out, std::size_t bytes_per_rank) override;
  void broadcast(void* data, std::size_t bytes, int root) override;
  void barrier() override;
  void start_all_reduce_sum(float* data, std::size_t n) override;
  void progress() override;
  std::size_t start_all_gather(const void* in, void* out, std::size_t bytes_per_rank) override;
  void wait(std::size_t handle) override;
  void wait_all() override;

 private:
  struct Pending;  // one started reduction (request, size, start time, context)
  std::vector<Pending*> pending_;
  std::size_t next_handle_ = 1;  // 0 = "already complete"
  void finish(Pending* p);
  int rank_ = 0;
  int world_ = 1;
  std::size_t max_chunk_bytes_;
  std::string host_;
};

}  // namespace peftrun

#endif  // PEFTRUN_WITH_MPI
