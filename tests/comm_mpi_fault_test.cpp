// A rank that dies, hangs or fails alone must end the whole job, non-zero, within the
// communicator timeout + 10 s: never a hang. Each test launches a real 4-rank mpirun of
// comm_mpi_fault_worker (see its header for the scenarios), with a wall-clock limit after which
// the test kills the job itself and fails, and checks afterwards that no rank survived.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct JobResult {
  int exit_code = -1;            // mpirun's exit status, or -1 if it died of a signal
  double seconds = 0;            // launch to exit
  bool overran = false;          // still running at the wall-clock limit: killed by the test
  std::string output;            // stdout + stderr of mpirun and all ranks
  std::vector<pid_t> survivors;  // rank processes still alive after the job ended
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A zombie has finished; only a process that still runs counts as alive.
bool process_alive(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  const char state = stat[close + 2];
  return state != 'Z' && state != 'X';
}

JobResult run_job(const std::string& scenario, double comm_timeout_s, double wall_limit_s) {
  char dir_template[] = "/tmp/peftrun_fault_XXXXXX";
  const fs::path dir = ::mkdtemp(dir_template);
  const fs::path log = dir / "output.txt";

  std::vector<std::string> args = {PEFTRUN_MPIEXEC};
  if (std::string(PEFTRUN_MPIEXEC_OVERSUBSCRIBE).size() > 0) {
    args.push_back(PEFTRUN_MPIEXEC_OVERSUBSCRIBE);
  }
  args.insert(args.end(), {PEFTRUN_MPIEXEC_NP_FLAG, "4", PEFTRUN_FAULT_WORKER, scenario,
                           std::to_string(comm_timeout_s), dir.string()});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  JobResult r;
  const auto start = Clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Own process group, so the test can kill mpirun and everything it started at once.
    ::setpgid(0, 0);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (std::chrono::duration<double>(Clock::now() - start).count() > wall_limit_s) {
      r.overran = true;
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;

  // mpirun's exit means its ranks are gone or going; allow a moment for the teardown.
  std::vector<pid_t> ranks;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".pid") ranks.push_back(std::stoi(read_text(e.path())));
  }
  const auto grace = Clock::now() + std::chrono::seconds(3);
  for (pid_t rank_pid : ranks) {
    while (process_alive(rank_pid) && Clock::now() < grace) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (process_alive(rank_pid)) {
      r.survivors.push_back(rank_pid);
      ::kill(rank_pid, SIGKILL);  // do not leave it behind for the next test
    }
  }
  r.output = read_text(log);
  fs::remove_all(dir);
  return r;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// The bound the design promises: the collective timeout plus 10 s, launch included.
constexpr double kSlack = 10;

TEST(CommMpiFault, StuckPeerTimesOut) {
  const double timeout = 3;
  const JobResult r = run_job("stuck", timeout, timeout + kSlack);
  EXPECT_FALSE(r.overran) << "still running after " << r.seconds << " s\n" << r.output;
  EXPECT_EQ(r.exit_code, kExitCommTimeout) << r.output;
  EXPECT_GE(r.seconds, timeout) << "ended before the timeout: not by the timeout\n" << r.output;
  EXPECT_TRUE(std::regex_search(
      r.output, std::regex("peftrun: rank [013] of 4 \\(host [^)]*\\): all_reduce_sum of 77824 "
                           "floats did not complete after [0-9.]+ s: a peer rank died or is "
                           "stuck")))
      << r.output;
  EXPECT_TRUE(r.survivors.empty()) << r.survivors.size() << " rank(s) survived\n" << r.output;
  std::printf("[ timing   ] stuck peer: job ended after %.1f s (timeout %.0f s)\n", r.seconds,
              timeout);
}

TEST(CommMpiFault, KilledPeer) {
  const double timeout = 3;
  const JobResult r = run_job("killed", timeout, timeout + kSlack);
  EXPECT_FALSE(r.overran) << "still running after " << r.seconds << " s\n" << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(r.survivors.empty()) << r.survivors.size() << " rank(s) survived\n" << r.output;
  std::printf("[ timing   ] killed peer: job ended after %.1f s, exit %d\n", r.seconds,
              r.exit_code);
}

TEST(CommMpiFault, AgreedFailure) {
  const double timeout = 10;
  const JobResult r = run_job("agreed", timeout, timeout + kSlack);
  EXPECT_FALSE(r.overran) << r.output;
  EXPECT_EQ(r.exit_code, 2) << r.output;
  // Every rank, not just the failing one, names rank 1 and its reason.
  EXPECT_EQ(count(r.output, "stopping: rank 1 of 4: cannot read data file /data/missing.bin"), 4u)
      << r.output;
  EXPECT_TRUE(r.survivors.empty()) << r.output;
}

TEST(CommMpiFault, UnagreedFailureAborts) {
  // The others' barrier would only time out after 60 s: ending within 10 s shows that rank 1's
  // MpiRuntime::finish(5) aborted the job.
  const JobResult r = run_job("unagreed", 60, kSlack);
  EXPECT_FALSE(r.overran) << r.output;
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find("simulated local failure"), std::string::npos) << r.output;
  EXPECT_TRUE(r.survivors.empty()) << r.output;
}

}  // namespace
}  // namespace peftrun
