// The NCCL communicator on one GPU (world = 1): the collectives on device buffers, the
// host-value calls over the wrapped Local communicator, the stream ordering of started
// operations, and the deadlines (creation that never completes, a collective that never
// completes) ending the process with kExitCommTimeout. Several ranks need one GPU each and MPI:
// not covered here (see docs/ARCHITECTURE.md, Distribution).
//
// Without a usable CUDA device, or in a build without NCCL, every test reports itself SKIPPED.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "tests/gpu/gpu_test_support.h"
#if PEFTRUN_WITH_NCCL
#include "comm/nccl_communicator.h"
#endif

namespace peftrun::gpu_testing {
namespace {

#if PEFTRUN_WITH_NCCL

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call
// While a Gate holds a stream, a failed check must not leave the test (the gate would be
// destroyed under the host function still reading it): EXPECT, not ASSERT.
#define CUDA_EXPECT(call) EXPECT_EQ((call), cudaSuccess) << #call

std::unique_ptr<NcclCommunicator> make_nccl(double timeout_s = 60) {
  auto host = make_local_communicator();
  host->set_timeout(timeout_s);
  return NcclCommunicator::create(std::move(host), /*local_rank=*/0);
}

// Holds a stream at a point until opened: a host function queued on the stream that waits for
// the flag. Work queued after it (and anything that waits for that stream) cannot start.
struct Gate {
  std::atomic<bool> open{false};
  static void CUDART_CB hold(void* gate) {
    auto* g = static_cast<Gate*>(gate);
    while (!g->open.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
};

std::vector<unsigned char> random_bytes(std::size_t n, std::uint64_t seed) {
  const std::vector<float> f = random_floats((n + 3) / 4, seed);
  std::vector<unsigned char> b(n);
  std::memcpy(b.data(), f.data(), n);
  return b;
}

TEST(GpuNccl, IsRankZeroOfOneOnDeviceZero) {
  PEFTRUN_REQUIRE_GPU();
  const auto c = make_nccl(42);
  EXPECT_STREQ(c->backend(), "nccl");
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->world_size(), 1);
  EXPECT_EQ(c->device(), 0);
  EXPECT_STREQ(c->host().backend(), "local");
  EXPECT_EQ(c->timeout(), 42.0);
  c->set_timeout(7);
  EXPECT_EQ(c->host().timeout(), 7.0);  // the host-value calls keep the same deadline
  EXPECT_NE(c->comm_stream(), nullptr);
  EXPECT_EQ(c->in_flight(), 0u);
  EXPECT_TRUE(comm_built_with_nccl());
}

TEST(GpuNccl, FactoryBuildsNcclWhenAskedForDeviceBuffers) {
  PEFTRUN_REQUIRE_GPU();
  CommRequest request;
  request.device_buffers = true;
  request.timeout_s = 30;
  const auto c = make_communicator(request);
  EXPECT_STREQ(c->backend(), "nccl");
  EXPECT_EQ(c->timeout(), 30.0);
  request.device_buffers = false;
  EXPECT_STREQ(make_communicator(request)->backend(), "local");
}

TEST(GpuNccl, AllReduceSumOfOneRankIsTheIdentity) {
  PEFTRUN_REQUIRE_GPU();
  const auto c = make_nccl();
  for (std::size_t n : {std::size_t(1), std::size_t(1000), (std::size_t(1) << 20) + 3}) {
    const std::vector<float> host = random_floats(n, 11 + n);
    cuda::DeviceBuffer<float> d = to_device(host);
    c->all_reduce_sum(d.data(), n);
    EXPECT_EQ(to_host(d), host) << n << " floats";
  }
  c->all_reduce_sum(static_cast<float*>(nullptr), 0);  // empty: nothing to check or move
  EXPECT_EQ(c->in_flight(), 0u);
}

TEST(GpuNccl, AllGatherCopiesAndWorksInPlace) {
  PEFTRUN_REQUIRE_GPU();
  const auto c = make_nccl();
  const std::vector<unsigned char> in = random_bytes(4099, 3);
  cuda::DeviceBuffer<unsigned char> d_in = to_device(in);
  cuda::DeviceBuffer<unsigned char> d_out = poisoned<unsigned char>(in.size());
  c->all_gather(d_in.data(), d_out.data(), in.size());
  EXPECT_EQ(to_host(d_out), in);
  c->all_gather(d_out.data(), d_out.data(), in.size());  // rank 0's slot of the output
  EXPECT_EQ(to_host(d_out), in);
  // Overlapping the output other than at this rank's slot is refused, as in every backend.
  cuda::DeviceBuffer<unsigned char> wide = poisoned<unsigned char>(2 * in.size());
  EXPECT_THROW(c->all_gather(wide.data() + 1, wide.data(), in.size()), std::invalid_argument);
}

TEST(GpuNccl, BroadcastFromRootZeroAndOtherRootsAreRefused) {
  PEFTRUN_REQUIRE_GPU();
  const auto c = make_nccl();
  const std::vector<unsigned char> bytes = random_bytes(777, 4);
  cuda::DeviceBuffer<unsigned char> d = to_device(bytes);
  c->broadcast(d.data(), bytes.size(), 0);
  EXPECT_EQ(to_host(d), bytes);
  EXPECT_THROW(c->broadcast(d.data(), bytes.size(), 1), std::invalid_argument);
  EXPECT_THROW(c->broadcast(d.data(), bytes.size(), -1), std::invalid_argument);
}

TEST(GpuNccl, HostValuesGoOverTheHostCommunicator) {
  PEFTRUN_REQUIRE_GPU();
  const auto c = make_nccl();
  double sums[2] = {1.5, -2.25}, maxes[1] = {7};
  c->all_reduce_sum(sums, 2);  // host memory: a world of 1 leaves it as it is
  c->all_reduce_max(maxes, 1);
  EXPECT_EQ(sums[0], 1.5);
  EXPECT_EQ(sums[1], -2.25);
  EXPECT_EQ(maxes[0], 7.0);
  c->barrier();
  const Agreement bad = c->agree(false, "cannot read shard 3");
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.describe(), "rank 0 of 1: cannot read shard 3");
  EXPECT_TRUE(c->agree(true, "fine").ok);
}

TEST(GpuNccl, HostPointersAreRefusedWhereDeviceBuffersAreExpected) {
  PEFTRUN_REQUIRE_GPU();
  const auto c = make_nccl();
  std::vector<float> host(64, 1.0f);
  try {
    c->all_reduce_sum(host.data(), host.size());
    FAIL() << "a host buffer was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("is host memory"), std::string::npos) << e.what();
  }
  cuda::DeviceBuffer<float> d(64);
  EXPECT_THROW(c->all_gather(host.data(), d.data(), 64 * sizeof(float)), std::invalid_argument);
  EXPECT_THROW(c->start_all_gather(d.data(), host.data(), 64 * sizeof(float)),
               std::invalid_argument);
  EXPECT_EQ(c->in_flight(), 0u);
}

// A started gather waits (on the device) for the work queued on the compute stream before it,
// and a stream told to wait for it waits without the host blocking.
TEST(GpuNccl, StartedGatherFollowsTheComputeStreamAndIsAwaitedOnTheDevice) {
  PEFTRUN_REQUIRE_GPU();
  const auto c = make_nccl();
  cudaStream_t compute = nullptr, consumer = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&consumer, cudaStreamNonBlocking));
  c->set_compute_stream(compute);

