// Data-parallel training under a real `mpirun --oversubscribe -np N`: N ranks x k micro-batches
// must give the same adapter as 1 rank x N*k micro-batches (LoRA, DoRA, AdaLoRA), and a rank
// killed mid-run must bring the whole job down instead of hanging it.
#include <gtest/gtest.h>

#include "tests/support/e2e.h"
#include "tests/support/run_command.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/io/safetensors.h"

namespace fs = std::filesystem;

namespace {

const std::string kTiny = std::string(PEFTRUN_SOURCE_DIR) + "/configs/tiny.yaml";

// Open MPI refuses to start as root (CI runs as root) unless told twice; set it for these tests
// only, never globally.
void allow_mpirun_as_root() {
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
}

bool have_mpi() {
#ifdef PEFTRUN_WITH_MPI
  return std::system("command -v mpirun > /dev/null 2>&1") == 0;
#else
  return false;
#endif
}

using RunResult = peftrun::testing_support::CommandResult;

RunResult run(const std::string& cmd) {
  return peftrun::testing_support::run_command(cmd);
}

fs::path fresh_dir(const std::string& name) {
  return peftrun::testing_support::test_output_dir("dist_" + name);
}

using peftrun::testing_support::adapter_values;
using peftrun::testing_support::rank_pattern;
using peftrun::testing_support::relative_difference;

// A rank's process is gone once it no longer exists or is a zombie awaiting its (exited)
// parent's reaping; give the launcher's teardown a moment.
bool still_running(pid_t pid) {
  for (int i = 0; i < 50; ++i) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string pid_field, comm, state;
    if (!(stat >> pid_field >> comm >> state) || state == "Z") return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

struct Case {
  std::string type;
  int ranks;
};

class DataParallelEquivalence : public ::testing::TestWithParam<Case> {};

// 10 steps; one thread per rank so 4 ranks fit 2 cores. Dropout is on: masks are keyed by the
// global sample index, so they match too.
TEST_P(DataParallelEquivalence, NRanksEqualOneRankWithNTimesAccumulation) {
  if (!have_mpi()) GTEST_SKIP() << "built without MPI or no mpirun on PATH";
  allow_mpirun_as_root();
  const Case c = GetParam();
  const fs::path d = fresh_dir(c.type + std::to_string(c.ranks));
  const std::string common =
      " " + kTiny + " --set adapter.type=" + c.type +
      " --set train.steps=10 --set optim.warmup_steps=2 --set train.micro_batch_size=2 "
      "--set data.eval_batches=4 --set train.eval_every=0 --set runtime.threads=1 "
      "--set adapter.init_r=6 --set adapter.target_r=3 --set adapter.tinit=2 "
      "--set adapter.tfinal=3 ";
  const std::string bin = PEFTRUN_BINARY;
  RunResult one = run(bin + common + "--set train.grad_accum=" + std::to_string(2 * c.ranks) +
                      " --set output_dir=" + (d / "one").string());
  ASSERT_EQ(one.exit_code, 0) << one.out;
  RunResult many =
      run("mpirun --oversubscribe -np " + std::to_string(c.ranks) + " " + bin + common +
          "--set train.grad_accum=2 --set comm.bucket_mb=0.05 --set output_dir=" +
          (d / "many").string());
  ASSERT_EQ(many.exit_code, 0) << many.out;
  EXPECT_NE(many.out.find("data parallel over " + std::to_string(c.ranks) + " ranks"),
            std::string::npos)
      << many.out;

  const std::vector<float> a = adapter_values(d / "one"), b = adapter_values(d / "many");
  ASSERT_EQ(a.size(), b.size()) << "different tensors (AdaLoRA rank patterns differ?)";
  // Only the order of float additions differs (the all-reduce sums per-rank partial sums).
  EXPECT_LT(relative_difference(a, b), 1e-6);
  if (c.type == "adalora") {
    EXPECT_EQ(rank_pattern(d / "one"), rank_pattern(d / "many"));
  }
}

INSTANTIATE_TEST_SUITE_P(Mpirun, DataParallelEquivalence,
                         ::testing::Values(Case{"lora", 2}, Case{"dora", 2}, Case{"adalora", 2},
                                           Case{"lora", 4}, Case{"dora", 4}, Case{"adalora", 4}),
                         [](const auto& p) {
                           return p.param.type + "_np" + std::to_string(p.param.ranks);
                         });

class ShardedBase : public ::testing::TestWithParam<Case> {};

// Each rank holding 1/N of every layer and all-gathering it before use must compute exactly
// what a full replica computes: same bytes in the adapter. The sharded run also recomputes
// every layer before its backward (gradient checkpointing), from the layer gathered again.
TEST_P(ShardedBase, ShardedAndReplicatedBaseGiveIdenticalAdapters) {
  if (!have_mpi()) GTEST_SKIP() << "built without MPI or no mpirun on PATH";
  allow_mpirun_as_root();
  const Case c = GetParam();
  const fs::path d = fresh_dir("shard_" + c.type + std::to_string(c.ranks));
  const std::string cmd = "mpirun --oversubscribe -np " + std::to_string(c.ranks) + " " +
                          PEFTRUN_BINARY + " " + kTiny + " --set adapter.type=" + c.type +
                          " --set train.steps=4 --set optim.warmup_steps=1 "
                          "--set train.micro_batch_size=2 --set data.eval_batches=4 "
                          "--set runtime.threads=1 --set output_dir=";
  RunResult sharded =
      run(cmd + (d / "sharded").string() +
          " --set runtime.shard_base=true --set runtime.gradient_checkpointing=true");
  ASSERT_EQ(sharded.exit_code, 0) << sharded.out;
  EXPECT_NE(sharded.out.find("sharded 1/" + std::to_string(c.ranks)), std::string::npos)
      << sharded.out;
  RunResult replicated = run(cmd + (d / "replicated").string() + " --set runtime.shard_base=false");
  ASSERT_EQ(replicated.exit_code, 0) << replicated.out;
  EXPECT_EQ(adapter_values(d / "sharded"), adapter_values(d / "replicated"));
}

INSTANTIATE_TEST_SUITE_P(Mpirun, ShardedBase, ::testing::Values(Case{"lora", 2}, Case{"dora", 4}),
                         [](const auto& p) {
                           return p.param.type + "_np" + std::to_string(p.param.ranks);
                         });

// Evaluation batches that do not divide over the ranks: with a sharded base every forward is a
// collective (the layer all-gathers), so the rank with fewer batches must still take part. The
// step-0 evaluation (before any update) must equal the 1-rank run's.
TEST(ShardedBaseEval, UnevenEvalBatchesNeitherHangNorChangeTheLoss) {
  if (!have_mpi()) GTEST_SKIP() << "built without MPI or no mpirun on PATH";
  allow_mpirun_as_root();
  const fs::path d = fresh_dir("uneven_eval");
  const std::string args =
      std::string(PEFTRUN_BINARY) + " " + kTiny +
      " --set train.steps=1 --set optim.warmup_steps=0 --set data.eval_batches=3 "
      "--set train.micro_batch_size=2 --set runtime.threads=1 "
      "--set comm.timeout_s=20 --set runtime.shard_base=true "
      "--set output_dir=";
  const RunResult one = run(args + (d / "one").string());
  ASSERT_EQ(one.exit_code, 0) << one.out;
  const RunResult two = run("mpirun --oversubscribe -np 2 " + args + (d / "two").string());
  ASSERT_EQ(two.exit_code, 0) << two.out;
  auto step0_eval = [](const fs::path& out) {
    std::ifstream in(out / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.contains("eval_loss") && j["step"] == 0) return j["eval_loss"].get<double>();
    }
    return std::nan("");
  };
  const double a = step0_eval(d / "one"), b = step0_eval(d / "two");
  ASSERT_TRUE(std::isfinite(a)) << one.out;
  EXPECT_NEAR(b, a, 1e-9 * a) << two.out;
}

// SIGKILL one rank of a 4-rank run mid-training: every rank must be gone, with a non-zero
// exit, within comm.timeout_s + 10 s.
TEST(DataParallelFaults, KilledRankEndsTheWholeJobWithinTheTimeout) {
  if (!have_mpi()) GTEST_SKIP() << "built without MPI or no mpirun on PATH";
  allow_mpirun_as_root();
  const fs::path d = fresh_dir("kill");
  const double timeout_s = 5;
  const std::string cmd = "exec mpirun --oversubscribe -np 4 " + std::string(PEFTRUN_BINARY) + " " +
                          kTiny +
                          " --set train.steps=100000 --set optim.warmup_steps=0 "
                          "--set data.eval= --set runtime.threads=1 --set comm.timeout_s=5 "
                          "--set output_dir=" +
                          d.string() + " > " + (d / "log.txt").string() + " 2>&1";
  const pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until training is under way (metrics appear), then kill one peftrun rank.
  const auto start = std::chrono::steady_clock::now();
  while (!fs::exists(d / "metrics.jsonl") || fs::file_size(d / "metrics.jsonl") < 200) {
    ASSERT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60))
        << "training never started";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const RunResult pids = run("pgrep -P " + std::to_string(launcher) + " -f peftrun");
  std::vector<pid_t> ranks;
  for (std::size_t at = 0; at < pids.out.size();) {
    const std::size_t nl = pids.out.find('\n', at);
    const std::string line = pids.out.substr(at, nl - at);
    if (!line.empty()) ranks.push_back(static_cast<pid_t>(std::stol(line)));
    if (nl == std::string::npos) break;
    at = nl + 1;
  }
  ASSERT_EQ(ranks.size(), 4u) << pids.out;
  const auto killed_at = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(ranks[2], SIGKILL), 0);

  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(launcher, &status, WNOHANG)) == 0) {
    if (std::chrono::steady_clock::now() - killed_at >
        std::chrono::duration<double>(timeout_s + 10)) {
      kill(launcher, SIGKILL);
      waitpid(launcher, &status, 0);
      FAIL() << "the job was still running " << timeout_s + 10 << " s after a rank was killed";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(!WIFEXITED(status) || WEXITSTATUS(status) != 0) << "mpirun exited 0";
  for (pid_t p : ranks) EXPECT_FALSE(still_running(p)) << "rank process " << p << " survived";
}

}  // namespace
