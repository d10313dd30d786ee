// load_hf_checkpoint_shard: every rank's slice-only read of an HF checkpoint is bit-identical to
// the whole load followed by BaseWeights::shard, for F16/BF16/F32, a two-file index and Qwen2
// biases, and world sizes 2-4; a rank reads exactly the bytes of its slices plus the replicated
// tensors; value checks apply only to what a rank reads while shape checks apply everywhere; and
// DoRA's magnitude init from a sharded base (one all-gathered layer at a time) equals the
// replicated one.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "configs/config.h"
#include "kernels/half.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/io/safetensors.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/hf_checkpoint.h"
#include "runtime/train/model_setup.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;

// Qwen2 (q/k/v biases), untied, with layer buffers (1984 elements) that 3 and 7 do not divide.
ModelConfig qwen2_shape() {
  ModelConfig m;
  m.dim = 16;
  m.n_layers = 3;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn_dim = 24;
  m.vocab_size = 32;
  m.max_seq_len = 16;
  m.rope_theta = 10000.0;
  m.norm_eps = 1e-6;
  m.tie_embeddings = false;
  m.proj_bias_mask = bias_bit(Proj::kQ) | bias_bit(Proj::kK) | bias_bit(Proj::kV);
  return m;
}

// HF name -> (shape, values) of every tensor a Qwen2 checkpoint of shape `m` has.
using Tensors = std::map<std::string, std::pair<std::vector<std::int64_t>, std::vector<float>>>;

Tensors random_tensors(const ModelConfig& m, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  Tensors out;
  auto make = [&](const std::string& name, std::vector<std::int64_t> shape) {
    std::int64_t n = 1;
    for (const std::int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) x = normal(rng);
    out[name] = {std::move(shape), std::move(v)};
  };
  make("model.embed_tokens.weight", {m.vocab_size, m.dim});
  make("model.norm.weight", {m.dim});
  make("lm_head.weight", {m.vocab_size, m.dim});
  for (int l = 0; l < m.n_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    make(prefix + "input_layernorm.weight", {m.dim});
    make(prefix + "post_attention_layernorm.weight", {m.dim});
    for (int p = 0; p < int(Proj::kCount); ++p) {
      const ProjShape s = proj_shape(m, Proj(p));
      make(hf_proj_weight_name(l, Proj(p)), {s.out, s.in});
      if (m.proj_bias_mask & bias_bit(Proj(p))) make(hf_proj_bias_name(l, Proj(p)), {s.out});
    }
  }
  return out;
}

// F32 as is; F16/BF16 by truncating or rounding the float bits, which is all a test file needs.
std::vector<std::uint8_t> encode(TensorDType dtype, const std::vector<float>& values) {
  std::vector<std::uint8_t> bytes(values.size() * dtype_size(dtype));
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (dtype == TensorDType::kF32) {
      std::memcpy(&bytes[4 * i], &values[i], 4);
      continue;
    }
    std::uint32_t bits;
    std::memcpy(&bits, &values[i], 4);
    const std::uint16_t h = dtype == TensorDType::kF16 ? float_to_half(values[i])
                                                       : static_cast<std::uint16_t>(bits >> 16);
    std::memcpy(&bytes[2 * i], &h, 2);
  }
  return bytes;
}

class ShardedCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "peftrun_hf_shard_XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    root_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // A checkpoint folder `name`: config.json plus the tensors as `dtype`, in model.safetensors,
  // or (split) in two index shards: layer 0 and the embedding in one, the rest in the other.
  std::string write(const std::string& name, const ModelConfig& m, const Tensors& tensors,
                    TensorDType dtype, bool split) {
    const fs::path dir = root_ / name;
    fs::create_directories(dir);
    std::ofstream(dir / "config.json")
        << "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", "
        << "\"hidden_act\": \"silu\", \"hidden_size\": " << m.dim
        << ", \"intermediate_size\": " << m.ffn_dim
        << ", \"max_position_embeddings\": " << m.max_seq_len
        << ", \"num_attention_heads\": " << m.n_heads << ", \"num_hidden_layers\": " << m.n_layers
        << ", \"num_key_value_heads\": " << m.n_kv_heads << ", \"rms_norm_eps\": 1e-06"
        << ", \"rope_theta\": 10000.0, \"tie_word_embeddings\": false"
        << ", \"vocab_size\": " << m.vocab_size << "}\n";
    std::map<std::string, SafetensorsWriter> files;
    std::string weight_map;
    for (const auto& [tensor, t] : tensors) {
      const bool first = tensor.starts_with("model.layers.0.") || tensor.starts_with("model.embed");
      const std::string file = !split  ? "model.safetensors"
                               : first ? "model-00001-of-00002.safetensors"
                                       : "model-00002-of-00002.safetensors";
      const std::vector<std::uint8_t> bytes = encode(dtype, t.second);
      files[file].add(tensor, dtype, t.first, bytes.data(), bytes.size());
      weight_map += (weight_map.empty() ? "\"" : ", \"") + tensor + "\": \"" + file + "\"";
    }
    for (const auto& [file, w] : files) w.write((dir / file).string());
    if (split) {
      std::ofstream(dir / "model.safetensors.index.json")
          << "{\"metadata\": {}, \"weight_map\": {" << weight_map << "}}\n";
    }
    return dir.string();
  }

  fs::path root_;
};

