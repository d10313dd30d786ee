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
  const std::size_t n_in = std::size_t(c.n) * c.in, n_out = std::size_t(c.n) * c.out;
  const float s = 2.0f;
  const std::vector<float> dA0 = random_floats(std::size_t(c.r) * c.in, 71);
  const std::vector<float> dB0 = random_floats(std::size_t(c.out) * c.r, 72);

  // CPU twin in double.
  const std::vector<double> x = to_double(v.x), W = to_double(v.W), bias = to_double(v.bias),
                            A = to_double(v.A), B = to_double(v.B), dy = to_double(v.dy);
  std::vector<double> y_ref(n_out), xa_ref(std::size_t(c.n) * c.r), xd_ref(n_in), dx_ref(n_in),
      dxa_ref(std::size_t(c.n) * c.r);
  std::vector<double> dA_ref = to_double(dA0), dB_ref = to_double(dB0);
  cpu::LoraLinearArgs<double> ra{c.n,
                                 c.in,
                                 c.out,
                                 c.r,
                                 s,
                                 W.data(),
                                 c.bias ? bias.data() : nullptr,
                                 A.data(),
                                 B.data(),
                                 c.dropout ? v.keep.data() : nullptr,
                                 v.keep_scale,
                                 xd_ref.data(),
                                 xa_ref.data()};
  cpu::lora_linear_forward(ra, x.data(), y_ref.data());
  cpu::lora_linear_backward(ra, x.data(), dy.data(), dx_ref.data(), dA_ref.data(), dB_ref.data(),
                            dxa_ref.data());

  // GPU.
  DeviceTensor dx_in = upload_as(v.x, c.act), dW = upload_as(v.W, c.act);
  DeviceTensor d_bias = upload_as(v.bias, c.act), d_dy = upload_as(v.dy, c.act);
  cuda::DeviceBuffer<float> dAp = to_device(v.A), dBp = to_device(v.B);
  cuda::DeviceBuffer<std::uint8_t> keep = upload_mask(v.keep);
  DeviceTensor y = poisoned_as(n_out, c.act), xa = poisoned_as(std::size_t(c.n) * c.r, c.act);
  DeviceTensor x_drop = poisoned_as(n_in, c.act), dx = poisoned_as(n_in, c.act);
  cuda::DeviceBuffer<unsigned char> work =
      poisoned_workspace(cuda::lora_linear_workspace_bytes(c.n, c.in, c.out, c.r, c.act));
  cuda::DeviceBuffer<float> dA = to_device(dA0), dB = to_device(dB0);

  cuda::LoraLinearArgs a;
  a.n = c.n;
  a.in = c.in;
  a.out = c.out;
  a.r = c.r;
  a.scale = s;
  a.act = c.act;
  a.W = dW.data();
  a.bias = c.bias ? d_bias.data() : nullptr;
  a.A = dAp.data();
  a.B = dBp.data();
  a.keep = c.dropout ? keep.data() : nullptr;
  a.keep_scale = v.keep_scale;
  a.x_drop = x_drop.data();
  a.xa = xa.data();
  a.work = work.data();
  cuda::lora_linear_forward(lt(), a, dx_in.data(), y.data(), nullptr);
  const double tol = tolerance(c.act);
  EXPECT_LT(rel_error(download(y), y_ref), tol);
  EXPECT_LT(rel_error(download(xa), xa_ref), tol);
  if (c.dropout) {
    EXPECT_LT(rel_error(download(x_drop), xd_ref), tol);
  }

  // The workspace may have served other layers in between: poison it again.
  cuda::device_memset(work.data(), 0xFF, work.size());
  cuda::lora_linear_backward(lt(), a, dx_in.data(), d_dy.data(), dx.data(), dA.data(), dB.data(),
                             nullptr);
  EXPECT_LT(rel_error(download(dx), dx_ref), tol);
  EXPECT_LT(rel_error(increment(to_host(dA), dA0), increment(dA_ref, dA0)), tol);
  EXPECT_LT(rel_error(increment(to_host(dB), dB0), increment(dB_ref, dB0)), tol);

  // dx = nullptr: only the adapter gradients (accumulate once more).
  cuda::lora_linear_backward(lt(), a, dx_in.data(), d_dy.data(), nullptr, dA.data(), dB.data(),
                             nullptr);
  std::vector<double> twice = increment(dA_ref, dA0);
  for (double& d : twice) d *= 2.0;
  EXPECT_LT(rel_error(increment(to_host(dA), dA0), twice), tol);
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuLoraLinearParity, ::testing::ValuesIn(adapter_cases()),
                         adapter_case_name);

}  // namespace
}  // namespace peftrun::gpu_testing
