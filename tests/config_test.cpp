// Config loader tests: the shipped configs load, overrides and round trips work, and each kind of
// mistake is reported exactly once, at the right FILE:LINE:COL, with a useful message.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "configs/config.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Every error, one per line, for failure messages.
std::string all_errors(const ConfigLoadResult& result) {
  std::string out;
  for (const ConfigError& e : result.errors) out += "\n  " + e.format();
  return out.empty() ? " (none)" : out;
}

std::string where(const ConfigError& e) {
  return e.file + ":" + std::to_string(e.line) + ":" + std::to_string(e.column);
}

std::string normal_path(const fs::path& path) {
  return path.lexically_normal().string();
}

// A scratch folder holding what the configs point at: token files (only their existence is
// checked, so any bytes do) and a folder standing in for a model checkpoint.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "peftrun_config_test_XXXXXX").string();
    path_ = mkdtemp(pattern.data());
    write_text(path_ / "train.tok", std::string("\x01\x02\x03\x04", 4));
    write_text(path_ / "eval.tok", std::string("\x05\x06", 2));
    fs::create_directory(path_ / "ckpt");
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return normal_path(path_ / name); }

 private:
  fs::path path_;
};

// The smallest valid config: only data.train is required.
const std::string kMinimal = "data:\n  train: train.tok\n";

// kMinimal plus more text; the extra text starts on line 3.
std::string minimal_plus(const std::string& extra) {
  return kMinimal + extra;
}

class ConfigTest : public ::testing::Test {
 protected:
  ConfigLoadResult load(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
    return load_config_text(yaml, "cfg.yaml", scratch_.path().string(), overrides);
  }

  // tiny.yaml from the source tree with its data redirected to the scratch token files, so these
  // tests do not depend on the shipped corpus.
  ConfigLoadResult load_tiny_with_scratch_data() {
    return load_config_file(
        PEFTRUN_SOURCE_DIR "/configs/tiny.yaml",
        {"data.train=" + scratch_.file("train.tok"), "data.eval=" + scratch_.file("eval.tok")});
  }

  ScratchDir scratch_;
};

// ---------------------------------------------------------------------------------------------
// Loading valid configs
// ---------------------------------------------------------------------------------------------

using ConfigLoading = ConfigTest;

TEST_F(ConfigLoading, TinyYamlLoadsWithoutErrors) {
  const std::string path = PEFTRUN_SOURCE_DIR "/configs/tiny.yaml";
  const ConfigLoadResult result = load_config_file(path);
  EXPECT_TRUE(result.ok()) << "tiny.yaml needs data/tiny/{train,eval}.tok:" << all_errors(result);
  EXPECT_EQ(result.config.source_file, path);
  EXPECT_EQ(result.config.data.train, normal_path(PEFTRUN_SOURCE_DIR "/data/tiny/train.tok"));
  EXPECT_EQ(result.config.data.eval, normal_path(PEFTRUN_SOURCE_DIR "/data/tiny/eval.tok"));
}

TEST_F(ConfigLoading, TinyYamlValuesAreAllRead) {
  const ConfigLoadResult result = load_tiny_with_scratch_data();
  ASSERT_TRUE(result.ok()) << all_errors(result);
  const Config& c = result.config;
  EXPECT_EQ(c.model.dim, 128);
  EXPECT_EQ(c.model.n_layers, 4);
  EXPECT_EQ(c.model.n_heads, 4);
  EXPECT_EQ(c.model.n_kv_heads, 2);
  EXPECT_EQ(c.model.ffn_dim, 384);
  EXPECT_EQ(c.model.vocab_size, 256);
  EXPECT_EQ(c.model.max_seq_len, 256);
  EXPECT_EQ(c.model.rope_theta, 10000.0);
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_EQ(c.adapter.type, AdapterType::kLora);
  EXPECT_EQ(c.adapter.r, 8);
  EXPECT_EQ(c.adapter.alpha, 16.0);
  EXPECT_EQ(c.adapter.dropout, 0.05);
  EXPECT_EQ(c.adapter.target_modules, all_target_modules());
  EXPECT_EQ(c.data.seq_len, 128);
  EXPECT_EQ(c.train.steps, 200);
  EXPECT_EQ(c.train.seed, 1234u);
  EXPECT_EQ(c.train.log_every, 10);
  EXPECT_EQ(c.optim.lr, 0.003);
  EXPECT_EQ(c.optim.beta1, 0.9);
  EXPECT_EQ(c.optim.beta2, 0.999);
  EXPECT_EQ(c.optim.eps, 1e-8);
  EXPECT_EQ(c.optim.schedule, LrSchedule::kCosine);
  EXPECT_EQ(c.optim.warmup_steps, 10);
  EXPECT_EQ(c.checkpoint.keep_last, 3);
  EXPECT_EQ(c.runtime.device, DeviceKind::kAuto);
  EXPECT_EQ(c.runtime.compute_dtype, ComputeDtype::kAuto);
  EXPECT_EQ(c.output_dir, "runs/tiny");
  // Keys tiny.yaml leaves out keep config.h's defaults.
  EXPECT_EQ(c.model.norm_eps, ModelConfig{}.norm_eps);
  EXPECT_EQ(c.model.init_std, ModelConfig{}.init_std);
  EXPECT_EQ(c.data.eval_batches, DataConfig{}.eval_batches);
  EXPECT_EQ(c.optim.min_lr_ratio, OptimConfig{}.min_lr_ratio);
}

TEST_F(ConfigLoading, EmbeddedDefaultIsTinyYaml) {
  EXPECT_EQ(std::string(embedded_default_config()),
            read_text(PEFTRUN_SOURCE_DIR "/configs/tiny.yaml"));
}

TEST_F(ConfigLoading, EmbeddedDefaultLoadsAgainstTheConfigsFolder) {
  const ConfigLoadResult result =
      load_config_text(embedded_default_config(), "<embedded>", PEFTRUN_SOURCE_DIR "/configs");
  EXPECT_TRUE(result.ok()) << "needs data/tiny/{train,eval}.tok:" << all_errors(result);
  EXPECT_EQ(result.config.source_file, "<embedded>");
}

TEST_F(ConfigLoading, EmbeddedDefaultMatchesTinyYamlFile) {
  const std::vector<std::string> data = {"data.train=" + scratch_.file("train.tok"),
                                         "data.eval=" + scratch_.file("eval.tok")};
  ConfigLoadResult embedded = load_config_text(embedded_default_config(), "<embedded>",
                                               PEFTRUN_SOURCE_DIR "/configs", data);
  ConfigLoadResult file = load_tiny_with_scratch_data();
  ASSERT_TRUE(embedded.ok()) << all_errors(embedded);
  ASSERT_TRUE(file.ok()) << all_errors(file);
  embedded.config.source_file = file.config.source_file;
  EXPECT_EQ(embedded.config, file.config);
}

TEST_F(ConfigLoading, MinimalConfigGetsEveryDefault) {
  const ConfigLoadResult result = load(kMinimal);
  ASSERT_TRUE(result.ok()) << all_errors(result);
  Config expected;
  expected.data.train = scratch_.file("train.tok");
  expected.source_file = "cfg.yaml";
  EXPECT_EQ(result.config, expected);
}

TEST_F(ConfigLoading, EmptySectionsKeepDefaults) {
  const ConfigLoadResult result = load("model:\nadapter:\noptim: {}\n" + kMinimal);
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.model, ModelConfig{});
  EXPECT_EQ(result.config.adapter, AdapterConfig{});
  EXPECT_EQ(result.config.optim, OptimConfig{});
}

TEST_F(ConfigLoading, EmptyFileOnlyLacksTrainData) {
  const ConfigLoadResult result = load("# nothing but a comment\n");
  ASSERT_EQ(result.errors.size(), 1u) << all_errors(result);
  EXPECT_EQ(result.errors[0].format(),
            "cfg.yaml:0:0: data.train: missing, expected the path of a token file");
}

TEST_F(ConfigLoading, RelativeInputPathsResolveAgainstBaseDir) {
  const ConfigLoadResult result =
      load("model:\n  path: ckpt\ndata:\n  train: ./ckpt/../train.tok\n  eval: eval.tok\n");
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.model.path, scratch_.file("ckpt"));
  EXPECT_EQ(result.config.data.train, scratch_.file("train.tok"));
  EXPECT_EQ(result.config.data.eval, scratch_.file("eval.tok"));
}

