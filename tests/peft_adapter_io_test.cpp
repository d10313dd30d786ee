// PEFT adapter folders written and read back for all three adapter types, and every way a
// folder can disagree with the config being refused with the file and field named.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "runtime/adapters/peft_export.h"
#include "runtime/io/safetensors.h"
#include "tests/support/scratch_dir.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;

Config small_config(AdapterType type) {
  Config c;
  c.model.dim = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.ffn_dim = 48;
  c.adapter.type = type;
  c.adapter.r = 4;
  c.adapter.init_r = 6;
  c.adapter.target_r = 2;
  c.adapter.target_modules = {"q_proj", "v_proj", "down_proj"};
  return c;
}

std::vector<float> random_params(const AdapterLayout& lay, unsigned seed) {
  std::vector<float> p(lay.total(), 0.0f);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  for (const auto& t : lay.tensors()) {
    for (std::size_t i = 0; i < t.numel(); ++i) p[t.offset + i] = u(rng);
  }
  return p;
}

// Not created: the writer under test makes it.
fs::path temp_dir(const std::string& name) {
  return peftrun::testing_support::test_output_dir("peftio_" + name, /*create=*/false);
}

class PeftAdapterRoundTrip : public ::testing::TestWithParam<AdapterType> {};

TEST_P(PeftAdapterRoundTrip, WriteThenReadGivesTheSameParameters) {
  const Config c = small_config(GetParam());
  const AdapterLayout lay = AdapterLayout::plan(c.model, c.adapter);
  const std::vector<float> p = random_params(lay, 1);
  const fs::path d = temp_dir(std::string("rt_") + to_string(GetParam()));
  write_peft_adapter(d.string(), c, lay, p.data());
  std::vector<float> back(lay.total(), 99.0f);
  RankPattern pattern;
  read_peft_adapter(d.string(), c, lay, back.data(), &pattern);
  EXPECT_EQ(back, p);
  EXPECT_TRUE(pattern.empty());
  const auto j = nlohmann::json::parse(std::ifstream(d / "adapter_config.json"));
  EXPECT_EQ(j["use_dora"], GetParam() == AdapterType::kDora);
  EXPECT_EQ(j["peft_type"], GetParam() == AdapterType::kAdaLora ? "ADALORA" : "LORA");
}

INSTANTIATE_TEST_SUITE_P(AllTypes, PeftAdapterRoundTrip,
                         ::testing::Values(AdapterType::kLora, AdapterType::kDora,
                                           AdapterType::kAdaLora),
                         [](const auto& p) { return std::string(to_string(p.param)); });

TEST(PeftAdapterIo, AdaLoraWithRankPatternSavesOnlyKeptTripletsAndReadsThemBack) {
  const Config c = small_config(AdapterType::kAdaLora);
  const AdapterLayout lay = AdapterLayout::plan(c.model, c.adapter);
  std::vector<float> p = random_params(lay, 2);
  RankPattern pattern;
  for (std::size_t i = 0; i < lay.modules().size(); ++i) {
    std::vector<bool> mask(6, false);
    mask[i % 6] = mask[(i + 3) % 6] = true;
    pattern.push_back(mask);
  }
  const fs::path d = temp_dir("sliced");
  write_peft_adapter(d.string(), c, lay, p.data(), &pattern);
  SafetensorsReader r((d / "adapter_model.safetensors").string());
  const AdaptedModule& m0 = lay.modules()[0];
  EXPECT_EQ(r.info("base_model.model.model.layers.0.self_attn.q_proj.lora_A").shape,
            (std::vector<std::int64_t>{2, m0.shape.in}));
  EXPECT_EQ(r.info("base_model.model.model.layers.0.self_attn.q_proj.lora_B").shape,
            (std::vector<std::int64_t>{m0.shape.out, 2}));
  EXPECT_EQ(r.info("base_model.model.model.layers.0.self_attn.q_proj.lora_E").shape,
            (std::vector<std::int64_t>{2, 1}));
  const auto j = nlohmann::json::parse(std::ifstream(d / "adapter_config.json"));
  EXPECT_EQ(j["rank_pattern"]["model.layers.0.self_attn.q_proj.lora_E"], pattern[0]);

  std::vector<float> back(lay.total(), 7.0f);
  RankPattern read_pattern;
  read_peft_adapter(d.string(), c, lay, back.data(), &read_pattern);
  EXPECT_EQ(read_pattern, pattern);
  for (std::size_t i = 0; i < lay.modules().size(); ++i) {
    const AdaptedModule& m = lay.modules()[i];
    for (int k = 0; k < m.r; ++k) {
      const float want_e = pattern[i][k] ? p[m.e + k] : 0.0f;
      EXPECT_EQ(back[m.e + k], want_e);
      const float want_a = pattern[i][k] ? p[m.a + std::size_t(k) * m.shape.in] : 0.0f;
      EXPECT_EQ(back[m.a + std::size_t(k) * m.shape.in], want_a);
      const float want_b = pattern[i][k] ? p[m.b + k] : 0.0f;
      EXPECT_EQ(back[m.b + k], want_b);
    }
  }
}

