// What every backend shares: the one-line reports of a failed or timed-out collective (the MPI
// and NCCL communicators print the same format, so scripts and the fault tests match one
// pattern) and all_gather's buffer rule.
#include <gtest/gtest.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "comm/collective_report.h"
#include "comm/communicator.h"

namespace peftrun {
namespace {

TEST(CommReport, DescribesTheOperationWithWhatIsKnown) {
  EXPECT_EQ(describe_collective("barrier", 0, nullptr, -1, ""), "barrier");
  EXPECT_EQ(describe_collective("all_reduce_sum", 77824, "floats", -1, ""),
            "all_reduce_sum of 77824 floats");
  EXPECT_EQ(describe_collective("broadcast", 1001, "bytes", 2, "agree(\"read data\")"),
            "broadcast of 1001 bytes from rank 2 in agree(\"read data\")");
  EXPECT_EQ(describe_collective("NCCL prefetch all_gather", 4096, "bytes per rank", -1, ""),
            "NCCL prefetch all_gather of 4096 bytes per rank");
}

TEST(CommReport, TimeoutLineNamesRankHostOperationAndTheKnob) {
  const RankIdentity who{3, 8, "node07", 4242};
  EXPECT_EQ(collective_timeout_line(who, "NCCL all_reduce_sum of 5 floats", 600.04, 600, 4),
            "peftrun: rank 3 of 8 (host node07, pid 4242): NCCL all_reduce_sum of 5 floats did "
            "not complete after 600.0 s: a peer rank died or is stuck (or took another code "
            "path); aborting the job with exit code 4 (raise comm.timeout_s, now 600 s, if a "
            "step legitimately takes longer)\n");
  EXPECT_NE(collective_timeout_line(who, "barrier", 2.5, 2.5, 4).find("now 2.5 s"),
            std::string::npos);
}

TEST(CommReport, FailureLineCarriesTheLibrarysReasonAndTheLikelyCause) {
  const RankIdentity who{0, 2, "gpu01", 7};
  EXPECT_EQ(collective_failure_line(who, "NCCL broadcast of 8 bytes from rank 1", 1.31,
                                    "NCCL: remote process exited or there was a network error",
                                    "a peer rank died or its network connection failed", 4),
            "peftrun: rank 0 of 2 (host gpu01, pid 7): NCCL broadcast of 8 bytes from rank 1 "
            "failed after 1.3 s: NCCL: remote process exited or there was a network error (a "
            "peer rank died or its network connection failed); aborting the job with exit code "
            "4\n");
  EXPECT_EQ(collective_failure_line(who, "x", 0, "CUDA: boom", "", 1),
            "peftrun: rank 0 of 2 (host gpu01, pid 7): x failed after 0.0 s: CUDA: boom; "
            "aborting the job with exit code 1\n");
}

TEST(CommReport, IdentityOfThisProcess) {
  const RankIdentity me = this_rank_identity(1, 4);
  EXPECT_EQ(me.rank, 1);
  EXPECT_EQ(me.world, 4);
  EXPECT_EQ(me.pid, static_cast<long>(::getpid()));
  EXPECT_EQ(me.host, local_host_name());
  EXPECT_FALSE(me.host.empty());
  EXPECT_EQ(this_rank_identity(0, 1, "given").host, "given");
}

// gather_in_place is protected: the rule is part of the Communicator contract, checked here
// through a minimal subclass.
struct GatherRule : Communicator {
  using Communicator::gather_in_place;
};

TEST(CommGatherRule, InPlaceOnlyAtThisRanksSlot) {
  std::vector<unsigned char> out(4 * 16);
  std::vector<unsigned char> other(16);
  const unsigned char* base = out.data();
  EXPECT_TRUE(GatherRule::gather_in_place(base + 2 * 16, base, 16, 2, 4));
  EXPECT_FALSE(GatherRule::gather_in_place(other.data(), base, 16, 2, 4));
  // Inside the output but at another rank's slot, or straddling two slots: refused.
  EXPECT_THROW(GatherRule::gather_in_place(base + 16, base, 16, 2, 4), std::invalid_argument);
  EXPECT_THROW(GatherRule::gather_in_place(base + 40, base, 16, 2, 4), std::invalid_argument);
  // Overlapping the output's start from below.
  EXPECT_THROW(GatherRule::gather_in_place(base + 8, base + 16, 16, 3, 3), std::invalid_argument);
}

}  // namespace
}  // namespace peftrun
