// Fused cross-entropy on the GPU against the CPU twin: the cases of
// tests/gpu/cross_entropy_cases.h in fp32, fp16 and bf16. Skipped without a GPU.
#include <gtest/gtest.h>

#include "tests/gpu/cross_entropy_cases.h"
#include "tests/gpu/gpu_env.h"

namespace peftrun::gpu_testing {
namespace {

using namespace cross_entropy_cases;

void run(const CrossEntropyCase& c) {
  GpuEnv env;
  for (const DType dt : kAllDTypes) check_cross_entropy(env, c, dt);
}

TEST(GpuCrossEntropyParity, SmallVocabTail) {
  PEFTRUN_REQUIRE_GPU();
  run(kSmallVocabTail);
}
TEST(GpuCrossEntropyParity, ByteVocabInPlace) {
  PEFTRUN_REQUIRE_GPU();
  run(kByteVocabInPlace);
}
TEST(GpuCrossEntropyParity, PeakyOddVocab) {
  PEFTRUN_REQUIRE_GPU();
  run(kPeakyOddVocab);
}
TEST(GpuCrossEntropyParity, LossOnly) {
  PEFTRUN_REQUIRE_GPU();
  run(kLossOnly);
}
TEST(GpuCrossEntropyParity, LargeVocab) {
  PEFTRUN_REQUIRE_GPU();
  run(kLargeVocab);
}
TEST(GpuCrossEntropyParity, AllIgnored) {
  PEFTRUN_REQUIRE_GPU();
  run(kAllIgnored);
}
TEST(GpuCrossEntropyParity, OneClass) {
  PEFTRUN_REQUIRE_GPU();
  run(kOneClass);
}
// A Llama-3-sized vocabulary over a chunk of rows.
TEST(GpuCrossEntropyParity, Vocab128256) {
  PEFTRUN_REQUIRE_GPU();
  run({"Vocab128256", 40, 128256, 7, true});
}
TEST(GpuCrossEntropyParity, SoftcapInPlace) {
  PEFTRUN_REQUIRE_GPU();
  run(kSoftcapInPlace);
}
TEST(GpuCrossEntropyParity, SoftcapLossOnly) {
  PEFTRUN_REQUIRE_GPU();
  run(kSoftcapLossOnly);
}
TEST(GpuCrossEntropyParity, TargetOutsideVocabPoisonsOnlyItsRow) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_cross_entropy_bad_target(env);
}

}  // namespace
}  // namespace peftrun::gpu_testing
