// cuBLASLt matmuls (the CUDA twin of gemm_cpu.cpp) and the BlasLt context: plans are built
// once per GemmKey (descriptor, layouts, heuristic algorithm) and reused; the column-major
// mapping and the key live in gemm_plan.cpp, where they are unit-tested on the CPU. The two
// small kernels (K = 0 here, scale_columns in gemm_scale_cuda.cu) are gemm_blocks.h's. The
// emulated-device build replaces this file with kernels/emulated/gemm_emulated.cpp.
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "kernels/cuda_check.h"
#include "kernels/cuda_launch.cuh"
#include "kernels/dtype_cuda.cuh"
#include "kernels/gemm.h"
#include "kernels/gemm_blocks.h"
#include "kernels/gemm_plan.h"

namespace peftrun::cuda {
namespace detail {

// Descriptor, layouts and algorithm of one GemmKey. found = false: the heuristic offered no
// algorithm (remembered too, so an unsupported pointer mode is not re-queried every step).
struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t x = nullptr, y = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  std::string what;  // describe(key), for messages

  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() {
    for (cublasLtMatrixLayout_t l : {x, y, c, d}) {
      if (l) (void)cublasLtMatrixLayoutDestroy(l);
    }
    if (desc) (void)cublasLtMatmulDescDestroy(desc);
  }
};

struct PreferenceGuard {
  cublasLtMatmulPreference_t pref = nullptr;
  ~PreferenceGuard() {
    if (pref) (void)cublasLtMatmulPreferenceDestroy(pref);
  }
};

}  // namespace detail

struct BlasLt::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  PlanCache<std::unique_ptr<detail::GemmPlan>> plans;
};

BlasLt::BlasLt(void* workspace, std::size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw std::runtime_error(std::string("no CUDA device: cudaGetDeviceCount failed: ") +
                             cudaGetErrorString(err));
  }
  if (count == 0) throw std::runtime_error("no CUDA device: cudaGetDeviceCount found none");
  check_workspace(workspace, workspace_bytes);
  const cublasStatus_t st = cublasLtCreate(&impl_->handle);
  if (st == CUBLAS_STATUS_NOT_INITIALIZED) {
    throw std::runtime_error(
        "no CUDA device: cublasLtCreate returned CUBLAS_STATUS_NOT_INITIALIZED (no usable GPU or "
        "driver)");
  }
  if (st != CUBLAS_STATUS_SUCCESS) throw_cublas_error(st, "cublasLtCreate", __FILE__, __LINE__);
  impl_->workspace = workspace;
  impl_->workspace_bytes = workspace_bytes;
}

BlasLt::~BlasLt() {
  if (!impl_) return;
  const cublasLtHandle_t handle = impl_->handle;
  impl_.reset();  // plans (descriptors) first, then the library handle
  if (handle) (void)cublasLtDestroy(handle);
}

std::size_t BlasLt::cached_plans() const {
  return impl_->plans.size();
}
std::size_t BlasLt::heuristic_queries() const {
  return impl_->plans.created();
}

