#include "runtime/train/train_state_io.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "runtime/io/file_io.h"
#include "runtime/io/safetensors.h"
#include "runtime/train/resume_plan.h"

namespace peftrun {

namespace {

using nlohmann::json;

constexpr const char* kStateTensors = "trainer_state.safetensors";
constexpr const char* kStateJson = "trainer_state.json";
constexpr int kFormatVersion = 1;

void write_text_atomic(const std::string& path, const std::string& text) {
  const ByteChunk chunk(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
  write_file_atomic(path, std::span<const ByteChunk>(&chunk, 1));
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The tensor must be F32 of exactly `shape`; anything else is another run's (or a damaged) file.
void read_exact(const SafetensorsReader& r, const std::string& name,
                const std::vector<std::int64_t>& shape, void* dst) {
  const TensorInfo& info = r.info(name);  // throws naming the file and tensor when missing
  if (info.dtype != TensorDType::kF32 || info.shape != shape) {
    throw std::runtime_error("safetensors file '" + r.path() + "': tensor '" + name + "' is " +
                             std::string(dtype_name(info.dtype)) + " " + shape_text(info.shape) +
                             ", expected F32 " + shape_text(shape) +
                             " (a checkpoint of another adapter or config?)");
  }
  r.read_tensor_into(name, dst, info.nbytes());
}

void read_exact(const SafetensorsReader& r, const std::string& name, std::vector<float>& dst) {
  read_exact(r, name, {std::int64_t(dst.size())}, dst.data());
}

// A field of trainer_state.json, its absence or wrong type named with the file.
template <class T>
T field(const json& j, const std::string& key, const std::string& file) {
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    throw std::runtime_error(file + ": field '" + key + "': " +
                             (j.contains(key) ? "has the wrong type (" + std::string(e.what()) + ")"
                                              : std::string("missing")));
  }
}

}  // namespace

void write_train_state(const std::string& dir, const Config& config, const TrainStateView& s) {
  SafetensorsWriter w;
  w.add_f32("params", {std::int64_t(s.params->size())}, *s.params);
  w.add_f32("adam_m", {std::int64_t(s.adam_m->size())}, *s.adam_m);
  w.add_f32("adam_v", {std::int64_t(s.adam_v->size())}, *s.adam_v);
  w.add_f32("loss_scale", {}, std::span<const float>(&s.loss_scale, 1));
  if (s.adalora) {
    w.add_f32("adalora_ipt_ema", {std::int64_t(s.adalora->ipt_ema.size())}, s.adalora->ipt_ema);
    w.add_f32("adalora_unc_ema", {std::int64_t(s.adalora->unc_ema.size())}, s.adalora->unc_ema);
    w.add_f32("adalora_mask", {std::int64_t(s.adalora->mask.size())}, s.adalora->mask);
  }
  w.set_metadata("format", "pt");
  w.write(dir + "/" + kStateTensors);

  const std::map<std::string, std::string> fingerprint = config_fingerprint(config);
  const std::int64_t global = s.batch.global_batch();
  json j;
  j["format"] = "peftrun-checkpoint";
  j["format_version"] = kFormatVersion;
  j["step"] = s.step;
  j["optimizer_steps"] = s.optimizer_steps;
  j["loss_scale_good_steps"] = s.loss_scale_good_steps;
  j["world_size"] = s.batch.world_size;
  j["batch"] = {{"grad_accum", s.batch.grad_accum},
                {"micro_batch_size", s.batch.micro_batch_size},
                {"global_batch", global}};
  // Global sample i of step k is k * global + i (BatchLoader maps it through a permutation of
  // (seed, epoch)), so the next sample to read is the whole data cursor.
  j["data_cursor"] = {{"next_sample", std::int64_t(s.step) * global},
                      {"samples_per_step", global},
                      {"order",
                       "permutation of (train.seed, epoch); sample index = step * "
                       "samples_per_step + i"}};
  j["rng"] = {{"seed", config.train.seed},
              {"generator", "counter-based (runtime/rng.h)"},
              {"state",
               "none to save: dropout masks and the random init are keyed by (seed, "
               "step, sample index, layer, module)"}};
  j["adapter_type"] = to_string(config.adapter.type);
  j["trainable_elements"] = s.params->size();
  j["peftrun_version"] = PEFTRUN_VERSION;
  j["config"] = fingerprint;
  j["config_digest"] = config_digest(fingerprint, global);
  if (s.adalora) {
    j["adalora_has_pattern"] = s.adalora->has_pattern;
    j["adalora_fixed"] = s.adalora->fixed;
  }
  json files = json::object();
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name != kStateJson) files[name] = e.file_size();
  }
  j["files"] = files;
  write_text_atomic(dir + "/" + kStateJson, j.dump(2) + "\n");
}

