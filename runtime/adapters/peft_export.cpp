#include "runtime/adapters/peft_export.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <span>
#include <sstream>

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

const char* peft_type(AdapterType t) {
  return t == AdapterType::kAdaLora ? "ADALORA" : "LORA";
}

// "base_model.model.model.layers.0.self_attn.q_proj" for module i.
std::string module_prefix(const AdaptedModule& m) {
  return "base_model.model." + m.module;
}

// adapter_config.json's target_modules: the module names, or, for a multimodal Gemma 3, a
// pattern PEFT full-matches against module paths, so that the vision tower's q_proj / k_proj /
// v_proj (SigLIP's) are not adapted as well.
nlohmann::json peft_target_modules(const Config& config) {
  const std::vector<std::string>& names = config.adapter.target_modules;
  if (!config.model.multimodal_checkpoint) return names;
  std::string alternatives;
  for (const std::string& n : names) alternatives += (alternatives.empty() ? "" : "|") + n;
  return R"(model\.language_model\.layers\.\d+\.(self_attn|mlp)\.()" + alternatives + ")";
}

std::size_t kept(const std::vector<bool>& mask) {
  return static_cast<std::size_t>(std::count(mask.begin(), mask.end(), true));
}

}  // namespace

nlohmann::json peft_adapter_config(const Config& config, const AdapterLayout& layout,
                                   const RankPattern* rank_pattern) {
  const AdapterConfig& a = config.adapter;
  nlohmann::json j;
  j["peft_type"] = peft_type(a.type);
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] =
      config.model.path.empty() ? nlohmann::json(nullptr) : nlohmann::json(config.model.path);
  // AdaLoRA ignores `r` (init_r and target_r set the ranks). PEFT saves LoraConfig's default 8
  // there and AdaLoraConfig warns on load whenever r != 8, so write 8 as PEFT itself does
  // (writing target_r made every peftrun AdaLoRA adapter warn in PeftModel.from_pretrained).
  j["r"] = a.type == AdapterType::kAdaLora ? 8 : a.r;
  j["lora_alpha"] = number(a.alpha);
  j["lora_dropout"] = a.dropout;
  j["target_modules"] = peft_target_modules(config);
  j["use_rslora"] = a.use_rslora;
  j["use_dora"] = a.type == AdapterType::kDora;
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["init_lora_weights"] = true;
  j["inference_mode"] = true;
  j["modules_to_save"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["alpha_pattern"] = nlohmann::json::object();
  j["revision"] = nullptr;
  j["rank_pattern"] = nlohmann::json::object();
  if (a.type == AdapterType::kAdaLora) {
    j["init_r"] = a.init_r;
    j["target_r"] = a.target_r;
    j["tinit"] = a.tinit;
    j["tfinal"] = a.tfinal;
    j["deltaT"] = a.deltaT;
    j["beta1"] = a.beta1;
    j["beta2"] = a.beta2;
    j["orth_reg_weight"] = a.orth_reg_weight;
    j["total_step"] = a.adalora_total_step(config.train.steps);
    if (rank_pattern) {
      nlohmann::json rp = nlohmann::json::object();
      for (std::size_t i = 0; i < layout.modules().size(); ++i) {
        rp[layout.modules()[i].module + ".lora_E"] = (*rank_pattern)[i];
      }
      // PEFT keys the pattern relative to the base model ("model.layers.0...lora_E").
      j["rank_pattern"] = rp;
    } else {
      j["rank_pattern"] = nullptr;
    }
  }
  return j;
}

