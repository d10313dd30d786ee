// PEFTRUN_HD marks element-wise math shared by the CPU and CUDA implementations, so the CPU
// tests exercise the very formula the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define PEFTRUN_HD __host__ __device__ __forceinline__
#else
#define PEFTRUN_HD inline
#endif
