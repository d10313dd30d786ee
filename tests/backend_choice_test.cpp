// runtime.device / runtime.compute_dtype against the devices a process sees
// (runtime/train/backend_choice.h), with fake device inventories.
#include "runtime/train/backend_choice.h"

#include <gtest/gtest.h>

#include <string>

namespace peftrun {
namespace {

DeviceInventory no_gpu() {
  DeviceInventory d;
  d.cuda_compiled = true;
  d.note = "no usable CUDA device: CUDA driver version is insufficient";
  return d;
}
DeviceInventory one_gpu() {
  DeviceInventory d;
  d.cuda_compiled = true;
  d.cuda_devices = 1;
  return d;
}
DeviceInventory cpu_build() {
  DeviceInventory d;
  d.note = "built without CUDA";
  return d;
}
RuntimeConfig runtime(DeviceKind device, ComputeDtype dtype = ComputeDtype::kAuto) {
  RuntimeConfig r;
  r.device = device;
  r.compute_dtype = dtype;
  return r;
}

TEST(BackendChoice, AutoTakesTheGpuWhenOneIsUsableWithBf16ByDefault) {
  const BackendChoice c = choose_backend(runtime(DeviceKind::kAuto), one_gpu());
  EXPECT_TRUE(c.cuda());
  EXPECT_EQ(c.compute, DType::kBF16);
  EXPECT_FALSE(c.loss_scaling());
  EXPECT_NE(c.note.find("bf16 compute"), std::string::npos) << c.note;
}

TEST(BackendChoice, AutoFallsBackToTheCpuSayingWhy) {
  const BackendChoice c = choose_backend(runtime(DeviceKind::kAuto), no_gpu());
  EXPECT_EQ(c.device, DeviceKind::kCpu);
  EXPECT_EQ(c.compute, DType::kF32);
  EXPECT_NE(c.note.find("driver version is insufficient"), std::string::npos) << c.note;
  const BackendChoice b = choose_backend(runtime(DeviceKind::kAuto), cpu_build());
  EXPECT_EQ(b.device, DeviceKind::kCpu);
  EXPECT_NE(b.note.find("built without CUDA"), std::string::npos) << b.note;
}

TEST(BackendChoice, AutoOnTheCpuSaysA16BitComputeDtypeDoesNotApply) {
  const BackendChoice c = choose_backend(runtime(DeviceKind::kAuto, ComputeDtype::kBf16), no_gpu());
  EXPECT_EQ(c.compute, DType::kF32);
  EXPECT_NE(c.note.find("runtime.compute_dtype bf16 applies to cuda only"), std::string::npos)
      << c.note;
}

TEST(BackendChoice, CpuIsCpuEvenWithAGpu) {
  const BackendChoice c = choose_backend(runtime(DeviceKind::kCpu), one_gpu());
  EXPECT_EQ(c.device, DeviceKind::kCpu);
  EXPECT_EQ(c.compute, DType::kF32);
}

TEST(BackendChoice, CudaHonoursEachComputeDtype) {
  EXPECT_EQ(choose_backend(runtime(DeviceKind::kCuda, ComputeDtype::kFp32), one_gpu()).compute,
            DType::kF32);
  const BackendChoice f16 =
      choose_backend(runtime(DeviceKind::kCuda, ComputeDtype::kFp16), one_gpu());
  EXPECT_EQ(f16.compute, DType::kF16);
  EXPECT_TRUE(f16.loss_scaling());
  EXPECT_NE(f16.note.find("dynamic loss scaling"), std::string::npos) << f16.note;
  EXPECT_EQ(choose_backend(runtime(DeviceKind::kCuda, ComputeDtype::kBf16), one_gpu()).compute,
            DType::kBF16);
}

TEST(BackendChoice, CudaWithoutADeviceIsAClearError) {
  try {
    choose_backend(runtime(DeviceKind::kCuda), no_gpu());
    FAIL() << "expected BackendUnavailable";
  } catch (const BackendUnavailable& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("runtime.device: 'cuda' requested"), std::string::npos) << what;
    EXPECT_NE(what.find("no CUDA device is usable"), std::string::npos) << what;
    EXPECT_NE(what.find("driver version is insufficient"), std::string::npos) << what;
  }
}

TEST(BackendChoice, CudaInACpuOnlyBuildSaysRebuild) {
  try {
    choose_backend(runtime(DeviceKind::kCuda), cpu_build());
    FAIL() << "expected BackendUnavailable";
  } catch (const BackendUnavailable& e) {
    EXPECT_NE(std::string(e.what()).find("built without the CUDA backend"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace peftrun
