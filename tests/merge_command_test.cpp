// `peftrun merge` end to end: the merged folder, used as model.path with a freshly initialised
// (identity) adapter, computes what the original base + adapter computes, to fp16 (bf16)
// rounding of the merged weights, for LoRA, DoRA and AdaLoRA on untied and tied random bases and
// on a Qwen2-style checkpoint with q/k/v biases stored in fp32. Also: the tensors nobody adapted
// keep their bits (rounded once), sharding, tokenizer files, and the refusals (an --out that
// exists, a mismatched adapter, an unwritable --out, a merge that fails half way).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/half.h"
#include "runtime/io/safetensors.h"
#include "runtime/model/merge.h"
#include "tests/support/merge_case.h"
#include "tests/support/synthetic_hf_checkpoint.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;
using testing_support::CommandResult;
using testing_support::eval_logits;
using testing_support::fresh_test_dir;
using testing_support::MergeCase;
using testing_support::peftrun_cli;
using testing_support::relative_difference;
using testing_support::train_merge_case;

const std::string kSource = PEFTRUN_SOURCE_DIR;
const std::string kCorpus = kSource + "/data/tiny/train.tok";

// A random base small enough that a whole case takes about a second.
std::string random_model_yaml(bool tied) {
  return std::string("  dim: 64\n  n_layers: 2\n  n_heads: 4\n  n_kv_heads: 2\n  ffn_dim: 96\n") +
         "  vocab_size: 256\n  max_seq_len: 64\n  tie_embeddings: " + (tied ? "true" : "false") +
         "\n";
}

// A Qwen2-style checkpoint (q/k/v biases) in fp32, untied, vocab 256 for the byte corpus.
std::string write_qwen2_base(const fs::path& dir) {
  testing_support::write_synthetic_hf_checkpoint(dir.string(), testing_support::small_qwen2_shape(),
                                                 TensorDType::kF32, 77);
  return dir.string();
}

std::string merge_args(const MergeCase& c, const fs::path& out, const std::string& extra = "") {
  return "merge " + c.config + " --adapter " + c.adapter + " --out " + out.string() + " " + extra;
}

struct RoundTrip {
  std::string type;
  std::string base;  // random | random_tied | qwen2_f32
};

void PrintTo(const RoundTrip& r, std::ostream* os) {
  *os << r.type << "_" << r.base;
}

class MergeRoundTrip : public ::testing::TestWithParam<RoundTrip> {};

