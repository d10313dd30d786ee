// MpiCommunicator under a real mpirun (registered as CommMpi.Np2 and CommMpi.Np4): every rank
// runs every test in the same order. Tests make all their collective calls unconditionally and
// check results afterwards with EXPECT, so a failure on one rank never leaves the others waiting
// in a collective it skipped. Only rank 0 prints gtest's usual output; other ranks print their
// failures, prefixed with their rank. The job fails when any rank fails (agreed at the end).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"
#include "comm/mpi_runtime.h"
#include "comm/nccl_id_exchange.h"

namespace peftrun {
namespace {

std::unique_ptr<MpiCommunicator> g_comm;

Communicator& comm() {
  return *g_comm;
}
int rank() {
  return g_comm->rank();
}
int world() {
  return g_comm->world_size();
}

TEST(CommMpi, RanksMatchTheLauncherAndGatherInOrder) {
  const int mine = rank();
  std::vector<int> all(static_cast<std::size_t>(world()), -1);
  comm().all_gather(&mine, all.data(), sizeof(int));
  for (int r = 0; r < world(); ++r) EXPECT_EQ(all[static_cast<std::size_t>(r)], r);
  EXPECT_STREQ(comm().backend(), "mpi");
  if (const char* size = std::getenv("OMPI_COMM_WORLD_SIZE")) {
    EXPECT_EQ(world(), std::atoi(size));
  }
}

class CommMpiSizes : public ::testing::TestWithParam<std::size_t> {};

// Values are small integers and halves, so every sum is exact whatever the reduction order.
TEST_P(CommMpiSizes, AllReduceSumFloatIsExact) {
  const std::size_t n = GetParam();
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = float(i % 1024) + 0.5f * float(rank());
  comm().all_reduce_sum(v.data(), n);
  const float rank_sum = 0.5f * float(world() * (world() - 1) / 2);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (v[i] != float(world()) * float(i % 1024) + rank_sum) ++wrong;
  }
  EXPECT_EQ(wrong, 0u) << "of " << n;
}

TEST_P(CommMpiSizes, AllReduceSumDoubleIsExact) {
  const std::size_t n = GetParam();
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = 0.25 * double(i) + double(rank());
  comm().all_reduce_sum(v.data(), n);
  const double rank_sum = double(world() * (world() - 1) / 2);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (v[i] != double(world()) * 0.25 * double(i) + rank_sum) ++wrong;
  }
  EXPECT_EQ(wrong, 0u) << "of " << n;
}

TEST_P(CommMpiSizes, AllReduceMaxPicksTheOwningRank) {
  const std::size_t n = GetParam();
  std::vector<double> v(n);
  const auto w = static_cast<std::size_t>(world());
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = (i % w == static_cast<std::size_t>(rank())) ? double(i) + 0.5 : -double(rank()) - 1;
  }
  comm().all_reduce_max(v.data(), n);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (v[i] != double(i) + 0.5) ++wrong;
  }
  EXPECT_EQ(wrong, 0u) << "of " << n;
}

TEST_P(CommMpiSizes, AllGatherKeepsRankOrder) {
  const std::size_t bpr = GetParam();
  const auto w = static_cast<std::size_t>(world());
  auto pattern = [](int r, std::size_t j) { return static_cast<unsigned char>(r * 31 + j * 7); };
  std::vector<unsigned char> in(bpr), out(w * bpr, 0xEE);
  for (std::size_t j = 0; j < bpr; ++j) in[j] = pattern(rank(), j);
  comm().all_gather(in.data(), out.data(), bpr);

  // In place: this rank's input already sits in its own slot of the output.
  std::vector<unsigned char> inplace(w * bpr, 0xEE);
  for (std::size_t j = 0; j < bpr; ++j) inplace[std::size_t(rank()) * bpr + j] = pattern(rank(), j);
  comm().all_gather(inplace.data() + std::size_t(rank()) * bpr, inplace.data(), bpr);

  std::size_t wrong = 0, wrong_inplace = 0;
  for (int r = 0; r < world(); ++r) {
    for (std::size_t j = 0; j < bpr; ++j) {
      if (out[std::size_t(r) * bpr + j] != pattern(r, j)) ++wrong;
      if (inplace[std::size_t(r) * bpr + j] != pattern(r, j)) ++wrong_inplace;
    }
  }
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(wrong_inplace, 0u);
}

