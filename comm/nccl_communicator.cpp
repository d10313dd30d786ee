// Compiled to nothing unless CMake found the CUDA backend and NCCL (PEFTRUN_WITH_NCCL):
// comm/*.cpp is globbed.
#if PEFTRUN_WITH_NCCL

#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "comm/collective_report.h"
#include "comm/cuda_device_choice.h"
#include "comm/mpi_runtime.h"
#include "comm/nccl_id_exchange.h"
#include "comm/poll_until.h"

namespace peftrun {

static_assert(sizeof(ncclUniqueId) == kNcclUniqueIdBytes, "NCCL_UNIQUE_ID_BYTES changed");

namespace {

// How long a failing rank gives ncclCommAbort before it ends the job anyway: the abort frees the
// network and device resources cleanly, but it must not become the hang it is meant to end.
constexpr auto kAbortGrace = std::chrono::seconds(5);

// A CUDA runtime call that fails outside a collective's wait (creating a stream or an event,
// recording one) is a local error: thrown, naming the call.
void check_cuda(cudaError_t err, const char* call) {
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();
  throw std::runtime_error(std::string("NCCL communicator: ") + call +
                           " failed: " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

double seconds_since(CommClock::time_point start) {
  return std::chrono::duration<double>(CommClock::now() - start).count();
}

// The communicator's asynchronous state: ncclSuccess, ncclInProgress (a non-blocking call is
// still doing its host-side work, e.g. connecting to peers) or an error (also when the query
// itself fails).
ncclResult_t async_state(ncclComm_t comm) {
  ncclResult_t state = ncclSuccess;
  const ncclResult_t q = ncclCommGetAsyncError(comm, &state);
  return q != ncclSuccess ? q : state;
}

bool is_error(ncclResult_t r) {
  return r != ncclSuccess && r != ncclInProgress;
}

}  // namespace

struct NcclCommunicator::Op {
  std::size_t handle = 0;
  cudaEvent_t done = nullptr;  // recorded on the communication stream after the operation
  const char* op = "";         // for messages: "NCCL all_reduce_sum"
  std::size_t count = 0;
  const char* unit = nullptr;
  int root = -1;
  std::string context;
  CommClock::time_point start = CommClock::now();

  std::string describe() const { return describe_collective(op, count, unit, root, context); }
};

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(std::unique_ptr<Communicator> host,
                                                           int local_rank) {
  if (!host) throw std::invalid_argument("NcclCommunicator::create: no host communicator");
  // Device choice first, agreed: a rank without its GPU must not leave the others waiting for
  // it in the id broadcast.
  int count = 0;
  std::string note;
  if (const cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    (void)cudaGetLastError();
    note = cudaGetErrorString(err);
    count = 0;
  }
  const CudaDeviceChoice choice =
      choose_cuda_device(local_rank, count, std::getenv("CUDA_VISIBLE_DEVICES"), note);
  std::string problem = choice.error;
  if (choice.ok()) {
    if (const cudaError_t err = cudaSetDevice(choice.device); err != cudaSuccess) {
      (void)cudaGetLastError();
      problem =
          "cudaSetDevice(" + std::to_string(choice.device) + ") failed: " + cudaGetErrorString(err);
    }
  }
  if (!problem.empty()) problem += " (host " + local_host_name() + ")";
  if (const Agreement a = host->agree(problem.empty(), problem); !a.ok) {
    throw std::runtime_error("cannot use the NCCL backend: " + a.describe());
  }

  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) version = NCCL_VERSION_CODE;
  const NcclUniqueIdBytes id = exchange_nccl_unique_id(*host, version, [] {
    ncclUniqueId uid;
    if (const ncclResult_t r = ncclGetUniqueId(&uid); r != ncclSuccess) {
      throw std::runtime_error(std::string("ncclGetUniqueId failed: ") + ncclGetErrorString(r) +
                               ": " + ncclGetLastError(nullptr) +
                               " (NCCL_SOCKET_IFNAME picks the network interface)");
    }
    NcclUniqueIdBytes bytes;
    std::memcpy(bytes.data(), &uid, bytes.size());
    return bytes;
  });

  std::unique_ptr<NcclCommunicator> comm(new NcclCommunicator(std::move(host), choice.device));
  comm->init_nccl(id.data());
  return comm;
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Communicator> host, int device)
    : host_(std::move(host)),
      device_(device),
      host_name_(local_host_name()),
      uncaught_at_start_(std::uncaught_exceptions()) {
  set_timeout(host_->timeout());
}

void NcclCommunicator::init_nccl(const unsigned char* unique_id) {
  ncclUniqueId uid;
  std::memcpy(&uid, unique_id, sizeof uid);
  // Non-blocking: ncclCommInitRankConfig returns at once and the connection setup runs in the
  // background, so this thread can give up at the deadline (and abort) when a peer never joins.
  // The communicator stays non-blocking for every later call, for the same reason: NCCL
  // connects lazily, so an enqueue can wait for a peer too.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const std::string what = "NCCL communicator creation (ncclCommInitRankConfig over " +
                           std::to_string(world_size()) + " ranks)";
  const auto start = CommClock::now();
  ncclComm_t created = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&created, world_size(), uid, rank(), &config);
  comm_ = created;  // set before polling, so a timeout can abort it
  if (is_error(r)) fail_nccl(what, start, r);
  settle(what, start);

