// The lines a rank prints when a collective fails or runs past its deadline, shared by every
// backend so that an MPI and an NCCL timeout read alike (and scripts can match one pattern):
//   peftrun: rank 1 of 4 (host node07, pid 4242): all_reduce_sum of 77824 floats did not
//   complete after 600.1 s: a peer rank died or is stuck (or took another code path); ...
// Pure formatting, so it is unit-tested without MPI, NCCL or a device.
#pragma once

#include <cstddef>
#include <string>

namespace peftrun {

// Where the printing rank is.
struct RankIdentity {
  int rank = 0;
  int world = 1;
  std::string host;
  long pid = 0;
};

// gethostname(), or "unknown".
std::string local_host_name();

// This process: `rank` of `world` on `host` (empty: local_host_name()), pid getpid().
RankIdentity this_rank_identity(int rank, int world, std::string host = {});

// "all_gather of 96 bytes per rank from rank 2 in agree(\"read data\")": the operation, its size
// (omitted when `unit` is nullptr, e.g. a barrier), its root (omitted when < 0) and what it was
// part of (omitted when empty).
std::string describe_collective(const char* op, std::size_t count, const char* unit, int root,
                                const std::string& context);

// The line for a collective that did not complete within timeout_s (ends with '\n').
std::string collective_timeout_line(const RankIdentity& who, const std::string& what,
                                    double waited_s, double timeout_s, int exit_code);

// The line for a collective that the library reported as failed (ends with '\n'): `detail` is the
// library's reason, `cause` the likely explanation for the reader.
std::string collective_failure_line(const RankIdentity& who, const std::string& what,
                                    double waited_s, const std::string& detail,
                                    const std::string& cause, int exit_code);

// One write(2), so lines from ranks sharing a terminal do not interleave. Flushes stderr first.
void write_stderr_line(const std::string& line);

}  // namespace peftrun
