// What creating an NCCL communicator decides before NCCL itself runs, tested without a GPU:
// which CUDA device a rank takes, how rank 0's ncclUniqueId reaches the others (framing, agreed
// failures, version check), and the factory's answer on a machine without a usable device.
// tests/gpu/nccl_communicator_test.cpp covers NCCL itself on one GPU; tests/comm_mpi_test.cpp
// runs the id exchange over real MPI ranks.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/collective_report.h"
#include "comm/communicator.h"
#include "comm/cuda_device_choice.h"
#include "comm/nccl_id_exchange.h"
#include "kernels/device.h"

namespace peftrun {
namespace {

// ----------------------------------------------------------------------------------------------
// Device choice
// ----------------------------------------------------------------------------------------------

TEST(CommNcclDevice, LocalRankPicksItsDevice) {
  EXPECT_EQ(choose_cuda_device(0, 8, nullptr).device, 0);
  EXPECT_EQ(choose_cuda_device(7, 8, nullptr).device, 7);
  EXPECT_EQ(choose_cuda_device(1, 2, "4,5").device, 1);
  EXPECT_TRUE(choose_cuda_device(3, 4, nullptr).error.empty());
}

TEST(CommNcclDevice, MoreRanksThanDevicesNamesBothNumbers) {
  const CudaDeviceChoice c = choose_cuda_device(3, 2, nullptr);
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.device, -1);
  EXPECT_EQ(c.error,
            "local rank 3 needs CUDA device 3, but only 2 devices are visible "
            "(CUDA_VISIBLE_DEVICES unset): start at most 2 ranks per node (e.g. mpirun --map-by "
            "ppr:2:node), or give each rank its own GPU through CUDA_VISIBLE_DEVICES");
  const CudaDeviceChoice listed = choose_cuda_device(4, 2, "0,1");
  EXPECT_NE(listed.error.find("local rank 4 needs CUDA device 4, but only 2 devices are visible "
                              "(CUDA_VISIBLE_DEVICES=0,1)"),
            std::string::npos)
      << listed.error;
}

TEST(CommNcclDevice, OneDeviceOfItsOwnServesAnyLocalRank) {
  // srun --gpus-per-task=1: every task sees one GPU (CUDA_VISIBLE_DEVICES set per task).
  EXPECT_EQ(choose_cuda_device(5, 1, "5").device, 0);
  // One device and nothing restricting visibility: several ranks would share it, which NCCL
  // refuses; say so here instead.
  const CudaDeviceChoice shared = choose_cuda_device(1, 1, nullptr);
  EXPECT_FALSE(shared.ok());
  EXPECT_NE(shared.error.find("local rank 1 needs CUDA device 1, but only 1 device is visible"),
            std::string::npos)
      << shared.error;
  EXPECT_FALSE(choose_cuda_device(1, 1, "").ok());  // empty is "unset"
}

TEST(CommNcclDevice, NoDeviceCarriesTheDriversReason) {
  const CudaDeviceChoice c =
      choose_cuda_device(0, 0, nullptr, "CUDA driver version is insufficient for CUDA runtime");
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.error,
            "no usable CUDA device (CUDA driver version is insufficient for CUDA runtime; "
            "CUDA_VISIBLE_DEVICES unset): the NCCL backend needs one GPU per rank");
  EXPECT_NE(choose_cuda_device(0, 0, "").error.find("no usable CUDA device (CUDA_VISIBLE_DEVICES "
                                                    "unset)"),
            std::string::npos);
  EXPECT_FALSE(choose_cuda_device(-1, 4, nullptr).ok());
}

// ----------------------------------------------------------------------------------------------
// Id exchange
// ----------------------------------------------------------------------------------------------

TEST(CommNcclId, VersionCodesReadLikeNcclReleases) {
  EXPECT_EQ(format_nccl_version(22809), "2.28.9");
  EXPECT_EQ(format_nccl_version(21903), "2.19.3");
  EXPECT_EQ(format_nccl_version(20900), "2.9.0");
  EXPECT_EQ(format_nccl_version(2804), "2.8.4");  // the old encoding, before 2.9
}

