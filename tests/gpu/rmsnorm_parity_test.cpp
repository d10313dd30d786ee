// RMSNorm on the GPU against the CPU twin: the cases of tests/gpu/rmsnorm_cases.h in fp32, fp16
// and bf16. Skipped without a GPU.
#include <gtest/gtest.h>

#include "tests/gpu/gpu_env.h"
#include "tests/gpu/rmsnorm_cases.h"

namespace peftrun::gpu_testing {
namespace {

using namespace rmsnorm_cases;

void run(const RmsNormCase& c) {
  GpuEnv env;
  for (const float offset : {0.0f, 1.0f}) {
    for (const DType dt : kAllDTypes) check_rmsnorm(env, c, dt, offset);
  }
}

TEST(GpuRmsNormParity, OneRowDim8) {
  PEFTRUN_REQUIRE_GPU();
  run(kOneRowDim8);
}
TEST(GpuRmsNormParity, SevenRowsDim100) {
  PEFTRUN_REQUIRE_GPU();
  run(kSevenRowsDim100);
}
TEST(GpuRmsNormParity, TinyConfigDim128) {
  PEFTRUN_REQUIRE_GPU();
  run(kTinyConfig);
}
TEST(GpuRmsNormParity, Rows127Dim1000) {
  PEFTRUN_REQUIRE_GPU();
  run(kDim1000);
}
TEST(GpuRmsNormParity, WideOddDim4099) {
  PEFTRUN_REQUIRE_GPU();
  run(kWideOdd);
}
TEST(GpuRmsNormParity, Llama8bRows) {
  PEFTRUN_REQUIRE_GPU();
  run({"Rows513Dim4096", 513, 4096});
}

}  // namespace
}  // namespace peftrun::gpu_testing
