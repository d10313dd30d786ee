// Parity cases of the embedding kernel against the CPU twin (kernels/embedding_cpu.cpp), for
// tests/gpu/embedding_parity_test.cpp (GPU) and tests/emulated_kernels_test.cpp (CPU emulator);
// see tests/gpu/parity_support.h. A lookup is a conversion of fp16 values, so the result must
// equal the CPU's row copy rounded to the output dtype exactly.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/embedding.h"
#include "kernels/half.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

struct EmbeddingCase {
  const char* name;
  int n, dim, vocab;
};

template <class Env>
void check_embedding(Env& env, const EmbeddingCase& c, DType dt, float scale) {
  const std::string where =
      std::string(c.name) + " " + dtype_name(dt) + " scale " + std::to_string(scale);
  const std::uint64_t seed = seed_of(c.name);
  const std::vector<half_bits> table =
      to_half(random_floats(static_cast<std::size_t>(c.vocab) * c.dim, seed, 2.0f));
  std::mt19937_64 rng(seed + 1);
  std::uniform_int_distribution<int> dist(0, c.vocab - 1);
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(c.n));
  for (auto& t : tokens) t = dist(rng);

  // The CPU twin on the table rounded to the activation dtype, as the kernel scales it.
  const std::vector<float> table_f = rounded(from_half(table), dt);
  std::vector<float> ref(static_cast<std::size_t>(c.n) * c.dim);
  cpu::embedding_forward<float>(tokens.data(), table_f.data(), ref.data(), c.n, c.dim, scale);

  auto d_table = env.upload(table);
  auto d_tokens = env.upload(tokens);
  auto d_out = env.template poisoned<unsigned char>(ref.size() * dtype_size(dt));
  env.embedding_forward(d_tokens.data(), d_table.data(), d_out.data(), c.n, c.dim, c.vocab, scale,
                        dt);
  EXPECT_EQ(decode(env.download(d_out), dt), rounded(ref, dt)) << where;
}

// An id outside [0, vocab) gives a NaN row, the others are still looked up.
template <class Env>
void check_embedding_bad_token(Env& env) {
  const int dim = 5, vocab = 4;
  auto d_table = env.upload(to_half(random_floats(static_cast<std::size_t>(vocab) * dim, 3)));
  auto d_tokens = env.upload(std::vector<std::int32_t>{1, vocab, -1, 3});
  auto d_out = env.template poisoned<float>(4 * dim);
  env.embedding_forward(d_tokens.data(), d_table.data(), d_out.data(), 4, dim, vocab, 1.0f,
                        DType::kF32);
  const std::vector<float> out = env.download(d_out);
  for (int d = 0; d < dim; ++d) {
    EXPECT_TRUE(std::isfinite(out[static_cast<std::size_t>(d)]));
    EXPECT_TRUE(std::isnan(out[static_cast<std::size_t>(dim + d)]));
    EXPECT_TRUE(std::isnan(out[static_cast<std::size_t>(2 * dim + d)]));
    EXPECT_TRUE(std::isfinite(out[static_cast<std::size_t>(3 * dim + d)]));
  }
}

// 1 (every model but Gemma) and sqrt(2048) (Gemma 2B's normalizer, exact in bf16 and fp16).
inline constexpr float kEmbeddingScales[] = {1.0f, 45.25f};

namespace embedding_cases {
inline const EmbeddingCase kOneToken{"OneToken", 1, 7, 3};
inline const EmbeddingCase kTinyConfig{"TinyConfig", 33, 128, 256};
inline const EmbeddingCase kOddDim{"OddDim", 100, 100, 50};
}  // namespace embedding_cases

inline std::vector<EmbeddingCase> all_embedding_cases() {
  using namespace embedding_cases;
  return {kOneToken, kTinyConfig, kOddDim};
}

}  // namespace peftrun::gpu_testing
