// The device model's and the CUDA trainer's memory plans (runtime/model/cuda_model_plan.h,
// runtime/train/cuda_state_plan.h), on the CPU: every buffer the GPU run will use is sized,
// aligned and disjoint before any device memory exists.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#if PEFTRUN_WITH_CUDA
#include "kernels/adalora.h"
#include "kernels/attention.h"
#include "runtime/model/cuda_model_plan.h"
#include "runtime/train/cuda_state_plan.h"
#include "runtime/train/grad_buckets.h"
#endif

namespace peftrun {
namespace {

#if !PEFTRUN_WITH_CUDA
TEST(CudaModelPlan, NeedsTheCudaBuild) {
  GTEST_SKIP() << "built without the CUDA backend: the plans use the ops' workspace functions";
}
#else

struct Case {
  AdapterType type = AdapterType::kLora;
  double dropout = 0;
  DType act = DType::kBF16;
  int world = 1;
  bool tied = false;
  bool recompute = false;  // gradient checkpointing
};

struct Planned {
  ModelConfig m;
  AdapterLayout layout;
  CudaModelSpec spec;
  CudaModelPlan plan;
};

Planned plan_for(const Case& c) {
  Planned p;
  p.m.tie_embeddings = c.tied;
  AdapterConfig a;
  a.type = c.type;
  a.dropout = c.dropout;
  a.target_modules = all_target_modules();
  p.layout = AdapterLayout::plan(p.m, a);
  p.spec.shape = p.m;
  p.spec.offsets = LayerOffsets::for_model(p.m);
  p.spec.world = c.world;
  p.spec.shard_elems = BaseWeights::shard_elems_for(p.spec.offsets.total, c.world);
  p.spec.layout = &p.layout;
  p.spec.dropout = c.dropout > 0;
  p.spec.max_batch = 8;
  p.spec.seq_len = 128;
  p.spec.act = c.act;
  p.spec.blas_workspace_bytes = 32 << 20;
  p.spec.recompute_layers = c.recompute;
  p.plan = plan_cuda_model(p.spec);
  return p;
}

void expect_aligned_and_disjoint(const ArenaPlan& a) {
  std::vector<ArenaPlan::Region> r = a.regions();
  std::sort(r.begin(), r.end(),
            [](const auto& x, const auto& y) { return x.slot.offset < y.slot.offset; });
  for (std::size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(r[i].slot.offset % ArenaPlan::kAlignment, 0u) << r[i].name;
    EXPECT_GT(r[i].slot.bytes, 0u) << r[i].name;
    EXPECT_LE(r[i].slot.offset + r[i].slot.bytes, a.total_bytes()) << r[i].name;
    if (i > 0) {
      EXPECT_LE(r[i - 1].slot.offset + r[i - 1].slot.bytes, r[i].slot.offset)
          << r[i - 1].name << " overlaps " << r[i].name;
    }
  }
}

TEST(CudaModelPlan, EveryRegionIsAlignedAndDisjointForEveryAdapterAndDtype) {
  for (AdapterType t : {AdapterType::kLora, AdapterType::kDora, AdapterType::kAdaLora}) {
    for (DType act : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (double dropout : {0.0, 0.1}) {
        for (bool recompute : {false, true}) {
          SCOPED_TRACE(std::string(to_string(t)) + " " + dtype_name(act) +
                       (dropout > 0 ? " dropout" : "") + (recompute ? " recompute" : ""));
          expect_aligned_and_disjoint(plan_for({t, dropout, act, 1, false, recompute}).plan.arena);
        }
      }
    }
  }
}

TEST(CudaModelPlan, ActivationsHaveTheirShapesInTheComputeDtype) {
  const Planned p = plan_for({AdapterType::kLora, 0, DType::kBF16});
  const std::size_t n = 8 * 128, D = p.m.dim, F = p.m.ffn_dim, es = 2;
  ASSERT_EQ(p.plan.layers.size(), std::size_t(p.m.n_layers));
  const CudaLayerSlots& L = p.plan.layers[1];
  EXPECT_EQ(L.weights.bytes, p.spec.offsets.total * 2);
  EXPECT_EQ(L.x_in.bytes, n * D * es);
  EXPECT_EQ(L.gate.bytes, n * F * es);
  EXPECT_EQ(L.rstd1.bytes, n * 4);
  EXPECT_EQ(L.lse.bytes, std::size_t(8) * p.m.n_heads * 128 * 4);
  EXPECT_EQ(L.module[int(Proj::kQ)].xa.bytes, n * 8 * es);
  EXPECT_TRUE(L.module[int(Proj::kQ)].keep.empty());  // no dropout
  EXPECT_TRUE(L.module[int(Proj::kQ)].norm.empty());  // not DoRA
  EXPECT_EQ(p.plan.dtmp.bytes, n * std::max<std::size_t>(D, F) * es);
  EXPECT_EQ(p.plan.attention_work.bytes,
            cuda::attention_backward_workspace_bytes(8, 128, p.m.n_heads));
  // bf16 compute stages each layer and the lm_head out of the fp16 base.
  EXPECT_EQ(p.plan.staged_layer.bytes, p.spec.offsets.total * es);
  EXPECT_EQ(p.plan.lm_head_act.bytes, std::size_t(p.m.vocab_size) * D * es);
  EXPECT_GT(p.plan.adapter_work.bytes, 0u);
  EXPECT_EQ(p.plan.blas_work.bytes, std::size_t(32) << 20);
}

TEST(CudaModelPlan, Fp16ComputeReadsTheBaseWithoutStaging) {
  const Planned p = plan_for({AdapterType::kLora, 0, DType::kF16});
  EXPECT_TRUE(p.plan.staged_layer.empty());
  EXPECT_TRUE(p.plan.lm_head_act.empty());
}

TEST(CudaModelPlan, LogitsNeverExceedTheChunkBudget) {
  Planned p = plan_for({});
  EXPECT_EQ(p.plan.chunk_rows, 8 * 128);  // vocab 256: everything fits in one chunk
  p.m.vocab_size = 128256;
  p.spec.shape = p.m;
  const CudaModelPlan big = plan_cuda_model(p.spec);
  EXPECT_EQ(big.chunk_rows, int(kCudaLogitBudget / 128256));
  EXPECT_LE(std::size_t(big.chunk_rows) * 128256, kCudaLogitBudget);
  EXPECT_EQ(big.logits.bytes, std::size_t(big.chunk_rows) * 128256 * 2);
}

TEST(CudaModelPlan, DropoutAndDoraSaveWhatBackwardNeeds) {
  const Planned p = plan_for({AdapterType::kDora, 0.1, DType::kBF16});
  const std::size_t n = 8 * 128;
  const ProjShape s = proj_shape(p.m, Proj::kDown);
  const CudaModuleSlots& M = p.plan.layers[0].module[int(Proj::kDown)];
  EXPECT_EQ(M.keep.bytes, n * s.in);
  EXPECT_EQ(M.x_drop.bytes, n * s.in * 2);
  EXPECT_EQ(M.norm.bytes, std::size_t(s.out) * 4);
  EXPECT_EQ(M.w_sq.bytes, std::size_t(s.out) * 4);
  EXPECT_EQ(M.v.bytes, n * s.out * 2);
  EXPECT_GT(p.plan.norm_work.bytes, 0u);
}

TEST(CudaModelPlan, ShardedKeepsSlicesAndTwoGatherSlots) {
  const Planned p = plan_for({AdapterType::kLora, 0, DType::kBF16, 4});
  for (const CudaLayerSlots& L : p.plan.layers) EXPECT_EQ(L.weights.bytes, p.spec.shard_elems * 2);
  for (const ArenaSlot& s : p.plan.gather_slot) EXPECT_EQ(s.bytes, 4 * p.spec.shard_elems * 2);
  const Planned r = plan_for({});
  EXPECT_TRUE(r.plan.gather_slot[0].empty());
  EXPECT_TRUE(r.plan.gather_slot[1].empty());
}

TEST(CudaModelPlan, TiedEmbeddingsShareTheTable) {
  EXPECT_TRUE(plan_for({AdapterType::kLora, 0, DType::kBF16, 1, true}).plan.lm_head.empty());
  EXPECT_FALSE(plan_for({}).plan.lm_head.empty());
}

TEST(CudaModelPlan, TheSameConfigGivesTheSamePlan) {
  const Planned a = plan_for({AdapterType::kAdaLora, 0.1, DType::kF16});
  const Planned b = plan_for({AdapterType::kAdaLora, 0.1, DType::kF16});
  ASSERT_EQ(a.plan.arena.regions().size(), b.plan.arena.regions().size());
  for (std::size_t i = 0; i < a.plan.arena.regions().size(); ++i) {
    const auto& x = a.plan.arena.regions()[i];
    const auto& y = b.plan.arena.regions()[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.slot.offset, y.slot.offset) << x.name;
    EXPECT_EQ(x.slot.bytes, y.slot.bytes) << x.name;
  }
  EXPECT_EQ(a.plan.arena.total_bytes(), b.plan.arena.total_bytes());
}

// Gradient checkpointing: each layer keeps its own input (and DoRA's constant ||W||^2 rows),
// every other activation slot is one set that all layers name.
TEST(CudaModelPlan, GradientCheckpointingSharesOneLayerOfActivations) {
  const Planned kept = plan_for({AdapterType::kDora, 0.1, DType::kBF16});
  const Planned shared = plan_for({AdapterType::kDora, 0.1, DType::kBF16, 1, false, true});
  EXPECT_FALSE(kept.plan.recompute_layers);
  EXPECT_TRUE(shared.plan.recompute_layers);
  const CudaLayerSlots& L0 = shared.plan.layers[0];
  const CudaLayerSlots& L1 = shared.plan.layers[1];
  const CudaLayerSlots& K1 = kept.plan.layers[1];
  EXPECT_NE(L0.x_in.offset, L1.x_in.offset);
  EXPECT_NE(L0.weights.offset, L1.weights.offset);
  for (const auto member : {&CudaLayerSlots::h1, &CudaLayerSlots::q, &CudaLayerSlots::att,
                            &CudaLayerSlots::lse, &CudaLayerSlots::gate, &CudaLayerSlots::act}) {
    EXPECT_EQ((L0.*member).offset, (L1.*member).offset);
    EXPECT_EQ((L1.*member).bytes, (K1.*member).bytes);
  }
  const CudaModuleSlots& M0 = L0.module[int(Proj::kDown)];
  const CudaModuleSlots& M1 = L1.module[int(Proj::kDown)];
  EXPECT_EQ(M0.xa.offset, M1.xa.offset);
  EXPECT_EQ(M0.keep.offset, M1.keep.offset);
  EXPECT_EQ(M1.v.bytes, K1.module[int(Proj::kDown)].v.bytes);
  EXPECT_NE(M0.w_sq.offset, M1.w_sq.offset);  // a constant of each layer's weights
  // Two layers' activations become two layer inputs plus one set.
  const std::size_t x_in = L0.x_in.bytes;
  const std::size_t per_layer =
      (kept.plan.arena.group_bytes("activations") - shared.plan.arena.group_bytes("activations")) /
      (kept.m.n_layers - 1);
  EXPECT_GT(per_layer, 4 * x_in);
}

TEST(CudaModelPlan, RefusesAnEmptyBatch) {
  Planned p = plan_for({});
  p.spec.max_batch = 0;
  EXPECT_THROW(plan_cuda_model(p.spec), std::invalid_argument);
}

TEST(CudaStatePlan, FlatBuffersAndAdaLoraState) {
  const Planned lora = plan_for({});
  const CudaStatePlan s = plan_cuda_train_state(lora.layout);
  expect_aligned_and_disjoint(s.arena);
  const std::size_t P = lora.layout.total() * 4;
  for (const ArenaSlot* slot : {&s.params, &s.grads, &s.adam_m, &s.adam_v}) {
    EXPECT_EQ(slot->bytes, P);
  }
  EXPECT_TRUE(s.ipt_ema.empty());
  EXPECT_TRUE(s.e_offsets.empty());
  EXPECT_TRUE(s.orth_matrices.empty());
  EXPECT_TRUE(s.orth_norms.empty());

  const Planned ada = plan_for({AdapterType::kAdaLora});
  const CudaStatePlan a = plan_cuda_train_state(ada.layout);
  expect_aligned_and_disjoint(a.arena);
  const std::size_t modules = ada.layout.modules().size();
  EXPECT_EQ(a.ipt_ema.bytes, ada.layout.total() * 4);
  EXPECT_EQ(a.scores.bytes, modules * 12 * 4);  // init_r = 12
  EXPECT_EQ(a.mask.bytes, modules * 12 * 4);
  EXPECT_EQ(a.e_offsets.bytes, modules * 8);
  // The orthogonality regulariser's descriptor table and norms: one A and one B per module.
  EXPECT_EQ(a.orth_matrices.bytes, 2 * modules * sizeof(AdaLoraOrthMatrix));
  EXPECT_EQ(a.orth_norms.bytes, 2 * modules * sizeof(double));
}

// The gradient buckets NCCL all-reduces are ranges of the device grads buffer: they tile it
// exactly, each starts on a 64-byte tensor boundary, and none reaches past the region.
TEST(CudaStatePlan, GradBucketsTileTheDeviceGradientBuffer) {
  const Planned p = plan_for({AdapterType::kDora});
  const CudaStatePlan s = plan_cuda_train_state(p.layout);
  for (std::size_t bucket_bytes : {std::size_t(1), std::size_t(40000), std::size_t(1) << 30}) {
    const std::vector<GradBucket> buckets = plan_grad_buckets(p.layout, p.m.n_layers, bucket_bytes);
    ASSERT_FALSE(buckets.empty());
    std::vector<std::pair<std::size_t, std::size_t> > ranges;
    for (const GradBucket& g : buckets) ranges.emplace_back(g.begin, g.end);
    std::sort(ranges.begin(), ranges.end());
    std::size_t covered = 0;
    for (const auto& [begin, end] : ranges) {
      EXPECT_EQ(begin, covered);
      EXPECT_EQ((s.grads.offset + begin * 4) % 64, 0u);
      covered = end;
    }
    EXPECT_EQ(covered * 4, s.grads.bytes);
  }
}

#endif  // PEFTRUN_WITH_CUDA

}  // namespace
}  // namespace peftrun
