// What the `peftrun merge` tests share: a folder with a config for some base, an adapter trained
// on it for a few steps by the real binary (so B, E and m are far from their identity init),
// and helpers to merge, evaluate and compare dumped logits.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/data/token_file.h"
#include "runtime/io/safetensors.h"
#include "tests/support/run_command.h"
#include "tests/support/scratch_dir.h"

namespace peftrun::testing_support {

namespace merge_fs = std::filesystem;

// A fresh folder under the temp dir, unique per process and name; removed at exit if the
// tests passed.
inline merge_fs::path fresh_test_dir(const std::string& name) {
  return test_output_dir("merge_" + name);
}

// `peftrun ARGS`.
inline CommandResult peftrun_cli(const std::string& args) {
  return run_command(std::string(PEFTRUN_BINARY) + " " + args);
}

// A token file of `n` ids below `vocab` with a learnable repeating pattern.
inline std::string write_pattern_tokens(const merge_fs::path& path, int vocab, std::size_t n) {
  std::vector<std::int32_t> tokens(n);
  for (std::size_t i = 0; i < n; ++i) {
    tokens[i] = static_cast<std::int32_t>(((i % 17) * 7 + (i * 31 / 5) % 3) % std::size_t(vocab));
  }
  write_token_file(path.string(), tokens, static_cast<std::uint32_t>(vocab));
  return path.string();
}

struct MergeCase {
  merge_fs::path dir;
  std::string config;   // dir/train.yaml
  std::string adapter;  // dir/adapter (a trained PEFT adapter)
};

// Writes dir/train.yaml from `model_yaml` (the model section's lines, indented two spaces) and
// an adapter section for `type` that leaves up_proj unadapted, then trains 6 steps with a high
// learning rate into dir/adapter. AdaLoRA fixes its rank pattern before the end, so its adapter
// is saved sliced with a rank_pattern.
inline MergeCase train_merge_case(const merge_fs::path& dir, const std::string& type,
                                  const std::string& model_yaml, const std::string& train_tok,
                                  int vocab_for_eval = 0, const std::string& extra_args = "") {
  MergeCase c{dir, (dir / "train.yaml").string(), (dir / "adapter").string()};
  const std::string eval_tok =
      vocab_for_eval > 0 ? write_pattern_tokens(dir / "eval.tok", vocab_for_eval, 600) : train_tok;
  std::ofstream(c.config) << "model:\n"
                          << model_yaml << "adapter:\n  type: " << type
                          << "\n  r: 4\n  alpha: 8\n  dropout: 0.0\n"
                          << "  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, "
                             "down_proj]\n"
                          << "  init_r: 6\n  target_r: 3\n  tinit: 1\n  tfinal: 2\n"
                          << "data:\n  train: " << train_tok << "\n  eval: " << eval_tok
                          << "\n  seq_len: 32\n  eval_batches: 1\n"
                          << "train:\n  steps: 6\n  micro_batch_size: 4\n  eval_every: 0\n"
                          << "  log_every: 100\n"
                          // AdaLoRA starts from E = 0 with A, B ~ N(0, 0.02): it needs a far
                          // larger step to move the model visibly in 6 steps.
                          << "optim:\n  lr: " << (type == "adalora" ? "0.1" : "0.02")
                          << "\n  warmup_steps: 1\n"
                          << "runtime:\n  threads: 1\n"
                          << "output_dir: " << c.adapter << "\n";
  const CommandResult r = peftrun_cli(c.config + " " + extra_args);
  if (r.exit_code != 0) throw std::runtime_error("training failed: " + r.out);
  return c;
}

// `peftrun eval CONFIG ARGS --dump-logits FILE`; returns the logits, throws with the output on
// failure.
inline std::vector<float> eval_logits(const std::string& config, const std::string& args,
                                      const merge_fs::path& file) {
  const CommandResult r =
      peftrun_cli("eval " + config + " " + args + " --dump-logits " + file.string());
  if (r.exit_code != 0) throw std::runtime_error("eval failed: " + r.out);
  return SafetensorsReader(file.string()).read_tensor_f32("logits");
}

// ||a - b|| / ||b||
inline double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return a.size() == b.size() && den > 0 ? std::sqrt(num / den) : INFINITY;
}

}  // namespace peftrun::testing_support