TEST_P(CommMpiSizes, BroadcastFromEveryRoot) {
  const std::size_t n = GetParam();
  std::size_t wrong = 0;
  // Highest rank first: a non-zero root is the case a hard-coded 0 would get wrong.
  for (int root = world() - 1; root >= 0; --root) {
    std::vector<unsigned char> v(n, 0);
    if (rank() == root) {
      for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<unsigned char>(i * 13 + root);
    }
    comm().broadcast(v.data(), n, root);
    for (std::size_t i = 0; i < n; ++i) {
      if (v[i] != static_cast<unsigned char>(i * 13 + root)) ++wrong;
    }
  }
  EXPECT_EQ(wrong, 0u);
}

// 0 and 1: edge cases; 7, 4097: odd, not a multiple of any segment size; ~1M: the size of a
// real gradient bucket, large enough for Open MPI to switch algorithms.
INSTANTIATE_TEST_SUITE_P(Sizes, CommMpiSizes,
                         ::testing::Values(std::size_t(0), std::size_t(1), std::size_t(7),
                                           std::size_t(4097), std::size_t(1000003)));

// With a 64-byte chunk limit every call below is split into many collectives, which is the path
// buffers over 1 GiB take in production.
TEST(CommMpi, SplitCollectivesMatchUnsplit) {
  MpiCommunicator small(30.0, 64);
  const auto w = static_cast<std::size_t>(world());
  const std::size_t n = 1001;

  std::vector<float> f(n);
  for (std::size_t i = 0; i < n; ++i) f[i] = float(i) + float(rank());
  small.all_reduce_sum(f.data(), n);

  std::vector<unsigned char> in(n), out(w * n, 0), inplace(w * n, 0);
  for (std::size_t j = 0; j < n; ++j) in[j] = static_cast<unsigned char>(j + 3 * rank());
  small.all_gather(in.data(), out.data(), n);
  std::copy(in.begin(), in.end(), inplace.begin() + std::ptrdiff_t(rank()) * std::ptrdiff_t(n));
  small.all_gather(inplace.data() + std::size_t(rank()) * n, inplace.data(), n);

  std::vector<unsigned char> b(n, 0);
  const int root = world() - 1;
  if (rank() == root) {
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<unsigned char>(i ^ 0x5A);
  }
  small.broadcast(b.data(), n, root);

  const double rank_sum = double(world() * (world() - 1) / 2);
  std::size_t wrong_sum = 0, wrong_gather = 0, wrong_bcast = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (double(f[i]) != double(world()) * double(i) + rank_sum) ++wrong_sum;
    if (b[i] != static_cast<unsigned char>(i ^ 0x5A)) ++wrong_bcast;
  }
  for (int r = 0; r < world(); ++r) {
    for (std::size_t j = 0; j < n; ++j) {
      const auto want = static_cast<unsigned char>(j + 3 * std::size_t(r));
      if (out[std::size_t(r) * n + j] != want) ++wrong_gather;
      if (inplace[std::size_t(r) * n + j] != want) ++wrong_gather;
    }
  }
  EXPECT_EQ(wrong_sum, 0u);
  EXPECT_EQ(wrong_gather, 0u);
  EXPECT_EQ(wrong_bcast, 0u);
}

