// ArenaPlan: the device model's memory plan (runtime/model/arena_plan.h), on the CPU.
#include "runtime/model/arena_plan.h"

#include <gtest/gtest.h>

namespace peftrun {
namespace {

TEST(ArenaPlan, RegionsAreAlignedInOrderAndDisjoint) {
  ArenaPlan p;
  const ArenaSlot a = p.add("weights/a", 1);
  const ArenaSlot b = p.add("activations/b", 10, 4);
  const ArenaSlot c = p.add("activations/c", 257);
  EXPECT_EQ(a.offset, 0u);
  EXPECT_EQ(b.offset, 256u);
  EXPECT_EQ(b.bytes, 40u);
  EXPECT_EQ(c.offset, 512u);
  EXPECT_EQ(p.total_bytes(), 512u + 257u);
  for (const auto& r : p.regions()) EXPECT_EQ(r.slot.offset % ArenaPlan::kAlignment, 0u) << r.name;
}

TEST(ArenaPlan, EmptyRegionsTakeNoSpaceAndAreNotListed) {
  ArenaPlan p;
  p.add("weights/a", 100);
  const ArenaSlot none = p.add("weights/unused", 0);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(p.regions().size(), 1u);
  EXPECT_EQ(p.total_bytes(), 100u);
}

TEST(ArenaPlan, GroupsSumTheirRegions) {
  ArenaPlan p;
  p.add("weights/a", 1000);
  p.add("activations/x", 3 << 20);
  p.add("weights/b", 24);
  p.add("weightsx/c", 5);  // another group, despite the shared prefix
  EXPECT_EQ(p.group_bytes("weights"), 1024u);
  EXPECT_EQ(p.group_bytes("activations"), std::size_t(3) << 20);
  EXPECT_EQ(p.summary(), "weights 1.0 KiB, activations 3.0 MiB, weightsx 5 B");
}

TEST(ArenaPlan, FormatsBytesReadably) {
  EXPECT_EQ(format_bytes(100), "100 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(std::size_t(5) << 30), "5.00 GiB");
}

}  // namespace
}  // namespace peftrun
