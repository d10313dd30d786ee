// The device memory API (kernels/cuda_memory.h) round-trips bytes exactly and reports bad
// allocations as errors, not crashes.
#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

#include "tests/gpu/gpu_test_support.h"

namespace peftrun::gpu_testing {
namespace {

TEST(GpuDeviceMemory, HostDeviceRoundTripIsExact) {
  PEFTRUN_REQUIRE_GPU();
  const std::vector<float> host = random_floats(10007, 1);
  cuda::DeviceBuffer<float> d = to_device(host);
  cuda::DeviceBuffer<float> copy = poisoned<float>(host.size());
  cuda::copy_device_to_device(copy.data(), d.data(), d.bytes());
  EXPECT_EQ(to_host(copy), host);
}

TEST(GpuDeviceMemory, ImpossibleAllocationThrowsNamingTheSize) {
  PEFTRUN_REQUIRE_GPU();
  try {
    cuda::DeviceBuffer<char> huge(std::size_t(1) << 60);
    FAIL() << "a 2^60-byte allocation succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("1152921504606846976"), std::string::npos) << e.what();
  }
}

TEST(GpuDeviceMemory, PoisonedBufferFailsTheComparison) {
  PEFTRUN_REQUIRE_GPU();
  const std::vector<float> ref = random_floats(64, 2);
  EXPECT_EQ(rel_error(to_host(poisoned<float>(64)), ref), INFINITY);
}

}  // namespace
}  // namespace peftrun::gpu_testing