TEST(CommMpi, BadArgumentsThrowBeforeCommunicating) {
  std::vector<unsigned char> v(8);
  EXPECT_THROW(comm().broadcast(v.data(), v.size(), world()), std::invalid_argument);
  EXPECT_THROW(comm().broadcast(v.data(), v.size(), -1), std::invalid_argument);
  if (world() > 1) {
    // The input inside the output but not at this rank's slot.
    std::vector<unsigned char> out(std::size_t(world()) * 4);
    const std::size_t wrong_slot = rank() == 0 ? 4 : 0;
    EXPECT_THROW(comm().all_gather(out.data() + wrong_slot, out.data(), 4), std::invalid_argument);
  }
  EXPECT_THROW(comm().set_timeout(0), std::invalid_argument);
  EXPECT_THROW(comm().set_timeout(-1), std::invalid_argument);
  EXPECT_THROW(comm().set_timeout(std::numeric_limits<double>::infinity()), std::invalid_argument);
  EXPECT_THROW(comm().set_timeout(std::nan("")), std::invalid_argument);
  EXPECT_EQ(comm().timeout(), 30.0);
}

// Ordering, not timing: rank 0 creates a file after a nap, before the barrier; every rank must
// see it after the barrier.
TEST(CommMpi, BarrierOrdersSideEffects) {
  char path[256] = {};
  if (rank() == 0) {
    const auto p =
        std::filesystem::temp_directory_path() / ("peftrun_barrier_" + std::to_string(::getpid()));
    std::snprintf(path, sizeof path, "%s", p.c_str());
  }
  comm().broadcast(path, sizeof path, 0);
  comm().barrier();
  if (rank() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ofstream(path) << "x";
  }
  comm().barrier();
  const bool seen = std::filesystem::exists(path);
  comm().barrier();
  if (rank() == 0) std::filesystem::remove(path);
  EXPECT_TRUE(seen) << path;
}

TEST(CommMpi, AgreeNamesTheLowestFailingRank) {
  const Agreement all_ok = comm().agree(true, "step 7 loss is finite");
  EXPECT_TRUE(all_ok.ok);
  EXPECT_EQ(all_ok.failed_rank, -1);
  EXPECT_EQ(all_ok.describe(), "all " + std::to_string(world()) + " ranks ok");

  const int last = world() - 1;
  const Agreement one = comm().agree(
      rank() != last, rank() == last ? "cannot read data/train.bin" : "data/train.bin readable");
  EXPECT_FALSE(one.ok);
  EXPECT_EQ(one.failed_rank, last);
  EXPECT_EQ(one.failed_ranks, 1);
  EXPECT_EQ(one.what, "cannot read data/train.bin");
  EXPECT_EQ(one.describe(), "rank " + std::to_string(last) + " of " + std::to_string(world()) +
                                ": cannot read data/train.bin");

  // Every odd rank fails, each with its own text: the lowest one's text wins everywhere.
  const bool odd = rank() % 2 == 1;
  const Agreement several = comm().agree(!odd, "non-finite loss on rank " + std::to_string(rank()));
  const int odd_ranks = world() / 2;
  EXPECT_EQ(several.ok, odd_ranks == 0);
  EXPECT_EQ(several.failed_ranks, odd_ranks);
  if (odd_ranks > 0) {
    EXPECT_EQ(several.failed_rank, 1);
    EXPECT_EQ(several.what, "non-finite loss on rank 1");
    if (odd_ranks == 2) {
      EXPECT_EQ(several.describe(), "rank 1 of 4: non-finite loss on rank 1 (and 1 other rank)");
    }
  }

  // Over-long descriptions are cut, not overflowed.
  const Agreement longer = comm().agree(rank() != 0, std::string(5000, 'x'));
  EXPECT_EQ(longer.what.size(), Agreement::kMaxWhat);
}

