// Parity cases of the element-wise kernels (kernels/elementwise_blocks.h) against the CPU twins
// (kernels/elementwise_cpu.cpp), for tests/gpu/elementwise_parity_test.cpp (GPU) and
// tests/emulated_kernels_test.cpp (CPU emulator); see tests/gpu/parity_support.h.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/elementwise.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

struct AddCase {
  const char* name;
  std::size_t n;
};

// y += x: one rounding of the fp32 sum to the storage type, so equal to the CPU twin run in
// fp32 on the rounded inputs and rounded the same way.
template <class Env>
void check_add_inplace(Env& env, const AddCase& c, DType dt) {
  const std::string where = std::string(c.name) + " " + dtype_name(dt);
  const std::uint64_t seed = seed_of(c.name);
  const std::vector<float> y = rounded(random_floats(c.n, seed, 3.0f), dt);
  const std::vector<float> x = rounded(random_floats(c.n, seed + 1, 3.0f), dt);
  std::vector<float> ref = y;
  cpu::add_inplace<float>(ref.data(), x.data(), c.n);
  ref = rounded(ref, dt);
  auto d_y = env.upload(encode(y, dt));
  auto d_x = env.upload(encode(x, dt));
  env.add_inplace(d_y.data(), d_x.data(), c.n, dt);
  const std::vector<float> out = decode(env.download(d_y), dt);
  EXPECT_EQ(out, ref) << where;
  expect_close(where, "y + x", out, ref, 0.0);
}

// y = alpha x (Granite's residual_multiplier), out of place and in place: one rounding of the
// fp32 product, so equal to the CPU twin run in fp32 on the rounded input and rounded the same.
template <class Env>
void check_scale(Env& env, const AddCase& c, DType dt) {
  const std::string where = std::string(c.name) + " scale " + dtype_name(dt);
  const float alpha = 0.22f;  // Granite 3's residual_multiplier
  const std::vector<float> x = rounded(random_floats(c.n, seed_of(where), 3.0f), dt);
  std::vector<float> ref(c.n);
  cpu::scale<float>(ref.data(), x.data(), alpha, c.n);
  ref = rounded(ref, dt);
  auto d_x = env.upload(encode(x, dt));
  auto d_y = env.template poisoned<unsigned char>(c.n * dtype_size(dt));
  env.scale(d_y.data(), d_x.data(), alpha, c.n, dt);
  EXPECT_EQ(decode(env.download(d_y), dt), ref) << where;
  env.scale(d_x.data(), d_x.data(), alpha, c.n, dt);
  EXPECT_EQ(decode(env.download(d_x), dt), ref) << where << " in place";
}

// AdaLoRA's E entries zeroed where the mask prunes, at unaligned offsets of a flat buffer; the
// rest of the buffer (kept entries and everything between) untouched, NaN included.
template <class Env>
void check_zero_masked_rows(Env& env, int groups, int per_group) {
  const std::string where =
      "zero_masked_rows " + std::to_string(groups) + "x" + std::to_string(per_group);
  std::vector<std::uint64_t> offsets(groups);
  std::size_t at = 3;
  for (int g = 0; g < groups; ++g) {
    offsets[g] = at;
    at += std::size_t(per_group) + 5 + std::size_t(g % 3);
  }
  std::vector<float> data = random_floats(at + 7, seed_of(where));
  data[offsets[0]] = std::nanf("");  // kept below: must stay NaN
  std::vector<float> mask(std::size_t(groups) * per_group, 1.0f);
  for (std::size_t i = 1; i < mask.size(); i += 3) mask[i] = 0.0f;
  std::vector<float> ref = data;
  cpu::zero_masked_rows(ref.data(), offsets.data(), mask.data(), groups, per_group);
  auto d_data = env.upload(data);
  auto d_off = env.upload(offsets);
  auto d_mask = env.upload(mask);
  env.zero_masked_rows(d_data.data(), data.size(), d_off.data(), d_mask.data(), groups, per_group);
  const std::vector<float> out = env.download(d_data);
  ASSERT_EQ(out.size(), ref.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (std::isnan(ref[i])) {
      EXPECT_TRUE(std::isnan(out[i])) << where << " element " << i;
    } else {
      EXPECT_EQ(out[i], ref[i]) << where << " element " << i;
    }
  }
}

namespace elementwise_cases {
inline const AddCase kOne{"AddOne", 1};
inline const AddCase kTinyResidual{"AddTinyResidual1024x128", 1024 * 128};
inline const AddCase kBeyondOneGridPass{"AddBeyondOneGridPass", 4096 * 256 + 77};
}  // namespace elementwise_cases

inline std::vector<AddCase> all_add_cases() {
  using namespace elementwise_cases;
  return {kOne, kTinyResidual, kBeyondOneGridPass};
}

}  // namespace peftrun::gpu_testing
