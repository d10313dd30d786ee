// Parity cases of the fused cross-entropy kernel against the CPU twin
// (kernels/cross_entropy_cpu.cpp), for tests/gpu/cross_entropy_parity_test.cpp (GPU) and
// tests/emulated_kernels_test.cpp (CPU emulator); see tests/gpu/parity_support.h. The reference
// runs in double, row by row, on the rounded logits; per-row losses, the accumulated sum and
// dlogits are compared.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/cross_entropy.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

struct CrossEntropyCase {
  const char* name;
  int n, V;
  int ignore_every = 0;  // every k-th row (k > 0) gets the ignore index
  bool in_place = true;  // dlogits written over the logits
  bool with_grad = true;
  float logit_scale = 3.0f;
  float softcap = 0.0f;  // > 0: the loss of softcap * tanh(logits / softcap) (Gemma 2)
};

inline std::vector<std::int32_t> make_targets(const CrossEntropyCase& c, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(0, c.V - 1);
  std::vector<std::int32_t> t(static_cast<std::size_t>(c.n));
  for (int r = 0; r < c.n; ++r) {
    const bool ignored = c.ignore_every > 0 && r % c.ignore_every == c.ignore_every - 1;
    t[static_cast<std::size_t>(r)] = ignored ? cpu::kIgnoreIndex : dist(rng);
  }
  return t;
}

template <class Env>
void check_cross_entropy(Env& env, const CrossEntropyCase& c, DType dt) {
  const std::string where = std::string(c.name) + " " + dtype_name(dt);
  const std::uint64_t seed = seed_of(c.name);
  const std::size_t elems = static_cast<std::size_t>(c.n) * c.V;
  const float grad_scale = 1.0f / 37.0f;  // like 1 / tokens of a global batch
  const std::vector<float> logits = rounded(random_floats(elems, seed, c.logit_scale), dt);
  const std::vector<std::int32_t> targets = make_targets(c, seed + 1);

  const std::vector<double> x = to_double(logits);
  std::vector<double> row_ref(static_cast<std::size_t>(c.n)), d_ref(elems);
  double total_ref = 0;
  for (int r = 0; r < c.n; ++r) {
    const std::size_t o = static_cast<std::size_t>(r) * c.V;
    row_ref[static_cast<std::size_t>(r)] = cpu::cross_entropy_forward_backward<double>(
        x.data() + o, &targets[static_cast<std::size_t>(r)], d_ref.data() + o, 1, c.V, grad_scale,
        c.softcap);
    total_ref += row_ref[static_cast<std::size_t>(r)];
  }

  auto d_logits = env.upload(encode(logits, dt));
  auto d_grad = env.template poisoned<unsigned char>(c.in_place ? 0 : elems * dtype_size(dt));
  auto d_targets = env.upload(targets);
  auto d_rows = env.template poisoned<float>(static_cast<std::size_t>(c.n));
  const double start = 1.25;  // the sum accumulates into what is there
  auto d_sum = env.upload(std::vector<double>{start});
  void* grad = !c.with_grad ? nullptr : c.in_place ? d_logits.data() : d_grad.data();
  env.cross_entropy_forward_backward(d_logits.data(), d_targets.data(), grad, d_rows.data(),
                                     d_sum.data(), c.n, c.V, grad_scale, c.softcap, dt);
  expect_close(where, "row_loss", env.download(d_rows), row_ref, kTolFp32);
  expect_close(where, "loss_sum", std::vector<double>{env.download(d_sum)[0] - start},
               std::vector<double>{total_ref}, kTolFp32);
  if (c.with_grad) {
    expect_close(where, "dlogits", decode(env.download(c.in_place ? d_logits : d_grad), dt), d_ref,
                 tolerance(dt));
  } else {
    EXPECT_EQ(decode(env.download(d_logits), dt), logits) << where << ": loss-only run wrote";
  }
}

// A target outside [0, V) poisons its row (loss and gradient NaN) and no other.
template <class Env>
void check_cross_entropy_bad_target(Env& env) {
  const int n = 3, V = 40;
  const std::vector<float> logits = random_floats(static_cast<std::size_t>(n) * V, 11);
  auto d_logits = env.upload(logits);
  auto d_targets = env.upload(std::vector<std::int32_t>{5, V, 7});
  auto d_rows = env.template poisoned<float>(n);
  env.cross_entropy_forward_backward(d_logits.data(), d_targets.data(), d_logits.data(),
                                     d_rows.data(), nullptr, n, V, 1.0f, 0.0f, DType::kF32);
  const std::vector<float> rows = env.download(d_rows);
  const std::vector<float> grad = env.download(d_logits);
  EXPECT_TRUE(std::isfinite(rows[0]) && std::isfinite(rows[2]));
  EXPECT_TRUE(std::isnan(rows[1]));
  for (int j = 0; j < V; ++j) {
    EXPECT_TRUE(std::isnan(grad[static_cast<std::size_t>(V + j)])) << j;
    EXPECT_TRUE(std::isfinite(grad[static_cast<std::size_t>(j)])) << j;
  }
}

namespace cross_entropy_cases {
inline const CrossEntropyCase kSmallVocabTail{"SmallVocabTail", 7, 33, 3, false};
inline const CrossEntropyCase kByteVocabInPlace{"ByteVocabInPlace", 33, 256, 5, true};
inline const CrossEntropyCase kPeakyOddVocab{"PeakyOddVocab", 5, 1007, 0, false, true, 12.0f};
inline const CrossEntropyCase kLossOnly{"LossOnly", 9, 300, 4, true, false};
inline const CrossEntropyCase kLargeVocab{"LargeVocab", 3, 32003, 0, true};
inline const CrossEntropyCase kAllIgnored{"AllIgnored", 4, 50, 1, false};
inline const CrossEntropyCase kOneClass{"OneClass", 2, 1, 0, false};
// Gemma 2's final_logit_softcapping, in place and loss only, logits wide enough for tanh to bend.
inline const CrossEntropyCase kSoftcapInPlace{"SoftcapInPlace", 6, 777, 4, true, true, 12.0f, 5.0f};
inline const CrossEntropyCase kSoftcapLossOnly{
    "SoftcapLossOnly", 4, 300, 0, true, false, 12.0f, 5.0f};
}  // namespace cross_entropy_cases

inline std::vector<CrossEntropyCase> all_cross_entropy_cases() {
  using namespace cross_entropy_cases;
  return {kSmallVocabTail, kByteVocabInPlace, kPeakyOddVocab,  kLossOnly,       kLargeVocab,
          kAllIgnored,     kOneClass,         kSoftcapInPlace, kSoftcapLossOnly};
}

}  // namespace peftrun::gpu_testing
