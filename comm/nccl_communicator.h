// Communicator over NCCL for GPU ranks: the same calls as every Communicator, but the bulk ones
// take pointers into DEVICE memory (this rank's CUDA device, chosen at creation):
//
//   device buffers (NCCL)                 host values (over host(), the wrapped MPI or Local)
//   all_reduce_sum(float*)                all_reduce_sum(double*), all_reduce_max(double*)
//   all_gather, broadcast                 barrier(), agree()
//   start_all_reduce_sum, start_all_gather
//
// Why the split: NCCL is fast for the large device buffers (gradient buckets, layer weights);
// the few doubles of a step (loss, token count, timings) and the flags of agree() live on the
// host, and one small MPI call costs less than copying them to the device and back. A host
// pointer passed where a device buffer is expected is refused with std::invalid_argument.
//
// Streams. Every NCCL operation runs on one dedicated communication stream. When an operation
// starts, that stream first waits (a CUDA event, not the host) for all work already queued on
// the compute stream (set_compute_stream; the legacy default stream unless set), so a buffer that
// a kernel is still writing is reduced only once it is written, and a staging slot that a kernel
// is still reading is overwritten only once it is read. The blocking calls return when the
// operation is complete. A started operation is complete after wait(handle) / wait_all() (host
// blocks), or, for the device only, after stream_wait(handle, stream): `stream` then waits for
// it without blocking the host, which is how the compute stream waits for a prefetched layer.
//
// Deadlines. NCCL collectives cannot be polled like MPI requests and never time out on their
// own, so each operation records a CUDA event after it, and every host-side wait polls that
// event and ncclCommGetAsyncError until timeout() seconds after the operation started. Past
// that, or when NCCL reports an asynchronous error (a peer died, the network failed), this rank
// prints one line naming its rank, host, pid and the operation (comm/collective_report.h, as the
// MPI communicator does), aborts the NCCL communicator (ncclCommAbort, given a few seconds at
// most) and ends the job (abort_job: MPI_Abort under mpirun) with kExitCommTimeout (exit code 1
// for an NCCL error that is not about peers). A started operation is checked against its
// deadline in every later wait(), wait_all() and progress(); stream_wait() alone checks nothing,
// so a caller that only ever stream-waits must still call progress() or wait_all() (once per
// step is enough).
//
// Tested on one GPU (tests/gpu/nccl_communicator_test.cpp, world = 1, including the creation
// and collective timeouts) and on the CPU (device choice, id exchange, messages). Several ranks
// need one GPU each (NCCL refuses two ranks on one device) and MPI, which our GPU machine lacks:
// the multi-rank NCCL path is not tested yet.
#pragma once

#if PEFTRUN_WITH_NCCL

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

// The CUDA and NCCL handle types are pointers to these structs, so the header needs neither
// cuda_runtime.h nor nccl.h (runtime/ and tests/ include it with the plain host compiler).
struct CUstream_st;
struct CUevent_st;
struct ncclComm;

namespace peftrun {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `host` (every rank calls it): sets this process's CUDA device from
  // `local_rank` (choose_cuda_device: an agreed error, naming the local rank and the device
  // count, when there is no such device), exchanges the NCCL id over `host`
  // (exchange_nccl_unique_id), and creates the communicator with ncclCommInitRankConfig in
  // non-blocking mode, polled against host->timeout() (a rank that never joins ends the job with
  // kExitCommTimeout, like a stuck collective). Rank and world are host's. Throws
  // std::runtime_error (the same on every rank) for a failure that every rank can agree on.
  static std::unique_ptr<NcclCommunicator> create(std::unique_ptr<Communicator> host,
                                                  int local_rank);
  // Waits for unfinished operations, then ncclCommFinalize + ncclCommDestroy (under the timeout).
  // When an exception is unwinding through the owner, ncclCommAbort instead: peers may never
  // reach their finalize.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int world_size() const override;
  const char* backend() const override { return "nccl"; }
  Communicator& host() override { return *host_; }
  // Also sets host()'s timeout, so the host-value calls keep the same deadline.
  void set_timeout(double seconds) override;

