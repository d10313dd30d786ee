// Parity cases of the RoPE kernel against the CPU twin (kernels/rope_cpu.cpp), for
// tests/gpu/rope_parity_test.cpp (GPU) and tests/emulated_kernels_test.cpp (CPU emulator); see
// tests/gpu/parity_support.h. The CPU twin in double rotates by the same float angles.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/rope.h"
#include "kernels/rope_frequencies.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

struct RopeCase {
  const char* name;
  int tokens, heads, hd;
  int max_pos;  // positions are random in [0, max_pos] (packed sequences restart anywhere)
  float theta = 10000.0f;
  RopeType type = RopeType::kDefault;  // llama3: Llama 3.2's factor 32 over an 8192 context;
                                       // yarn: factor 4 over 4096 (cos / sin scaled by 1.139)
  int rotary = 0;                      // channels rotated per head (partial rotary); 0 = hd
};

template <class Env>
void check_rope(Env& env, const RopeCase& c, DType dt) {
  const std::string where = std::string(c.name) + " " + dtype_name(dt);
  const std::uint64_t seed = seed_of(c.name);
  const std::size_t n = static_cast<std::size_t>(c.tokens) * c.heads * c.hd;
  const std::vector<float> x = rounded(random_floats(n, seed, 2.0f), dt);
  std::mt19937_64 rng(seed + 1);
  std::uniform_int_distribution<int> dist(0, c.max_pos);
  std::vector<std::int32_t> pos(static_cast<std::size_t>(c.tokens));
  for (auto& p : pos) p = dist(rng);

  RopeParams params{c.theta, c.type};
  if (c.type == RopeType::kLlama3) {
    params.factor = 32.0;
    params.original_max_positions = 8192;
  }
  if (c.type == RopeType::kYarn) {
    params.factor = 4.0;
    params.original_max_positions = 4096;
  }
  const int rd = c.rotary > 0 ? c.rotary : c.hd;
  const std::vector<float> inv_freq = rope_inverse_frequencies(rd, params);
  const float scale = rope_attention_scaling(params);
  const float* f = inv_freq.data();
  auto d_pos = env.upload(pos);
  for (const bool forward : {true, false}) {
    std::vector<double> ref = to_double(x);
    auto d_x = env.upload(encode(x, dt));  // rotated in place
    if (forward) {
      cpu::rope_forward<double>(ref.data(), pos.data(), c.tokens, c.heads, c.hd, rd, f, scale);
      env.rope_forward(d_x.data(), d_pos.data(), c.tokens, c.heads, c.hd, rd, f, scale, dt);
    } else {
      cpu::rope_backward<double>(ref.data(), pos.data(), c.tokens, c.heads, c.hd, rd, f, scale);
      env.rope_backward(d_x.data(), d_pos.data(), c.tokens, c.heads, c.hd, rd, f, scale, dt);
    }
    expect_close(where, forward ? "forward" : "backward", decode(env.download(d_x), dt), ref,
                 tolerance(dt));
  }
}

template <class Env>
void check_rope_refusals(Env& env) {
  auto x = env.template poisoned<float>(64);
  auto pos = env.upload(std::vector<std::int32_t>{0, 1});
  const std::vector<float> f(200, 0.5f);  // more entries than any head_dim here needs
  EXPECT_THROW(env.rope_forward(x.data(), pos.data(), 2, 1, 7, 7, f.data(), 1.0f, DType::kF32),
               std::invalid_argument);  // odd head_dim
  EXPECT_THROW(env.rope_forward(x.data(), pos.data(), 2, 1, 258, 258, f.data(), 1.0f, DType::kF32),
               std::invalid_argument);  // above 256
  EXPECT_THROW(env.rope_forward(x.data(), pos.data(), 2, 1, 32, 34, f.data(), 1.0f, DType::kF32),
               std::invalid_argument);  // rotary_dim above head_dim
  EXPECT_THROW(env.rope_forward(x.data(), pos.data(), 2, 1, 32, 5, f.data(), 1.0f, DType::kF32),
               std::invalid_argument);  // odd rotary_dim
}

namespace rope_cases {
inline const RopeCase kOneToken{"OneTokenHd64", 1, 1, 64, 1};
inline const RopeCase kTinyConfig{"TinyConfigHd32", 7, 3, 32, 100};
inline const RopeCase kLongPositions{"Hd128Pos4096", 33, 4, 128, 4096};
inline const RopeCase kHd256{"Hd256Pos8191", 5, 2, 256, 8191};
inline const RopeCase kHd8{"Hd8", 9, 2, 8, 50};
inline const RopeCase kLlama3Theta{"Theta500000", 6, 3, 64, 2000, 500000.0f};
inline const RopeCase kLlama3Scaled{"Llama3ScaledPos8000", 6, 3, 64, 8000, 500000.0f,
                                    RopeType::kLlama3};
inline const RopeCase kYarnScaled{"YarnPos16000", 6, 3, 128, 16000, 1000000.0f, RopeType::kYarn};
// Phi-4-mini's partial rotary: 96 of 128 channels rotate, the last 32 pass unchanged.
inline const RopeCase kPartial{"Partial96Of128", 5, 3, 128, 3000, 10000.0f, RopeType::kDefault, 96};
}  // namespace rope_cases

inline std::vector<RopeCase> all_rope_cases() {
  using namespace rope_cases;
  return {kOneToken,    kTinyConfig,   kLongPositions, kHd256,  kHd8,
          kLlama3Theta, kLlama3Scaled, kYarnScaled,    kPartial};
}

}  // namespace peftrun::gpu_testing
