#include "runtime/train/train_state_io.h"

#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "runtime/io/file_io.h"
#include "runtime/io/safetensors.h"

namespace peftrun {

namespace {

void write_text_atomic(const std::string& path, const std::string& text) {
  const ByteChunk chunk(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
  write_file_atomic(path, std::span<const ByteChunk>(&chunk, 1));
}

void read_exact(const SafetensorsReader& r, const std::string& name, std::vector<float>& dst) {
  const TensorInfo& info = r.info(name);  // throws naming the file and tensor when missing
  if (info.dtype != TensorDType::kF32 || info.numel() != dst.size()) {
    throw std::runtime_error(
        r.path() + ": tensor '" + name + "' has " + std::to_string(info.numel()) + " " +
        std::string(dtype_name(info.dtype)) + " elements, expected " + std::to_string(dst.size()) +
        " F32 (a checkpoint of another adapter?)");
  }
  r.read_tensor_into(name, dst.data(), dst.size() * sizeof(float));
}

}  // namespace

void write_train_state(const std::string& dir, const Config& config, const TrainStateView& s) {
  SafetensorsWriter w;
  w.add_f32("params", {std::int64_t(s.params->size())}, *s.params);
  w.add_f32("adam_m", {std::int64_t(s.adam_m->size())}, *s.adam_m);
  w.add_f32("adam_v", {std::int64_t(s.adam_v->size())}, *s.adam_v);
  if (s.adalora) {
    w.add_f32("adalora_ipt_ema", {std::int64_t(s.adalora->ipt_ema.size())}, s.adalora->ipt_ema);
    w.add_f32("adalora_unc_ema", {std::int64_t(s.adalora->unc_ema.size())}, s.adalora->unc_ema);
    w.add_f32("adalora_mask", {std::int64_t(s.adalora->mask.size())}, s.adalora->mask);
  }
  w.set_metadata("format", "pt");
  w.write(dir + "/trainer_state.safetensors");

  nlohmann::json j;
  j["step"] = s.step;
  j["world_size"] = s.world_size;
  j["adapter_type"] = to_string(config.adapter.type);
  j["trainable_elements"] = s.params->size();
  j["peftrun_version"] = PEFTRUN_VERSION;
  j["config"] = config_fingerprint(config);
  if (s.adalora) {
    j["adalora_has_pattern"] = s.adalora->has_pattern;
    j["adalora_fixed"] = s.adalora->fixed;
  }
  write_text_atomic(dir + "/trainer_state.json", j.dump(2) + "\n");
}

void read_train_state(const std::string& dir, const Config& config, const AdapterLayout& layout,
                      TrainStateView& s) {
  const std::string json_path = dir + "/trainer_state.json";
  std::ifstream in(json_path);
  if (!in) throw std::runtime_error("cannot open '" + json_path + "' (not a peftrun checkpoint?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
    s.step = j.at("step").get<int>();
    s.world_size = j.at("world_size").get<int>();
    const std::string type = j.at("adapter_type").get<std::string>();
    if (type != to_string(config.adapter.type)) {
      throw std::runtime_error(json_path + ": adapter_type is '" + type +
                               "' but adapter.type is '" + to_string(config.adapter.type) + "'");
    }
    if (s.adalora) {
      s.adalora->has_pattern = j.at("adalora_has_pattern").get<bool>();
      s.adalora->fixed = j.at("adalora_fixed").get<bool>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(json_path + ": " + e.what());
  }
  if (s.step < 0) throw std::runtime_error(json_path + ": negative step");
  const SafetensorsReader r(dir + "/trainer_state.safetensors");
  for (auto* v : {s.params, s.adam_m, s.adam_v}) v->assign(layout.total(), 0.0f);
  read_exact(r, "params", *s.params);
  read_exact(r, "adam_m", *s.adam_m);
  read_exact(r, "adam_v", *s.adam_v);
  if (s.adalora) {
    read_exact(r, "adalora_ipt_ema", s.adalora->ipt_ema);
    read_exact(r, "adalora_unc_ema", s.adalora->unc_ema);
    read_exact(r, "adalora_mask", s.adalora->mask);
  }
}

std::map<std::string, std::string> config_fingerprint(const Config& config) {
  std::map<std::string, std::string> out;
  const YAML::Node root = YAML::Load(config_to_yaml(config));
  for (const auto& section : root) {
    const std::string name = section.first.as<std::string>();
    if (!section.second.IsMap()) {
      out[name] = YAML::Dump(section.second);
      continue;
    }
    for (const auto& key : section.second) {
      out[name + "." + key.first.as<std::string>()] = YAML::Dump(key.second);
    }
  }
  // AdaLoRA's schedule length defaults to train.steps: record the length in effect, so that
  // changing train.steps is seen as changing the budget schedule (not a safe key then).
  if (config.adapter.type == AdapterType::kAdaLora) {
    out["adapter.total_step"] =
        std::to_string(config.adapter.adalora_total_step(config.train.steps));
  }
  return out;
}

bool resume_safe_key(const std::string& key) {
  static const char* const kSafe[] = {"train.steps",         "optim.lr",
                                      "optim.schedule",      "optim.warmup_steps",
                                      "optim.min_lr_ratio",  "checkpoint.every_steps",
                                      "checkpoint.keep_last"};
  for (const char* k : kSafe) {
    if (key == k) return true;
  }
  return false;
}

namespace {
// Where and how a run executes, not what it computes: free to differ on resume.
bool operational_key(const std::string& key) {
  static const char* const kOperational[] = {
      "output_dir",     "runtime.threads",  "runtime.device",  "runtime.shard_base",
      "comm.timeout_s", "comm.bucket_mb",   "train.log_every", "train.eval_every",
      "data.eval",      "data.eval_batches"};
  for (const char* k : kOperational) {
    if (key == k) return true;
  }
  return false;
}
}  // namespace

std::vector<std::string> check_resume_config(const std::string& dir, const Config& config,
                                             bool force) {
  const std::string json_path = dir + "/trainer_state.json";
  std::ifstream in(json_path);
  if (!in) throw std::runtime_error("cannot open '" + json_path + "' (not a peftrun checkpoint?)");
  std::map<std::string, std::string> saved;
  try {
    saved = nlohmann::json::parse(in).at("config").get<std::map<std::string, std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(json_path + ": no readable 'config' record: " + e.what());
  }
  const std::map<std::string, std::string> now = config_fingerprint(config);
  std::vector<std::string> differing, unsafe;
  for (const auto& [key, value] : now) {
    const auto it = saved.find(key);
    if ((it != saved.end() && it->second == value) || operational_key(key)) continue;
    differing.push_back(key + " (" + (it == saved.end() ? "absent" : it->second) + " -> " + value +
                        ")");
    if (!resume_safe_key(key)) unsafe.push_back(differing.back());
  }
  if (differing.empty()) return {};
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  if (!unsafe.empty()) {
    throw std::runtime_error(json_path + ": the config differs in keys that change the math: " +
                             join(unsafe) + "; resume with the checkpoint's config");
  }
  if (!force) {
    throw std::runtime_error(json_path + ": the config differs in " + join(differing) +
                             "; these are safe to change: add --resume-force to accept them");
  }
  return differing;
}

std::string resolve_resume_dir(const std::string& resume, const std::string& output_dir) {
  if (resume != "latest") {
    if (!std::filesystem::is_directory(resume)) {
      throw std::runtime_error("--resume: '" + resume + "' is not a checkpoint folder");
    }
    return resume;
  }
  const std::string pointer = output_dir + "/latest";
  std::ifstream in(pointer);
  std::string name;
  if (!in || !std::getline(in, name) || name.empty()) {
    throw std::runtime_error("--resume latest: no checkpoint recorded in '" + pointer + "'");
  }
  return output_dir + "/" + name;
}

void write_latest_pointer(const std::string& output_dir, const std::string& checkpoint_name) {
  write_text_atomic(output_dir + "/latest", checkpoint_name + "\n");
}

}  // namespace peftrun
