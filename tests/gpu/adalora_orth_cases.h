// Parity cases of AdaLoRA's orthogonality regulariser kernel (kernels/adalora_blocks.h) against
// the CPU twin cpu::orth_reg (kernels/adalora_cpu.cpp, evaluated in double on the same fp32
// values), for tests/gpu/adalora_parity_test.cpp (GPU) and tests/emulated_kernels_test.cpp (CPU
// emulator); see tests/gpu/parity_support.h.
//
// Every case places several modules (A [r, in] and B [out, r] each) at unaligned offsets of one
// flat buffer with gaps between them, params random (gaps included), grads random and non-zero,
// norms poisoned. It compares the norms and the grad increments by relative error (fp32
// tolerance) and requires every element the regulariser must not touch (the gaps, matrices with
// ||C|| = 0, everything when the weight is 0) to keep its exact bits.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/adalora.h"
#include "runtime/adapters/adalora_regulariser.h"
#include "runtime/adapters/adapter_layout.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

struct OrthModule {
  int r, in, out;
};

struct OrthCase {
  const char* name;
  std::vector<OrthModule> modules;
  float weight = 0.75f;
  // The first module's A has orthonormal rows and its B orthonormal columns (signed rows of the
  // identity): ||C|| = 0 exactly, so their grads must stay untouched.
  bool orthonormal_first = false;
};

// gtest prints a parameter by its name.
inline void PrintTo(const OrthCase& c, std::ostream* os) {
  *os << c.name;
}

// The flat buffers of one case.
struct OrthInputs {
  std::vector<AdaLoraOrthMatrix> mats;
  std::vector<float> params, grads;
  int max_rank = 1;
};

inline OrthInputs make_orth_inputs(const OrthCase& c, float grad_scale = 1.0f) {
  OrthInputs v;
  std::size_t at = 3;  // odd offsets and gaps: nothing is aligned
  for (std::size_t k = 0; k < c.modules.size(); ++k) {
    const OrthModule& m = c.modules[k];
    AdaLoraOrthMatrix a;
    a.offset = at;
    a.rows = m.r;
    a.cols = m.in;
    a.is_A = 1;
    at += std::size_t(m.r) * m.in + 1 + k % 4;
    AdaLoraOrthMatrix b;
    b.offset = at;
    b.rows = m.out;
    b.cols = m.r;
    b.is_A = 0;
    at += std::size_t(m.out) * m.r + 2 + k % 3;
    v.mats.push_back(a);
    v.mats.push_back(b);
    v.max_rank = std::max(v.max_rank, m.r);
  }
  const std::uint64_t seed = seed_of(c.name);
  v.params = random_floats(at + 5, seed, 0.5f);
  // Small next to the increments (which are O(weight)), so fp32 rounding of grad + increment
  // stays far below the tolerance on the increment. Scaled like the weight (grad_scale).
  v.grads = random_floats(at + 5, seed + 1, 1e-2f);
  for (float& g : v.grads) g *= grad_scale;
  if (c.orthonormal_first && !c.modules.empty()) {
    const OrthModule& m = c.modules[0];
    EXPECT_LE(m.r, m.in);
    EXPECT_LE(2 * m.r, m.out);
    float* A = v.params.data() + v.mats[0].offset;  // row i = +-e_{in - 1 - i}
    std::fill(A, A + std::size_t(m.r) * m.in, 0.0f);
    for (int i = 0; i < m.r; ++i) A[std::size_t(i) * m.in + (m.in - 1 - i)] = i % 2 ? -1.0f : 1.0f;
    float* B = v.params.data() + v.mats[1].offset;  // column i = +-e_{2i}
    std::fill(B, B + std::size_t(m.out) * m.r, 0.0f);
    for (int i = 0; i < m.r; ++i) B[std::size_t(2 * i) * m.r + i] = i % 3 ? 1.0f : -1.0f;
  }
  return v;
}

// What the kernel produced.
struct OrthResult {
  std::vector<double> norms;
  std::vector<float> grads;
};

