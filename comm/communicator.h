// The Communicator: the only way ranks talk to each other. Nothing outside comm/ calls MPI or
// NCCL. Implementations: Local (world = 1, this file), MPI (host buffers) and NCCL (device
// buffers) arrive with the distributed-training issue. Every collective will carry a timeout.
#pragma once

#include <cstddef>
#include <memory>

namespace peftrun {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In-place sum over ranks of n floats.
  virtual void all_reduce_sum(float* data, std::size_t n) = 0;
  // In-place sum over ranks of n doubles (losses, token counts, norms).
  virtual void all_reduce_sum(double* data, std::size_t n) = 0;
  // out[world * bytes_per_rank] <- each rank's `in` [bytes_per_rank], rank order.
  virtual void all_gather(const void* in, void* out, std::size_t bytes_per_rank) = 0;
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;
  virtual void barrier() = 0;
};

// world = 1: every collective is the identity.
std::unique_ptr<Communicator> make_local_communicator();

}  // namespace peftrun
