// Helpers of the matmul / adapter / optimizer parity tests (gemm, lora_linear, dora, adalora,
// adamw, convert, dropout): tensors of any storage DType on the device, inputs rounded to
// that type so the CPU reference sees exactly what the GPU reads, poisoned outputs and
// workspaces, and a fixture owning a BlasLt context (the per-dtype tolerance and to_double come
// from parity_support.h).
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "kernels/blaslt.h"
#include "kernels/cuda_memory.h"
#include "kernels/dropout.h"
#include "kernels/dtype.h"
#include "kernels/half.h"
#include "kernels/lora_linear.h"
#include "tests/gpu/gpu_test_support.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

inline const DType kAllTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

// The value a float becomes when stored as `t` (round to nearest even).
inline float round_to(float x, DType t) {
  if (t == DType::kF16) return half_to_float(float_to_half(x));
  if (t == DType::kBF16) return bf16_to_float(float_to_bf16(x));
  return x;
}
inline std::vector<float> round_to(const std::vector<float>& v, DType t) {
  std::vector<float> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = round_to(v[i], t);
  return r;
}

// n elements of storage type `t` on the device.
struct DeviceTensor {
  DType type = DType::kF32;
  std::size_t n = 0;
  cuda::DeviceBuffer<unsigned char> bytes;

  void* data() { return bytes.data(); }
  const void* data() const { return bytes.data(); }
};

// v encoded as `t` (rounded) and uploaded.
inline DeviceTensor upload_as(const std::vector<float>& v, DType t) {
  DeviceTensor d{t, v.size(), cuda::DeviceBuffer<unsigned char>(v.size() * dtype_size(t))};
  std::vector<unsigned char> host(d.bytes.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (t == DType::kF32) {
      std::memcpy(&host[4 * i], &v[i], 4);
    } else {
      const std::uint16_t b = t == DType::kF16 ? float_to_half(v[i]) : float_to_bf16(v[i]);
      std::memcpy(&host[2 * i], &b, 2);
    }
  }
  if (!host.empty()) d.bytes.upload(host.data());
  return d;
}

// A tensor whose every byte is 0xFF (NaN in all three types).
inline DeviceTensor poisoned_as(std::size_t n, DType t) {
  DeviceTensor d{t, n, cuda::DeviceBuffer<unsigned char>(n * dtype_size(t))};
  if (n) cuda::device_memset(d.data(), 0xFF, d.bytes.size());
  return d;
}

// Waits for the device, downloads and widens to float.
inline std::vector<float> download(const DeviceTensor& d) {
  cuda::synchronize();
  std::vector<unsigned char> host(d.bytes.size());
  if (!host.empty()) d.bytes.download(host.data());
  std::vector<float> v(d.n);
  for (std::size_t i = 0; i < d.n; ++i) {
    if (d.type == DType::kF32) {
      std::memcpy(&v[i], &host[4 * i], 4);
    } else {
      std::uint16_t b;
      std::memcpy(&b, &host[2 * i], 2);
      v[i] = d.type == DType::kF16 ? half_to_float(b) : bf16_to_float(b);
    }
  }
  return v;
}

// A poisoned scratch buffer of `bytes` (at least 1, so data() is a real device pointer).
inline cuda::DeviceBuffer<unsigned char> poisoned_workspace(std::size_t bytes) {
  cuda::DeviceBuffer<unsigned char> w(bytes ? bytes : 1);
  cuda::device_memset(w.data(), 0xFF, w.size());
  return w;
}

// One adapted linear layer's shape and options, the parameter of the adapter parity tests.
struct AdapterCase {
  DType act = DType::kF16;
  int n = 0, in = 0, out = 0, r = 0;
  bool bias = false, dropout = false;
};

// Every storage type x shapes with odd sizes (1, 7, 33, 127 rows; widths off the tile sizes).
inline std::vector<AdapterCase> adapter_cases() {
  const AdapterCase shapes[] = {{DType::kF32, 1, 7, 5, 2, true, false},
                                {DType::kF32, 7, 33, 17, 4, false, true},
                                {DType::kF32, 33, 64, 96, 8, true, true},
                                {DType::kF32, 127, 127, 65, 16, false, false}};
  std::vector<AdapterCase> cases;
  for (DType t : kAllTypes) {
    for (AdapterCase c : shapes) {
      c.act = t;
      cases.push_back(c);
    }
  }
  return cases;
}

inline std::string adapter_case_name(const ::testing::TestParamInfo<AdapterCase>& info) {
  const AdapterCase& c = info.param;
  return std::string(dtype_name(c.act)) + "_n" + std::to_string(c.n) + "_in" +
         std::to_string(c.in) + "_out" + std::to_string(c.out) + "_r" + std::to_string(c.r) +
         (c.bias ? "_bias" : "") + (c.dropout ? "_dropout" : "");
}

// Host values of one case, already rounded to what the device holds: x, dy, bias in `act`;
// W as the fp16 base staged into `act`; A, B fp32 (non-zero, unlike LoRA's B = 0 init, so
// every term is exercised). keep: the shared counter-based mask with p = 0.25 (or none).
struct AdapterInputs {
  std::vector<float> x, W, bias, A, B, dy;
  std::vector<std::uint8_t> keep;
  float keep_scale = 1.0f;
};

