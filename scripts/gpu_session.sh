#!/usr/bin/env bash
# One GPU lease's work in one command (the device tool's leases are counted in minutes, and a
# machine goes back 30 s after a call): scripts/gpu_check.sh, then the `1b` benchmark
# (scripts/gpu_bench.sh) in whatever time is left, all within PEFTRUN_SESSION_S seconds (560),
# so that a run limited to 600 s returns everything. Run from the repository root after
# scripts/gpu_bundle.sh built build-gpu/ here and it was carried:
#
#   scripts/gpu_session.sh [bench.py options]     e.g. --adapters lora,dora --steps 20
#
# What comes back is at most 8 flat files, so $OUT (default gpu-session-out/) gets:
#   check-summary.md   gpu_check.sh's summary.md (tests, parity, end-to-end table)
#   parity.tsv         every GPU-vs-CPU comparison with its error and tolerance
#   bench-table.md     the benchmark's table (absent when it never got that far)
#   bench.log          the benchmark driver's output (each run's numbers as it finishes)
#   session.tar.gz     everything: the check's and the benchmark's folders, every run's logs
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${OUT:-$root/gpu-session-out}
mkdir -p "$out"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
budget=${PEFTRUN_SESSION_S:-560}
work=/tmp/peftrun-session
rm -rf "$work"
mkdir -p "$work/check" "$work/bench"

# The check first: a benchmark of kernels that disagree with their CPU twins says nothing.
OUT=$work/check PEFTRUN_CHECK_TESTS_S=${PEFTRUN_CHECK_TESTS_S:-170} \
  PEFTRUN_CHECK_TEST_TIMEOUT_S=${PEFTRUN_CHECK_TEST_TIMEOUT_S:-120} \
  PEFTRUN_CHECK_E2E_TIMEOUT_S=${PEFTRUN_CHECK_E2E_TIMEOUT_S:-60} \
  scripts/gpu_check.sh >"$work/check.stdout" 2>&1
echo "gpu_session.sh: check done at $(elapsed)s"

left=$(( budget - $(elapsed) - 25 ))  # 25 s for packing up
if [ "$left" -gt 60 ]; then
  OUT=$work/bench PEFTRUN_BENCH_TIMEOUT=$(( left + 10 )) \
    scripts/gpu_bench.sh --time-budget "$left" "$@" >"$work/bench.stdout" 2>&1
  echo "gpu_session.sh: benchmark exit $? at $(elapsed)s"
else
  echo "gpu_session.sh: no time left for the benchmark (${left}s)" | tee "$work/bench/bench.log"
fi

# Pack up: the benchmark runs' logs and metrics too, not their adapters (large).
if [ -d /tmp/peftbench-work/runs ]; then
  mkdir -p "$work/bench-runs"
  (cd /tmp/peftbench-work/runs && find . -type f ! -name '*.safetensors' ! -name '*.bin' \
     -size -8M -exec cp --parents {} "$work/bench-runs/" \;)
fi
cp /tmp/peftbench-work/*/base.log "$work/bench/" 2>/dev/null
cp "$work/check/summary.md" "$out/check-summary.md" 2>/dev/null
cp "$work/check/parity.tsv" "$out/parity.tsv" 2>/dev/null
cp "$work/bench/bench.log" "$out/bench.log" 2>/dev/null
table=$(find "$work/bench" -name table.md | head -1)
[ -n "$table" ] && cp "$table" "$out/bench-table.md"
tar -czf "$out/session.tar.gz" -C "$work" .
echo "gpu_session.sh: done at $(elapsed)s"
cat "$out/check-summary.md" 2>/dev/null
cat "$out/bench-table.md" 2>/dev/null || tail -20 "$out/bench.log" 2>/dev/null
