// The resolved training configuration: every key of train.yaml, with defaults filled in.
//
// Loading (configs/config_loader.cpp) parses YAML with yaml-cpp, applies `--set key.path=value`
// overrides, and validates everything before any work starts. Problems are collected, not
// thrown one at a time, so a user sees every mistake in one run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace peftrun {

enum class AdapterType { kLora, kDora, kAdaLora };
enum class LrSchedule { kConstant, kLinear, kCosine };
enum class DeviceKind { kAuto, kCpu, kCuda };
// runtime.compute_dtype: the activations' storage type on the GPU. kAuto = bf16 on cuda, fp32
// on the CPU (which always computes in fp32).
enum class ComputeDtype { kAuto, kFp32, kFp16, kBf16 };
// data.format: pre-tokenized token files, or JSONL tokenized by the model's tokenizer.json.
// kSame is data.eval_format's default only: the eval file has the training format.
enum class DataFormat { kSame, kTokens, kText, kPromptCompletion, kChat };
// data.chat_template: kAuto detects the family from the tokenizer's own chat template.
enum class ChatTemplate { kAuto, kChatml, kLlama3, kLlama2, kMistral, kGemma };
// model.rope_scaling: HF's RoPE variants (rope_type "default", "linear", "dynamic", "llama3",
// "yarn"); kNone is plain RoPE ("default").
enum class RopeScaling { kNone, kLinear, kDynamic, kLlama3, kYarn, kLongrope };
// model.mlp_activation: the gated MLP's activation, down(act(gate(x)) * up(x)): silu (SwiGLU:
// LLaMA, Mistral, Qwen) or GELU's tanh approximation (GeGLU: Gemma; HF's gelu_pytorch_tanh).
enum class MlpActivation { kSilu, kGeluTanh };

const char* to_string(AdapterType t);   // "lora" | "dora" | "adalora"
const char* to_string(LrSchedule s);    // "constant" | "linear" | "cosine"
const char* to_string(DeviceKind d);    // "auto" | "cpu" | "cuda"
const char* to_string(ComputeDtype d);  // "auto" | "fp32" | "fp16" | "bf16"
const char* to_string(DataFormat f);    // "same" | "tokens" | "text" | "prompt_completion" | "chat"
const char* to_string(ChatTemplate t);  // "auto" | "chatml" | "llama3" | "llama2" | "mistral" |
                                        // "gemma"
const char* to_string(RopeScaling s);   // "none" | "linear" | "dynamic" | "llama3" | "yarn" |
                                        // "longrope"
const char* to_string(MlpActivation a);  // "silu" | "gelu_tanh"