void expect_same(const BaseWeights& want, const BaseWeights& got, const std::string& where) {
  ASSERT_EQ(got.sharded(), want.sharded()) << where;
  ASSERT_EQ(got.shard_world(), want.shard_world()) << where;
  ASSERT_EQ(got.shard_elems(), want.shard_elems()) << where;
  ASSERT_EQ(got.offsets().total, want.offsets().total) << where;
  ASSERT_EQ(got.biases(), want.biases()) << where;
  ASSERT_EQ(got.bytes(), want.bytes()) << where;
  const ModelConfig& m = want.shape();
  const std::size_t slice = want.sharded() ? want.shard_elems() : want.offsets().total;
  for (int l = 0; l < m.n_layers; ++l) {
    ASSERT_EQ(std::memcmp(got.layer_shard(l), want.layer_shard(l), slice * sizeof(half_bits)), 0)
        << where << ": layer " << l;
  }
  const std::size_t table = std::size_t(m.vocab_size) * m.dim * sizeof(half_bits);
  EXPECT_EQ(std::memcmp(got.embedding(), want.embedding(), table), 0) << where;
  EXPECT_EQ(std::memcmp(got.lm_head(), want.lm_head(), table), 0) << where;
  EXPECT_EQ(std::memcmp(got.final_norm(), want.final_norm(), m.dim * sizeof(half_bits)), 0)
      << where;
}

TEST_F(ShardedCheckpoint, EveryRankEqualsTheWholeLoadSliced) {
  const ModelConfig m = qwen2_shape();
  const Tensors tensors = random_tensors(m, 11);
  struct Variant {
    const char* name;
    TensorDType dtype;
    bool split;
  };
  for (const Variant v :
       {Variant{"f16", TensorDType::kF16, false}, Variant{"bf16", TensorDType::kBF16, false},
        Variant{"f32", TensorDType::kF32, false}, Variant{"bf16_index", TensorDType::kBF16, true},
        Variant{"f32_index", TensorDType::kF32, true}}) {
    const std::string dir = write(v.name, m, tensors, v.dtype, v.split);
    const std::size_t elem = dtype_size(v.dtype);
    const std::size_t total = LayerOffsets::for_model(m, m.proj_bias_mask).total;
    const std::size_t replicated = (2 * std::size_t(m.vocab_size) + 1) * m.dim;
    // world 1 is the whole load itself.
    expect_same(load_hf_checkpoint(dir, m), load_hf_checkpoint_shard(dir, m, 0, 1), v.name);
    for (const int world : {2, 3, 4, 7}) {
      std::uint64_t all_ranks = 0;
      for (int rank = 0; rank < world; ++rank) {
        const std::string where =
            std::string(v.name) + " rank " + std::to_string(rank) + "/" + std::to_string(world);
        BaseWeights want = load_hf_checkpoint(dir, m);
        want.shard(rank, world);
        HfReadStats stats;
        const BaseWeights got = load_hf_checkpoint_shard(dir, m, rank, world, &stats);
        expect_same(want, got, where);
        // Exactly this rank's elements of each layer plus the replicated tensors, nothing else:
        // no rank ever reads (or holds) another rank's part of a layer.
        const std::size_t s = got.shard_elems();
        const std::size_t begin = std::min(rank * s, total), end = std::min(begin + s, total);
        EXPECT_EQ(stats.tensor_bytes_read, (m.n_layers * (end - begin) + replicated) * elem)
            << where;
        all_ranks += stats.tensor_bytes_read - replicated * elem;
      }
      EXPECT_EQ(all_ranks, std::uint64_t(m.n_layers) * total * elem) << v.name << " " << world;
    }
  }
}

TEST_F(ShardedCheckpoint, RanksOutsideTheWorldAreRefused) {
  const ModelConfig m = qwen2_shape();
  const std::string dir = write("f16", m, random_tensors(m, 1), TensorDType::kF16, false);
  EXPECT_THROW(load_hf_checkpoint_shard(dir, m, 2, 2), std::invalid_argument);
  EXPECT_THROW(load_hf_checkpoint_shard(dir, m, -1, 2), std::invalid_argument);
  EXPECT_THROW(load_hf_checkpoint_shard(dir, m, 0, 0), std::invalid_argument);
}

