// JSONL data under `mpirun --oversubscribe -np 2`: with masked (untrained) targets the loss is
// normalised by the trained-target count of the whole global batch, so 2 ranks x 1 micro-batch
// must give the adapter of 1 rank x 2 micro-batches; both ranks tokenize, only rank 0 writes the
// cache.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/io/safetensors.h"
#include "tests/support/run_command.h"
#include "tests/support/scratch_dir.h"

namespace fs = std::filesystem;

namespace {

std::vector<float> adapter_values(const fs::path& dir) {
  peftrun::SafetensorsReader reader((dir / "adapter_model.safetensors").string());
  std::vector<float> all;
  for (const auto& t : reader.tensors()) {
    const std::vector<float> v = reader.read_tensor_f32(t.name);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

TEST(DataParallelJsonl, TwoRanksEqualOneRankWithTwoMicroBatches) {
#ifndef PEFTRUN_WITH_MPI
  GTEST_SKIP() << "built without MPI";
#endif
  if (std::system("command -v mpirun > /dev/null 2>&1") != 0) GTEST_SKIP() << "no mpirun";
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  const peftrun::testing_support::ScratchDir d("dist_jsonl");
  const std::string src = PEFTRUN_SOURCE_DIR;
  fs::copy_file(src + "/data/example/train.jsonl", d.file("train.jsonl"));
  const std::string common =
      " " + src + "/configs/jsonl_example.yaml --set data.train=" + d.file("train.jsonl") +
      " --set data.eval= --set train.steps=6 --set optim.warmup_steps=1 "
      "--set train.micro_batch_size=2 --set runtime.threads=1 "
      "--set adapter.dropout=0.1 ";
  const std::string bin = PEFTRUN_BINARY;
  const auto one = peftrun::testing_support::run_command(
      bin + common + "--set train.grad_accum=2 --set output_dir=" + d.file("one"));
  ASSERT_EQ(one.exit_code, 0) << one.out;
  fs::remove_all(d.file("train.jsonl.peftrun-cache"));  // both ranks tokenize from scratch
  const auto many = peftrun::testing_support::run_command(
      "mpirun --oversubscribe -np 2 " + bin + common +
      "--set train.grad_accum=1 --set output_dir=" + d.file("many"));
  ASSERT_EQ(many.exit_code, 0) << many.out;
  EXPECT_TRUE(fs::is_directory(d.file("train.jsonl.peftrun-cache")));

  const std::vector<float> a = adapter_values(d.file("one")), b = adapter_values(d.file("many"));
  ASSERT_EQ(a.size(), b.size());
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(a[i]) * a[i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-6);
}

}  // namespace
