// AdaLoRA's CUDA twin against the CPU: the linear layer (A~ = E * A) forward and backward in
// double on the same rounded inputs for every activation type, the importance EMAs bit for bit
// (the shared per-element function with individually rounded operations), and the triplet
// scores of one module placed at unaligned offsets of a flat buffer.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/adalora.h"
#include "tests/gpu/adapter_parity_support.h"

namespace peftrun::gpu_testing {
namespace {

class GpuAdaLoraLinearParity : public BlasLtTest,
                               public ::testing::WithParamInterface<AdapterCase> {};

TEST_P(GpuAdaLoraLinearParity, ForwardAndBackwardMatchTheCpuTwin) {
  const AdapterCase c = GetParam();
  const AdapterInputs v = make_adapter_inputs(c, 3000 + c.n + c.in);
  const std::size_t n_in = std::size_t(c.n) * c.in, n_out = std::size_t(c.n) * c.out;
  const std::size_t n_r = std::size_t(c.n) * c.r;
  const float s = 0.75f;
  const std::vector<float> E = random_floats(c.r, 90);
  const std::vector<float> dA0 = random_floats(std::size_t(c.r) * c.in, 91);
  const std::vector<float> dB0 = random_floats(std::size_t(c.out) * c.r, 92);
  const std::vector<float> dE0 = random_floats(c.r, 93);

  const std::vector<double> x = to_double(v.x), W = to_double(v.W), bias = to_double(v.bias),
                            A = to_double(v.A), B = to_double(v.B), dy = to_double(v.dy),
                            Ed = to_double(E);
  std::vector<double> y_ref(n_out), xa_ref(n_r), xd_ref(n_in), dx_ref(n_in);
  std::vector<double> work(cpu::adalora_linear_workspace(c.n, c.in, c.r));
  std::vector<double> dA_ref = to_double(dA0), dB_ref = to_double(dB0), dE_ref = to_double(dE0);
  cpu::AdaLoraLinearArgs<double> ra;
  ra.lora = {c.n,
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
  ra.E = Ed.data();
  ra.work = work.data();
  cpu::adalora_linear_forward(ra, x.data(), y_ref.data());
  cpu::adalora_linear_backward(ra, x.data(), dy.data(), dx_ref.data(), dA_ref.data(), dE_ref.data(),
                               dB_ref.data());

  DeviceTensor dx_in = upload_as(v.x, c.act), dW = upload_as(v.W, c.act);
  DeviceTensor d_bias = upload_as(v.bias, c.act), d_dy = upload_as(v.dy, c.act);
  cuda::DeviceBuffer<float> dAp = to_device(v.A), dBp = to_device(v.B), dEp = to_device(E);
  cuda::DeviceBuffer<std::uint8_t> keep = upload_mask(v.keep);
  DeviceTensor y = poisoned_as(n_out, c.act), xa = poisoned_as(n_r, c.act);
  DeviceTensor x_drop = poisoned_as(n_in, c.act), dx = poisoned_as(n_in, c.act);
  cuda::DeviceBuffer<unsigned char> ws =
      poisoned_workspace(cuda::adalora_linear_workspace_bytes(c.n, c.in, c.out, c.r, c.act));
  cuda::DeviceBuffer<float> dA = to_device(dA0), dB = to_device(dB0), dE = to_device(dE0);

  cuda::AdaLoraLinearArgs a;
  a.lora.n = c.n;
  a.lora.in = c.in;
  a.lora.out = c.out;
  a.lora.r = c.r;
  a.lora.scale = s;
  a.lora.act = c.act;
  a.lora.W = dW.data();
  a.lora.bias = c.bias ? d_bias.data() : nullptr;
  a.lora.A = dAp.data();
  a.lora.B = dBp.data();
  a.lora.keep = c.dropout ? keep.data() : nullptr;
  a.lora.keep_scale = v.keep_scale;
  a.lora.x_drop = x_drop.data();
  a.lora.xa = xa.data();
  a.E = dEp.data();
  a.work = ws.data();
  cuda::adalora_linear_forward(lt(), a, dx_in.data(), y.data(), nullptr);
  const double tol = tolerance(c.act);
  EXPECT_LT(rel_error(download(y), y_ref), tol);
  EXPECT_LT(rel_error(download(xa), xa_ref), tol);

  cuda::device_memset(ws.data(), 0xFF, ws.size());
  cuda::adalora_linear_backward(lt(), a, dx_in.data(), d_dy.data(), dx.data(), dA.data(), dE.data(),
                                dB.data(), nullptr);
  EXPECT_LT(rel_error(download(dx), dx_ref), tol);
  EXPECT_LT(rel_error(increment(to_host(dA), dA0), increment(dA_ref, dA0)), tol);
  EXPECT_LT(rel_error(increment(to_host(dB), dB0), increment(dB_ref, dB0)), tol);
  EXPECT_LT(rel_error(increment(to_host(dE), dE0), increment(dE_ref, dE0)), tol);
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuAdaLoraLinearParity, ::testing::ValuesIn(adapter_cases()),
                         adapter_case_name);

std::vector<float> positive_floats(std::size_t n, std::uint64_t seed) {
  std::vector<float> v = random_floats(n, seed);
  for (float& x : v) x = std::fabs(x);
  return v;
}

TEST(GpuAdaLoraParity, ImportanceEmasAreBitIdenticalToTheCpu) {
  PEFTRUN_REQUIRE_GPU();
  const std::size_t n = 100003;
  const std::vector<float> p = random_floats(n, 1), g = random_floats(n, 2, 1e-3f);
  std::vector<float> ipt = positive_floats(n, 3), unc = positive_floats(n, 4);
  cuda::DeviceBuffer<float> dp = to_device(p), dg = to_device(g);
  cuda::DeviceBuffer<float> dipt = to_device(ipt), dunc = to_device(unc);
  for (double grad_scale : {1.0, 0.37, 1.0}) {
    cpu::adalora_update_importance(p.data(), g.data(), ipt.data(), unc.data(), n, 0.85, 0.95,
                                   grad_scale);
    cuda::adalora_update_importance(dp.data(), dg.data(), dipt.data(), dunc.data(), n, 0.85, 0.95,
                                    grad_scale, nullptr);
  }
  const std::vector<float> gi = to_host(dipt), gu = to_host(dunc);
  EXPECT_EQ(std::memcmp(gi.data(), ipt.data(), n * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(gu.data(), unc.data(), n * sizeof(float)), 0);
}

TEST(GpuAdaLoraParity, TripletScoresOfAModuleInAFlatBuffer) {
  PEFTRUN_REQUIRE_GPU();
  const int r = 12, in = 127, out = 65;
  AdaLoraModuleView m;
  m.a = 17;  // odd offsets: nothing is aligned
  m.b = m.a + std::size_t(r) * in + 5;
  m.e = m.b + std::size_t(out) * r + 3;
  m.r = r;
  m.in = in;
  m.out = out;
  const std::size_t total = m.e + r + 11;
  const std::vector<float> ipt = positive_floats(total, 5), unc = positive_floats(total, 6);
  std::vector<float> ref(r);
  cpu::adalora_triplet_scores(ipt.data(), unc.data(), m, ref.data());
  cuda::DeviceBuffer<float> dipt = to_device(ipt), dunc = to_device(unc);
  cuda::DeviceBuffer<float> scores = poisoned<float>(r);
  cuda::adalora_triplet_scores(dipt.data(), dunc.data(), m, scores.data(), nullptr);
  const std::vector<float> got = to_host(scores);
  // The double sums are added in another order on the device; after rounding the means to
  // fp32 the scores agree to the last bit or within one ulp.
  EXPECT_LT(rel_error(got, ref), 1e-6);
  int equal = 0;
  for (int k = 0; k < r; ++k) equal += got[k] == ref[k];
  std::cout << "[ triplet scores ] " << equal << " of " << r << " bit-identical" << std::endl;
}

}  // namespace
}  // namespace peftrun::gpu_testing
