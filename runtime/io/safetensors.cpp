#include "runtime/io/safetensors.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "kernels/half.h"

namespace peftrun {

// Tensor bytes are copied between file and memory without swapping; safetensors is
// little-endian, so a big-endian host would need conversion code that nobody can test.
static_assert(std::endian::native == std::endian::little, "peftrun assumes a little-endian host");

namespace {

using nlohmann::json;

struct DTypeDesc {
  TensorDType type;
  std::string_view name;
  std::size_t size;
};

constexpr std::array<DTypeDesc, 15> kDTypes = {{
    {TensorDType::kBool, "BOOL", 1},
    {TensorDType::kU8, "U8", 1},
    {TensorDType::kI8, "I8", 1},
    {TensorDType::kF8E4M3, "F8_E4M3", 1},
    {TensorDType::kF8E5M2, "F8_E5M2", 1},
    {TensorDType::kI16, "I16", 2},
    {TensorDType::kU16, "U16", 2},
    {TensorDType::kF16, "F16", 2},
    {TensorDType::kBF16, "BF16", 2},
    {TensorDType::kI32, "I32", 4},
    {TensorDType::kU32, "U32", 4},
    {TensorDType::kF32, "F32", 4},
    {TensorDType::kF64, "F64", 8},
    {TensorDType::kI64, "I64", 8},
    {TensorDType::kU64, "U64", 8},
}};

const DTypeDesc& desc(TensorDType t) {
  for (const auto& d : kDTypes) {
    if (d.type == t) return d;
  }
  throw std::invalid_argument("invalid TensorDType value " + std::to_string(static_cast<int>(t)));
}

// A real header is a few KB per thousand tensors; anything this large is a corrupt length
// field, and rejecting it early avoids a huge allocation.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

bool is_float_convertible(TensorDType t) {
  return t == TensorDType::kF32 || t == TensorDType::kF16 || t == TensorDType::kBF16 ||
         t == TensorDType::kF64;
}

// numel * elem_size with overflow detection; nullopt when it does not fit in 64 bits.
std::optional<std::uint64_t> checked_bytes(const std::vector<std::int64_t>& shape,
                                           std::size_t elem_size) {
  std::uint64_t n = elem_size;
  for (const std::int64_t d : shape) {
    if (__builtin_mul_overflow(n, static_cast<std::uint64_t>(d), &n)) return std::nullopt;
  }
  return n;
}

std::string json_type(const json& j) {
  return j.type_name();
}

// Every header problem names the file, and the tensor where there is one, so a user with many
// shards knows which file and entry to look at.
[[noreturn]] void fail_file(const std::string& path, const std::string& msg) {
  throw std::runtime_error("safetensors file '" + path + "': " + msg);
}
[[noreturn]] void fail_tensor(const std::string& path, const std::string& tensor,
                              const std::string& msg) {
  fail_file(path, "tensor '" + tensor + "': " + msg);
}

}  // namespace

std::size_t dtype_size(TensorDType t) {
  return desc(t).size;
}
std::string_view dtype_name(TensorDType t) {
  return desc(t).name;
}

std::optional<TensorDType> dtype_from_name(std::string_view name) {
  for (const auto& d : kDTypes) {
    if (d.name == name) return d.type;
  }
  return std::nullopt;
}

void convert_to_float(TensorDType t, const void* src, float* dst, std::size_t n) {
  if (n == 0) return;  // empty tensors may come with null pointers; memcpy must not see them
  const auto* in = static_cast<const std::uint8_t*>(src);
  // memcpy per element: the source is a byte buffer with no alignment guarantee.
  switch (t) {
    case TensorDType::kF32:
      std::memcpy(dst, in, n * sizeof(float));
      return;
    case TensorDType::kF16:
      for (std::size_t i = 0; i < n; ++i) {
        half_bits h;
        std::memcpy(&h, in + 2 * i, 2);
        dst[i] = half_to_float(h);
      }
      return;
    case TensorDType::kBF16:
      // bf16 is the top half of an fp32, so widening is exact.
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t b;
        std::memcpy(&b, in + 2 * i, 2);
        dst[i] = std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
      }
      return;
    case TensorDType::kF64:
      for (std::size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, in + 8 * i, 8);
        dst[i] = static_cast<float>(v);
      }
      return;
    default:
      throw std::invalid_argument("cannot convert dtype " + std::string(dtype_name(t)) +
                                  " to float");
  }
}

