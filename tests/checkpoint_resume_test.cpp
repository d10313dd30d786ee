// Resume under mpirun: on the same world size the continuation is bitwise identical to the
// uninterrupted run (LoRA, DoRA, AdaLoRA resumed inside its budget phase); on another world size
// grad_accum is adjusted to keep the global batch and the result matches to fp32 rounding; a
// split that cannot keep it is refused; a failed commit stops every rank with the same error.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/e2e.h"

namespace fs = std::filesystem;
using namespace peftrun::testing_support;

namespace {

const std::string kTiny = std::string(PEFTRUN_SOURCE_DIR) + "/configs/tiny.yaml";

// 8 short steps with dropout, one thread per rank; AdaLoRA masks over steps 3..5 (tinit 2,
// tfinal 3 of 8), so a resume at step 4 lands in the middle of its budget phase.
std::string run_args(const std::string& type, const fs::path& out, const std::string& extra = "") {
  return kTiny + " --set adapter.type=" + type +
         " --set train.steps=8 --set optim.warmup_steps=2 --set data.eval= "
         "--set data.seq_len=32 --set train.micro_batch_size=2 --set runtime.threads=1 "
         "--set adapter.dropout=0.1 --set adapter.init_r=4 --set adapter.target_r=2 "
         "--set adapter.tinit=2 --set adapter.tfinal=3 --set checkpoint.every_steps=4 " +
         extra + " --set output_dir=" + out.string();
}

// A fresh folder holding only `checkpoint` of `from`, as an interrupted run would have left it.
fs::path interrupted_copy(const fs::path& from, const std::string& checkpoint, const fs::path& to) {
  fs::create_directories(to);
  fs::copy(from / checkpoint, to / checkpoint, fs::copy_options::recursive);
  std::ofstream(to / "latest") << checkpoint << "\n";
  return to;
}

class MpirunResumeIsBitwise : public ::testing::TestWithParam<std::string> {};

TEST_P(MpirunResumeIsBitwise, TwoRanksContinueExactlyFromTheirCheckpoint) {
  if (!mpirun_available()) GTEST_SKIP() << "built without MPI or no mpirun on PATH";
  const std::string type = GetParam();
  const fs::path d = fresh_dir("mpi_resume_" + type);
  // Every run writes to the same folder name: its path is part of the recorded config.
  const fs::path out = d / "out";
  CommandResult r = run_peftrun(run_args(type, out), 2);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  fs::rename(out, d / "full");
  interrupted_copy(d / "full", "checkpoint-4", out);
  r = run_peftrun(run_args(type, out) + " --resume latest", 2);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("resumed from " + (out / "checkpoint-4").string() + " at step 4"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("not bit for bit"), std::string::npos) << r.out;
  EXPECT_EQ(file_bytes(out / "adapter_model.safetensors"),
            file_bytes(d / "full/adapter_model.safetensors"));
  EXPECT_EQ(file_bytes(out / "adapter_config.json"), file_bytes(d / "full/adapter_config.json"));
  EXPECT_EQ(file_bytes(out / "checkpoint-8/trainer_state.safetensors"),
            file_bytes(d / "full/checkpoint-8/trainer_state.safetensors"));
  EXPECT_EQ(train_losses(out / "metrics.jsonl"), train_losses(d / "full/metrics.jsonl", 4));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MpirunResumeIsBitwise,
                         ::testing::Values("lora", "dora", "adalora"),
                         [](const auto& p) { return p.param; });

struct WorldChange {
  std::string type;
  int from, to;
};

class CrossWorldResume : public ::testing::TestWithParam<WorldChange> {};

// The global batch is 4 micro-batches of 2 sequences: `from` ranks x grad_accum 4/from. The
// resumed run keeps the config (grad_accum 4/from) and must find grad_accum 4/to itself.
TEST_P(CrossWorldResume, KeepsTheGlobalBatchAndMatchesTheUninterruptedRun) {
  if (!mpirun_available()) GTEST_SKIP() << "built without MPI or no mpirun on PATH";
  const WorldChange c = GetParam();
  const fs::path d = fresh_dir("cross_" + c.type + std::to_string(c.from) + std::to_string(c.to));
  const fs::path out = d / "out";
  const std::string args =
      run_args(c.type, out, "--set train.grad_accum=" + std::to_string(4 / c.from));
  CommandResult r = run_peftrun(args, c.from);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  fs::rename(out, d / "full");
  interrupted_copy(d / "full", "checkpoint-4", out);
  r = run_peftrun(args + " --resume latest", c.to);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("keeping the global batch of 8 sequences as " + std::to_string(c.to) +
                       " rank(s) x grad_accum " + std::to_string(4 / c.to) +
                       " x micro_batch_size 2 (checkpoint: " + std::to_string(c.from) +
                       " rank(s) x grad_accum " + std::to_string(4 / c.from)),
            std::string::npos)
      << r.out;
  // The same samples and dropout masks; only the order of float additions differs.
  const std::vector<float> full = adapter_values(d / "full"), resumed = adapter_values(out);
  ASSERT_EQ(full.size(), resumed.size());
  EXPECT_LT(relative_difference(full, resumed), 2e-6);
  const std::vector<double> a = train_losses(d / "full/metrics.jsonl", 4),
                            b = train_losses(out / "metrics.jsonl");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), a.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(a[i]));
  if (c.type == "adalora") {
    EXPECT_EQ(rank_pattern(d / "full"), rank_pattern(out));
  }
  // The new checkpoints record the split this run used, so resuming them needs no adjustment
  // on `to` ranks and the same one back on `from`.
  const auto state = nlohmann::json::parse(std::ifstream(out / "checkpoint-8/trainer_state.json"));
  EXPECT_EQ(state["world_size"], c.to);
  EXPECT_EQ(state["batch"]["grad_accum"], 4 / c.to);
  EXPECT_EQ(state["config_digest"],
            nlohmann::json::parse(
                std::ifstream(d / "full/checkpoint-8/trainer_state.json"))["config_digest"]);
}

