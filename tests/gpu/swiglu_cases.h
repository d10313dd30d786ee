// Parity cases of the SwiGLU kernels against the CPU twin (kernels/swiglu_cpu.cpp), for
// tests/gpu/swiglu_parity_test.cpp (GPU) and tests/emulated_kernels_test.cpp (CPU emulator); see
// tests/gpu/parity_support.h. Gates span both branches of the overflow-safe sigmoid.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/swiglu.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

struct SwigluCase {
  const char* name;
  std::size_t n;
};

template <class Env>
void check_swiglu(Env& env, const SwigluCase& c, DType dt) {
  const std::string where = std::string(c.name) + " " + dtype_name(dt);
  const std::uint64_t seed = seed_of(c.name);
  const std::vector<float> gate = rounded(random_floats(c.n, seed, 8.0f), dt);
  const std::vector<float> up = rounded(random_floats(c.n, seed + 1, 2.0f), dt);
  const std::vector<float> dout = rounded(random_floats(c.n, seed + 2), dt);
  const std::vector<double> g = to_double(gate), u = to_double(up), d = to_double(dout);
  std::vector<double> out_ref(c.n), dg_ref(c.n), du_ref(c.n);
  cpu::swiglu_forward<double>(g.data(), u.data(), out_ref.data(), c.n);
  cpu::swiglu_backward<double>(d.data(), g.data(), u.data(), dg_ref.data(), du_ref.data(), c.n);

  const std::size_t bytes = c.n * dtype_size(dt);
  auto d_gate = env.upload(encode(gate, dt));
  auto d_up = env.upload(encode(up, dt));
  auto d_dout = env.upload(encode(dout, dt));
  auto d_out = env.template poisoned<unsigned char>(bytes);
  env.swiglu_forward(d_gate.data(), d_up.data(), d_out.data(), c.n, dt);
  expect_close(where, "out", decode(env.download(d_out), dt), out_ref, tolerance(dt));
  auto d_dg = env.template poisoned<unsigned char>(bytes);
  auto d_du = env.template poisoned<unsigned char>(bytes);
  env.swiglu_backward(d_dout.data(), d_gate.data(), d_up.data(), d_dg.data(), d_du.data(), c.n, dt);
  expect_close(where, "dgate", decode(env.download(d_dg), dt), dg_ref, tolerance(dt));
  expect_close(where, "dup", decode(env.download(d_du), dt), du_ref, tolerance(dt));
}

namespace swiglu_cases {
inline const SwigluCase kOne{"OneElement", 1};
inline const SwigluCase kSeven{"Seven", 7};
inline const SwigluCase kTinyConfigRows{"TinyConfig33x384", 33 * 384};
inline const SwigluCase kBeyondOneGridPass{"BeyondOneGridPass", 4096 * 256 + 77};
}  // namespace swiglu_cases

inline std::vector<SwigluCase> all_swiglu_cases() {
  using namespace swiglu_cases;
  return {kOne, kSeven, kTinyConfigRows, kBeyondOneGridPass};
}

}  // namespace peftrun::gpu_testing