std::uint64_t TensorInfo::numel() const {
  std::uint64_t n = 1;
  for (const std::int64_t d : shape) n *= static_cast<std::uint64_t>(d);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

void SafetensorsWriter::add(const std::string& name, TensorDType dtype,
                            std::vector<std::int64_t> shape, const void* data, std::size_t nbytes) {
  if (name.empty()) throw std::invalid_argument("safetensors: tensor name must not be empty");
  if (name == "__metadata__") {
    throw std::invalid_argument("safetensors: '__metadata__' is reserved, not a tensor name");
  }
  if (tensors_.count(name) != 0) {
    throw std::invalid_argument("safetensors: duplicate tensor name '" + name + "'");
  }
  for (const std::int64_t d : shape) {
    if (d < 0) {
      throw std::invalid_argument("safetensors: tensor '" + name + "' has a negative dimension");
    }
  }
  const auto expect = checked_bytes(shape, dtype_size(dtype));
  if (!expect || *expect != nbytes) {
    throw std::invalid_argument("safetensors: tensor '" + name + "' has " + std::to_string(nbytes) +
                                " bytes, but its shape and dtype " +
                                std::string(dtype_name(dtype)) + " need " +
                                (expect ? std::to_string(*expect) : std::string("> 2^64")));
  }
  Entry e{dtype, std::move(shape), {}};
  if (nbytes > 0) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    e.bytes.assign(p, p + nbytes);
  }
  tensors_.emplace(name, std::move(e));
}

void SafetensorsWriter::add_f32(const std::string& name, std::vector<std::int64_t> shape,
                                std::span<const float> values) {
  add(name, TensorDType::kF32, std::move(shape), values.data(), values.size_bytes());
}

