// SafetensorsReader::read_tensor_elements: a rank that keeps a slice of a tensor reads just that
// slice's bytes. Checked against the whole-tensor read for every dtype width, at the edges, and
// for every out-of-range request (refused with the file and tensor named, never read).
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/io/safetensors.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;

class SafetensorsRange : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "peftrun_st_range_XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    // Three dtype widths; the sizes make the 8-byte tensor sit after the others in the data
    // section, so a wrong base offset would read a neighbour's bytes.
    for (int i = 0; i < 10; ++i) f32_.push_back(0.5f * float(i) - 1.25f);
    for (std::uint16_t i = 0; i < 7; ++i) f16_.push_back(std::uint16_t(0x3c00u + 17u * i));
    for (std::int64_t i = 0; i < 5; ++i) i64_.push_back(-1000 * i + 3);
    SafetensorsWriter w;
    w.add_f32("a.f32", {2, 5}, f32_);
    w.add("b.f16", TensorDType::kF16, {7}, f16_.data(), f16_.size() * 2);
    w.add("c.i64", TensorDType::kI64, {5}, i64_.data(), i64_.size() * 8);
    w.add("empty", TensorDType::kF32, {0, 3}, nullptr, 0);
    w.write(path());
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path() const { return (dir_ / "t.safetensors").string(); }

  fs::path dir_;
  std::vector<float> f32_;
  std::vector<std::uint16_t> f16_;
  std::vector<std::int64_t> i64_;
};

// Every (first, count) inside the tensor gives exactly those bytes of the whole read, and writes
// nothing past dst[count).
template <typename T>
void expect_every_range_matches(const SafetensorsReader& r, const std::string& name,
                                const std::vector<T>& all) {
  const std::uint64_t n = all.size();
  for (std::uint64_t first = 0; first <= n; ++first) {
    for (std::uint64_t count = 0; first + count <= n; ++count) {
      std::vector<T> got(count + 1);
      std::memset(got.data(), 0xab, got.size() * sizeof(T));
      const std::vector<T> guard = got;
      r.read_tensor_elements(name, first, count, got.data());
      ASSERT_EQ(std::memcmp(got.data(), all.data() + first, count * sizeof(T)), 0)
          << name << " [" << first << ", +" << count << ")";
      ASSERT_EQ(std::memcmp(&got[count], &guard[count], sizeof(T)), 0) << "wrote past the range";
    }
  }
}

TEST_F(SafetensorsRange, EveryRangeEqualsTheSameSliceOfTheWholeTensor) {
  const SafetensorsReader r(path());
  expect_every_range_matches(r, "a.f32", f32_);
  expect_every_range_matches(r, "b.f16", f16_);
  expect_every_range_matches(r, "c.i64", i64_);
}

TEST_F(SafetensorsRange, EmptyRangesReadNothing) {
  const SafetensorsReader r(path());
  // count 0 is fine at any position up to numel, and on an empty tensor; dst is not touched.
  r.read_tensor_elements("a.f32", 10, 0, nullptr);
  r.read_tensor_elements("empty", 0, 0, nullptr);
}

// The message must name the file and the tensor, so a failing rank's report can be acted on.
void expect_refused(const SafetensorsReader& r, const std::string& name, std::uint64_t first,
                    std::uint64_t count) {
  std::vector<std::uint8_t> dst(64, 0x5a);
  try {
    r.read_tensor_elements(name, first, count, dst.data());
    FAIL() << name << " [" << first << ", +" << count << ") was not refused";
  } catch (const std::out_of_range& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(r.path()), std::string::npos) << msg;
    EXPECT_NE(msg.find("'" + name + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("outside"), std::string::npos) << msg;
  }
  for (const std::uint8_t b : dst) ASSERT_EQ(b, 0x5a) << "refused read still wrote";
}

TEST_F(SafetensorsRange, RangesOutsideTheTensorAreRefusedNamingFileAndTensor) {
  const SafetensorsReader r(path());
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  expect_refused(r, "a.f32", 0, 11);    // one past the end
  expect_refused(r, "a.f32", 9, 2);     // straddles the end
  expect_refused(r, "a.f32", 11, 0);    // starts past the end, even empty
  expect_refused(r, "b.f16", 1, kMax);  // first + count wraps around
  expect_refused(r, "b.f16", kMax, 2);  // likewise
  expect_refused(r, "c.i64", kMax, 0);  // far past the end
  expect_refused(r, "empty", 0, 1);     // nothing to read in an empty tensor
}

TEST_F(SafetensorsRange, UnknownTensorNamesTheFile) {
  const SafetensorsReader r(path());
  float x = 0;
  try {
    r.read_tensor_elements("nope", 0, 1, &x);
    FAIL() << "an unknown tensor was read";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path()), std::string::npos) << msg;
    EXPECT_NE(msg.find("'nope'"), std::string::npos) << msg;
  }
}

// A file cut short after the header was read: the range read fails naming the tensor (and,
// through ReadOnlyFile, the file) instead of returning garbage.
TEST_F(SafetensorsRange, FileTruncatedAfterOpeningFailsNamingTheTensor) {
  const SafetensorsReader r(path());
  const std::uint64_t size = fs::file_size(path());
  fs::resize_file(path(), size - 8);  // cuts into the last tensor of the data section
  std::vector<std::uint8_t> dst(64);
  bool refused = false;
  for (const char* name : {"a.f32", "b.f16", "c.i64"}) {
    const TensorInfo& t = r.info(name);
    if (r.data_offset() + t.data_end <= size - 8) continue;  // still whole
    try {
      r.read_tensor_elements(name, 0, t.numel(), dst.data());
    } catch (const std::runtime_error& e) {
      refused = true;
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::string("'") + name + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find(path()), std::string::npos) << msg;
    }
  }
  EXPECT_TRUE(refused);
}

}  // namespace
}  // namespace peftrun
