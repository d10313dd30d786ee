// The world = 1 communicator, agree() on one rank, and the factory's choice when MPI is not
// running (as in a plain `peftrun train.yaml`).
#include <gtest/gtest.h>

#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_runtime.h"

namespace peftrun {
namespace {

TEST(CommLocal, IsRankZeroOfOne) {
  const auto c = make_local_communicator();
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->world_size(), 1);
  EXPECT_STREQ(c->backend(), "local");
  EXPECT_EQ(c->timeout(), Communicator::kDefaultTimeoutS);
}

TEST(CommLocal, ReductionsAreTheIdentity) {
  const auto c = make_local_communicator();
  for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(7), std::size_t(1) << 20}) {
    std::vector<float> f(n);
    std::iota(f.begin(), f.end(), -3.5f);
    std::vector<double> d(n), m(n);
    std::iota(d.begin(), d.end(), 0.25);
    std::iota(m.begin(), m.end(), -1.0);
    const auto f0 = f;
    const auto d0 = d;
    const auto m0 = m;
    c->all_reduce_sum(f.data(), n);
    c->all_reduce_sum(d.data(), n);
    c->all_reduce_max(m.data(), n);
    EXPECT_EQ(f, f0);
    EXPECT_EQ(d, d0);
    EXPECT_EQ(m, m0);
  }
}

TEST(CommLocal, AllGatherCopiesAndWorksInPlace) {
  const auto c = make_local_communicator();
  const std::vector<unsigned char> in = {1, 2, 3, 4, 5};
  std::vector<unsigned char> out(5, 0);
  c->all_gather(in.data(), out.data(), in.size());
  EXPECT_EQ(out, in);
  c->all_gather(out.data(), out.data(), out.size());
  EXPECT_EQ(out, in);
  c->all_gather(nullptr, nullptr, 0);
}

TEST(CommLocal, BroadcastChecksTheRoot) {
  const auto c = make_local_communicator();
  std::vector<unsigned char> v = {9, 8};
  c->broadcast(v.data(), v.size(), 0);
  EXPECT_EQ(v, (std::vector<unsigned char>{9, 8}));
  EXPECT_THROW(c->broadcast(v.data(), v.size(), 1), std::invalid_argument);
  EXPECT_THROW(c->broadcast(v.data(), v.size(), -1), std::invalid_argument);
  c->barrier();
}

TEST(CommLocal, AgreeReportsThisRank) {
  const auto c = make_local_communicator();
  const Agreement ok = c->agree(true, "loss is finite");
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.failed_rank, -1);
  EXPECT_EQ(ok.failed_ranks, 0);
  EXPECT_EQ(ok.describe(), "all 1 ranks ok");

  const Agreement bad = c->agree(false, "non-finite loss at step 7");
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.failed_rank, 0);
  EXPECT_EQ(bad.failed_ranks, 1);
  EXPECT_EQ(bad.what, "non-finite loss at step 7");
  EXPECT_EQ(bad.describe(), "rank 0 of 1: non-finite loss at step 7");

  EXPECT_EQ(c->agree(false, std::string(3000, 'y')).what.size(), Agreement::kMaxWhat);
  EXPECT_EQ(c->agree(false, "").describe(), "rank 0 of 1: failed");
}

TEST(CommLocal, AgreementDescribesSeveralFailures) {
  Agreement a;
  a.ok = false;
  a.failed_rank = 2;
  a.failed_ranks = 3;
  a.world_size = 8;
  a.what = "cannot read shard";
  EXPECT_EQ(a.describe(), "rank 2 of 8: cannot read shard (and 2 other ranks)");
}

TEST(CommLocal, TimeoutMustBePositiveAndFinite) {
  const auto c = make_local_communicator();
  c->set_timeout(3.5);
  EXPECT_EQ(c->timeout(), 3.5);
  EXPECT_THROW(c->set_timeout(0), std::invalid_argument);
  EXPECT_THROW(c->set_timeout(-2), std::invalid_argument);
  EXPECT_THROW(c->set_timeout(std::numeric_limits<double>::infinity()), std::invalid_argument);
  EXPECT_THROW(c->set_timeout(std::numeric_limits<double>::quiet_NaN()), std::invalid_argument);
  EXPECT_EQ(c->timeout(), 3.5);
}

TEST(CommFactory, OneProcessWithoutMpiIsLocal) {
  ASSERT_FALSE(mpi_runtime_active());
  CommRequest request;
  request.timeout_s = 42;
  const auto c = make_communicator(request);
  EXPECT_STREQ(c->backend(), "local");
  EXPECT_EQ(c->timeout(), 42.0);
}

TEST(CommFactory, SeveralRanksWithoutMpiIsAClearError) {
  ASSERT_FALSE(mpi_runtime_active());
  CommRequest request;
  request.world_size = 4;
  request.rank = 2;
  request.origin = "OMPI_COMM_WORLD_*";
  try {
    make_communicator(request);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("launched as rank 2 of 4 (OMPI_COMM_WORLD_*)"), std::string::npos) << msg;
    if (comm_built_with_mpi()) {
      EXPECT_NE(msg.find("MPI is not initialised"), std::string::npos) << msg;
    } else {
      EXPECT_NE(msg.find("built without MPI"), std::string::npos) << msg;
    }
  }
}

TEST(CommFactory, MpiRuntimeWithoutALauncherStaysOff) {
  int argc = 1;
  char name[] = "test";
  char* args[] = {name, nullptr};
  char** argv = args;
  MpiRuntime mpi(&argc, &argv, /*use_mpi=*/false);
  EXPECT_FALSE(mpi.active());
  EXPECT_FALSE(mpi_runtime_active());
  EXPECT_EQ(mpi.finish(3), 3);  // nothing to abort or finalise: just the code back
}

}  // namespace
}  // namespace peftrun
