// Error checking for CUDA and cuBLASLt calls inside kernels/*.cu: a failing call throws
// std::runtime_error naming the call, the file:line and the library's message. Include only
// from .cu files (it needs the CUDA headers).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace peftrun::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file,
                                          int line) {
  throw std::runtime_error(std::string("CUDA error in ") + call + " at " + file + ":" +
                           std::to_string(line) + ": " + cudaGetErrorName(err) + ": " +
                           cudaGetErrorString(err));
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t st, const char* call, const char* file,
                                            int line) {
  throw std::runtime_error(std::string("cuBLASLt error in ") + call + " at " + file + ":" +
                           std::to_string(line) + ": status " + std::to_string(int(st)));
}

}  // namespace peftrun::cuda

#define PEFTRUN_CUDA_CHECK(call)                                                  \
  do {                                                                            \
    const cudaError_t peftrun_err_ = (call);                                      \
    if (peftrun_err_ != cudaSuccess) {                                            \
      (void)cudaGetLastError();                                                   \
      ::peftrun::cuda::throw_cuda_error(peftrun_err_, #call, __FILE__, __LINE__); \
    }                                                                             \
  } while (0)

#define PEFTRUN_CUBLAS_CHECK(call)                                                 \
  do {                                                                             \
    const cublasStatus_t peftrun_st_ = (call);                                     \
    if (peftrun_st_ != CUBLAS_STATUS_SUCCESS) {                                    \
      ::peftrun::cuda::throw_cublas_error(peftrun_st_, #call, __FILE__, __LINE__); \
    }                                                                              \
  } while (0)

// After a kernel launch: catches bad launch configurations at once (asynchronous faults surface
// at the next synchronize; --debug synchronises after every op).
#define PEFTRUN_CUDA_CHECK_LAUNCH() PEFTRUN_CUDA_CHECK(cudaGetLastError())