TEST_F(ConfigLoading, AbsoluteInputPathsAreKept) {
  const ConfigLoadResult result = load_config_text(
      "data:\n  train: " + scratch_.file("train.tok") + "\n", "cfg.yaml", "/nonexistent/base");
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.data.train, scratch_.file("train.tok"));
}

TEST_F(ConfigLoading, OutputDirIsLeftAsWritten) {
  const ConfigLoadResult result = load(minimal_plus("output_dir: runs/../runs/exp1\n"));
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.output_dir, "runs/../runs/exp1");
}

TEST_F(ConfigLoading, FileLoadResolvesPathsAgainstTheFilesFolder) {
  fs::create_directory(scratch_.path() / "sub");
  const std::string path = (scratch_.path() / "sub" / "train.yaml").string();
  write_text(path, "data:\n  train: ../train.tok\n  eval: ../eval.tok\n");
  const ConfigLoadResult result = load_config_file(path);
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.source_file, path);
  EXPECT_EQ(result.config.data.train, scratch_.file("train.tok"));
  EXPECT_EQ(result.config.data.eval, scratch_.file("eval.tok"));
}

TEST_F(ConfigLoading, MissingFileIsOneErrorNamingIt) {
  const std::string path = (scratch_.path() / "nope.yaml").string();
  const ConfigLoadResult result = load_config_file(path, {"adapter.r=4"});
  ASSERT_EQ(result.errors.size(), 1u) << all_errors(result);
  EXPECT_EQ(where(result.errors[0]), path + ":0:0");
  EXPECT_NE(result.errors[0].message.find("'" + path + "'"), std::string::npos);
  EXPECT_NE(result.errors[0].message.find("No such file"), std::string::npos);
}

TEST_F(ConfigLoading, DirectoryAsConfigFileIsOneError) {
  const ConfigLoadResult result = load_config_file(scratch_.path().string());
  ASSERT_EQ(result.errors.size(), 1u) << all_errors(result);
  EXPECT_NE(result.errors[0].message.find("is a directory"), std::string::npos);
}

TEST_F(ConfigLoading, AllLinearSelectsAllSevenModules) {
  const ConfigLoadResult result = load(minimal_plus("adapter:\n  target_modules: all-linear\n"));
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.target_modules, all_target_modules());
  EXPECT_EQ(result.config.adapter.target_modules.size(), 7u);
}

// Phi-3's fused projections: all-linear means its four Linears, and with no targets given the
// adapter goes on qkv_proj (PEFT's default for phi3; q_proj, v_proj is no module of it).
TEST_F(ConfigLoading, AFusedModelTargetsItsOwnModules) {
  const std::string fused = "model:\n  fused_projections: true\n";
  ConfigLoadResult result = load(minimal_plus(fused + "adapter:\n  target_modules: all-linear\n"));
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.target_modules, fused_target_modules());
  result = load(minimal_plus(fused));
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.target_modules, std::vector<std::string>{"qkv_proj"});
  result = load(minimal_plus(fused + "adapter:\n  target_modules: [down_proj, gate_up_proj]\n"));
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.target_modules,
            (std::vector<std::string>{"gate_up_proj", "down_proj"}));
  result = load(kMinimal, {"model.fused_projections=true", "adapter.target_modules=all-linear"});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.target_modules, fused_target_modules());
}

TEST_F(ConfigLoading, TargetModulesAreStoredInLayerOrder) {
  const ConfigLoadResult result =
      load(minimal_plus("adapter:\n  target_modules: [down_proj, v_proj, q_proj]\n"));
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.target_modules,
            (std::vector<std::string>{"q_proj", "v_proj", "down_proj"}));
}

TEST_F(ConfigLoading, NumbersAcceptCommonYamlSpellings) {
  const ConfigLoadResult result =
      load(minimal_plus("adapter:\n  alpha: 32\n  dropout: .1\noptim:\n  lr: 3e-4\n  eps: 1.0e-8\n"
                        "  warmup_steps: +5\ntrain:\n  seed: 18446744073709551615\n"));
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.alpha, 32.0);
  EXPECT_EQ(result.config.adapter.dropout, 0.1);
  EXPECT_EQ(result.config.optim.lr, 3e-4);
  EXPECT_EQ(result.config.optim.eps, 1e-8);
  EXPECT_EQ(result.config.optim.warmup_steps, 5);
  EXPECT_EQ(result.config.train.seed, UINT64_MAX);
}

TEST_F(ConfigLoading, StringKeysAcceptQuotedAndPlainScalars) {
  const ConfigLoadResult result = load(
      "data:\n  train: \"train.tok\"\nadapter:\n  type: 'dora'\noutput_dir: \"runs/my run: 1\"\n");
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.data.train, scratch_.file("train.tok"));
  EXPECT_EQ(result.config.adapter.type, AdapterType::kDora);
  EXPECT_EQ(result.config.output_dir, "runs/my run: 1");
}

TEST_F(ConfigLoading, EmptyEvalMeansNoEvaluation) {
  const ConfigLoadResult result = load("data:\n  train: train.tok\n  eval:\n");
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.data.eval, "");
}

TEST_F(ConfigLoading, WarmupEqualToStepsIsAllowed) {
  const ConfigLoadResult result =
      load(minimal_plus("train:\n  steps: 10\noptim:\n  warmup_steps: 10\n"));
  EXPECT_TRUE(result.ok()) << all_errors(result);
}

// transformers' warmup ratio: ceil(steps * ratio) in double (100 * 0.07 = 7.000000000000001, so
// 8 warmup steps, as transformers gives), following an overridden train.steps; the resolved
// config writes warmup_steps as a comment only, so it loads back to the same config.
TEST_F(ConfigLoading, WarmupRatioDerivesTheStepsAsTransformersDoes) {
  const std::string yaml = minimal_plus("train:\n  steps: 100\noptim:\n  warmup_ratio: 0.07\n");
  const ConfigLoadResult result = load(yaml);
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.optim.warmup_steps, 8);
  const ConfigLoadResult longer = load(yaml, {"train.steps=250"});
  ASSERT_TRUE(longer.ok()) << all_errors(longer);
  EXPECT_EQ(longer.config.optim.warmup_steps, 18);  // ceil(17.5)

  const std::string resolved = config_to_yaml(result.config);
  EXPECT_NE(resolved.find("  # warmup_steps: 8 (from warmup_ratio)\n"), std::string::npos)
      << resolved;
  const ConfigLoadResult back = load(resolved);
  ASSERT_TRUE(back.ok()) << all_errors(back);
  EXPECT_EQ(back.config.optim, result.config.optim);
}

// A --set of train.epochs overrides the file's train.steps (and the other way round), a --set
// of warmup_ratio the file's warmup_steps; the resolved config says which one it kept and
// loads back the same.
TEST_F(ConfigLoading, ASetOfEpochsOrWarmupRatioOverridesTheFilesSteps) {
  const std::string yaml = minimal_plus("train:\n  steps: 50\noptim:\n  warmup_steps: 5\n");
  const ConfigLoadResult epochs = load(yaml, {"train.epochs=2", "optim.warmup_ratio=0.1"});
  ASSERT_TRUE(epochs.ok()) << all_errors(epochs);
  EXPECT_EQ(epochs.config.train.epochs, 2.0);
  EXPECT_EQ(epochs.config.optim.warmup_ratio, 0.1);
  const std::string resolved = config_to_yaml(epochs.config);
  EXPECT_NE(resolved.find("  # steps: from epochs"), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("  # warmup_steps: from warmup_ratio at start"), std::string::npos)
      << resolved;
  const ConfigLoadResult back = load(resolved);
  ASSERT_TRUE(back.ok()) << all_errors(back);
  EXPECT_EQ(back.config.train, epochs.config.train);
  EXPECT_EQ(back.config.optim, epochs.config.optim);

  const ConfigLoadResult steps_again =
      load(minimal_plus("train:\n  epochs: 2\n"), {"train.epochs=3", "train.steps=40"});
  ASSERT_TRUE(steps_again.ok()) << all_errors(steps_again);
  EXPECT_EQ(steps_again.config.train.epochs, 0.0);
  EXPECT_EQ(steps_again.config.train.steps, 40);
}

