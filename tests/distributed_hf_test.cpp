// Sharded loading of a real HF checkpoint under `mpirun -np 2`: with runtime.shard_base each rank
// reads only its slices of the golden fp16 LLaMA (tests/golden/data/base) and DoRA initialises
// its magnitude from all-gathered layers; the adapter must be byte-identical to the run where
// every rank loads the whole checkpoint.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "runtime/data/token_file.h"
#include "runtime/io/safetensors.h"
#include "tests/support/scratch_dir.h"

namespace fs = std::filesystem;

namespace {

bool have_mpi() {
#ifdef PEFTRUN_WITH_MPI
  return std::system("command -v mpirun > /dev/null 2>&1") == 0;
#else
  return false;
#endif
}

// Open MPI refuses to start as root (CI runs as root) unless told twice; only for this test.
void allow_mpirun_as_root() {
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
}

// Exit code and combined output of a shell command.
std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, out};
  std::array<char, 4096> buf;
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Every tensor's raw bytes, in name order: "identical" means bit for bit.
std::vector<std::uint8_t> adapter_bytes(const fs::path& dir) {
  const peftrun::SafetensorsReader reader((dir / "adapter_model.safetensors").string());
  std::vector<std::uint8_t> all;
  for (const auto& t : reader.tensors()) {
    const std::vector<std::uint8_t> b = reader.read_tensor(t.name);
    all.insert(all.end(), b.begin(), b.end());
  }
  return all;
}

TEST(DistributedHf, ShardedCheckpointLoadGivesTheReplicatedDoraAdapter) {
  if (!have_mpi()) GTEST_SKIP() << "built without MPI or no mpirun on PATH";
  allow_mpirun_as_root();
  const fs::path d = peftrun::testing_support::test_output_dir("dist_hf");

  // The golden base has vocab 128; any deterministic ids below that will do.
  std::vector<std::int32_t> tokens(2048);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = std::int32_t((i * 37 + i / 7) % 128);
  peftrun::write_token_file((d / "train.tok").string(), tokens, 128);

  // No shape keys: they come from the checkpoint's config.json.
  std::ofstream(d / "train.yaml")
      << "model:\n  path: " << PEFTRUN_SOURCE_DIR << "/tests/golden/data/base\n"
      << "adapter:\n  type: dora\n  r: 4\n  alpha: 8\n"
      << "  target_modules: [q_proj, v_proj, o_proj, down_proj]\n"
      << "data:\n  train: train.tok\n  seq_len: 16\n"
      << "train:\n  steps: 3\n  micro_batch_size: 2\n  eval_every: 0\n  log_every: 1\n"
      << "optim:\n  warmup_steps: 1\n"
      << "runtime:\n  threads: 1\n";
  const std::string cmd = "mpirun --oversubscribe -np 2 " + std::string(PEFTRUN_BINARY) + " " +
                          (d / "train.yaml").string() + " --set output_dir=";
  const auto [sharded_rc, sharded_out] = run(cmd + (d / "sharded").string());
  ASSERT_EQ(sharded_rc, 0) << sharded_out;
  EXPECT_NE(sharded_out.find("sharded 1/2"), std::string::npos) << sharded_out;
  const auto [replicated_rc, replicated_out] =
      run(cmd + (d / "replicated").string() + " --set runtime.shard_base=false");
  ASSERT_EQ(replicated_rc, 0) << replicated_out;
  EXPECT_EQ(replicated_out.find("sharded 1/2"), std::string::npos) << replicated_out;

  const std::vector<std::uint8_t> a = adapter_bytes(d / "sharded");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, adapter_bytes(d / "replicated"));

  // `peftrun eval` shards the base the same way: 2 ranks (each holding half of every layer)
  // give the loss of 1 process, for the trained adapter and for a fresh DoRA one (whose
  // magnitudes come from all-gathered layers).
  for (const std::string& adapter : {" --adapter " + (d / "sharded").string(), std::string()}) {
    const std::string eval = std::string(PEFTRUN_BINARY) + " eval " + (d / "train.yaml").string() +
                             " --set data.eval=" + (d / "train.tok").string() + adapter;
    const auto [one_rc, one_out] = run(eval);
    ASSERT_EQ(one_rc, 0) << one_out;
    const auto [two_rc, two_out] = run("mpirun --oversubscribe -np 2 " + eval);
    ASSERT_EQ(two_rc, 0) << two_out;
    EXPECT_NE(two_out.find("sharded 1/2"), std::string::npos) << two_out;
    auto loss = [](const std::string& out) {
      const std::size_t at = out.find("): loss ");
      return at == std::string::npos ? std::string("?") : out.substr(at, out.find(',', at) - at);
    };
    EXPECT_NE(loss(one_out), "?") << one_out;
    EXPECT_EQ(loss(one_out), loss(two_out)) << one_out << "\n---\n" << two_out;
  }
}

}  // namespace