// The seven projections of a layer, in the order layers hold them (the runtime's Proj), and so
// the names LoRA may target in every model but those with model.fused_projections.
inline const std::vector<std::string>& all_target_modules() {
  static const std::vector<std::string> names = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

// The Linear modules of a model with model.fused_projections (Phi-3), in layer order: qkv_proj
// holds q, k, v and gate_up_proj holds gate, up, each as one module for PEFT.
inline const std::vector<std::string>& fused_target_modules() {
  static const std::vector<std::string> names = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"};
  return names;
}

// Every name adapter.target_modules accepts, in the order the key stores them; "all-linear"
// stores them all until the loader knows the model (resolve_target_modules).
inline const std::vector<std::string>& known_target_modules() {
  static const std::vector<std::string> names = {"q_proj",   "k_proj",       "v_proj",
                                                 "qkv_proj", "o_proj",       "gate_proj",
                                                 "up_proj",  "gate_up_proj", "down_proj"};
  return names;
}

struct ModelConfig {
  // HF checkpoint folder; empty = random base from train.seed. When set, the shape fields below
  // come from its config.json (configs/hf_model_config.h).
  std::string path;
  int dim = 128;
  int n_layers = 4;
  int n_heads = 4;
  int n_kv_heads = 2;
  // model.head_dim: the width of one attention head; 0 = dim / n_heads. Models such as Qwen3 and
  // Mistral-Nemo set it apart, so q/k/v/o are [n_heads * head_dim] wide rather than [dim].
  int explicit_head_dim = 0;
  int ffn_dim = 384;
  int vocab_size = 256;
  int max_seq_len = 256;
  double rope_theta = 10000.0;
  // RoPE's frequency scaling, HF's rope_scaling / rope_parameters (docs/CONFIG.md); the
  // parameters below it only apply to the variants named beside them.
  RopeScaling rope_scaling = RopeScaling::kNone;
  double rope_factor = 1.0;            // linear, dynamic, llama3, yarn, longrope
  double rope_low_freq_factor = 1.0;   // llama3
  double rope_high_freq_factor = 4.0;  // llama3
  int rope_original_max_seq_len = 0;   // llama3, yarn, longrope: pretraining context; 0 = max
  double rope_beta_fast = 32.0;        // yarn
  double rope_beta_slow = 1.0;         // yarn
  // yarn, longrope: cos / sin factor; 0 = yarn's 0.1 ln(factor) + 1, longrope's
  // sqrt(1 + ln(factor) / ln(original)) (1 when factor <= 1)
  double rope_attention_factor = 0.0;
  bool rope_truncate = true;  // yarn
  // model.partial_rotary_factor (transformers' name): RoPE rotates the first
  // rotary_dim() = int(head_dim * factor) channels of each head and passes the rest (Phi-4-mini:
  // 0.75); every frequency table then has rotary_dim / 2 entries.
  double partial_rotary_factor = 1.0;
  // longrope (Phi-3's): the per-dimension divisors of the frequencies, [head_dim / 2] each;
  // short for a micro-batch whose positions all fit the original context, long otherwise.
  std::vector<double> rope_short_factor, rope_long_factor;
  bool tie_embeddings = false;
  // model.qk_norm: an RMSNorm over each head of q and k (weights [head_dim]) between the
  // projection and RoPE, as Qwen3 has; config.json's model_type qwen3 sets it.
  bool qk_norm = false;
  // model.qk_norm_full_width: those norms run over all heads of q and of k at once (weights
  // [n_heads * head_dim], [n_kv_heads * head_dim]), as OLMo 2's; false = per head (Qwen3).
  bool qk_norm_full_width = false;
  MlpActivation mlp_activation = MlpActivation::kSilu;
  // model.norm_one_plus_weight: every RMSNorm scales by 1 + weight rather than weight (Gemma
  // stores its norm weights around 0); config.json's model_type gemma sets it.
  bool norm_one_plus_weight = false;
  // model.scale_embeddings: the embedding rows are multiplied by sqrt(dim), rounded to the
  // compute dtype as transformers' Gemma normalizer (the tied lm_head reads the table unscaled).
  bool scale_embeddings = false;
  // model.sandwich_norms: two more RMSNorms per layer, on the attention output and on the MLP
  // output before each residual add (Gemma 2 / 3's post_attention_layernorm and
  // post_feedforward_layernorm; their pre_feedforward_layernorm is the usual MLP norm).
  bool sandwich_norms = false;
  // model.input_norms: each block normalises its input (input_layernorm before attention, the
  // MLP norm before the MLP); false = OLMo 2, which normalises only the blocks' outputs
  // (sandwich_norms' two norms).
  bool input_norms = true;
  // model.query_pre_attn_scalar: attention scores are scaled by 1 / sqrt(this) instead of
  // 1 / sqrt(head_dim) (Gemma 2 / 3); 0 = head_dim.
  double query_pre_attn_scalar = 0.0;
  // model.rope_local_theta: the RoPE base of the sliding-window layers (Gemma 3's
  // rope_local_base_freq), plain RoPE without model.rope_scaling; 0 = every layer uses
  // rope_theta and its scaling.
  double rope_local_theta = 0.0;
  // model.attn_logit_softcapping / model.final_logit_softcapping (transformers' names): the
  // attention scores (after the scale, before the mask) and the lm_head's logits (before the
  // cross-entropy) become cap * tanh(x / cap), as in Gemma 2 (50 and 30); 0 = no cap.
  double attn_logit_softcapping = 0.0;
  double final_logit_softcapping = 0.0;
  // Granite's four multipliers (transformers' names): the embedding rows are multiplied by
  // embedding_multiplier, each block's output by residual_multiplier before its residual add,
  // the attention scores are scaled by attention_multiplier (0 = 1 / sqrt(head_dim), or
  // query_pre_attn_scalar's), and the logits divided by logits_scaling.
  double embedding_multiplier = 1.0;
  double residual_multiplier = 1.0;
  double attention_multiplier = 0.0;
  double logits_scaling = 1.0;
  // model.sliding_window: sliding-window attention over this many keys (a query sees itself and
  // the window - 1 tokens before it, transformers' rule); 0 = none.
  int sliding_window = 0;
  // model.layer_types: per layer "full_attention" or "sliding_attention" (transformers'
  // layer_types); empty = every layer slides when sliding_window > 0.
  std::vector<std::string> layer_types;
  // model.no_rope_layers: per layer 1 when it applies RoPE and 0 when it does not (NoPE), as
  // transformers' SmolLM3 names them; empty = every layer rotates.
  std::vector<int> no_rope_layers;
  // model.fused_projections: each layer's q, k, v are one Linear, qkv_proj
  // [(n_heads + 2 n_kv_heads) head_dim, dim], and gate, up one Linear, gate_up_proj
  // [2 ffn_dim, dim] (gate's rows first), as Phi-3 stores them; adapters then target those
  // modules (adapter.target_modules names them) and share one A across the pieces.
  bool fused_projections = false;
  double norm_eps = 1e-5;
  // Random base only: std of the embedding table. Linear weights use N(0, 1/fan_in) so a frozen
  // random model still passes signal (see runtime/base_weights.cpp).
  double init_std = 1.0;
  // Not a YAML key: which projections carry a bias (bit p = index in all_target_modules(); the
  // runtime's BiasMask). Only a checkpoint's config.json sets it (Qwen2: q, k, v), so a random
  // base and every YAML round trip keep 0.
  unsigned proj_bias_mask = 0;
  // Not a YAML key either: the checkpoint is a multimodal Gemma 3 (config.json's model_type
  // gemma3, Gemma3ForConditionalGeneration), whose decoder peftrun trains: its tensors sit under
  // language_model.model., its modules under model.language_model., and the vision tower and
  // projector are carried along unchanged by merge. Only a checkpoint's config.json sets it.
  bool multimodal_checkpoint = false;

  int head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : dim / n_heads; }
  // The channels of each head RoPE rotates: int(head_dim * partial_rotary_factor), as
  // transformers truncates it.
  int rotary_dim() const { return static_cast<int>(head_dim() * partial_rotary_factor); }
  // The width of a q_norm / k_norm weight over `heads` heads (n_heads for q, n_kv_heads for k).
  int qk_norm_width(int heads) const {
    return qk_norm_full_width ? heads * head_dim() : head_dim();
  }
  bool operator==(const ModelConfig&) const = default;
};

