// Compiled to nothing unless CMake found MPI (PEFTRUN_WITH_MPI): comm/*.cpp is globbed.
#if PEFTRUN_WITH_MPI

#include "comm/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

#include "comm/collective_report.h"
#include "comm/mpi_runtime.h"
#include "comm/poll_until.h"

namespace peftrun {
namespace {

// One collective call, as named in a timeout message.
struct CallState {
  const char* op;     // "all_reduce_sum"
  std::size_t count;  // elements or bytes
  const char* unit;   // "floats", "bytes per rank"; nullptr for barrier
  int root;           // broadcast root, else -1
  int rank, world;
  const std::string& host;
  const std::string& context;
  double timeout_s;
  CommClock::time_point start = CommClock::now();
};

[[noreturn]] void fail_mpi_call(int rc, const char* call) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  write_stderr_line(std::string("peftrun: ") + call + " failed: " + std::string(text, len) + "\n");
  abort_job(1);
}

inline void check(int rc, const char* call) {
  if (rc != MPI_SUCCESS) fail_mpi_call(rc, call);
}

[[noreturn]] void report_timeout(const CallState& s, double waited) {
  const std::string what = describe_collective(s.op, s.count, s.unit, s.root, s.context);
  write_stderr_line(collective_timeout_line(this_rank_identity(s.rank, s.world, s.host), what,
                                            waited, s.timeout_s, kExitCommTimeout));
  abort_job(kExitCommTimeout);
}

// Polls `req` to completion; past the call's deadline, reports and ends the job.
void wait_or_abort(MPI_Request& req, const CallState& s) {
  poll_until(
      s.start, s.timeout_s,
      [&] {
        int done = 0;
        check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
        return done != 0;
      },
      [&](double waited) { report_timeout(s, waited); });
}

// Elements per collective: what fits in max_chunk_bytes and in an int count.
std::size_t chunk_elements(std::size_t max_chunk_bytes, std::size_t element_bytes) {
  const std::size_t by_bytes = std::max<std::size_t>(1, max_chunk_bytes / element_bytes);
  return std::min<std::size_t>(by_bytes, INT_MAX);
}

template <class T>
void reduce_in_place(T* data, std::size_t n, MPI_Datatype type, MPI_Op op,
                     std::size_t max_chunk_bytes, const CallState& s) {
  const std::size_t per = chunk_elements(max_chunk_bytes, sizeof(T));
  std::size_t off = 0;
  // do/while: a zero-length call is still a collective, so ranks stay in step even then.
  do {
    const std::size_t len = std::min(per, n - off);
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Iallreduce(MPI_IN_PLACE, data + off, static_cast<int>(len), type, op, MPI_COMM_WORLD,
                         &req),
          "MPI_Iallreduce");
    wait_or_abort(req, s);
    off += len;
  } while (off < n);
}

}  // namespace

MpiCommunicator::MpiCommunicator(double timeout_s, std::size_t max_chunk_bytes)
    : max_chunk_bytes_(max_chunk_bytes) {
  if (!mpi_runtime_active()) {
    throw std::logic_error("MpiCommunicator needs MPI to be initialised first (MpiRuntime)");
  }
  set_timeout(timeout_s);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_);
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  MPI_Get_processor_name(name, &len);
  host_.assign(name, static_cast<std::size_t>(len));
}

struct MpiCommunicator::Pending {
  MPI_Request request = MPI_REQUEST_NULL;
  std::size_t handle = 0;
  const char* op = "";
  const char* unit = "";
  std::size_t count = 0;
  std::string context;
  CommClock::time_point start = CommClock::now();
};

MpiCommunicator::~MpiCommunicator() {
  for (Pending* p : pending_) delete p;
}

void MpiCommunicator::start_all_reduce_sum(float* data, std::size_t n) {
  if (n == 0 || n * sizeof(float) > max_chunk_bytes_) {
    all_reduce_sum(data, n);  // a bucket too large for one request: the blocking split path
    return;
  }
  auto* p = new Pending;
  p->handle = next_handle_++;
  p->op = "bucketed all_reduce_sum";
  p->unit = "floats";
  p->count = n;
  p->context = context();
  check(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                       &p->request),
        "MPI_Iallreduce");
  pending_.push_back(p);
}

void MpiCommunicator::progress() {
  for (Pending* p : pending_) {
    if (p->request == MPI_REQUEST_NULL) continue;
    int done = 0;
    check(MPI_Test(&p->request, &done, MPI_STATUS_IGNORE), "MPI_Test");
  }
}

void MpiCommunicator::finish(Pending* p) {
  if (p->request != MPI_REQUEST_NULL) {
    CallState s{p->op, p->count, p->unit, -1, rank_, world_, host_, p->context, timeout()};
    s.start = p->start;
    wait_or_abort(p->request, s);
  }
  delete p;
}

