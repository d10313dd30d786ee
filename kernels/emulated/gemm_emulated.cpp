// kernels/gemm.h's cuBLASLt matmul in the emulated-device build: the same validation, the same
// row-major -> column-major mapping (gemm_plan.h) and the same plan cache as gemm_cuda.cu, and
// then, in place of cublasLtMatmul, a host reference of what cuBLASLt computes for that
// column-major problem (fp32 products and accumulation, alpha scalar or per-row alpha vector,
// beta, the bias epilogue, one rounding to D's type). Because it reads the operands through the
// mapped layouts, a wrong transpose, stride or operand order in the mapping or in a caller gives
// wrong numbers here as it would on a GPU.
//
// PEFTRUN_EMULATION_NO_ALPHA_VECTOR refuses every alpha-vector pointer mode, so the fallback
// paths (DoRA's scale_columns) run too: =1 in the "heuristic" (gemm_supported says no), =launch
// at cublasLtMatmul (NOT_SUPPORTED after the heuristic said yes: gemm_cuda.cu then marks the
// plan unsupported and callers switch to their fallback).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/blaslt.h"
#include "kernels/block_context.h"
#include "kernels/cuda_launch.cuh"
#include "kernels/dtype.h"
#include "kernels/gemm.h"
#include "kernels/gemm_blocks.h"
#include "kernels/gemm_plan.h"
#include "kernels/half.h"

namespace peftrun::cuda {
namespace {

struct EmulatedPlan {
  bool found = false;
  std::string what;
};

enum class AlphaVectors { kOffered, kRefusedByHeuristic, kRefusedAtLaunch };

AlphaVectors alpha_vectors() {
  static const AlphaVectors mode = [] {
    const char* v = std::getenv("PEFTRUN_EMULATION_NO_ALPHA_VECTOR");
    if (!v || !*v || std::strcmp(v, "0") == 0) return AlphaVectors::kOffered;
    if (std::strcmp(v, "launch") == 0) return AlphaVectors::kRefusedAtLaunch;
    return AlphaVectors::kRefusedByHeuristic;
  }();
  return mode;
}

float load(const void* base, DType t, std::size_t i) {
  switch (t) {
    case DType::kF32:
      return static_cast<const float*>(base)[i];
    case DType::kF16:
      return half_to_float(static_cast<const half_bits*>(base)[i]);
    case DType::kBF16:
      return bf16_to_float(static_cast<const bf16_bits*>(base)[i]);
  }
  throw std::invalid_argument("unknown DType");
}

void store(void* base, DType t, std::size_t i, float v) {
  switch (t) {
    case DType::kF32:
      static_cast<float*>(base)[i] = v;
      return;
    case DType::kF16:
      static_cast<half_bits*>(base)[i] = float_to_half(v);
      return;
    case DType::kBF16:
      static_cast<bf16_bits*>(base)[i] = float_to_bf16(v);
      return;
  }
  throw std::invalid_argument("unknown DType");
}

// What cuBLASLt would refuse (CUBLAS_STATUS_INVALID_VALUE for a pointer not aligned to its
// element) or fault on (a host pointer).
void check_operand(const void* p, DType t, const char* name, const std::string& what) {
  if (!p) return;
  if (reinterpret_cast<std::uintptr_t>(p) % dtype_size(t) != 0) {
    throw std::runtime_error("cuBLASLt error in cublasLtMatmul for " + what + ": " + name +
                             " is not aligned to its " + dtype_name(t) +
                             " element (emulated device)");
  }
  if (!emu::g_device_memory.contains(p)) {
    throw std::runtime_error("cublasLtMatmul for " + what + ": " + name +
                             " is not device memory (emulated device)");
  }
}

// op(M) as a dense column-major rows x cols fp32 matrix: element (r, c) at r + c * rows.
std::vector<float> dense_op(const LtMatrix& m, DType t) {
  const std::uint64_t rows = m.transposed ? m.cols : m.rows;
  const std::uint64_t cols = m.transposed ? m.rows : m.cols;
  std::vector<float> out(rows * cols);
  for (std::uint64_t c = 0; c < cols; ++c) {
    for (std::uint64_t r = 0; r < rows; ++r) {
      // stored (row, col) of op(M)(r, c): (r, c) as is, (c, r) when transposed
      const std::uint64_t sr = m.transposed ? c : r, sc = m.transposed ? r : c;
      out[r + c * rows] = load(m.data, t, sr + sc * static_cast<std::uint64_t>(m.ld));
    }
  }
  return out;
}

// D (m x n column-major, ld) = alpha opX(X) opY(Y) + beta C + bias, as cuBLASLt defines it.
void reference_matmul(const GemmArgs& g, const LtProblem& p) {
  const std::vector<float> x = dense_op(p.x, g.ab_type);  // m x k
  const std::vector<float> y = dense_op(p.y, g.ab_type);  // k x n
  const void* c_base = g.C ? g.C : g.D;
  std::vector<float> acc(p.m);
  for (std::uint64_t j = 0; j < p.n; ++j) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (std::uint64_t q = 0; q < p.k; ++q) {
      const float yv = y[q + j * p.k];
      const float* xcol = x.data() + q * p.m;
      for (std::uint64_t i = 0; i < p.m; ++i) acc[i] += xcol[i] * yv;
    }
    for (std::uint64_t i = 0; i < p.m; ++i) {
      const std::size_t at = i + j * static_cast<std::uint64_t>(p.ldd);
      const float alpha = g.alpha_vec ? g.alpha_vec[i] : g.alpha;
      float v = alpha * acc[i];
      if (g.beta != 0.0f) v += g.beta * load(c_base, g.d_type, at);  // beta = 0: C unread
      if (g.bias) v += load(g.bias, g.d_type, i);
      store(g.D, g.d_type, at, v);
    }
  }
}

}  // namespace

