// Loading Hugging Face checkpoints as the frozen fp16 base: tiny synthetic checkpoints written
// here with SafetensorsWriter (single file in F32/F16/BF16, sharded with an index, tied, with
// Qwen2-style and Llama attention/MLP biases), each refusal naming the file and the tensor, and
// a finite-difference gradient check in double of a whole biased model built by the loader.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "configs/config.h"
#include "kernels/half.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/io/safetensors.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/hf_checkpoint.h"
#include "runtime/model/transformer.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "peftrun_hf_ckpt_test_XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string dir(const std::string& name) const {
    fs::create_directories(path_ / name);
    return (path_ / name).string();
  }

 private:
  fs::path path_;
};

// ---------------------------------------------------------------------------------------------
// Synthetic checkpoints
// ---------------------------------------------------------------------------------------------

std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even (no NaN in these tests)
  return static_cast<std::uint16_t>(bits >> 16);
}

float bf16_to_float(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// The fp16 bits the loader must produce for value `v` stored as `dtype`.
half_bits expected_half(TensorDType dtype, float v) {
  return dtype == TensorDType::kBF16 ? float_to_half(bf16_to_float(float_to_bf16(v)))
                                     : float_to_half(v);
}

std::vector<std::uint8_t> encode(TensorDType dtype, const std::vector<float>& values) {
  std::vector<std::uint8_t> bytes(values.size() * dtype_size(dtype));
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (dtype == TensorDType::kF32) {
      std::memcpy(&bytes[4 * i], &values[i], 4);
    } else {
      const std::uint16_t h =
          dtype == TensorDType::kF16 ? float_to_half(values[i]) : float_to_bf16(values[i]);
      std::memcpy(&bytes[2 * i], &h, 2);
    }
  }
  return bytes;
}