void write_peft_adapter(const std::string& dir, const Config& config, const AdapterLayout& layout,
                        const float* params, const RankPattern* rank_pattern) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create adapter folder '" + dir + "': " + ec.message());

  SafetensorsWriter st;
  const bool sliced = layout.type() == AdapterType::kAdaLora && rank_pattern != nullptr;
  if (!sliced) {
    for (const TrainableTensor& t : layout.tensors()) {
      st.add_f32(t.name, t.shape, std::span<const float>(params + t.offset, t.numel()));
    }
  } else {
    // Keep only the triplets of the rank pattern: rows of A [r, in] and E [r, 1], columns of
    // B [out, r].
    for (std::size_t i = 0; i < layout.modules().size(); ++i) {
      const AdaptedModule& m = layout.modules()[i];
      const std::vector<bool>& mask = (*rank_pattern)[i];
      const std::int64_t k = static_cast<std::int64_t>(kept(mask));
      std::vector<float> a, b, e;
      for (int row = 0; row < m.r; ++row) {
        if (!mask[row]) continue;
        a.insert(a.end(), params + m.a + std::size_t(row) * m.shape.in,
                 params + m.a + std::size_t(row + 1) * m.shape.in);
        e.push_back(params[m.e + row]);
      }
      for (int o = 0; o < m.shape.out; ++o) {
        for (int col = 0; col < m.r; ++col) {
          if (mask[col]) b.push_back(params[m.b + std::size_t(o) * m.r + col]);
        }
      }
      const std::string prefix = module_prefix(m);
      st.add_f32(prefix + ".lora_A", {k, m.shape.in}, a);
      st.add_f32(prefix + ".lora_B", {m.shape.out, k}, b);
      st.add_f32(prefix + ".lora_E", {k, 1}, e);
    }
  }
  st.set_metadata("format", "pt");
  st.set_metadata("producer", std::string("peftrun ") + PEFTRUN_VERSION);
  st.write(dir + "/adapter_model.safetensors");

  const std::string text = peft_adapter_config(config, layout, rank_pattern).dump(2) + "\n";
  const ByteChunk chunk(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
  write_file_atomic(dir + "/adapter_config.json", std::span<const ByteChunk>(&chunk, 1));
}