// One rank of a pretend world: what the other ranks send is scripted, what this rank sends is
// recorded, and every call is logged so the framing (which collectives, what sizes) is checked.
class ScriptedPeers final : public Communicator {
 public:
  ScriptedPeers(int rank, int world) : rank_(rank), world_(world) {}
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  const char* backend() const override { return "scripted"; }
  void all_reduce_sum(float*, std::size_t) override { calls.push_back("all_reduce_sum"); }
  void all_reduce_sum(double*, std::size_t) override { calls.push_back("all_reduce_sum"); }
  void all_reduce_max(double*, std::size_t) override { calls.push_back("all_reduce_max"); }
  void barrier() override { calls.push_back("barrier"); }
  // The other ranks' contributions come from `gathers` (zeros when none is scripted: "ok").
  void all_gather(const void* in, void* out, std::size_t bytes) override {
    calls.push_back("all_gather " + std::to_string(bytes));
    auto* o = static_cast<unsigned char*>(out);
    std::memset(o, 0, bytes * world_);
    if (!gathers.empty()) {
      EXPECT_EQ(gathers.front().size(), bytes * world_);
      std::memcpy(o, gathers.front().data(), bytes * world_);
      gathers.pop_front();
    }
    std::memcpy(o + bytes * rank_, in, bytes);
  }
  // From another root: the next scripted payload; from this rank: recorded.
  void broadcast(void* data, std::size_t bytes, int root) override {
    calls.push_back("broadcast " + std::to_string(bytes) + " from " + std::to_string(root));
    auto* d = static_cast<unsigned char*>(data);
    if (root == rank_) {
      sent.emplace_back(d, d + bytes);
      return;
    }
    ASSERT_FALSE(incoming.empty()) << "unscripted broadcast from rank " << root;
    ASSERT_EQ(incoming.front().size(), bytes);
    std::memcpy(d, incoming.front().data(), bytes);
    incoming.pop_front();
  }

  std::deque<std::vector<unsigned char>> gathers;   // full output of each all_gather
  std::deque<std::vector<unsigned char>> incoming;  // payload of each broadcast from elsewhere
  std::vector<std::vector<unsigned char>> sent;
  std::vector<std::string> calls;

 private:
  int rank_, world_;
};

NcclUniqueIdBytes pattern_id(unsigned char seed) {
  NcclUniqueIdBytes id;
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<unsigned char>(seed + 7 * i);
  return id;
}

// Rank 0's frame as exchange_nccl_unique_id lays it out.
std::vector<unsigned char> frame(std::int32_t version, const std::string& host,
                                 const NcclUniqueIdBytes& id) {
  std::vector<unsigned char> f(kNcclIdFrameBytes, 0);
  std::memcpy(f.data(), &version, 4);
  std::memcpy(f.data() + 4, host.data(), host.size());
  std::memcpy(f.data() + 4 + kNcclIdFrameHostBytes, id.data(), id.size());
  return f;
}

// agree()'s failure text as broadcast by the failing rank.
std::vector<unsigned char> agreed_text(const std::string& what) {
  std::vector<unsigned char> t(Agreement::kMaxWhat + 1, 0);
  std::memcpy(t.data(), what.data(), what.size());
  return t;
}

TEST(CommNcclId, RankZeroMakesTheIdAndSendsVersionHostAndId) {
  ScriptedPeers peers(0, 2);
  int made = 0;
  const NcclUniqueIdBytes id = exchange_nccl_unique_id(peers, 22809, [&] {
    ++made;
    return pattern_id(3);
  });
  EXPECT_EQ(made, 1);
  EXPECT_EQ(id, pattern_id(3));
  // agree (ok), the frame, agree (same version): three collectives, all tiny.
  EXPECT_EQ(peers.calls,
            (std::vector<std::string>{"all_gather 1", "broadcast 196 from 0", "all_gather 1"}));
  ASSERT_EQ(peers.sent.size(), 1u);
  EXPECT_EQ(peers.sent[0], frame(22809, local_host_name().substr(0, 63), pattern_id(3)));
}

TEST(CommNcclId, OtherRanksTakeRankZerosIdAndMakeNone) {
  ScriptedPeers peers(1, 4);
  peers.incoming.push_back(frame(22809, "node01", pattern_id(9)));
  const NcclUniqueIdBytes id = exchange_nccl_unique_id(peers, 22809, [&]() -> NcclUniqueIdBytes {
    ADD_FAILURE() << "only rank 0 makes the id";
    return {};
  });
  EXPECT_EQ(id, pattern_id(9));
  EXPECT_TRUE(peers.sent.empty());
}