struct Tensor {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

struct Checkpoint {
  ModelConfig m;  // proj_bias_mask included
  std::string model_type = "llama";
  std::string extra_json;                 // more "key": value pairs for config.json
  std::map<std::string, Tensor> tensors;  // HF name -> tensor
};

// The model every test uses unless it says otherwise (the shape of model_gradcheck_test).
ModelConfig tiny_shape(bool tie, unsigned biases) {
  ModelConfig m;
  m.dim = 16;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn_dim = 24;
  m.vocab_size = 32;
  m.max_seq_len = 16;
  m.rope_theta = 500.0;
  m.norm_eps = 1e-5;
  m.tie_embeddings = tie;
  m.proj_bias_mask = biases;
  return m;
}

constexpr unsigned kQkv = bias_bit(Proj::kQ) | bias_bit(Proj::kK) | bias_bit(Proj::kV);
constexpr unsigned kAllSeven = (1u << int(Proj::kCount)) - 1;

const char* const kProjNames[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                  "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                  "mlp.down_proj"};

// Random weights with realistic scales. `exact` makes every value fp16-representable, so F32
// and F16 files hold the same numbers; otherwise values need rounding (and a few are fp16
// subnormals, where rounding is easiest to get wrong).
Checkpoint make_checkpoint(const ModelConfig& m, std::uint64_t seed, bool exact = true) {
  Checkpoint c;
  c.m = m;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto fill = [&](const std::string& name, std::vector<std::int64_t> shape, double mean,
                  double std_dev) {
    Tensor t;
    t.shape = shape;
    std::size_t n = 1;
    for (auto d : shape) n *= std::size_t(d);
    for (std::size_t i = 0; i < n; ++i) {
      float v = static_cast<float>(mean + std_dev * normal(rng));
      if (!exact && i % 17 == 3) v = static_cast<float>(3e-6 * normal(rng));
      t.values.push_back(exact ? half_to_float(float_to_half(v)) : v);
    }
    c.tensors[name] = std::move(t);
  };
  const std::int64_t dim = m.dim, vocab = m.vocab_size;
  fill("model.embed_tokens.weight", {vocab, dim}, 0.0, 1.0);
  fill("model.norm.weight", {dim}, 1.0, 0.1);
  if (!m.tie_embeddings) fill("lm_head.weight", {vocab, dim}, 0.0, 1.0 / std::sqrt(double(dim)));
  for (int l = 0; l < m.n_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    fill(prefix + "input_layernorm.weight", {dim}, 1.0, 0.1);
    fill(prefix + "post_attention_layernorm.weight", {dim}, 1.0, 0.1);
    for (int p = 0; p < int(Proj::kCount); ++p) {
      const ProjShape s = proj_shape(m, Proj(p));
      fill(prefix + kProjNames[p] + ".weight", {s.out, s.in}, 0.0, 1.0 / std::sqrt(double(s.in)));
      if (m.proj_bias_mask & bias_bit(Proj(p))) {
        fill(prefix + kProjNames[p] + ".bias", {s.out}, 0.0, 0.3);
      }
    }
  }
  // The config.json that gives these biases: Qwen2 always has q/k/v ones, Llama all seven with
  // attention_bias and mlp_bias.
  if (m.proj_bias_mask == kQkv) c.model_type = "qwen2";
  if (m.proj_bias_mask == kAllSeven)
    c.extra_json = ", \"attention_bias\": true, \"mlp_bias\": true";
  return c;
}

std::string number(double v) {
  char buf[64];
  return std::string(buf, std::to_chars(buf, buf + sizeof(buf), v).ptr);
}

void write_config_json(const std::string& dir, const Checkpoint& c) {
  const ModelConfig& m = c.m;
  write_text(fs::path(dir) / "config.json",
             "{\"architectures\": [\"X\"], \"model_type\": \"" + c.model_type +
                 "\", \"hidden_act\": \"silu\", \"hidden_size\": " + std::to_string(m.dim) +
                 ", \"intermediate_size\": " + std::to_string(m.ffn_dim) +
                 ", \"max_position_embeddings\": " + std::to_string(m.max_seq_len) +
                 ", \"num_attention_heads\": " + std::to_string(m.n_heads) +
                 ", \"num_hidden_layers\": " + std::to_string(m.n_layers) +
                 ", \"num_key_value_heads\": " + std::to_string(m.n_kv_heads) +
                 ", \"rms_norm_eps\": " + number(m.norm_eps) +
                 ", \"rope_theta\": " + number(m.rope_theta) +
                 ", \"tie_word_embeddings\": " + (m.tie_embeddings ? "true" : "false") +
                 ", \"vocab_size\": " + std::to_string(m.vocab_size) + c.extra_json + "}\n");
}

void add(SafetensorsWriter& w, const std::string& name, const Tensor& t, TensorDType dtype) {
  const std::vector<std::uint8_t> bytes = encode(dtype, t.values);
  w.add(name, dtype, t.shape, bytes.data(), bytes.size());
}

// config.json + model.safetensors with every tensor stored as `dtype`.
std::string write_single(const ScratchDir& scratch, const std::string& name, const Checkpoint& c,
                         TensorDType dtype) {
  const std::string dir = scratch.dir(name);
  write_config_json(dir, c);
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const auto& [tensor, t] : c.tensors) add(w, tensor, t, dtype);
  w.write(dir + "/model.safetensors");
  return dir;
}

// config.json + an index over shards; `shard_of` picks each tensor's shard file name.
std::string write_sharded(const ScratchDir& scratch, const std::string& name, const Checkpoint& c,
                          TensorDType dtype,
                          const std::function<std::string(const std::string&)>& shard_of) {
  const std::string dir = scratch.dir(name);
  write_config_json(dir, c);
  std::map<std::string, SafetensorsWriter> shards;
  std::string map;
  for (const auto& [tensor, t] : c.tensors) {
    const std::string file = shard_of(tensor);
    add(shards[file], tensor, t, dtype);
    map += (map.empty() ? "" : ", ") + ("\"" + tensor + "\": \"" + file + "\"");
  }
  for (const auto& [file, w] : shards) w.write(dir + "/" + file);
  write_text(fs::path(dir) / "model.safetensors.index.json",
             "{\"metadata\": {\"total_size\": 1234}, \"weight_map\": {" + map + "}}\n");
  return dir;
}

// The base assembled straight from the tensors with from_parts, for comparison with the loader.
// Names are spelled out here (not taken from hf_proj_weight_name) so a naming slip in the loader
// cannot cancel out.
BaseWeights assemble(const Checkpoint& c, TensorDType dtype) {
  const ModelConfig& m = c.m;
  const LayerOffsets off = LayerOffsets::for_model(m, m.proj_bias_mask);
  auto put = [&](const std::string& name, half_bits* dst) {
    const Tensor& t = c.tensors.at(name);
    for (std::size_t i = 0; i < t.values.size(); ++i) dst[i] = expected_half(dtype, t.values[i]);
  };
  std::vector<std::vector<half_bits>> layers(m.n_layers);
  for (int l = 0; l < m.n_layers; ++l) {
    auto& buf = layers[l];
    buf.assign(off.total, 0);
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    put(prefix + "input_layernorm.weight", buf.data() + off.attn_norm);
    put(prefix + "post_attention_layernorm.weight", buf.data() + off.mlp_norm);
    for (int p = 0; p < int(Proj::kCount); ++p) {
      put(prefix + kProjNames[p] + ".weight", buf.data() + off.proj[p]);
      if (off.bias[p] != kNoOffset) put(prefix + kProjNames[p] + ".bias", buf.data() + off.bias[p]);
    }
  }
  std::vector<half_bits> embedding(std::size_t(m.vocab_size) * m.dim), norm(m.dim), lm_head;
  put("model.embed_tokens.weight", embedding.data());
  put("model.norm.weight", norm.data());
  if (!m.tie_embeddings) {
    lm_head.resize(embedding.size());
    put("lm_head.weight", lm_head.data());
  }
  return BaseWeights::from_parts(m, m.proj_bias_mask, std::move(layers), std::move(embedding),
                                 std::move(norm), std::move(lm_head));
}

std::vector<half_bits> bits(const half_bits* p, std::size_t n) {
  return std::vector<half_bits>(p, p + n);
}

void expect_same_bits(const BaseWeights& got, const BaseWeights& want) {
  const ModelConfig& m = want.shape();
  ASSERT_EQ(got.shape(), m);
  ASSERT_EQ(got.biases(), want.biases());
  ASSERT_EQ(got.offsets().total, want.offsets().total);
  for (int l = 0; l < m.n_layers; ++l) {
    EXPECT_EQ(bits(got.layer(l), got.offsets().total), bits(want.layer(l), want.offsets().total))
        << "layer " << l;
  }
  const std::size_t table = std::size_t(m.vocab_size) * m.dim;
  EXPECT_EQ(bits(got.embedding(), table), bits(want.embedding(), table));
  EXPECT_EQ(bits(got.final_norm(), m.dim), bits(want.final_norm(), m.dim));
  EXPECT_EQ(bits(got.lm_head(), table), bits(want.lm_head(), table));
}

// Runs `load` and expects a std::runtime_error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& load, const std::vector<std::string>& parts) {
  try {
    load();
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    for (const std::string& part : parts) {
      EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

TEST(HfCheckpoint, NamesAreTransformersNames) {
  EXPECT_EQ(hf_proj_weight_name(3, Proj::kQ), "model.layers.3.self_attn.q_proj.weight");
  EXPECT_EQ(hf_proj_weight_name(0, Proj::kO), "model.layers.0.self_attn.o_proj.weight");
  EXPECT_EQ(hf_proj_weight_name(11, Proj::kDown), "model.layers.11.mlp.down_proj.weight");
  EXPECT_EQ(hf_proj_bias_name(2, Proj::kV), "model.layers.2.self_attn.v_proj.bias");
  EXPECT_EQ(hf_proj_bias_name(1, Proj::kGate), "model.layers.1.mlp.gate_proj.bias");
}

TEST(HfCheckpoint, SingleFileF16IsBitExact) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(false, 0), 1);
  const std::string dir = write_single(scratch, "f16", c, TensorDType::kF16);
  expect_same_bits(load_hf_checkpoint(dir, c.m), assemble(c, TensorDType::kF16));
}

TEST(HfCheckpoint, SingleFileF32RoundsToNearestEvenFp16) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(false, 0), 2, /*exact=*/false);
  const std::string dir = write_single(scratch, "f32", c, TensorDType::kF32);
  expect_same_bits(load_hf_checkpoint(dir, c.m), assemble(c, TensorDType::kF32));
}

