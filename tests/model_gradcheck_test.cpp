// Finite-difference checks (double precision) of the whole model's adapter gradients: embedding
// path -> blocks (RMSNorm, GQA attention with RoPE, SwiGLU, LoRA on all seven projections) ->
// final norm -> lm_head -> cross-entropy. Every adapter parameter is checked.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "runtime/adapters/adapter_layout.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/rope_table.h"
#include "runtime/model/transformer.h"

namespace peftrun {
namespace {

struct TinyModel {
  ModelConfig m;
  AdapterConfig a;
  TinyModel(int layers, bool tie, double dropout, AdapterType type = AdapterType::kLora) {
    a.type = type;
    a.init_r = 3;
    a.target_r = 1;
    m.dim = 16;
    m.n_layers = layers;
    m.n_heads = 4;
    m.n_kv_heads = 2;
    m.ffn_dim = 24;
    m.vocab_size = 32;
    m.max_seq_len = 16;
    m.rope_theta = 500.0;
    m.tie_embeddings = tie;
    a.r = 2;
    a.alpha = 3.0;
    a.dropout = dropout;
    a.target_modules = all_target_modules();
  }
};

struct Tokens {
  std::vector<std::int32_t> inputs, targets, positions;
  Batch batch(int B, int T) const {
    return Batch{B, T, inputs.data(), targets.data(), positions.data(), nullptr};
  }
};

Tokens random_tokens(int B, int T, int vocab, std::uint64_t seed, bool with_ignored) {
  std::mt19937_64 rng(seed);
  Tokens t;
  for (int i = 0; i < B * T; ++i) {
    t.inputs.push_back(static_cast<int>(rng() % vocab));
    t.targets.push_back(static_cast<int>(rng() % vocab));
    t.positions.push_back(i % T);
  }
  if (with_ignored) t.targets[1] = t.targets[T + 2] = -100;
  return t;
}

// Checks d(mean loss)/d(every adapter parameter) against central differences.
// `random_norms`: every norm weight (all 1 in a random base, or 0 where the norms scale by
// 1 + weight) drawn around that value instead, so no norm is the identity.
BaseWeights base_for(const ModelConfig& m, bool random_norms) {
  BaseWeights base = BaseWeights::random(m, 7);
  if (!random_norms) return base;
  const LayerOffsets& o = base.offsets();
  std::vector<std::vector<half_bits>> layers;
  std::mt19937_64 rng(17);
  const float centre = m.norm_one_plus_weight ? 0.0f : 1.0f;
  std::uniform_real_distribution<float> around_one(centre - 0.5f, centre + 0.5f);
  for (int l = 0; l < m.n_layers; ++l) {
    std::vector<half_bits> layer(base.layer(l), base.layer(l) + o.total);
    for (const std::size_t at : {o.attn_norm, o.mlp_norm}) {
      for (int i = 0; i < m.dim; ++i) layer[at + i] = float_to_half(around_one(rng));
    }
    if (m.qk_norm) {
      const int qw = m.qk_norm_width(m.n_heads), kw = m.qk_norm_width(m.n_kv_heads);
      for (int i = 0; i < qw; ++i) layer[o.q_norm + i] = float_to_half(around_one(rng));
      for (int i = 0; i < kw; ++i) layer[o.k_norm + i] = float_to_half(around_one(rng));
    }
    if (m.sandwich_norms) {
      for (const std::size_t at : {o.post_attn_norm, o.post_mlp_norm}) {
        for (int i = 0; i < m.dim; ++i) layer[at + i] = float_to_half(around_one(rng));
      }
    }
    layers.push_back(std::move(layer));
  }
  std::vector<half_bits> final_norm(std::size_t(m.dim));
  for (half_bits& w : final_norm) w = float_to_half(around_one(rng));
  const std::size_t vd = std::size_t(m.vocab_size) * m.dim;
  return BaseWeights::from_parts(
      m, base.biases(), std::move(layers),
      std::vector<half_bits>(base.embedding(), base.embedding() + vd), final_norm,
      m.tie_embeddings ? std::vector<half_bits>{}
                       : std::vector<half_bits>(base.lm_head(), base.lm_head() + vd));
}

void check_model_gradients(const TinyModel& tm, std::uint64_t dropout_key, bool with_ignored,
                           bool random_norms = false) {
  const int B = 2, T = 6;
  const BaseWeights base = base_for(tm.m, random_norms);
  const AdapterLayout layout = AdapterLayout::plan(tm.m, tm.a);
  std::vector<float> init(layout.total());
  layout.init_params(init.data(), 11);
  std::vector<double> params(init.begin(), init.end());
  // B starts at zero in PEFT, which would hide every dA; give B random values for the check.
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal(0.0, 0.5);
  for (const auto& mod : layout.modules()) {
    for (int i = 0; i < mod.shape.out * mod.r; ++i) params[mod.b + i] = normal(rng);
    // AdaLoRA's E starts at zero too; DoRA's magnitude starts at ||W||: move both off init.
    if (mod.e != kNoTensor) {
      for (int i = 0; i < mod.r; ++i) params[mod.e + i] = normal(rng);
    }
    if (mod.m != kNoTensor) {
      for (int i = 0; i < mod.shape.out; ++i) params[mod.m + i] = 1.0 + normal(rng);
    }
  }
  Transformer<double> model(base, layout, tm.a, B, T);
  const Tokens tok = random_tokens(B, T, tm.m.vocab_size, 5, with_ignored);
  int count = 0;
  for (int t : tok.targets) count += t != -100;
  const double scale = 1.0 / count;

  std::vector<double> grads(params.size(), 0.0), scratch(params.size());
  model.train_micro_batch(tok.batch(B, T), params.data(), grads.data(), scale, dropout_key);
  // DoRA's norm is a constant in backward: hold it at this point's value for the differences.
  model.freeze_dora_norms(true);

  auto loss_at = [&](std::vector<double>& p) {
    return model.train_micro_batch(tok.batch(B, T), p.data(), scratch.data(), scale, dropout_key) *
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
  const double rel = std::sqrt(diff_sq / num_sq);
  EXPECT_LT(rel, 1e-6) << "relative gradient error over " << checked << " adapter parameters";
}

TEST(ModelGradCheck, LoraOnAllSevenTargetsOneBlock) {
  check_model_gradients(TinyModel(1, false, 0.0), 0, false);
}

TEST(ModelGradCheck, TwoBlocksTiedEmbeddingsWithIgnoredTargets) {
  check_model_gradients(TinyModel(2, true, 0.0), 0, true);
}

TEST(ModelGradCheck, LoraDropoutMaskIsPartOfTheGradient) {
  check_model_gradients(TinyModel(1, false, 0.3), 99, false);
}

TEST(ModelGradCheck, DoraOnAllSevenTargetsWithDetachedNorm) {
  check_model_gradients(TinyModel(1, false, 0.0, AdapterType::kDora), 0, false);
}

TEST(ModelGradCheck, DoraWithDropoutUsesPeftsSecondBaseGemm) {
  check_model_gradients(TinyModel(1, false, 0.3, AdapterType::kDora), 5, true);
}

TEST(ModelGradCheck, AdaLoraTripletsOnAllSevenTargets) {
  check_model_gradients(TinyModel(2, false, 0.2, AdapterType::kAdaLora), 7, false);
}

// Heads of their own width (Qwen3 / Mistral-Nemo): q/k/v are [n_heads * 6] = [24] against a
// hidden size of 16, and o_proj maps 24 back to 16. Llama 3's RoPE scaling rides along (it only
// changes the rotation's angles, which backward reuses).
TEST(ModelGradCheck, ExplicitHeadDimWiderThanDimOverHeadsWithLlama3Rope) {
  TinyModel tm(1, false, 0.0);
  tm.m.explicit_head_dim = 6;
  tm.m.rope_scaling = RopeScaling::kLlama3;
  tm.m.rope_factor = 4.0;
  tm.m.rope_original_max_seq_len = 4;
  check_model_gradients(tm, 0, false);
}

// yarn multiplies cos and sin by its attention factor (0.1 ln 8 + 1 here), so RoPE is no longer
// a pure rotation; its backward must carry the same factor.
TEST(ModelGradCheck, YarnRopeScalesCosAndSin) {
  TinyModel tm(1, false, 0.0);
  tm.m.rope_scaling = RopeScaling::kYarn;
  tm.m.rope_factor = 8.0;
  tm.m.rope_original_max_seq_len = 8;
  check_model_gradients(tm, 0, false);
}

TEST(ModelGradCheck, DoraWithExplicitHeadDimNarrowerThanDimOverHeads) {
  TinyModel tm(1, false, 0.0, AdapterType::kDora);
  tm.m.explicit_head_dim = 2;
  check_model_gradients(tm, 0, true);
}

// Qwen3's per-head RMSNorm of q and k sits between q_proj / k_proj and RoPE: the LoRA gradients
// of q_proj and k_proj flow back through it. Random norm weights, so they are not the identity.
TEST(ModelGradCheck, QkNormBetweenTheProjectionsAndRope) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kDora}) {
    TinyModel tm(2, false, 0.0, type);
    tm.m.qk_norm = true;
    tm.m.explicit_head_dim = 6;
    check_model_gradients(tm, 0, true, /*random_norms=*/true);
  }
}

