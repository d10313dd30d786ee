// The resume decision without running anything: what the config digest covers, how grad_accum
// is adjusted to keep the global batch on another world size, and what is refused or needs
// --resume-force (runtime/train/resume_plan.h).
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "configs/config.h"
#include "runtime/train/resume_plan.h"

namespace {

using peftrun::BatchSplit;
using peftrun::CheckpointHeader;
using peftrun::Config;

Config config(const std::vector<std::string>& overrides = {}) {
  const auto loaded = peftrun::load_config_text(peftrun::embedded_default_config(), "<embedded>",
                                                PEFTRUN_SOURCE_DIR "/configs", overrides);
  EXPECT_TRUE(loaded.ok()) << loaded.errors.front().format();
  return loaded.config;
}

// What trainer_state.json would say for `c` trained on `split`.
CheckpointHeader checkpoint_of(const Config& c, BatchSplit split) {
  CheckpointHeader h;
  h.dir = "/ckpt";
  h.json_path = "/ckpt/trainer_state.json";
  h.step = 4;
  h.batch = split;
  h.config = peftrun::config_fingerprint(c);
  h.config_digest = peftrun::config_digest(h.config, split.global_batch());
  return h;
}

std::string digest(const Config& c, std::int64_t global = 8) {
  return peftrun::config_digest(peftrun::config_fingerprint(c), global);
}

std::string refusal(const CheckpointHeader& h, const Config& c, int world, bool force = false) {
  try {
    peftrun::plan_resume(h, c, world, force);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigDigest, CoversTheMathAndNothingElse) {
  const std::string base = digest(config());
  EXPECT_EQ(base.rfind("fnv1a64:", 0), 0u) << base;
  EXPECT_EQ(base.size(), 8u + 16u);
  // Where and how it runs, the safe keys and the split of the global batch: same digest.
  EXPECT_EQ(digest(config({"output_dir=/elsewhere", "runtime.threads=1", "comm.timeout_s=5",
                           "runtime.device=cuda", "runtime.compute_dtype=bf16", "train.steps=300",
                           "optim.lr=1e-3", "checkpoint.every_steps=7", "train.grad_accum=4",
                           "train.micro_batch_size=2"})),
            base);
  // Anything that changes the math: another digest.
  for (const char* key : {"adapter.r=4", "adapter.type=dora", "train.seed=7", "data.seq_len=64",
                          "model.n_layers=2", "optim.weight_decay=0.1", "adapter.dropout=0"}) {
    EXPECT_NE(digest(config({key})), base) << key;
  }
  EXPECT_NE(digest(config(), 16), base) << "the global batch is part of the math";
}

TEST(PlanResume, SameSplitIsBitwiseAndChangesNothing) {
  const Config c = config();
  const auto plan = peftrun::plan_resume(checkpoint_of(c, {2, 1, 8}), c, 2, false);
  EXPECT_EQ(plan.grad_accum, 1);
  EXPECT_TRUE(plan.bitwise);
  EXPECT_TRUE(plan.notes.empty());
}

TEST(PlanResume, AnotherWorldSizeKeepsTheGlobalBatchThroughGradAccum) {
  const Config c = config({"train.grad_accum=1"});
  // 4 ranks x 1 x 8 = 32 sequences.
  const CheckpointHeader h = checkpoint_of(c, {4, 1, 8});
  auto plan = peftrun::plan_resume(h, c, 2, false);
  EXPECT_EQ(plan.grad_accum, 2);
  EXPECT_FALSE(plan.bitwise);
  ASSERT_EQ(plan.notes.size(), 1u);
  EXPECT_NE(plan.notes[0].find("keeping the global batch of 32 sequences as 2 rank(s) x "
                               "grad_accum 2 x micro_batch_size 8"),
            std::string::npos)
      << plan.notes[0];
  EXPECT_EQ(peftrun::plan_resume(h, c, 1, false).grad_accum, 4);
  // A micro_batch_size changed on purpose is allowed when the global batch still divides.
  EXPECT_EQ(peftrun::plan_resume(h, config({"train.micro_batch_size=16"}), 1, false).grad_accum, 2);
  // ...and the checkpoint of a resumed run (2 ranks x 2) goes back to 4 ranks x 1.
  EXPECT_EQ(peftrun::plan_resume(checkpoint_of(c, {2, 2, 8}), c, 4, false).grad_accum, 1);
}

TEST(PlanResume, RefusesWhatCannotKeepTheGlobalBatch) {
  const Config c = config();
  const CheckpointHeader h = checkpoint_of(c, {4, 1, 8});
  EXPECT_NE(refusal(h, c, 3).find("cannot keep the checkpoint's global batch of 32 sequences (4 "
                                  "rank(s) x grad_accum 1 x micro_batch_size 8) on 3 rank(s)"),
            std::string::npos)
      << refusal(h, c, 3);
  EXPECT_NE(refusal(h, c, 64).find("is not a multiple of 512"), std::string::npos);
  const std::string explicit_accum = refusal(h, config({"train.grad_accum=3"}), 2);
  EXPECT_NE(explicit_accum.find("train.grad_accum 3 gives a global batch of 48 sequences"),
            std::string::npos)
      << explicit_accum;
  // An explicit grad_accum that does keep it is fine.
  EXPECT_EQ(peftrun::plan_resume(h, config({"train.grad_accum=2"}), 2, false).grad_accum, 2);
}

TEST(PlanResume, MathKeysAreRefusedByNameSafeKeysNeedForce) {
  const Config c = config();
  const CheckpointHeader h = checkpoint_of(c, {1, 1, 8});
  const std::string math = refusal(h, config({"adapter.r=4", "train.seed=9"}), 1, true);
  EXPECT_NE(math.find("/ckpt/trainer_state.json: the config differs in keys that change the "
                      "math: adapter.r (8 -> 4), train.seed (1234 -> 9)"),
            std::string::npos)
      << math;
  const Config longer = config({"train.steps=400", "optim.lr=1e-3"});
  EXPECT_NE(refusal(h, longer, 1).find("add --resume-force"), std::string::npos);
  const auto plan = peftrun::plan_resume(h, longer, 1, true);
  ASSERT_EQ(plan.notes.size(), 2u);
  EXPECT_EQ(plan.notes[0], "--resume-force: accepting changed optim.lr (0.003 -> 0.001)");
  EXPECT_EQ(plan.notes[1], "--resume-force: accepting changed train.steps (200 -> 400)");
  EXPECT_TRUE(plan.bitwise);
  // Operational keys need nothing.
  EXPECT_EQ(refusal(h, config({"runtime.threads=1", "output_dir=/x", "train.log_every=5"}), 1), "");
  // A CPU checkpoint continues on a GPU, in any compute dtype (and back).
  EXPECT_EQ(refusal(h, config({"runtime.device=cuda", "runtime.compute_dtype=fp16"}), 1), "");
}

TEST(PlanResume, AdaLoraStepsAreMathBecauseTheyMoveTheBudgetSchedule) {
  const Config c = config({"adapter.type=adalora"});
  const CheckpointHeader h = checkpoint_of(c, {1, 1, 8});
  const std::string why = refusal(h, config({"adapter.type=adalora", "train.steps=300"}), 1, true);
  EXPECT_NE(why.find("adapter.total_step (200 -> 300)"), std::string::npos) << why;
}

// A checkpoint written before some keys existed (its record and digest lack them) resumes while
// those keys keep their defaults, and is refused, naming them, when they do not.
TEST(PlanResume, KeysNewerThanTheCheckpointAreAcceptedAtTheirDefaults) {
  const Config c = config();
  CheckpointHeader h = checkpoint_of(c, {1, 1, 8});
  h.peftrun_version = "0.1.0";
  for (const char* key : {"model.rope_scaling", "model.rope_factor", "data.format"}) {
    ASSERT_EQ(h.config.erase(key), 1u) << key;
  }
  h.config_digest = peftrun::config_digest(h.config, 8);
  const auto plan = peftrun::plan_resume(h, c, 1, false);
  EXPECT_TRUE(plan.bitwise);
  ASSERT_EQ(plan.notes.size(), 1u);
  EXPECT_EQ(plan.notes[0],
            "resume: the checkpoint (written by peftrun 0.1.0) predates data.format, "
            "model.rope_factor, model.rope_scaling; at their defaults they change nothing");
  const std::string why =
      refusal(h, config({"model.rope_scaling=linear", "model.rope_factor=2"}), 1, true);
  EXPECT_NE(why.find("keys that change the math: model.rope_factor (absent -> 2.0), "
                     "model.rope_scaling (absent -> linear)"),
            std::string::npos)
      << why;
}

TEST(PlanResume, AnInconsistentRecordIsRefused) {
  const Config c = config();
  CheckpointHeader h = checkpoint_of(c, {1, 1, 8});
  h.config_digest = "fnv1a64:0000000000000000";
  EXPECT_NE(refusal(h, c, 1).find("although no recorded key differs"), std::string::npos);
}

}  // namespace