struct BlasLt::Impl {
  std::size_t workspace_bytes = 0;
  PlanCache<EmulatedPlan> plans;
};

BlasLt::BlasLt(void* workspace, std::size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  check_workspace(workspace, workspace_bytes);
  impl_->workspace_bytes = workspace_bytes;
}

BlasLt::~BlasLt() = default;

std::size_t BlasLt::cached_plans() const {
  return impl_->plans.size();
}
std::size_t BlasLt::heuristic_queries() const {
  return impl_->plans.created();
}

namespace {

EmulatedPlan& plan_for(BlasLt& lt, const GemmArgs& g) {
  BlasLt::Impl& im = lt.impl();
  const GemmKey key = make_gemm_key(g, im.workspace_bytes);
  return im.plans.get_or_create(key, [&] {
    EmulatedPlan p;
    p.what = describe(key);
    p.found = !(g.alpha_vec && alpha_vectors() == AlphaVectors::kRefusedByHeuristic);
    if (!p.found) p.what += " (emulated heuristic: alpha vectors refused)";
    return p;
  });
}

}  // namespace

bool gemm_supported(BlasLt& lt, const GemmArgs& g) {
  validate_gemm(g);
  if (g.M == 0 || g.N == 0 || g.K == 0) return true;
  return plan_for(lt, g).found;
}

void gemm(BlasLt& lt, const GemmArgs& g, Stream stream) {
  validate_gemm(g);
  if (g.M == 0 || g.N == 0) return;
  if (g.K == 0) {  // as gemm_cuda.cu: D = beta C + bias by gemm_blocks.h's kernel
    blocks::launch_empty_product(CudaLauncher(stream), g.D, g.C, g.d_type, g.M, g.N, g.ldd, g.beta,
                                 g.bias);
    return;
  }
  EmulatedPlan& p = plan_for(lt, g);
  if (!p.found) throw std::runtime_error("cuBLASLt offers no algorithm for " + p.what);
  if (g.alpha_vec && alpha_vectors() == AlphaVectors::kRefusedAtLaunch) {
    p.found = false;  // as gemm_cuda.cu does on CUBLAS_STATUS_NOT_SUPPORTED
    p.what += " (cublasLtMatmul: NOT_SUPPORTED, emulated)";
    throw std::runtime_error("cuBLASLt error in cublasLtMatmul for " + p.what);
  }
  check_operand(g.A, g.ab_type, "A", p.what);
  check_operand(g.B, g.ab_type, "B", p.what);
  check_operand(g.C, g.d_type, "C", p.what);
  check_operand(g.D, g.d_type, "D", p.what);
  check_operand(g.bias, g.d_type, "bias", p.what);
  check_operand(g.alpha_vec, DType::kF32, "alpha_vec", p.what);
  reference_matmul(g, map_to_column_major(g));
}

}  // namespace peftrun::cuda
