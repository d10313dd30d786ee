#!/usr/bin/env bash
# Configures (once) and builds peftrun and its tests into build/ (Release). Extra arguments are
# passed to CMake's configure step, e.g. -DPEFTRUN_CUDA=OFF or -DPEFTRUN_WERROR=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/CMakeCache.txt ] || [ $# -gt 0 ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
fi
cmake --build build -j"$(nproc)"
