// Where the tensors of a Hugging Face checkpoint folder live: `model.safetensors`, or the shards
// named by `model.safetensors.index.json`'s "weight_map". Shards are opened lazily, so a sharded
// checkpoint only opens the files that hold tensors someone asks for. Used by the base loader
// (hf_checkpoint.h) and by `peftrun merge` (merge.h), which reads every tensor once in fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/io/safetensors.h"

namespace peftrun {

// A tensor that passed HfCheckpointFiles::check: where it is and what to call it in errors.
struct CheckedTensor {
  const SafetensorsReader* reader;
  const TensorInfo* info;
  std::string what;  // "<file>: tensor '<name>'"
};

class HfCheckpointFiles {
 public:
  // Throws std::runtime_error naming the folder when it has neither file, or the index when it is
  // malformed (not an object with a "weight_map" of file names in the same folder).
  explicit HfCheckpointFiles(const std::string& dir);

  // The file a missing tensor is reported against.
  const std::string& where() const;
  bool has(const std::string& tensor) const;
  // Every tensor name the checkpoint lists (the single file's header, or the index's weight_map).
  std::vector<std::string> names() const;

  // The reader of the file that holds `tensor`; throws naming the file when the tensor is
  // missing, its shard does not exist, or the shard does not hold it.
  const SafetensorsReader& reader_for(const std::string& tensor);

  // Tensor `name` must exist with `shape` and a dtype peftrun converts (F32, F16, BF16). Only
  // the file's header is consulted. Throws naming the file and the tensor.
  CheckedTensor check(const std::string& name, const std::vector<std::int64_t>& shape);

 private:
  void read_index(const std::string& path);

  std::string dir_;
  std::unique_ptr<SafetensorsReader> single_;
  std::string index_path_;
  std::map<std::string, std::string> weight_map_;
  std::map<std::string, std::unique_ptr<SafetensorsReader>> shards_;
};

// "[2, 3]"
std::string shape_text(const std::vector<std::int64_t>& shape);

}  // namespace peftrun
