// Reading and writing the safetensors format (the format HF checkpoints and PEFT adapters use):
//
//   [8 bytes: little-endian u64 N][N bytes: JSON header][data section]
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} with
// offsets relative to the data section, plus an optional "__metadata__" string->string map.
//
// The reader parses and validates only the header when it opens a file; tensor bytes are read
// on demand, one byte range at a time, so a multi-gigabyte base checkpoint never has to be held
// in memory whole. Every malformed file is rejected with std::runtime_error naming the file (and
// the tensor, where there is one) before any tensor data is trusted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/io/file_io.h"

namespace peftrun {

// The element types of the safetensors specification. peftrun itself writes F32/F16/BF16/I32;
// the reader also accepts the other standard types so that a checkpoint carrying, say, an I64
// buffer still opens (such tensors can be read raw, just not converted to float).
enum class TensorDType : std::uint8_t {
  kBool,
  kU8,
  kI8,
  kF8E4M3,
  kF8E5M2,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

std::size_t dtype_size(TensorDType t);                              // bytes per element
std::string_view dtype_name(TensorDType t);                         // "F32", "BF16", ...
std::optional<TensorDType> dtype_from_name(std::string_view name);  // nullopt if not a known name

// Converts n elements of F32/F16/BF16/F64 to float; throws std::invalid_argument for other types.
void convert_to_float(TensorDType t, const void* src, float* dst, std::size_t n);

struct TensorInfo {
  std::string name;
  TensorDType dtype = TensorDType::kF32;
  std::vector<std::int64_t> shape;  // empty = 0-d scalar (one element)
  std::uint64_t data_begin = 0;     // [begin, end) relative to the data section
  std::uint64_t data_end = 0;

  std::uint64_t numel() const;  // product of shape (1 for a scalar)
  std::uint64_t nbytes() const { return data_end - data_begin; }
};

// Collects tensors, then writes them in one crash-safe step (see write_file_atomic).
// Tensor bytes are copied in, so callers may free or reuse their buffers immediately.
class SafetensorsWriter {
 public:
  // Throws std::invalid_argument on an empty, duplicate or reserved ("__metadata__") name, a
  // negative dimension, or nbytes != numel(shape) * dtype_size(dtype). Bytes are in the file's
  // byte order (little-endian), i.e. the host's on every platform peftrun supports.
  void add(const std::string& name, TensorDType dtype, std::vector<std::int64_t> shape,
           const void* data, std::size_t nbytes);
  void add_f32(const std::string& name, std::vector<std::int64_t> shape,
               std::span<const float> values);
  void add_i32(const std::string& name, std::vector<std::int64_t> shape,
               std::span<const std::int32_t> values);

  // Entries of the "__metadata__" map (e.g. {"format": "pt"}); a repeated key overwrites.
  void set_metadata(const std::string& key, const std::string& value);

  std::size_t num_tensors() const { return tensors_.size(); }

  // The 8-byte length prefix plus the space-padded JSON header, exactly as written (exposed so
  // tests can check the layout).
  std::vector<std::uint8_t> serialize_header() const;

  // Throws std::runtime_error naming the file and the OS error; leaves no temporary file.
  void write(const std::string& path) const;

 private:
  struct Entry {
    TensorDType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> bytes;
  };
  // Data-section order and offsets; see the .cpp for why this is not simply name order.
  std::vector<std::pair<const std::string*, std::uint64_t>> layout() const;

  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsReader {
 public:
  // Opens the file and reads and validates its header; tensor data is not read yet.
  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // sorted by name
  std::vector<std::string> names() const;                              // sorted
  bool contains(std::string_view name) const;
  // Throws std::runtime_error naming the file, the tensor and a few available names.
  const TensorInfo& info(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Absolute file offset of the data section (8 + header length).
  std::uint64_t data_offset() const { return data_offset_; }

  // The tensor's raw bytes; reads only its byte range from the file.
  std::vector<std::uint8_t> read_tensor(std::string_view name) const;
  // Same, into caller memory; dst_bytes must equal the tensor's byte size.
  void read_tensor_into(std::string_view name, void* dst, std::size_t dst_bytes) const;
  // The raw bytes of elements [first, first + count) of the tensor (row-major, flat index) into
  // dst[count * dtype size]: only that byte range is read, so a rank that keeps a slice of a
  // tensor never holds the rest. Throws std::out_of_range naming the file and the tensor when
  // the range does not lie inside the tensor (overflow included); count 0 reads nothing.
  void read_tensor_elements(std::string_view name, std::uint64_t first, std::uint64_t count,
                            void* dst) const;
  // A float copy of an F32/F16/BF16/F64 tensor (throws naming the tensor for other dtypes).
  std::vector<float> read_tensor_f32(std::string_view name) const;

 private:
  void read_header();

  ReadOnlyFile file_;
  std::uint64_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace peftrun
