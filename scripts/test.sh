#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to the whole test suite: installs what is missing,
# builds into build/ with warnings as errors, runs every test with ctest; then builds the CUDA
# backend on the emulated device into build-emu/ and runs the GPU suite there.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
if ! grep -q '^PEFTRUN_WERROR:BOOL=ON' build/CMakeCache.txt 2>/dev/null; then
  scripts/build.sh -DPEFTRUN_WERROR=ON
else
  scripts/build.sh
fi
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"

# The CUDA backend once more, on the emulated device (PEFTRUN_CUDA=EMULATE, kernels/emulated/):
# tests/gpu/, which the build above skips without a GPU, runs here on the CPU, end to end.
if [ ! -f build-emu/CMakeCache.txt ]; then
  cmake -S . -B build-emu -DCMAKE_BUILD_TYPE=Release -DPEFTRUN_CUDA=EMULATE -DPEFTRUN_WERROR=ON
fi
cmake --build build-emu -j"$(nproc)"
ctest --test-dir build-emu --output-on-failure -j"$(nproc)" "$@"