namespace {

template <typename T>
void set_attr(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  PEFTRUN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

template <typename T>
void set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
              const T& value) {
  PEFTRUN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
}

cublasLtPointerMode_t lt_pointer_mode(PointerMode m) {
  switch (m) {
    case PointerMode::kHost:
      return CUBLASLT_POINTER_MODE_HOST;
    case PointerMode::kAlphaVectorBetaZero:
      return CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_ZERO;
    case PointerMode::kAlphaVectorBetaHost:
      return CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST;
  }
  return CUBLASLT_POINTER_MODE_HOST;
}

std::unique_ptr<detail::GemmPlan> make_plan(BlasLt::Impl& im, const GemmArgs& g,
                                            const GemmKey& key) {
  auto p = std::make_unique<detail::GemmPlan>();
  p->what = describe(key);
  const LtProblem lp = map_to_column_major(g);

  PEFTRUN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  set_attr(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, lp.x.transposed ? CUBLAS_OP_T : CUBLAS_OP_N);
  set_attr(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, lp.y.transposed ? CUBLAS_OP_T : CUBLAS_OP_N);
  set_attr(p->desc, CUBLASLT_MATMUL_DESC_POINTER_MODE,
           static_cast<std::int32_t>(lt_pointer_mode(lp.pointer_mode)));
  if (lp.bias) {
    // The bias type defaults to D's type; its pointer is set again on every call, but the
    // heuristic reads its alignment now.
    set_attr(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
             static_cast<std::uint32_t>(CUBLASLT_EPILOGUE_BIAS));
    set_attr(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  }
  const cudaDataType_t ab = cuda_data_type(g.ab_type), dt = cuda_data_type(g.d_type);
  PEFTRUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->x, ab, lp.x.rows, lp.x.cols, lp.x.ld));
  PEFTRUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->y, ab, lp.y.rows, lp.y.cols, lp.y.ld));
  PEFTRUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, dt, lp.d_rows, lp.d_cols, lp.ldd));
  PEFTRUN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->d, dt, lp.d_rows, lp.d_cols, lp.ldd));

  detail::PreferenceGuard pref;
  PEFTRUN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.pref));
  set_pref(pref.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
           static_cast<std::uint64_t>(im.workspace_bytes));
  set_pref(pref.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_x);
  set_pref(pref.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_y);
  set_pref(pref.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c);
  set_pref(pref.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d);

  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(im.handle, p->desc, p->x, p->y, p->c,
                                                           p->d, pref.pref, 1, &result, &returned);
  if (st == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    p->algo = result.algo;
    p->found = true;
  } else {
    // Any refusal (NOT_SUPPORTED, or INVALID_VALUE for a pointer mode this library version
    // rejects) means "no algorithm": callers with a fallback use it, gemm() names the status.
    p->what += " (heuristic status " + std::to_string(int(st)) + ", " + std::to_string(returned) +
               " algorithms)";
  }
  return p;
}

detail::GemmPlan& plan_for(BlasLt& lt, const GemmArgs& g) {
  BlasLt::Impl& im = lt.impl();
  const GemmKey key = make_gemm_key(g, im.workspace_bytes);
  return *im.plans.get_or_create(key, [&] { return make_plan(im, g, key); });
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
  if (g.K == 0) {  // the product is empty: D = beta C + bias (gemm_blocks.h)
    blocks::launch_empty_product(CudaLauncher(stream), g.D, g.C, g.d_type, g.M, g.N, g.ldd, g.beta,
                                 g.bias);
    return;
  }
  detail::GemmPlan& p = plan_for(lt, g);
  if (!p.found) throw std::runtime_error("cuBLASLt offers no algorithm for " + p.what);
  if (g.bias) set_attr(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  BlasLt::Impl& im = lt.impl();
  const void* alpha =
      g.alpha_vec ? static_cast<const void*>(g.alpha_vec) : static_cast<const void*>(&g.alpha);
  const float beta = g.beta;
  // cuBLASLt's A is our X (row-major B), its B our Y (row-major A): see gemm_plan.h.
  const cublasStatus_t st =
      cublasLtMatmul(im.handle, p.desc, alpha, g.B, p.x, g.A, p.y, &beta, g.C ? g.C : g.D, p.c, g.D,
                     p.d, &p.algo, im.workspace, im.workspace_bytes, stream);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
    // The heuristic's algorithm was refused at launch: remember, so gemm_supported says no
    // from now on and callers with a fallback switch to it.
    p.found = false;
    p.what += " (cublasLtMatmul: NOT_SUPPORTED)";
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    throw_cublas_error(st, ("cublasLtMatmul for " + p.what).c_str(), __FILE__, __LINE__);
  }
}

}  // namespace peftrun::cuda
