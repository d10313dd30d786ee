// The device model and the CUDA trainer against the CPU: skipped without a GPU.
//
//  - GpuModelParity.*: one training micro-batch of CudaTransformer against Transformer<double>
//    (the CPU model in fp64) on the tiny model shape with all seven projections adapted, for
//    LoRA, DoRA and AdaLoRA, with and without dropout (the same counter-based masks), in fp32,
//    fp16 and bf16 compute: logits, loss and every adapter gradient by ||gpu - cpu|| / ||cpu||.
//    Parameters are random (B, E and m away from their zero / norm init) so that no gradient is
//    trivially zero; outputs start poisoned (NaN).
//  - GpuModelParity.GradientCheckpointing*: recomputing every layer before its backward gives
//    the same bits as keeping every layer's activations.
//  - GpuTraining.*: the tiny config trained end to end on cpu and on cuda by run_training: the
//    per-step losses, the final eval loss and the adapters compared; no device allocation in
//    the step loop; peftrun eval on cuda equals the training's final evaluation.
//  - GpuTraining.Divergence*: a blown-up cuda run stops; --debug names the tensor and layer.
//  - GpuTraining.Fp16Overflow*: overflowing fp16 steps are skipped, the scale halved each time.
//  - GpuResume.*: a cuda run resumed from its step-4 checkpoint continues bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "configs/config.h"
#include "kernels/cuda_memory.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/cuda_transformer.h"
#include "runtime/model/transformer.h"
#include "runtime/rng.h"
#include "runtime/train/evaluator.h"
#include "runtime/train/model_setup.h"
#include "runtime/train/trainer.h"
#include "tests/gpu/gpu_test_support.h"
#include "tests/gpu/parity_support.h"
#include "tests/support/e2e.h"

namespace peftrun::gpu_testing {
namespace {

namespace fs = std::filesystem;

// Model-level tolerances (four layers of rounding, not one op's).
double model_tolerance(DType act) {
  return act == DType::kF32 ? 1e-4 : act == DType::kF16 ? 1e-2 : 6e-2;
}

// A scalar by the same rule and report line as expect_close.
void expect_scalar_close(const std::string& where, const char* what, double got, double ref,
                         double tol) {
  const double err = std::isfinite(got) ? std::abs(got - ref) / std::abs(ref) : INFINITY;
  if (std::getenv("PEFTRUN_PARITY_REPORT")) {
    std::printf("parity %s %s rel_error %.3e tol %.1e\n", where.c_str(), what, err, tol);
  }
  EXPECT_LE(err, tol) << where << ": " << what << " " << got << " vs " << ref;
}

template <typename T>
std::vector<T> slice(const std::vector<T>& v, std::size_t at, std::size_t n) {
  std::vector<T> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = v[at + i];
  return out;
}

const char* short_name(AdapterType t) {
  return t == AdapterType::kLora ? "lora" : t == AdapterType::kDora ? "dora" : "adalora";
}

struct ModelCase {
  AdapterType type;
  double dropout;
  int head_dim = 0;      // model.head_dim: 0 = dim / n_heads
  bool llama3 = false;   // Llama 3's RoPE scaling
  bool qk_norm = false;  // Qwen3's per-head RMSNorm of q and k
  // Gemma's decoder: GeGLU, norms scaling by 1 + weight, embeddings times sqrt(dim) (rounded to
  // the compute dtype on the device, fp32 on the CPU), tied lm_head.
  bool gemma = false;
  int window = 0;         // a sliding window in layers 1 and 3 of the 4 (layer_types)
  bool sandwich = false;  // Gemma 2 / 3's norms on the attention and MLP outputs
  // Gemma 3's attention: query_pre_attn_scalar 48 (not head_dim) and a local RoPE base in the
  // sliding layers.
  bool gemma3_attention = false;
  // Gemma 2's soft caps on the attention scores and the final logits (small ones, so that tanh
  // bends this random model's values), with query_pre_attn_scalar 48.
  bool softcap = false;
  bool nope = false;     // SmolLM3's NoPE layers: layers 1 and 3 of the 4 without RoPE
  bool granite = false;  // Granite's four multipliers
  bool olmo2 = false;    // OLMo 2's norms: none on the inputs, post-block, q/k over all heads
  bool fused = false;    // Phi-3's qkv_proj / gate_up_proj: one adapter over the pieces
  // Phi-3's longrope past its original context (positions to 63, original 32), with Phi-4-mini's
  // partial rotary.
  bool longrope = false;
};

std::string case_name(const ModelCase& c, DType act) {
  return std::string(short_name(c.type)) + (c.dropout > 0 ? "+dropout" : "") +
         (c.head_dim > 0 ? "+head_dim" : "") + (c.qk_norm ? "+qk_norm" : "") +
         (c.gemma ? "+gemma" : "") + (c.window > 0 ? "+window" : "") +
         (c.sandwich ? "+sandwich" : "") + (c.softcap ? "+softcap" : "") + (c.nope ? "+nope" : "") +
         (c.granite ? "+granite" : "") + (c.olmo2 ? "+olmo2" : "") + (c.fused ? "+fused" : "") +
         (c.longrope ? "+longrope " : " ") + dtype_name(act);
}

// One case's model, random parameters (B, E and m moved off their init so that every gradient
// is non-zero) and micro-batch (token windows of the random vocabulary, some targets ignored).
struct CaseInputs {
  Config cfg;
  BaseWeights base;
  AdapterLayout layout;
  std::vector<float> params;
  std::vector<std::int32_t> inputs, targets;
  int kept = 0;  // targets not ignored
  std::uint64_t key = 0;
  static constexpr int B = 2, T = 64;

