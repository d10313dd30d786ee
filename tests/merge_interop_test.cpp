// The real check of `peftrun merge`'s output: transformers loads the merged folder
// (AutoModelForCausalLM.from_pretrained) and gives the logits peftrun computes for base +
// adapter, and HF PEFT's own merge_and_unload gives the same tensors under the same names
// (tests/golden/merged_load_check.py). Cases: LoRA, DoRA and AdaLoRA on the golden fp16 llama,
// LoRA on its tied twin written as shards, DoRA on a Qwen2-style fp32 checkpoint with q/k/v biases,
// and AdaLoRA on a random base (transformers only: a random base has no folder PEFT could load).
// Needs torch + transformers + peft: the interpreter is $PEFTRUN_PYTHON (default python3);
// without them the test reports itself skipped.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/merge_case.h"
#include "tests/support/synthetic_hf_checkpoint.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;
using testing_support::CommandResult;
using testing_support::fresh_test_dir;
using testing_support::MergeCase;
using testing_support::peftrun_cli;
using testing_support::run_command;
using testing_support::train_merge_case;
using testing_support::write_pattern_tokens;

const std::string kSource = PEFTRUN_SOURCE_DIR;

std::string python() {
  const char* env = std::getenv("PEFTRUN_PYTHON");
  return env && *env ? env : "python3";
}

TEST(MergeInterop, TransformersLoadsTheMergedFolderAndPeftMergesTheSame) {
  const CommandResult probe =
      run_command(python() + " -c 'import torch, transformers, peft, safetensors' > /dev/null");
  if (probe.exit_code != 0) {
    GTEST_SKIP() << "torch/transformers/peft not importable by " << python()
                 << " (set PEFTRUN_PYTHON to an interpreter that has them)";
  }
  const fs::path root = fresh_test_dir("interop");
  const std::string golden = kSource + "/tests/golden/data/";
  const std::string small_tokens = write_pattern_tokens(root / "vocab128.tok", 128, 3000);
  const std::string corpus = kSource + "/data/tiny/train.tok";

  const std::string qwen2_dir = (root / "qwen2_base").string();
  testing_support::write_synthetic_hf_checkpoint(qwen2_dir, testing_support::small_qwen2_shape(),
                                                 TensorDType::kF32, 5);

  struct Spec {
    std::string name, type, base, tokens, merge_flags;
    std::string random_extra = "";  // model keys added to a random base's YAML
    std::string train_flags = "";   // more arguments for the training run
  };
  const std::vector<Spec> specs = {
      {"lora_llama", "lora", golden + "base", small_tokens, ""},
      {"dora_llama", "dora", golden + "base", small_tokens, ""},
      {"adalora_llama", "adalora", golden + "base", small_tokens, ""},
      // Sharded: transformers must follow model.safetensors.index.json.
      {"lora_llama_tied_sharded", "lora", golden + "base_tied", small_tokens,
       "--max-shard-size 30kB"},
      {"dora_qwen2_f32", "dora", qwen2_dir, corpus, ""},
      {"adalora_random", "adalora", "", corpus, ""},
      {"dora_gemma", "dora", golden + "variants/gemma", small_tokens, ""},
      {"lora_gemma3", "lora", golden + "variants/gemma3", small_tokens, ""},
      {"adalora_gemma2", "adalora", golden + "variants/gemma2", small_tokens, ""},
      // The vision tower and projector must come through for the folder to load.
      {"dora_gemma3_multimodal", "dora", golden + "variants/gemma3_multimodal", small_tokens, ""},
      {"lora_smollm3", "lora", golden + "variants/smollm3", small_tokens, ""},
      {"adalora_granite", "adalora", golden + "variants/granite", small_tokens, ""},
      {"dora_olmo2", "dora", golden + "variants/olmo2", small_tokens, ""},
      // Fused qkv_proj / gate_up_proj: the merged tensors keep Phi-3's layout.
      {"lora_phi3", "lora", golden + "variants/phi3", small_tokens, "", "",
       "--set adapter.target_modules=[qkv_proj,o_proj,down_proj]"},
      {"adalora_phi3", "adalora", golden + "variants/phi3", small_tokens, "", "",
       "--set adapter.target_modules=[qkv_proj,gate_up_proj]"},
      // transformers must read the config.json peftrun writes for a Gemma-style random base.
      {"lora_random_gemma", "lora", "", corpus, "",
       "  mlp_activation: gelu_tanh\n  norm_one_plus_weight: true\n  scale_embeddings: true\n"
       "  tie_embeddings: true\n"},
      // ... and the MistralForCausalLM config.json it writes for a base with a sliding window.
      {"dora_random_window", "dora", "", corpus, "", "  sliding_window: 5\n"},
  };
  nlohmann::json cases = nlohmann::json::array();
  for (const Spec& s : specs) {
    const fs::path d = root / s.name;
    fs::create_directories(d);
    const std::string model_yaml =
        s.base.empty() ? "  dim: 64\n  n_layers: 2\n  n_heads: 4\n  n_kv_heads: 2\n  ffn_dim: "
                         "96\n  vocab_size: 256\n  max_seq_len: 64\n" +
                             s.random_extra
                       : "  path: " + s.base + "\n";
    const MergeCase c = train_merge_case(d, s.type, model_yaml, s.tokens, 0, s.train_flags);
    const fs::path merged = d / "merged";
    // (train_flags change the config, so every command on it takes them.)
    const std::string config = c.config + " " + s.train_flags;
    CommandResult r = peftrun_cli("merge " + config + " --adapter " + c.adapter + " --out " +
                                  merged.string() + " " + s.merge_flags);
    ASSERT_EQ(r.exit_code, 0) << s.name << ": " << r.out;
    const fs::path logits = d / "logits.safetensors";
    r = peftrun_cli("eval " + config + " --adapter " + c.adapter + " --dump-logits " +
                    logits.string());
    ASSERT_EQ(r.exit_code, 0) << s.name << ": " << r.out;
    cases.push_back({{"name", s.name},
                     {"merged", merged.string()},
                     {"logits", logits.string()},
                     {"adapter", c.adapter},
                     {"base", s.base.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.base)}});
  }
  const fs::path cases_file = root / "cases.json";
  std::ofstream(cases_file) << cases.dump(2);
  const CommandResult r = run_command(python() + " " + kSource +
                                      "/tests/golden/merged_load_check.py " + cases_file.string());
  if (r.exit_code == 77) GTEST_SKIP() << r.out;
  EXPECT_EQ(r.exit_code, 0) << r.out;
  std::cout << r.out;
  if (r.exit_code == 0) fs::remove_all(root);
}

}  // namespace
}  // namespace peftrun
