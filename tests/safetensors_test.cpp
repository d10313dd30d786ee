// Tests for runtime/io/safetensors: round trips, header layout, and one test per malformed-file
// case the reader must reject (each corrupt file is built byte by byte here, so the tests need no
// Python or reference implementation).
#include "runtime/io/safetensors.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/half.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards, so tests can run in parallel under ctest.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "peftrun_st_XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Files in the test directory other than `keep`, to prove no temporary file was left behind.
  std::vector<std::string> other_files(const std::string& keep = "") const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().filename() != keep) out.push_back(e.path().filename().string());
    }
    return out;
  }

  fs::path dir_;
};

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

// A file of `8 + text.size() + data_bytes` bytes: an arbitrary header length field, the text,
// then zero bytes. (Sized once up front: growing a vector from 8 bytes trips a GCC 12
// -Warray-bounds false positive.)
std::vector<std::uint8_t> raw_file(std::uint64_t length_field, const std::string& text,
                                   std::size_t data_bytes) {
  std::vector<std::uint8_t> out(8 + text.size() + data_bytes, 0);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(length_field >> (8 * i));
  std::memcpy(out.data() + 8, text.data(), text.size());
  return out;
}

// A safetensors file with an arbitrary header text and `data_bytes` zero bytes of data.
std::vector<std::uint8_t> make_file(const std::string& header, std::size_t data_bytes) {
  return raw_file(header.size(), header, data_bytes);
}

// Runs fn, requires a std::runtime_error whose message contains every needle.
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) {
      EXPECT_NE(msg.find(n), std::string::npos) << "message lacks \"" << n << "\": " << msg;
    }
    return;
  }
  ADD_FAILURE() << "no std::runtime_error thrown";
}

// Writes a file with the given header (and data) and expects opening it to fail naming the file
// and each needle.
void expect_open_error(const std::string& path, const std::string& header, std::size_t data_bytes,
                       std::initializer_list<std::string> needles) {
  write_bytes(path, make_file(header, data_bytes));
  expect_error([&] { SafetensorsReader r(path); }, {path});
  expect_error([&] { SafetensorsReader r(path); }, needles);
}

std::vector<std::uint8_t> as_bytes(const void* p, std::size_t n) {
  const auto* b = static_cast<const std::uint8_t*>(p);
  return {b, b + n};
}

TEST_F(SafetensorsTest, RoundTripDtypesAndShapes) {
  const std::vector<float> f32 = {1.5f, -2.0f, 0.25f, 3.0f, -0.0f, 1e-3f};
  const std::vector<float> f16_vals = {1.0f, -0.5f, 65504.0f, 0.0009765625f, 3.140625f};
  std::vector<half_bits> f16;
  for (float v : f16_vals) f16.push_back(float_to_half(v));
  const std::vector<float> bf16_vals = {1.0f, -3.0f, 0.15625f, 256.0f};
  std::vector<std::uint16_t> bf16;
  for (float v : bf16_vals) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bf16.push_back(static_cast<std::uint16_t>(bits >> 16));  // exact: values fit in bf16
  }
  const std::vector<std::int32_t> i32 = {7, -1, 2147483647, -2147483647 - 1, 0, 42};
  const float scalar = 42.5f;

  SafetensorsWriter w;
  w.add_f32("layers.0.weight", {2, 3}, f32);
  w.add("half", TensorDType::kF16, {5}, f16.data(), f16.size() * 2);
  w.add("brain", TensorDType::kBF16, {2, 1, 2}, bf16.data(), bf16.size() * 2);
  w.add_i32("ids", {3, 2}, i32);
  w.add_f32("scalar", {}, std::span<const float>(&scalar, 1));
  w.add("empty", TensorDType::kF32, {0, 4}, nullptr, 0);
  const std::string p = path("model.safetensors");
  w.write(p);

  SafetensorsReader r(p);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"brain", "empty", "half", "ids", "layers.0.weight",
                                                 "scalar"}));
  EXPECT_TRUE(r.contains("half"));
  EXPECT_FALSE(r.contains("hal"));

  EXPECT_EQ(r.info("layers.0.weight").dtype, TensorDType::kF32);
  EXPECT_EQ(r.info("layers.0.weight").shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(r.read_tensor("layers.0.weight"), as_bytes(f32.data(), f32.size() * 4));
  EXPECT_EQ(r.read_tensor_f32("layers.0.weight"), f32);

  EXPECT_EQ(r.info("half").dtype, TensorDType::kF16);
  EXPECT_EQ(r.read_tensor("half"), as_bytes(f16.data(), f16.size() * 2));
  EXPECT_EQ(r.read_tensor_f32("half"), f16_vals);

  EXPECT_EQ(r.info("brain").dtype, TensorDType::kBF16);
  EXPECT_EQ(r.info("brain").shape, (std::vector<std::int64_t>{2, 1, 2}));
  EXPECT_EQ(r.read_tensor_f32("brain"), bf16_vals);

  EXPECT_EQ(r.info("ids").dtype, TensorDType::kI32);
  std::vector<std::int32_t> ids(6);
  r.read_tensor_into("ids", ids.data(), ids.size() * 4);
  EXPECT_EQ(ids, i32);

  EXPECT_TRUE(r.info("scalar").shape.empty());
  EXPECT_EQ(r.info("scalar").numel(), 1u);
  EXPECT_EQ(r.read_tensor_f32("scalar"), std::vector<float>{scalar});

  EXPECT_EQ(r.info("empty").shape, (std::vector<std::int64_t>{0, 4}));
  EXPECT_EQ(r.info("empty").numel(), 0u);
  EXPECT_TRUE(r.read_tensor("empty").empty());
  EXPECT_TRUE(r.read_tensor_f32("empty").empty());
  EXPECT_TRUE(r.metadata().empty());
}