struct AdapterConfig {
  AdapterType type = AdapterType::kLora;
  int r = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};
  bool use_rslora = false;
  // Start from an existing HF PEFT adapter folder of the same type (empty = PEFT's init).
  std::string init_from;

  // AdaLoRA only (HF PEFT's AdaLoraConfig names and defaults). The rank of every module starts
  // at init_r (adapter.r is not used) and the global budget shrinks to target_r per module.
  int init_r = 12;
  int target_r = 8;
  int tinit = 0;        // steps of warm-up before any masking
  int tfinal = 0;       // final steps with the mask fixed
  int deltaT = 1;       // mask every deltaT steps during the budget phase
  double beta1 = 0.85;  // EMA of sensitivity
  double beta2 = 0.85;  // EMA of uncertainty
  double orth_reg_weight = 0.5;
  int total_step = 0;  // 0 = train.steps
  int adalora_total_step(int train_steps) const {
    return total_step > 0 ? total_step : train_steps;
  }

  // s = alpha / r, or alpha / sqrt(r) with rsLoRA (HF PEFT's definition).
  double scaling() const;
  bool operator==(const AdapterConfig&) const = default;
};

struct DataConfig {
  std::string
      train;  // token file (docs/DATA.md); relative paths resolve against the config's folder
  std::string eval;  // held-out token file; empty = no evaluation
  int seq_len = 128;
  int eval_batches = 8;  // micro-batches per evaluation
  DataFormat format = DataFormat::kTokens;
  DataFormat eval_format = DataFormat::kSame;
  // Folder with tokenizer.json (or the file) for the JSONL formats; empty = model.path.
  std::string tokenizer;
  // true: documents packed into full rows (positions and attention restart per document);
  // false: one document (or piece of one) per row, padded.
  bool packing = true;
  bool skip_bad_lines = false;  // skip (and count) malformed JSONL lines instead of failing
  ChatTemplate chat_template = ChatTemplate::kAuto;
  bool append_eos = true;  // end every text document and completion with the tokenizer's EOS

  DataFormat effective_eval_format() const {
    return eval_format == DataFormat::kSame ? format : eval_format;
  }

  bool operator==(const DataConfig&) const = default;
};

struct TrainConfig {
  int steps = 200;
  // > 0: the run's length in passes over the training data instead of steps (transformers'
  // num_train_epochs); both in the file is an error, a --set of either overrides the other.
  // The trainer turns it into steps once the data's rows are known (resolve_epochs below).
  double epochs = 0.0;
  int micro_batch_size = 8;
  int grad_accum = 1;
  std::uint64_t seed = 1234;
  int eval_every = 50;  // 0 = only at the start and the end
  int log_every = 1;