// Gemma's decoder: GeGLU (GELU's tanh approximation), every RMSNorm scaling by 1 + weight, the
// embedding rows times sqrt(dim), a tied lm_head reading the unscaled table. Random norm weights
// around 0, so the offset matters in every norm's backward.
TEST(ModelGradCheck, GemmaGeGluOnePlusWeightNormsAndScaledEmbeddings) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kDora, AdapterType::kAdaLora}) {
    TinyModel tm(2, true, 0.0, type);
    tm.m.mlp_activation = MlpActivation::kGeluTanh;
    tm.m.norm_one_plus_weight = true;
    tm.m.scale_embeddings = true;
    tm.m.explicit_head_dim = 6;
    check_model_gradients(tm, 0, true, /*random_norms=*/true);
  }
}

// A sliding window in one of two layers (Qwen2's layer_types): the LoRA gradients of both.
TEST(ModelGradCheck, SlidingWindowInOneLayer) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kDora}) {
    TinyModel tm(2, false, 0.0, type);
    tm.m.sliding_window = 2;
    tm.m.layer_types = {"sliding_attention", "full_attention"};
    check_model_gradients(tm, 0, true);
  }
}

// Gemma 2 / 3's sandwich norms: an RMSNorm on the attention output and on the MLP output before
// each residual add, with q/k norms and 1 + weight scales as Gemma 3 has them.
TEST(ModelGradCheck, SandwichNormsAroundAttentionAndMlp) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kDora, AdapterType::kAdaLora}) {
    TinyModel tm(2, true, 0.0, type);
    tm.m.sandwich_norms = true;
    tm.m.qk_norm = true;
    tm.m.norm_one_plus_weight = true;
    tm.m.scale_embeddings = true;
    tm.m.mlp_activation = MlpActivation::kGeluTanh;
    // Gemma 3's attention: a window and the local RoPE base in layer 0, another score scale.
    tm.m.sliding_window = 2;
    tm.m.layer_types = {"sliding_attention", "full_attention"};
    tm.m.rope_local_theta = 50.0;
    tm.m.query_pre_attn_scalar = 7.0;
    check_model_gradients(tm, 0, true, /*random_norms=*/true);
  }
}