TEST_F(SafetensorsTest, HeaderPaddedTo8AndKeysSorted) {
  // Try several name lengths so at least some headers need padding.
  for (int extra = 0; extra < 8; ++extra) {
    SCOPED_TRACE(extra);
    SafetensorsWriter w;
    const std::vector<float> v = {1, 2, 3};
    w.add_f32("zeta" + std::string(extra, 'z'), {3}, v);
    w.add_f32("alpha", {3}, v);
    w.add_f32("Mid", {1, 3}, v);
    const std::vector<std::uint8_t> h = w.serialize_header();
    ASSERT_EQ(h.size() % 8, 0u);
    std::uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(h[i]) << (8 * i);
    EXPECT_EQ(n + 8, h.size());
    const std::string text(h.begin() + 8, h.end());
    EXPECT_EQ(text.front(), '{');
    const auto close = text.find_last_of('}');
    EXPECT_EQ(text.find_first_not_of(' ', close + 1), std::string::npos) << "pad must be spaces";
    // std::map order: uppercase sorts before lowercase.
    EXPECT_LT(text.find("\"Mid\""), text.find("\"alpha\""));
    EXPECT_LT(text.find("\"alpha\""), text.find("\"zeta"));

    const std::string p = path("pad.safetensors");
    w.write(p);
    SafetensorsReader r(p);
    EXPECT_EQ(r.data_offset() % 8, 0u);
    EXPECT_EQ(r.data_offset(), h.size());
    EXPECT_EQ(fs::file_size(p), h.size() + 3 * 3 * 4);
  }
}

TEST_F(SafetensorsTest, TensorsAlignedToElementSize) {
  // An odd-sized F16 tensor placed first by name must not misalign the F32 tensors after it.
  SafetensorsWriter w;
  const std::vector<std::uint16_t> h3 = {1, 2, 3};
  const std::vector<float> f = {1, 2};
  w.add("a_half", TensorDType::kF16, {3}, h3.data(), 6);
  w.add_f32("b_float", {2}, f);
  w.add_f32("c_float", {1}, std::span<const float>(f.data(), 1));
  const std::vector<std::uint8_t> u = {9};
  w.add("d_byte", TensorDType::kU8, {1}, u.data(), 1);
  const std::string p = path("align.safetensors");
  w.write(p);
  SafetensorsReader r(p);
  for (const TensorInfo& t : r.tensors()) {
    EXPECT_EQ(t.data_begin % dtype_size(t.dtype), 0u) << t.name;
  }
  EXPECT_EQ(r.read_tensor_f32("b_float"), f);
  EXPECT_EQ(r.read_tensor("d_byte"), u);
}