struct Mismatch {
  const char* name;
  void (*mutate)(Config&);
  const char* expect;
};

TEST(PeftAdapterIo, RefusesAdaptersThatDescribeADifferentAdapter) {
  const Mismatch cases[] = {
      {"type", [](Config& c) { c.adapter.type = AdapterType::kAdaLora; }, "peft_type"},
      {"dora", [](Config& c) { c.adapter.type = AdapterType::kDora; }, "use_dora"},
      {"rank", [](Config& c) { c.adapter.r = 8; }, "r is 4 but adapter.r is 8"},
      {"alpha", [](Config& c) { c.adapter.alpha = 32; }, "lora_alpha"},
      {"rslora", [](Config& c) { c.adapter.use_rslora = true; }, "use_rslora"},
      {"targets", [](Config& c) { c.adapter.target_modules = {"q_proj"}; }, "target_modules"},
  };
  const Config c = small_config(AdapterType::kLora);
  const AdapterLayout lay = AdapterLayout::plan(c.model, c.adapter);
  const std::vector<float> p = random_params(lay, 3);
  const fs::path d = temp_dir("mismatch");
  write_peft_adapter(d.string(), c, lay, p.data());
  for (const Mismatch& m : cases) {
    Config other = c;
    m.mutate(other);
    const AdapterLayout other_lay = AdapterLayout::plan(other.model, other.adapter);
    std::vector<float> out(other_lay.total());
    try {
      read_peft_adapter(d.string(), other, other_lay, out.data());
      ADD_FAILURE() << m.name << ": accepted";
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("adapter_config.json"), std::string::npos) << m.name << ": " << msg;
      EXPECT_NE(msg.find(m.expect), std::string::npos) << m.name << ": " << msg;
    }
  }
}

TEST(PeftAdapterIo, RefusesMissingMisshapenAndUnexpectedTensors) {
  const Config c = small_config(AdapterType::kLora);
  const AdapterLayout lay = AdapterLayout::plan(c.model, c.adapter);
  const std::vector<float> p = random_params(lay, 4);
  const fs::path d = temp_dir("tensors");
  write_peft_adapter(d.string(), c, lay, p.data());
  const std::string victim = lay.tensors()[1].name;
  auto rewrite = [&](auto edit) {
    SafetensorsWriter w;
    for (const auto& t : lay.tensors()) edit(w, t);
    w.write((d / "adapter_model.safetensors").string());
  };
  auto expect_error = [&](const std::string& what) {
    std::vector<float> out(lay.total());
    try {
      read_peft_adapter(d.string(), c, lay, out.data());
      ADD_FAILURE() << "accepted: " << what;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("adapter_model.safetensors"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  rewrite([&](SafetensorsWriter& w, const TrainableTensor& t) {
    if (t.name != victim) w.add_f32(t.name, t.shape, {p.data() + t.offset, t.numel()});
  });
  expect_error(victim);
  rewrite([&](SafetensorsWriter& w, const TrainableTensor& t) {
    std::vector<std::int64_t> shape = t.shape;
    if (t.name == victim) std::swap(shape[0], shape[1]);
    w.add_f32(t.name, shape, {p.data() + t.offset, t.numel()});
  });
  expect_error("has shape");
  rewrite([&](SafetensorsWriter& w, const TrainableTensor& t) {
    w.add_f32(t.name, t.shape, {p.data() + t.offset, t.numel()});
    if (t.name == victim) w.add_f32("base_model.model.extra.weight", {1}, {p.data(), 1});
  });
  expect_error("unexpected tensor 'base_model.model.extra.weight'");
}

}  // namespace
}  // namespace peftrun
