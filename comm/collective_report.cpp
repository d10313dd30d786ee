#include "comm/collective_report.h"

#include <unistd.h>

#include <cstdio>
#include <utility>

namespace peftrun {

std::string local_host_name() {
  char name[256] = {};
  return ::gethostname(name, sizeof name - 1) == 0 && name[0] != '\0' ? name : "unknown";
}

RankIdentity this_rank_identity(int rank, int world, std::string host) {
  if (host.empty()) host = local_host_name();
  return RankIdentity{rank, world, std::move(host), static_cast<long>(::getpid())};
}

std::string describe_collective(const char* op, std::size_t count, const char* unit, int root,
                                const std::string& context) {
  std::string what = op;
  if (unit != nullptr) what += " of " + std::to_string(count) + " " + unit;
  if (root >= 0) what += " from rank " + std::to_string(root);
  if (!context.empty()) what += " in " + context;
  return what;
}

namespace {

std::string prefix(const RankIdentity& who) {
  return "peftrun: rank " + std::to_string(who.rank) + " of " + std::to_string(who.world) +
         " (host " + who.host + ", pid " + std::to_string(who.pid) + "): ";
}

std::string seconds(double s) {
  char text[64];
  std::snprintf(text, sizeof text, "%.1f s", s);
  return text;
}

}  // namespace

std::string collective_timeout_line(const RankIdentity& who, const std::string& what,
                                    double waited_s, double timeout_s, int exit_code) {
  char limit[64];
  std::snprintf(limit, sizeof limit, "%g s", timeout_s);
  return prefix(who) + what + " did not complete after " + seconds(waited_s) +
         ": a peer rank died or is stuck (or took another code path); aborting the job with "
         "exit code " +
         std::to_string(exit_code) + " (raise comm.timeout_s, now " + limit +
         ", if a step legitimately takes longer)\n";
}

std::string collective_failure_line(const RankIdentity& who, const std::string& what,
                                    double waited_s, const std::string& detail,
                                    const std::string& cause, int exit_code) {
  std::string line = prefix(who) + what + " failed after " + seconds(waited_s) + ": " + detail;
  if (!cause.empty()) line += " (" + cause + ")";
  return line + "; aborting the job with exit code " + std::to_string(exit_code) + "\n";
}

void write_stderr_line(const std::string& line) {
  std::fflush(stderr);
  const ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace peftrun
