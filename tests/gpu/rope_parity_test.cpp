// RoPE on the GPU against the CPU twin: the cases of tests/gpu/rope_cases.h in fp32, fp16 and
// bf16. Skipped without a GPU.
#include <gtest/gtest.h>

#include "tests/gpu/gpu_env.h"
#include "tests/gpu/rope_cases.h"

namespace peftrun::gpu_testing {
namespace {

using namespace rope_cases;

void run(const RopeCase& c) {
  GpuEnv env;
  for (const DType dt : kAllDTypes) check_rope(env, c, dt);
}

TEST(GpuRopeParity, OneTokenHd64) {
  PEFTRUN_REQUIRE_GPU();
  run(kOneToken);
}
TEST(GpuRopeParity, TinyConfigHd32) {
  PEFTRUN_REQUIRE_GPU();
  run(kTinyConfig);
}
TEST(GpuRopeParity, Hd128Pos4096) {
  PEFTRUN_REQUIRE_GPU();
  run(kLongPositions);
}
TEST(GpuRopeParity, Hd256Pos8191) {
  PEFTRUN_REQUIRE_GPU();
  run(kHd256);
}
TEST(GpuRopeParity, Hd8) {
  PEFTRUN_REQUIRE_GPU();
  run(kHd8);
}
TEST(GpuRopeParity, Theta500000) {
  PEFTRUN_REQUIRE_GPU();
  run(kLlama3Theta);
}
TEST(GpuRopeParity, Llama3ScaledPos8000) {
  PEFTRUN_REQUIRE_GPU();
  run(kLlama3Scaled);
}
TEST(GpuRopeParity, YarnPos16000) {
  PEFTRUN_REQUIRE_GPU();
  run(kYarnScaled);
}
TEST(GpuRopeParity, RefusesOddOrTooLargeHeadDim) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_rope_refusals(env);
}

}  // namespace
}  // namespace peftrun::gpu_testing
