// The optimizer-side kernels against the CPU: AdamW over the flat fp32 buffer bit for bit (the
// shared adamw_element with individually rounded operations), the gradient-norm sum of squares,
// and the non-finite detector of fp16 loss scaling / --debug in every storage type.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/nonfinite.h"
#include "tests/gpu/adapter_parity_support.h"

namespace peftrun::gpu_testing {
namespace {

TEST(GpuAdamWParity, ThreeStepsAreBitIdenticalToTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  const std::size_t n = 100003;  // not a multiple of any block size
  std::vector<float> p = random_floats(n, 1), m = random_floats(n, 2, 0.01f);
  std::vector<float> v = random_floats(n, 3, 1e-4f);
  for (float& x : v) x = std::fabs(x);
  cuda::DeviceBuffer<float> dp = to_device(p), dm = to_device(m), dv = to_device(v);
  for (long step = 1; step <= 3; ++step) {
    const std::vector<float> g = random_floats(n, 10 + step, step == 2 ? 1e-6f : 1.0f);
    cuda::DeviceBuffer<float> dg = to_device(g);
    AdamWHyper h;
    h.lr = 3e-3;
    h.weight_decay = step == 3 ? 0.0 : 0.01;
    h.step = step;
    h.grad_scale = step == 2 ? 0.25 : 1.0;  // clipping / loss-scale undo
    cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, h);
    cuda::adamw_step(dp.data(), dg.data(), dm.data(), dv.data(), n, h, nullptr);
  }
  const std::vector<float> gp = to_host(dp), gm = to_host(dm), gv = to_host(dv);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < n; ++i) {
    differ += std::memcmp(&gp[i], &p[i], 4) != 0 || std::memcmp(&gm[i], &m[i], 4) != 0 ||
              std::memcmp(&gv[i], &v[i], 4) != 0;
  }
  EXPECT_EQ(differ, 0u) << "elements whose params or moments differ from the CPU's bits";
}

TEST(GpuSumSquaresParity, MatchesTheCpuDoubleSum) {
  PEFTRUN_REQUIRE_GPU();
  for (std::size_t n : {std::size_t(1), std::size_t(255), std::size_t(1000003)}) {
    const std::vector<float> x = random_floats(n, 20 + n);
    cuda::DeviceBuffer<float> dx = to_device(x);
    cuda::DeviceBuffer<double> result = poisoned<double>(1);
    cuda::DeviceBuffer<unsigned char> ws = poisoned_workspace(cuda::sum_squares_workspace_bytes(n));
    cuda::sum_squares(dx.data(), n, result.data(), ws.data(), nullptr);
    const double got = to_host(result)[0];
    const double want = cpu::sum_squares(x.data(), n);
    EXPECT_NEAR(got, want, 1e-12 * want) << "n=" << n;
    // Deterministic: the same buffer gives the same bits again.
    cuda::sum_squares(dx.data(), n, result.data(), ws.data(), nullptr);
    EXPECT_EQ(to_host(result)[0], got);
  }
}

TEST(GpuNonfiniteParity, FindsEveryInfAndNaNLikeTheCpuScan) {
  PEFTRUN_REQUIRE_GPU();
  const float inf = std::numeric_limits<float>::infinity();
  const std::size_t n = 70001;
  for (DType t : kAllTypes) {
    std::vector<float> x = random_floats(n, 30);
    DeviceTensor clean = upload_as(x, t);
    cuda::DeviceBuffer<NonfiniteReport> report(1);
    cuda::nonfinite_reset(report.data(), nullptr);
    cuda::nonfinite_scan(clean.data(), t, n, report.data(), nullptr);
    EXPECT_FALSE(to_host(report)[0].found()) << dtype_name(t);

    x[n - 1] = inf;
    x[4097] = std::nanf("");
    x[60000] = -inf;
    if (t == DType::kF16) x[5] = 1e5f;  // overflows fp16 only
    DeviceTensor dirty = upload_as(x, t);
    NonfiniteReport want;
    const std::vector<float> stored = download(dirty);
    cpu::nonfinite_scan(stored.data(), DType::kF32, n, want);
    cuda::nonfinite_reset(report.data(), nullptr);
    cuda::nonfinite_scan(dirty.data(), t, n, report.data(), nullptr);
    const NonfiniteReport got = to_host(report)[0];
    EXPECT_EQ(got.count, want.count) << dtype_name(t);
    EXPECT_EQ(got.first_index, want.first_index) << dtype_name(t);
    EXPECT_EQ(got.count, t == DType::kF16 ? 4u : 3u);

    // Scans accumulate into one report.
    cuda::nonfinite_scan(dirty.data(), t, n, report.data(), nullptr);
    EXPECT_EQ(to_host(report)[0].count, 2 * want.count);
  }
}

}  // namespace
}  // namespace peftrun::gpu_testing