TEST(HfCheckpoint, SingleFileF32OfFp16ValuesEqualsTheF16File) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(false, 0), 3);
  const BaseWeights from_f32 =
      load_hf_checkpoint(write_single(scratch, "a", c, TensorDType::kF32), c.m);
  const BaseWeights from_f16 =
      load_hf_checkpoint(write_single(scratch, "b", c, TensorDType::kF16), c.m);
  expect_same_bits(from_f32, from_f16);
}

TEST(HfCheckpoint, SingleFileBf16ConvertsToTheNearestFp16) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(false, 0), 4, /*exact=*/false);
  const std::string dir = write_single(scratch, "bf16", c, TensorDType::kBF16);
  expect_same_bits(load_hf_checkpoint(dir, c.m), assemble(c, TensorDType::kBF16));
}

TEST(HfCheckpoint, ShardedIndexOverTwoFilesLoadsLikeOneFile) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(false, kQkv), 5);
  // Layer 0 and the embedding in shard 1, the rest in shard 2, as transformers splits by size.
  const std::string dir =
      write_sharded(scratch, "sharded", c, TensorDType::kBF16, [](const auto& n) {
        const bool first = n.starts_with("model.layers.0.") || n == "model.embed_tokens.weight";
        return std::string(first ? "model-00001-of-00002.safetensors"
                                 : "model-00002-of-00002.safetensors");
      });
  expect_same_bits(load_hf_checkpoint(dir, c.m), assemble(c, TensorDType::kBF16));
}