template <class Env>
OrthResult run_orth(Env& env, const OrthInputs& v, float weight, bool with_grads = true) {
  auto d_params = env.upload(v.params);
  auto d_grads = env.upload(v.grads);
  auto d_mats = env.upload(v.mats);
  auto d_norms = env.template poisoned<double>(v.mats.size());
  env.adalora_orth_reg(d_params.data(), with_grads ? d_grads.data() : nullptr, v.params.size(),
                       d_mats.data(), static_cast<int>(v.mats.size()), v.max_rank, weight,
                       d_norms.data());
  OrthResult r;
  r.norms = env.download(d_norms);
  r.grads = env.download(d_grads);
  EXPECT_EQ(env.download(d_params), v.params) << "params must be read only";
  return r;
}

// cpu::orth_reg<double> matrix by matrix on the same values: the norms and the final grads.
struct OrthReference {
  std::vector<double> norms, grads;
  std::vector<bool> touched;  // elements whose grad must change
};

inline OrthReference orth_reference(const OrthInputs& v, float weight) {
  OrthReference ref;
  const std::vector<double> P = to_double(v.params);
  ref.grads = to_double(v.grads);
  ref.touched.assign(v.params.size(), false);
  std::vector<double> work;
  for (const AdaLoraOrthMatrix& m : v.mats) {
    const bool is_A = m.is_A != 0;
    work.resize(cpu::orth_reg_workspace(m.rows, m.cols, is_A));
    const double norm = cpu::orth_reg<double>(P.data() + m.offset, m.rows, m.cols, is_A,
                                              static_cast<double>(weight),
                                              ref.grads.data() + m.offset, work.data());
    ref.norms.push_back(norm);
    if (norm > 0 && weight != 0.0f) {
      std::fill_n(ref.touched.begin() + static_cast<std::ptrdiff_t>(m.offset),
                  std::size_t(m.rows) * m.cols, true);
    }
  }
  return ref;
}

inline std::vector<double> increments(const std::vector<float>& after,
                                      const std::vector<float>& before) {
  std::vector<double> d(after.size());
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = double(after[i]) - double(before[i]);
  return d;
}
inline std::vector<double> increments(const std::vector<double>& after,
                                      const std::vector<float>& before) {
  std::vector<double> d(after.size());
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = after[i] - double(before[i]);
  return d;
}

// Norms within kTolFp32 (exactly 0 where the reference is 0), grad increments within kTolFp32,
// every untouched element bit-identical.
inline void expect_orth_matches(const std::string& where, const OrthInputs& v,
                                const OrthReference& ref, const OrthResult& got,
                                bool with_grads = true) {
  expect_close(where, "norms", got.norms, ref.norms, kTolFp32);
  for (std::size_t m = 0; m < ref.norms.size(); ++m) {
    if (ref.norms[m] == 0) {
      EXPECT_EQ(got.norms[m], 0.0) << where << ": matrix " << m;
    }
  }
  if (!with_grads) {
    EXPECT_EQ(std::memcmp(got.grads.data(), v.grads.data(), v.grads.size() * sizeof(float)), 0)
        << where << ": grads = nullptr must leave the buffer alone";
    return;
  }
  const std::vector<double> inc_ref = increments(ref.grads, v.grads);
  if (std::any_of(ref.touched.begin(), ref.touched.end(), [](bool t) { return t; })) {
    expect_close(where, "grad increments", increments(got.grads, v.grads), inc_ref, kTolFp32);
  }
  std::size_t changed = 0;
  for (std::size_t i = 0; i < v.grads.size(); ++i) {
    if (ref.touched[i]) continue;
    std::uint32_t a, b;
    std::memcpy(&a, &got.grads[i], 4);
    std::memcpy(&b, &v.grads[i], 4);
    if (a != b && changed++ == 0) {
      ADD_FAILURE() << where << ": grad element " << i << " must stay untouched";
    }
  }
  EXPECT_EQ(changed, 0u) << where << ": untouched grad elements that changed";
}

template <class Env>
void check_adalora_orth_reg(Env& env, const OrthCase& c) {
  const OrthInputs v = make_orth_inputs(c);
  const OrthReference ref = orth_reference(v, c.weight);
  expect_orth_matches(c.name, v, ref, run_orth(env, v, c.weight));
}

