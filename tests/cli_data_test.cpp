// End-to-end JSONL data through the peftrun binary: the shipped chat example trains (the held-out
// loss on assistant tokens falls) and evaluates, its tokenized data is cached next to the
// source and reused, a malformed line stops the run naming FILE:LINE, and the data.* keys are
// validated like every other key (FILE:LINE:COL).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "configs/config.h"
#include "runtime/io/safetensors.h"
#include "tests/support/run_command.h"
#include "tests/support/scratch_dir.h"

namespace fs = std::filesystem;
using peftrun::testing_support::ScratchDir;

namespace {

const std::string kSource = PEFTRUN_SOURCE_DIR;

peftrun::testing_support::CommandResult run(const std::string& args) {
  return peftrun::testing_support::run_command(std::string(PEFTRUN_BINARY) + " " + args);
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The example data copied to a scratch folder, so the caches a run writes land there.
struct ExampleCopy {
  ScratchDir dir{"cli_data"};
  std::string train = dir.file("train.jsonl"), eval = dir.file("eval.jsonl");
  ExampleCopy() {
    fs::copy_file(kSource + "/data/example/train.jsonl", train);
    fs::copy_file(kSource + "/data/example/eval.jsonl", eval);
  }
  std::string args() const {
    return kSource + "/configs/jsonl_example.yaml --set data.train=" + train +
           " --set data.eval=" + eval +
           " --set runtime.threads=2 --set output_dir=" + dir.file("run");
  }
};

TEST(JsonlTraining, ChatExampleLearnsAndIsCachedNextToTheSource) {
  const ExampleCopy ex;
  const auto r = run(ex.args() + " --set train.steps=40 --set train.eval_every=20");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("tokenizing chat (chatml template)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("packed rows of 128 tokens"), std::string::npos) << r.out;
  // Periodic evaluation on the held-out split lands in metrics.jsonl.
  std::vector<double> eval_losses;
  for (const auto& rec : read_jsonl(ex.dir.file("run/metrics.jsonl"))) {
    if (rec.contains("eval_loss")) eval_losses.push_back(rec["eval_loss"].get<double>());
  }
  ASSERT_EQ(eval_losses.size(), 3u);  // steps 0, 20, 40
  EXPECT_LT(eval_losses.back(), 0.7 * eval_losses.front())
      << "eval loss " << eval_losses.front() << " -> " << eval_losses.back();
  EXPECT_TRUE(fs::is_directory(ex.train + ".peftrun-cache"));
  EXPECT_TRUE(fs::is_directory(ex.eval + ".peftrun-cache"));

  // peftrun eval on the JSONL split reuses the cache and reports loss and perplexity.
  const auto e = run("eval " + ex.args() + " --adapter " + ex.dir.file("run") + " --dump-logits " +
                     ex.dir.file("logits.safetensors"));
  ASSERT_EQ(e.exit_code, 0) << e.out;
  EXPECT_NE(e.out.find("from cache"), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("perplexity"), std::string::npos) << e.out;
  const std::size_t at = e.out.find("): loss ");
  ASSERT_NE(at, std::string::npos) << e.out;
  EXPECT_NEAR(std::stod(e.out.substr(at + 8)), eval_losses.back(), 1e-3) << e.out;
  const peftrun::SafetensorsReader dump(ex.dir.file("logits.safetensors"));
  for (const char* name : {"logits", "input_ids", "labels", "position_ids", "segment_ids"}) {
    EXPECT_TRUE(dump.contains(name)) << name;
  }
}

TEST(JsonlTraining, PaddedRowsAndOtherFormatsTrainToo) {
  ScratchDir d("cli_formats");
  std::ofstream text(d.file("text.jsonl")), pc(d.file("pc.jsonl"));
  for (int i = 0; i < 60; ++i) {
    text << "{\"text\": \"Item " << i << " goes to the market at " << (i % 12) + 1 << ".\"}\n";
    pc << "{\"prompt\": \"Double " << i << ":\", \"completion\": \" " << 2 * i << "\"}\n";
  }
  text.close();
  pc.close();
  const std::string base =
      kSource + "/configs/jsonl_example.yaml --set train.steps=3 --set optim.warmup_steps=1 " +
      "--set train.eval_every=0 --set runtime.threads=2 --set output_dir=" + d.file("run");
  auto r =
      run(base + " --set data.format=text --set data.train=" + d.file("text.jsonl") +
          " --set data.eval=" + d.file("pc.jsonl") + " --set data.eval_format=prompt_completion" +
          " --set data.packing=false --set data.tokenizer=" + kSource +
          "/tests/tokenizer/fixtures/llama3");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("padded rows"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("each document starts with <|begin_of_text|>"), std::string::npos) << r.out;
}

TEST(JsonlTraining, AMalformedLineStopsTheRunNamingFileAndLine) {
  ScratchDir d("cli_bad_line");
  const std::string train = d.write("train.jsonl",
                                    "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                                    "{\"role\": \"assistant\", \"content\": \"hello\"}]}\n"
                                    "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]\n");
  const std::string args = kSource + "/configs/jsonl_example.yaml --set data.train=" + train +
                           " --set data.eval= --set output_dir=" + d.file("run") +
                           " --set train.steps=1 --set optim.warmup_steps=0";
  auto r = run(args);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find(train + ":2: not valid JSON"), std::string::npos) << r.out;
  r = run(args + " --set data.skip_bad_lines=true");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("1 malformed line(s) skipped (first: " + train + ":2:"), std::string::npos)
      << r.out;
}

TEST(DataConfig, JsonlKeysAreValidatedWithFileLineColumn) {
  ScratchDir d("data_config");
  const std::string train = d.write("train.jsonl", "{\"text\": \"a\"}\n");
  fs::create_directories(d.file("no_tokenizer"));
  auto load = [&](const std::string& data_section) {
    const std::string yaml = "data:\n  train: " + train + "\n" + data_section;
    std::vector<std::string> errors;
    for (const auto& e : peftrun::load_config_text(yaml, "cfg.yaml", d.path().string()).errors) {
      errors.push_back(e.format());
    }
    return errors;
  };
  EXPECT_EQ(load("  format: jsonl\n"),
            std::vector<std::string>{"cfg.yaml:3:11: data.format: unknown value 'jsonl', expected "
                                     "one of tokens, text, prompt_completion, chat; did you mean "
                                     "'text'?"});
  EXPECT_EQ(load("  format: chat\n"),
            std::vector<std::string>{
                "cfg.yaml:3:11: data.format: chat data needs a tokenizer, expected data.tokenizer "
                "(a folder with tokenizer.json) or model.path to be set"});
  const auto no_tok = load("  format: text\n  tokenizer: no_tokenizer\n");
  ASSERT_EQ(no_tok.size(), 1u);
  EXPECT_NE(no_tok[0].find("cfg.yaml:4:14: data.tokenizer: '" + d.file("no_tokenizer") +
                           "' has no tokenizer.json"),
            std::string::npos)
      << no_tok[0];
  EXPECT_EQ(
      load("  chat_template: qwen2\n"),
      std::vector<std::string>{"cfg.yaml:3:18: data.chat_template: unknown value 'qwen2', "
                               "expected one of auto, chatml, llama3, llama2, mistral, gemma; did "
                               "you mean 'chatml'?"});
  EXPECT_EQ(load("  packing: yes\n"),
            std::vector<std::string>{"cfg.yaml:3:12: data.packing: got 'yes', expected true or "
                                     "false"});
  // A token-file run with a JSONL eval file needs the tokenizer too.
  const auto eval_only = load("  eval: " + train + "\n  eval_format: text\n");
  ASSERT_EQ(eval_only.size(), 1u);
  EXPECT_NE(eval_only[0].find("text data needs a tokenizer"), std::string::npos) << eval_only[0];
  // Every new key round-trips through the resolved YAML.
  const auto loaded = peftrun::load_config_text(
      "data:\n  train: " + train + "\n  format: prompt_completion\n  tokenizer: " + kSource +
          "/tests/tokenizer/fixtures/llama2\n  packing: false\n  skip_bad_lines: true\n"
          "  chat_template: llama2\n  append_eos: false\n  eval_format: chat\n",
      "cfg.yaml", d.path().string());
  ASSERT_TRUE(loaded.ok());
  const auto again =
      peftrun::load_config_text(peftrun::config_to_yaml(loaded.config), "again.yaml", "");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.config.data, loaded.config.data);
}

}  // namespace
