// HF PEFT's on-disk adapter format, both ways, so adapters load in PeftModel.from_pretrained
// and vLLM without conversion and training can start from an existing PEFT adapter (DESIGN §4):
// `adapter_model.safetensors` (tensors under PEFT's key names) + `adapter_config.json`.
//
// AdaLoRA: once a rank pattern is fixed PEFT saves only the kept triplets (rows of lora_A and
// lora_E, columns of lora_B) and writes `rank_pattern` as per-module boolean lists of length
// init_r; before that it saves the full init_r tensors. Both are written and read here.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "configs/config.h"
#include "runtime/adapters/adapter_layout.h"

namespace peftrun {

// Per adapted module (layout order), which of the init_r triplets are kept.
using RankPattern = std::vector<std::vector<bool>>;

// The adapter_config.json object; `rank_pattern` only for AdaLoRA (nullptr = not fixed yet).
nlohmann::json peft_adapter_config(const Config& config, const AdapterLayout& layout,
                                   const RankPattern* rank_pattern = nullptr);

// Creates `dir` if needed and writes both files (each atomically). Throws std::runtime_error
// naming the file.
void write_peft_adapter(const std::string& dir, const Config& config, const AdapterLayout& layout,
                        const float* params, const RankPattern* rank_pattern = nullptr);

// Reads a PEFT adapter folder into the flat params buffer. The folder must describe the same
// adapter as `config` (type, rank, alpha, target modules): every difference is an error naming
// adapter_config.json, the field, and both values. Every tensor of the layout must be present
// with the right shape (F32/F16/BF16 accepted); missing, misshapen and unexpected tensors are
// errors naming the file and the tensor. For AdaLoRA, a saved rank_pattern is returned in
// `rank_pattern_out` (left empty otherwise) and pruned triplets are filled with zeros.
void read_peft_adapter(const std::string& dir, const Config& config, const AdapterLayout& layout,
                       float* params, RankPattern* rank_pattern_out = nullptr);

}  // namespace peftrun
