// Parity cases of the gated MLP activation's kernels (SwiGLU and GeGLU) against the CPU twin
// (kernels/glu_cpu.cpp), for tests/gpu/glu_parity_test.cpp (GPU) and
// tests/emulated_kernels_test.cpp (CPU emulator); see tests/gpu/parity_support.h. Gates span both
// branches of the overflow-safe sigmoid, and GELU's tails where its sigmoid underflows.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/glu.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

struct GluCase {
  const char* name;
  std::size_t n;
};

template <class Env>
void check_glu(Env& env, const GluCase& c, GluActivation act, DType dt) {
  const std::string where = std::string(c.name) +
                            (act == GluActivation::kSilu ? " silu " : " gelu_tanh ") +
                            dtype_name(dt);
  const std::uint64_t seed = seed_of(c.name);
  const std::vector<float> gate = rounded(random_floats(c.n, seed, 8.0f), dt);
  const std::vector<float> up = rounded(random_floats(c.n, seed + 1, 2.0f), dt);
  const std::vector<float> dout = rounded(random_floats(c.n, seed + 2), dt);
  const std::vector<double> g = to_double(gate), u = to_double(up), d = to_double(dout);
  std::vector<double> out_ref(c.n), dg_ref(c.n), du_ref(c.n);
  cpu::glu_forward<double>(act, g.data(), u.data(), out_ref.data(), c.n);
  cpu::glu_backward<double>(act, d.data(), g.data(), u.data(), dg_ref.data(), du_ref.data(), c.n);

  const std::size_t bytes = c.n * dtype_size(dt);
  auto d_gate = env.upload(encode(gate, dt));
  auto d_up = env.upload(encode(up, dt));
  auto d_dout = env.upload(encode(dout, dt));
  auto d_out = env.template poisoned<unsigned char>(bytes);
  env.glu_forward(act, d_gate.data(), d_up.data(), d_out.data(), c.n, dt);
  expect_close(where, "out", decode(env.download(d_out), dt), out_ref, tolerance(dt));
  auto d_dg = env.template poisoned<unsigned char>(bytes);
  auto d_du = env.template poisoned<unsigned char>(bytes);
  env.glu_backward(act, d_dout.data(), d_gate.data(), d_up.data(), d_dg.data(), d_du.data(), c.n,
                   dt);
  expect_close(where, "dgate", decode(env.download(d_dg), dt), dg_ref, tolerance(dt));
  expect_close(where, "dup", decode(env.download(d_du), dt), du_ref, tolerance(dt));
}

namespace glu_cases {
inline const GluCase kOne{"OneElement", 1};
inline const GluCase kSeven{"Seven", 7};
inline const GluCase kTinyConfigRows{"TinyConfig33x384", 33 * 384};
inline const GluCase kBeyondOneGridPass{"BeyondOneGridPass", 4096 * 256 + 77};
}  // namespace glu_cases

inline std::vector<GluCase> all_glu_cases() {
  using namespace glu_cases;
  return {kOne, kSeven, kTinyConfigRows, kBeyondOneGridPass};
}

inline const GluActivation kAllGluActivations[] = {GluActivation::kSilu, GluActivation::kGeluTanh};

}  // namespace peftrun::gpu_testing
