#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to the whole test suite: installs what is missing,
# builds into build/ with warnings as errors, runs every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
if ! grep -q '^PEFTRUN_WERROR:BOOL=ON' build/CMakeCache.txt 2>/dev/null; then
  scripts/build.sh -DPEFTRUN_WERROR=ON
else
  scripts/build.sh
fi
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