// Gemma 2: soft caps on the attention scores and on the final logits, with its sandwich norms,
// score scale and a window in layer 0 (no q/k norms). Caps near the size of the scores and
// logits, so that the caps' derivatives matter.
TEST(ModelGradCheck, Gemma2SoftCappedScoresAndLogits) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kDora}) {
    TinyModel tm(2, true, 0.0, type);
    tm.m.sandwich_norms = true;
    tm.m.norm_one_plus_weight = true;
    tm.m.scale_embeddings = true;
    tm.m.mlp_activation = MlpActivation::kGeluTanh;
    tm.m.sliding_window = 2;
    tm.m.layer_types = {"sliding_attention", "full_attention"};
    tm.m.query_pre_attn_scalar = 7.0;
    tm.m.attn_logit_softcapping = 0.8;
    tm.m.final_logit_softcapping = 1.2;
    check_model_gradients(tm, 0, true, /*random_norms=*/true);
  }
}

// Granite's multipliers: embeddings, each block's output before its residual add, the scores
// and the logits.
TEST(ModelGradCheck, GraniteMultipliers) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kDora}) {
    TinyModel tm(2, false, 0.0, type);
    tm.m.embedding_multiplier = 1.7;
    tm.m.residual_multiplier = 0.6;
    tm.m.attention_multiplier = 0.3;
    tm.m.logits_scaling = 1.9;
    check_model_gradients(tm, 0, true);
  }
}