  // The greatest priority lets NCCL's few blocks be scheduled as soon as their inputs are ready
  // instead of queueing behind the compute kernels they are meant to overlap with.
  int least = 0, greatest = 0;
  check_cuda(cudaDeviceGetStreamPriorityRange(&least, &greatest),
             "cudaDeviceGetStreamPriorityRange");
  check_cuda(cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, greatest),
             "cudaStreamCreateWithPriority");
  check_cuda(cudaEventCreateWithFlags(&inputs_ready_, cudaEventDisableTiming),
             "cudaEventCreateWithFlags");
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) {
    if (std::uncaught_exceptions() > uncaught_at_start_) {
      // This rank is leaving on an exception; its peers may never reach their finalize.
      abort_nccl_bounded();
    } else {
      wait_all();
      const std::string what = "NCCL communicator finalize";
      const auto start = CommClock::now();
      const ncclResult_t r = ncclCommFinalize(comm_);
      if (is_error(r)) fail_nccl(what, start, r);
      settle(what, start);
      (void)ncclCommDestroy(comm_);
      comm_ = nullptr;
    }
  }
  for (auto& op : pending_) (void)cudaEventDestroy(op->done);
  for (cudaEvent_t e : free_events_) (void)cudaEventDestroy(e);
  if (inputs_ready_ != nullptr) (void)cudaEventDestroy(inputs_ready_);
  if (comm_stream_ != nullptr) (void)cudaStreamDestroy(comm_stream_);
}

int NcclCommunicator::rank() const {
  return host_->rank();
}
int NcclCommunicator::world_size() const {
  return host_->world_size();
}

void NcclCommunicator::set_timeout(double seconds) {
  Communicator::set_timeout(seconds);
  host_->set_timeout(seconds);
}

// ---------------------------------------------------------------------------------------------
// Starting, polling and finishing operations
// ---------------------------------------------------------------------------------------------