std::size_t MpiCommunicator::start_all_gather(const void* in, void* out,
                                              std::size_t bytes_per_rank) {
  if (bytes_per_rank == 0 || bytes_per_rank > max_chunk_bytes_) {
    all_gather(in, out, bytes_per_rank);  // too large for one request: the blocking split path
    return 0;
  }
  auto* p = new Pending;
  p->handle = next_handle_++;
  p->op = "prefetch all_gather";
  p->unit = "bytes per rank";
  p->count = bytes_per_rank;
  p->context = context();
  check(MPI_Iallgather(in, static_cast<int>(bytes_per_rank), MPI_BYTE, out,
                       static_cast<int>(bytes_per_rank), MPI_BYTE, MPI_COMM_WORLD, &p->request),
        "MPI_Iallgather");
  pending_.push_back(p);
  return p->handle;
}

void MpiCommunicator::wait(std::size_t handle) {
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    if (pending_[i]->handle == handle) {
      Pending* p = pending_[i];
      pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
      finish(p);
      return;
    }
  }
}

void MpiCommunicator::wait_all() {
  for (Pending* p : pending_) finish(p);
  pending_.clear();
}
void MpiCommunicator::all_reduce_sum(float* data, std::size_t n) {
  const CallState s{"all_reduce_sum", n, "floats", -1, rank_, world_, host_, context(), timeout()};
  reduce_in_place(data, n, MPI_FLOAT, MPI_SUM, max_chunk_bytes_, s);
}

void MpiCommunicator::all_reduce_sum(double* data, std::size_t n) {
  const CallState s{"all_reduce_sum", n, "doubles", -1, rank_, world_, host_, context(), timeout()};
  reduce_in_place(data, n, MPI_DOUBLE, MPI_SUM, max_chunk_bytes_, s);
}

void MpiCommunicator::all_reduce_max(double* data, std::size_t n) {
  const CallState s{"all_reduce_max", n, "doubles", -1, rank_, world_, host_, context(), timeout()};
  reduce_in_place(data, n, MPI_DOUBLE, MPI_MAX, max_chunk_bytes_, s);
}

void MpiCommunicator::all_gather(const void* in, void* out, std::size_t bytes_per_rank) {
  const CallState s{"all_gather", bytes_per_rank, "bytes per rank", -1,       rank_,
                    world_,       host_,          context(),        timeout()};
  const auto* src = static_cast<const unsigned char*>(in);
  auto* dst = static_cast<unsigned char*>(out);
  const bool in_place = gather_in_place(in, out, bytes_per_rank, rank_, world_);
  const std::size_t per = chunk_elements(max_chunk_bytes_, 1);
  std::size_t off = 0;
  do {
    const std::size_t len = std::min(per, bytes_per_rank - off);
    // When split, rank r's piece of this chunk lands at out + r * bytes_per_rank + off: one block
    // of len bytes whose extent is stretched to bytes_per_rank places every rank's piece.
    MPI_Datatype block = MPI_BYTE;
    int recv_count = static_cast<int>(len);
    const bool split = len != bytes_per_rank;
    if (split) {
      MPI_Datatype piece = MPI_DATATYPE_NULL;
      check(MPI_Type_contiguous(static_cast<int>(len), MPI_BYTE, &piece), "MPI_Type_contiguous");
      check(MPI_Type_create_resized(piece, 0, static_cast<MPI_Aint>(bytes_per_rank), &block),
            "MPI_Type_create_resized");
      MPI_Type_free(&piece);
      check(MPI_Type_commit(&block), "MPI_Type_commit");
      recv_count = 1;
    }
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Iallgather(in_place ? MPI_IN_PLACE : src + off, static_cast<int>(len), MPI_BYTE,
                         dst + off, recv_count, block, MPI_COMM_WORLD, &req),
          "MPI_Iallgather");
    wait_or_abort(req, s);
    if (split) MPI_Type_free(&block);
    off += len;
  } while (off < bytes_per_rank);
}

void MpiCommunicator::broadcast(void* data, std::size_t bytes, int root) {
  if (root < 0 || root >= world_) {
    throw std::invalid_argument("broadcast root " + std::to_string(root) +
                                " is not a rank of a world of " + std::to_string(world_));
  }
  const CallState s{"broadcast", bytes, "bytes", root, rank_, world_, host_, context(), timeout()};
  auto* p = static_cast<unsigned char*>(data);
  const std::size_t per = chunk_elements(max_chunk_bytes_, 1);
  std::size_t off = 0;
  do {
    const std::size_t len = std::min(per, bytes - off);
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Ibcast(p + off, static_cast<int>(len), MPI_BYTE, root, MPI_COMM_WORLD, &req),
          "MPI_Ibcast");
    wait_or_abort(req, s);
    off += len;
  } while (off < bytes);
}

void MpiCommunicator::barrier() {
  const CallState s{"barrier", 0, nullptr, -1, rank_, world_, host_, context(), timeout()};
  MPI_Request req = MPI_REQUEST_NULL;
  check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier");
  wait_or_abort(req, s);
}

}  // namespace peftrun

#endif  // PEFTRUN_WITH_MPI