// OLMo 2: no input norms, RMSNorms on the blocks' outputs, q/k norms over all heads at once.
TEST(ModelGradCheck, Olmo2PostBlockNormsAndFullWidthQkNorms) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kDora, AdapterType::kAdaLora}) {
    TinyModel tm(2, false, 0.0, type);
    tm.m.input_norms = false;
    tm.m.sandwich_norms = true;
    tm.m.qk_norm = true;
    tm.m.qk_norm_full_width = true;
    check_model_gradients(tm, 0, true, /*random_norms=*/true);
  }
}

// longrope: backward must rotate with the table forward chose for the micro-batch, the long
// one (positions 0..5 beyond an original context of 4) or the short one (within 8).
TEST(ModelGradCheck, LongropeWithEitherTable) {
  for (const int original : {4, 8}) {
    TinyModel tm(2, false, 0.0, AdapterType::kLora);
    tm.m.rope_scaling = RopeScaling::kLongrope;
    tm.m.rope_original_max_seq_len = original;
    tm.m.rope_factor = 4.0;
    tm.m.rope_short_factor = {1.0, 1.5};
    tm.m.rope_long_factor = {2.0, 7.0};
    const LayerRope rope(tm.m);
    EXPECT_EQ(rope.long_context(5), original == 4);
    EXPECT_EQ(rope.inv_freq(0, rope.long_context(5)) == rope.inv_freq(0, false), original == 8);
    check_model_gradients(tm, 0, true);
  }
}

// Partial rotary (Phi-4-mini's): half of each 4-channel head rotates, the rest passes.
TEST(ModelGradCheck, PartialRotary) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kDora}) {
    TinyModel tm(2, false, 0.0, type);
    tm.m.partial_rotary_factor = 0.5;
    tm.m.fused_projections = true;
    tm.a.target_modules = fused_target_modules();
    check_model_gradients(tm, 0, true);
  }
}

// SmolLM3's NoPE layers: layer 1 passes q and k unrotated.
TEST(ModelGradCheck, NoPeLayer) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kAdaLora}) {
    TinyModel tm(2, false, 0.0, type);
    tm.m.no_rope_layers = {1, 0};
    check_model_gradients(tm, 0, true);
  }
}

// Phi-3's fused qkv_proj and gate_up_proj: one A shared by q, k, v (gate, up), whose gradient
// is the sum of the pieces', and B's (and DoRA's m's) rows split between them; with dropout,
// the pieces share the module's one mask.
TEST(ModelGradCheck, FusedProjectionsShareOneAdapter) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kDora, AdapterType::kAdaLora}) {
    for (const double dropout : {0.0, 0.3}) {
      TinyModel tm(2, false, dropout, type);
      tm.m.fused_projections = true;
      tm.a.target_modules = fused_target_modules();
      check_model_gradients(tm, 21, true);
    }
  }
}

