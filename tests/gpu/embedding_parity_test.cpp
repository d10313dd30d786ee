// The embedding lookup on the GPU against the CPU twin: the cases of
// tests/gpu/embedding_cases.h into fp32, fp16 and bf16 activations. Skipped without a GPU.
#include <gtest/gtest.h>

#include "tests/gpu/embedding_cases.h"
#include "tests/gpu/gpu_env.h"

namespace peftrun::gpu_testing {
namespace {

using namespace embedding_cases;

void run(const EmbeddingCase& c) {
  GpuEnv env;
  for (const float scale : kEmbeddingScales) {
    for (const DType dt : kAllDTypes) check_embedding(env, c, dt, scale);
  }
}

TEST(GpuEmbeddingParity, OneToken) {
  PEFTRUN_REQUIRE_GPU();
  run(kOneToken);
}
TEST(GpuEmbeddingParity, TinyConfig) {
  PEFTRUN_REQUIRE_GPU();
  run(kTinyConfig);
}
TEST(GpuEmbeddingParity, OddDim) {
  PEFTRUN_REQUIRE_GPU();
  run(kOddDim);
}
TEST(GpuEmbeddingParity, IdOutsideVocabGivesNanRow) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_embedding_bad_token(env);
}

}  // namespace
}  // namespace peftrun::gpu_testing