CheckpointHeader read_checkpoint_header(const std::string& dir) {
  CheckpointHeader h;
  h.dir = dir;
  h.json_path = dir + "/" + kStateJson;
  const std::string& file = h.json_path;
  std::ifstream in(file);
  if (!in) {
    throw std::runtime_error("cannot open '" + file + "': " +
                             (std::filesystem::exists(dir) ? "missing (not a peftrun checkpoint?)"
                                                           : "the folder does not exist"));
  }
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error(file + ": not valid JSON (" + std::string(e.what()) + ")");
  }
  if (!j.is_object()) throw std::runtime_error(file + ": not a JSON object");
  if (field<std::string>(j, "format", file) != "peftrun-checkpoint" ||
      field<int>(j, "format_version", file) != kFormatVersion) {
    throw std::runtime_error(file + ": not a peftrun checkpoint of format version " +
                             std::to_string(kFormatVersion));
  }
  h.step = field<int>(j, "step", file);
  // Added after format version 1 was first written: absent means no step was ever skipped.
  h.optimizer_steps =
      j.contains("optimizer_steps") ? field<int>(j, "optimizer_steps", file) : h.step;
  h.loss_scale_good_steps =
      j.contains("loss_scale_good_steps") ? field<int>(j, "loss_scale_good_steps", file) : 0;
  if (h.optimizer_steps < 0 || h.optimizer_steps > h.step || h.loss_scale_good_steps < 0) {
    throw std::runtime_error(
        file + ": optimizer_steps must be in [0, step = " + std::to_string(h.step) +
        "] and loss_scale_good_steps >= 0 (found " + std::to_string(h.optimizer_steps) + " and " +
        std::to_string(h.loss_scale_good_steps) + ")");
  }
  h.batch.world_size = field<int>(j, "world_size", file);
  const json batch = field<json>(j, "batch", file);
  h.batch.grad_accum = field<int>(batch, "grad_accum", file + ": batch");
  h.batch.micro_batch_size = field<int>(batch, "micro_batch_size", file + ": batch");
  if (h.step < 0 || h.batch.world_size < 1 || h.batch.grad_accum < 1 ||
      h.batch.micro_batch_size < 1) {
    throw std::runtime_error(file + ": step, world_size and batch must be positive");
  }
  const json cursor = field<json>(j, "data_cursor", file);
  const auto next = field<std::int64_t>(cursor, "next_sample", file + ": data_cursor");
  if (field<std::int64_t>(batch, "global_batch", file + ": batch") != h.batch.global_batch() ||
      next != std::int64_t(h.step) * h.batch.global_batch()) {
    throw std::runtime_error(file + ": batch and data_cursor disagree with step " +
                             std::to_string(h.step) + " (next_sample " + std::to_string(next) +
                             ", global batch " + std::to_string(h.batch.global_batch()) + ")");
  }
  field<json>(j, "rng", file);
  h.adapter_type = field<std::string>(j, "adapter_type", file);
  h.peftrun_version = field<std::string>(j, "peftrun_version", file);
  h.trainable_elements = field<std::uint64_t>(j, "trainable_elements", file);
  h.config = field<std::map<std::string, std::string>>(j, "config", file);
  h.config_digest = field<std::string>(j, "config_digest", file);
  h.files = field<std::map<std::string, std::uint64_t>>(j, "files", file);
  if (!h.files.count(kStateTensors)) {
    throw std::runtime_error(file + ": field 'files' does not list " + std::string(kStateTensors));
  }
  if (h.adapter_type == "adalora") {
    h.adalora_has_pattern = field<bool>(j, "adalora_has_pattern", file);
    h.adalora_fixed = field<bool>(j, "adalora_fixed", file);
  }
  if (config_digest(h.config, h.batch.global_batch()) != h.config_digest) {
    throw std::runtime_error(file + ": config_digest " + h.config_digest +
                             " does not match the file's own config record (edited or damaged)");
  }
  return h;
}