std::string load_error(const std::string& dir, const ModelConfig& m, int rank, int world) {
  try {
    load_hf_checkpoint_shard(dir, m, rank, world);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// Shapes come from the headers, which every rank reads: a wrong shape in a tensor only rank 1
// reads fails on rank 0 too, with the same message. Values are checked only where they are read:
// an inf that lies in rank 1's slice fails rank 1, naming the tensor and its element index in
// the tensor, while rank 0 loads fine.
TEST_F(ShardedCheckpoint, ShapesAreCheckedOnEveryRankValuesOnlyWhereRead) {
  const ModelConfig m = qwen2_shape();
  const std::string last = "model.layers.2.mlp.down_proj.weight";  // at the end of the layer
  Tensors bad_shape = random_tensors(m, 5);
  bad_shape[last].first = {m.ffn_dim, m.dim};  // transposed: same size, wrong shape
  const std::string shape_dir = write("shape", m, bad_shape, TensorDType::kF32, false);
  const std::string e0 = load_error(shape_dir, m, 0, 2), e1 = load_error(shape_dir, m, 1, 2);
  EXPECT_NE(e0.find("'" + last + "' has shape [24, 16], expected [16, 24]"), std::string::npos)
      << e0;
  EXPECT_EQ(e0, e1);

  Tensors inf = random_tensors(m, 5);
  inf[last].second[100] = std::numeric_limits<float>::infinity();
  const std::string inf_dir = write("inf", m, inf, TensorDType::kF32, false);
  EXPECT_EQ(load_error(inf_dir, m, 0, 2), "");
  const std::string e = load_error(inf_dir, m, 1, 2);
  EXPECT_NE(e.find("'" + last + "' has a non-finite value (inf) at element 100"), std::string::npos)
      << e;
  EXPECT_EQ(load_error(inf_dir, m, 0, 1), e) << "the whole load must report it the same way";

  Tensors missing = random_tensors(m, 5);
  missing.erase(last);
  const std::string missing_dir = write("missing", m, missing, TensorDType::kF16, true);
  EXPECT_NE(load_error(missing_dir, m, 0, 3).find("missing tensor '" + last + "'"),
            std::string::npos);
}

// Serves all_gather from every rank's shards held in this one process: enough to run
// initial_params for rank `rank` of a sharded base without launching ranks.
class SlicesCommunicator final : public Communicator {
 public:
  SlicesCommunicator(const std::vector<BaseWeights>& ranks, int rank)
      : ranks_(ranks), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return int(ranks_.size()); }
  const char* backend() const override { return "test"; }
  void all_reduce_sum(float*, std::size_t) override { unexpected(); }
  void all_reduce_sum(double*, std::size_t) override { unexpected(); }
  void all_reduce_max(double*, std::size_t) override { unexpected(); }
  void broadcast(void*, std::size_t, int) override { unexpected(); }
  void barrier() override { unexpected(); }
  void all_gather(const void* in, void* out, std::size_t bytes) override {
    const BaseWeights& mine = ranks_[rank_];
    for (int l = 0; l < mine.shape().n_layers; ++l) {
      if (in != mine.layer_shard(l)) continue;
      for (std::size_t r = 0; r < ranks_.size(); ++r) {
        std::memcpy(static_cast<char*>(out) + r * bytes, ranks_[r].layer_shard(l), bytes);
      }
      ++gathers;
      return;
    }
    FAIL() << "all_gather of something other than a layer shard";
  }
  int gathers = 0;

 private:
  [[noreturn]] static void unexpected() { throw std::logic_error("unexpected collective"); }
  const std::vector<BaseWeights>& ranks_;
  int rank_;
};

TEST_F(ShardedCheckpoint, DoraMagnitudeFromAShardedBaseEqualsTheReplicatedOne) {
  Config cfg;
  cfg.model = qwen2_shape();
  cfg.adapter.type = AdapterType::kDora;
  cfg.adapter.target_modules = {"q_proj", "o_proj", "down_proj"};
  cfg.model.path = write("f32", cfg.model, random_tensors(cfg.model, 7), TensorDType::kF32, false);
  const AdapterLayout layout = AdapterLayout::plan(cfg.model, cfg.adapter);
  const std::vector<float> want = initial_params(cfg, load_base(cfg), layout, "", nullptr);
  for (const int world : {2, 3}) {
    std::vector<BaseWeights> ranks;
    for (int r = 0; r < world; ++r) ranks.push_back(load_base(cfg, r, world, true));
    for (int r = 0; r < world; ++r) {
      ASSERT_TRUE(ranks[r].sharded());
      SlicesCommunicator comm(ranks, r);
      const std::vector<float> got = initial_params(cfg, ranks[r], layout, "", nullptr, &comm);
      ASSERT_EQ(got.size(), want.size());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << "rank " << r << "/" << world;
      EXPECT_EQ(comm.gathers, cfg.model.n_layers) << "one gather per layer";
    }
    EXPECT_THROW(initial_params(cfg, ranks[0], layout, "", nullptr), std::logic_error)
        << "a sharded base without a communicator";
  }
}

}  // namespace
}  // namespace peftrun