TEST(HfCheckpoint, OnlyShardsHoldingNeededTensorsAreOpened) {
  ScratchDir scratch;
  Checkpoint c = make_checkpoint(tiny_shape(true, 0), 6);
  // A tied checkpoint whose index still lists an lm_head copy in a third shard; that shard is
  // deleted, so the load only succeeds if it is never opened.
  c.tensors["lm_head.weight"] = c.tensors.at("model.embed_tokens.weight");
  const std::string dir = write_sharded(scratch, "lazy", c, TensorDType::kF16, [](const auto& n) {
    if (n == "lm_head.weight") return std::string("model-00003-of-00003.safetensors");
    return std::string(n.find("mlp") != std::string::npos ? "model-00002-of-00003.safetensors"
                                                          : "model-00001-of-00003.safetensors");
  });
  fs::remove(fs::path(dir) / "model-00003-of-00003.safetensors");
  expect_same_bits(load_hf_checkpoint(dir, c.m), assemble(c, TensorDType::kF16));
}

TEST(HfCheckpoint, SingleFileIsPreferredOverAnIndex) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(false, 0), 7);
  const std::string dir = write_single(scratch, "both", c, TensorDType::kF16);
  write_text(fs::path(dir) / "model.safetensors.index.json", "not json");
  expect_same_bits(load_hf_checkpoint(dir, c.m), assemble(c, TensorDType::kF16));
}

TEST(HfCheckpoint, TiedEmbeddingsNeedNoLmHead) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(true, 0), 8);
  ASSERT_EQ(c.tensors.count("lm_head.weight"), 0u);
  const BaseWeights base =
      load_hf_checkpoint(write_single(scratch, "tied", c, TensorDType::kF16), c.m);
  expect_same_bits(base, assemble(c, TensorDType::kF16));
  EXPECT_EQ(base.lm_head(), base.embedding());
}

TEST(HfCheckpoint, TiedEmbeddingsIgnoreAPresentLmHead) {
  ScratchDir scratch;
  Checkpoint c = make_checkpoint(tiny_shape(true, 0), 9);
  Tensor other = c.tensors.at("model.embed_tokens.weight");
  for (float& v : other.values) v = -v;
  c.tensors["lm_head.weight"] = other;
  const BaseWeights base =
      load_hf_checkpoint(write_single(scratch, "tied2", c, TensorDType::kF16), c.m);
  expect_same_bits(base, assemble(c, TensorDType::kF16));
  EXPECT_EQ(base.lm_head(), base.embedding());
}