// resolve_epochs: ceil(epochs x rows / global batch) steps, at least one; warmup_ratio and the
// rules that read train.steps applied to them; epochs cleared, so the result reads like a
// steps-based config.
TEST_F(ConfigLoading, EpochsBecomeStepsOnceTheRowsAreKnown) {
  ConfigLoadResult loaded =
      load(minimal_plus("train:\n  epochs: 2\noptim:\n  warmup_ratio: 0.1\n"));
  ASSERT_TRUE(loaded.ok()) << all_errors(loaded);
  const Config two = resolve_epochs(loaded.config, 1000, 16);
  EXPECT_EQ(two.train.steps, 125);
  EXPECT_EQ(two.train.epochs, 0.0);
  EXPECT_EQ(two.optim.warmup_steps, 13);  // ceil(12.5)
  EXPECT_EQ(two.source_file, "cfg.yaml");
  loaded.config.train.epochs = 0.001;
  EXPECT_EQ(resolve_epochs(loaded.config, 1000, 16).train.steps, 1);
  const Config untouched = resolve_epochs(two, 1000, 16);  // no epochs: nothing to do
  EXPECT_EQ(untouched, two);

  // A fixed warmup longer than the derived run, and an AdaLoRA schedule with no budget phase
  // left, are refused naming the keys and the derivation.
  ConfigLoadResult long_warmup =
      load(minimal_plus("train:\n  epochs: 1\noptim:\n  warmup_steps: 100\n"));
  ASSERT_TRUE(long_warmup.ok()) << all_errors(long_warmup);
  try {
    resolve_epochs(long_warmup.config, 1000, 16);
    FAIL() << "a warmup longer than 63 steps was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("train.epochs 1 of 1000 rows at a global batch of 16 "
                                         "sequences = 63 steps:"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("optim.warmup_steps: 100 is more than train.steps (63)"),
              std::string::npos)
        << e.what();
  }
  ConfigLoadResult adalora = load(minimal_plus(
      "adapter:\n  type: adalora\n  tinit: 50\n  tfinal: 20\ntrain:\n  epochs: 1\noptim:\n"
      "  warmup_steps: 0\n"));
  ASSERT_TRUE(adalora.ok()) << all_errors(adalora);
  EXPECT_THROW(
      {
        try {
          resolve_epochs(adalora.config, 1000, 16);
        } catch (const std::runtime_error& e) {
          EXPECT_NE(std::string(e.what()).find("adapter.tinit: 50 leaves no budget phase"),
                    std::string::npos)
              << e.what();
          throw;
        }
      },
      std::runtime_error);
  EXPECT_THROW(resolve_epochs(adalora.config, 0, 16), std::runtime_error);
}

TEST_F(ConfigLoading, BoundaryValuesAreAccepted) {
  const ConfigLoadResult result = load(minimal_plus(
      "adapter:\n  dropout: 0.0\noptim:\n  lr: 0\n  weight_decay: 0\n  betas: [0.0, 0.0]\n"
      "  max_grad_norm: 0\n  min_lr_ratio: 1.0\n  warmup_steps: 0\ntrain:\n  eval_every: 0\n"
      "checkpoint:\n  every_steps: 0\n  keep_last: 1\nruntime:\n  threads: 0\n"
      "model:\n  dim: 8\n  n_heads: 4\n  n_kv_heads: 4\n"));
  EXPECT_TRUE(result.ok()) << all_errors(result);
}

TEST_F(ConfigLoading, AdapterScalingFollowsPeft) {
  AdapterConfig adapter;
  adapter.r = 16;
  adapter.alpha = 32.0;
  EXPECT_DOUBLE_EQ(adapter.scaling(), 2.0);
  adapter.use_rslora = true;
  EXPECT_DOUBLE_EQ(adapter.scaling(), 8.0);
}

TEST_F(ConfigLoading, EnumNamesMatchTheYamlSpelling) {
  EXPECT_STREQ(to_string(AdapterType::kLora), "lora");
  EXPECT_STREQ(to_string(AdapterType::kDora), "dora");
  EXPECT_STREQ(to_string(AdapterType::kAdaLora), "adalora");
  EXPECT_STREQ(to_string(LrSchedule::kConstant), "constant");
  EXPECT_STREQ(to_string(LrSchedule::kLinear), "linear");
  EXPECT_STREQ(to_string(LrSchedule::kCosine), "cosine");
  EXPECT_STREQ(to_string(DeviceKind::kAuto), "auto");
  EXPECT_STREQ(to_string(DeviceKind::kCpu), "cpu");
  EXPECT_STREQ(to_string(DeviceKind::kCuda), "cuda");
}

// ---------------------------------------------------------------------------------------------
// --set overrides
// ---------------------------------------------------------------------------------------------

using ConfigOverrides = ConfigTest;

TEST_F(ConfigOverrides, ScalarOverrideReplacesFileValue) {
  const ConfigLoadResult result = load(minimal_plus("adapter:\n  r: 4\n"), {"adapter.r=16"});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.r, 16);
}

TEST_F(ConfigOverrides, ListOverrideSetsTargetModules) {
  ConfigLoadResult result = load(kMinimal, {"adapter.target_modules=[q_proj,o_proj]"});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.target_modules, (std::vector<std::string>{"q_proj", "o_proj"}));
  result = load(kMinimal, {"adapter.target_modules=all-linear"});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.target_modules, all_target_modules());
}

TEST_F(ConfigOverrides, BetasOverrideSetsBoth) {
  const ConfigLoadResult result = load(kMinimal, {"optim.betas=[0.8,0.95]"});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.optim.beta1, 0.8);
  EXPECT_EQ(result.config.optim.beta2, 0.95);
}

TEST_F(ConfigOverrides, SectionOverrideSetsSeveralKeys) {
  const ConfigLoadResult result =
      load(kMinimal, {"adapter={r: 4, alpha: 8, type: adalora}", "runtime={device: cpu}"});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.r, 4);
  EXPECT_EQ(result.config.adapter.alpha, 8.0);
  EXPECT_EQ(result.config.adapter.type, AdapterType::kAdaLora);
  EXPECT_EQ(result.config.runtime.device, DeviceKind::kCpu);
}

TEST_F(ConfigOverrides, KeyAbsentFromTheFileCanBeSet) {
  const ConfigLoadResult result =
      load(kMinimal, {"model.rope_theta=500000", "output_dir=runs/x", "model.tie_embeddings=true"});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.model.rope_theta, 500000.0);
  EXPECT_EQ(result.config.output_dir, "runs/x");
  EXPECT_TRUE(result.config.model.tie_embeddings);
}

TEST_F(ConfigOverrides, LaterOverrideWins) {
  const ConfigLoadResult result = load(kMinimal, {"train.steps=50", "train.steps=60"});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.train.steps, 60);
}

TEST_F(ConfigOverrides, OverrideFixesABadFileValue) {
  const ConfigLoadResult result = load(minimal_plus("adapter:\n  r: 0\n  dropout: lots\n"),
                                       {"adapter.r=8", "adapter.dropout=0.1"});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.adapter.r, 8);
  EXPECT_EQ(result.config.adapter.dropout, 0.1);
}

TEST_F(ConfigOverrides, CrossFieldRulesSeeOverriddenValues) {
  // The file alone is wrong (warmup 300 > 200 steps); raising steps on the command line fixes it.
  const ConfigLoadResult result =
      load(minimal_plus("optim:\n  warmup_steps: 300\n"), {"train.steps=400"});
  EXPECT_TRUE(result.ok()) << all_errors(result);
}

TEST_F(ConfigOverrides, EmptyValueClearsOptionalPath) {
  const ConfigLoadResult result =
      load("data:\n  train: train.tok\n  eval: eval.tok\n", {"data.eval="});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.data.eval, "");
}

TEST_F(ConfigOverrides, ValueMayContainEqualsSign) {
  const ConfigLoadResult result = load(kMinimal, {"output_dir=runs/lr=3e-4"});
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.output_dir, "runs/lr=3e-4");
}

