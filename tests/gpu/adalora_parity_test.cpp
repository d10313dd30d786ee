// AdaLoRA's CUDA twin against the CPU: the linear layer (A~ = E * A) forward and backward in
// double on the same rounded inputs for every activation type (cuBLASLt, so GPU only), and the
// cases of tests/gpu/adalora_cases.h and adalora_orth_cases.h, which the CPU suite also runs in
// the block emulator (tests/emulated_adalora_test.cpp, EmulatedAdaLoraOrthReg*): the importance
// EMAs bit for bit, the triplet scores of one module placed at unaligned offsets of a flat
// buffer, the E chain rule, and the orthogonality regulariser.
#include <gtest/gtest.h>

#include <cstddef>
#include <vector>

#include "kernels/adalora.h"
#include "tests/gpu/adalora_cases.h"
#include "tests/gpu/adalora_orth_cases.h"
#include "tests/gpu/adapter_parity_support.h"
#include "tests/gpu/gpu_env.h"

namespace peftrun::gpu_testing {
namespace {

class GpuAdaLoraLinearParity : public BlasLtTest,
                               public ::testing::WithParamInterface<AdapterCase> {};

TEST_P(GpuAdaLoraLinearParity, ForwardAndBackwardMatchTheCpuTwin) {
  const AdapterCase c = GetParam();
  const AdapterInputs v = make_adapter_inputs(c, 3000 + c.n + c.in);
  const float s = 0.75f;
  const std::vector<float> E = random_floats(c.r, 90);
  const std::vector<float> dA0 = random_floats(std::size_t(c.r) * c.in, 91);
  const std::vector<float> dB0 = random_floats(std::size_t(c.out) * c.r, 92);
  const std::vector<float> dE0 = random_floats(c.r, 93);

  AdapterHost h(c, v);
  const std::vector<double> Ed = to_double(E);
  std::vector<double> work(cpu::adalora_linear_workspace(c.n, c.in, c.r));
  std::vector<double> dA_ref = to_double(dA0), dB_ref = to_double(dB0), dE_ref = to_double(dE0);
  cpu::AdaLoraLinearArgs<double> ra;
  ra.lora = h.lora(s);
  ra.E = Ed.data();
  ra.work = work.data();
  cpu::adalora_linear_forward(ra, h.x.data(), h.y.data());
  cpu::adalora_linear_backward(ra, h.x.data(), h.dy.data(), h.dx.data(), dA_ref.data(),
                               dE_ref.data(), dB_ref.data());

  AdapterDevice d(c, v);
  cuda::DeviceBuffer<float> dEp = to_device(E);
  cuda::DeviceBuffer<unsigned char> ws =
      poisoned_workspace(cuda::adalora_linear_workspace_bytes(c.n, c.in, c.out, c.r, c.act));
  cuda::DeviceBuffer<float> dA = to_device(dA0), dB = to_device(dB0), dE = to_device(dE0);
  cuda::AdaLoraLinearArgs a;
  a.lora = d.lora(s);
  a.E = dEp.data();
  a.work = ws.data();
  cuda::adalora_linear_forward(lt(), a, d.x.data(), d.y.data(), nullptr);
  const double tol = tolerance(c.act);
  EXPECT_LT(rel_error(download(d.y), h.y), tol);
  EXPECT_LT(rel_error(download(d.xa), h.xa), tol);

  cuda::device_memset(ws.data(), 0xFF, ws.size());
  cuda::adalora_linear_backward(lt(), a, d.x.data(), d.dy.data(), d.dx.data(), dA.data(), dE.data(),
                                dB.data(), nullptr);
  EXPECT_LT(rel_error(download(d.dx), h.dx), tol);
  EXPECT_LT(rel_error(increment(to_host(dA), dA0), increment(dA_ref, dA0)), tol);
  EXPECT_LT(rel_error(increment(to_host(dB), dB0), increment(dB_ref, dB0)), tol);
  EXPECT_LT(rel_error(increment(to_host(dE), dE0), increment(dE_ref, dE0)), tol);
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuAdaLoraLinearParity, ::testing::ValuesIn(adapter_cases()),
                         adapter_case_name);

TEST(GpuAdaLoraParity, ImportanceEmasAreBitIdenticalToTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const std::size_t n : {std::size_t(1), std::size_t(257), std::size_t(100003)}) {
    check_adalora_importance(env, n);
  }
}

TEST(GpuAdaLoraParity, TripletScoresOfAModuleInAFlatBuffer) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_adalora_triplet_scores(env, 1, 1, 1);
  check_adalora_triplet_scores(env, 12, 127, 65);
  check_adalora_triplet_scores(env, 4, 300, 1000);
}