cudaEvent_t NcclCommunicator::take_event() {
  if (!free_events_.empty()) {
    cudaEvent_t e = free_events_.back();
    free_events_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  return e;
}

void NcclCommunicator::recycle(Op& op) {
  if (op.done != nullptr) free_events_.push_back(std::exchange(op.done, nullptr));
}

template <class Enqueue>
std::size_t NcclCommunicator::launch(const char* op_name, std::size_t count, const char* unit,
                                     int root, Enqueue&& enqueue) {
  auto op = std::make_unique<Op>();
  op->handle = next_handle_++;
  op->op = op_name;
  op->count = count;
  op->unit = unit;
  op->root = root;
  op->context = context();
  // The communication stream waits for everything queued on the compute stream so far: the
  // inputs are written, and an output slot is no longer being read.
  check_cuda(cudaEventRecord(inputs_ready_, compute_stream_), "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(comm_stream_, inputs_ready_, 0), "cudaStreamWaitEvent");
  const ncclResult_t r = static_cast<ncclResult_t>(enqueue());
  // Non-blocking mode: the call may still be setting up (connecting to peers) in the
  // background; the operation is queued on the stream once the state turns ncclSuccess.
  if (r == ncclInProgress) settle(op->describe(), op->start);
  if (is_error(r)) fail_nccl(op->describe(), op->start, r);
  op->done = take_event();
  check_cuda(cudaEventRecord(op->done, comm_stream_), "cudaEventRecord");
  const std::size_t handle = op->handle;
  pending_.push_back(std::move(op));
  return handle;
}

void NcclCommunicator::settle(const std::string& what, CommClock::time_point start) {
  poll_until(
      start, timeout(),
      [&] {
        const ncclResult_t state = async_state(comm_);
        if (is_error(state)) fail_nccl(what, start, state);
        return state == ncclSuccess;
      },
      [&](double) { fail_timeout(what, start); });
}

bool NcclCommunicator::poll(Op& op) {
  // A peer that died shows here (the proxy thread notices the closed connection) while this
  // rank's kernel would spin forever.
  if (const ncclResult_t state = async_state(comm_); is_error(state)) {
    fail_nccl(op.describe(), op.start, state);
  }
  const cudaError_t q = cudaEventQuery(op.done);
  if (q == cudaSuccess) return true;
  if (q != cudaErrorNotReady) fail_cuda(op.describe(), op.start, q);
  return false;
}

void NcclCommunicator::finish(Op& op) {
  poll_until(
      op.start, timeout(), [&] { return poll(op); },
      [&](double) { fail_timeout(op.describe(), op.start); });
  recycle(op);
}

void NcclCommunicator::wait(std::size_t handle) {
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    if (pending_[i]->handle != handle) continue;
    finish(*pending_[i]);
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    return;
  }
}

void NcclCommunicator::wait_all() {
  for (auto& op : pending_) finish(*op);
  pending_.clear();
}

void NcclCommunicator::progress() {
  std::size_t kept = 0;
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    Op& op = *pending_[i];
    if (poll(op)) {
      recycle(op);
      continue;
    }
    if (seconds_since(op.start) > timeout()) fail_timeout(op.describe(), op.start);
    if (kept != i) pending_[kept] = std::move(pending_[i]);
    ++kept;
  }
  pending_.resize(kept);
}

void NcclCommunicator::stream_wait(std::size_t handle, CUstream_st* stream) {
  for (const auto& op : pending_) {
    if (op->handle == handle) {
      check_cuda(cudaStreamWaitEvent(stream, op->done, 0), "cudaStreamWaitEvent");
      return;
    }
  }
}

void NcclCommunicator::stream_wait_all(CUstream_st* stream) {
  // The communication stream is in order: its last operation completes after all the others.
  if (pending_.empty()) return;
  check_cuda(cudaStreamWaitEvent(stream, pending_.back()->done, 0), "cudaStreamWaitEvent");
}

// ---------------------------------------------------------------------------------------------
// Failures: one line, then abort NCCL and end the job
// ---------------------------------------------------------------------------------------------

void NcclCommunicator::abort_nccl_bounded() {
  if (comm_ == nullptr) return;
  ncclComm_t comm = std::exchange(comm_, nullptr);
  auto aborted = std::make_shared<std::promise<void>>();
  std::future<void> done = aborted->get_future();
  std::thread([comm, aborted] {
    (void)ncclCommAbort(comm);
    aborted->set_value();
  }).detach();
  (void)done.wait_for(kAbortGrace);
}

void NcclCommunicator::fail_timeout(const std::string& what, CommClock::time_point start) {
  write_stderr_line(collective_timeout_line(this_rank_identity(rank(), world_size(), host_name_),
                                            what, seconds_since(start), timeout(),
                                            kExitCommTimeout));
  abort_nccl_bounded();
  abort_job(kExitCommTimeout);
}

void NcclCommunicator::fail_nccl(const std::string& what, CommClock::time_point start, int result) {
  const auto r = static_cast<ncclResult_t>(result);
  std::string detail = ncclGetErrorString(r);
  if (const char* last = ncclGetLastError(comm_); last != nullptr && last[0] != '\0') {
    detail += ": ";
    detail += last;
  }
  // Errors about peers are the job-level failure kExitCommTimeout stands for; the rest are this
  // rank's own (a bug, a broken installation).
  const bool peers = r == ncclRemoteError || r == ncclSystemError;
  const int code = peers ? kExitCommTimeout : 1;
  const char* cause = r == ncclRemoteError   ? "a peer rank died or its network connection failed"
                      : r == ncclSystemError ? "a system call or the network failed, often "
                                               "because a peer rank died"
                                             : "";
  write_stderr_line(collective_failure_line(this_rank_identity(rank(), world_size(), host_name_),
                                            what, seconds_since(start), "NCCL: " + detail, cause,
                                            code));
  abort_nccl_bounded();
  abort_job(code);
}