inline AdapterInputs make_adapter_inputs(const AdapterCase& c, std::uint64_t seed) {
  const std::size_t n = static_cast<std::size_t>(c.n), in = static_cast<std::size_t>(c.in),
                    out = static_cast<std::size_t>(c.out), r = static_cast<std::size_t>(c.r);
  AdapterInputs v;
  v.x = round_to(random_floats(n * in, seed), c.act);
  v.W = round_to(round_to(random_floats(out * in, seed + 1, 0.3f), DType::kF16), c.act);
  v.bias = round_to(random_floats(out, seed + 2), c.act);
  v.A = random_floats(r * in, seed + 3, 0.3f);
  v.B = random_floats(out * r, seed + 4, 0.5f);
  v.dy = round_to(random_floats(n * out, seed + 5), c.act);
  if (c.dropout) {
    v.keep.resize(n * in);
    cpu::dropout_keep_mask(seed * 31 + 7, 0.25f, v.keep.size(), v.keep.data());
    v.keep_scale = 1.0f / 0.75f;
  }
  return v;
}

inline cuda::DeviceBuffer<std::uint8_t> upload_mask(const std::vector<std::uint8_t>& keep) {
  cuda::DeviceBuffer<std::uint8_t> d(keep.size());
  if (!keep.empty()) d.upload(keep.data());
  return d;
}

// The CPU twin's side of one case: double copies of the inputs and the buffers forward saves.
struct AdapterHost {
  std::vector<double> x, W, bias, A, B, dy;
  std::vector<double> y, xa, x_drop, dx;
  AdapterCase c;
  const std::uint8_t* keep = nullptr;
  double keep_scale = 1.0;

  AdapterHost(const AdapterCase& cs, const AdapterInputs& v)
      : x(to_double(v.x)),
        W(to_double(v.W)),
        bias(to_double(v.bias)),
        A(to_double(v.A)),
        B(to_double(v.B)),
        dy(to_double(v.dy)),
        y(std::size_t(cs.n) * cs.out),
        xa(std::size_t(cs.n) * cs.r),
        x_drop(std::size_t(cs.n) * cs.in),
        dx(std::size_t(cs.n) * cs.in),
        c(cs),
        keep(cs.dropout ? v.keep.data() : nullptr),
        keep_scale(v.keep_scale) {}

  cpu::LoraLinearArgs<double> lora(double scale) {
    return {c.n,
            c.in,
            c.out,
            c.r,
            scale,
            W.data(),
            c.bias ? bias.data() : nullptr,
            A.data(),
            B.data(),
            keep,
            keep_scale,
            x_drop.data(),
            xa.data()};
  }
};

// The GPU's side of one case: inputs uploaded in their storage types, outputs poisoned.
struct AdapterDevice {
  AdapterCase c;
  DeviceTensor x, W, bias, dy;
  cuda::DeviceBuffer<float> A, B;
  cuda::DeviceBuffer<std::uint8_t> keep;
  float keep_scale = 1.0f;
  DeviceTensor y, xa, x_drop, dx;

  AdapterDevice(const AdapterCase& cs, const AdapterInputs& v)
      : c(cs),
        x(upload_as(v.x, cs.act)),
        W(upload_as(v.W, cs.act)),
        bias(upload_as(v.bias, cs.act)),
        dy(upload_as(v.dy, cs.act)),
        A(to_device(v.A)),
        B(to_device(v.B)),
        keep(upload_mask(v.keep)),
        keep_scale(v.keep_scale),
        y(poisoned_as(std::size_t(cs.n) * cs.out, cs.act)),
        xa(poisoned_as(std::size_t(cs.n) * cs.r, cs.act)),
        x_drop(poisoned_as(std::size_t(cs.n) * cs.in, cs.act)),
        dx(poisoned_as(std::size_t(cs.n) * cs.in, cs.act)) {}

  // lora.work is left null: each op passes its own workspace.
  cuda::LoraLinearArgs lora(float scale) {
    cuda::LoraLinearArgs a;
    a.n = c.n;
    a.in = c.in;
    a.out = c.out;
    a.r = c.r;
    a.scale = scale;
    a.act = c.act;
    a.W = W.data();
    a.bias = c.bias ? bias.data() : nullptr;
    a.A = A.data();
    a.B = B.data();
    a.keep = c.dropout ? keep.data() : nullptr;
    a.keep_scale = keep_scale;
    a.x_drop = x_drop.data();
    a.xa = xa.data();
    return a;
  }
};

// Owns the cuBLASLt context and its workspace; skips the test without a GPU. Fallbacks the
// kernels report are collected and printed, so a log says which path ran.
class BlasLtTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PEFTRUN_REQUIRE_GPU();
    workspace_ = cuda::DeviceBuffer<unsigned char>(cuda::BlasLt::kRecommendedWorkspaceBytes);
    lt_ = std::make_unique<cuda::BlasLt>(workspace_.data(), workspace_.size());
    lt_->set_fallback_listener(
        [](const std::string& what) { std::cout << "[ fallback ] " << what << std::endl; });
  }
  cuda::BlasLt& lt() { return *lt_; }

 private:
  cuda::DeviceBuffer<unsigned char> workspace_;
  std::unique_ptr<cuda::BlasLt> lt_;
};

}  // namespace peftrun::gpu_testing