// grads = nullptr: norms only, the grad buffer untouched.
template <class Env>
void check_adalora_orth_norms_only(Env& env, const OrthCase& c) {
  const OrthInputs v = make_orth_inputs(c);
  const OrthReference ref = orth_reference(v, c.weight);
  expect_orth_matches(std::string(c.name) + " norms only", v, ref,
                      run_orth(env, v, c.weight, /*with_grads=*/false), /*with_grads=*/false);
}

// fp16 loss scaling: gradients and the weight carry a power of two S. The kernel's result is
// then exactly S times the unscaled one (alpha = 2 w / ||C|| scales exactly, and so does every
// rounding after it), as the CPU function's is.
template <class Env>
void check_adalora_orth_grad_scale(Env& env, const OrthCase& c, float scale) {
  const OrthInputs plain = make_orth_inputs(c);
  const OrthInputs scaled = make_orth_inputs(c, scale);
  const float w = c.weight * scale;
  const OrthReference ref = orth_reference(scaled, w);
  const OrthResult got = run_orth(env, scaled, w);
  expect_orth_matches(std::string(c.name) + " scaled", scaled, ref, got);
  const OrthResult base = run_orth(env, plain, c.weight);
  EXPECT_EQ(got.norms, base.norms);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < got.grads.size(); ++i)
    differ += got.grads[i] != base.grads[i] * scale;
  EXPECT_EQ(differ, 0u) << c.name << ": scaled grads are not exactly " << scale << " x unscaled";
}

// A descriptor whose rank is above max_rank gets a NaN norm and no gradient (the shared memory
// was sized for max_rank), and so does one without elements; the other matrices of the launch
// are unaffected. max_rank outside [1, kAdaLoraOrthMaxRank] and a negative count are refused on
// the host.
template <class Env>
void check_adalora_orth_rank_guard(Env& env) {
  const OrthCase c{"RankGuard", {{3, 33, 7}, {6, 7, 33}}};
  OrthInputs v = make_orth_inputs(c);
  v.max_rank = 3;  // the second module's matrices (d = 6) exceed it
  const OrthReference ref = orth_reference(v, c.weight);
  AdaLoraOrthMatrix empty = v.mats[0];  // an A [3, 0]
  empty.cols = 0;
  v.mats.push_back(empty);
  const OrthResult got = run_orth(env, v, c.weight);
  ASSERT_EQ(got.norms.size(), 5u);
  EXPECT_LT(std::fabs(got.norms[0] - ref.norms[0]), kTolFp32 * ref.norms[0]);
  EXPECT_LT(std::fabs(got.norms[1] - ref.norms[1]), kTolFp32 * ref.norms[1]);
  for (std::size_t m = 2; m < 5; ++m) EXPECT_TRUE(std::isnan(got.norms[m])) << "matrix " << m;
  for (std::size_t i = v.mats[2].offset; i < v.grads.size(); ++i) {
    EXPECT_EQ(got.grads[i], v.grads[i]) << "element " << i;
  }
  auto d_params = env.upload(v.params);
  auto d_grads = env.upload(v.grads);
  auto d_mats = env.upload(v.mats);
  auto d_norms = env.template poisoned<double>(v.mats.size());
  for (const int bad : {0, kAdaLoraOrthMaxRank + 1}) {
    EXPECT_THROW(env.adalora_orth_reg(d_params.data(), d_grads.data(), v.params.size(),
                                      d_mats.data(), 5, bad, 1.0f, d_norms.data()),
                 std::invalid_argument)
        << "max_rank " << bad;
  }
  EXPECT_THROW(env.adalora_orth_reg(d_params.data(), d_grads.data(), v.params.size(), d_mats.data(),
                                    -1, 4, 1.0f, d_norms.data()),
               std::invalid_argument);
}

