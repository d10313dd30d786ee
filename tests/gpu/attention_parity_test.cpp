// Flash attention on the GPU against the CPU twin: the cases of tests/gpu/attention_cases.h in
// fp32, fp16 and bf16, plus longer sequences than the CPU emulator runs. Skipped without a GPU.
#include <gtest/gtest.h>

#include "tests/gpu/attention_cases.h"
#include "tests/gpu/gpu_env.h"

namespace peftrun::gpu_testing {
namespace {

using namespace attention_cases;

void run(const AttentionCase& c) {
  GpuEnv env;
  check_attention_all_dtypes(env, c);
}

TEST(GpuAttentionParity, TinyConfigHd32) {
  PEFTRUN_REQUIRE_GPU();
  run(kTinyConfig);
}
TEST(GpuAttentionParity, MhaHd64Tail) {
  PEFTRUN_REQUIRE_GPU();
  run(kMhaHd64);
}
TEST(GpuAttentionParity, Gqa2Hd128) {
  PEFTRUN_REQUIRE_GPU();
  run(kGqa2Hd128);
}
TEST(GpuAttentionParity, Gqa4Hd128) {
  PEFTRUN_REQUIRE_GPU();
  run(kGqa4Hd128);
}
TEST(GpuAttentionParity, Gqa8Kv1Hd64) {
  PEFTRUN_REQUIRE_GPU();
  run(kMqa8Hd64);
}
TEST(GpuAttentionParity, Gqa2Hd256) {
  PEFTRUN_REQUIRE_GPU();
  run(kHd256);
}
TEST(GpuAttentionParity, Hd8) {
  PEFTRUN_REQUIRE_GPU();
  run(kHd8);
}
TEST(GpuAttentionParity, Hd40OddColumns) {
  PEFTRUN_REQUIRE_GPU();
  run(kHd40);
}
TEST(GpuAttentionParity, SingleToken) {
  PEFTRUN_REQUIRE_GPU();
  run(kSingleToken);
}
TEST(GpuAttentionParity, ExactTiles) {
  PEFTRUN_REQUIRE_GPU();
  run(kExactTiles);
}
TEST(GpuAttentionParity, Window5) {
  PEFTRUN_REQUIRE_GPU();
  run(kWindow5);
}
TEST(GpuAttentionParity, Window45Hd64) {
  PEFTRUN_REQUIRE_GPU();
  run(kWindow45Hd64);
}
TEST(GpuAttentionParity, Window33Hd40) {
  PEFTRUN_REQUIRE_GPU();
  run(kWindow33Hd40);
}
TEST(GpuAttentionParity, Window17Packed) {
  PEFTRUN_REQUIRE_GPU();
  run(kWindowPacked);
}
TEST(GpuAttentionParity, WindowLongerThanT) {
  PEFTRUN_REQUIRE_GPU();
  run(kWindowLonger);
}
TEST(GpuAttentionParity, ScoreScaleWindow9Hd64) {
  PEFTRUN_REQUIRE_GPU();
  run(kScoreScale);
}
TEST(GpuAttentionParity, SoftcapWindow21Hd64) {
  PEFTRUN_REQUIRE_GPU();
  run(kSoftcap);
}
TEST(GpuAttentionParity, SoftcapPackedHd40) {
  PEFTRUN_REQUIRE_GPU();
  run(kSoftcapPacked);
}
TEST(GpuAttentionParity, PackedThreeDocs) {
  PEFTRUN_REQUIRE_GPU();
  run(kPacked);
}
TEST(GpuAttentionParity, PackedManyShortDocs) {
  PEFTRUN_REQUIRE_GPU();
  run(kPackedManyShort);
}
TEST(GpuAttentionParity, LargeScores) {
  PEFTRUN_REQUIRE_GPU();
  run(kPeaky);
}
// Longer than the emulated suite affords: many tiles per row, GQA, a packed batch.
TEST(GpuAttentionParity, LongSequenceGqa4Hd128) {
  PEFTRUN_REQUIRE_GPU();
  run({"LongT513Gqa4Hd128", 2, 513, 8, 2, 128});
}
TEST(GpuAttentionParity, LongPackedHd64) {
  PEFTRUN_REQUIRE_GPU();
  run({"LongPackedT1000Hd64", 1, 1000, 4, 1, 64, 6});
}
TEST(GpuAttentionParity, RefusesBadShapesAndWorkspace) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  check_attention_refusals(env);
}

}  // namespace
}  // namespace peftrun::gpu_testing