  // Device buffers.
  void all_reduce_sum(float* data, std::size_t n) override;
  void all_gather(const void* in, void* out, std::size_t bytes_per_rank) override;
  void broadcast(void* data, std::size_t bytes, int root) override;
  void start_all_reduce_sum(float* data, std::size_t n) override;
  std::size_t start_all_gather(const void* in, void* out, std::size_t bytes_per_rank) override;
  // Handles of completed operations are no-ops (0 is "already complete").
  void wait(std::size_t handle) override;
  void wait_all() override;
  // Retires completed operations and checks the others against their deadlines. Cheap (one
  // cudaEventQuery per operation in flight); never blocks.
  void progress() override;

  // Host values, over host().
  void all_reduce_sum(double* data, std::size_t n) override;
  void all_reduce_max(double* data, std::size_t n) override;
  void barrier() override;

  // --- NCCL only ---
  int device() const { return device_; }
  // The stream whose queued work every later operation waits for before it starts (see above).
  // nullptr: the legacy default stream.
  void set_compute_stream(CUstream_st* stream) { compute_stream_ = stream; }
  CUstream_st* compute_stream() const { return compute_stream_; }
  // The dedicated stream NCCL runs on (created non-blocking, so it never serialises with the
  // legacy default stream).
  CUstream_st* comm_stream() const { return comm_stream_; }
  // Makes `stream` wait for the started operation `handle` without blocking the host. A handle
  // already complete (or 0) adds no wait. The operation stays in flight for wait()/progress().
  void stream_wait(std::size_t handle, CUstream_st* stream);
  // Makes `stream` wait for every operation started so far (one event on the in-order
  // communication stream covers them all).
  void stream_wait_all(CUstream_st* stream);
  // Started operations not yet retired by wait()/wait_all()/progress().
  std::size_t in_flight() const { return pending_.size(); }

 private:
  struct Op;  // one started operation: handle, completion event, what it was, start time

  NcclCommunicator(std::unique_ptr<Communicator> host, int device);
  void init_nccl(const unsigned char* unique_id);
  // Queues one operation on the communication stream (after the compute stream's work) and
  // returns its handle. `enqueue` makes the NCCL call and returns its ncclResult_t (as int).
  template <class Enqueue>
  std::size_t launch(const char* op, std::size_t count, const char* unit, int root,
                     Enqueue&& enqueue);
  void finish(Op& op);  // host-waits for op under its deadline
  bool poll(Op& op);    // true when complete; ends the job on an NCCL or CUDA error
  // Polls until a non-blocking NCCL call has done its host-side work, under the deadline of
  // the operation `what` that started at `start`.
  void settle(const std::string& what, std::chrono::steady_clock::time_point start);
  void recycle(Op& op);  // returns op's event to the pool
  void check_device_buffer(const void* p, const char* op, const char* name) const;
  [[noreturn]] void fail_timeout(const std::string& what,
                                 std::chrono::steady_clock::time_point start);
  [[noreturn]] void fail_nccl(const std::string& what, std::chrono::steady_clock::time_point start,
                              int result);
  [[noreturn]] void fail_cuda(const std::string& what, std::chrono::steady_clock::time_point start,
                              int error);
  void abort_nccl_bounded();
  CUevent_st* take_event();

  std::unique_ptr<Communicator> host_;
  int device_ = -1;
  ncclComm* comm_ = nullptr;
  CUstream_st* comm_stream_ = nullptr;
  CUstream_st* compute_stream_ = nullptr;
  CUevent_st* inputs_ready_ = nullptr;  // recorded on the compute stream before each operation
  std::vector<CUevent_st*> free_events_;
  std::vector<std::unique_ptr<Op>> pending_;
  std::size_t next_handle_ = 1;
  std::string host_name_;
  int uncaught_at_start_ = 0;
};

}  // namespace peftrun

#endif  // PEFTRUN_WITH_NCCL
