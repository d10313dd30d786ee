// The cuBLASLt context on a machine without a usable GPU (our CI): constructing it must fail
// with a clear "no CUDA device" error, not crash or hang. On a GPU machine (or a build without
// the CUDA backend) there is nothing to check here and the test says so.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "kernels/blaslt.h"
#include "kernels/device.h"

namespace peftrun {
namespace {

TEST(BlasLtContext, WithoutADeviceConstructionFailsClearly) {
#if defined(PEFTRUN_WITH_CUDA)
  const DeviceInventory inv = query_devices();
  if (inv.cuda_devices > 0) GTEST_SKIP() << "a CUDA device is present: the GPU suite covers it";
  try {
    cuda::BlasLt lt(nullptr, 0);
    FAIL() << "BlasLt was created without a device";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA device"), std::string::npos) << e.what();
  }
#else
  GTEST_SKIP() << "built without the CUDA backend";
#endif
}

}  // namespace
}  // namespace peftrun
