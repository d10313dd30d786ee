// CudaLauncher, which runs a kernel functor of kernels/*_blocks.h: on the GPU
// (cuda_launch_device.cuh), or, in the emulated-device build (PEFTRUN_CUDA=EMULATE,
// kernels/emulated/), where the .cu files are compiled as host C++, in the block emulator, so
// the whole CUDA backend, not only its kernels, runs on a machine without a GPU. The CPU test
// suite drives the same launch code with the emulator directly. Include only from .cu files.
#pragma once

#if PEFTRUN_CUDA_EMULATION
#include "kernels/emulated/emulated_launcher.h"
#else
#include "kernels/cuda_launch_device.cuh"
#endif