TEST(HfCheckpoint, Qwen2QkvBiasesLandInTheirLayerOffsetsSlots) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(false, kQkv), 10);
  ASSERT_EQ(c.model_type, "qwen2");
  const BaseWeights base =
      load_hf_checkpoint(write_single(scratch, "qwen", c, TensorDType::kF32), c.m);
  EXPECT_EQ(base.biases(), kQkv);
  const LayerOffsets& off = base.offsets();
  for (int l = 0; l < c.m.n_layers; ++l) {
    for (const Proj p : {Proj::kQ, Proj::kK, Proj::kV}) {
      ASSERT_NE(off.bias[int(p)], kNoOffset);
      const Tensor& bias =
          c.tensors.at("model.layers." + std::to_string(l) + "." + kProjNames[int(p)] + ".bias");
      const ProjShape s = proj_shape(c.m, p);
      ASSERT_EQ(bias.values.size(), std::size_t(s.out));
      for (int j = 0; j < s.out; ++j) {
        EXPECT_EQ(base.layer(l)[off.bias[int(p)] + j], float_to_half(bias.values[j]))
            << "layer " << l << " proj " << int(p) << " element " << j;
      }
    }
    for (const Proj p : {Proj::kO, Proj::kGate, Proj::kUp, Proj::kDown}) {
      EXPECT_EQ(off.bias[int(p)], kNoOffset);
    }
  }
  expect_same_bits(base, assemble(c, TensorDType::kF32));
}

TEST(HfCheckpoint, LlamaAttentionAndMlpBiasesFillAllSevenSlots) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(false, kAllSeven), 11);
  ASSERT_EQ(c.model_type, "llama");
  const BaseWeights base =
      load_hf_checkpoint(write_single(scratch, "llb", c, TensorDType::kBF16), c.m);
  EXPECT_EQ(base.biases(), kAllSeven);
  expect_same_bits(base, assemble(c, TensorDType::kBF16));
}

// ---------------------------------------------------------------------------------------------
// Refusals: each names the file and the tensor (or index entry) at fault.
// ---------------------------------------------------------------------------------------------

class HfCheckpointErrors : public ::testing::Test {
 protected:
  HfCheckpointErrors() : c_(make_checkpoint(tiny_shape(false, 0), 21)) {}

  std::string single(const std::string& name, TensorDType dtype = TensorDType::kF16) {
    return write_single(scratch_, name, c_, dtype);
  }
  std::string sharded(const std::string& name) {
    return write_sharded(scratch_, name, c_, TensorDType::kF16, [](const std::string& n) {
      return std::string(n.starts_with("model.layers.1.") ? "b.safetensors" : "a.safetensors");
    });
  }
  void expect_refused(const std::string& dir, const std::vector<std::string>& parts) {
    expect_error([&] { load_hf_checkpoint(dir, c_.m); }, parts);
  }

  ScratchDir scratch_;
  Checkpoint c_;
};

TEST_F(HfCheckpointErrors, MissingTensorNamesFileAndTensor) {
  c_.tensors.erase("model.norm.weight");
  const std::string dir = single("missing");
  expect_refused(dir, {dir + "/model.safetensors", "missing tensor 'model.norm.weight'"});
}

TEST_F(HfCheckpointErrors, MissingLmHeadWhenUntied) {
  c_.tensors.erase("lm_head.weight");
  const std::string dir = single("nohead");
  expect_refused(dir, {dir + "/model.safetensors", "missing tensor 'lm_head.weight'"});
}

TEST_F(HfCheckpointErrors, MissingTensorInIndexNamesTheIndex) {
  c_.tensors.erase("model.layers.1.mlp.up_proj.weight");
  const std::string dir = sharded("idxmissing");
  expect_refused(dir, {dir + "/model.safetensors.index.json",
                       "missing tensor 'model.layers.1.mlp.up_proj.weight' (not in weight_map)"});
}

TEST_F(HfCheckpointErrors, WrongShapeSaysExpectedAndGot) {
  Tensor& t = c_.tensors.at("model.layers.1.self_attn.k_proj.weight");
  t.shape = {16, 8};  // transposed: [in, out] instead of [out, in]
  const std::string dir = single("shape");
  expect_refused(dir, {dir + "/model.safetensors", "'model.layers.1.self_attn.k_proj.weight'",
                       "has shape [16, 8], expected [8, 16]"});
}

