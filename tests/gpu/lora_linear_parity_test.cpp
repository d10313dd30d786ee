// cuda::lora_linear_forward / _backward against cpu::lora_linear_* in double on the same rounded
// inputs and the same dropout mask, for fp32 / fp16 / bf16 activations, with and without bias
// and dropout, odd shapes. Outputs and workspaces are poisoned; dA / dB start non-zero and the
// accumulated increments are compared.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kernels/lora_linear.h"
#include "tests/gpu/adapter_parity_support.h"

namespace peftrun::gpu_testing {
namespace {

class GpuLoraLinearParity : public BlasLtTest, public ::testing::WithParamInterface<AdapterCase> {};

TEST_P(GpuLoraLinearParity, ForwardAndBackwardMatchTheCpuTwin) {
  const AdapterCase c = GetParam();
  const AdapterInputs v = make_adapter_inputs(c, 1000 + c.n + c.in);
  const float s = 2.0f;
  const std::vector<float> dA0 = random_floats(std::size_t(c.r) * c.in, 71);
  const std::vector<float> dB0 = random_floats(std::size_t(c.out) * c.r, 72);

  AdapterHost h(c, v);
  std::vector<double> dA_ref = to_double(dA0), dB_ref = to_double(dB0);
  std::vector<double> dxa_ref(std::size_t(c.n) * c.r);
  const cpu::LoraLinearArgs<double> ra = h.lora(s);
  cpu::lora_linear_forward(ra, h.x.data(), h.y.data());
  cpu::lora_linear_backward(ra, h.x.data(), h.dy.data(), h.dx.data(), dA_ref.data(), dB_ref.data(),
                            dxa_ref.data());

  AdapterDevice d(c, v);
  cuda::DeviceBuffer<unsigned char> work =
      poisoned_workspace(cuda::lora_linear_workspace_bytes(c.n, c.in, c.out, c.r, c.act));
  cuda::DeviceBuffer<float> dA = to_device(dA0), dB = to_device(dB0);
  cuda::LoraLinearArgs a = d.lora(s);
  a.work = work.data();
  cuda::lora_linear_forward(lt(), a, d.x.data(), d.y.data(), nullptr);
  const double tol = tolerance(c.act);
  EXPECT_LT(rel_error(download(d.y), h.y), tol);
  EXPECT_LT(rel_error(download(d.xa), h.xa), tol);
  if (c.dropout) {
    EXPECT_LT(rel_error(download(d.x_drop), h.x_drop), tol);
  }

  // The workspace may have served other layers in between: poison it again.
  cuda::device_memset(work.data(), 0xFF, work.size());
  cuda::lora_linear_backward(lt(), a, d.x.data(), d.dy.data(), d.dx.data(), dA.data(), dB.data(),
                             nullptr);
  EXPECT_LT(rel_error(download(d.dx), h.dx), tol);
  EXPECT_LT(rel_error(increment(to_host(dA), dA0), increment(dA_ref, dA0)), tol);
  EXPECT_LT(rel_error(increment(to_host(dB), dB0), increment(dB_ref, dB0)), tol);

  // dx = nullptr: only the adapter gradients (accumulate once more).
  cuda::lora_linear_backward(lt(), a, d.x.data(), d.dy.data(), nullptr, dA.data(), dB.data(),
                             nullptr);
  std::vector<double> twice = increment(dA_ref, dA0);
  for (double& x : twice) x *= 2.0;
  EXPECT_LT(rel_error(increment(to_host(dA), dA0), twice), tol);
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuLoraLinearParity, ::testing::ValuesIn(adapter_cases()),
                         adapter_case_name);

}  // namespace
}  // namespace peftrun::gpu_testing
