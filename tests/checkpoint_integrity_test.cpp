// Checkpoints never corrupt state: every kind of damaged checkpoint is refused naming the file
// (and the tensor or field), a write that fails at any file of a checkpoint leaves the previous
// checkpoint and `latest` byte-identical, leftovers of a killed write are cleaned at the next
// start, and `peftrun inspect` describes what a checkpoint holds.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/io/safetensors.h"
#include "tests/support/e2e.h"

namespace fs = std::filesystem;
using namespace peftrun::testing_support;

namespace {

const std::string kTiny = std::string(PEFTRUN_SOURCE_DIR) + "/configs/tiny.yaml";

// 4 short steps, a checkpoint every 2 (checkpoint-2, then checkpoint-4 at the end).
std::string run_args(const fs::path& out, const std::string& extra = "") {
  return kTiny +
         " --set train.steps=4 --set optim.warmup_steps=1 --set data.eval= "
         "--set data.seq_len=32 --set train.micro_batch_size=2 --set runtime.threads=1 "
         "--set checkpoint.every_steps=2 " +
         extra + " --set output_dir=" + out.string();
}

// A finished run whose checkpoint-2 the tests damage and then try to resume from.
fs::path trained(const std::string& name, const std::string& extra = "") {
  const fs::path d = fresh_dir(name);
  const CommandResult r = run_peftrun(run_args(d, extra));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(fs::exists(d / "checkpoint-2/trainer_state.json")) << r.out;
  return d;
}

// Resuming from the damaged checkpoint-2 must fail with exit 1, name every `expected` piece in
// its message, and leave the output folder exactly as it was.
void expect_refused(const fs::path& d, const std::vector<std::string>& expected) {
  const auto before = snapshot(d);
  const CommandResult r = run_peftrun(run_args(d) + " --resume " + (d / "checkpoint-2").string());
  EXPECT_EQ(r.exit_code, 1) << r.out;
  for (const std::string& piece : expected) {
    EXPECT_NE(r.out.find(piece), std::string::npos) << "missing '" << piece << "' in\n" << r.out;
  }
  EXPECT_EQ(snapshot_difference(snapshot(d), before), "")
      << "a refused resume changed the output folder";
}

// Rewrites checkpoint-2/trainer_state.safetensors through `edit(name, dtype, shape, bytes)`,
// which may change a tensor or return false to drop it.
template <class Edit>
void rewrite_state(const fs::path& d, Edit edit) {
  const fs::path file = d / "checkpoint-2/trainer_state.safetensors";
  peftrun::SafetensorsWriter w;
  {
    const peftrun::SafetensorsReader r(file.string());
    for (const auto& t : r.tensors()) {
      peftrun::TensorDType dtype = t.dtype;
      std::vector<std::int64_t> shape = t.shape;
      std::vector<std::uint8_t> bytes = r.read_tensor(t.name);
      if (edit(t.name, dtype, shape, bytes))
        w.add(t.name, dtype, shape, bytes.data(), bytes.size());
    }
  }
  w.write(file.string());
}

std::string state_file(const fs::path& d, const std::string& name = "trainer_state.safetensors") {
  return (d / "checkpoint-2" / name).string();
}

TEST(CorruptCheckpoint, TruncatedTrainerStateIsRefusedNamingFileAndTensor) {
  const fs::path d = trained("trunc");
  fs::resize_file(state_file(d), fs::file_size(state_file(d)) / 2);
  // Half of the file cuts into adam_v (the data section holds params, adam_m, adam_v, ...).
  expect_refused(d, {state_file(d), "tensor '", "truncated"});
}

TEST(CorruptCheckpoint, TruncatedAdapterExportIsRefusedNamingFileAndTensor) {
  const fs::path d = trained("trunc_adapter");
  const std::string file = state_file(d, "adapter_model.safetensors");
  fs::resize_file(file, fs::file_size(file) - 100);
  expect_refused(d, {file, "tensor 'base_model.model.model.layers", "truncated"});
}

TEST(CorruptCheckpoint, BadSafetensorsHeaderIsRefusedNamingTheFile) {
  const fs::path d = trained("badheader");
  std::fstream f(state_file(d), std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(8);
  f.put('X');  // the JSON header's opening brace
  f.close();
  expect_refused(d, {state_file(d), "header is not valid JSON"});
}

TEST(CorruptCheckpoint, WrongShapeIsRefusedNamingTheTensor) {
  const fs::path d = trained("shape");
  rewrite_state(d, [](const std::string& name, peftrun::TensorDType&,
                      std::vector<std::int64_t>& shape, std::vector<std::uint8_t>&) {
    if (name == "adam_m") shape = {2, shape[0] / 2};
    return true;
  });
  expect_refused(d, {state_file(d), "tensor 'adam_m' is F32 [2, 38912], expected F32 [77824]"});
}

TEST(CorruptCheckpoint, WrongDtypeIsRefusedNamingTheTensor) {
  const fs::path d = trained("dtype");
  rewrite_state(d, [](const std::string& name, peftrun::TensorDType& dtype,
                      std::vector<std::int64_t>& shape, std::vector<std::uint8_t>& bytes) {
    if (name == "adam_v") {
      dtype = peftrun::TensorDType::kF16;
      bytes.resize(bytes.size() / 2);
    }
    return true;
  });
  expect_refused(d, {state_file(d), "tensor 'adam_v' is F16 [77824], expected F32 [77824]"});
}

TEST(CorruptCheckpoint, MissingTensorIsRefusedNamingIt) {
  const fs::path d = trained("notensor");
  rewrite_state(d,
                [](const std::string& name, auto&, auto&, auto&) { return name != "loss_scale"; });
  expect_refused(d, {state_file(d), "no tensor named 'loss_scale'"});
}

TEST(CorruptCheckpoint, MissingFileIsRefusedNamingIt) {
  const fs::path d = trained("nofile");
  fs::remove(state_file(d, "adapter_config.json"));
  expect_refused(d, {state_file(d, "adapter_config.json")});
  fs::remove(state_file(d));
  expect_refused(d, {state_file(d)});
}

TEST(CorruptCheckpoint, MalformedTrainerStateJsonIsRefusedNamingTheField) {
  const fs::path d = trained("json");
  const std::string json_file = state_file(d, "trainer_state.json");
  const std::string text = file_bytes(json_file);
  std::ofstream(json_file) << text.substr(0, text.size() / 2);
  expect_refused(d, {json_file, "not valid JSON"});

  nlohmann::json j = nlohmann::json::parse(text);
  j.erase("step");
  std::ofstream(json_file) << j.dump();
  expect_refused(d, {json_file, "field 'step': missing"});

  j = nlohmann::json::parse(text);
  j["batch"]["grad_accum"] = "two";
  std::ofstream(json_file) << j.dump();
  expect_refused(d, {json_file, "field 'grad_accum': has the wrong type"});

  // An edited config record no longer matches its digest.
  j = nlohmann::json::parse(text);
  j["config"]["adapter.r"] = "4";
  std::ofstream(json_file) << j.dump();
  expect_refused(d, {json_file, "config_digest", "does not match"});

  // More AdamW updates than steps cannot happen (skipped fp16 steps make it fewer).
  j = nlohmann::json::parse(text);
  EXPECT_EQ(j["optimizer_steps"], 2);
  EXPECT_EQ(j["loss_scale_good_steps"], 0);  // the CPU does not scale the loss
  j["optimizer_steps"] = 3;
  std::ofstream(json_file) << j.dump();
  expect_refused(d, {json_file, "optimizer_steps must be in [0, step = 2]"});
}

TEST(CorruptCheckpoint, CheckpointWithoutOptimizerStepCountsStillResumes) {
  // Written before optimizer_steps and loss_scale_good_steps existed: no step was skipped.
  const fs::path d = trained("old_fields");
  const std::string json_file = state_file(d, "trainer_state.json");
  nlohmann::json j = nlohmann::json::parse(file_bytes(json_file));
  j.erase("optimizer_steps");
  j.erase("loss_scale_good_steps");
  std::ofstream(json_file) << j.dump();
  const CommandResult r = run_peftrun(run_args(d) + " --resume " + (d / "checkpoint-2").string());
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("resumed from"), std::string::npos) << r.out;
}

TEST(CorruptCheckpoint, LatestNamingAMissingFolderIsRefused) {
  const fs::path d = trained("latest");
  std::ofstream(d / "latest") << "checkpoint-99\n";
  const auto before = snapshot(d);
  const CommandResult r = run_peftrun(run_args(d) + " --resume latest");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("names 'checkpoint-99', but the folder '" + (d / "checkpoint-99").string() +
                       "' does not exist"),
            std::string::npos)
      << r.out;
  const CommandResult not_a_folder =
      run_peftrun(run_args(d) + " --resume " + (d / "nope").string());
  EXPECT_EQ(not_a_folder.exit_code, 1) << not_a_folder.out;
  EXPECT_NE(not_a_folder.out.find("is not a checkpoint folder"), std::string::npos)
      << not_a_folder.out;
  EXPECT_EQ(snapshot_difference(snapshot(d), before), "");
}

