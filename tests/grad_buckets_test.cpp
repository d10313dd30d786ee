// Bucket planning for the overlapped gradient all-reduce.
#include <gtest/gtest.h>

#include "runtime/train/grad_buckets.h"

namespace peftrun {
namespace {

AdapterLayout layout_of(int layers, std::vector<std::string> targets, AdapterType type) {
  ModelConfig m;
  m.dim = 24;
  m.n_layers = layers;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn_dim = 40;
  AdapterConfig a;
  a.type = type;
  a.r = 3;
  a.init_r = 3;
  a.target_r = 1;
  a.target_modules = std::move(targets);
  return AdapterLayout::plan(m, a);
}

void expect_tiling(const std::vector<GradBucket>& b, const AdapterLayout& lay, int layers) {
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(b.back().begin, 0u);
  EXPECT_EQ(b.front().end, lay.total());
  EXPECT_EQ(b.front().highest_layer, layers - 1);
  EXPECT_EQ(b.back().lowest_layer, 0);
  for (std::size_t i = 0; i + 1 < b.size(); ++i) {
    EXPECT_EQ(b[i].begin, b[i + 1].end) << "bucket " << i << " does not meet the next";
    EXPECT_EQ(b[i].lowest_layer, b[i + 1].highest_layer + 1);  // ready top-down
  }
}

TEST(GradBuckets, TinyBucketSizeGivesOneBucketPerLayerTopDown) {
  const AdapterLayout lay = layout_of(5, {"q_proj", "down_proj"}, AdapterType::kLora);
  const auto b = plan_grad_buckets(lay, 5, 1);
  ASSERT_EQ(b.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b[i].lowest_layer, 4 - i);
  expect_tiling(b, lay, 5);
}

TEST(GradBuckets, HugeBucketSizeGivesOneBucketOverEverything) {
  const AdapterLayout lay = layout_of(3, all_target_modules(), AdapterType::kDora);
  const auto b = plan_grad_buckets(lay, 3, std::size_t(1) << 40);
  ASSERT_EQ(b.size(), 1u);
  expect_tiling(b, lay, 3);
}

TEST(GradBuckets, BucketsHoldAtLeastTheRequestedBytesExceptTheLast) {
  const AdapterLayout lay = layout_of(7, {"v_proj", "up_proj"}, AdapterType::kAdaLora);
  const std::size_t per_layer = lay.total() / 7 * sizeof(float);
  const auto b = plan_grad_buckets(lay, 7, per_layer * 2);  // about two layers each
  expect_tiling(b, lay, 7);
  for (std::size_t i = 0; i + 1 < b.size(); ++i) {
    EXPECT_GE((b[i].end - b[i].begin) * sizeof(float), per_layer * 2 * 9 / 10) << i;
  }
  EXPECT_GE(b.size(), 3u);
}

}  // namespace
}  // namespace peftrun