TEST_F(HfCheckpointErrors, UnsupportedDtypeIsNamed) {
  const std::string dir = scratch_.dir("dtype");
  write_config_json(dir, c_);
  SafetensorsWriter w;
  for (const auto& [name, t] : c_.tensors) {
    if (name == "model.layers.0.input_layernorm.weight") {
      std::vector<std::int32_t> ints(t.values.size(), 1);
      w.add_i32(name, t.shape, ints);
    } else {
      add(w, name, t, TensorDType::kF16);
    }
  }
  w.write(dir + "/model.safetensors");
  expect_refused(dir, {dir + "/model.safetensors", "'model.layers.0.input_layernorm.weight'",
                       "has dtype I32, expected F32, F16 or BF16"});
}

TEST_F(HfCheckpointErrors, F32ValueOverflowingFp16IsRefused) {
  c_.tensors.at("model.layers.0.mlp.down_proj.weight").values[5] = 70000.0f;
  const std::string dir = single("overflow", TensorDType::kF32);
  expect_refused(dir, {dir + "/model.safetensors", "'model.layers.0.mlp.down_proj.weight'",
                       "70000 at element 5, which overflows fp16"});
}

TEST_F(HfCheckpointErrors, Bf16ValueOverflowingFp16IsRefused) {
  c_.tensors.at("model.embed_tokens.weight").values[0] = -1e6f;
  const std::string dir = single("overflow16", TensorDType::kBF16);
  expect_refused(dir, {"'model.embed_tokens.weight'", "at element 0, which overflows fp16"});
}

TEST_F(HfCheckpointErrors, LargestFp16ValueIsAccepted) {
  c_.tensors.at("model.embed_tokens.weight").values[0] = 65504.0f;
  c_.tensors.at("model.embed_tokens.weight").values[1] = -65519.0f;  // rounds down to -65504
  const BaseWeights base = load_hf_checkpoint(single("max", TensorDType::kF32), c_.m);
  EXPECT_EQ(half_to_float(base.embedding()[0]), 65504.0f);
  EXPECT_EQ(half_to_float(base.embedding()[1]), -65504.0f);
}

TEST_F(HfCheckpointErrors, NonFiniteF16IsRefused) {
  c_.tensors.at("model.norm.weight").values[3] = std::numeric_limits<float>::infinity();
  const std::string dir = single("inf16");
  expect_refused(dir, {dir + "/model.safetensors", "'model.norm.weight'",
                       "non-finite value (inf) at element 3"});
}

TEST_F(HfCheckpointErrors, NanInF32IsRefused) {
  c_.tensors.at("lm_head.weight").values[7] = std::numeric_limits<float>::quiet_NaN();
  const std::string dir = single("nan32", TensorDType::kF32);
  expect_refused(dir, {"'lm_head.weight'", "non-finite value (nan) at element 7"});
}

TEST_F(HfCheckpointErrors, BiasWithoutASlotIsRefused) {
  // A llama config.json without attention_bias, but the weights carry a q_proj bias.
  c_.tensors["model.layers.1.self_attn.q_proj.bias"] = Tensor{{16}, std::vector<float>(16, 0.5f)};
  const std::string dir = single("bias");
  expect_refused(dir, {dir + "/model.safetensors", "'model.layers.1.self_attn.q_proj.bias'",
                       "gives q_proj no bias"});
}

TEST_F(HfCheckpointErrors, MalformedIndexJson) {
  const std::string dir = sharded("badjson");
  write_text(fs::path(dir) / "model.safetensors.index.json", "{\"weight_map\": {\"a\": ");
  expect_refused(dir, {dir + "/model.safetensors.index.json", "malformed JSON"});
}

TEST_F(HfCheckpointErrors, IndexWithoutWeightMap) {
  const std::string dir = sharded("nomap");
  write_text(fs::path(dir) / "model.safetensors.index.json", "{\"metadata\": {}}");
  expect_refused(dir, {dir + "/model.safetensors.index.json", "\"weight_map\""});
}

TEST_F(HfCheckpointErrors, IndexEntryThatIsNotAFileName) {
  const std::string dir = sharded("notname");
  write_text(fs::path(dir) / "model.safetensors.index.json",
             "{\"weight_map\": {\"model.norm.weight\": 3}}");
  expect_refused(dir, {dir + "/model.safetensors.index.json", "'model.norm.weight'",
                       "expected a shard file name"});
}

