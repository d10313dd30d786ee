// Shard arithmetic of the frozen base: every rank's slice concatenated in rank order is the
// full layer buffer followed only by zero padding, for world sizes that do and do not divide it.
#include <gtest/gtest.h>

#include <stdexcept>

#include "runtime/model/base_weights.h"

namespace peftrun {
namespace {

ModelConfig odd_model() {
  ModelConfig m;
  m.dim = 12;  // layer buffer sizes that no small world size divides evenly
  m.n_layers = 2;
  m.n_heads = 2;
  m.n_kv_heads = 1;
  m.ffn_dim = 18;
  m.vocab_size = 10;
  return m;
}

TEST(BaseShard, SlicesConcatenateToTheLayerPlusZeroPadding) {
  const BaseWeights full = BaseWeights::random(odd_model(), 3);
  const std::size_t total = full.offsets().total;
  for (int world : {2, 3, 4, 7, 8}) {
    std::vector<half_bits> joined;
    std::size_t shard = 0;
    for (int rank = 0; rank < world; ++rank) {
      BaseWeights w = BaseWeights::random(odd_model(), 3);
      w.shard(rank, world);
      ASSERT_TRUE(w.sharded());
      shard = w.shard_elems();
      EXPECT_EQ(shard, (total + world - 1) / world) << "world " << world;
      for (int l = 0; l < 2; ++l) {
        if (l == 1) joined.insert(joined.end(), w.layer_shard(l), w.layer_shard(l) + shard);
      }
      EXPECT_LT(w.bytes(), full.bytes());
      EXPECT_EQ(w.unsharded_bytes(), full.bytes());  // what the whole base takes, on any rank
    }
    ASSERT_EQ(joined.size(), shard * world);
    for (std::size_t i = 0; i < total; ++i) ASSERT_EQ(joined[i], full.layer(1)[i]) << i;
    for (std::size_t i = total; i < joined.size(); ++i) ASSERT_EQ(joined[i], 0) << i;
  }
}

// The size from the shape alone (peftrun check) is what a loaded base holds, tied or not.
TEST(BaseShard, BytesForTheShapeAreTheLoadedBasesBytes) {
  for (bool tied : {false, true}) {
    ModelConfig m = odd_model();
    m.tie_embeddings = tied;
    const BaseWeights w = BaseWeights::random(m, 3);
    EXPECT_EQ(BaseWeights::bytes_for(m, w.offsets()), w.bytes()) << "tied " << tied;
  }
}

TEST(BaseShard, WorldOfOneKeepsTheFullReplicaAndShardedLayerAccessIsRefused) {
  BaseWeights w = BaseWeights::random(odd_model(), 3);
  w.shard(0, 1);
  EXPECT_FALSE(w.sharded());
  EXPECT_NO_THROW(w.layer(0));
  w.shard(1, 3);
  EXPECT_THROW(w.layer(0), std::logic_error);
}

}  // namespace
}  // namespace peftrun