// A fused module's adapter is the unfused model's with one A for its pieces: the same loss, and
// the fused dA is the sum of the pieces' (PEFT's LoRA on Phi-3's qkv_proj is exactly that).
TEST(ModelForward, FusedAdapterIsTheUnfusedOneWithTiedA) {
  for (const AdapterType type : {AdapterType::kLora, AdapterType::kDora}) {
    TinyModel fused_tm(2, false, 0.0, type), plain_tm(2, false, 0.0, type);
    fused_tm.m.fused_projections = true;
    fused_tm.a.target_modules = fused_target_modules();
    const BaseWeights fused_base = BaseWeights::random(fused_tm.m, 7);
    const BaseWeights plain_base = BaseWeights::random(plain_tm.m, 7);
    const AdapterLayout fused = AdapterLayout::plan(fused_tm.m, fused_tm.a);
    const AdapterLayout plain = AdapterLayout::plan(plain_tm.m, plain_tm.a);
    ASSERT_EQ(fused.modules().size(), 8u);  // qkv, o, gate_up, down in 2 layers
    std::mt19937_64 rng(4);
    std::normal_distribution<double> normal(0.0, 0.5);
    std::vector<double> pf(fused.total()), pp(plain.total(), 0.0);
    for (double& v : pf) v = normal(rng);
    for (const AdaptedModule& f : fused.modules()) {
      for (int i = 0; i < f.pieces; ++i) {
        const Proj p = Proj(int(f.proj) + i);
        const AdaptedModule& u = plain.modules()[plain.module_index(f.layer, p)];
        const int row = piece_row(fused_tm.m, f.linear(), p);
        ASSERT_EQ(u.r, f.r);
        std::copy_n(pf.begin() + f.a, std::size_t(f.r) * f.shape.in, pp.begin() + u.a);
        std::copy_n(pf.begin() + f.b + std::size_t(row) * f.r, std::size_t(u.shape.out) * f.r,
                    pp.begin() + u.b);
        if (f.m != kNoTensor) std::copy_n(pf.begin() + f.m + row, u.shape.out, pp.begin() + u.m);
      }
    }
    const Tokens tok = random_tokens(2, 6, fused_tm.m.vocab_size, 9, false);
    Transformer<double> fused_model(fused_base, fused, fused_tm.a, 2, 6);
    Transformer<double> plain_model(plain_base, plain, plain_tm.a, 2, 6);
    std::vector<double> gf(pf.size(), 0.0), gp(pp.size(), 0.0);
    const double lf = fused_model.train_micro_batch(tok.batch(2, 6), pf.data(), gf.data(), 1.0, 0);
    const double lp = plain_model.train_micro_batch(tok.batch(2, 6), pp.data(), gp.data(), 1.0, 0);
    EXPECT_EQ(lf, lp);
    for (const AdaptedModule& f : fused.modules()) {
      for (std::size_t j = 0; j < std::size_t(f.r) * f.shape.in; ++j) {
        double sum = 0;
        for (int i = 0; i < f.pieces; ++i) {
          sum += gp[plain.modules()[plain.module_index(f.layer, Proj(int(f.proj) + i))].a + j];
        }
        EXPECT_NEAR(gf[f.a + j], sum, 1e-12 * (1 + std::abs(sum))) << f.module << " dA " << j;
      }
    }
  }
}

TEST(ModelForward, EvalEqualsTrainForwardWithoutDropout) {
  TinyModel tm(2, false, 0.0);
  const BaseWeights base = BaseWeights::random(tm.m, 7);
  const AdapterLayout layout = AdapterLayout::plan(tm.m, tm.a);
  std::vector<float> p(layout.total());
  layout.init_params(p.data(), 1);
  std::vector<float> g(p.size(), 0.0f);
  Transformer<float> model(base, layout, tm.a, 2, 6);
  const Tokens tok = random_tokens(2, 6, tm.m.vocab_size, 9, false);
  const double train = model.train_micro_batch(tok.batch(2, 6), p.data(), g.data(), 1.0f, 0);
  const double eval = model.eval_micro_batch(tok.batch(2, 6), p.data());
  EXPECT_EQ(train, eval);
  // B = 0 at init: the adapter contributes nothing, and the random base predicts ~uniformly.
  EXPECT_NEAR(eval / 12, std::log(32.0), 1.5);
}

TEST(ModelForward, FloatAndDoubleAgree) {
  TinyModel tm(2, false, 0.0);
  const BaseWeights base = BaseWeights::random(tm.m, 7);
  const AdapterLayout layout = AdapterLayout::plan(tm.m, tm.a);
  std::vector<float> pf(layout.total());
  layout.init_params(pf.data(), 1);
  for (const auto& mod : layout.modules()) {
    for (int i = 0; i < mod.shape.out * mod.r; ++i) pf[mod.b + i] = 0.01f * float(i % 7);
  }
  std::vector<double> pd(pf.begin(), pf.end());
  Transformer<float> mf(base, layout, tm.a, 2, 6);
  Transformer<double> md(base, layout, tm.a, 2, 6);
  const Tokens tok = random_tokens(2, 6, tm.m.vocab_size, 9, false);
  const double lf = mf.eval_micro_batch(tok.batch(2, 6), pf.data());
  const double ld = md.eval_micro_batch(tok.batch(2, 6), pd.data());
  EXPECT_NEAR(lf, ld, 1e-4 * std::fabs(ld));
}

}  // namespace
}  // namespace peftrun