namespace {

[[noreturn]] void mismatch(const std::string& file, const std::string& field,
                           const std::string& theirs, const std::string& key,
                           const std::string& ours) {
  throw std::runtime_error(file + ": " + field + " is " + theirs + " but " + key + " is " + ours +
                           "; the adapter must describe the same adapter as the config");
}

template <typename V>
std::string str(const V& v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

}  // namespace

void read_peft_adapter(const std::string& dir, const Config& config, const AdapterLayout& layout,
                       float* params, RankPattern* rank_pattern_out) {
  const std::string cfg_path = dir + "/adapter_config.json";
  const std::string st_path = dir + "/adapter_model.safetensors";
  std::ifstream in(cfg_path);
  if (!in) throw std::runtime_error("cannot open '" + cfg_path + "' (is this a PEFT adapter?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error(cfg_path + ": not valid JSON: " + e.what());
  }
  const AdapterConfig& a = config.adapter;
  auto field = [&](const char* name) -> const nlohmann::json& {
    if (!j.contains(name)) throw std::runtime_error(cfg_path + ": missing field '" + name + "'");
    return j[name];
  };
  try {
    const std::string type = field("peft_type").get<std::string>();
    if (type != peft_type(a.type))
      mismatch(cfg_path, "peft_type", type, "adapter.type", to_string(a.type));
    const bool dora = j.value("use_dora", false);
    if (dora != (a.type == AdapterType::kDora)) {
      mismatch(cfg_path, "use_dora", dora ? "true" : "false", "adapter.type", to_string(a.type));
    }
    if (a.type == AdapterType::kAdaLora) {
      const int init_r = field("init_r").get<int>();
      if (init_r != a.init_r)
        mismatch(cfg_path, "init_r", str(init_r), "adapter.init_r", str(a.init_r));
    } else {
      const int r = field("r").get<int>();
      if (r != a.r) mismatch(cfg_path, "r", str(r), "adapter.r", str(a.r));
      const bool rs = j.value("use_rslora", false);
      if (rs != a.use_rslora)
        mismatch(cfg_path, "use_rslora", str(rs), "adapter.use_rslora", str(a.use_rslora));
    }
    const double alpha = field("lora_alpha").get<double>();
    if (alpha != a.alpha)
      mismatch(cfg_path, "lora_alpha", str(alpha), "adapter.alpha", str(a.alpha));
    std::set<std::string> theirs, ours(a.target_modules.begin(), a.target_modules.end());
    const auto& tm = field("target_modules");
    if (tm.is_string() && tm != peft_target_modules(config)) {
      // (The one pattern read is the one peftrun writes for these modules of a multimodal
      // Gemma 3.)
      throw std::runtime_error(cfg_path + ": target_modules '" + tm.get<std::string>() +
                               "' is a pattern other than " + peft_target_modules(config).dump() +
                               "; peftrun reads adapters with an explicit module list");
    }
    if (tm.is_string()) {
      theirs = ours;
    } else {
      for (const auto& m : tm) theirs.insert(m.get<std::string>());
    }
    if (theirs != ours) {
      std::string t, o;
      for (const auto& s : theirs) t += (t.empty() ? "" : ",") + s;
      for (const auto& s : ours) o += (o.empty() ? "" : ",") + s;
      mismatch(cfg_path, "target_modules", "[" + t + "]", "adapter.target_modules", "[" + o + "]");
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(cfg_path + ": a field has the wrong type: " + e.what());
  }

  // AdaLoRA rank pattern: sliced tensors hold only the kept triplets.
  RankPattern pattern;
  if (a.type == AdapterType::kAdaLora && j.contains("rank_pattern") &&
      j["rank_pattern"].is_object() && !j["rank_pattern"].empty()) {
    for (const AdaptedModule& m : layout.modules()) {
      const std::string key = m.module + ".lora_E";
      if (!j["rank_pattern"].contains(key)) {
        throw std::runtime_error(cfg_path + ": rank_pattern has no entry for '" + key + "'");
      }
      std::vector<bool> mask;
      for (const auto& v : j["rank_pattern"][key]) mask.push_back(v.get<bool>());
      if (int(mask.size()) != m.r) {
        throw std::runtime_error(cfg_path + ": rank_pattern['" + key + "'] has " +
                                 std::to_string(mask.size()) +
                                 " entries, expected init_r = " + std::to_string(m.r));
      }
      pattern.push_back(std::move(mask));
    }
  }

  SafetensorsReader reader(st_path);
  std::set<std::string> expected;
  std::fill(params, params + layout.total(), 0.0f);
  auto read_exact = [&](const std::string& name, std::vector<std::int64_t> shape) {
    expected.insert(name);
    const TensorInfo& info = reader.info(name);  // throws naming file + tensor when missing
    if (info.shape != shape) {
      std::string want, got;
      for (auto d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
      for (auto d : info.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
      throw std::runtime_error(st_path + ": tensor '" + name + "' has shape [" + got +
                               "], expected [" + want + "]");
    }
    return reader.read_tensor_f32(name);
  };
  if (pattern.empty()) {
    for (const TrainableTensor& t : layout.tensors()) {
      const std::vector<float> v = read_exact(t.name, t.shape);
      std::copy(v.begin(), v.end(), params + t.offset);
    }
  } else {
    for (std::size_t i = 0; i < layout.modules().size(); ++i) {
      const AdaptedModule& m = layout.modules()[i];
      const std::int64_t k = static_cast<std::int64_t>(kept(pattern[i]));
      const std::string prefix = module_prefix(m);
      const std::vector<float> av = read_exact(prefix + ".lora_A", {k, m.shape.in});
      const std::vector<float> bv = read_exact(prefix + ".lora_B", {m.shape.out, k});
      const std::vector<float> ev = read_exact(prefix + ".lora_E", {k, 1});
      int slot = 0;
      for (int row = 0; row < m.r; ++row) {
        if (!pattern[i][row]) continue;
        std::copy(av.begin() + std::size_t(slot) * m.shape.in,
                  av.begin() + std::size_t(slot + 1) * m.shape.in,
                  params + m.a + std::size_t(row) * m.shape.in);
        params[m.e + row] = ev[slot];
        for (int o = 0; o < m.shape.out; ++o) {
          params[m.b + std::size_t(o) * m.r + row] = bv[std::size_t(o) * k + slot];
        }
        ++slot;
      }
    }
  }
  for (const TensorInfo& t : reader.tensors()) {
    if (!expected.count(t.name)) {
      throw std::runtime_error(st_path + ": unexpected tensor '" + t.name +
                               "' (not part of the configured adapter)");
    }
  }
  if (rank_pattern_out) *rank_pattern_out = std::move(pattern);
}

}  // namespace peftrun