void SafetensorsWriter::add_i32(const std::string& name, std::vector<std::int64_t> shape,
                                std::span<const std::int32_t> values) {
  add(name, TensorDType::kI32, std::move(shape), values.data(), values.size_bytes());
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

// Data is laid out by decreasing element size, then by name. Because element sizes are powers
// of two, every tensor then starts at a multiple of its own element size (the data section
// itself starts 8-aligned), so a later mmap-based reader can use tensors in place.
std::vector<std::pair<const std::string*, std::uint64_t>> SafetensorsWriter::layout() const {
  std::vector<const std::string*> order;
  order.reserve(tensors_.size());
  for (const auto& [name, e] : tensors_) order.push_back(&name);
  std::stable_sort(order.begin(), order.end(), [&](const std::string* a, const std::string* b) {
    return dtype_size(tensors_.at(*a).dtype) > dtype_size(tensors_.at(*b).dtype);
  });
  std::vector<std::pair<const std::string*, std::uint64_t>> out;
  out.reserve(order.size());
  std::uint64_t offset = 0;
  for (const std::string* name : order) {
    out.emplace_back(name, offset);
    offset += tensors_.at(*name).bytes.size();
  }
  return out;
}

std::vector<std::uint8_t> SafetensorsWriter::serialize_header() const {
  json header = json::object();  // std::map-backed: keys come out sorted
  for (const auto& [name, offset] : layout()) {
    const Entry& e = tensors_.at(*name);
    header[*name] = {{"dtype", std::string(dtype_name(e.dtype))},
                     {"shape", e.shape},
                     {"data_offsets", {offset, offset + e.bytes.size()}}};
  }
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  std::string text = header.dump();
  // Pad so the data section starts 8-aligned in the file (the convention of the reference
  // implementation; it lets tensors be used in place from an mmap).
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<std::uint8_t> out(8 + text.size());
  const std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(n >> (8 * i));
  std::memcpy(out.data() + 8, text.data(), text.size());
  return out;
}

void SafetensorsWriter::write(const std::string& path) const {
  const std::vector<std::uint8_t> header = serialize_header();
  std::vector<ByteChunk> chunks;
  chunks.emplace_back(header);
  for (const auto& [name, offset] : layout()) chunks.emplace_back(tensors_.at(*name).bytes);
  write_file_atomic(path, chunks);
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

SafetensorsReader::SafetensorsReader(const std::string& path) : file_(path) {
  read_header();
}

void SafetensorsReader::read_header() {
  const std::string& p = file_.path();
  const std::uint64_t size = file_.size();
  if (size < 8) {
    fail_file(p,
              "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  }
  std::uint8_t len_bytes[8];
  file_.read_at(0, len_bytes, 8);
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(len_bytes[i]) << (8 * i);
  if (n > kMaxHeaderBytes) {
    fail_file(p, "header length " + std::to_string(n) + " is absurd (limit " +
                     std::to_string(kMaxHeaderBytes) + " bytes); is this a safetensors file?");
  }
  if (n > size - 8) {
    fail_file(
        p, "header length " + std::to_string(n) + " exceeds the file size " + std::to_string(size));
  }
  std::string text(n, '\0');
  file_.read_at(8, text.data(), n);
  data_offset_ = 8 + n;
  const std::uint64_t data_size = size - data_offset_;

  json header;
  try {
    header = json::parse(text);
  } catch (const json::parse_error& e) {
    fail_file(p, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object())
    fail_file(p, "header is a JSON " + json_type(header) + ", not an object");

  for (const auto& [key, val] : header.items()) {
    if (key == "__metadata__") {
      if (!val.is_object())
        fail_file(p, "__metadata__ is a JSON " + json_type(val) + ", not an object");
      for (const auto& [mk, mv] : val.items()) {
        if (!mv.is_string()) {
          fail_file(
              p, "__metadata__ entry '" + mk + "' is a JSON " + json_type(mv) + ", not a string");
        }
        metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    if (!val.is_object())
      fail_tensor(p, key, "entry is a JSON " + json_type(val) + ", not an object");
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!val.contains(field)) fail_tensor(p, key, std::string("missing '") + field + "'");
    }
    TensorInfo t;
    t.name = key;

    const json& jd = val["dtype"];
    if (!jd.is_string())
      fail_tensor(p, key, "'dtype' is a JSON " + json_type(jd) + ", not a string");
    const auto dt = dtype_from_name(jd.get<std::string>());
    if (!dt) fail_tensor(p, key, "unknown dtype '" + jd.get<std::string>() + "'");
    t.dtype = *dt;

    const json& js = val["shape"];
    if (!js.is_array())
      fail_tensor(p, key, "'shape' is a JSON " + json_type(js) + ", not an array");
    for (const json& d : js) {
      if (!d.is_number_integer())
        fail_tensor(p, key, "'shape' has a non-integer entry " + d.dump());
      if (!d.is_number_unsigned()) fail_tensor(p, key, "'shape' has a negative entry " + d.dump());
      const auto v = d.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        fail_tensor(p, key, "'shape' entry " + d.dump() + " is too large");
      }
      t.shape.push_back(static_cast<std::int64_t>(v));
    }

    const json& jo = val["data_offsets"];
    if (!jo.is_array() || jo.size() != 2) {
      fail_tensor(p, key, "'data_offsets' must be an array [begin, end], got " + jo.dump());
    }
    for (const json& o : jo) {
      if (!o.is_number_unsigned()) {
        fail_tensor(p, key, "'data_offsets' must hold non-negative integers, got " + jo.dump());
      }
    }
    t.data_begin = jo[0].get<std::uint64_t>();
    t.data_end = jo[1].get<std::uint64_t>();
    if (t.data_begin > t.data_end)
      fail_tensor(p, key, "'data_offsets' " + jo.dump() + " has begin > end");
    if (t.data_end > data_size) {
      fail_tensor(p, key,
                  "'data_offsets' " + jo.dump() + " ends beyond the data section (" +
                      std::to_string(data_size) + " bytes); is the file truncated?");
    }
    const auto want = checked_bytes(t.shape, dtype_size(t.dtype));
    if (!want || *want != t.nbytes()) {
      fail_tensor(p, key,
                  "'data_offsets' " + jo.dump() + " span " + std::to_string(t.nbytes()) +
                      " bytes, but shape " + js.dump() + " of " + jd.get<std::string>() +
                      " needs " + (want ? std::to_string(*want) : std::string("> 2^64")));
    }
    tensors_.push_back(std::move(t));
  }

  // Overlapping ranges would make two tensors alias each other's bytes: a writer bug or a
  // crafted file. Empty tensors occupy no bytes and cannot overlap anything.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : tensors_) {
    if (t.nbytes() > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->data_begin < b->data_begin; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    if (b.data_begin < a.data_end) {
      fail_file(p, "tensors '" + a.name + "' [" + std::to_string(a.data_begin) + ", " +
                       std::to_string(a.data_end) + ") and '" + b.name + "' [" +
                       std::to_string(b.data_begin) + ", " + std::to_string(b.data_end) +
                       ") overlap");
    }
  }
  // header.items() walks std::map order, so tensors_ is already sorted by name.
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& t : tensors_) out.push_back(t.name);
  return out;
}

bool SafetensorsReader::contains(std::string_view name) const {
  const auto it =
      std::lower_bound(tensors_.begin(), tensors_.end(), name,
                       [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name;
}

const TensorInfo& SafetensorsReader::info(std::string_view name) const {
  const auto it =
      std::lower_bound(tensors_.begin(), tensors_.end(), name,
                       [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  if (it != tensors_.end() && it->name == name) return *it;
  std::string msg = "safetensors file '" + path() + "': no tensor named '" + std::string(name) +
                    "'; it has " + std::to_string(tensors_.size()) + " tensor(s)";
  constexpr std::size_t kShow = 5;
  for (std::size_t i = 0; i < tensors_.size() && i < kShow; ++i) {
    msg += (i == 0 ? ": " : ", ") + tensors_[i].name;
  }
  if (tensors_.size() > kShow) msg += ", ...";
  throw std::runtime_error(msg);
}

void SafetensorsReader::read_tensor_into(std::string_view name, void* dst,
                                         std::size_t dst_bytes) const {
  const TensorInfo& t = info(name);
  if (dst_bytes != t.nbytes()) {
    throw std::invalid_argument("safetensors file '" + path() + "': tensor '" + t.name + "' has " +
                                std::to_string(t.nbytes()) + " bytes, destination has " +
                                std::to_string(dst_bytes));
  }
  if (dst_bytes == 0) return;
  try {
    file_.read_at(data_offset_ + t.data_begin, dst, dst_bytes);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("tensor '" + t.name + "': " + e.what());
  }
}

void SafetensorsReader::read_tensor_elements(std::string_view name, std::uint64_t first,
                                             std::uint64_t count, void* dst) const {
  const TensorInfo& t = info(name);
  const std::uint64_t n = t.numel();
  // Written so that first + count cannot wrap: a huge `first` or `count` is refused, not read.
  if (first > n || count > n - first) {
    throw std::out_of_range("safetensors file '" + path() + "': tensor '" + t.name +
                            "': elements [" + std::to_string(first) + ", " + std::to_string(first) +
                            " + " + std::to_string(count) + ") are outside its " +
                            std::to_string(n) + " element(s)");
  }
  if (count == 0) return;
  const std::uint64_t elem = dtype_size(t.dtype);
  try {
    // count * elem <= nbytes (checked against the shape when the header was read): no overflow.
    file_.read_at(data_offset_ + t.data_begin + first * elem, dst,
                  static_cast<std::size_t>(count * elem));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("tensor '" + t.name + "': " + e.what());
  }
}

std::vector<std::uint8_t> SafetensorsReader::read_tensor(std::string_view name) const {
  std::vector<std::uint8_t> out(info(name).nbytes());
  read_tensor_into(name, out.data(), out.size());
  return out;
}

std::vector<float> SafetensorsReader::read_tensor_f32(std::string_view name) const {
  const TensorInfo& t = info(name);
  if (!is_float_convertible(t.dtype)) {
    throw std::runtime_error("safetensors file '" + path() + "': tensor '" + t.name +
                             "' has dtype " + std::string(dtype_name(t.dtype)) +
                             ", which cannot be read as float");
  }
  const std::vector<std::uint8_t> raw = read_tensor(name);
  std::vector<float> out(t.numel());
  convert_to_float(t.dtype, raw.data(), out.data(), out.size());
  return out;
}

}  // namespace peftrun
