// Data parallelism on cuda under a real `mpirun --oversubscribe -np N`: N ranks x k micro-batches
// must give the adapter of 1 rank x N*k micro-batches (to fp32 rounding: only the order of the
// all-reduce's additions differs), with the base replicated and sharded (each rank holds 1/N of
// every layer and all-gathers it into device memory before use, prefetching the next layer).
//
// Runs where several ranks can each have a device: with NCCL and at least N GPUs, and on the
// emulated device (PEFTRUN_CUDA=EMULATE), where device memory is host memory and MPI reduces
// it; there this checks the CUDA trainer's distributed orchestration (bucketed gradient
// all-reduce of the device gradient buffer, the gather slots, agreed losses), not NCCL itself.
// Skipped elsewhere, and without mpirun.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "kernels/device.h"
#include "tests/gpu/gpu_test_support.h"
#include "tests/support/e2e.h"

namespace peftrun::gpu_testing {
namespace {

namespace fs = std::filesystem;
using namespace peftrun::testing_support;

// Empty when `ranks` cuda ranks can run here; otherwise why not.
std::string multi_rank_unavailable(int ranks) {
  const std::string no_gpu = gpu_unavailable_reason();
  if (!no_gpu.empty()) return no_gpu;
  if (!mpirun_available()) return "built without MPI or no mpirun on PATH";
#if !PEFTRUN_CUDA_EMULATION
  if (!comm_built_with_nccl()) return "built without NCCL";
  if (query_devices().cuda_devices < ranks) {
    return "needs " + std::to_string(ranks) + " GPUs, found " +
           std::to_string(query_devices().cuda_devices);
  }
#endif
  return "";
}

struct Case {
  std::string type;
  int ranks;
  bool shard_base;
};

class GpuDataParallel : public ::testing::TestWithParam<Case> {};

TEST_P(GpuDataParallel, NRanksEqualOneRankWithNTimesAccumulation) {
  const Case c = GetParam();
  const std::string why = multi_rank_unavailable(c.ranks);
  if (!why.empty()) GTEST_SKIP() << "multi-rank cuda test skipped: " << why;
  const fs::path d =
      fresh_dir("gpu_dp_" + c.type + std::to_string(c.ranks) + (c.shard_base ? "_sharded" : ""));
  const std::string kTiny = std::string(PEFTRUN_SOURCE_DIR) + "/configs/tiny.yaml";
  const std::string common =
      kTiny + " --set adapter.type=" + c.type +
      " --set runtime.device=cuda --set runtime.compute_dtype=fp32 --set runtime.threads=1"
      " --set train.steps=4 --set optim.warmup_steps=1 --set train.micro_batch_size=2"
      " --set data.seq_len=32 --set data.eval_batches=2 --set train.eval_every=0"
      " --set adapter.dropout=0.1 --set adapter.init_r=6 --set adapter.target_r=3"
      " --set adapter.tinit=1 --set adapter.tfinal=1 ";
  CommandResult one = run_peftrun(common + "--set train.grad_accum=" + std::to_string(2 * c.ranks) +
                                  " --set output_dir=" + (d / "one").string());
  ASSERT_EQ(one.exit_code, 0) << one.out;
  CommandResult many = run_peftrun(
      common + "--set train.grad_accum=2 --set comm.bucket_mb=0.05 --set runtime.shard_base=" +
          (c.shard_base ? "true" : "false") + " --set output_dir=" + (d / "many").string(),
      c.ranks);
  ASSERT_EQ(many.exit_code, 0) << many.out;
  EXPECT_NE(many.out.find("data parallel over " + std::to_string(c.ranks) + " ranks"),
            std::string::npos)
      << many.out;
  EXPECT_NE(many.out.find("device cuda:"), std::string::npos) << many.out;

  const std::vector<float> a = adapter_values(d / "one"), b = adapter_values(d / "many");
  ASSERT_EQ(a.size(), b.size()) << "different tensors (AdaLoRA rank patterns differ?)";
  // The per-step losses agree to ~1e-8; AdamW's first steps (update ~ lr g / |g|) lift the
  // summation-order noise of small gradient elements to ~2e-6 of the adapter in fp32. A lost
  // or doubled gradient bucket, or a stale gathered layer, is off by orders of magnitude more.
  EXPECT_LT(relative_difference(a, b), 1e-5);
  if (c.type == "adalora") {
    EXPECT_EQ(rank_pattern(d / "one"), rank_pattern(d / "many"));
  }
}

INSTANTIATE_TEST_SUITE_P(Mpirun, GpuDataParallel,
                         ::testing::Values(Case{"lora", 2, false}, Case{"dora", 2, true},
                                           Case{"adalora", 2, false}, Case{"lora", 4, true}),
                         [](const auto& p) {
                           return p.param.type + "_np" + std::to_string(p.param.ranks) +
                                  (p.param.shard_base ? "_sharded" : "");
                         });

}  // namespace
}  // namespace peftrun::gpu_testing
