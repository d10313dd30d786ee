// The parts of BlasLt (blaslt.h) that do not touch cuBLASLt, shared by gemm_cuda.cu and the
// emulated device's gemm_emulated.cpp: workspace checks and the once-per-message fallback log.
#include "kernels/blaslt.h"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace peftrun::cuda {

void BlasLt::check_workspace(const void* workspace, std::size_t workspace_bytes) {
  if (workspace_bytes > 0 && !workspace) {
    throw std::invalid_argument("BlasLt: workspace is null but workspace_bytes = " +
                                std::to_string(workspace_bytes));
  }
  if (reinterpret_cast<std::uintptr_t>(workspace) % 256 != 0) {
    throw std::invalid_argument("BlasLt: the workspace must be 256-byte aligned");
  }
}

void BlasLt::set_fallback_listener(FallbackListener listener) {
  listener_ = std::move(listener);
}

void BlasLt::report_fallback(const std::string& what) {
  for (const std::string& seen : fallbacks_) {
    if (seen == what) return;
  }
  fallbacks_.push_back(what);
  if (listener_) listener_(what);
}

const std::vector<std::string>& BlasLt::fallbacks() const {
  return fallbacks_;
}

}  // namespace peftrun::cuda