  const std::size_t n = 50000;
  const std::vector<float> old_values = random_floats(n, 21), new_values = random_floats(n, 22);
  cuda::DeviceBuffer<float> shard = to_device(old_values);
  cuda::DeviceBuffer<float> fresh = to_device(new_values);
  cuda::DeviceBuffer<float> gathered = poisoned<float>(n);
  cuda::DeviceBuffer<float> copy = poisoned<float>(n);

  // The compute stream is held, then overwrites the shard: the gather must see the new values.
  Gate gate;
  CUDA_OK(cudaLaunchHostFunc(compute, &Gate::hold, &gate));
  CUDA_EXPECT(cudaMemcpyAsync(shard.data(), fresh.data(), shard.bytes(), cudaMemcpyDeviceToDevice,
                              compute));
  const std::size_t h = c->start_all_gather(shard.data(), gathered.data(), shard.bytes());
  EXPECT_NE(h, 0u);
  c->stream_wait(h, consumer);
  CUDA_EXPECT(cudaMemcpyAsync(copy.data(), gathered.data(), gathered.bytes(),
                              cudaMemcpyDeviceToDevice, consumer));
  // The host got here while the compute stream is held: nothing blocked it. The communication
  // and consumer streams are still waiting.
  EXPECT_EQ(cudaStreamQuery(c->comm_stream()), cudaErrorNotReady);
  EXPECT_EQ(cudaStreamQuery(consumer), cudaErrorNotReady);
  c->progress();  // not late: stays in flight
  EXPECT_EQ(c->in_flight(), 1u);

  gate.open = true;
  CUDA_OK(cudaStreamSynchronize(consumer));
  EXPECT_EQ(to_host(copy), new_values);
  c->wait(h);
  EXPECT_EQ(c->in_flight(), 0u);
  c->wait(h);  // already complete: a no-op
  c->stream_wait(h, consumer);
  c->set_compute_stream(nullptr);
  CUDA_OK(cudaStreamDestroy(compute));
  CUDA_OK(cudaStreamDestroy(consumer));
}