void NcclCommunicator::fail_cuda(const std::string& what, CommClock::time_point start, int error) {
  const auto err = static_cast<cudaError_t>(error);
  write_stderr_line(collective_failure_line(
      this_rank_identity(rank(), world_size(), host_name_), what, seconds_since(start),
      std::string("CUDA: ") + cudaGetErrorName(err) + ": " + cudaGetErrorString(err),
      "an error on this rank's device", 1));
  abort_nccl_bounded();
  abort_job(1);
}

// ---------------------------------------------------------------------------------------------
// The collectives
// ---------------------------------------------------------------------------------------------

void NcclCommunicator::check_device_buffer(const void* p, const char* op, const char* name) const {
  cudaPointerAttributes a{};
  const cudaError_t err = cudaPointerGetAttributes(&a, p);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw std::invalid_argument(std::string("NCCL ") + op + ": cannot inspect " + name + ": " +
                                cudaGetErrorString(err));
  }
  if (a.type == cudaMemoryTypeManaged) return;
  if (a.type != cudaMemoryTypeDevice) {
    throw std::invalid_argument(std::string("NCCL ") + op + ": " + name +
                                " is host memory, but the NCCL communicator moves device "
                                "buffers only (host data goes through host())");
  }
  if (a.device != device_) {
    throw std::invalid_argument(std::string("NCCL ") + op + ": " + name + " lives on CUDA device " +
                                std::to_string(a.device) + ", but this rank's communicator is on " +
                                "device " + std::to_string(device_));
  }
}

void NcclCommunicator::start_all_reduce_sum(float* data, std::size_t n) {
  if (n == 0) return;  // every rank skips it alike: sizes are the same on all ranks
  check_device_buffer(data, "bucketed all_reduce_sum", "the buffer");
  launch("NCCL bucketed all_reduce_sum", n, "floats", -1,
         [&] { return ncclAllReduce(data, data, n, ncclFloat32, ncclSum, comm_, comm_stream_); });
}

void NcclCommunicator::all_reduce_sum(float* data, std::size_t n) {
  if (n == 0) return;
  check_device_buffer(data, "all_reduce_sum", "the buffer");
  wait(launch("NCCL all_reduce_sum", n, "floats", -1, [&] {
    return ncclAllReduce(data, data, n, ncclFloat32, ncclSum, comm_, comm_stream_);
  }));
}

std::size_t NcclCommunicator::start_all_gather(const void* in, void* out,
                                               std::size_t bytes_per_rank) {
  if (bytes_per_rank == 0) return 0;
  check_device_buffer(in, "prefetch all_gather", "the input");
  check_device_buffer(out, "prefetch all_gather", "the output");
  (void)gather_in_place(in, out, bytes_per_rank, rank(), world_size());
  return launch("NCCL prefetch all_gather", bytes_per_rank, "bytes per rank", -1, [&] {
    return ncclAllGather(in, out, bytes_per_rank, ncclUint8, comm_, comm_stream_);
  });
}

void NcclCommunicator::all_gather(const void* in, void* out, std::size_t bytes_per_rank) {
  if (bytes_per_rank == 0) return;
  check_device_buffer(in, "all_gather", "the input");
  check_device_buffer(out, "all_gather", "the output");
  (void)gather_in_place(in, out, bytes_per_rank, rank(), world_size());
  wait(launch("NCCL all_gather", bytes_per_rank, "bytes per rank", -1, [&] {
    return ncclAllGather(in, out, bytes_per_rank, ncclUint8, comm_, comm_stream_);
  }));
}

void NcclCommunicator::broadcast(void* data, std::size_t bytes, int root) {
  if (root < 0 || root >= world_size()) {
    throw std::invalid_argument("broadcast root " + std::to_string(root) +
                                " is not a rank of a world of " + std::to_string(world_size()));
  }
  if (bytes == 0) return;
  check_device_buffer(data, "broadcast", "the buffer");
  wait(launch("NCCL broadcast", bytes, "bytes", root, [&] {
    return ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, comm_stream_);
  }));
}

void NcclCommunicator::all_reduce_sum(double* data, std::size_t n) {
  host_->all_reduce_sum(data, n);
}

void NcclCommunicator::all_reduce_max(double* data, std::size_t n) {
  host_->all_reduce_max(data, n);
}

void NcclCommunicator::barrier() {
  host_->barrier();
}

}  // namespace peftrun

#endif  // PEFTRUN_WITH_NCCL