TEST_F(SafetensorsTest, MetadataRoundTrip) {
  SafetensorsWriter w;
  const std::vector<float> v = {1};
  w.add_f32("x", {1}, v);
  w.set_metadata("format", "pt");
  w.set_metadata("peft.r", "8");
  w.set_metadata("note", "quotes \" and unicode \xc3\xa9 survive");
  w.set_metadata("peft.r", "16");  // overwrite
  const std::string p = path("meta.safetensors");
  w.write(p);
  SafetensorsReader r(p);
  const std::map<std::string, std::string> want = {
      {"format", "pt"}, {"note", "quotes \" and unicode \xc3\xa9 survive"}, {"peft.r", "16"}};
  EXPECT_EQ(r.metadata(), want);
  EXPECT_EQ(r.names(), std::vector<std::string>{"x"});  // __metadata__ is not a tensor
}

TEST_F(SafetensorsTest, OverwriteReplacesFile) {
  const std::string p = path("w.safetensors");
  const std::vector<float> a = {1, 2}, b = {3, 4, 5};
  SafetensorsWriter w1;
  w1.add_f32("t", {2}, a);
  w1.write(p);
  SafetensorsWriter w2;
  w2.add_f32("t", {3}, b);
  w2.write(p);
  EXPECT_EQ(SafetensorsReader(p).read_tensor_f32("t"), b);
  EXPECT_EQ(other_files("w.safetensors"), std::vector<std::string>{});
}

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  SafetensorsWriter w;
  const std::vector<float> v = {1, 2};
  w.add_f32("t", {2}, v);
  EXPECT_THROW(w.add_f32("t", {2}, v), std::invalid_argument);             // duplicate
  EXPECT_THROW(w.add_f32("u", {3}, v), std::invalid_argument);             // size mismatch
  EXPECT_THROW(w.add_f32("__metadata__", {2}, v), std::invalid_argument);  // reserved
  EXPECT_THROW(w.add_f32("", {2}, v), std::invalid_argument);
  EXPECT_THROW(w.add("neg", TensorDType::kF32, {-1}, nullptr, 0), std::invalid_argument);
  EXPECT_EQ(w.num_tensors(), 1u);
}

// --- write failures --------------------------------------------------------------------------

TEST_F(SafetensorsTest, WriteToMissingDirectoryThrowsAndLeavesNothing) {
  const std::string p = path("no_such_dir/out.safetensors");
  SafetensorsWriter w;
  const std::vector<float> v = {1};
  w.add_f32("t", {1}, v);
  expect_error([&] { w.write(p); }, {p, "No such file or directory"});
  EXPECT_FALSE(fs::exists(p));
  EXPECT_EQ(other_files(), std::vector<std::string>{});
}

TEST_F(SafetensorsTest, FailedRenameRemovesTempFile) {
  // The target is an existing non-empty directory: the temp file is written and fsynced, then
  // rename fails. This exercises the cleanup path even when the test runs as root (where
  // permission-based failures do not happen).
  const std::string p = path("target");
  fs::create_directory(p);
  std::ofstream(p + "/keep") << "x";
  SafetensorsWriter w;
  const std::vector<float> v = {1};
  w.add_f32("t", {1}, v);
  expect_error([&] { w.write(p); }, {p, "rename"});
  EXPECT_TRUE(fs::is_directory(p));
  EXPECT_EQ(other_files("target"), std::vector<std::string>{});
}

TEST_F(SafetensorsTest, WriteToReadOnlyDirectoryThrowsAndLeavesNothing) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  const std::string sub = path("ro");
  fs::create_directory(sub);
  fs::permissions(sub, fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
  const std::string p = sub + "/out.safetensors";
  SafetensorsWriter w;
  const std::vector<float> v = {1};
  w.add_f32("t", {1}, v);
  expect_error([&] { w.write(p); }, {p, "Permission denied"});
  fs::permissions(sub, fs::perms::owner_all, fs::perm_options::replace);
  EXPECT_TRUE(fs::is_empty(sub));
}

