#!/usr/bin/env bash
# Issue 8's GPU benchmark, in one command, on a machine with a CUDA GPU and PyTorch +
# transformers + PEFT (run from the repository root after scripts/gpu_bundle.sh built
# build-gpu/ elsewhere and it was carried here, as for scripts/gpu_check.sh):
#
#   scripts/gpu_bench.sh [bench.py options]     e.g. --adapters lora,dora --steps 20
#
# Runs `bench/bench.py 1b` with the bundle's peftrun (through a wrapper that gives it the
# bundle's library path; python3 keeps the machine's own) and writes the results folder
# (table.md, results.json, loss.png when matplotlib is there) and the driver's log into $OUT
# (default gpu-bench-out/). The whole run is limited to PEFTRUN_BENCH_TIMEOUT seconds (400).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${OUT:-$root/gpu-bench-out}
mkdir -p "$out"
bundle=$root/build-gpu
# shellcheck source=scripts/gpu_libs.sh
source "$root/scripts/gpu_libs.sh"

wrapper=/tmp/peftrun-gpu-bench-peftrun
{
  echo '#!/bin/sh'
  printf 'exec env LD_LIBRARY_PATH=%q PEFTRUN_SOURCE_DIR=%q %q "$@"\n' "$ld_path" "$root" \
    "$bundle/bin/peftrun"
} >"$wrapper"
chmod +x "$wrapper"

timeout "${PEFTRUN_BENCH_TIMEOUT:-400}" python3 bench/bench.py 1b --peftrun "$wrapper" \
  --results "$out" --work /tmp/peftbench-work "$@" 2>&1 | tee "$out/bench.log"
rc=${PIPESTATUS[0]}
echo "gpu_bench.sh: bench.py exit $rc" | tee -a "$out/bench.log"
exit "$rc"
