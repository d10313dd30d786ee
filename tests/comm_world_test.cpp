// Rank discovery from launcher environments (faked), and the communicator it leads to.
#include <gtest/gtest.h>

#include <map>
#include <stdexcept>
#include <string>

#include "comm/mpi_runtime.h"
#include "launch/world.h"

namespace peftrun {
namespace {

using Env = std::map<std::string, std::string>;

WorldInfo discover(const Env& env) {
  return discover_world([&env](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(CommWorld, NoLauncherIsOneProcessWithoutMpi) {
  const WorldInfo w = discover({});
  EXPECT_EQ(w.rank, 0);
  EXPECT_EQ(w.world_size, 1);
  EXPECT_EQ(w.local_rank, 0);
  EXPECT_FALSE(w.launched_by_mpi);
}

TEST(CommWorld, OpenMpi) {
  const WorldInfo w = discover({{"OMPI_COMM_WORLD_SIZE", "8"},
                                {"OMPI_COMM_WORLD_RANK", "5"},
                                {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                                {"PMIX_RANK", "5"}});
  EXPECT_EQ(w.rank, 5);
  EXPECT_EQ(w.world_size, 8);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_size, 4);
  EXPECT_TRUE(w.launched_by_mpi);
  EXPECT_EQ(w.source, "OMPI_COMM_WORLD_*");
}

TEST(CommWorld, MpichHydra) {
  const WorldInfo w = discover(
      {{"PMI_SIZE", "4"}, {"PMI_RANK", "3"}, {"MPI_LOCALRANKID", "1"}, {"MPI_LOCALNRANKS", "2"}});
  EXPECT_EQ(w.rank, 3);
  EXPECT_EQ(w.world_size, 4);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_size, 2);
  EXPECT_TRUE(w.launched_by_mpi);
}

TEST(CommWorld, SrunWithPmix) {
  const WorldInfo w = discover({{"PMIX_RANK", "6"},
                                {"SLURM_STEP_NUM_TASKS", "16"},
                                {"SLURM_LOCALID", "2"},
                                {"SLURM_NTASKS", "16"},
                                {"SLURM_PROCID", "6"}});
  EXPECT_EQ(w.rank, 6);
  EXPECT_EQ(w.world_size, 16);
  EXPECT_EQ(w.local_rank, 2);
  EXPECT_EQ(w.local_size, 0);  // unknown
  EXPECT_TRUE(w.launched_by_mpi);
}

TEST(CommWorld, PmixAloneLeavesTheSizeToMpi) {
  const WorldInfo w = discover({{"PMIX_RANK", "3"}});
  EXPECT_EQ(w.rank, 3);
  EXPECT_EQ(w.world_size, 0);
  EXPECT_TRUE(w.launched_by_mpi);
}

// An sbatch script sees the allocation's task count while it runs a single process.
TEST(CommWorld, SlurmBatchScriptAloneIsOneProcess) {
  const WorldInfo w =
      discover({{"SLURM_NTASKS", "4"}, {"SLURM_PROCID", "0"}, {"SLURM_LOCALID", "0"}});
  EXPECT_EQ(w.world_size, 1);
  EXPECT_FALSE(w.launched_by_mpi);
}

TEST(CommWorld, MalformedVariablesNameThemselves) {
  const auto expect_error = [](const Env& env, const std::string& needle) {
    try {
      discover(env);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error({{"OMPI_COMM_WORLD_SIZE", "four"}}, "OMPI_COMM_WORLD_SIZE='four'");
  expect_error({{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "-1"}},
               "OMPI_COMM_WORLD_RANK='-1'");
  expect_error({{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "4"}},
               "OMPI_COMM_WORLD_RANK=4 with OMPI_COMM_WORLD_SIZE=4");
  expect_error({{"OMPI_COMM_WORLD_SIZE", "0"}}, "OMPI_COMM_WORLD_SIZE=0");
  expect_error({{"PMI_SIZE", "2"}, {"PMI_RANK", "2x"}}, "PMI_RANK='2x'");
}

TEST(CommWorld, SingleProcessGetsTheLocalCommunicator) {
  const auto c = make_world_communicator(discover({}), 7);
  EXPECT_STREQ(c->backend(), "local");
  EXPECT_EQ(c->timeout(), 7.0);
}

TEST(CommWorld, SeveralRanksWithoutMpiRunningIsAClearError) {
  ASSERT_FALSE(mpi_runtime_active());
  const WorldInfo w = discover({{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "1"}});
  try {
    make_world_communicator(w);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("launched as rank 1 of 4 (OMPI_COMM_WORLD_*)"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace peftrun
