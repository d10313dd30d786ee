// Preemption: SIGTERM or SIGINT finishes the current step, writes a checkpoint and exits 0 with
// a line saying where (and the checkpoint continues exactly); a second signal aborts at once;
// under mpirun, signalling one rank stops every rank after the same step.
#include <gtest/gtest.h>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/e2e.h"

namespace fs = std::filesystem;
using namespace peftrun::testing_support;

namespace {

const std::string kTiny = std::string(PEFTRUN_SOURCE_DIR) + "/configs/tiny.yaml";

// Far more steps than a test waits for; a constant lr, so that a run of fewer steps is the same
// run cut short (the schedule does not depend on train.steps). No periodic checkpoints.
std::string run_args(const fs::path& out, int steps) {
  return kTiny + " --set train.steps=" + std::to_string(steps) +
         " --set optim.schedule=constant --set optim.warmup_steps=0 --set data.eval= "
         "--set data.seq_len=32 --set train.micro_batch_size=2 --set runtime.threads=1 "
         "--set output_dir=" +
         out.string();
}

std::string peftrun_command(const fs::path& out, int steps, int ranks = 1) {
  const std::string mpi =
      ranks > 1 ? "mpirun --oversubscribe -np " + std::to_string(ranks) + " " : "";
  return mpi + PEFTRUN_BINARY + " " + run_args(out, steps);
}

int last_metrics_step(const fs::path& metrics) {
  const std::vector<nlohmann::json> records = read_jsonl(metrics);
  return records.empty() ? -1 : records.back()["step"].get<int>();
}

class EachStopSignal : public ::testing::TestWithParam<int> {};

TEST_P(EachStopSignal, FinishesTheStepWritesACheckpointAndExitsZero) {
  const int signo = GetParam();
  const std::string name = signo == SIGINT ? "SIGINT" : "SIGTERM";
  const fs::path d = fresh_dir("signal_" + name);
  const fs::path out = d / "out";
  const pid_t pid = spawn(peftrun_command(out, 100000), d / "log.txt");
  ASSERT_TRUE(wait_for_lines(out / "metrics.jsonl", 3, 60)) << file_bytes(d / "log.txt");
  ASSERT_EQ(kill(pid, signo), 0);
  const int code = wait_exit(pid, 60);
  const std::string log = file_bytes(d / "log.txt");
  ASSERT_EQ(code, 0) << log;
  const int step = last_metrics_step(out / "metrics.jsonl");
  ASSERT_GE(step, 3);
  const std::string checkpoint = (out / ("checkpoint-" + std::to_string(step))).string();
  EXPECT_NE(log.find("peftrun: " + name + " received: finishing the current step"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("peftrun: stopped by " + name + " after step " + std::to_string(step) +
                     " of 100000; checkpoint " + checkpoint + " (continue with --resume latest)"),
            std::string::npos)
      << log;
  EXPECT_EQ(file_bytes(out / "latest"), "checkpoint-" + std::to_string(step) + "\n");
  EXPECT_FALSE(fs::exists(out / "adapter_model.safetensors")) << "no final adapter when stopped";

  // The checkpoint is exact: 2 more steps from it equal an uninterrupted run of step + 2.
  const int total = step + 2;
  CommandResult r = run_peftrun(run_args(out, total) + " --resume latest --resume-force");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_peftrun(run_args(d / "reference", total));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(file_bytes(out / "adapter_model.safetensors"),
            file_bytes(d / "reference/adapter_model.safetensors"));
  EXPECT_EQ(train_losses(out / "metrics.jsonl"), train_losses(d / "reference/metrics.jsonl"));
}

INSTANTIATE_TEST_SUITE_P(Signals, EachStopSignal, ::testing::Values(SIGTERM, SIGINT),
                         [](const auto& p) { return p.param == SIGINT ? "SIGINT" : "SIGTERM"; });

// Two different signals cannot merge into one pending signal: the second handler sees the
// first one's flag and exits at once with 128 + its number, whichever is delivered first.
TEST(StopSignal, ASecondSignalAbortsAtOnce) {
  const fs::path d = fresh_dir("signal_twice");
  const fs::path out = d / "out";
  const pid_t pid = spawn(peftrun_command(out, 100000), d / "log.txt");
  ASSERT_TRUE(wait_for_lines(out / "metrics.jsonl", 2, 60)) << file_bytes(d / "log.txt");
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  ASSERT_EQ(kill(pid, SIGINT), 0);
  const int code = wait_exit(pid, 30);
  const std::string log = file_bytes(d / "log.txt");
  EXPECT_TRUE(code == 128 + SIGINT || code == 128 + SIGTERM) << "exit " << code << "\n" << log;
  EXPECT_NE(log.find("peftrun: second stop signal: aborting now"), std::string::npos) << log;
  EXPECT_EQ(log.find("stopped by"), std::string::npos) << log;
}

// SIGTERM to rank 1 only (not the writer): the ranks agree on it in the step's stop-flag
// all-reduce, rank 0 commits the checkpoint, and the whole job exits 0.
TEST(StopSignal, OneSignalledRankStopsEveryRankUnderMpirun) {
  if (!mpirun_available()) GTEST_SKIP() << "built without MPI or no mpirun on PATH";
  const fs::path d = fresh_dir("signal_mpi");
  const fs::path out = d / "out";
  const pid_t launcher = spawn(peftrun_command(out, 100000, 2), d / "log.txt");
  ASSERT_TRUE(wait_for_lines(out / "metrics.jsonl", 3, 60)) << file_bytes(d / "log.txt");
  const CommandResult pids = run_command("pgrep -P " + std::to_string(launcher) + " -f peftrun");
  std::vector<pid_t> ranks;
  std::istringstream lines(pids.out);
  for (pid_t p; lines >> p;) ranks.push_back(p);
  ASSERT_EQ(ranks.size(), 2u) << pids.out;
  // mpirun starts the ranks in order; pgrep lists them by pid.
  ASSERT_EQ(kill(ranks[1], SIGTERM), 0);
  const int code = wait_exit(launcher, 60);
  const std::string log = file_bytes(d / "log.txt");
  ASSERT_EQ(code, 0) << log;
  const int step = last_metrics_step(out / "metrics.jsonl");
  EXPECT_NE(log.find("rank 1: SIGTERM received"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped by SIGTERM after step " + std::to_string(step)), std::string::npos)
      << log;
  const auto state = nlohmann::json::parse(
      std::ifstream(out / ("checkpoint-" + std::to_string(step)) / "trainer_state.json"));
  EXPECT_EQ(state["world_size"], 2);
  EXPECT_EQ(state["step"], step);
}

}  // namespace