// Names in `dir` that a failed or killed write could leave behind.
std::vector<std::string> temp_litter(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp") != std::string::npos) out.push_back(name);
  }
  return out;
}

// Everything of the folder but the metrics, which record the steps that did run.
std::map<std::string, std::string> state_files(const fs::path& dir) {
  auto s = snapshot(dir);
  s.erase("metrics.jsonl");
  return s;
}

// The N-th file write of the run fails, for every N until the run gets through. A failure in
// the first checkpoint leaves nothing; in the second, exactly checkpoint-2 and `latest` of an
// undisturbed run, byte for byte; never a temporary file or folder.
TEST(CheckpointWriteFailure, FailingEachFileLeavesThePreviousCheckpointIntact) {
  // Every run writes to the same folder (its path is part of the recorded config).
  const fs::path d = fresh_dir("failwrite") / "out";
  ASSERT_EQ(run_peftrun(run_args(d)).exit_code, 0);
  const auto finished = state_files(d);
  std::map<std::string, std::string> after_first;  // what an undisturbed run has after step 2
  for (const auto& [name, bytes] : finished) {
    if (name.rfind("checkpoint-2/", 0) == 0) after_first[name] = bytes;
  }
  after_first["latest"] = "checkpoint-2\n";

  std::set<std::string> failed_in_second;  // file names whose write failed in checkpoint-4
  int n = 1;
  for (;; ++n) {
    ASSERT_LT(n, 40) << "the run never got through";
    fs::remove_all(d);
    const CommandResult r =
        run_peftrun(run_args(d), 1, "PEFTRUN_TEST_FAIL_WRITE=" + std::to_string(n));
    const std::vector<std::string> litter = temp_litter(d);
    EXPECT_TRUE(litter.empty()) << "n=" << n << ": " << litter.front();
    if (r.exit_code == 0) break;
    ASSERT_EQ(r.exit_code, 1) << r.out;
    ASSERT_NE(r.out.find("PEFTRUN_TEST_FAIL_WRITE"), std::string::npos) << r.out;
    // "cannot write '<dir>/<file>': ..." names the file that failed.
    const auto begin = r.out.find("cannot write '") + 14;
    const std::string failed =
        fs::path(r.out.substr(begin, r.out.find('\'', begin) - begin)).filename().string();
    if (r.out.find("checkpoint " + (d / "checkpoint-2").string() + " was not written") !=
        std::string::npos) {
      EXPECT_NE(r.out.find("there was no earlier checkpoint"), std::string::npos) << r.out;
      EXPECT_TRUE(state_files(d).empty()) << "n=" << n;
    } else if (r.out.find("checkpoint " + (d / "checkpoint-4").string() + " was not written") !=
               std::string::npos) {
      EXPECT_NE(r.out.find("the previous checkpoint " + (d / "checkpoint-2").string() + " and " +
                           (d / "latest").string() + " are intact"),
                std::string::npos)
          << r.out;
      EXPECT_EQ(snapshot_difference(state_files(d), after_first), "") << "n=" << n << r.out;
      failed_in_second.insert(failed);
    } else {
      // The final adapter: both checkpoints complete, `latest` naming the last.
      EXPECT_TRUE(failed == "adapter_model.safetensors" || failed == "adapter_config.json")
          << r.out;
      auto expected = finished;
      expected.erase(failed);
      if (failed == "adapter_model.safetensors") expected.erase("adapter_config.json");
      EXPECT_EQ(snapshot_difference(state_files(d), expected), "") << "n=" << n << r.out;
    }
  }
  EXPECT_EQ(failed_in_second,
            (std::set<std::string>{"adapter_config.json", "adapter_model.safetensors",
                                   "trainer_state.json", "trainer_state.safetensors", "latest"}));
  EXPECT_EQ(n, 13) << "2 checkpoints x 5 files + the final adapter's 2 files come first";
  EXPECT_EQ(snapshot_difference(state_files(d), finished), "");
}