TEST(GpuNccl, StartedReductionsCompleteByWaitAllOrStreamWaitAll) {
  PEFTRUN_REQUIRE_GPU();
  const auto c = make_nccl();
  const std::vector<float> grads = random_floats(30000, 31);
  cuda::DeviceBuffer<float> d = to_device(grads);
  // Three buckets of one flat buffer, as the trainer starts them during backward.
  c->start_all_reduce_sum(d.data() + 20000, 10000);
  c->start_all_reduce_sum(d.data() + 5000, 15000);
  c->start_all_reduce_sum(d.data(), 5000);
  c->start_all_reduce_sum(d.data(), 0);  // empty: nothing started
  EXPECT_EQ(c->in_flight(), 3u);
  cudaStream_t consumer = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&consumer, cudaStreamNonBlocking));
  c->stream_wait_all(consumer);
  std::vector<float> back(grads.size());
  CUDA_OK(cudaMemcpyAsync(back.data(), d.data(), d.bytes(), cudaMemcpyDeviceToHost, consumer));
  CUDA_OK(cudaStreamSynchronize(consumer));
  EXPECT_EQ(back, grads);
  c->wait_all();
  EXPECT_EQ(c->in_flight(), 0u);
  CUDA_OK(cudaStreamDestroy(consumer));
}

// Rank 0 of a pretend world of 2 whose rank 1 never shows up: agree() hears only "ok" and the
// id broadcast has no one to reach, so NCCL's creation waits for the missing rank forever.
class LonelyRankZero final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  const char* backend() const override { return "lonely"; }
  void all_reduce_sum(float*, std::size_t) override {}
  void all_reduce_sum(double*, std::size_t) override {}
  void all_reduce_max(double*, std::size_t) override {}
  void all_gather(const void* in, void* out, std::size_t bytes) override {
    std::memset(out, 0, 2 * bytes);
    std::memcpy(out, in, bytes);
  }
  void broadcast(void*, std::size_t, int) override {}
  void barrier() override {}
};

// Death tests run in a fresh process (threadsafe style re-executes this binary), so each child
// initialises CUDA and NCCL itself and its exit cannot disturb the other tests.
TEST(GpuNcclDeathTest, CreationTimesOutWhenAPeerNeverJoins) {
  PEFTRUN_REQUIRE_GPU();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        auto host = std::make_unique<LonelyRankZero>();
        host->set_timeout(2);
        const auto c = NcclCommunicator::create(std::move(host), 0);
        std::fprintf(stderr, "creation completed without rank 1\n");
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(kExitCommTimeout),
      "peftrun: rank 0 of 2 \\(host [^)]*\\): NCCL communicator creation "
      "\\(ncclCommInitRankConfig over 2 ranks\\) did not complete after [0-9.]+ s: a peer rank "
      "died or is stuck");
}

TEST(GpuNcclDeathTest, CollectiveThatNeverCompletesTimesOut) {
  PEFTRUN_REQUIRE_GPU();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const auto c = make_nccl();  // creation under the default test deadline
        c->set_timeout(2);
        cuda::DeviceBuffer<float> d(1024);
        // A compute stream held forever: the reduction's inputs never become ready.
        static Gate never;
        cudaStream_t compute = nullptr;
        (void)cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking);
        (void)cudaLaunchHostFunc(compute, &Gate::hold, &never);
        c->set_compute_stream(compute);
        c->all_reduce_sum(d.data(), d.size());
        std::fprintf(stderr, "a held all_reduce_sum completed\n");
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(kExitCommTimeout),
      "peftrun: rank 0 of 1 \\(host [^)]*\\): NCCL all_reduce_sum of 1024 floats did not "
      "complete after [0-9.]+ s: a peer rank died or is stuck");
}

TEST(GpuNcclDeathTest, ProgressEndsAStartedOperationPastItsDeadline) {
  PEFTRUN_REQUIRE_GPU();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const auto c = make_nccl();
        c->set_timeout(1);
        cuda::DeviceBuffer<unsigned char> in(4096);   // one declaration each: a top-level
        cuda::DeviceBuffer<unsigned char> out(4096);  // comma would split the macro
        static Gate never;
        cudaStream_t compute = nullptr;
        (void)cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking);
        (void)cudaLaunchHostFunc(compute, &Gate::hold, &never);
        c->set_compute_stream(compute);
        (void)c->start_all_gather(in.data(), out.data(), 4096);
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));
        c->progress();
        std::fprintf(stderr, "progress() let a late gather pass\n");
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(kExitCommTimeout),
      "NCCL prefetch all_gather of 4096 bytes per rank did not complete after [0-9.]+ s");
}

#else  // a CUDA build without NCCL

TEST(GpuNccl, NeedsNccl) {
  GTEST_SKIP() << "NCCL test skipped: built without NCCL";
}

#endif

}  // namespace
}  // namespace peftrun::gpu_testing
