#include "runtime/adapters/peft_export.h"

#include <cmath>
#include <filesystem>
#include <span>

#include "runtime/io/file_io.h"
#include "runtime/io/safetensors.h"

namespace peftrun {

namespace {
// PEFT declares r and lora_alpha as ints; write integral values as JSON integers so strict
// loaders see exactly what PEFT itself would have saved.
nlohmann::json number(double v) {
  if (std::floor(v) == v && std::fabs(v) < 1e15) return static_cast<long long>(v);
  return v;
}
}  // namespace

nlohmann::json peft_adapter_config(const Config& config) {
  const AdapterConfig& a = config.adapter;
  nlohmann::json j;
  j["peft_type"] = "LORA";
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] =
      config.model.path.empty() ? nlohmann::json(nullptr) : nlohmann::json(config.model.path);
  j["r"] = a.r;
  j["lora_alpha"] = number(a.alpha);
  j["lora_dropout"] = a.dropout;
  j["target_modules"] = a.target_modules;
  j["use_rslora"] = a.use_rslora;
  j["use_dora"] = false;
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["init_lora_weights"] = true;
  j["inference_mode"] = true;
  j["modules_to_save"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["rank_pattern"] = nlohmann::json::object();
  j["alpha_pattern"] = nlohmann::json::object();
  j["revision"] = nullptr;
  return j;
}

void write_peft_adapter(const std::string& dir, const Config& config, const AdapterLayout& layout,
                        const float* params) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create adapter folder '" + dir + "': " + ec.message());

  SafetensorsWriter st;
  for (const TrainableTensor& t : layout.tensors()) {
    st.add_f32(t.name, t.shape, std::span<const float>(params + t.offset, t.numel()));
  }
  st.set_metadata("format", "pt");
  st.set_metadata("producer", std::string("peftrun ") + PEFTRUN_VERSION);
  st.write(dir + "/adapter_model.safetensors");

  const std::string text = peft_adapter_config(config).dump(2) + "\n";
  const ByteChunk chunk(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
  write_file_atomic(dir + "/adapter_config.json", std::span<const ByteChunk>(&chunk, 1));
}

}  // namespace peftrun