TEST_F(ConfigOverrides, PathsResolveAgainstTheWorkingDirectory) {
  // The config lives elsewhere; the command-line path is relative to where peftrun runs.
  fs::create_directory(scratch_.path() / "elsewhere");
  const fs::path previous = fs::current_path();
  fs::current_path(scratch_.path());
  const ConfigLoadResult result =
      load_config_text("data:\n  train: ../train.tok\n", "cfg.yaml",
                       (scratch_.path() / "elsewhere").string(), {"data.eval=eval.tok"});
  fs::current_path(previous);
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.data.eval, scratch_.file("eval.tok"));
}

// ---------------------------------------------------------------------------------------------
// config_to_yaml round trips
// ---------------------------------------------------------------------------------------------

using ConfigRoundTrip = ConfigTest;

// Loads `config_to_yaml(config)` back from another folder and expects the same Config.
void expect_round_trip(const Config& config) {
  const std::string yaml = config_to_yaml(config);
  ConfigLoadResult again = load_config_text(yaml, "resolved.yaml", "/");
  ASSERT_TRUE(again.ok()) << all_errors(again) << "\n" << yaml;
  again.config.source_file = config.source_file;
  EXPECT_EQ(again.config, config) << yaml;
  EXPECT_EQ(config_to_yaml(again.config), yaml);
}

TEST_F(ConfigRoundTrip, TinyYamlRoundTrips) {
  const ConfigLoadResult result = load_tiny_with_scratch_data();
  ASSERT_TRUE(result.ok()) << all_errors(result);
  expect_round_trip(result.config);
}

TEST_F(ConfigRoundTrip, NonDefaultValuesRoundTrip) {
  const std::string yaml =
      "model:\n  path: ckpt\n  dim: 64\n  n_layers: 2\n  n_heads: 8\n  n_kv_heads: 8\n"
      "  ffn_dim: 172\n  vocab_size: 32000\n  max_seq_len: 4096\n  rope_theta: 500000\n"
      "  tie_embeddings: true\n  norm_eps: 1e-6\n  init_std: 0.30000000000000004\n"
      "adapter:\n  type: dora\n  r: 64\n  alpha: 0.1\n  dropout: 0.999\n"
      "  target_modules: [gate_proj, up_proj]\n  use_rslora: true\n"
      "data:\n  train: train.tok\n  eval: eval.tok\n  seq_len: 4096\n  eval_batches: 1\n"
      "train:\n  steps: 2147483647\n  micro_batch_size: 3\n  grad_accum: 7\n"
      "  seed: 18446744073709551615\n  eval_every: 0\n  log_every: 1000\n"
      "optim:\n  lr: 1.5e-300\n  betas: [0.0, 0.99999999999999989]\n  eps: 1e300\n"
      "  weight_decay: 12345.678\n  schedule: linear\n  warmup_steps: 2147483647\n"
      "  max_grad_norm: 0\n  min_lr_ratio: 0.1\n"
      "checkpoint:\n  every_steps: 100\n  keep_last: 1\nruntime:\n  device: cpu\n  threads: 6\n"
      "output_dir: \"runs/odd \\\"name\\\": #1 \\\\ yes\"\n";
  const ConfigLoadResult result = load(yaml);
  ASSERT_TRUE(result.ok()) << all_errors(result);
  EXPECT_EQ(result.config.output_dir, "runs/odd \"name\": #1 \\ yes");
  expect_round_trip(result.config);
}

TEST_F(ConfigRoundTrip, StringsThatLookLikeOtherTypesRoundTrip) {
  for (const std::string output_dir : {"true", "123", "1e5", "null", "~", "-x", " lead", "a\tb"}) {
    Config config;
    config.data.train = scratch_.file("train.tok");
    config.output_dir = output_dir;
    SCOPED_TRACE(output_dir);
    expect_round_trip(config);
  }
}

// The keys the file format promises (docs/CONFIG.md); config_to_yaml must print all of them.
const std::vector<std::string> kAllKeys = {"model.path",
                                           "model.dim",
                                           "model.n_layers",
                                           "model.n_heads",
                                           "model.n_kv_heads",
                                           "model.head_dim",
                                           "model.ffn_dim",
                                           "model.vocab_size",
                                           "model.max_seq_len",
                                           "model.rope_theta",
                                           "model.rope_scaling",
                                           "model.rope_factor",
                                           "model.rope_low_freq_factor",
                                           "model.rope_high_freq_factor",
                                           "model.rope_original_max_seq_len",
                                           "model.rope_beta_fast",
                                           "model.rope_beta_slow",
                                           "model.rope_attention_factor",
                                           "model.rope_truncate",
                                           "model.partial_rotary_factor",
                                           "model.rope_short_factor",
                                           "model.rope_long_factor",
                                           "model.tie_embeddings",
                                           "model.qk_norm",
                                           "model.qk_norm_full_width",
                                           "model.mlp_activation",
                                           "model.norm_one_plus_weight",
                                           "model.scale_embeddings",
                                           "model.sandwich_norms",
                                           "model.input_norms",
                                           "model.fused_projections",
                                           "model.query_pre_attn_scalar",
                                           "model.rope_local_theta",
                                           "model.attn_logit_softcapping",
                                           "model.final_logit_softcapping",
                                           "model.embedding_multiplier",
                                           "model.residual_multiplier",
                                           "model.attention_multiplier",
                                           "model.logits_scaling",
                                           "model.sliding_window",
                                           "model.layer_types",
                                           "model.no_rope_layers",
                                           "model.norm_eps",
                                           "model.init_std",
                                           "adapter.type",
                                           "adapter.r",
                                           "adapter.alpha",
                                           "adapter.dropout",
                                           "adapter.target_modules",
                                           "adapter.use_rslora",
                                           "adapter.init_from",
                                           "adapter.init_r",
                                           "adapter.target_r",
                                           "adapter.tinit",
                                           "adapter.tfinal",
                                           "adapter.deltaT",
                                           "adapter.beta1",
                                           "adapter.beta2",
                                           "adapter.orth_reg_weight",
                                           "adapter.total_step",
                                           "data.train",
                                           "data.eval",
                                           "data.seq_len",
                                           "data.eval_batches",
                                           "data.format",
                                           "data.eval_format",
                                           "data.tokenizer",
                                           "data.packing",
                                           "data.skip_bad_lines",
                                           "data.chat_template",
                                           "data.append_eos",
                                           "train.steps",
                                           "train.epochs",
                                           "train.micro_batch_size",
                                           "train.grad_accum",
                                           "train.seed",
                                           "train.eval_every",
                                           "train.log_every",
                                           "optim.lr",
                                           "optim.betas",
                                           "optim.eps",
                                           "optim.weight_decay",
                                           "optim.schedule",
                                           "optim.warmup_steps",
                                           "optim.warmup_ratio",
                                           "optim.max_grad_norm",
                                           "optim.min_lr_ratio",
                                           "checkpoint.every_steps",
                                           "checkpoint.keep_last",
                                           "runtime.device",
                                           "runtime.compute_dtype",
                                           "runtime.threads",
                                           "runtime.shard_base",
                                           "runtime.gradient_checkpointing",
                                           "comm.timeout_s",
                                           "comm.bucket_mb",
                                           "output_dir"};

// Dotted key -> value text, from a YAML document of sections.
std::vector<std::pair<std::string, std::string>> flatten(const std::string& yaml) {
  std::vector<std::pair<std::string, std::string>> out;
  const YAML::Node root = YAML::Load(yaml);
  for (const auto& section : root) {
    if (!section.second.IsMap()) {
      out.emplace_back(section.first.Scalar(), section.second.Scalar());
      continue;
    }
    for (const auto& key : section.second) {
      YAML::Emitter value;
      value << YAML::Flow << key.second;
      out.emplace_back(section.first.Scalar() + "." + key.first.Scalar(), value.c_str());
    }
  }
  return out;
}

TEST_F(ConfigRoundTrip, YamlHasEveryKeyOnceInOrder) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : flatten(config_to_yaml(Config{}))) keys.push_back(key);
  EXPECT_EQ(keys, kAllKeys);
}

TEST_F(ConfigRoundTrip, YamlLeavesSourceFileOut) {
  Config config;
  config.source_file = "some/where.yaml";
  EXPECT_EQ(config_to_yaml(config).find("source_file"), std::string::npos);
  EXPECT_EQ(config_to_yaml(config).find("where.yaml"), std::string::npos);
}