TEST(CheckpointWriteFailure, DiskFullIsReportedWithThePreviousCheckpointIntact) {
  const fs::path d = fresh_dir("enospc");
  // Write 6 is the first file of the second checkpoint (5 files per checkpoint, `latest` last).
  const CommandResult r = run_peftrun(run_args(d), 1, "PEFTRUN_TEST_FAIL_WRITE=6:ENOSPC");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out;
  EXPECT_NE(
      r.out.find((d / "checkpoint-2").string() + " and " + (d / "latest").string() + " are intact"),
      std::string::npos)
      << r.out;
  EXPECT_EQ(file_bytes(d / "latest"), "checkpoint-2\n");
  EXPECT_FALSE(fs::exists(d / "checkpoint-4"));
  // And the intact checkpoint resumes to the end.
  const CommandResult again = run_peftrun(run_args(d) + " --resume latest");
  EXPECT_EQ(again.exit_code, 0) << again.out;
}

TEST(CheckpointWriteFailure, LeftoversOfAKilledWriteAreRemovedAtTheNextStart) {
  const fs::path d = fresh_dir("leftovers");
  fs::create_directories(d / ".tmp-checkpoint-7");
  std::ofstream(d / ".tmp-checkpoint-7/adapter_model.safetensors") << "half";
  std::ofstream(d / "latest.tmp-4242") << "checkpoint-";
  const CommandResult r = run_peftrun(run_args(d));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("removed .tmp-checkpoint-7 (left by an interrupted write)"),
            std::string::npos)
      << r.out;
  EXPECT_TRUE(temp_litter(d).empty());
}

