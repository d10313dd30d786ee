// Crash safety: `kill -9` at 20 moments of a run that checkpoints every step, resuming after
// each. Whatever the moment (start-up, a step, the middle of a checkpoint's files, its rename,
// `latest`, pruning, the final adapter), `latest` always names a complete checkpoint, every
// checkpoint-N folder is complete, each resume starts where `latest` said, and the adapter at
// the end is byte for byte the uninterrupted run's.
//
// The kill moments come from a fixed seed, scaled by the run's measured speed, and the scale
// adapts to how far each attempt got: the machine's load can change between the calibration
// and the kills (CI neighbours, parallel ctest), and a stale estimate would otherwise let the
// run finish before most kills. No assertion depends on where a single kill lands.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/e2e.h"

namespace fs = std::filesystem;
using namespace peftrun::testing_support;

namespace {

const std::string kTiny = std::string(PEFTRUN_SOURCE_DIR) + "/configs/tiny.yaml";
constexpr int kSteps = 40;
constexpr int kKills = 20;

std::string run_args(const fs::path& out, int steps = kSteps) {
  return kTiny + " --set train.steps=" + std::to_string(steps) +
         " --set optim.warmup_steps=2 --set data.eval= --set data.seq_len=32 "
         "--set train.micro_batch_size=2 --set runtime.threads=1 --set checkpoint.every_steps=1 "
         "--set checkpoint.keep_last=2 --set output_dir=" +
         out.string();
}

// The step of the checkpoint `latest` names ("checkpoint-N\n"), or 0 when there is none yet.
int latest_step(const fs::path& out) {
  if (!fs::exists(out / "latest")) return 0;
  const std::string name = file_bytes(out / "latest");
  const auto dash = name.rfind('-');
  return dash == std::string::npos ? 0 : std::atoi(name.c_str() + dash + 1);
}

double timed_run(const std::string& args) {
  const auto t0 = std::chrono::steady_clock::now();
  const CommandResult r = run_peftrun(args);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Every checkpoint-N folder of `out` passes `peftrun inspect` (all files present with their
// recorded sizes, headers valid); `latest`, when present, names one of them.
void expect_only_complete_checkpoints(const fs::path& out, int attempt) {
  if (!fs::exists(out)) return;  // killed during start-up, before the run created its folder
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0) continue;
    const CommandResult r = run_peftrun("inspect " + e.path().string());
    EXPECT_EQ(r.exit_code, 0) << "after kill " << attempt << ": " << r.out;
  }
  if (fs::exists(out / "latest")) {
    const std::string latest = file_bytes(out / "latest");
    ASSERT_FALSE(latest.empty()) << "after kill " << attempt;
    EXPECT_TRUE(fs::is_directory(out / latest.substr(0, latest.size() - 1)))
        << "after kill " << attempt << ": latest names " << latest;
  }
}

TEST(CrashSafety, KillNineAtTwentyMomentsThenResumeGivesTheUninterruptedAdapter) {
  const fs::path d = fresh_dir("crash");
  const fs::path out = d / "out";  // every run uses this path (it is part of the config record)

  // The uninterrupted run, and the run speed: start-up (a 1-step run) and time per step.
  const double full_s = timed_run(run_args(out));
  const std::string want_adapter = file_bytes(out / "adapter_model.safetensors");
  const std::string want_config = file_bytes(out / "adapter_config.json");
  const std::vector<double> want_losses = train_losses(out / "metrics.jsonl");
  fs::remove_all(out);
  const double startup_s = timed_run(run_args(out, 1) + " --set optim.warmup_steps=0");
  fs::remove_all(out);
  const double step_s = std::max(full_s - startup_s, 0.0) / (kSteps - 1);

  // Kill moments: most after start-up, spread over ~1.5 steps, so the 20 kills cover the run.
  std::mt19937 rng(20261123);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  int resumed_from = 0, killed = 0;
  double pace = 1.0;  // corrects the calibration when the machine got faster or slower
  for (int attempt = 1; attempt <= kKills; ++attempt) {
    const bool resume = fs::exists(out / "latest");
    const std::string latest = resume ? file_bytes(out / "latest") : "";
    const int step_before = latest_step(out);
    const double delay = pace * (startup_s * (0.6 + 0.5 * unit(rng)) + 1.5 * step_s * unit(rng));
    const fs::path log = d / ("log" + std::to_string(attempt) + ".txt");
    const pid_t pid = spawn(
        std::string(PEFTRUN_BINARY) + " " + run_args(out) + (resume ? " --resume latest" : ""),
        log);
    std::this_thread::sleep_for(std::chrono::duration<double>(delay));
    kill(pid, SIGKILL);
    const int code = wait_exit(pid, 60);
    const std::string text = file_bytes(log);
    ASSERT_TRUE(code == 128 + SIGKILL || code == 0)
        << "attempt " << attempt << ": exit " << code << "\n"
        << text;
    killed += code != 0;
    // A resume, if it got that far, started from the checkpoint `latest` named at launch.
    const auto at = text.find("resumed from ");
    if (resume && at != std::string::npos) {
      const std::string expected = (out / latest.substr(0, latest.size() - 1)).string();
      EXPECT_EQ(text.substr(at + 13, expected.size()), expected) << text;
      const int step = std::stoi(text.substr(text.find(" at step ", at) + 9));
      EXPECT_GE(step, resumed_from) << "a resume went back in time";
      resumed_from = step;
    }
    expect_only_complete_checkpoints(out, attempt);
    // About one step per attempt keeps all 20 kills inside the 40-step run: an attempt that got
    // much further means the run is now faster than calibrated, one that made no progress
    // (killed during start-up) that it is slower.
    const int progressed = latest_step(out) - step_before;
    if (progressed > 2) pace *= 0.6;
    if (progressed == 0) pace = std::min(pace * 1.2, 2.0);
  }
  EXPECT_GE(killed, kKills / 2) << "most kills should land before the run ends";

  const CommandResult r =
      run_peftrun(run_args(out) + (fs::exists(out / "latest") ? " --resume latest" : ""));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(file_bytes(out / "adapter_model.safetensors") == want_adapter)
      << "the final adapter differs from the uninterrupted run's";
  EXPECT_EQ(file_bytes(out / "adapter_config.json"), want_config);
  // The history reads like the uninterrupted run's: each step once, the same losses.
  EXPECT_EQ(train_losses(out / "metrics.jsonl"), want_losses);
  for (const auto& e : fs::recursive_directory_iterator(out)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  }
  RecordProperty("last_resume_step", resumed_from);
}

}  // namespace
