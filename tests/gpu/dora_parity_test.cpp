// DoRA's CUDA twin against cpu::row_sq_norms / dora_weight_norm / dora_linear_* in double on the
// same rounded inputs: the row norms for every weight type, the rank-r norm identity, and the
// linear layer forward and backward in both of PEFT's forms (with and without dropout), for
// fp32 / fp16 / bf16 activations. Which path the alpha-vector matmuls took (cuBLASLt's alpha
// vector or the fused fallback) is printed by the fixture. GpuDoraKernelParity runs the cases of
// dora_cases.h (each non-matmul kernel on host-computed products), which
// tests/emulated_adapter_kernels_test.cpp also runs in the CPU block emulator.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kernels/dora.h"
#include "tests/gpu/adapter_parity_support.h"
#include "tests/gpu/dora_cases.h"
#include "tests/gpu/gpu_env.h"

namespace peftrun::gpu_testing {
namespace {

class GpuDoraParity : public BlasLtTest {};

TEST_F(GpuDoraParity, RowSquaredNormsForEveryWeightType) {
  const int out = 65, in = 127;
  for (DType t : kAllTypes) {
    const std::vector<float> W = round_to(random_floats(std::size_t(out) * in, 5, 0.3f), t);
    const std::vector<double> Wd = to_double(W);
    std::vector<double> ref(out);
    cpu::row_sq_norms(Wd.data(), out, in, ref.data());
    DeviceTensor dW = upload_as(W, t);
    cuda::DeviceBuffer<float> w_sq = poisoned<float>(out);
    cuda::row_sq_norms(dW.data(), t, out, in, w_sq.data(), nullptr);
    EXPECT_LT(rel_error(to_host(w_sq), ref), 1e-6) << dtype_name(t);
  }
}

TEST_F(GpuDoraParity, WeightNormByTheRankRIdentity) {
  const int shapes[][3] = {{65, 127, 8}, {7, 33, 3}, {128, 64, 16}};
  for (const auto& sh : shapes) {
    const int out = sh[0], in = sh[1], r = sh[2];
    const float s = 1.5f;
    for (DType t : kAllTypes) {
      const std::vector<float> W = round_to(random_floats(std::size_t(out) * in, 6, 0.3f), t);
      const std::vector<float> A = random_floats(std::size_t(r) * in, 7, 0.3f);
      const std::vector<float> B = random_floats(std::size_t(out) * r, 8, 0.5f);
      const std::vector<double> Wd = to_double(W), Ad = to_double(A), Bd = to_double(B);
      std::vector<double> w_sq(out), ref(out), work(cpu::dora_norm_workspace(out, r));
      cpu::row_sq_norms(Wd.data(), out, in, w_sq.data());
      cpu::dora_weight_norm(Wd.data(), w_sq.data(), Ad.data(), Bd.data(), out, in, r, double(s),
                            ref.data(), work.data());

      DeviceTensor dW = upload_as(W, t);
      cuda::DeviceBuffer<float> dA = to_device(A), dB = to_device(B);
      cuda::DeviceBuffer<float> d_wsq = poisoned<float>(out), norm = poisoned<float>(out);
      cuda::DeviceBuffer<unsigned char> ws =
          poisoned_workspace(cuda::dora_norm_workspace_bytes(out, in, r, t));
      cuda::row_sq_norms(dW.data(), t, out, in, d_wsq.data(), nullptr);
      cuda::dora_weight_norm(lt(), dW.data(), t, d_wsq.data(), dA.data(), dB.data(), out, in, r, s,
                             norm.data(), ws.data(), nullptr);
      // fp32 weights: exact inputs; 16-bit weights: A is rounded to W's type for P = W A^T.
      EXPECT_LT(rel_error(to_host(norm), ref), tolerance(t))
          << dtype_name(t) << " out=" << out << " in=" << in << " r=" << r;
    }
  }
}

class GpuDoraLinearParity : public BlasLtTest, public ::testing::WithParamInterface<AdapterCase> {};

TEST_P(GpuDoraLinearParity, ForwardAndBackwardMatchTheCpuTwin) {
  const AdapterCase c = GetParam();
  const AdapterInputs v = make_adapter_inputs(c, 2000 + c.n + c.in);
  const double s = 1.5;
  AdapterHost h(c, v);

  // n from the CPU identity; m = n * U(0.5, 1.5) so that g = m / n is not 1.
  std::vector<double> w_sq(c.out), norm_d(c.out), nwork(cpu::dora_norm_workspace(c.out, c.r));
  cpu::row_sq_norms(h.W.data(), c.out, c.in, w_sq.data());
  cpu::dora_weight_norm(h.W.data(), w_sq.data(), h.A.data(), h.B.data(), c.out, c.in, c.r, s,
                        norm_d.data(), nwork.data());
  std::vector<float> norm(c.out), m(c.out);
  const std::vector<float> wiggle = random_floats(c.out, 9, 0.5f);
  for (int j = 0; j < c.out; ++j) {
    norm[j] = static_cast<float>(norm_d[j]);
    m[j] = norm[j] * (1.0f + wiggle[j]);
  }
  const std::vector<double> norm_ref = to_double(norm), m_ref = to_double(m);
  const std::vector<float> dA0 = random_floats(std::size_t(c.r) * c.in, 81);
  const std::vector<float> dB0 = random_floats(std::size_t(c.out) * c.r, 82);
  const std::vector<float> dm0 = random_floats(c.out, 83);

  // CPU twin in double.
  std::vector<double> z(std::size_t(c.n) * c.out),
      work(cpu::dora_linear_workspace(c.n, c.out, c.r));
  std::vector<double> dA_ref = to_double(dA0), dB_ref = to_double(dB0), dm_ref = to_double(dm0);
  cpu::DoraLinearArgs<double> ra;
  ra.lora = h.lora(s);
  ra.magnitude = m_ref.data();
  ra.weight_norm = norm_ref.data();
  ra.z = z.data();
  ra.work = work.data();
  cpu::dora_linear_forward(ra, h.x.data(), h.y.data());
  cpu::dora_linear_backward(ra, h.x.data(), h.dy.data(), h.dx.data(), dA_ref.data(), dB_ref.data(),
                            dm_ref.data());

  // GPU.
  AdapterDevice d(c, v);
  cuda::DeviceBuffer<float> d_m = to_device(m), d_norm = to_device(norm);
  DeviceTensor saved_v = poisoned_as(std::size_t(c.n) * c.out, c.act);
  cuda::DeviceBuffer<unsigned char> ws = poisoned_workspace(
      cuda::dora_linear_workspace_bytes(c.n, c.in, c.out, c.r, c.act, c.dropout));
  cuda::DeviceBuffer<float> dA = to_device(dA0), dB = to_device(dB0), dm = to_device(dm0);
  cuda::DoraLinearArgs a;
  a.lora = d.lora(static_cast<float>(s));
  a.magnitude = d_m.data();
  a.weight_norm = d_norm.data();
  a.v = saved_v.data();
  a.work = ws.data();
  cuda::dora_linear_forward(lt(), a, d.x.data(), d.y.data(), nullptr);
  const double tol = tolerance(c.act);
  EXPECT_LT(rel_error(download(d.y), h.y), tol);
  EXPECT_LT(rel_error(download(d.xa), h.xa), tol);

  cuda::device_memset(ws.data(), 0xFF, ws.size());
  cuda::dora_linear_backward(lt(), a, d.x.data(), d.dy.data(), d.dx.data(), dA.data(), dB.data(),
                             dm.data(), nullptr);
  EXPECT_LT(rel_error(download(d.dx), h.dx), tol);
  EXPECT_LT(rel_error(increment(to_host(dA), dA0), increment(dA_ref, dA0)), tol);
  EXPECT_LT(rel_error(increment(to_host(dB), dB0), increment(dB_ref, dB0)), tol);
  EXPECT_LT(rel_error(increment(to_host(dm), dm0), increment(dm_ref, dm0)), tol);
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuDoraLinearParity, ::testing::ValuesIn(adapter_cases()),
                         adapter_case_name);

// What the parity bound above cannot see: DoRA starts at g = m / n = 1 and AdamW moves m by ~lr
// per step, so early in training g - 1 is ~1e-3, below half a bf16 ulp. Scaling an already
// rounded 16-bit product by such a g rounds every element back to itself, and g is lost; the
// relative error that costs (1e-3) sits well inside tolerance(bf16). So here the CHANGE that
// g = 1 + 1e-3 makes against g = 1 is compared with the CPU twin's change: projected onto it,
// the device's change must be the same to 15%. Element-wise the change is no larger than one
// rounding of y, but the projection averages over all n * out elements.
class GpuDoraSmallFactor : public BlasLtTest, public ::testing::WithParamInterface<AdapterCase> {};

TEST_P(GpuDoraSmallFactor, AFactorNearOneIsNotRoundedAway) {
  const AdapterCase c = GetParam();
  // B small, as early in training (LoRA's B starts at 0): then the base product x W^T carries
  // most of the change, which is where the factor could be lost.
  AdapterInputs v = make_adapter_inputs(c, 3000 + c.n + c.in);
  for (float& b : v.B) b *= 0.01f;
  const double s = 1.5, eps = 1e-3;
  AdapterHost h(c, v);
  std::vector<double> w_sq(c.out), norm_d(c.out), nwork(cpu::dora_norm_workspace(c.out, c.r));
  cpu::row_sq_norms(h.W.data(), c.out, c.in, w_sq.data());
  cpu::dora_weight_norm(h.W.data(), w_sq.data(), h.A.data(), h.B.data(), c.out, c.in, c.r, s,
                        norm_d.data(), nwork.data());
  const std::vector<float> norm = to_floats(norm_d);
  const std::vector<double> norm_ref = to_double(norm);

  // y and dx for magnitudes m = norm * factor, on the CPU twin (double) and on the device.
  struct Outputs {
    std::vector<double> y, dx;
  };
  auto cpu_run = [&](float factor) {
    std::vector<double> m(c.out);
    for (int j = 0; j < c.out; ++j) m[j] = static_cast<double>(norm[j] * factor);
    std::vector<double> z(std::size_t(c.n) * c.out),
        work(cpu::dora_linear_workspace(c.n, c.out, c.r));
    std::vector<double> dA(std::size_t(c.r) * c.in), dB(std::size_t(c.out) * c.r), dm(c.out);
    cpu::DoraLinearArgs<double> ra;
    ra.lora = h.lora(s);
    ra.magnitude = m.data();
    ra.weight_norm = norm_ref.data();
    ra.z = z.data();
    ra.work = work.data();
    cpu::dora_linear_forward(ra, h.x.data(), h.y.data());
    cpu::dora_linear_backward(ra, h.x.data(), h.dy.data(), h.dx.data(), dA.data(), dB.data(),
                              dm.data());
    return Outputs{h.y, h.dx};
  };
  auto device_run = [&](float factor) {
    std::vector<float> m(c.out);
    for (int j = 0; j < c.out; ++j) m[j] = norm[j] * factor;
    AdapterDevice d(c, v);
    cuda::DeviceBuffer<float> d_m = to_device(m), d_norm = to_device(norm);
    DeviceTensor saved_v = poisoned_as(std::size_t(c.n) * c.out, c.act);
    cuda::DeviceBuffer<unsigned char> ws = poisoned_workspace(
        cuda::dora_linear_workspace_bytes(c.n, c.in, c.out, c.r, c.act, c.dropout));
    cuda::DeviceBuffer<float> dA = to_device(std::vector<float>(std::size_t(c.r) * c.in, 0.0f));
    cuda::DeviceBuffer<float> dB = to_device(std::vector<float>(std::size_t(c.out) * c.r, 0.0f));
    cuda::DeviceBuffer<float> dm = to_device(std::vector<float>(c.out, 0.0f));
    cuda::DoraLinearArgs a;
    a.lora = d.lora(static_cast<float>(s));
    a.magnitude = d_m.data();
    a.weight_norm = d_norm.data();
    a.v = saved_v.data();
    a.work = ws.data();
    cuda::dora_linear_forward(lt(), a, d.x.data(), d.y.data(), nullptr);
    cuda::dora_linear_backward(lt(), a, d.x.data(), d.dy.data(), d.dx.data(), dA.data(), dB.data(),
                               dm.data(), nullptr);
    return Outputs{to_double(download(d.y)), to_double(download(d.dx))};
  };
  // <got, want> / <want, want>: 1 when the device's change has the CPU's size and direction.
  auto projection = [](const std::vector<double>& got1, const std::vector<double>& got0,
                       const std::vector<double>& want1, const std::vector<double>& want0) {
    double dot = 0.0, norm2 = 0.0;
    for (std::size_t i = 0; i < got1.size(); ++i) {
      const double want = want1[i] - want0[i];
      dot += (got1[i] - got0[i]) * want;
      norm2 += want * want;
    }
    return dot / norm2;
  };
  const Outputs ref0 = cpu_run(1.0f), ref1 = cpu_run(static_cast<float>(1.0 + eps));
  const Outputs got0 = device_run(1.0f), got1 = device_run(static_cast<float>(1.0 + eps));
  const double py = projection(got1.y, got0.y, ref1.y, ref0.y);
  const double pdx = projection(got1.dx, got0.dx, ref1.dx, ref0.dx);
  // dx is printed, not checked: dy * g is rounded to the storage type before dy (g W)'s
  // product, as PEFT's autograd rounds it in bf16, so there the base path loses g too.
  std::cout << "[ small g ] " << adapter_case_name(::testing::TestParamInfo<AdapterCase>(c, 0))
            << ": change of y " << py << ", change of dx " << pdx << " of the CPU twin's"
            << std::endl;
  EXPECT_NEAR(py, 1.0, 0.15) << "y: g = 1 + 1e-3 did not change y as it should";
}

// Shapes large enough for the projection to average over thousands of elements, with and
// without dropout, in every activation type.
std::vector<AdapterCase> small_factor_cases() {
  std::vector<AdapterCase> cases;
  for (DType t : kAllTypes) {
    cases.push_back({t, 127, 127, 65, 16, false, false});
    cases.push_back({t, 96, 64, 96, 8, true, true});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuDoraSmallFactor, ::testing::ValuesIn(small_factor_cases()),
                         adapter_case_name);

TEST(GpuDoraKernelParity, RowSqNormsEveryWeightType) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const RowSqCase& c : kRowSqCases) {
    for (const DType t : kAllDTypes) check_dora_row_sq_norms(env, c, t);
  }
}

TEST(GpuDoraKernelParity, NormRowsRankRIdentity) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const NormCase& c : kNormCases) {
    for (const DType t : kAllDTypes) check_dora_norm_rows(env, c, t);
  }
}

TEST(GpuDoraKernelParity, Factors) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const int out : {1, 300}) check_dora_factors(env, out);
}

TEST(GpuDoraKernelParity, DyVColumnsWithRowSplits) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const ColumnsCase& c : kColumnsCases) {
    for (const DType t : kAllDTypes) check_dora_dy_v_columns(env, c, t);
  }
}

TEST(GpuDoraKernelParity, GradRowsRowFormula) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const GradRowsCase& c : kGradRowsCases) check_dora_grad_rows(env, c);
}

TEST(GpuDoraKernelParity, BackwardRowsMatchTheCpuTwinsDefinition) {
  PEFTRUN_REQUIRE_GPU();
  GpuEnv env;
  for (const DoraBackwardCase& c : kDoraBackwardCases) {
    for (const DType t : kAllDTypes) check_dora_backward_rows(env, c, t);
  }
}

}  // namespace
}  // namespace peftrun::gpu_testing
