// The cuBLASLt context of one device and one stream (plain C++; implemented in gemm_cuda.cu, or
// kernels/emulated/gemm_emulated.cpp on the emulated device, with the parts both share in
// blaslt.cpp):
// the library handle, a caller-planned workspace, and the plan cache (matmul descriptor,
// layouts and the heuristic's algorithm per GemmKey, see gemm_plan.h), so the step loop
// queries cuBLASLt's heuristic once per distinct problem and never allocates.
//
// Not thread-safe, and the workspace is shared by every matmul it runs: use one BlasLt per
// stream (matmuls on one stream run in order, so they never overlap in the workspace).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace peftrun::cuda {

class BlasLt {
 public:
  // cuBLASLt's guidance for Hopper (and enough for Ampere): 32 MiB lets split-K algorithms run.
  static constexpr std::size_t kRecommendedWorkspaceBytes = std::size_t(32) << 20;

  // workspace: device memory of workspace_bytes, 256-byte aligned, owned by the caller (part
  // of the device arena planned at start-up); nullptr with 0 bytes restricts cuBLASLt to
  // algorithms without workspace. Throws std::runtime_error "no CUDA device: ..." when no
  // device is usable (cudaGetDeviceCount fails or cublasLtCreate returns NOT_INITIALIZED).
  BlasLt(void* workspace, std::size_t workspace_bytes);
  ~BlasLt();
  BlasLt(const BlasLt&) = delete;
  BlasLt& operator=(const BlasLt&) = delete;

  // Fallbacks (e.g. "no algorithm for an alpha vector on this shape, using a scale kernel")
  // are reported once per distinct message: recorded in fallbacks() and passed to the
  // listener, so the caller decides how to log (kernels/ never prints).
  using FallbackListener = std::function<void(const std::string&)>;
  void set_fallback_listener(FallbackListener listener);
  void report_fallback(const std::string& what);
  const std::vector<std::string>& fallbacks() const;

  std::size_t cached_plans() const;       // distinct problems seen
  std::size_t heuristic_queries() const;  // cuBLASLt heuristic calls made (= cache misses)

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  // Throws std::invalid_argument for a null workspace of non-zero size or one that is not
  // 256-byte aligned (both constructors; blaslt.cpp).
  static void check_workspace(const void* workspace, std::size_t workspace_bytes);

  std::unique_ptr<Impl> impl_;
  FallbackListener listener_;
  std::vector<std::string> fallbacks_;
};

}  // namespace peftrun::cuda