TEST_F(ConfigRoundTrip, EveryKeyCanBeSetFromTheCommandLine) {
  const ConfigLoadResult base = load_tiny_with_scratch_data();
  ASSERT_TRUE(base.ok()) << all_errors(base);
  std::vector<std::string> overrides;
  for (const auto& [key, value] : flatten(config_to_yaml(base.config))) {
    overrides.push_back(key + "=" + value);
  }
  ASSERT_EQ(overrides.size(), kAllKeys.size());
  const ConfigLoadResult result = load(kMinimal, overrides);
  ASSERT_TRUE(result.ok()) << all_errors(result);
  Config expected = base.config;
  expected.source_file = "cfg.yaml";
  EXPECT_EQ(result.config, expected);
}

// ---------------------------------------------------------------------------------------------
// Bad configs: each produces exactly one problem, with the expected key, message and position.
// ---------------------------------------------------------------------------------------------

struct BadCase {
  std::string name;
  std::string yaml;
  std::vector<std::string> overrides;
  std::string key;      // ConfigError::key
  std::string message;  // a substring of ConfigError::message
  std::string where;    // "FILE:LINE:COL", checked when not empty
  std::string absent;   // a substring the message must not contain
};

// A bad config file, loaded as cfg.yaml with no overrides.
BadCase file_case(std::string name, std::string yaml, std::string key, std::string message,
                  std::string where = "", std::string absent = "") {
  return {std::move(name),  std::move(yaml),  {}, std::move(key), std::move(message),
          std::move(where), std::move(absent)};
}

// Bad overrides on top of the valid minimal config.
BadCase set_case(std::string name, std::vector<std::string> overrides, std::string key,
                 std::string message, std::string where = "") {
  return {std::move(name),  kMinimal, std::move(overrides), std::move(key), std::move(message),
          std::move(where), ""};
}

