// The gated MLP activation (SwiGLU, GeGLU) on the GPU against the CPU twin: the cases of
// tests/gpu/glu_cases.h for both activations in fp32, fp16 and bf16. Skipped without a GPU.
#include <gtest/gtest.h>

#include "tests/gpu/glu_cases.h"
#include "tests/gpu/gpu_env.h"

namespace peftrun::gpu_testing {
namespace {

using namespace glu_cases;

void run(const GluCase& c) {
  GpuEnv env;
  for (const GluActivation act : kAllGluActivations) {
    for (const DType dt : kAllDTypes) check_glu(env, c, act, dt);
  }
}

TEST(GpuGluParity, OneElement) {
  PEFTRUN_REQUIRE_GPU();
  run(kOne);
}
TEST(GpuGluParity, Seven) {
  PEFTRUN_REQUIRE_GPU();
  run(kSeven);
}
TEST(GpuGluParity, TinyConfig33x384) {
  PEFTRUN_REQUIRE_GPU();
  run(kTinyConfigRows);
}
TEST(GpuGluParity, BeyondOneGridPass) {
  PEFTRUN_REQUIRE_GPU();
  run(kBeyondOneGridPass);
}

}  // namespace
}  // namespace peftrun::gpu_testing
