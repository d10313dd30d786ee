// What the emulated device (PEFTRUN_CUDA=EMULATE, kernels/emulated/) adds to the checks of the
// block emulator, shown on purpose-made mistakes that a GPU would fault on: a host pointer
// handed to a kernel, to a copy's device side or to a matmul is refused with the op named;
// fresh device memory reads as NaN; freed device memory is never handed out again. Skipped in
// every other build (on a GPU these mistakes crash the context instead of failing a test).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/blaslt.h"
#include "kernels/cuda_memory.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace peftrun {
namespace {

#if PEFTRUN_CUDA_EMULATION
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

#define PEFTRUN_REQUIRE_EMULATED_DEVICE() \
  if (!kEmulated) GTEST_SKIP() << "only on the emulated device (PEFTRUN_CUDA=EMULATE)"

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(EmulatedDevice, AKernelGivenAHostPointerIsRefusedByName) {
  PEFTRUN_REQUIRE_EMULATED_DEVICE();
  cuda::DeviceBuffer<float> y(64);
  cuda::device_memset(y.data(), 0, y.bytes());
  std::vector<float> host(64, 1.0f);
  const std::string e = error_of(
      [&] { cuda::add_inplace(y.data(), host.data(), host.size(), DType::kF32, nullptr); });
  EXPECT_NE(e.find("add_inplace"), std::string::npos) << e;
  EXPECT_NE(e.find("not device memory"), std::string::npos) << e;
  // The same call on device memory runs.
  cuda::DeviceBuffer<float> x(64);
  x.upload(host.data());
  cuda::add_inplace(y.data(), x.data(), 64, DType::kF32, nullptr);
  std::vector<float> out(64);
  y.download(out.data());
  EXPECT_EQ(out, host);
}

TEST(EmulatedDevice, ACopyWhoseDeviceSideIsHostMemoryIsRefused) {
  PEFTRUN_REQUIRE_EMULATED_DEVICE();
  std::vector<float> a(8, 1.0f), b(8);
  cuda::DeviceBuffer<float> d(8);
  const std::string h2d = error_of([&] { cuda::copy_host_to_device(b.data(), a.data(), 32); });
  EXPECT_NE(h2d.find("host to device"), std::string::npos) << h2d;
  EXPECT_NE(h2d.find("destination"), std::string::npos) << h2d;
  const std::string d2h = error_of([&] { cuda::copy_device_to_host(b.data(), a.data(), 32); });
  EXPECT_NE(d2h.find("source"), std::string::npos) << d2h;
  // A memset of host memory is refused too; a copy into device memory runs.
  EXPECT_FALSE(error_of([&] { cuda::device_memset(a.data(), 0, 32); }).empty());
  EXPECT_TRUE(error_of([&] { cuda::copy_host_to_device(d.data(), a.data(), 32); }).empty());
}

TEST(EmulatedDevice, AMatmulWithAHostOperandIsRefused) {
  PEFTRUN_REQUIRE_EMULATED_DEVICE();
  cuda::DeviceBuffer<unsigned char> workspace(1 << 16);
  cuda::BlasLt lt(workspace.data(), workspace.size());
  cuda::DeviceBuffer<float> A(4 * 3), D(4 * 5);
  std::vector<float> B_host(3 * 5, 0.5f);
  const cuda::GemmArgs g = cuda::make_gemm(Trans::kNo, Trans::kNo, 4, 5, 3, A.data(), 3,
                                           B_host.data(), 5, DType::kF32, D.data(), 5, DType::kF32);
  const std::string e = error_of([&] { cuda::gemm(lt, g, nullptr); });
  EXPECT_NE(e.find("B is not device memory"), std::string::npos) << e;
}

TEST(EmulatedDevice, FreshMemoryIsNaNAndFreedMemoryIsNotReused) {
  PEFTRUN_REQUIRE_EMULATED_DEVICE();
  std::uintptr_t first = 0;
  {
    cuda::DeviceBuffer<float> d(1000);
    std::vector<float> v(1000, 0.0f);
    d.download(v.data());
    for (float x : v) ASSERT_TRUE(std::isnan(x));
    first = reinterpret_cast<std::uintptr_t>(d.data());
    EXPECT_EQ(first % 256, 0u);
  }
  cuda::DeviceBuffer<float> again(1000);
  EXPECT_NE(reinterpret_cast<std::uintptr_t>(again.data()), first);
}

}  // namespace
}  // namespace peftrun