std::vector<BadCase> bad_cases() {
  return {
      // YAML structure
      file_case("RejectsYamlSyntaxError", minimal_plus("adapter: {r: 8\nmodel:\n"), "",
                "YAML syntax error", "cfg.yaml:4:6"),
      file_case("RejectsTopLevelList", "- model\n- adapter\n", "", "expected a map of sections",
                "cfg.yaml:1:1"),
      file_case("RejectsSectionThatIsNotAMap", minimal_plus("adapter: 5\n"), "adapter",
                "got '5', expected a map of adapter keys (type, r, alpha", "cfg.yaml:3:10"),
      file_case("RejectsRepeatedKey", minimal_plus("adapter:\n  r: 4\n  r: 8\n"), "adapter.r",
                "given twice (first on line 4)", "cfg.yaml:5:3"),
      file_case("RejectsDottedKeyInFile", minimal_plus("adapter.r: 4\n"), "adapter.r",
                "dotted keys are only for --set", "cfg.yaml:3:1"),
      // Unknown keys
      file_case("RejectsUnknownSectionSuggestingNearest", minimal_plus("optimizer:\n  lr: 0.1\n"),
                "optimizer", "unknown key 'optimizer'; did you mean 'optim'?", "cfg.yaml:3:1"),
      file_case("RejectsUnknownKeySuggestingRank", minimal_plus("adapter:\n  rank: 8\n"),
                "adapter.rank", "unknown key 'adapter.rank'; did you mean 'adapter.r'?",
                "cfg.yaml:4:3"),
      file_case("RejectsMisspelledKeySuggestingNearest", minimal_plus("model:\n  n_head: 4\n"),
                "model.n_head", "did you mean 'model.n_heads'?", "cfg.yaml:4:3"),
      file_case("RejectsKeyInWrongSectionSuggestingItsSection",
                minimal_plus("adapter:\n  lr: 0.1\n"), "adapter.lr", "did you mean 'optim.lr'?",
                "cfg.yaml:4:3"),
      file_case("RejectsFarOffKeyListingValidOnes", minimal_plus("adapter:\n  banana: 1\n"),
                "adapter.banana",
                "expected one of type, r, alpha, dropout, target_modules, use_rslora, init_from",
                "cfg.yaml:4:3", "did you mean"),
      // AdaLoRA schedules that PEFT would crash on
      file_case("RejectsAdaLoraTargetRankNotBelowInitRank",
                minimal_plus("adapter:\n  type: adalora\n  init_r: 8\n  target_r: 8\n"),
                "adapter.target_r", "expected target_r < init_r", "cfg.yaml:6:13"),
      file_case("RejectsAdaLoraScheduleWithoutBudgetPhase",
                minimal_plus("adapter:\n  type: adalora\n  tinit: 150\n  tfinal: 50\n"),
                "adapter.tinit", "expected tinit < total_step - tfinal = 200 - 50 = 150",
                "cfg.yaml:5:10"),
      // Wrong types
      file_case("RejectsWordForInteger", minimal_plus("adapter:\n  r: eight\n"), "adapter.r",
                "got 'eight', expected an integer", "cfg.yaml:4:6"),
      file_case("RejectsFloatForInteger", minimal_plus("adapter:\n  r: 8.5\n"), "adapter.r",
                "got '8.5', expected an integer", "cfg.yaml:4:6"),
      file_case("RejectsQuotedNumberForInteger", minimal_plus("adapter:\n  r: \"8\"\n"),
                "adapter.r", "got the string \"8\", expected an integer", "cfg.yaml:4:6"),
      file_case("RejectsListForScalar", minimal_plus("adapter:\n  r: [8]\n"), "adapter.r",
                "got a list, expected an integer", "cfg.yaml:4:6"),
      file_case("RejectsMapForNumber", minimal_plus("optim:\n  lr: {value: 1}\n"), "optim.lr",
                "got a map, expected a number", "cfg.yaml:4:7"),
      file_case("RejectsEmptyValueForInteger", minimal_plus("adapter:\n  r:\n"), "adapter.r",
                "no value given, expected an integer", "cfg.yaml:4:3"),
      file_case("RejectsIntegerTooLargeFor32Bits", minimal_plus("train:\n  steps: 3000000000\n"),
                "train.steps", "between -2147483648 and 2147483647", "cfg.yaml:4:10"),
      file_case("RejectsYesForBool", minimal_plus("adapter:\n  use_rslora: yes\n"),
                "adapter.use_rslora", "got 'yes', expected true or false", "cfg.yaml:4:15"),
      file_case("RejectsInfiniteNumber", minimal_plus("optim:\n  max_grad_norm: inf\n"),
                "optim.max_grad_norm", "expected a finite number", "cfg.yaml:4:18"),
      file_case("RejectsNegativeSeed", minimal_plus("train:\n  seed: -1\n"), "train.seed",
                "got '-1', expected a non-negative integer", "cfg.yaml:4:9"),
      file_case("RejectsListForString", minimal_plus("output_dir: [a, b]\n"), "output_dir",
                "got a list, expected a string", "cfg.yaml:3:13"),
      // Adapter ranges and values
      file_case("RejectsNonPositiveRank", minimal_plus("adapter:\n  r: 0\n"), "adapter.r",
                "0 is out of range, expected an integer > 0", "cfg.yaml:4:6"),
      file_case("RejectsNegativeRank", minimal_plus("adapter:\n  r: -4\n"), "adapter.r",
                "-4 is out of range, expected an integer > 0"),
      file_case("RejectsNonPositiveAlpha", minimal_plus("adapter:\n  alpha: 0\n"), "adapter.alpha",
                "expected a number > 0"),
      file_case("RejectsDropoutOfOne", minimal_plus("adapter:\n  dropout: 1.0\n"),
                "adapter.dropout", "1 is out of range, expected a number in [0, 1)",
                "cfg.yaml:4:12"),
      file_case("RejectsNegativeDropout", minimal_plus("adapter:\n  dropout: -0.1\n"),
                "adapter.dropout", "expected a number in [0, 1)"),
      file_case("RejectsUnknownAdapterType", minimal_plus("adapter:\n  type: qlora\n"),
                "adapter.type", "unknown value 'qlora', expected one of lora, dora, adalora",
                "cfg.yaml:4:9"),
      file_case("RejectsAdapterTypeInWrongCaseSuggestingIt",
                minimal_plus("adapter:\n  type: LoRA\n"), "adapter.type", "did you mean 'lora'?"),
      file_case("RejectsUnknownTargetModuleSuggestingNearest",
                minimal_plus("adapter:\n  target_modules: [q_proj, v_prj]\n"),
                "adapter.target_modules", "unknown module 'v_prj', expected one of q_proj, k_proj",
                "cfg.yaml:4:28"),
      file_case("RejectsDuplicateTargetModule",
                minimal_plus("adapter:\n  target_modules: [q_proj, v_proj, q_proj]\n"),
                "adapter.target_modules", "'q_proj' is listed twice", "cfg.yaml:4:36"),
      file_case("RejectsEmptyTargetModules", minimal_plus("adapter:\n  target_modules: []\n"),
                "adapter.target_modules", "got an empty list", "cfg.yaml:4:19"),
      file_case("RejectsASplitModuleOnAFusedModel",
                minimal_plus("model:\n  fused_projections: true\nadapter:\n  target_modules: "
                             "[q_proj, o_proj]\n"),
                "adapter.target_modules",
                "names 'q_proj', which this model does not have: with model.fused_projections "
                "(Phi-3) q/k/v are one module qkv_proj"),
      file_case("RejectsAFusedModuleOnAnUnfusedModel",
                minimal_plus("adapter:\n  target_modules: [qkv_proj]\n"), "adapter.target_modules",
                "names 'qkv_proj', a module only models with model.fused_projections (Phi-3) "
                "have; expected some of q_proj, k_proj, v_proj, o_proj"),
      file_case("RejectsSingleModuleNameForTargetModules",
                minimal_plus("adapter:\n  target_modules: q_proj\n"), "adapter.target_modules",
                "or 'all-linear'"),
      // Optimizer
      file_case("RejectsNegativeLearningRate", minimal_plus("optim:\n  lr: -0.001\n"), "optim.lr",
                "-0.001 is out of range, expected a number >= 0", "cfg.yaml:4:7"),
      file_case("RejectsNonPositiveEps", minimal_plus("optim:\n  eps: 0\n"), "optim.eps",
                "expected a number > 0"),
      file_case("RejectsBetasWithOneValue", minimal_plus("optim:\n  betas: [0.9]\n"), "optim.betas",
                "got 1 value(s), expected a list of two numbers [beta1, beta2]", "cfg.yaml:4:10"),
      file_case("RejectsBetaOfOne", minimal_plus("optim:\n  betas: [0.9, 1.0]\n"), "optim.betas",
                "beta2 = 1 is out of range, expected a number in [0, 1)", "cfg.yaml:4:10"),
      file_case("RejectsBetasThatAreNotAList", minimal_plus("optim:\n  betas: 0.9\n"),
                "optim.betas", "got '0.9', expected a list of two numbers"),
      file_case("RejectsBetaThatIsNotANumber", minimal_plus("optim:\n  betas: [0.9, high]\n"),
                "optim.betas", "got 'high', expected a number", "cfg.yaml:4:16"),
      file_case("RejectsNegativeWeightDecay", minimal_plus("optim:\n  weight_decay: -1\n"),
                "optim.weight_decay", "expected a number >= 0"),
      file_case("RejectsUnknownSchedule", minimal_plus("optim:\n  schedule: step\n"),
                "optim.schedule", "unknown value 'step', expected one of constant, linear, cosine"),
      file_case("RejectsNegativeWarmup", minimal_plus("optim:\n  warmup_steps: -1\n"),
                "optim.warmup_steps", "expected an integer >= 0"),
      file_case("RejectsWarmupLongerThanTraining",
                minimal_plus("train:\n  steps: 20\noptim:\n  warmup_steps: 21\n"),
                "optim.warmup_steps", "21 is more than train.steps (20), expected 0..20",
                "cfg.yaml:6:17"),
      file_case("RejectsAFractionalWarmupNamingWarmupRatio",
                minimal_plus("optim:\n  warmup_steps: 0.03\n"), "optim.warmup_steps",
                "got '0.03', expected an integer (a fraction of train.steps is "
                "optim.warmup_ratio)"),
      file_case("RejectsWarmupRatioAboveOne", minimal_plus("optim:\n  warmup_ratio: 1.5\n"),
                "optim.warmup_ratio", "expected a number in [0, 1]"),
      file_case("RejectsWarmupStepsTogetherWithWarmupRatio",
                minimal_plus("optim:\n  warmup_ratio: 0.1\n  warmup_steps: 5\n"),
                "optim.warmup_steps",
                "set together with optim.warmup_ratio (0.1), expected only one of them (a --set "
                "of either overrides the other)",
                "cfg.yaml:5:17"),
      file_case("RejectsStepsTogetherWithEpochs",
                minimal_plus("train:\n  steps: 50\n  epochs: 2\n"), "train.steps",
                "set together with train.epochs (2), expected only one of them (a --set of "
                "either overrides the other)",
                "cfg.yaml:4:10"),
      file_case("RejectsNegativeEpochs", minimal_plus("train:\n  epochs: -1\n"), "train.epochs",
                "expected a number >= 0"),
      file_case("RejectsNegativeMaxGradNorm", minimal_plus("optim:\n  max_grad_norm: -0.5\n"),
                "optim.max_grad_norm", "expected a number >= 0"),
      file_case("RejectsMinLrRatioAboveOne", minimal_plus("optim:\n  min_lr_ratio: 1.5\n"),
                "optim.min_lr_ratio", "expected a number in [0, 1]"),
      // Training loop, checkpoints, runtime
      file_case("RejectsZeroSteps", minimal_plus("train:\n  steps: 0\n"), "train.steps",
                "expected an integer > 0", "cfg.yaml:4:10"),
      file_case("RejectsZeroMicroBatchSize", minimal_plus("train:\n  micro_batch_size: 0\n"),
                "train.micro_batch_size", "expected an integer > 0"),
      file_case("RejectsZeroGradAccum", minimal_plus("train:\n  grad_accum: 0\n"),
                "train.grad_accum", "expected an integer > 0"),
      file_case("RejectsZeroLogEvery", minimal_plus("train:\n  log_every: 0\n"), "train.log_every",
                "expected an integer > 0"),
      file_case("RejectsNegativeEvalEvery", minimal_plus("train:\n  eval_every: -5\n"),
                "train.eval_every", "expected an integer >= 0"),
      file_case("RejectsZeroEvalBatches", "data:\n  train: train.tok\n  eval_batches: 0\n",
                "data.eval_batches", "expected an integer > 0", "cfg.yaml:3:17"),
      file_case("RejectsZeroKeepLast", minimal_plus("checkpoint:\n  keep_last: 0\n"),
                "checkpoint.keep_last", "expected an integer >= 1"),
      file_case("RejectsNegativeCheckpointInterval",
                minimal_plus("checkpoint:\n  every_steps: -1\n"), "checkpoint.every_steps",
                "expected an integer >= 0"),
      file_case("RejectsNegativeThreads", minimal_plus("runtime:\n  threads: -2\n"),
                "runtime.threads", "expected an integer >= 0"),
      file_case("RejectsUnknownDevice", minimal_plus("runtime:\n  device: gpu\n"), "runtime.device",
                "unknown value 'gpu', expected one of auto, cpu, cuda; did you mean 'cuda'?",
                "cfg.yaml:4:11"),
      file_case("RejectsUnknownComputeDtype", minimal_plus("runtime:\n  compute_dtype: bfloat16\n"),
                "runtime.compute_dtype",
                "unknown value 'bfloat16', expected one of auto, fp32, fp16, bf16; did you mean "
                "'bf16'?",
                "cfg.yaml:4:18"),
      file_case("RejectsSixteenBitComputeOnTheCpu",
                minimal_plus("runtime:\n  device: cpu\n  compute_dtype: bf16\n"),
                "runtime.compute_dtype",
                "bf16 with runtime.device: cpu, expected auto or fp32 (the CPU backend computes "
                "in fp32; fp16 and bf16 apply to cuda)"),
      file_case("RejectsEmptyOutputDir", minimal_plus("output_dir: \"\"\n"), "output_dir",
                "is empty"),
      // Model shape
      file_case("RejectsZeroModelDim", minimal_plus("model:\n  dim: 0\n"), "model.dim",
                "expected an integer > 0", "cfg.yaml:4:8"),
      file_case("RejectsZeroLayers", minimal_plus("model:\n  n_layers: 0\n"), "model.n_layers",
                "expected an integer > 0"),
      file_case("RejectsZeroVocab", minimal_plus("model:\n  vocab_size: 0\n"), "model.vocab_size",
                "expected an integer > 0"),
      file_case("RejectsDimNotDivisibleByHeads", minimal_plus("model:\n  dim: 130\n"), "model.dim",
                "130 is not divisible by model.n_heads (4)", "cfg.yaml:4:8"),
      file_case("RejectsHeadsNotDivisibleByKvHeads", minimal_plus("model:\n  n_kv_heads: 3\n"),
                "model.n_kv_heads", "model.n_heads (4) is not divisible by 3", "cfg.yaml:4:15"),
      file_case("RejectsMoreKvHeadsThanHeads", minimal_plus("model:\n  n_kv_heads: 8\n"),
                "model.n_kv_heads", "8 is more than model.n_heads (4)"),
      file_case("RejectsOddHeadDim", minimal_plus("model:\n  dim: 12\n"), "model.dim",
                "head_dim = dim / n_heads = 12 / 4 = 3 is odd"),
      file_case("RejectsOddExplicitHeadDim", minimal_plus("model:\n  head_dim: 31\n"),
                "model.head_dim", "31 is not an even number up to 256"),
      file_case("RejectsNegativeHeadDim", minimal_plus("model:\n  head_dim: -2\n"),
                "model.head_dim", "expected an integer >= 0"),
      file_case("RejectsNonPositiveRopeTheta", minimal_plus("model:\n  rope_theta: 0\n"),
                "model.rope_theta", "expected a number > 0"),
      file_case("RejectsRopeFactorWithoutRopeScaling", minimal_plus("model:\n  rope_factor: 8\n"),
                "model.rope_factor", "is 8 but model.rope_scaling is none", "cfg.yaml:4:16"),
      file_case("RejectsLlama3ParameterForLinearScaling",
                minimal_plus("model:\n  rope_scaling: linear\n  rope_factor: 2\n"
                             "  rope_low_freq_factor: 2\n"),
                "model.rope_low_freq_factor",
                "is only read by model.rope_scaling llama3, but that is linear"),
      file_case("RejectsYarnParameterForLlama3Scaling",
                minimal_plus("model:\n  rope_scaling: llama3\n  rope_factor: 8\n"
                             "  rope_beta_fast: 16\n"),
                "model.rope_beta_fast",
                "is only read by model.rope_scaling yarn, but that is llama3"),
      file_case("RejectsUnknownRopeScalingNamingYarnAmongTheChoices",
                minimal_plus("model:\n  rope_scaling: mrope\n"), "model.rope_scaling",
                "expected one of none, linear, dynamic, llama3, yarn, longrope"),
      // head_dim 128 / 4 = 32: 16 factors per set.
      file_case(
          "RejectsLongropeFactorsOfTheWrongLength",
          minimal_plus("model:\n  rope_scaling: longrope\n  rope_short_factor: [1.0, 2.0]\n"
                       "  rope_long_factor: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"),
          "model.rope_short_factor",
          "has 2 entries, expected rotary_dim / 2 = 16 (model.rope_scaling longrope"),
      // head_dim 32 * 0.3 = 9.6, truncated to 9: odd.
      file_case("RejectsAPartialRotaryFactorGivingAnOddRotaryDim",
                minimal_plus("model:\n  partial_rotary_factor: 0.3\n"),
                "model.partial_rotary_factor",
                "rotates int(head_dim 32 * 0.3) = 9 channels, expected an even number >= 2"),
      file_case("RejectsLongropeFactorsWithoutLongrope",
                minimal_plus("model:\n  rope_long_factor: [1.0, 2.0]\n"), "model.rope_long_factor",
                "is only read by model.rope_scaling longrope, but that is none"),
      file_case(
          "RejectsANonPositiveLongropeFactor",
          minimal_plus("model:\n  rope_scaling: longrope\n  rope_short_factor: [1.0, -2]\n"
                       "  rope_long_factor: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"),
          "model.rope_short_factor", "expected a finite number > 0"),
      file_case("RejectsLlama3HighFreqFactorNotAboveLow",
                minimal_plus("model:\n  rope_scaling: llama3\n  rope_factor: 8\n"
                             "  rope_low_freq_factor: 4\n"),
                "model.rope_high_freq_factor",
                "4 is not above model.rope_low_freq_factor (4), expected high > low"),
      file_case("RejectsNegativeRopeOriginalMaxSeqLen",
                minimal_plus("model:\n  rope_scaling: llama3\n  rope_original_max_seq_len: -1\n"),
                "model.rope_original_max_seq_len", "expected an integer >= 0"),
      file_case("RejectsNoRopeLayersOfAnotherLength",
                minimal_plus("model:\n  n_layers: 4\n  no_rope_layers: [1, 1, 0]\n"),
                "model.no_rope_layers", "has 3 entries, expected one per layer (model.n_layers 4)"),
      file_case("RejectsNoRopeLayersEntryOtherThanZeroOrOne",
                minimal_plus("model:\n  no_rope_layers: [1, 2, 1, 0]\n"), "model.no_rope_layers",
                "expected 1 (the layer applies RoPE) or 0 (it does not)"),
      file_case("RejectsNonPositiveNormEps", minimal_plus("model:\n  norm_eps: -1e-5\n"),
                "model.norm_eps", "expected a number > 0"),
      file_case("RejectsNonPositiveInitStd", minimal_plus("model:\n  init_std: 0\n"),
                "model.init_std", "expected a number > 0"),
      file_case("RejectsSeqLenAboveMaxSeqLen", "data:\n  train: train.tok\n  seq_len: 512\n",
                "data.seq_len", "512 is more than model.max_seq_len (256)", "cfg.yaml:3:12"),
      file_case("RejectsZeroSeqLen", "data:\n  train: train.tok\n  seq_len: 0\n", "data.seq_len",
                "expected an integer > 0"),
      // Files
      file_case("RejectsMissingDataSection", "adapter:\n  r: 4\n", "data.train",
                "missing, expected the path of a token file", "cfg.yaml:0:0"),
      file_case("RejectsDataSectionWithoutTrain", "data:\n  seq_len: 64\n", "data.train",
                "missing, expected the path of a token file", "cfg.yaml:1:1"),
      file_case("RejectsTrainFileThatDoesNotExist", "data:\n  train: nope.tok\n", "data.train",
                "nope.tok' does not exist, expected a token file", "cfg.yaml:2:10"),
      file_case("RejectsTrainPathThatIsADirectory", "data:\n  train: ckpt\n", "data.train",
                "is a directory, expected a token file"),
      file_case("RejectsEvalFileThatDoesNotExist", "data:\n  train: train.tok\n  eval: nope.tok\n",
                "data.eval", "does not exist", "cfg.yaml:3:9"),
      file_case("RejectsModelPathThatDoesNotExist", minimal_plus("model:\n  path: no_such_model\n"),
                "model.path", "no_such_model' does not exist, expected a checkpoint folder"),
      file_case("RejectsModelPathThatIsAFile", minimal_plus("model:\n  path: train.tok\n"),
                "model.path", "is not a directory, expected a checkpoint folder"),
      // --set overrides
      set_case("RejectsOverrideWithoutEquals", {"adapter.r"}, "", "missing '=' in 'adapter.r'",
               "--set:1:1"),
      set_case("RejectsOverrideOfUnknownKey", {"adapter.alpah=4"}, "adapter.alpah",
               "did you mean 'adapter.alpha'?", "--set:1:1"),
      set_case("RejectsOverrideOfUnknownSection", {"optimiser.lr=0.1"}, "optimiser.lr",
               "did you mean 'optim.lr'?", "--set:1:1"),
      set_case("RejectsOverrideWithWrongType", {"adapter.r=abc"}, "adapter.r",
               "got 'abc', expected an integer", "--set:1:11"),
      set_case("RejectsOverrideWithYamlSyntaxError", {"adapter.target_modules=[q_proj"},
               "adapter.target_modules", "invalid YAML value"),
      set_case("RejectsOverrideOutOfRangeAtItsIndex", {"train.steps=100", "adapter.r=0"},
               "adapter.r", "0 is out of range", "--set:2:11"),
      set_case("RejectsOverrideOfSectionWithScalar", {"adapter=5"}, "adapter",
               "expected a map of adapter keys", "--set:1:9"),
      set_case("RejectsStepsOverrideBelowDefaultWarmup", {"train.steps=5"}, "optim.warmup_steps",
               "10 is more than train.steps (5)", "--set:1:13"),
      set_case("RejectsOverrideOfBadTargetModuleAtItsColumn",
               {"adapter.target_modules=[q_proj,x_proj]"}, "adapter.target_modules",
               "unknown module 'x_proj'", "--set:1:32"),
  };
}