// --- malformed files: each is rejected with the file (and tensor) named ----------------------

TEST_F(SafetensorsTest, MissingFile) {
  const std::string p = path("absent.safetensors");
  expect_error([&] { SafetensorsReader r(p); }, {p, "No such file or directory"});
}

TEST_F(SafetensorsTest, FileShorterThan8Bytes) {
  const std::string p = path("short.safetensors");
  write_bytes(p, {1, 0, 0});
  expect_error([&] { SafetensorsReader r(p); }, {p, "shorter than the 8-byte header length"});
}

TEST_F(SafetensorsTest, HeaderLengthLargerThanFile) {
  const std::string p = path("long.safetensors");
  write_bytes(p, raw_file(1000, "{}", 0));
  expect_error([&] { SafetensorsReader r(p); }, {p, "header length 1000 exceeds the file size 10"});
}

TEST_F(SafetensorsTest, HeaderLengthAbsurd) {
  const std::string p = path("absurd.safetensors");
  write_bytes(p, raw_file(0xFFFFFFFFFFFFFFF0ull, std::string(56, ' '), 0));
  expect_error([&] { SafetensorsReader r(p); }, {p, "absurd"});
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  expect_open_error(path("notjson.safetensors"), "{\"a\": [1, 2", 0, {"not valid JSON"});
}

TEST_F(SafetensorsTest, EmptyHeaderIsNotJson) {
  expect_open_error(path("empty_header.safetensors"), "", 0, {"not valid JSON"});
}

TEST_F(SafetensorsTest, HeaderNotObject) {
  expect_open_error(path("array.safetensors"), "[1, 2, 3]", 0, {"not an object"});
}

TEST_F(SafetensorsTest, MetadataNotStringMap) {
  expect_open_error(path("meta1.safetensors"), R"({"__metadata__": [1]})", 0,
                    {"__metadata__", "not an object"});
  expect_open_error(path("meta2.safetensors"), R"({"__metadata__": {"r": 8}})", 0,
                    {"__metadata__", "'r'", "not a string"});
}

TEST_F(SafetensorsTest, TensorEntryMissingField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"dtype", R"({"w": {"shape": [2], "data_offsets": [0, 8]}})"},
      {"shape", R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})"},
      {"data_offsets", R"({"w": {"dtype": "F32", "shape": [2]}})"},
  };
  for (const auto& [field, header] : cases) {
    SCOPED_TRACE(field);
    expect_open_error(path("missing.safetensors"), header, 8, {"tensor 'w'", "missing '" + field});
  }
}

TEST_F(SafetensorsTest, TensorEntryWrongJsonTypes) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"entry is a JSON number", R"({"w": 5})"},
      {"'dtype' is a JSON number", R"({"w": {"dtype": 4, "shape": [2], "data_offsets": [0, 8]}})"},
      {"'shape' is a JSON string",
       R"({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}})"},
      {"'shape' has a non-integer entry \"2\"",
       R"({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})"},
      {"'data_offsets' must be an array",
       R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": {"a": 0}}})"},
      {"'data_offsets' must hold non-negative integers",
       R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, "8"]}})"},
  };
  for (const auto& [needle, header] : cases) {
    SCOPED_TRACE(needle);
    expect_open_error(path("types.safetensors"), header, 8, {"tensor 'w'", needle});
  }
}

TEST_F(SafetensorsTest, UnknownDtype) {
  expect_open_error(path("dtype.safetensors"),
                    R"({"w": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}})", 8,
                    {"tensor 'w'", "unknown dtype 'F33'"});
}

TEST_F(SafetensorsTest, NegativeShape) {
  expect_open_error(path("neg.safetensors"),
                    R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8,
                    {"tensor 'w'", "negative entry -2"});
}

TEST_F(SafetensorsTest, NonIntegerShape) {
  expect_open_error(path("frac.safetensors"),
                    R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", 8,
                    {"tensor 'w'", "non-integer entry 2.5"});
}

TEST_F(SafetensorsTest, DataOffsetsNotAPair) {
  expect_open_error(path("triple.safetensors"),
                    R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}})", 8,
                    {"tensor 'w'", "must be an array [begin, end]"});
  expect_open_error(path("neg_off.safetensors"),
                    R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", 8,
                    {"tensor 'w'", "non-negative integers"});
}

