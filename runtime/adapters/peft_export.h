// Writes an adapter in HF PEFT's on-disk format, loadable by PeftModel.from_pretrained and vLLM
// without conversion (DESIGN §4): `adapter_model.safetensors` (fp32 tensors under PEFT's key
// names) + `adapter_config.json` (PEFT's LoraConfig fields). Each file is written atomically.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "configs/config.h"
#include "runtime/adapters/adapter_layout.h"

namespace peftrun {

// The adapter_config.json object for this config.
nlohmann::json peft_adapter_config(const Config& config);

// Creates `dir` if needed and writes both files. Throws std::runtime_error naming the file.
void write_peft_adapter(const std::string& dir, const Config& config, const AdapterLayout& layout,
                        const float* params);

}  // namespace peftrun