// Failure messages name the case instead of dumping its bytes.
void PrintTo(const BadCase& c, std::ostream* os) {
  *os << c.name;
}

class BadConfig : public ConfigTest, public ::testing::WithParamInterface<BadCase> {};

TEST_P(BadConfig, ReportsExactlyTheExpectedProblem) {
  const BadCase& c = GetParam();
  ConfigLoadResult result;
  EXPECT_NO_THROW(result = load(c.yaml, c.overrides));
  ASSERT_EQ(result.errors.size(), 1u) << all_errors(result);
  const ConfigError& e = result.errors[0];
  EXPECT_EQ(e.key, c.key) << e.format();
  EXPECT_NE(e.message.find(c.message), std::string::npos) << e.format();
  if (!c.where.empty()) {
    EXPECT_EQ(where(e), c.where) << e.format();
  }
  if (!c.absent.empty()) {
    EXPECT_EQ(e.message.find(c.absent), std::string::npos) << e.format();
  }
  // The printed form is the contract: FILE:LINE:COL: key: message.
  const std::string prefix = where(e) + ": " + (e.key.empty() ? "" : e.key + ": ");
  EXPECT_EQ(e.format(), prefix + e.message);
}

INSTANTIATE_TEST_SUITE_P(ConfigValidation, BadConfig, ::testing::ValuesIn(bad_cases()),
                         [](const ::testing::TestParamInfo<BadCase>& p) { return p.param.name; });

