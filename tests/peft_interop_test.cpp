// The real interoperability check: an adapter trained and exported by peftrun is loaded by HF
// PEFT's PeftModel.from_pretrained (tests/golden/peft_load_check.py) and PEFT's logits are
// compared with peftrun's. Needs torch + transformers + peft: the interpreter is
// $PEFTRUN_PYTHON (default python3); without them the test reports itself skipped.
#include <gtest/gtest.h>

#include "tests/support/run_command.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "runtime/data/token_file.h"
#include "tests/support/scratch_dir.h"

namespace fs = std::filesystem;

namespace {

const std::string kSource = PEFTRUN_SOURCE_DIR;

using RunResult = peftrun::testing_support::CommandResult;

RunResult run(const std::string& cmd) {
  return peftrun::testing_support::run_command(cmd);
}

std::string python() {
  const char* env = std::getenv("PEFTRUN_PYTHON");
  return env && *env ? env : "python3";
}

struct InteropCase {
  std::string type;  // adapter.type
  std::string base;  // a checkpoint under tests/golden/data/
  std::string name;
};

void PrintTo(const InteropCase& c, std::ostream* os) {
  *os << c.name;
}

class PeftLoadsPeftrunAdapters : public ::testing::TestWithParam<InteropCase> {};

TEST_P(PeftLoadsPeftrunAdapters, PeftModelFromPretrainedGivesPeftrunsLogits) {
  const std::string check = kSource + "/tests/golden/peft_load_check.py";
  const RunResult probe =
      run(python() + " -c 'import torch, transformers, peft, safetensors' > /dev/null");
  if (probe.exit_code != 0) {
    GTEST_SKIP() << "torch/transformers/peft not importable by " << python()
                 << " (set PEFTRUN_PYTHON to an interpreter that has them)";
  }
  const std::string type = GetParam().type;
  const fs::path d = peftrun::testing_support::test_output_dir("interop_" + GetParam().name);
  // Token data for the golden bases (vocab 128): a learnable repeating pattern.
  std::vector<std::int32_t> tokens(6000);
  std::mt19937 rng(1);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = static_cast<std::int32_t>((i % 17) * 7 % 128 + (rng() % 3)) % 128;
  }
  peftrun::write_token_file((d / "data.tok").string(), tokens, 128);

  const std::string base = kSource + "/tests/golden/data/" + GetParam().base;
  const std::string args =
      " --set model.path=" + base + " --set data.train=" + (d / "data.tok").string() +
      " --set data.eval=" + (d / "data.tok").string() +
      " --set data.seq_len=32 --set train.micro_batch_size=2 --set data.eval_batches=1 "
      "--set train.steps=12 --set optim.warmup_steps=1 --set optim.lr=0.02 "
      "--set train.eval_every=0 --set adapter.type=" +
      type +
      " --set adapter.init_r=6 --set adapter.target_r=3 --set adapter.tinit=2 "
      "--set adapter.tfinal=4 --set adapter.dropout=0.1 ";
  const std::string bin = PEFTRUN_BINARY;
  // A config with no model shape: it all comes from the checkpoint's config.json.
  const std::string cfg = (d / "train.yaml").string();
  std::ofstream(cfg) << "adapter:\n  target_modules: all-linear\n  r: 4\n  alpha: 8\n";
  RunResult r = run(bin + " " + cfg + args + "--set output_dir=" + (d / "adapter").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run(bin + " eval " + cfg + args + "--adapter " + (d / "adapter").string() +
          " --dump-logits " + (d / "logits.safetensors").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run(python() + " " + check + " " + base + " " + (d / "adapter").string() + " " +
          (d / "logits.safetensors").string());
  if (r.exit_code == 77) GTEST_SKIP() << r.out;
  EXPECT_EQ(r.exit_code, 0) << r.out;
  std::cout << r.out;
}

// The golden Llama base, Qwen3 (q_norm / k_norm, its own head_dim, tied embeddings) and Gemma
// (GeGLU, 1 + weight norms, scaled embeddings, one KV head) and Gemma 3 (sandwich norms, a
// window and the local RoPE base in one layer, query_pre_attn_scalar) and Gemma 2 (soft caps on
// the scores and the logits), and a multimodal Gemma 3 (Gemma3ForConditionalGeneration: its
// decoder under model.language_model, a vision tower PEFT must leave alone), OLMo 2, and Phi-3
// (adapters on its fused qkv_proj and gate_up_proj: one A shared by the pieces).
INSTANTIATE_TEST_SUITE_P(
    AllTypes, PeftLoadsPeftrunAdapters,
    ::testing::Values(InteropCase{"lora", "base", "lora"}, InteropCase{"dora", "base", "dora"},
                      InteropCase{"adalora", "base", "adalora"},
                      InteropCase{"lora", "variants/qwen3", "lora_qwen3"},
                      InteropCase{"dora", "variants/qwen3", "dora_qwen3"},
                      InteropCase{"lora", "variants/gemma", "lora_gemma"},
                      InteropCase{"adalora", "variants/gemma", "adalora_gemma"},
                      InteropCase{"dora", "variants/gemma3", "dora_gemma3"},
                      InteropCase{"lora", "variants/gemma2", "lora_gemma2"},
                      InteropCase{"lora", "variants/gemma3_multimodal", "lora_gemma3_multimodal"},
                      InteropCase{"adalora", "variants/gemma3_multimodal",
                                  "adalora_gemma3_multimodal"},
                      InteropCase{"dora", "variants/smollm3", "dora_smollm3"},
                      InteropCase{"lora", "variants/granite", "lora_granite"},
                      InteropCase{"adalora", "variants/olmo2", "adalora_olmo2"},
                      InteropCase{"lora", "variants/phi3", "lora_phi3"},
                      InteropCase{"dora", "variants/phi3", "dora_phi3"},
                      InteropCase{"adalora", "variants/phi3", "adalora_phi3"},
                      InteropCase{"lora", "variants/phi3_longrope", "lora_phi3_longrope"},
                      InteropCase{"dora", "variants/phi4_mini", "dora_phi4_mini"}),
    [](const auto& p) { return p.param.name; });

}  // namespace
