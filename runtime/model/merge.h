// `peftrun merge`: the base model with a trained adapter folded into its weights, written as a
// Hugging Face checkpoint folder that transformers loads (AutoModelForCausalLM.from_pretrained)
// and peftrun itself uses as `model.path`:
//
//   config.json             the base's own (model.path) with its dtype entry updated, or, for a
//                           random base, a LlamaForCausalLM config made from the model section
//   model.safetensors       every tensor in fp16 or bf16 (default: as the base); above
//                           max_shard_bytes instead model-0000K-of-0000N.safetensors +
//                           model.safetensors.index.json
//   tokenizer files, generation_config.json    copied from model.path when present
//   peftrun_merge.json      what was merged; marks the folder as a merge output
//
// Each adapted projection weight becomes W' (runtime/adapters/adapter_merge.h); every other
// tensor (norms, embeddings, biases, unadapted projections, lm_head) is the base's, unchanged.
// Base tensors are read from the checkpoint in fp32 (F32/F16/BF16 widen exactly), merged in
// fp32 and rounded once to the output dtype, so an fp16 tensor written as fp16 or a bf16 one as
// bf16 keeps its bits. A random base (no model.path) is the one training used (train.seed), so
// the merged folder is always a complete model.
//
// The folder is written into a temporary sibling and renamed into place (StagedFolder): a failed
// merge leaves --out as it was. Tensors are read, merged and written one at a time, so memory
// holds one tensor (plus the adapter), not the model.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "configs/config.h"
#include "runtime/io/safetensors.h"

namespace peftrun {

struct MergeOptions {
  std::string adapter_dir;  // the PEFT adapter folder; empty = adapter.init_from
  std::string out_dir;      // the folder to write
  // kF16 or kBF16; unset = the base's own: bf16 when the checkpoint stores its projection
  // weights as BF16, else fp16 (F16 and F32 checkpoints, and the random base)
  std::optional<TensorDType> dtype;
  std::uint64_t max_shard_bytes = 5'000'000'000;  // one file up to this size (HF's "5GB")
  bool force = false;  // replace a non-empty --out that is not a merge output
};

// A refusal found before any work (no adapter named, --out exists and may not be replaced, or
// --out would swallow an input): the command line must change. Everything else that fails is a
// std::runtime_error naming the file or tensor.
class MergeRefused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct MergeSummary {
  std::string out_dir;
  std::vector<std::string> weight_files;  // in --out, in order
  std::size_t tensors = 0;
  std::size_t merged_modules = 0;
  std::uint64_t weight_bytes = 0;
  bool replaced = false;                     // --out existed and was replaced
  std::vector<std::string> copied_files;     // from model.path (tokenizer, generation config)
  std::vector<std::string> dropped_tensors;  // in the base checkpoint but not part of the model
  // A multimodal Gemma 3's vision tower and projector tensors, copied unchanged (in `tensors`).
  std::size_t carried_tensors = 0;
  TensorDType dtype = TensorDType::kF16;  // what the weights were written as
};

// The marker file of a merge output.
inline constexpr const char* kMergeMarkerFile = "peftrun_merge.json";

// Merges options.adapter_dir into the config's base and writes options.out_dir. The adapter
// must describe the config's adapter (type, rank, alpha, targets; read_peft_adapter's checks).
// Throws MergeRefused or std::runtime_error (see above).
MergeSummary merge_adapter(const Config& config, const MergeOptions& options, std::ostream& log);

// A size like transformers' max_shard_size: "5GB", "500MB", "200kB" (powers of 1000), "2GiB",
// "64MiB", "16KiB" (powers of 1024), or a plain byte count. Throws std::invalid_argument saying
// what is accepted.
std::uint64_t parse_byte_size(const std::string& text);

}  // namespace peftrun