// ---------------------------------------------------------------------------------------------
// Error reporting
// ---------------------------------------------------------------------------------------------

using ConfigErrors = ConfigTest;

TEST_F(ConfigErrors, FormatIsFileLineColKeyMessage) {
  ConfigError e;
  e.file = "train.yaml";
  e.line = 3;
  e.column = 7;
  e.key = "adapter.r";
  e.message = "0 is out of range, expected an integer > 0";
  EXPECT_EQ(e.format(), "train.yaml:3:7: adapter.r: 0 is out of range, expected an integer > 0");
  e.key.clear();
  e.line = 0;
  e.column = 0;
  e.message = "YAML syntax error: x";
  EXPECT_EQ(e.format(), "train.yaml:0:0: YAML syntax error: x");
}

TEST_F(ConfigErrors, ThreeProblemsAreReportedTogetherInLineOrder) {
  const ConfigLoadResult result = load(
      "optim:\n  shedule: cosine\n"  // line 2: unknown key
      "adapter:\n  r: 0\n"           // line 4: out of range
      "  dropout: high\n"            // line 5: wrong type
      "data:\n  train: train.tok\n");
  ASSERT_EQ(result.errors.size(), 3u) << all_errors(result);
  EXPECT_EQ(result.errors[0].format(),
            "cfg.yaml:2:3: optim.shedule: unknown key 'optim.shedule'; did you mean "
            "'optim.schedule'?");
  EXPECT_EQ(result.errors[1].format(),
            "cfg.yaml:4:6: adapter.r: 0 is out of range, expected an integer > 0");
  EXPECT_EQ(result.errors[2].format(),
            "cfg.yaml:5:12: adapter.dropout: got 'high', expected a number");
}

TEST_F(ConfigErrors, FileProblemsComeBeforeOverrideProblems) {
  const ConfigLoadResult result =
      load(minimal_plus("adapter:\n  r: 0\n"), {"train.log_every=0", "train.steps=x"});
  ASSERT_EQ(result.errors.size(), 3u) << all_errors(result);
  EXPECT_EQ(where(result.errors[0]), "cfg.yaml:4:6");
  EXPECT_EQ(where(result.errors[1]), "--set:1:17");
  EXPECT_EQ(where(result.errors[2]), "--set:2:13");
}

TEST_F(ConfigErrors, SyntaxErrorStopsLoadingWithOneError) {
  const ConfigLoadResult result = load("adapter:\n  r: [1\n", {"nonsense", "adapter.r=0"});
  ASSERT_EQ(result.errors.size(), 1u) << all_errors(result);
  EXPECT_EQ(result.errors[0].key, "");
  EXPECT_NE(result.errors[0].message.find("YAML syntax error"), std::string::npos);
  EXPECT_GT(result.errors[0].line, 0);
}

TEST_F(ConfigErrors, BrokenSectionDoesNotAlsoReportItsMissingKeys) {
  const ConfigLoadResult result = load("data: train.tok\n");
  ASSERT_EQ(result.errors.size(), 1u) << all_errors(result);
  EXPECT_EQ(result.errors[0].key, "data");
}

TEST_F(ConfigErrors, EveryBadValueInOneFileIsReported) {
  const ConfigLoadResult result = load(minimal_plus(
      "adapter:\n  r: 0\n  alpha: -1\n  dropout: 2\n  type: x\n  target_modules: [nope]\n"
      "optim:\n  lr: -1\n  eps: 0\n  betas: [2, 2]\ntrain:\n  steps: 0\n  micro_batch_size: 0\n"));
  EXPECT_EQ(result.errors.size(), 10u) << all_errors(result);
}

TEST_F(ConfigErrors, GarbageInputNeverThrows) {
  const std::vector<std::string> inputs = {
      std::string("\0\xff\xfe garbage \x01", 13),
      std::string(5000, '['),
      "{",
      "a: b: c",
      "\tmodel:\n",
      "%YAML 9.9\n---\nmodel: {}\n",
      "? [a, b]\n: c\n",
      "model: *nowhere\n",
      "model:\n  dim: &d 8\n  n_heads: *d\n",
      "- - - - -\n",
      "adapter:\n  target_modules: [[q_proj]]\n  r: {a: [1, {b: 2}]}\n",
      "optim:\n  betas: [[1], {a: 2}]\n",
      "model: !!binary aGVsbG8=\n",
      "---\n...\n",
  };
  for (const std::string& text : inputs) {
    ConfigLoadResult result;
    EXPECT_NO_THROW(result = load(text, {"=", "==", "a..b=1", ".=", "x=[", "adapter.r=}"}));
    EXPECT_FALSE(result.ok()) << text;
    for (const ConfigError& e : result.errors) EXPECT_FALSE(e.message.empty()) << text;
  }
}

// ---------------------------------------------------------------------------------------------
// docs/CONFIG.md stays in step with the code
// ---------------------------------------------------------------------------------------------

TEST(ConfigDocs, EveryKeyIsDocumentedWithItsDefault) {
  const std::string doc = read_text(PEFTRUN_SOURCE_DIR "/docs/CONFIG.md");
  ASSERT_FALSE(doc.empty());
  for (const auto& [key, value] : flatten(config_to_yaml(Config{}))) {
    // Table rows look like: | `adapter.r` | int | `8` | > 0 | meaning |
    const std::string row_start = "| `" + key + "` |";
    const auto row = doc.find(row_start);
    ASSERT_NE(row, std::string::npos) << key << " is not documented";
    const std::string line = doc.substr(row, doc.find('\n', row) - row);
    std::vector<std::string> cells;
    std::string::size_type from = 1;
    for (auto bar = line.find(" | ", from); bar != std::string::npos;
         from = bar + 3, bar = line.find(" | ", from)) {
      cells.push_back(line.substr(from, bar - from));
    }
    ASSERT_GE(cells.size(), 3u) << line;
    std::string documented = cells[2];
    if (documented.size() >= 2 && documented.front() == ' ') documented.erase(0, 1);
    const std::string printed = value.empty() ? "\"\"" : value;
    EXPECT_EQ(documented, "`" + printed + "`") << key;
  }
}

}  // namespace
}  // namespace peftrun