TEST(GpuAdaLoraParity, EChainMatchesTheFormulasInDouble) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const EChainShape& c : kEChainShapes) check_adalora_e_chain(env, c.r, c.in);
}

void run_orth_case(const OrthCase& c) {
  GpuEnv env;
  check_adalora_orth_reg(env, c);
}

TEST(GpuAdaLoraParity, OrthRegRank1) {
  PEFTRUN_REQUIRE_GPU();
  run_orth_case(orth_cases::kRank1);
}
TEST(GpuAdaLoraParity, OrthRegRank4) {
  PEFTRUN_REQUIRE_GPU();
  run_orth_case(orth_cases::kRank4);
}
TEST(GpuAdaLoraParity, OrthRegRank8) {
  PEFTRUN_REQUIRE_GPU();
  run_orth_case(orth_cases::kRank8);
}
TEST(GpuAdaLoraParity, OrthRegRank12) {
  PEFTRUN_REQUIRE_GPU();
  run_orth_case(orth_cases::kRank12);
}
TEST(GpuAdaLoraParity, OrthRegRankBound) {
  PEFTRUN_REQUIRE_GPU();
  run_orth_case(orth_cases::kRankBound);  // 138 KiB of shared memory: the opt-in path
}
TEST(GpuAdaLoraParity, OrthRegRankBoundLong) {
  PEFTRUN_REQUIRE_GPU();
  run_orth_case(orth_cases::kRankBoundLong);
}
TEST(GpuAdaLoraParity, OrthRegMixedModules) {
  PEFTRUN_REQUIRE_GPU();
  run_orth_case(orth_cases::kMixed);
}
TEST(GpuAdaLoraParity, OrthRegOrthonormalHasZeroNorm) {
  PEFTRUN_REQUIRE_GPU();
  run_orth_case(orth_cases::kZeroNorm);
}
TEST(GpuAdaLoraParity, OrthRegWeightZero) {
  PEFTRUN_REQUIRE_GPU();
  run_orth_case(orth_cases::kWeightZero);
}
TEST(GpuAdaLoraParity, OrthRegNormsOnlyWithoutGrads) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_adalora_orth_norms_only(env, orth_cases::kMixed);
}
TEST(GpuAdaLoraParity, OrthRegPowerOfTwoGradScaleScalesExactly) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_adalora_orth_grad_scale(env, orth_cases::kMixed, 1024.0f);
}
TEST(GpuAdaLoraParity, OrthRegRankAboveMaxRankGivesNan) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_adalora_orth_rank_guard(env);
}
TEST(GpuAdaLoraParity, OrthRegTinyLayoutMatchesTheCpuRegulariser) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_adalora_orth_tiny_layout(env);
}
TEST(GpuAdaLoraParity, OrthRegIsDeterministic) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  const OrthInputs v = make_orth_inputs(orth_cases::kMixed);
  const OrthResult a = run_orth(env, v, 0.75f), b = run_orth(env, v, 0.75f);
  EXPECT_EQ(a.norms, b.norms);
  EXPECT_EQ(a.grads, b.grads);
}

}  // namespace
}  // namespace peftrun::gpu_testing