  bool operator==(const TrainConfig&) const = default;
};

struct OptimConfig {
  double lr = 3e-3;
  double beta1 = 0.9;  // YAML: betas: [beta1, beta2]
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  LrSchedule schedule = LrSchedule::kCosine;
  int warmup_steps = 10;
  // > 0: warmup_steps = ceil(warmup_ratio * train.steps), as transformers' warmup_ratio (the
  // loader resolves it, or resolve_epochs; both in the file is an error, a --set of either
  // overrides the other). 0 = warmup_steps as given.
  double warmup_ratio = 0.0;
  double max_grad_norm = 1.0;  // 0 = no clipping
  double min_lr_ratio = 0.0;   // floor of linear/cosine decay, as a fraction of lr

  bool operator==(const OptimConfig&) const = default;
};

struct CheckpointConfig {
  int every_steps = 0;  // 0 = only the final adapter
  int keep_last = 3;

  bool operator==(const CheckpointConfig&) const = default;
};

struct RuntimeConfig {
  DeviceKind device = DeviceKind::kAuto;
  // Activations on the GPU (parameters, gradients and optimizer state are fp32 always); fp16
  // turns on dynamic loss scaling. The CPU computes in fp32 whatever this says.
  ComputeDtype compute_dtype = ComputeDtype::kAuto;
  int threads = 0;  // 0 = all cores
  // With several ranks, each keeps only 1/world of every layer's fp16 weights and all-gathers a
  // layer just before use. Ignored (nothing to shard) with one rank.
  bool shard_base = true;
  // Gradient checkpointing: keep only each layer's input from the forward and recompute the
  // layer's activations just before its backward. Bit-identical results for one more forward
  // of every layer (with the base frozen, ~1.5x a step's FLOPs);
  // activation memory falls from every layer's set to the layer inputs plus one layer's set.
  bool gradient_checkpointing = false;

  bool operator==(const RuntimeConfig&) const = default;
};

struct CommConfig {
  double timeout_s = 600;  // every collective; a dead or stuck peer ends the job after this
  // Gradient all-reduce bucket size: whole layers grouped from the top until a bucket holds at
  // least this much; each bucket's reduction starts as soon as backward has left it.
  double bucket_mb = 25;

  bool operator==(const CommConfig&) const = default;
};

struct Config {
  ModelConfig model;
  AdapterConfig adapter;
  DataConfig data;
  TrainConfig train;
  OptimConfig optim;
  CheckpointConfig checkpoint;
  RuntimeConfig runtime;
  CommConfig comm;
  std::string output_dir = "runs/tiny";  // relative to the working directory

  std::string source_file;  // where it was read from ("<embedded>" for the built-in default)

  // Member-wise, source_file included (tests compare round trips with it set equal).
  bool operator==(const Config&) const = default;
};

// One problem with a config, printed as `FILE:LINE:COL: key.path: message`.
struct ConfigError {
  std::string file;
  int line = 0;  // 1-based; 0 when unknown (e.g. a missing required key)
  int column = 0;
  std::string key;      // dotted path, e.g. "adapter.r"
  std::string message;  // what was wrong and what was expected

  std::string format() const;
};

struct ConfigLoadResult {
  Config config;
  std::vector<ConfigError> errors;  // empty = valid
  bool ok() const { return errors.empty(); }
};

// Reads a YAML file, applies overrides ("a.b=value"), validates. Never throws for bad input.
ConfigLoadResult load_config_file(const std::string& path,
                                  const std::vector<std::string>& overrides = {});

// Same, from text; `file_name` is used in messages and `base_dir` resolves relative paths.
ConfigLoadResult load_config_text(const std::string& yaml_text, const std::string& file_name,
                                  const std::string& base_dir,
                                  const std::vector<std::string>& overrides = {});

// The fully resolved config as YAML (what `peftrun check` prints); loads back to the same Config.
std::string config_to_yaml(const Config& config);

// train.epochs > 0, once the training data is open: the same config with train.steps =
// ceil(epochs * rows_per_epoch / global_batch) (at least 1) and train.epochs = 0, so that it
// reads, checkpoints and resumes like a steps-based run. It is validated again as a whole:
// optim.warmup_ratio now applies, and the rules that read train.steps (warmup_steps <= steps,
// AdaLoRA's schedule) run. Throws std::runtime_error listing every problem.
Config resolve_epochs(const Config& config, std::uint64_t rows_per_epoch,
                      std::uint64_t global_batch);

// configs/tiny.yaml as compiled into the binary.
const char* embedded_default_config();

}  // namespace peftrun