TEST(CommMpi, FactoryBuildsMpiAndRejectsAMismatchedLauncher) {
  CommRequest request;
  request.world_size = world();
  request.rank = rank();
  request.origin = "test";
  request.timeout_s = 12;
  const auto made = make_communicator(request);
  EXPECT_STREQ(made->backend(), "mpi");
  EXPECT_EQ(made->world_size(), world());
  EXPECT_EQ(made->rank(), rank());
  EXPECT_EQ(made->timeout(), 12.0);

  request.world_size = world() + 1;
  try {
    make_communicator(request);
    ADD_FAILURE() << "a launcher/MPI size mismatch was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("MPI reports a world of " + std::to_string(world())),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(comm_built_with_mpi());
}

// The NCCL id exchange over real ranks (no NCCL involved: rank 0's "id" is a byte pattern).
TEST(CommMpi, NcclIdExchangeGivesEveryRankRankZerosId) {
  int made = 0;
  const auto make = [&] {
    ++made;
    NcclUniqueIdBytes id;
    for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<unsigned char>(3 + 7 * i);
    return id;
  };
  const NcclUniqueIdBytes id = exchange_nccl_unique_id(comm(), 22809, make);
  EXPECT_EQ(made, rank() == 0 ? 1 : 0);
  for (std::size_t i = 0; i < id.size(); ++i) {
    EXPECT_EQ(id[i], static_cast<unsigned char>(3 + 7 * i)) << "byte " << i;
  }

  // The last rank loads another NCCL: every rank, rank 0 included, stops with its message.
  if (world() == 1) return;  // the same branch on every rank
  const int odd_one = world() - 1;
  try {
    exchange_nccl_unique_id(comm(), rank() == odd_one ? 21903 : 22809, make);
    ADD_FAILURE() << "a version mismatch was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(
        std::string(e.what()).find("rank " + std::to_string(odd_one) + " of " +
                                   std::to_string(world()) + ": NCCL 2.19.3 on this rank (host "),
        std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find(") but 2.28.9 on rank 0 (host "), std::string::npos)
        << e.what();
  }
}

// Informational: what a step's small collectives and one ~1M-float bucket cost here.
TEST(CommMpi, Timings) {
  using Clock = std::chrono::steady_clock;
  comm().barrier();
  constexpr int kSmall = 500;
  const auto t0 = Clock::now();
  for (int i = 0; i < kSmall; ++i) {
    double x = 1;
    comm().all_reduce_sum(&x, 1);
  }
  const auto t1 = Clock::now();
  std::vector<float> bucket(1 << 20, 1.0f);
  comm().all_reduce_sum(bucket.data(), bucket.size());
  const auto t2 = Clock::now();
  const double small_us = std::chrono::duration<double, std::micro>(t1 - t0).count() / kSmall;
  const double bucket_ms = std::chrono::duration<double, std::milli>(t2 - t1).count();
  if (rank() == 0) {
    std::printf("[ timings  ] %d ranks: all_reduce of 1 double %.1f us, of 2^20 floats %.1f ms\n",
                world(), small_us, bucket_ms);
  }
  EXPECT_EQ(bucket[12345], float(world()));
}

// Ranks other than 0 report only failures, with their rank, so 4 ranks do not print 4 logs.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int r) : rank_(r) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
  }

 private:
  int rank_;
};

}  // namespace
}  // namespace peftrun

int main(int argc, char** argv) {
  // Always MPI: run directly, this is a world of 1 (an MPI singleton).
  peftrun::MpiRuntime mpi(&argc, &argv, /*use_mpi=*/true);
  ::testing::InitGoogleTest(&argc, argv);
  // A test bug that desynchronises the ranks aborts the job after 30 s instead of hanging.
  peftrun::g_comm = std::make_unique<peftrun::MpiCommunicator>(30.0);
  const int rank = peftrun::g_comm->rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new peftrun::RankFailurePrinter(rank));
  }
  const int rc = RUN_ALL_TESTS();
  const peftrun::Agreement all =
      peftrun::g_comm->agree(rc == 0, "tests failed on rank " + std::to_string(rank));
  if (rank == 0 && !all.ok) std::fprintf(stderr, "CommMpi: %s\n", all.describe().c_str());
  peftrun::g_comm.reset();
  return mpi.finish(all.ok ? 0 : 1, /*failure_agreed=*/true);
}
