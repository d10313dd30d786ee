// The flat trainable buffer's layout, PEFT key names and HF PEFT's LoRA initialisation.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "runtime/adapters/adapter_layout.h"
#include "runtime/adapters/peft_export.h"
#include "runtime/train/lr_schedule.h"

namespace peftrun {
namespace {

ModelConfig small_model() {
  ModelConfig m;
  m.dim = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn_dim = 48;
  return m;
}

TEST(AdapterLayout, PeftKeyNamesShapesAndAlignment) {
  AdapterConfig a;
  a.r = 4;
  a.target_modules = {"q_proj", "down_proj"};
  const AdapterLayout lay = AdapterLayout::plan(small_model(), a);
  ASSERT_EQ(lay.modules().size(), 4u);
  ASSERT_EQ(lay.tensors().size(), 8u);
  EXPECT_EQ(lay.tensors()[0].name,
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(lay.tensors()[1].name,
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ(lay.tensors()[3].name, "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  EXPECT_EQ(lay.tensors()[0].shape, (std::vector<std::int64_t>{4, 32}));  // A [r, in]
  EXPECT_EQ(lay.tensors()[3].shape, (std::vector<std::int64_t>{32, 4}));  // B [out, r]
  EXPECT_EQ(lay.tensors()[2].shape, (std::vector<std::int64_t>{4, 48}));  // down: in = ffn
  std::size_t end = 0;
  for (const auto& t : lay.tensors()) {
    EXPECT_EQ(t.offset % 16, 0u) << t.name;
    EXPECT_GE(t.offset, end) << t.name << " overlaps the previous tensor";
    end = t.offset + t.numel();
  }
  EXPECT_GE(lay.total(), end);
  EXPECT_EQ(lay.module_index(1, Proj::kQ), 2);
  EXPECT_EQ(lay.module_index(1, Proj::kV), -1);
}

// Phi-3's fused Linears: one module (one A, one B over all rows) per qkv_proj / gate_up_proj,
// found from each of its pieces, with the pieces' rows back to back in Proj order.
TEST(AdapterLayout, AFusedLinearIsOneModuleOverItsPieces) {
  ModelConfig m = small_model();  // head_dim 8: q 32 rows, k and v 16 each
  m.fused_projections = true;
  AdapterConfig a;
  a.type = AdapterType::kDora;
  a.r = 4;
  a.target_modules = {"qkv_proj", "gate_up_proj"};
  const AdapterLayout lay = AdapterLayout::plan(m, a);
  ASSERT_EQ(lay.modules().size(), 4u);
  const AdaptedModule& qkv = lay.modules()[0];
  EXPECT_EQ(qkv.module, "model.layers.0.self_attn.qkv_proj");
  EXPECT_EQ(qkv.proj, Proj::kQ);
  EXPECT_EQ(qkv.pieces, 3);
  EXPECT_EQ(qkv.shape.out, 64);
  EXPECT_EQ(qkv.shape.in, 32);
  EXPECT_EQ(lay.tensors()[0].name,
            "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight");
  EXPECT_EQ(lay.tensors()[1].shape, (std::vector<std::int64_t>{64, 4}));  // B over q, k, v
  EXPECT_EQ(lay.tensors()[2].shape, (std::vector<std::int64_t>{64}));     // m likewise
  EXPECT_EQ(lay.modules()[1].module, "model.layers.0.mlp.gate_up_proj");
  EXPECT_EQ(lay.modules()[1].shape.out, 96);
  for (const Proj p : {Proj::kQ, Proj::kK, Proj::kV}) EXPECT_EQ(lay.module_index(0, p), 0);
  for (const Proj p : {Proj::kGate, Proj::kUp}) EXPECT_EQ(lay.module_index(1, p), 3);
  EXPECT_EQ(lay.module_index(0, Proj::kO), -1);
  EXPECT_EQ(piece_row(m, qkv.linear(), Proj::kQ), 0);
  EXPECT_EQ(piece_row(m, qkv.linear(), Proj::kK), 32);
  EXPECT_EQ(piece_row(m, qkv.linear(), Proj::kV), 48);
  EXPECT_EQ(piece_row(m, lay.modules()[1].linear(), Proj::kUp), 48);
}

TEST(AdapterLayout, ScalingIsAlphaOverROrRsLora) {
  AdapterConfig a;
  a.r = 16;
  a.alpha = 32;
  EXPECT_FLOAT_EQ(AdapterLayout::plan(small_model(), a).scale(), 2.0f);
  a.use_rslora = true;
  EXPECT_FLOAT_EQ(AdapterLayout::plan(small_model(), a).scale(), 8.0f);
}

TEST(AdapterLayout, InitIsKaimingUniformAAndZeroB) {
  AdapterConfig a;
  a.r = 8;
  a.target_modules = all_target_modules();
  const AdapterLayout lay = AdapterLayout::plan(small_model(), a);
  std::vector<float> p(lay.total(), 123.0f);
  lay.init_params(p.data(), 42);
  for (const auto& m : lay.modules()) {
    const double bound = 1.0 / std::sqrt(double(m.shape.in));
    double mean = 0, sq = 0;
    const int n = m.r * m.shape.in;
    for (int i = 0; i < n; ++i) {
      const double v = p[m.a + i];
      EXPECT_LE(std::fabs(v), bound);
      mean += v;
      sq += v * v;
    }
    mean /= n;
    // U(-b, b) has variance b^2 / 3.
    EXPECT_NEAR(sq / n, bound * bound / 3, 0.25 * bound * bound / 3);
    EXPECT_NEAR(mean, 0.0, 0.2 * bound);
    for (int i = 0; i < m.shape.out * m.r; ++i) EXPECT_EQ(p[m.b + i], 0.0f);
  }
  std::vector<float> again(lay.total());
  lay.init_params(again.data(), 42);
  EXPECT_EQ(p, again) << "init must be a pure function of the seed";
}

TEST(PeftExport, AdapterConfigHasPeftFields) {
  Config c;
  c.adapter.r = 4;
  c.adapter.alpha = 8;
  c.adapter.dropout = 0.1;
  c.adapter.target_modules = {"q_proj", "v_proj"};
  const auto j = peft_adapter_config(c, AdapterLayout::plan(c.model, c.adapter));
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["r"], 4);
  EXPECT_TRUE(j["lora_alpha"].is_number_integer());
  EXPECT_EQ(j["lora_alpha"], 8);
  EXPECT_DOUBLE_EQ(j["lora_dropout"].get<double>(), 0.1);
  EXPECT_EQ(j["target_modules"], (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(j["use_rslora"], false);
  EXPECT_EQ(j["use_dora"], false);
  EXPECT_EQ(j["bias"], "none");
  EXPECT_EQ(j["fan_in_fan_out"], false);
}

TEST(LrSchedule, WarmupThenCosineLinearConstantLikeHf) {
  OptimConfig o;
  o.lr = 1.0;
  o.warmup_steps = 10;
  o.schedule = LrSchedule::kCosine;
  EXPECT_DOUBLE_EQ(learning_rate(o, 110, 0), 0.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 110, 5), 0.5);
  EXPECT_DOUBLE_EQ(learning_rate(o, 110, 10), 1.0);
  EXPECT_NEAR(learning_rate(o, 110, 60), 0.5, 1e-12);
  EXPECT_NEAR(learning_rate(o, 110, 110), 0.0, 1e-12);
  o.schedule = LrSchedule::kLinear;
  EXPECT_NEAR(learning_rate(o, 110, 35), 0.75, 1e-12);
  o.min_lr_ratio = 0.1;
  EXPECT_NEAR(learning_rate(o, 110, 109), 0.1, 1e-12);
  o.schedule = LrSchedule::kConstant;
  EXPECT_DOUBLE_EQ(learning_rate(o, 110, 100), 1.0);
}

}  // namespace
}  // namespace peftrun
