// Gradient checkpointing (Transformer's `recompute_layers`): keeping only the layer inputs and
// recomputing each layer before its backward must give exactly the losses, gradients and logits
// of a model that keeps every layer's activations (the recomputation draws the same dropout
// masks), for every adapter type, with qk_norm and packed segments, over several micro-batches;
// and it must keep fewer activation bytes. Transformer::planned_bytes (the CPU backend's
// pre-flight memory figure) must follow what the constructor allocates.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "runtime/adapters/adapter_layout.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/transformer.h"

namespace peftrun {
namespace {

struct Case {
  AdapterType type;
  bool qk_norm;
};

ModelConfig model_shape(bool qk_norm) {
  ModelConfig m;
  m.dim = 32;
  m.n_layers = 3;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn_dim = 48;
  m.vocab_size = 64;
  m.max_seq_len = 16;
  m.rope_theta = 1000.0;
  m.qk_norm = qk_norm;
  return m;
}

AdapterConfig adapter_config(AdapterType type) {
  AdapterConfig a;
  a.type = type;
  a.r = 4;
  a.init_r = 4;
  a.target_r = 2;
  a.alpha = 8.0;
  a.dropout = 0.25;  // the recomputation must redraw the same masks
  a.target_modules = all_target_modules();
  return a;
}

// Trainable values off PEFT's init (B = 0 would hide every dA), the same for both models.
std::vector<float> off_init_params(const AdapterLayout& layout) {
  std::vector<float> p(layout.total());
  layout.init_params(p.data(), 11);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (const auto& mod : layout.modules()) {
    for (int i = 0; i < mod.shape.out * mod.r; ++i) p[mod.b + i] = normal(rng);
    if (mod.e != kNoTensor) {
      for (int i = 0; i < mod.r; ++i) p[mod.e + i] = normal(rng);
    }
  }
  return p;
}

struct MicroBatch {
  std::vector<std::int32_t> inputs, targets, positions, segments;
  Batch batch(int B, int T) const {
    return Batch{B, T, inputs.data(), targets.data(), positions.data(), segments.data()};
  }
};

// Two documents packed per row: positions restart and segments change at `cut`.
MicroBatch packed_tokens(int B, int T, int vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  MicroBatch mb;
  const int cut = T / 2 - 1;
  for (int r = 0; r < B; ++r) {
    for (int t = 0; t < T; ++t) {
      mb.inputs.push_back(static_cast<int>(rng() % vocab));
      mb.targets.push_back(t == cut ? -100 : static_cast<int>(rng() % vocab));
      mb.positions.push_back(t <= cut ? t : t - cut - 1);
      mb.segments.push_back(t <= cut ? 0 : 1);
    }
  }
  return mb;
}

std::string case_name(const ::testing::TestParamInfo<Case>& p) {
  const char* type = p.param.type == AdapterType::kLora   ? "Lora"
                     : p.param.type == AdapterType::kDora ? "Dora"
                                                          : "AdaLora";
  return std::string(type) + (p.param.qk_norm ? "QkNorm" : "");
}

class GradientCheckpointing : public ::testing::TestWithParam<Case> {};

TEST_P(GradientCheckpointing, RecomputedLayersGiveBitIdenticalLossesGradientsAndLogits) {
  const int B = 2, T = 8;
  const ModelConfig m = model_shape(GetParam().qk_norm);
  const AdapterConfig a = adapter_config(GetParam().type);
  const BaseWeights base = BaseWeights::random(m, 7);
  const AdapterLayout layout = AdapterLayout::plan(m, a);
  const std::vector<float> params = off_init_params(layout);

  Transformer<float> kept(base, layout, a, B, T);
  Transformer<float> recomputed(base, layout, a, B, T, nullptr, /*recompute_layers=*/true);
  EXPECT_FALSE(kept.recomputes_layers());
  EXPECT_TRUE(recomputed.recomputes_layers());
  // 3 layers' activations against the 3 layer inputs plus one layer's set.
  EXPECT_LT(recomputed.activation_bytes() * 2, kept.activation_bytes())
      << recomputed.activation_bytes() << " vs " << kept.activation_bytes();

  std::vector<float> grads_kept(params.size(), 0.0f), grads_recomputed(params.size(), 0.0f);
  const std::size_t logit_count = std::size_t(B) * T * m.vocab_size;
  std::vector<float> logits_kept(logit_count), logits_recomputed(logit_count);
  for (std::uint64_t micro = 0; micro < 3; ++micro) {
    const MicroBatch mb = packed_tokens(B, T, m.vocab_size, 100 + micro);
    const std::uint64_t dropout_key = 0x5eed0000 + micro;
    const double loss_kept = kept.train_micro_batch(
        mb.batch(B, T), params.data(), grads_kept.data(), 0.01f, dropout_key, logits_kept.data());
    const double loss_recomputed =
        recomputed.train_micro_batch(mb.batch(B, T), params.data(), grads_recomputed.data(), 0.01f,
                                     dropout_key, logits_recomputed.data());
    EXPECT_EQ(loss_kept, loss_recomputed) << "micro-batch " << micro;
    EXPECT_EQ(logits_kept, logits_recomputed) << "micro-batch " << micro;
  }
  // Bitwise, tensor by tensor, so a failure names where the recomputation diverged.
  for (const TrainableTensor& t : layout.tensors()) {
    const std::vector<float> want(grads_kept.begin() + t.offset,
                                  grads_kept.begin() + t.offset + t.numel());
    const std::vector<float> got(grads_recomputed.begin() + t.offset,
                                 grads_recomputed.begin() + t.offset + t.numel());
    EXPECT_EQ(want, got) << t.name;
  }
  bool any_nonzero = false;
  for (float g : grads_kept) any_nonzero |= g != 0.0f;
  EXPECT_TRUE(any_nonzero);

  // Forward only (evaluation) agrees too.
  const MicroBatch held_out = packed_tokens(B, T, m.vocab_size, 999);
  EXPECT_EQ(kept.eval_micro_batch(held_out.batch(B, T), params.data()),
            recomputed.eval_micro_batch(held_out.batch(B, T), params.data()));
}

// planned_bytes (the pre-flight figure) counts what the constructor allocates: the two plans
// differ by exactly what the two models' activations differ by, and a tied lm_head costs
// nothing extra.
TEST_P(GradientCheckpointing, PlannedBytesFollowTheAllocatedActivations) {
  const int B = 2, T = 8;
  ModelConfig m = model_shape(GetParam().qk_norm);
  const AdapterConfig a = adapter_config(GetParam().type);
  const BaseWeights base = BaseWeights::random(m, 7);
  const AdapterLayout layout = AdapterLayout::plan(m, a);
  const Transformer<float> kept(base, layout, a, B, T);
  const Transformer<float> recomputed(base, layout, a, B, T, nullptr, true);
  const std::size_t plan_kept = Transformer<float>::planned_bytes(base, layout, a, B, T, false);
  const std::size_t plan_recomputed =
      Transformer<float>::planned_bytes(base, layout, a, B, T, true);
  EXPECT_GT(plan_kept, kept.activation_bytes());
  EXPECT_EQ(plan_kept - plan_recomputed, kept.activation_bytes() - recomputed.activation_bytes());

  // From the shape alone (peftrun check), the same figures.
  EXPECT_EQ(Transformer<float>::planned_bytes(m, layout, a, B, T, false), plan_kept);
  EXPECT_EQ(Transformer<float>::planned_bytes(m, layout, a, B, T, true), plan_recomputed);

  m.tie_embeddings = true;
  const BaseWeights tied = BaseWeights::random(m, 7);
  EXPECT_EQ(plan_kept - Transformer<float>::planned_bytes(tied, layout, a, B, T, false),
            std::size_t(m.vocab_size) * m.dim * sizeof(float));
}

INSTANTIATE_TEST_SUITE_P(AdapterTypes, GradientCheckpointing,
                         ::testing::Values(Case{AdapterType::kLora, false},
                                           Case{AdapterType::kDora, false},
                                           Case{AdapterType::kAdaLora, false},
                                           Case{AdapterType::kLora, true}),
                         case_name);

}  // namespace
}  // namespace peftrun
