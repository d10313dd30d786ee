// The host-memory reading behind the CPU backend's pre-flight check (runtime/train/host_memory.h)
// and the check itself through the binary: a micro-batch far beyond the machine is refused with
// the numbers, before anything is allocated.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "runtime/train/host_memory.h"
#include "tests/support/run_command.h"
#include "tests/support/scratch_dir.h"

namespace peftrun {
namespace {

TEST(HostMemory, MemAvailableIsReadInKibibytes) {
  const std::string meminfo =
      "MemTotal:       24576000 kB\n"
      "MemFree:         1000000 kB\n"
      "MemAvailable:   20000000 kB\n"
      "Buffers:           12345 kB\n";
  EXPECT_EQ(meminfo_available_bytes(meminfo), std::size_t(20000000) * 1024);
  EXPECT_EQ(meminfo_available_bytes("MemTotal: 5 kB\n"), std::nullopt);
  EXPECT_EQ(meminfo_available_bytes("MemAvailable: lots\n"), std::nullopt);
}

TEST(HostMemory, CgroupLimitsWithoutABoundReadAsNone) {
  EXPECT_EQ(cgroup_limit_bytes("8589934592\n"), std::size_t(8589934592));
  EXPECT_EQ(cgroup_limit_bytes("max\n"), std::nullopt);                  // cgroup v2
  EXPECT_EQ(cgroup_limit_bytes("9223372036854771712\n"), std::nullopt);  // cgroup v1
  EXPECT_EQ(cgroup_limit_bytes(""), std::nullopt);
  EXPECT_EQ(cgroup_limit_bytes("12abc"), std::nullopt);
}

// Ranks on one machine share its memory: a model that fits alone is refused for four of them,
// naming the share; gradient checkpointing's figure is offered only when it is not on yet.
TEST(HostMemory, EachLocalRankGetsItsShareOfTheMachine) {
  const std::size_t GiB = std::size_t(1) << 30;
  EXPECT_EQ(host_memory_refusal(6 * GiB, 2 * GiB, 20 * GiB, 1, 8, 1024), "");
  const std::string four = host_memory_refusal(6 * GiB, 2 * GiB, 20 * GiB, 4, 8, 1024);
  EXPECT_EQ(four,
            "runtime.device: cpu: the model's buffers for train.micro_batch_size 8 x data.seq_len "
            "1024 need 6.00 GiB, but only 5.00 GiB of host memory is available to each of the 4 "
            "ranks on this machine (20.00 GiB in all); expected runtime.gradient_checkpointing: "
            "true (needs 2.00 GiB), or a smaller micro-batch or sequence length, or fewer ranks "
            "per machine");
  const std::string alone = host_memory_refusal(30 * GiB, std::nullopt, 20 * GiB, 1, 8, 1024);
  EXPECT_EQ(alone.find("gradient_checkpointing"), std::string::npos) << alone;
  EXPECT_NE(alone.find("need 30.00 GiB, but only 20.00 GiB of host memory is available; expected a "
                       "smaller micro-batch"),
            std::string::npos)
      << alone;
  EXPECT_NE(host_memory_refusal(30 * GiB, 25 * GiB, 20 * GiB, 0, 8, 1024).find("still too much"),
            std::string::npos);
}

TEST(HostMemory, ThisLinuxMachineReportsSomeMemory) {
  const std::optional<std::size_t> available = host_memory_available();
  ASSERT_TRUE(available.has_value());
  EXPECT_GT(*available, std::size_t(64) << 20);
}

// A million sequences per micro-batch needs terabytes: refused naming the keys and the sizes,
// with gradient checkpointing's figure, and nothing written.
TEST(HostMemory, AModelBeyondTheMachineIsRefusedBeforeAllocating) {
  const std::filesystem::path out = testing_support::test_output_dir("host_memory_refusal", false);
  const testing_support::CommandResult r = testing_support::run_command(
      std::string(PEFTRUN_BINARY) + " " + PEFTRUN_SOURCE_DIR +
      "/configs/tiny.yaml --set train.micro_batch_size=1000000 --set output_dir=" + out.string());
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("train.micro_batch_size 1000000 x data.seq_len 128 need "),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("of host memory is available"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("runtime.gradient_checkpointing: true (needs "), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(out / "adapter_model.safetensors"));
}

}  // namespace
}  // namespace peftrun