TEST_F(HfCheckpointErrors, IndexShardOutsideTheFolderIsRefused) {
  const std::string dir = sharded("escape");
  write_text(fs::path(dir) / "model.safetensors.index.json",
             "{\"weight_map\": {\"model.norm.weight\": \"../other/a.safetensors\"}}");
  expect_refused(dir, {dir + "/model.safetensors.index.json", "'../other/a.safetensors'",
                       "expected a file name in the same folder"});
}

TEST_F(HfCheckpointErrors, IndexNamingAMissingShard) {
  const std::string dir = sharded("noshard");
  fs::remove(fs::path(dir) / "b.safetensors");
  expect_refused(dir, {dir + "/model.safetensors.index.json", "shard 'b.safetensors'",
                       "'model.layers.1.", "does not exist"});
}

TEST_F(HfCheckpointErrors, ShardLackingATensorTheIndexPutsThere) {
  const std::string dir = sharded("lying");
  // Swap the shards' contents: every entry now points at the wrong file.
  fs::rename(fs::path(dir) / "a.safetensors", fs::path(dir) / "tmp");
  fs::rename(fs::path(dir) / "b.safetensors", fs::path(dir) / "a.safetensors");
  fs::rename(fs::path(dir) / "tmp", fs::path(dir) / "b.safetensors");
  expect_refused(dir, {dir + "/a.safetensors", "missing tensor 'model.layers.0.",
                       "model.safetensors.index.json says it is in this shard"});
}

TEST_F(HfCheckpointErrors, NoWeightsFile) {
  const std::string dir = scratch_.dir("noweights");
  write_config_json(dir, c_);
  expect_refused(dir, {dir, "neither model.safetensors nor model.safetensors.index.json"});
}

TEST_F(HfCheckpointErrors, TruncatedSafetensorsNamesTheFile) {
  const std::string dir = single("trunc");
  fs::resize_file(fs::path(dir) / "model.safetensors", 300);
  expect_refused(dir, {dir + "/model.safetensors"});
}

TEST_F(HfCheckpointErrors, NoConfigJson) {
  const std::string dir = single("noconfig");
  fs::remove(fs::path(dir) / "config.json");
  expect_refused(dir, {dir + "/config.json", "cannot be read"});
}

TEST_F(HfCheckpointErrors, ShapeDisagreeingWithConfigJson) {
  const std::string dir = single("disagree");
  ModelConfig shape = c_.m;
  shape.ffn_dim = 32;
  expect_error([&] { load_hf_checkpoint(dir, shape); },
               {dir + "/config.json", "intermediate_size gives 24", "ffn_dim 32"});
  shape = c_.m;
  shape.proj_bias_mask = kQkv;  // what a Qwen2 config would give; this one is llama
  expect_error([&] { load_hf_checkpoint(dir, shape); },
               {dir + "/config.json", "gives no projection", "biases on q_proj, k_proj, v_proj"});
}

// ---------------------------------------------------------------------------------------------
// The loaded model computes what its weights say: whole-model gradient check (double) with
// biases, and the eval loss equals that of the same weights assembled directly.
// ---------------------------------------------------------------------------------------------

struct Tokens {
  std::vector<std::int32_t> inputs, targets, positions;
  Batch batch(int B, int T) const {
    return Batch{B, T, inputs.data(), targets.data(), positions.data(), nullptr};
  }
};

Tokens random_tokens(int B, int T, int vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Tokens t;
  for (int i = 0; i < B * T; ++i) {
    t.inputs.push_back(static_cast<int>(rng() % vocab));
    t.targets.push_back(static_cast<int>(rng() % vocab));
    t.positions.push_back(i % T);
  }
  return t;
}

AdapterConfig lora_on_all_seven() {
  AdapterConfig a;
  a.r = 2;
  a.alpha = 3.0;
  a.target_modules = all_target_modules();
  return a;
}

// LoRA params with B random: PEFT's B = 0 would hide every dA.
std::vector<double> random_params(const AdapterLayout& layout) {
  std::vector<float> init(layout.total());
  layout.init_params(init.data(), 11);
  std::vector<double> params(init.begin(), init.end());
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal(0.0, 0.5);
  for (const auto& mod : layout.modules()) {
    for (int i = 0; i < mod.shape.out * mod.r; ++i) params[mod.b + i] = normal(rng);
  }
  return params;
}