  Batch batch() const { return Batch{B, T, inputs.data(), targets.data(), nullptr, nullptr}; }
};

Config case_config(const ModelCase& c) {
  Config cfg;
  cfg.model.explicit_head_dim = c.head_dim;
  cfg.model.qk_norm = c.qk_norm;
  cfg.model.sandwich_norms = c.sandwich;
  if (c.gemma3_attention) {
    cfg.model.query_pre_attn_scalar = 48;
    cfg.model.rope_theta = 1e6;
    cfg.model.rope_local_theta = 1e4;
  }
  if (c.nope) cfg.model.no_rope_layers = {1, 0, 1, 0};
  if (c.olmo2) {
    cfg.model.input_norms = false;
    cfg.model.sandwich_norms = true;
    cfg.model.qk_norm = true;
    cfg.model.qk_norm_full_width = true;
  }
  if (c.granite) {
    cfg.model.embedding_multiplier = 1.7;
    cfg.model.residual_multiplier = 0.6;
    cfg.model.attention_multiplier = 0.2;
    cfg.model.logits_scaling = 1.9;
  }
  if (c.softcap) {
    cfg.model.query_pre_attn_scalar = 48;
    cfg.model.attn_logit_softcapping = 1.0;
    cfg.model.final_logit_softcapping = 1.5;
  }
  if (c.window > 0) {
    cfg.model.sliding_window = c.window;
    cfg.model.layer_types = {"full_attention", "sliding_attention", "full_attention",
                             "sliding_attention"};
  }
  if (c.gemma) {
    cfg.model.mlp_activation = MlpActivation::kGeluTanh;
    cfg.model.norm_one_plus_weight = true;
    cfg.model.scale_embeddings = true;
    cfg.model.tie_embeddings = true;
  }
  if (c.longrope) {
    cfg.model.rope_scaling = RopeScaling::kLongrope;
    cfg.model.rope_original_max_seq_len = 32;
    cfg.model.rope_factor = 8.0;
    cfg.model.partial_rotary_factor = 0.75;  // Phi-4-mini's: 24 of the 32 channels rotate
    const int pairs = cfg.model.rotary_dim() / 2;
    for (int i = 0; i < pairs; ++i) {
      cfg.model.rope_short_factor.push_back(1.0 + 0.01 * i);
      cfg.model.rope_long_factor.push_back(1.0 + 0.5 * i);
    }
  }
  if (c.llama3) {
    cfg.model.rope_scaling = RopeScaling::kLlama3;
    cfg.model.rope_factor = 8.0;
    cfg.model.rope_original_max_seq_len = 32;
  }
  cfg.adapter.type = c.type;
  cfg.adapter.dropout = c.dropout;
  cfg.adapter.target_modules = all_target_modules();
  if (c.fused) {
    cfg.model.fused_projections = true;
    cfg.adapter.target_modules = fused_target_modules();
  }
  return cfg;
}

CaseInputs case_inputs(const ModelCase& c, const std::string& where) {
  const Config cfg = case_config(c);
  const ModelConfig& m = cfg.model;
  BaseWeights base = BaseWeights::random(m, cfg.train.seed);
  AdapterLayout layout = AdapterLayout::plan(m, cfg.adapter);
  CaseInputs in{cfg, std::move(base), std::move(layout), {}, {}, {}, 0, 0};
  in.params = initial_params(in.cfg, in.base, in.layout, "", nullptr);
  const std::vector<float> noise = random_floats(in.params.size(), seed_of(where), 0.05f);
  for (const AdaptedModule& mod : in.layout.modules()) {
    for (std::size_t i = 0; i < std::size_t(mod.shape.out) * mod.r; ++i) {
      in.params[mod.b + i] = noise[mod.b + i];
    }
    if (mod.e != kNoTensor) {
      for (int k = 0; k < mod.r; ++k) in.params[mod.e + k] = 0.5f + noise[mod.e + k];
    }
    if (mod.m != kNoTensor) {
      for (int j = 0; j < mod.shape.out; ++j) in.params[mod.m + j] *= 1.0f + noise[mod.m + j];
    }
  }
  const int n = CaseInputs::B * CaseInputs::T, V = m.vocab_size;
  in.inputs.resize(n);
  in.targets.resize(n);
  for (int i = 0; i < n; ++i) {
    in.inputs[i] = static_cast<std::int32_t>(splitmix64(seed_of(where, 1) + i) % V);
    in.targets[i] =
        i % 7 == 3 ? -100 : static_cast<std::int32_t>(splitmix64(seed_of(where, 2) + i) % V);
  }
  for (int t : in.targets) in.kept += t != -100;
  in.key = derive_key(in.cfg.train.seed, std::uint64_t(RngTag::kDropout));
  return in;
}

void check_micro_batch(const ModelCase& c, DType act) {
  const std::string where = case_name(c, act);
  const CaseInputs in = case_inputs(c, where);
  const Config& cfg = in.cfg;
  const BaseWeights& base = in.base;
  const AdapterLayout& layout = in.layout;
  const std::vector<float>& params = in.params;
  const int B = CaseInputs::B, T = CaseInputs::T, n = B * T, V = cfg.model.vocab_size;
  const int kept = in.kept;
  const Batch b = in.batch();
  const std::uint64_t key = in.key;
  // fp16 gradients need a loss scale (as the trainer applies), else softmax / tokens underflows.
  const double scale = act == DType::kF16 ? 1024.0 : 1.0;

  // CPU reference in double.
  Transformer<double> cpu(base, layout, cfg.adapter, B, T);
  const std::vector<double> p64(params.begin(), params.end());
  std::vector<double> g64(params.size());
  std::vector<double> logits64(std::size_t(n) * V);
  const double loss_ref =
      cpu.train_micro_batch(b, p64.data(), g64.data(), 1.0 / kept, key, logits64.data());

  // The device model.
  cuda::DeviceBuffer<float> d_params = to_device(params);
  cuda::DeviceBuffer<float> d_grads(params.size());
  cuda::device_memset(d_grads.data(), 0, d_grads.bytes());
  CudaTransformer gpu(base, layout, cfg.adapter, B, T, act);
  std::vector<float> logits(std::size_t(n) * V, std::nanf(""));
  const double loss = gpu.train_micro_batch(b, d_params.data(), d_grads.data(),
                                            static_cast<float>(scale / kept), key, logits.data());
  std::vector<float> grads = to_host(d_grads);
  for (float& g : grads) g = static_cast<float>(g / scale);

  const double tol = model_tolerance(act);
  expect_close(where, "logits", logits, logits64, tol);
  expect_scalar_close(where, "loss", loss, loss_ref, tol);
  for (const TrainableTensor& t : layout.tensors()) {
    expect_close(where, ("grad " + t.name).c_str(), slice(grads, t.offset, t.numel()),
                 slice(g64, t.offset, t.numel()), tol);
  }
  // Evaluation: no dropout, the same loss as the CPU's eval forward.
  const double eval_ref = cpu.eval_micro_batch(b, p64.data());
  const double eval = gpu.eval_micro_batch(b, d_params.data());
  expect_scalar_close(where, "eval loss", eval, eval_ref, tol);
}

void run_model_case(const ModelCase& c) {
  for (const DType act : kAllDTypes) check_micro_batch(c, act);
}

TEST(GpuModelParity, Lora) {
  PEFTRUN_REQUIRE_GPU();
  run_model_case({AdapterType::kLora, 0.0});
}
// Heads wider than dim / n_heads (48 against 128 / 4 = 32), with Llama 3's RoPE scaling.
TEST(GpuModelParity, LoraExplicitHeadDimLlama3Rope) {
  PEFTRUN_REQUIRE_GPU();
  run_model_case({AdapterType::kLora, 0.0, 48, true});
}

// Qwen3's shape: q_norm / k_norm, heads wider than dim / n_heads.
TEST(GpuModelParity, DoraQkNormExplicitHeadDim) {
  PEFTRUN_REQUIRE_GPU();
  run_model_case({AdapterType::kDora, 0.0, 48, false, true});
}

// Gemma's shape: GeGLU, 1 + weight norms, scaled embeddings, tied lm_head, a wide head.
TEST(GpuModelParity, LoraGemmaExplicitHeadDim) {
  PEFTRUN_REQUIRE_GPU();
  run_model_case({AdapterType::kLora, 0.1, 64, false, false, true});
}

// Sliding windows of 13 keys (of T = 64) in two of the four layers.
TEST(GpuModelParity, DoraSlidingWindowInTwoLayers) {
  PEFTRUN_REQUIRE_GPU();
  run_model_case({AdapterType::kDora, 0.0, 0, false, false, false, 13});
}

// Gemma 3's layer: sandwich norms, q/k norms, GeGLU, 1 + weight norms, a window in two layers.
TEST(GpuModelParity, LoraGemma3Shape) {
  PEFTRUN_REQUIRE_GPU();
  ModelCase c{AdapterType::kLora, 0.1, 64, false, true, true, 13};
  c.sandwich = true;
  c.gemma3_attention = true;
  run_model_case(c);
}

// Gemma 2's layer: Gemma 3's without q/k norms, with soft caps on the scores and the logits.
TEST(GpuModelParity, LoraGemma2Shape) {
  PEFTRUN_REQUIRE_GPU();
  ModelCase c{AdapterType::kLora, 0.0, 64, false, false, true, 13};
  c.sandwich = true;
  c.softcap = true;
  run_model_case(c);
}

// SmolLM3's layer: Llama's, with RoPE skipped in every second layer.
TEST(GpuModelParity, LoraSmolLM3NoPe) {
  PEFTRUN_REQUIRE_GPU();
  ModelCase c{AdapterType::kLora, 0.0};
  c.nope = true;
  run_model_case(c);
}

// Granite's layer: Llama's with its multipliers, DoRA's fused epilogue on the scaled branch.
TEST(GpuModelParity, DoraGranite) {
  PEFTRUN_REQUIRE_GPU();
  ModelCase c{AdapterType::kDora, 0.0};
  c.granite = true;
  run_model_case(c);
}

// OLMo 2's layer: post-block norms only and q/k norms over all heads.
TEST(GpuModelParity, LoraOlmo2) {
  PEFTRUN_REQUIRE_GPU();
  ModelCase c{AdapterType::kLora, 0.0};
  c.olmo2 = true;
  run_model_case(c);
}

// Phi-3's fused projections: the pieces of qkv_proj and gate_up_proj share A (their dA add up)
// and one dropout mask, and take their rows of B and m.
TEST(GpuModelParity, DoraFusedProjectionsDropout) {
  PEFTRUN_REQUIRE_GPU();
  ModelCase c{AdapterType::kDora, 0.1};
  c.fused = true;
  run_model_case(c);
}
TEST(GpuModelParity, AdaLoraFusedProjectionsLongrope) {
  PEFTRUN_REQUIRE_GPU();
  ModelCase c{AdapterType::kAdaLora, 0.0};
  c.fused = true;
  c.longrope = true;
  run_model_case(c);
}

TEST(GpuModelParity, LoraDropout) {
  PEFTRUN_REQUIRE_GPU();
  run_model_case({AdapterType::kLora, 0.1});
}
TEST(GpuModelParity, Dora) {
  PEFTRUN_REQUIRE_GPU();
  run_model_case({AdapterType::kDora, 0.0});
}
TEST(GpuModelParity, DoraDropout) {
  PEFTRUN_REQUIRE_GPU();
  run_model_case({AdapterType::kDora, 0.1});
}
TEST(GpuModelParity, AdaLora) {
  PEFTRUN_REQUIRE_GPU();
  run_model_case({AdapterType::kAdaLora, 0.0});
}
TEST(GpuModelParity, AdaLoraDropout) {
  PEFTRUN_REQUIRE_GPU();
  run_model_case({AdapterType::kAdaLora, 0.1});
}

// Gradient checkpointing (runtime.gradient_checkpointing): one micro-batch on a device model
// that recomputes every layer before its backward against one that keeps every layer's
// activations. The kernels are deterministic, so logits, loss and gradients must be the same
// bits; the recomputing arena's activations must be smaller.
void check_recompute_is_bitwise(const ModelCase& c, DType act) {
  const std::string where = case_name(c, act) + " gradient checkpointing";
  const CaseInputs in = case_inputs(c, where);
  const std::size_t logit_count = std::size_t(in.B) * in.T * in.cfg.model.vocab_size;
  struct Outcome {
    double loss = 0, eval = 0;
    std::vector<float> logits, grads;
    std::size_t activation_bytes = 0;
  };
  const auto run = [&](bool recompute) {
    cuda::DeviceBuffer<float> d_params = to_device(in.params);
    cuda::DeviceBuffer<float> d_grads(in.params.size());
    cuda::device_memset(d_grads.data(), 0, d_grads.bytes());
    CudaTransformer gpu(in.base, in.layout, in.cfg.adapter, in.B, in.T, act, nullptr, recompute);
    Outcome o;
    o.logits.assign(logit_count, std::nanf(""));
    o.loss = gpu.train_micro_batch(in.batch(), d_params.data(), d_grads.data(),
                                   1.0f / static_cast<float>(in.kept), in.key, o.logits.data());
    o.grads = to_host(d_grads);
    o.eval = gpu.eval_micro_batch(in.batch(), d_params.data());
    o.activation_bytes = gpu.activation_bytes();
    return o;
  };
  const Outcome kept = run(false), recomputed = run(true);
  EXPECT_LT(recomputed.activation_bytes * 2, kept.activation_bytes) << where;
  EXPECT_EQ(kept.loss, recomputed.loss) << where;
  EXPECT_EQ(kept.eval, recomputed.eval) << where;
  EXPECT_EQ(kept.logits, recomputed.logits) << where;
  for (const TrainableTensor& t : in.layout.tensors()) {
    EXPECT_EQ(slice(kept.grads, t.offset, t.numel()), slice(recomputed.grads, t.offset, t.numel()))
        << where << ": grad " << t.name;
  }
}

TEST(GpuModelParity, GradientCheckpointingIsBitIdentical) {
  PEFTRUN_REQUIRE_GPU();
  check_recompute_is_bitwise({AdapterType::kLora, 0.1}, DType::kBF16);
  check_recompute_is_bitwise({AdapterType::kDora, 0.1, 48, false, true}, DType::kF16);
  check_recompute_is_bitwise({AdapterType::kAdaLora, 0.1}, DType::kF32);
}

// --- end to end -------------------------------------------------------------------------------

// The source tree, which the GPU check may run from another path than the build's
// (scripts/gpu_check.sh sets PEFTRUN_SOURCE_DIR).
std::string source_dir() {
  const char* moved = std::getenv("PEFTRUN_SOURCE_DIR");
  return moved && *moved ? moved : PEFTRUN_SOURCE_DIR;
}
const std::string kTiny = source_dir() + "/configs/tiny.yaml";

struct Run {
  TrainSummary summary;
  std::vector<double> losses;
  std::vector<float> adapter;
  std::string log;
};

Run train(const fs::path& out, const std::vector<std::string>& overrides,
          const TrainOptions& options = {}) {
  std::vector<std::string> all = overrides;
  all.push_back("output_dir=" + out.string());
  const ConfigLoadResult loaded = load_config_file(kTiny, all);
  EXPECT_TRUE(loaded.ok());
  std::ostringstream log;
  auto comm = make_local_communicator();
  Run r;
  r.summary = run_training(loaded.config, options, log, *comm);
  r.log = log.str();
  r.losses = testing_support::train_losses(out / "metrics.jsonl");
  r.adapter = testing_support::adapter_values(out);
  return r;
}

// On the emulated device a GPU thread is a fiber: 1/16 of the tiny config's tokens per step
// keeps each end-to-end run to seconds, and every op, shape class and code path still runs.
#if PEFTRUN_CUDA_EMULATION
const std::vector<std::string> kEmulationSize = {"train.micro_batch_size=2", "data.seq_len=32"};
#else
const std::vector<std::string> kEmulationSize = {};
#endif

void compare_runs(const std::string& adapter, const std::string& dtype, double loss_tol,
                  double adapter_tol) {
  const fs::path d = testing_support::fresh_dir("gpu_train_" + adapter + "_" + dtype);
  const std::vector<std::string> common = {"train.steps=12", "train.eval_every=0",
                                           "data.eval_batches=2", "adapter.type=" + adapter,
                                           "adapter.dropout=0.05"};
  std::vector<std::string> cpu_args = common, gpu_args = common;
  for (auto* args : {&cpu_args, &gpu_args}) {
    args->insert(args->end(), kEmulationSize.begin(), kEmulationSize.end());
  }
  cpu_args.push_back("runtime.device=cpu");
  gpu_args.push_back("runtime.device=cuda");
  gpu_args.push_back("runtime.compute_dtype=" + dtype);
  const Run cpu = train(d / "cpu", cpu_args);
  const Run gpu = train(d / "cuda", gpu_args);
  std::printf("%s", gpu.log.c_str());
  const std::string where = "train " + adapter + " " + dtype;
  ASSERT_EQ(cpu.losses.size(), gpu.losses.size());
  for (std::size_t i = 0; i < cpu.losses.size(); ++i) {
    std::printf("loss_curve %s step %zu cpu %.6f cuda %.6f\n", where.c_str(), i + 1, cpu.losses[i],
                gpu.losses[i]);
  }
  expect_close(where, "per-step loss", gpu.losses, cpu.losses, loss_tol);
  expect_scalar_close(where, "final eval loss", gpu.summary.final_eval_loss,
                      cpu.summary.final_eval_loss, loss_tol);
  expect_close(where, "adapter", gpu.adapter, cpu.adapter, adapter_tol);
  EXPECT_EQ(gpu.summary.device_allocations_in_loop, 0) << gpu.log;
  EXPECT_NE(gpu.summary.backend.find("cuda"), std::string::npos) << gpu.summary.backend;

  // peftrun eval on cuda: the trained adapter's held-out loss equals the run's last eval.
  std::vector<std::string> eval_args = {"data.eval_batches=2", "adapter.type=" + adapter,
                                        "runtime.device=cuda", "runtime.compute_dtype=" + dtype};
  eval_args.insert(eval_args.end(), kEmulationSize.begin(), kEmulationSize.end());
  const ConfigLoadResult loaded = load_config_file(kTiny, eval_args);
  ASSERT_TRUE(loaded.ok());
  std::ostringstream log;
  auto comm = make_local_communicator();
  EvalOptions eval;
  eval.adapter_dir = (d / "cuda").string();
  const EvalResult e = run_eval_command(loaded.config, eval, log, *comm);
  expect_scalar_close(where, "eval command loss", e.mean_loss, gpu.summary.final_eval_loss, 1e-6);
}

TEST(GpuTraining, LoraFp32MatchesTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  compare_runs("lora", "fp32", 1e-4, 2e-3);
}
TEST(GpuTraining, LoraBf16FollowsTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  compare_runs("lora", "bf16", 2e-2, 0.15);
}
TEST(GpuTraining, LoraFp16FollowsTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  compare_runs("lora", "fp16", 1e-2, 0.1);
}
TEST(GpuTraining, DoraFp32MatchesTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  compare_runs("dora", "fp32", 1e-4, 2e-3);
}
// AdaLoRA masks every step here: a triplet whose score sits at the threshold can be pruned on
// one side and kept on the other, so the adapters may differ more than the losses.
TEST(GpuTraining, AdaLoraFp32MatchesTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  compare_runs("adalora", "fp32", 1e-4, 5e-2);
}

// --- divergence on cuda ---------------------------------------------------------------------

// A run blown up on purpose (lr 1e30) on cuda: without --debug the non-finite loss of step 2
// ends it (NonFiniteError, exit code 3 in the CLI); with --debug the first non-finite device
// tensor is named with its op and layer. Neither leaves an adapter behind.
TEST(GpuTraining, DivergenceStopsTheRunAndDebugNamesTheTensor) {
  PEFTRUN_REQUIRE_GPU();
  const fs::path d = testing_support::fresh_dir("gpu_blow_up");
  const std::vector<std::string> args = {"optim.lr=1e30",
                                         "optim.max_grad_norm=0",
                                         "train.steps=3",
                                         "optim.warmup_steps=0",
                                         "data.eval=",
                                         "data.seq_len=32",
                                         "train.micro_batch_size=2",
                                         "runtime.device=cuda",
                                         "runtime.compute_dtype=fp32"};
  try {
    train(d / "plain", args);
    ADD_FAILURE() << "a diverged cuda run must stop";
  } catch (const NonFiniteError& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite loss at step 2"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(d / "plain/adapter_model.safetensors"));
  TrainOptions debug;
  debug.debug = true;
  try {
    train(d / "debug", args, debug);
    ADD_FAILURE() << "a diverged cuda run must stop under --debug too";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--debug: non-finite value"), std::string::npos) << what;
    EXPECT_NE(what.find("of layer 0 during forward"), std::string::npos) << what;
  }
  EXPECT_FALSE(fs::exists(d / "debug/adapter_model.safetensors"));
}

// fp16 dynamic loss scaling on cuda: after lr 1e30 blows the adapter up, every step's fp16
// forward overflows; each such step is skipped with the scale halved (the device's non-finite
// scan feeding the verdict), down to the floor of 1, where the next one ends the run.
TEST(GpuTraining, Fp16OverflowSkipsStepsHalvingTheScaleThenStops) {
  PEFTRUN_REQUIRE_GPU();
  const fs::path d = testing_support::fresh_dir("gpu_fp16_overflow");
  const std::vector<std::string> args = {"optim.lr=1e30",
                                         "optim.max_grad_norm=0",
                                         "train.steps=30",
                                         "optim.warmup_steps=0",
                                         "data.eval=",
                                         "data.seq_len=32",
                                         "train.micro_batch_size=2",
                                         "runtime.device=cuda",
                                         "runtime.compute_dtype=fp16"};
  try {
    train(d, args);
    ADD_FAILURE() << "an fp16 run whose every step overflows must stop at the scale's floor";
  } catch (const NonFiniteError& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite loss"), std::string::npos) << e.what();
  }
  std::vector<double> scales;
  for (const auto& r : testing_support::read_jsonl(d / "metrics.jsonl")) {
    if (!r.contains("loss_scale")) continue;
    if (r.value("skipped", false)) scales.push_back(r["loss_scale"].get<double>());
  }
  // Steps 2..17 run at 2^16 .. 2^1 and are skipped, each halving the scale; step 18 runs at
  // the floor, 1, and ends the run (it is not recorded).
  ASSERT_EQ(scales.size(), 16u);
  for (std::size_t i = 0; i < scales.size(); ++i) {
    EXPECT_EQ(scales[i], std::ldexp(1.0, 16 - static_cast<int>(i))) << "skip " << i;
  }
  EXPECT_FALSE(fs::exists(d / "adapter_model.safetensors"));
}

// --- resume on cuda -----------------------------------------------------------------------------

// 8 short steps with dropout and a checkpoint at step 4; AdaLoRA masks over steps 3..5, so the
// resume lands inside its budget phase (importance EMAs and masks come back from the checkpoint).
// Resuming from checkpoint-4 must continue bit for bit: the device state (adapter, AdamW moments,
// AdaLoRA's EMAs, the loss scale) goes through the host checkpoint and back unchanged.
void expect_bitwise_resume(const std::string& adapter, const std::string& dtype) {
  const fs::path d = testing_support::fresh_dir("gpu_resume_" + adapter + "_" + dtype);
  const fs::path out = d / "out";  // both runs use one path: it is part of the recorded config
  const std::vector<std::string> args = {"train.steps=8",
                                         "optim.warmup_steps=2",
                                         "data.eval=",
                                         "data.seq_len=32",
                                         "train.micro_batch_size=2",
                                         "adapter.dropout=0.1",
                                         "adapter.init_r=4",
                                         "adapter.target_r=2",
                                         "adapter.tinit=2",
                                         "adapter.tfinal=3",
                                         "checkpoint.every_steps=4",
                                         "adapter.type=" + adapter,
                                         "runtime.device=cuda",
                                         "runtime.compute_dtype=" + dtype};
  const Run full = train(out, args);
  ASSERT_EQ(full.summary.steps, 8) << full.log;
  fs::rename(out, d / "full");
  fs::create_directories(out);
  fs::copy(d / "full/checkpoint-4", out / "checkpoint-4", fs::copy_options::recursive);
  { std::ofstream(out / "latest") << "checkpoint-4\n"; }
  TrainOptions resume;
  resume.resume = "latest";
  const Run resumed = train(out, args, resume);
  EXPECT_NE(resumed.log.find("at step 4"), std::string::npos) << resumed.log;
  EXPECT_EQ(resumed.log.find("not bit for bit"), std::string::npos) << resumed.log;
  EXPECT_EQ(resumed.losses, testing_support::train_losses(d / "full/metrics.jsonl", 4));
  EXPECT_EQ(testing_support::file_bytes(out / "adapter_model.safetensors"),
            testing_support::file_bytes(d / "full/adapter_model.safetensors"));
  EXPECT_EQ(testing_support::file_bytes(out / "checkpoint-8/trainer_state.safetensors"),
            testing_support::file_bytes(d / "full/checkpoint-8/trainer_state.safetensors"));
}

TEST(GpuResume, LoraFp16ContinuesBitForBit) {
  PEFTRUN_REQUIRE_GPU();
  expect_bitwise_resume("lora", "fp16");
}
TEST(GpuResume, DoraBf16ContinuesBitForBit) {
  PEFTRUN_REQUIRE_GPU();
  expect_bitwise_resume("dora", "bf16");
}
TEST(GpuResume, AdaLoraFp32ContinuesBitForBit) {
  PEFTRUN_REQUIRE_GPU();
  expect_bitwise_resume("adalora", "fp32");
}

}  // namespace
}  // namespace peftrun::gpu_testing