// The wiring the CUDA trainer uses, on the tiny model's AdaLoRA layout (28 modules, r = 12):
// descriptors from adalora_orth_matrices, the weight from adalora_orth_weight (fp16-style
// grad_scale 1024), the term from adalora_orth_term over the kernel's norms, against the CPU
// trainer's add_adalora_orth_regulariser (fp32) on copies of the same buffers.
template <class Env>
void check_adalora_orth_tiny_layout(Env& env) {
  ModelConfig model;
  AdapterConfig cfg;
  cfg.type = AdapterType::kAdaLora;
  cfg.target_modules = all_target_modules();
  cfg.orth_reg_weight = 50.0;  // large, so the increments dominate the random grads
  const AdapterLayout layout = AdapterLayout::plan(model, cfg);
  const double grad_scale = 1024;
  std::vector<float> params(layout.total(), 0.0f);
  layout.init_params(params.data(), 7);  // PEFT's N(0, 0.02) init
  const std::vector<float> grads0 = random_floats(layout.total(), 8);
  std::vector<float> grads_cpu = grads0;
  std::vector<float> work;
  const double term_cpu =
      add_adalora_orth_regulariser(layout, cfg, params.data(), grads_cpu.data(), work, grad_scale);

  OrthInputs v;
  v.mats = adalora_orth_matrices(layout);
  ASSERT_EQ(v.mats.size(), 2 * layout.modules().size());
  v.params = params;
  v.grads = grads0;
  v.max_rank = cfg.init_r;
  const float w = adalora_orth_weight(cfg, v.mats.size(), grad_scale);
  const OrthResult got = run_orth(env, v, w);
  const double term = adalora_orth_term(cfg, got.norms.data(), got.norms.size());
  EXPECT_LT(std::fabs(term - term_cpu), kTolFp32 * term_cpu) << term << " vs " << term_cpu;
  expect_close("TinyLayout", "grad increments", increments(got.grads, grads0),
               increments(grads_cpu, grads0), kTolFp32);
  // Outside A and B (E, alignment padding) nothing changes.
  std::vector<bool> in_matrix(layout.total(), false);
  for (const AdaLoraOrthMatrix& m : v.mats) {
    std::fill_n(in_matrix.begin() + static_cast<std::ptrdiff_t>(m.offset),
                std::size_t(m.rows) * m.cols, true);
  }
  for (std::size_t i = 0; i < in_matrix.size(); ++i) {
    if (!in_matrix[i]) {
      ASSERT_EQ(got.grads[i], grads0[i]) << "element " << i;
    }
  }
}

namespace orth_cases {
// Ranks 1, 4, 8, 12 and the bound; long dims (in for A, out for B) 1, 7, 33, 100, 4099.
inline const OrthCase kRank1{"Rank1", {{1, 7, 1}, {1, 1, 33}, {1, 100, 7}}};
inline const OrthCase kRank4{"Rank4", {{4, 33, 100}, {4, 1, 7}}};
inline const OrthCase kRank8{"Rank8", {{8, 100, 33}, {8, 4099, 7}}};
inline const OrthCase kRank12{"Rank12", {{12, 7, 4099}, {12, 33, 1}}};
inline const OrthCase kRankBound{"RankBound",
                                 {{kAdaLoraOrthMaxRank, 100, 33}, {kAdaLoraOrthMaxRank, 1, 7}}};
// Several modules of different ranks and shapes in one launch (max_rank 12 sizes the shared
// memory; the smaller ranks use part of it).
inline const OrthCase kMixed{"MixedModules",
                             {{1, 7, 33}, {4, 100, 1}, {12, 33, 100}, {8, 1, 100}, {5, 4099, 33}}};
// ||C|| = 0 exactly for the first module's A and B; the second module is random.
inline const OrthCase kZeroNorm{"OrthonormalHasZeroNorm", {{4, 7, 33}, {4, 33, 7}}, 0.75f, true};
inline const OrthCase kWeightZero{"WeightZero", {{4, 33, 100}, {12, 7, 33}}, 0.0f};
// GPU only (long in the emulator): the bound on a long dimension.
inline const OrthCase kRankBoundLong{"RankBoundLong", {{kAdaLoraOrthMaxRank, 4099, 129}}};
}  // namespace orth_cases

inline std::vector<OrthCase> all_orth_cases() {
  using namespace orth_cases;
  return {kRank1, kRank4, kRank8, kRank12, kRankBound, kMixed, kZeroNorm, kWeightZero};
}

}  // namespace peftrun::gpu_testing
