#include "runtime/model/hf_checkpoint_files.h"

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace peftrun {

namespace {

namespace fs = std::filesystem;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

}  // namespace

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return out + "]";
}

HfCheckpointFiles::HfCheckpointFiles(const std::string& dir) : dir_(dir) {
  std::error_code ec;
  const fs::path single = fs::path(dir) / kSingleFile;
  const fs::path index = fs::path(dir) / kIndexFile;
  // transformers prefers the single file when both are present; so do we.
  if (fs::exists(single, ec)) {
    single_ = std::make_unique<SafetensorsReader>(single.lexically_normal().string());
  } else if (fs::exists(index, ec)) {
    read_index(index.lexically_normal().string());
  } else {
    throw std::runtime_error("checkpoint folder '" + dir + "' has neither " + kSingleFile +
                             " nor " + kIndexFile +
                             ", expected Hugging Face safetensors weights (pytorch_model.bin is "
                             "not supported)");
  }
}

const std::string& HfCheckpointFiles::where() const {
  return single_ ? single_->path() : index_path_;
}

bool HfCheckpointFiles::has(const std::string& tensor) const {
  return single_ ? single_->contains(tensor) : weight_map_.count(tensor) > 0;
}

std::vector<std::string> HfCheckpointFiles::names() const {
  if (single_) return single_->names();
  std::vector<std::string> out;
  out.reserve(weight_map_.size());
  for (const auto& [name, file] : weight_map_) out.push_back(name);
  return out;
}

const SafetensorsReader& HfCheckpointFiles::reader_for(const std::string& tensor) {
  if (!has(tensor)) {
    throw std::runtime_error(where() + ": missing tensor '" + tensor + "'" +
                             (single_ ? "" : " (not in weight_map)"));
  }
  if (single_) return *single_;
  const std::string& shard = weight_map_.at(tensor);
  auto& reader = shards_[shard];
  if (!reader) {
    const fs::path path = fs::path(dir_) / shard;
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      throw std::runtime_error(index_path_ + ": weight_map puts tensor '" + tensor +
                               "' in shard '" + shard + "', which does not exist in '" + dir_ +
                               "'");
    }
    reader = std::make_unique<SafetensorsReader>(path.lexically_normal().string());
  }
  if (!reader->contains(tensor)) {
    throw std::runtime_error(reader->path() + ": missing tensor '" + tensor + "' (" + index_path_ +
                             " says it is in this shard)");
  }
  return *reader;
}

CheckedTensor HfCheckpointFiles::check(const std::string& name,
                                       const std::vector<std::int64_t>& shape) {
  const SafetensorsReader& reader = reader_for(name);
  const TensorInfo& info = reader.info(name);
  CheckedTensor t{&reader, &info, reader.path() + ": tensor '" + name + "'"};
  if (info.shape != shape) {
    throw std::runtime_error(t.what + " has shape " + shape_text(info.shape) + ", expected " +
                             shape_text(shape));
  }
  if (info.dtype != TensorDType::kF16 && info.dtype != TensorDType::kBF16 &&
      info.dtype != TensorDType::kF32) {
    throw std::runtime_error(t.what + " has dtype " + std::string(dtype_name(info.dtype)) +
                             ", expected F32, F16 or BF16");
  }
  return t;
}

void HfCheckpointFiles::read_index(const std::string& path) {
  index_path_ = path;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot be opened");
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": malformed JSON: " + e.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    throw std::runtime_error(path +
                             ": expected a JSON object with a \"weight_map\" object "
                             "(tensor name -> shard file)");
  }
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) {
      throw std::runtime_error(path + ": weight_map entry for tensor '" + tensor + "' is " +
                               file.dump() + ", expected a shard file name");
    }
    const std::string name = file.get<std::string>();
    // Shards sit next to the index; a path would let a downloaded index read arbitrary files.
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
      throw std::runtime_error(path + ": weight_map entry for tensor '" + tensor + "' is '" + name +
                               "', expected a file name in the same folder");
    }
    weight_map_.emplace(tensor, name);
  }
}

}  // namespace peftrun