TEST_F(SafetensorsTest, DataOffsetsBeginAfterEnd) {
  expect_open_error(path("rev.safetensors"),
                    R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8,
                    {"tensor 'w'", "begin > end"});
}

TEST_F(SafetensorsTest, DataOffsetsBeyondFile) {
  // The header promises 8 bytes of data, the file has 4 (a truncated download).
  expect_open_error(path("trunc.safetensors"),
                    R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4,
                    {"tensor 'w'", "beyond the data section (4 bytes)"});
}

TEST_F(SafetensorsTest, ByteSizeMismatchesShape) {
  expect_open_error(path("size.safetensors"),
                    R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8,
                    {"tensor 'w'", "span 8 bytes", "needs 12"});
  // A shape whose byte size overflows 64 bits must not wrap around to a small "valid" size.
  expect_open_error(
      path("overflow.safetensors"),
      R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", 0,
      {"tensor 'w'", "> 2^64"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  expect_open_error(path("overlap.safetensors"),
                    R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                    12, {"tensors 'a' [0, 8) and 'b' [4, 12) overlap"});
}

TEST_F(SafetensorsTest, EmptyTensorsMayShareOffsets) {
  // Zero-byte ranges occupy nothing, so they never count as overlapping.
  const std::string p = path("empties.safetensors");
  write_bytes(p, make_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                "b": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
                                "c": {"dtype": "F16", "shape": [0, 3], "data_offsets": [4, 4]}})",
                           8));
  SafetensorsReader r(p);
  EXPECT_EQ(r.tensors().size(), 3u);
}

TEST_F(SafetensorsTest, MissingTensorNamesFileAndAvailable) {
  SafetensorsWriter w;
  const std::vector<float> v = {1};
  for (const char* n : {"a", "b", "c", "d", "e", "f", "g"}) w.add_f32(n, {1}, v);
  const std::string p = path("m.safetensors");
  w.write(p);
  SafetensorsReader r(p);
  expect_error([&] { r.read_tensor("q_proj"); },
               {p, "no tensor named 'q_proj'", "7 tensor(s): a, b, c, d, e, ..."});
  expect_error([&] { r.info("zz"); }, {p, "'zz'"});
}

TEST_F(SafetensorsTest, ReadAsFloatRejectsIntegerDtype) {
  SafetensorsWriter w;
  const std::vector<std::int32_t> v = {1, 2};
  w.add_i32("ids", {2}, v);
  const std::string p = path("i.safetensors");
  w.write(p);
  SafetensorsReader r(p);
  expect_error([&] { r.read_tensor_f32("ids"); }, {p, "tensor 'ids'", "I32"});
}

TEST_F(SafetensorsTest, FileTruncatedAfterOpen) {
  // Reads happen lazily, so a file that shrinks after the header was validated must still fail
  // cleanly, naming the tensor.
  SafetensorsWriter w;
  const std::vector<float> v(16, 1.0f);
  w.add_f32("w", {16}, v);
  const std::string p = path("shrink.safetensors");
  w.write(p);
  SafetensorsReader r(p);
  fs::resize_file(p, r.data_offset() + 4);
  expect_error([&] { r.read_tensor("w"); }, {p, "tensor 'w'", "unexpected end of file"});
}

TEST(SafetensorsDType, NamesAndSizes) {
  EXPECT_EQ(dtype_name(TensorDType::kBF16), "BF16");
  EXPECT_EQ(dtype_size(TensorDType::kBF16), 2u);
  EXPECT_EQ(dtype_size(TensorDType::kF64), 8u);
  EXPECT_EQ(dtype_from_name("F8_E4M3"), TensorDType::kF8E4M3);
  EXPECT_EQ(dtype_from_name("f32"), std::nullopt);  // names are case-sensitive in the spec
  for (TensorDType t : {TensorDType::kF32, TensorDType::kF16, TensorDType::kBF16, TensorDType::kI32,
                        TensorDType::kU64}) {
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t);
  }
}

}  // namespace
}  // namespace peftrun