TEST(CommNcclId, ANcclVersionMismatchIsReportedByEveryRank) {
  // This rank (1 of 2) loads 2.28.9, rank 0 (node01) loaded 2.19.3.
  ScriptedPeers peers(1, 2);
  peers.incoming.push_back(frame(21903, "node01", pattern_id(1)));
  try {
    exchange_nccl_unique_id(peers, 22809, [] { return NcclUniqueIdBytes{}; });
    FAIL() << "a version mismatch was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot create the NCCL communicator: rank 1 of 2: NCCL 2.28.9 on this rank (host " +
                  local_host_name() +
                  ") but 2.19.3 on rank 0 (host node01): every rank must load the same libnccl");
  }

  // Rank 0's side of the same job: it matches itself, but hears of rank 1's mismatch.
  ScriptedPeers root(0, 2);
  std::vector<unsigned char> flags = {0, 0};
  root.gathers.push_back(flags);  // first agreement: everyone fine
  flags[1] = 1;
  root.gathers.push_back(flags);  // second: rank 1 failed
  root.incoming.push_back(agreed_text("NCCL 2.28.9 on this rank (host n2) but ..."));
  try {
    exchange_nccl_unique_id(root, 21903, [] { return pattern_id(1); });
    FAIL() << "rank 1's mismatch did not reach rank 0";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot create the NCCL communicator: rank 1 of 2: NCCL 2.28.9 on this rank (host "
              "n2) but ...");
  }
}

TEST(CommNcclId, RankZeroFailingToMakeAnIdStopsEveryRankBeforeTheBroadcast) {
  ScriptedPeers root(0, 3);
  try {
    exchange_nccl_unique_id(root, 22809, []() -> NcclUniqueIdBytes {
      throw std::runtime_error("ncclGetUniqueId failed: no usable network interface");
    });
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot create the NCCL communicator: rank 0 of 3: ncclGetUniqueId failed: no "
              "usable network interface");
  }
  // Only the agreement ran (its text broadcast from rank 0); no id frame was sent.
  EXPECT_EQ(root.calls, (std::vector<std::string>{"all_gather 1", "broadcast 1001 from 0"}));

  ScriptedPeers other(2, 3);
  other.gathers.push_back({1, 0, 0});
  other.incoming.push_back(agreed_text("ncclGetUniqueId failed: no usable network interface"));
  EXPECT_THROW(exchange_nccl_unique_id(other, 22809, [] { return NcclUniqueIdBytes{}; }),
               std::runtime_error);
  EXPECT_EQ(other.calls, (std::vector<std::string>{"all_gather 1", "broadcast 1001 from 0"}));
}

TEST(CommNcclId, WorldOfOneNeedsNoPeers) {
  const auto local = make_local_communicator();
  EXPECT_EQ(exchange_nccl_unique_id(*local, 22809, [] { return pattern_id(5); }), pattern_id(5));
}

// ----------------------------------------------------------------------------------------------
// The factory without a usable GPU (this machine, CI)
// ----------------------------------------------------------------------------------------------

TEST(CommNcclFactory, DeviceBuffersWithoutAGpuIsAClearError) {
  if (comm_built_with_nccl() && query_devices().cuda_devices > 0) {
    GTEST_SKIP() << "a GPU is present: gpu_nccl_communicator_test covers the NCCL backend";
  }
  CommRequest request;
  request.device_buffers = true;
  try {
    make_communicator(request);
    FAIL() << "an NCCL communicator was made without a GPU";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    if (comm_built_with_nccl()) {
      EXPECT_EQ(msg.rfind("cannot use the NCCL backend: rank 0 of 1: no usable CUDA device (", 0),
                0u)
          << msg;
      EXPECT_NE(
          msg.find("the NCCL backend needs one GPU per rank (host " + local_host_name() + ")"),
          std::string::npos)
          << msg;
    } else {
      EXPECT_NE(msg.find("built without NCCL"), std::string::npos) << msg;
    }
  }
}

TEST(CommNcclFactory, HostBuffersStayTheDefault) {
  CommRequest request;
  EXPECT_FALSE(request.device_buffers);
  EXPECT_STREQ(make_communicator(request)->backend(), "local");
}

}  // namespace
}  // namespace peftrun