TEST_P(MergeRoundTrip, MergedModelComputesTheAdaptedModelToFp16Rounding) {
  const RoundTrip p = GetParam();
  const fs::path d = fresh_test_dir(p.type + "_" + p.base);
  std::string model_yaml;
  std::string base_dir;
  if (p.base == "qwen2_f32") {
    base_dir = write_qwen2_base(d / "base");
    model_yaml = "  path: " + base_dir + "\n";
  } else {
    model_yaml = random_model_yaml(p.base == "random_tied" || p.base == "random_gemma");
    if (p.base == "random_qwen3") model_yaml += "  qk_norm: true\n  head_dim: 24\n";
    if (p.base == "random_window") model_yaml += "  sliding_window: 5\n";
    if (p.base == "random_gemma") {
      model_yaml +=
          "  mlp_activation: gelu_tanh\n  norm_one_plus_weight: true\n  scale_embeddings: true\n";
    }
    if (p.base == "random_llama3") {
      model_yaml += "  rope_scaling: llama3\n  rope_factor: 4\n  rope_original_max_seq_len: 16\n";
    }
  }
  const MergeCase c = train_merge_case(d, p.type, model_yaml, kCorpus);
  const fs::path merged = d / "merged";
  const CommandResult r = peftrun_cli(merge_args(c, merged));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("merged " + p.type + " adapter"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(12 modules)"), std::string::npos) << r.out;  // 6 targets x 2 layers

  const std::vector<float> adapted = eval_logits(c.config, "--adapter " + c.adapter, d / "a.st");
  const std::vector<float> merged_logits =
      eval_logits(c.config, "--set model.path=" + merged.string(), d / "m.st");
  const std::vector<float> base_logits = eval_logits(c.config, "", d / "b.st");
  const double err = relative_difference(merged_logits, adapted);
  const double moved = relative_difference(base_logits, adapted);
  // fp16 keeps 11 significant bits (relative rounding <= 2^-11 per weight).
  EXPECT_LT(err, 2e-3) << "merged vs base + adapter";
  // Not vacuous: the adapter changed the model far more than the merge's rounding did.
  EXPECT_GT(moved, 20 * err) << "base vs base + adapter";
  std::cout << p.type << " on " << p.base << ": merged vs adapted logits " << err
            << ", base vs adapted " << moved << "\n";

  // The folder describes itself: config.json with the dtype, the marker naming the inputs.
  std::ifstream cfg_in(merged / "config.json");
  const nlohmann::json cfg = nlohmann::json::parse(cfg_in);
  EXPECT_EQ(cfg["torch_dtype"], "float16");
  EXPECT_EQ(cfg["model_type"], p.base == "qwen2_f32"       ? "qwen2"
                               : p.base == "random_qwen3"  ? "qwen3"
                               : p.base == "random_gemma"  ? "gemma"
                               : p.base == "random_window" ? "mistral"
                                                           : "llama");
  if (p.base == "random_window") {
    EXPECT_EQ(cfg["sliding_window"], 5);
  }
  if (p.base != "qwen2_f32") {
    EXPECT_EQ(cfg["hidden_act"], p.base == "random_gemma" ? "gelu_pytorch_tanh" : "silu");
  }
  if (p.base != "qwen2_f32") {
    EXPECT_EQ(cfg["head_dim"], p.base == "random_qwen3" ? 24 : 16);
  }
  EXPECT_EQ(cfg["tie_word_embeddings"], p.base == "random_tied" || p.base == "random_gemma");
  // A random base's config.json is written from the model's shape, RoPE scaling included (a
  // base from disk keeps its own config.json).
  if (p.base == "random_llama3") {
    EXPECT_EQ(cfg["rope_scaling"],
              nlohmann::json::parse("{\"rope_type\": \"llama3\", \"factor\": 4.0, "
                                    "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                                    "\"original_max_position_embeddings\": 16}"));
  } else if (p.base != "qwen2_f32") {
    EXPECT_TRUE(cfg["rope_scaling"].is_null());
  }
  std::ifstream marker_in(merged / "peftrun_merge.json");
  const nlohmann::json marker = nlohmann::json::parse(marker_in);
  EXPECT_EQ(marker["adapter_type"], p.type);
  EXPECT_EQ(marker["merged_modules"], 12);
  SafetensorsReader st((merged / "model.safetensors").string());
  EXPECT_EQ(st.contains("lm_head.weight"), p.base != "random_tied" && p.base != "random_gemma");
  EXPECT_EQ(st.metadata().at("format"), "pt");

  if (p.base != "qwen2_f32") {
    if (!HasFailure()) fs::remove_all(d);
    return;
  }
  // fp32 source: every tensor nobody adapted is the source rounded once to fp16; the adapted
  // projections are not.
  SafetensorsReader src(base_dir + "/model.safetensors");
  EXPECT_EQ(st.names(), src.names());
  // AdaLoRA's global budget may prune every triplet of a module: that weight stays the base's.
  std::ifstream adapter_cfg_in(c.adapter + "/adapter_config.json");
  const nlohmann::json adapter_cfg = nlohmann::json::parse(adapter_cfg_in);
  auto fully_pruned = [&](const std::string& weight) {
    if (p.type != "adalora") return false;
    const std::string key = weight.substr(0, weight.size() - 7) + ".lora_E";  // "...q_proj"
    const auto& mask = adapter_cfg["rank_pattern"].at(key);
    return std::none_of(mask.begin(), mask.end(),
                        [](const nlohmann::json& b) { return b.get<bool>(); });
  };
  int adapted_tensors = 0;
  for (const std::string& name : src.names()) {
    const std::vector<float> from = src.read_tensor_f32(name);
    const std::vector<std::uint8_t> raw = st.read_tensor(name);
    ASSERT_EQ(st.info(name).dtype, TensorDType::kF16) << name;
    std::vector<half_bits> got(from.size());
    std::memcpy(got.data(), raw.data(), raw.size());
    std::vector<half_bits> rounded(from.size());
    for (std::size_t i = 0; i < from.size(); ++i) rounded[i] = float_to_half(from[i]);
    const bool is_adapted =
        name.find("_proj.weight") != std::string::npos && name.find("up_proj") == std::string::npos;
    if (is_adapted && !fully_pruned(name)) {
      EXPECT_NE(got, rounded) << name << " should hold the merged weight";
      ++adapted_tensors;
    } else {
      EXPECT_EQ(got, rounded) << name << " should be the base's, rounded once";
    }
  }
  EXPECT_GE(adapted_tensors, p.type == "adalora" ? 4 : 12);
  if (!HasFailure()) fs::remove_all(d);
}

INSTANTIATE_TEST_SUITE_P(
    AllTypes, MergeRoundTrip,
    ::testing::Values(RoundTrip{"lora", "random"}, RoundTrip{"dora", "random"},
                      RoundTrip{"adalora", "random"}, RoundTrip{"lora", "random_tied"},
                      RoundTrip{"dora", "random_tied"}, RoundTrip{"adalora", "random_tied"},
                      RoundTrip{"lora", "qwen2_f32"}, RoundTrip{"dora", "qwen2_f32"},
                      RoundTrip{"adalora", "qwen2_f32"}, RoundTrip{"lora", "random_llama3"},
                      RoundTrip{"dora", "random_qwen3"}, RoundTrip{"lora", "random_gemma"},
                      RoundTrip{"adalora", "random_window"}),
    [](const auto& p) { return p.param.type + "_" + p.param.base; });

// The golden base is an fp16 checkpoint transformers wrote: merged to fp16, every tensor nobody
// adapted keeps its exact bits, and the tokenizer and generation files come along.
TEST(Merge, Fp16CheckpointKeepsUnadaptedBitsAndCopiesTokenizerFiles) {
  const fs::path d = fresh_test_dir("golden");
  fs::copy(kSource + "/tests/golden/data/base", d / "base");
  {
    // Plus a buffer older checkpoints carry (not part of the model: left out, and said so).
    SafetensorsReader golden(kSource + "/tests/golden/data/base/model.safetensors");
    SafetensorsWriter w;
    w.set_metadata("format", "pt");
    for (const TensorInfo& t : golden.tensors()) {
      const std::vector<std::uint8_t> bytes = golden.read_tensor(t.name);
      w.add(t.name, t.dtype, t.shape, bytes.data(), bytes.size());
    }
    const std::vector<float> inv_freq(8, 0.5f);
    w.add_f32("model.layers.0.self_attn.rotary_emb.inv_freq", {8}, inv_freq);
    w.write((d / "base/model.safetensors").string());
  }
  std::ofstream(d / "base/tokenizer.json") << "{\"version\": \"1.0\", \"model\": {}}\n";
  std::ofstream(d / "base/tokenizer_config.json") << "{}\n";
  const std::string tok = testing_support::write_pattern_tokens(d / "train.tok", 128, 3000);
  const MergeCase c = train_merge_case(d, "dora", "  path: " + (d / "base").string() + "\n", tok);
  const CommandResult r = peftrun_cli(merge_args(c, d / "merged"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("not copied (not part of the model): "
                       "model.layers.0.self_attn.rotary_emb.inv_freq"),
            std::string::npos)
      << r.out;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
    std::ifstream a(d / "base" / f), b(d / "merged" / f);
    std::stringstream sa, sb;
    sa << a.rdbuf();
    sb << b.rdbuf();
    EXPECT_FALSE(sa.str().empty()) << f;
    EXPECT_EQ(sa.str(), sb.str()) << f << " should be copied as is";
  }
  SafetensorsReader src((d / "base/model.safetensors").string());
  SafetensorsReader st((d / "merged/model.safetensors").string());
  EXPECT_EQ(st.names().size() + 1, src.names().size());
  for (const std::string& name : st.names()) {
    const bool is_adapted =
        name.find("_proj.weight") != std::string::npos && name.find("up_proj") == std::string::npos;
    if (is_adapted) {
      EXPECT_NE(st.read_tensor(name), src.read_tensor(name)) << name;
    } else {
      EXPECT_EQ(st.read_tensor(name), src.read_tensor(name)) << name << " changed";
    }
  }
  // config.json is the checkpoint's own (transformers 5 writes "dtype"), dtype kept float16.
  std::ifstream cfg_in(d / "merged/config.json");
  const nlohmann::json cfg = nlohmann::json::parse(cfg_in);
  EXPECT_EQ(cfg["dtype"], "float16");
  EXPECT_EQ(cfg["transformers_version"], "5.24.0");
  if (!HasFailure()) fs::remove_all(d);
}

// Above --max-shard-size the weights are split into shards with an index that both peftrun
// and transformers read; the shards hold exactly the single file's tensors. bf16 output works
// too, to bf16's coarser rounding.
TEST(Merge, ShardedAndBf16OutputsLoadBack) {
  const fs::path d = fresh_test_dir("shards");
  const MergeCase c = train_merge_case(d, "lora", random_model_yaml(false), kCorpus);
  ASSERT_EQ(peftrun_cli(merge_args(c, d / "single")).exit_code, 0);
  const CommandResult r = peftrun_cli(merge_args(c, d / "sharded", "--max-shard-size 40kB"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_FALSE(fs::exists(d / "sharded/model.safetensors"));
  std::ifstream index_in(d / "sharded/model.safetensors.index.json");
  const nlohmann::json index = nlohmann::json::parse(index_in);
  SafetensorsReader single((d / "single/model.safetensors").string());
  EXPECT_EQ(index["weight_map"].size(), single.names().size());
  std::uint64_t total = 0;
  std::set<std::string> files;
  for (const std::string& name : single.names()) {
    const std::string file = index["weight_map"][name];
    files.insert(file);
    SafetensorsReader shard((d / "sharded" / file).string());
    EXPECT_EQ(shard.read_tensor(name), single.read_tensor(name)) << name;
    EXPECT_LE(shard.info(name).nbytes(), 40'000u);
    total += shard.info(name).nbytes();
  }
  EXPECT_GT(files.size(), 2u);
  EXPECT_EQ(*files.rbegin(), "model-0000" + std::to_string(files.size()) + "-of-0000" +
                                 std::to_string(files.size()) + ".safetensors");
  EXPECT_EQ(index["metadata"]["total_size"], total);
  const std::vector<float> from_single =
      eval_logits(c.config, "--set model.path=" + (d / "single").string(), d / "s.st");
  const std::vector<float> from_shards =
      eval_logits(c.config, "--set model.path=" + (d / "sharded").string(), d / "h.st");
  EXPECT_EQ(from_single, from_shards);

  ASSERT_EQ(peftrun_cli(merge_args(c, d / "bf16", "--dtype bf16")).exit_code, 0);
  std::ifstream cfg_in(d / "bf16/config.json");
  EXPECT_EQ(nlohmann::json::parse(cfg_in)["torch_dtype"], "bfloat16");
  SafetensorsReader bf((d / "bf16/model.safetensors").string());
  EXPECT_EQ(bf.info("model.layers.0.self_attn.q_proj.weight").dtype, TensorDType::kBF16);
  const std::vector<float> adapted = eval_logits(c.config, "--adapter " + c.adapter, d / "a.st");
  const std::vector<float> from_bf16 =
      eval_logits(c.config, "--set model.path=" + (d / "bf16").string(), d / "f.st");
  EXPECT_LT(relative_difference(from_bf16, adapted), 1.5e-2);  // bf16: 8 significant bits

  // A sharded folder is a base like any other: merging into it reads through its index.
  const CommandResult again =
      peftrun_cli(merge_args(c, d / "twice", "--set model.path=" + (d / "sharded").string()));
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_NE(again.out.find("into '" + (d / "sharded").string() + "'"), std::string::npos)
      << again.out;
  SafetensorsReader twice((d / "twice/model.safetensors").string());
  EXPECT_EQ(twice.names(), single.names());
  EXPECT_FALSE(fs::exists(d / "twice/model.safetensors.index.json"));
  EXPECT_EQ(twice.info("model.layers.0.self_attn.q_proj.weight").dtype, TensorDType::kF16);

  // Without --dtype the output follows the base: a bf16 base merges to bf16 (fp16 could
  // overflow it), said in the log; --dtype still overrides.
  const std::string on_bf16 = "--set model.path=" + (d / "bf16").string();
  const CommandResult auto_bf16 = peftrun_cli(merge_args(c, d / "from_bf16", on_bf16));
  ASSERT_EQ(auto_bf16.exit_code, 0) << auto_bf16.out;
  EXPECT_NE(auto_bf16.out.find("bf16, as the base"), std::string::npos) << auto_bf16.out;
  SafetensorsReader from_bf16_base((d / "from_bf16/model.safetensors").string());
  EXPECT_EQ(from_bf16_base.info("model.layers.0.mlp.down_proj.weight").dtype, TensorDType::kBF16);
  const CommandResult forced =
      peftrun_cli(merge_args(c, d / "forced_fp16", on_bf16 + " --dtype fp16"));
  ASSERT_EQ(forced.exit_code, 0) << forced.out;
  EXPECT_EQ(forced.out.find("as the base"), std::string::npos) << forced.out;
  SafetensorsReader forced_fp16((d / "forced_fp16/model.safetensors").string());
  EXPECT_EQ(forced_fp16.info("model.layers.0.mlp.down_proj.weight").dtype, TensorDType::kF16);
  if (!HasFailure()) fs::remove_all(d);
}

// A merge killed mid-write leaves `.OUT.tmp-HOST-PID` beside --out; the next merge into the same
// folder removes it when that process of this machine is gone, and says so. Another machine's
// (a shared filesystem) and a live process's are left alone.
TEST(Merge, LeftoversOfKilledMergesOnThisMachineAreRemoved) {
  const fs::path d = fresh_test_dir("leftovers");
  const MergeCase c = train_merge_case(d, "lora", random_model_yaml(false), kCorpus);
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  const std::string mine = std::string(".merged.tmp-") + host + "-";
  const fs::path dead = d / (mine + "999999999");  // above any pid_max: never a live process
  const fs::path live = d / (mine + std::to_string(::getpid()));
  const fs::path other_host = d / ".merged.tmp-some-other-node-12";
  for (const fs::path& p : {dead, live, other_host}) {
    fs::create_directories(p);
    std::ofstream(p / "model.safetensors") << "half written";
  }
  const CommandResult r = peftrun_cli(merge_args(c, d / "merged"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("removed " + dead.string() + " (left by an interrupted merge)"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live / "model.safetensors"));
  EXPECT_TRUE(fs::exists(other_host / "model.safetensors"));
  EXPECT_TRUE(fs::exists(d / "merged/model.safetensors"));
  if (!HasFailure()) fs::remove_all(d);
}

TEST(MergeByteSize, ParsesTransformersStyleSizes) {
  EXPECT_EQ(parse_byte_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(parse_byte_size("500MB"), 500'000'000u);
  EXPECT_EQ(parse_byte_size("40kB"), 40'000u);
  EXPECT_EQ(parse_byte_size("2GiB"), 2u << 30);
  EXPECT_EQ(parse_byte_size("64MiB"), 64u << 20);
  EXPECT_EQ(parse_byte_size("1.5GB"), 1'500'000'000u);
  EXPECT_EQ(parse_byte_size("1024"), 1024u);
  for (const char* bad : {"", "GB", "-1GB", "0", "5 GB", "5TB", "five", "1e400"}) {
    EXPECT_THROW(parse_byte_size(bad), std::invalid_argument) << bad;
  }
}

// ---------------------------------------------------------------------------------------------
// Refusals: nothing is written, nothing existing is touched
// ---------------------------------------------------------------------------------------------

class MergeErrors : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fresh_test_dir("errors");
    case_ = train_merge_case(dir_, "lora", random_model_yaml(false), kCorpus);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path dir_;
  static MergeCase case_;
};
fs::path MergeErrors::dir_;
MergeCase MergeErrors::case_;

std::vector<std::string> listing(const fs::path& d) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(d)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST_F(MergeErrors, ExistingNonEmptyOutNeedsForceButAPreviousMergeIsReplaced) {
  const fs::path out = dir_ / "existing";
  fs::create_directories(out);
  std::ofstream(out / "notes.txt") << "mine";
  CommandResult r = peftrun_cli(merge_args(case_, out));
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find(out.string() + "' already exists, is not empty"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("pass --force to replace it"), std::string::npos) << r.out;
  EXPECT_EQ(listing(out), std::vector<std::string>{"notes.txt"});

  r = peftrun_cli(merge_args(case_, out, "--force"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("replaced " + out.string()), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out / "notes.txt"));
  // Now a merge output: merging again replaces it without --force, and leaves no sibling.
  r = peftrun_cli(merge_args(case_, out));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(listing(out),
            (std::vector<std::string>{"config.json", "model.safetensors", "peftrun_merge.json"}));
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().rfind(".existing", 0), std::string::npos)
        << "left behind: " << e.path();
  }
  // An empty folder is simply used.
  fs::create_directories(dir_ / "empty");
  EXPECT_EQ(peftrun_cli(merge_args(case_, dir_ / "empty")).exit_code, 0);
}

TEST_F(MergeErrors, OutThatHoldsAnInputOrIsAFileIsRefusedEvenWithForce) {
  CommandResult r = peftrun_cli(merge_args(case_, dir_, "--force"));
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("holds the merge's input --adapter"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(case_.adapter + "/adapter_model.safetensors"));
  std::ofstream(dir_ / "a_file") << "x";
  r = peftrun_cli(merge_args(case_, dir_ / "a_file", "--force"));
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("exists and is not a folder"), std::string::npos) << r.out;
}

TEST_F(MergeErrors, MismatchedAdapterIsRefusedNamingTheField) {
  const fs::path out = dir_ / "never";
  const struct {
    std::string set, message;
  } cases[] = {
      {"adapter.r=2", "adapter_config.json: r is 4 but adapter.r is 2"},
      {"adapter.type=dora", "use_dora is false but adapter.type is dora"},
      {"adapter.target_modules=[q_proj]", "target_modules is ["},
      {"adapter.alpha=3", "lora_alpha is 8 but adapter.alpha is 3"},
  };
  for (const auto& m : cases) {
    const CommandResult r = peftrun_cli(merge_args(case_, out, "--set " + m.set));
    EXPECT_EQ(r.exit_code, 1) << m.set << ": " << r.out;
    EXPECT_NE(r.out.find(m.message), std::string::npos) << m.set << ": " << r.out;
    EXPECT_FALSE(fs::exists(out)) << m.set;
  }
  CommandResult r = peftrun_cli("merge " + case_.config + " --out " + out.string());
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("pass --adapter DIR"), std::string::npos) << r.out;
  r = peftrun_cli(merge_args(case_, out, "--adapter " + (dir_ / "nothing").string()));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("nothing/adapter_config.json"), std::string::npos) << r.out;
}

TEST_F(MergeErrors, UnwritableOutIsAClearErrorAndLeavesNothing) {
  std::ofstream(dir_ / "plain_file") << "x";
  const fs::path out = dir_ / "plain_file" / "merged";
  CommandResult r = peftrun_cli(merge_args(case_, out));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("Not a directory"), std::string::npos) << r.out;
  if (::geteuid() != 0) {  // root ignores permissions
    fs::create_directories(dir_ / "read_only");
    fs::permissions(dir_ / "read_only", fs::perms::owner_read | fs::perms::owner_exec);
    r = peftrun_cli(merge_args(case_, dir_ / "read_only/merged"));
    fs::permissions(dir_ / "read_only", fs::perms::owner_all);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("Permission denied"), std::string::npos) << r.out;
    EXPECT_TRUE(fs::is_empty(dir_ / "read_only"));
  }
}

