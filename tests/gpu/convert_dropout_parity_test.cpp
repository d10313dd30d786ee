// Storage conversions and dropout on the device against the host's bit-level definitions:
// every conversion pair rounds like float_to_half / float_to_bf16 (special values included),
// the counter-based keep mask is bit-identical to cpu::dropout_keep_mask, and applying the mask
// (forward and to a gradient) gives the bits the fp32 formula gives after rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/convert.h"
#include "kernels/dropout.h"
#include "tests/gpu/adapter_parity_support.h"

namespace peftrun::gpu_testing {
namespace {

std::vector<float> values_with_specials(std::size_t n, std::uint64_t seed) {
  std::vector<float> v = random_floats(n, seed, 4.0f);
  const float specials[] = {std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::nanf(""),
                            65504.0f,
                            65520.0f,  // rounds to fp16 inf
                            1e-8f,     // fp16 subnormal range
                            -3e-5f,
                            3.0e38f,
                            1.17549435e-38f,
                            -0.0f};
  for (std::size_t i = 0; i < sizeof(specials) / sizeof(float) && i < n; ++i) {
    v[i * 7 % n] = specials[i];
  }
  return v;
}

bool same_value(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, 4) == 0;
}

TEST(GpuConvertParity, EveryTypePairRoundsLikeTheHost) {
  PEFTRUN_REQUIRE_GPU();
  const std::size_t n = 10007;
  const std::vector<float> v = values_with_specials(n, 1);
  for (DType from : kAllTypes) {
    const std::vector<float> src = round_to(v, from);
    DeviceTensor d_src = upload_as(src, from);
    for (DType to : kAllTypes) {
      DeviceTensor d_dst = poisoned_as(n, to);
      cuda::convert(d_src.data(), from, d_dst.data(), to, n, nullptr);
      const std::vector<float> got = download(d_dst);
      std::size_t differ = 0;
      for (std::size_t i = 0; i < n; ++i) differ += !same_value(got[i], round_to(src[i], to));
      EXPECT_EQ(differ, 0u) << dtype_name(from) << " -> " << dtype_name(to);
    }
  }
}

TEST(GpuConvertParity, CastRowsScaledIsOneFp32ProductThenRounding) {
  PEFTRUN_REQUIRE_GPU();
  const int rows = 13, cols = 127;
  const std::vector<float> src = random_floats(std::size_t(rows) * cols, 2);
  const std::vector<float> scale = random_floats(rows, 3);
  cuda::DeviceBuffer<float> d_src = to_device(src), d_scale = to_device(scale);
  for (DType to : kAllTypes) {
    for (bool scaled : {false, true}) {
      DeviceTensor dst = poisoned_as(src.size(), to);
      cuda::cast_rows_scaled(d_src.data(), scaled ? d_scale.data() : nullptr, rows, cols, to,
                             dst.data(), nullptr);
      const std::vector<float> got = download(dst);
      std::size_t differ = 0;
      for (std::size_t e = 0; e < src.size(); ++e) {
        const float want = round_to(scaled ? src[e] * scale[e / cols] : src[e], to);
        differ += !same_value(got[e], want);
      }
      EXPECT_EQ(differ, 0u) << dtype_name(to) << " scaled=" << scaled;
    }
  }
}

TEST(GpuDropoutParity, KeepMaskIsBitIdenticalToTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  const std::size_t n = 1000003;
  for (float p : {0.05f, 0.5f}) {
    const std::uint64_t key = 0x5eedull * static_cast<std::uint64_t>(p * 100);
    std::vector<std::uint8_t> want(n);
    cpu::dropout_keep_mask(key, p, n, want.data());
    cuda::DeviceBuffer<std::uint8_t> keep(n);
    cuda::device_memset(keep.data(), 0xFF, n);
    cuda::dropout_keep_mask(key, p, n, keep.data(), nullptr);
    EXPECT_EQ(to_host(keep), want) << "p=" << p;
  }
}

TEST(GpuDropoutParity, ApplyAndMaskGiveTheFp32FormulaRounded) {
  PEFTRUN_REQUIRE_GPU();
  const std::size_t n = 33 * 127;
  const float keep_scale = 1.0f / 0.7f;
  std::vector<std::uint8_t> keep(n);
  cpu::dropout_keep_mask(77, 0.3f, n, keep.data());
  cuda::DeviceBuffer<std::uint8_t> d_keep = upload_mask(keep);
  for (DType t : kAllTypes) {
    const std::vector<float> x = round_to(random_floats(n, 4), t);
    DeviceTensor dx = upload_as(x, t);
    DeviceTensor x_drop = poisoned_as(n, t), x_rest = poisoned_as(n, t);
    cuda::apply_dropout(dx.data(), d_keep.data(), keep_scale, n, t, x_drop.data(), x_rest.data(),
                        nullptr);
    const std::vector<float> got_drop = download(x_drop), got_rest = download(x_rest);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float d = keep[i] ? x[i] * keep_scale : 0.0f;  // cpu::lora_linear's x_drop
      differ += !same_value(got_drop[i], round_to(d, t));
      differ += !same_value(got_rest[i], round_to(x[i] - d, t));
    }
    EXPECT_EQ(differ, 0u) << dtype_name(t);

    cuda::mask_by_keep(dx.data(), d_keep.data(), keep_scale, n, t, nullptr);
    const std::vector<float> masked = download(dx);
    differ = 0;
    for (std::size_t i = 0; i < n; ++i) {
      differ += !same_value(masked[i], round_to(keep[i] ? x[i] * keep_scale : 0.0f, t));
    }
    EXPECT_EQ(differ, 0u) << "mask_by_keep " << dtype_name(t);
  }
}

}  // namespace
}  // namespace peftrun::gpu_testing