INSTANTIATE_TEST_SUITE_P(Mpirun, CrossWorldResume,
                         ::testing::Values(WorldChange{"lora", 4, 2}, WorldChange{"dora", 1, 4},
                                           WorldChange{"adalora", 2, 1}),
                         [](const auto& p) {
                           return p.param.type + "_" + std::to_string(p.param.from) + "to" +
                                  std::to_string(p.param.to);
                         });

// A checkpoint of 2 ranks x grad_accum 2 x 2 sequences (8 per step) cannot be resumed on 3
// ranks, nor with a grad_accum set explicitly to another global batch.
TEST(CrossWorldResume, RefusesASplitThatCannotKeepTheGlobalBatch) {
  if (!mpirun_available()) GTEST_SKIP() << "built without MPI or no mpirun on PATH";
  const fs::path d = fresh_dir("cross_refuse");
  const std::string args = run_args("lora", d, "--set train.grad_accum=2");
  CommandResult r = run_peftrun(args, 2);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto before = snapshot(d);
  r = run_peftrun(args + " --resume " + (d / "checkpoint-4").string(), 3);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("cannot keep the checkpoint's global batch of 8 sequences (2 rank(s) x "
                       "grad_accum 2 x micro_batch_size 2) on 3 rank(s)"),
            std::string::npos)
      << r.out;
  r = run_peftrun(run_args("lora", d, "--set train.grad_accum=3") + " --resume " +
                  (d / "checkpoint-4").string());
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("train.grad_accum 3 gives a global batch of 6 sequences"), std::string::npos)
      << r.out;
  EXPECT_EQ(snapshot_difference(snapshot(d), before), "");
}

// Rank 0's commit fails (the first file of the second checkpoint): every rank stops with the
// error, the job exits 1, and checkpoint-4 / latest are as the first commit left them.
TEST(MpirunCheckpointCommit, AFailedWriteStopsEveryRankWithThePreviousCheckpointIntact) {
  if (!mpirun_available()) GTEST_SKIP() << "built without MPI or no mpirun on PATH";
  const fs::path d = fresh_dir("mpi_commit_fail");
  const CommandResult r = run_peftrun(run_args("lora", d), 2, "PEFTRUN_TEST_FAIL_WRITE=6:ENOSPC");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(
      r.out.find("rank 0 of 2: checkpoint " + (d / "checkpoint-8").string() + " was not written"),
      std::string::npos)
      << r.out;
  EXPECT_NE(
      r.out.find("No space left on device; the previous checkpoint " +
                 (d / "checkpoint-4").string() + " and " + (d / "latest").string() + " are intact"),
      std::string::npos)
      << r.out;
  EXPECT_EQ(file_bytes(d / "latest"), "checkpoint-4\n");
  EXPECT_FALSE(fs::exists(d / "checkpoint-8"));
  // Nothing aborted: the ranks agreed on the failure.
  EXPECT_EQ(r.out.find("MPI_ABORT"), std::string::npos) << r.out;
}

}  // namespace