// A merge that fails after it started writing (here: a merged weight beyond fp16's range)
// leaves the previous output exactly as it was and no temporary folder behind.
TEST_F(MergeErrors, FailureHalfWayLeavesThePreviousOutputIntact) {
  const fs::path out = dir_ / "kept";
  ASSERT_EQ(peftrun_cli(merge_args(case_, out)).exit_code, 0);
  const std::vector<std::uint8_t> before =
      SafetensorsReader((out / "model.safetensors").string()).read_tensor("lm_head.weight");

  // The same adapter with one lora_B scaled up so far that W + s B A overflows fp16.
  const fs::path big = dir_ / "big_adapter";
  fs::create_directories(big);
  fs::copy_file(case_.adapter + "/adapter_config.json", big / "adapter_config.json");
  SafetensorsReader src(case_.adapter + "/adapter_model.safetensors");
  SafetensorsWriter w;
  for (const TensorInfo& t : src.tensors()) {
    std::vector<float> v = src.read_tensor_f32(t.name);
    if (t.name.find("layers.1.mlp.down_proj.lora_B") != std::string::npos) {
      for (float& x : v) x = 1e6f;
    }
    w.add_f32(t.name, t.shape, v);
  }
  w.write((big / "adapter_model.safetensors").string());

  const CommandResult r = peftrun_cli("merge " + case_.config + " --adapter " + big.string() +
                                      " --out " + out.string());
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("merged tensor 'model.layers.1.mlp.down_proj.weight'"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("not finite in fp16"), std::string::npos) << r.out;
  EXPECT_EQ(SafetensorsReader((out / "model.safetensors").string()).read_tensor("lm_head.weight"),
            before);
  std::ifstream marker_in(out / "peftrun_merge.json");
  EXPECT_EQ(nlohmann::json::parse(marker_in)["adapter"], case_.adapter);
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().rfind(".kept", 0), std::string::npos)
        << "left behind: " << e.path();
  }
}

TEST_F(MergeErrors, BadCommandLinesAreUsageErrors) {
  const std::string base = "merge " + case_.config + " --adapter " + case_.adapter;
  const struct {
    std::string args, message;
  } cases[] = {
      {base, "--out DIR is required"},
      {base + " --out x --dtype fp32", "--dtype 'fp32': expected fp16 or bf16"},
      {base + " --out x --max-shard-size 5XB", "'5XB' is not a size"},
      {base + " --out x --max-shard-size -1", "'-1' is not a size"},
      {base + " --out x --frobnicate", "unknown option '--frobnicate'"},
      {"merge --adapter a --out x", "expected exactly one CONFIG.yaml, got 0"},
      {base + " --out x --set adapter.r=zero", "adapter.r"},
  };
  for (const auto& c : cases) {
    const CommandResult r = peftrun_cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << ": " << r.out;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << c.args << ": " << r.out;
  }
  EXPECT_FALSE(fs::exists("x"));
}

}  // namespace
}  // namespace peftrun