// inspect aligns its columns; the tests look for single-spaced text.
std::string squeeze_spaces(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (!(c == ' ' && !out.empty() && out.back() == ' ')) out += c;
  }
  return out;
}

// A Qwen3-shaped model with yarn: the summary names what plain Llama configs leave out.
TEST(Inspect, NamesHeadDimQkNormAndRopeScalingWhenSet) {
  const fs::path d =
      trained("inspect_qwen3",
              "--set model.head_dim=48 --set model.qk_norm=true --set model.rope_scaling=yarn "
              "--set model.rope_factor=4 --set model.rope_original_max_seq_len=64");
  const CommandResult r = run_peftrun("inspect " + (d / "checkpoint-2").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string out = squeeze_spaces(r.out);
  EXPECT_NE(out.find("heads 4/2, head_dim 48, q/k norm, RoPE yarn x4.0, ffn"), std::string::npos)
      << r.out;
  // Gemma 2's soft caps and SmolLM3's NoPE layers are named too.
  const fs::path capped = trained("inspect_gemma2",
                                  "--set model.attn_logit_softcapping=50 "
                                  "--set model.final_logit_softcapping=30 "
                                  "--set model.no_rope_layers=[1,0,1,0]");
  const CommandResult c = run_peftrun("inspect " + (capped / "checkpoint-2").string());
  ASSERT_EQ(c.exit_code, 0) << c.out;
  EXPECT_NE(squeeze_spaces(c.out).find("scores capped at 50.0, logits capped at 30.0, NoPE in some "
                                       "layers, ffn"),
            std::string::npos)
      << c.out;
  const CommandResult plain =
      run_peftrun("inspect " + (trained("inspect_plain") / "checkpoint-2").string());
  EXPECT_NE(squeeze_spaces(plain.out).find("heads 4/2, ffn"), std::string::npos) << plain.out;
}

TEST(Inspect, DescribesACheckpointItsConfigAndTensors) {
  const fs::path d = trained("inspect");
  const CommandResult r = run_peftrun("inspect " + (d / "checkpoint-2").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string out = squeeze_spaces(r.out);
  for (const char* piece :
       {"step 2 (lora, 77824 trainable values)", "global batch 2 sequences = 1 rank(s)",
        "next sample 4", "config digest fnv1a64:", "adapter lora r 8, alpha 16.0", "seq_len 32",
        "adam_m F32 [77824]", "loss_scale F32 []",
        "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight F32 [128, 8]",
        "adapter_config.json: LORA, r 8"}) {
    EXPECT_NE(out.find(piece), std::string::npos) << "missing '" << piece << "' in\n" << r.out;
  }
  // The final adapter is a plain PEFT folder.
  const CommandResult peft = run_peftrun("inspect " + d.string());
  EXPECT_EQ(peft.exit_code, 0) << peft.out;
  EXPECT_NE(peft.out.find("PEFT adapter " + d.string()), std::string::npos) << peft.out;

  const fs::path empty = fresh_dir("inspect_empty");
  const CommandResult none = run_peftrun("inspect " + empty.string());
  EXPECT_EQ(none.exit_code, 1) << none.out;
  EXPECT_NE(none.out.find("neither a peftrun checkpoint"), std::string::npos) << none.out;
  fs::resize_file(state_file(d), 100);
  const CommandResult broken = run_peftrun("inspect " + (d / "checkpoint-2").string());
  EXPECT_EQ(broken.exit_code, 1) << broken.out;
  EXPECT_NE(broken.out.find(state_file(d)), std::string::npos) << broken.out;
  EXPECT_EQ(run_peftrun("inspect").exit_code, 2);
}

TEST(Inspect, ShowsAdaLoraRankPerModule) {
  // Budget phase over steps 1..2 (tinit 0, tfinal 1 of 4): the mask is fixed at step 3.
  const fs::path d = trained("inspect_ada",
                             "--set adapter.type=adalora --set adapter.init_r=4 "
                             "--set adapter.target_r=2 --set adapter.tfinal=1");
  const CommandResult r = run_peftrun("inspect " + (d / "checkpoint-4").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("AdaLoRA rank per module (kept of init_r 4):"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model.layers.0.self_attn.q_proj.lora_E "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" over 28 modules"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("adalora mask fixed"), std::string::npos) << r.out;
  EXPECT_NE(squeeze_spaces(r.out).find("adalora_mask F32 [112]"), std::string::npos) << r.out;
}

}  // namespace