TEST(HfCheckpointModel, Qwen2StyleBiasedModelGradCheck) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(false, kQkv), 31);
  const BaseWeights base =
      load_hf_checkpoint(write_single(scratch, "grad", c, TensorDType::kBF16), c.m);
  ASSERT_EQ(base.biases(), kQkv);
  const AdapterConfig a = lora_on_all_seven();
  const AdapterLayout layout = AdapterLayout::plan(c.m, a);
  std::vector<double> params = random_params(layout);
  const int B = 2, T = 6;
  Transformer<double> model(base, layout, a, B, T);
  const Tokens tok = random_tokens(B, T, c.m.vocab_size, 5);
  const double scale = 1.0 / (B * T);

  std::vector<double> grads(params.size(), 0.0), scratch_grads(params.size());
  model.train_micro_batch(tok.batch(B, T), params.data(), grads.data(), scale, 0);
  auto loss_at = [&](std::vector<double>& p) {
    return model.train_micro_batch(tok.batch(B, T), p.data(), scratch_grads.data(), scale, 0) *
           scale;
  };
  double num_sq = 0, diff_sq = 0;
  int checked = 0;
  const double h = 1e-5;
  for (const auto& t : layout.tensors()) {
    for (std::size_t i = 0; i < t.numel(); ++i) {
      const std::size_t at = t.offset + i;
      const double saved = params[at];
      params[at] = saved + h;
      const double up = loss_at(params);
      params[at] = saved - h;
      const double down = loss_at(params);
      params[at] = saved;
      const double num = (up - down) / (2 * h);
      num_sq += num * num;
      diff_sq += (num - grads[at]) * (num - grads[at]);
      ++checked;
    }
  }
  ASSERT_GT(num_sq, 0.0);
  EXPECT_LT(std::sqrt(diff_sq / num_sq), 1e-6)
      << "relative gradient error over " << checked << " adapter parameters";
}

TEST(HfCheckpointModel, EvalLossEqualsTheSameWeightsViaFromParts) {
  ScratchDir scratch;
  const Checkpoint c = make_checkpoint(tiny_shape(false, kQkv), 32);
  const BaseWeights loaded =
      load_hf_checkpoint(write_single(scratch, "eval", c, TensorDType::kF16), c.m);
  const BaseWeights direct = assemble(c, TensorDType::kF16);
  const AdapterConfig a = lora_on_all_seven();
  const AdapterLayout layout = AdapterLayout::plan(c.m, a);
  const std::vector<double> params = random_params(layout);
  Transformer<double> from_loader(loaded, layout, a, 2, 6);
  Transformer<double> from_parts(direct, layout, a, 2, 6);
  const Tokens tok = random_tokens(2, 6, c.m.vocab_size, 9);
  const double got = from_loader.eval_micro_batch(tok.batch(2, 6), params.data());
  const double want = from_parts.eval_micro_batch(tok.batch(2, 6), params.data());
  EXPECT_TRUE(std::isfinite(want));
  EXPECT_EQ(got, want);
  // The biases matter: the same weights without them give a different loss.
  std::vector<std::vector<half_bits>> layers;
  const LayerOffsets plain = LayerOffsets::for_model(c.m, 0);
  for (int l = 0; l < c.m.n_layers; ++l) {
    layers.emplace_back(direct.layer(l), direct.layer(l) + plain.total);
  }
  ModelConfig unbiased = c.m;
  unbiased.proj_bias_mask = 0;
  const std::size_t table = std::size_t(c.m.vocab_size) * c.m.dim;
  const BaseWeights no_bias =
      BaseWeights::from_parts(unbiased, 0, std::move(layers), bits(direct.embedding(), table),
                              bits(direct.final_norm(), c.m.dim), bits(direct.lm_head(), table));
  Transformer<double> without_biases(no_bias, layout, a, 2, 6);
  EXPECT_NE(without_biases.eval_micro_batch(tok.batch(2, 6), params.data()), want);
}

}  // namespace
}  // namespace peftrun