void verify_checkpoint_files(const CheckpointHeader& h) {
  for (const auto& [name, size] : h.files) {
    const std::string path = h.dir + "/" + name;
    std::error_code ec;
    const std::uintmax_t actual = std::filesystem::file_size(path, ec);
    if (ec) {
      throw std::runtime_error("checkpoint file '" + path + "' is missing (" + ec.message() +
                               "); " + h.json_path + " lists it");
    }
    if (actual != size) {
      throw std::runtime_error("checkpoint file '" + path + "' is " + std::to_string(actual) +
                               " bytes, " + h.json_path + " recorded " + std::to_string(size) +
                               (actual < size ? " (truncated)" : ""));
    }
  }
}

void read_train_state(const CheckpointHeader& h, const Config& config, const AdapterLayout& layout,
                      TrainStateView& s) {
  if (h.adapter_type != to_string(config.adapter.type)) {
    throw std::runtime_error(h.json_path + ": adapter_type is '" + h.adapter_type +
                             "' but adapter.type is '" + to_string(config.adapter.type) + "'");
  }
  s.step = h.step;
  s.optimizer_steps = h.optimizer_steps;
  s.loss_scale_good_steps = h.loss_scale_good_steps;
  s.batch = h.batch;
  // The tensors' own header first: it names the tensor a truncation cut into.
  const SafetensorsReader r(h.dir + "/" + kStateTensors);
  for (auto* v : {s.params, s.adam_m, s.adam_v}) v->assign(layout.total(), 0.0f);
  read_exact(r, "params", *s.params);
  read_exact(r, "adam_m", *s.adam_m);
  read_exact(r, "adam_v", *s.adam_v);
  read_exact(r, "loss_scale", {}, &s.loss_scale);
  if (!std::isfinite(s.loss_scale) || s.loss_scale <= 0) {
    throw std::runtime_error("safetensors file '" + r.path() +
                             "': tensor 'loss_scale' is not a positive finite number");
  }
  if (s.adalora) {
    read_exact(r, "adalora_ipt_ema", s.adalora->ipt_ema);
    read_exact(r, "adalora_unc_ema", s.adalora->unc_ema);
    read_exact(r, "adalora_mask", s.adalora->mask);
    s.adalora->has_pattern = h.adalora_has_pattern;
    s.adalora->fixed = h.adalora_fixed;
  }
}

std::string resolve_resume_dir(const std::string& resume, const std::string& output_dir) {
  if (resume != "latest") {
    if (!std::filesystem::is_directory(resume)) {
      throw std::runtime_error("--resume: '" + resume + "' is not a checkpoint folder");
    }
    return resume;
  }
  const std::string pointer = output_dir + "/latest";
  const std::string name = read_latest_pointer(output_dir);
  if (name.empty()) {
    throw std::runtime_error("--resume latest: no checkpoint recorded in '" + pointer + "'");
  }
  const std::string dir = output_dir + "/" + name;
  if (!std::filesystem::is_directory(dir)) {
    throw std::runtime_error("--resume latest: '" + pointer + "' names '" + name +
                             "', but the folder '" + dir + "' does not exist");
  }
  return dir;
}

std::string read_latest_pointer(const std::string& output_dir) {
  std::ifstream in(output_dir + "/latest");
  std::string name;
  if (!in || !std::getline(in, name)) return "";
  return name;
}

void write_latest_pointer(const std::string& output_dir, const std::string& checkpoint_name) {
  write_text_atomic(output_dir + "/latest", checkpoint_name + "\n");
}

}  // namespace peftrun
