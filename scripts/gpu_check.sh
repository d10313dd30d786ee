#!/usr/bin/env bash
# The GPU check, in one command, on a machine with a CUDA GPU (run from the repository root
# after scripts/gpu_bundle.sh built build-gpu/ elsewhere and it was carried here):
#
#   scripts/gpu_check.sh            writes everything into $OUT (default gpu-check-out/)
#
# 1. nvidia-smi, the libraries the binaries resolve (ldd), BUILD_INFO
# 2. every gpu_* test executable, run directly (not through ctest: the CTest files hold the
#    build machine's paths), with PEFTRUN_PARITY_REPORT=1 so each comparison prints its error
# 3. the tiny config end to end on the CPU, and on cuda with fp32 and bf16 compute; the loss
#    curves side by side, tokens/s and peak device memory
# 4. summary.md: a table of all of it
#
# Files in $OUT (at most 8, flat): summary.md, nvidia-smi.txt, environment.txt, gpu_tests.log,
# parity.tsv, e2e.log, loss_curves.tsv. Each step has its own time limit so the whole check
# ends well under 8 minutes; a failing step is recorded and the others still run. The limits,
# in seconds, from the environment: PEFTRUN_CHECK_TESTS_S (300: no test executable starts
# later), PEFTRUN_CHECK_TEST_TIMEOUT_S (240 per executable), PEFTRUN_CHECK_E2E_TIMEOUT_S (200
# per end-to-end run).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${OUT:-$root/gpu-check-out}
mkdir -p "$out"
bundle=$root/build-gpu
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
tests_s=${PEFTRUN_CHECK_TESTS_S:-300}
test_timeout_s=${PEFTRUN_CHECK_TEST_TIMEOUT_S:-240}
e2e_timeout_s=${PEFTRUN_CHECK_E2E_TIMEOUT_S:-200}

# --- libraries (scripts/gpu_libs.sh: $ld_path and `ours`) --------------------------------
# shellcheck source=scripts/gpu_libs.sh
source "$root/scripts/gpu_libs.sh"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)"
  cat "$bundle/BUILD_INFO" 2>/dev/null
  echo "LD_LIBRARY_PATH for peftrun: $ld_path"
  echo "--- ldd build-gpu/bin/peftrun"
  ours ldd "$bundle/bin/peftrun" 2>&1
} >"$out/environment.txt"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)

# --- the GPU test executables --------------------------------------------------------------
: >"$out/gpu_tests.log"
test_rows=""
for bin in "$bundle"/bin/gpu_*; do
  name=$(basename "$bin")
  if [ "$(elapsed)" -gt "$tests_s" ]; then  # keep time for the end-to-end runs
    test_rows="$test_rows| $name | - | - | - | not run (time) | - |\n"
    continue
  fi
  log=/tmp/peftrun-$name.log
  t0=$(date +%s)
  ours env PEFTRUN_PARITY_REPORT=1 timeout "$test_timeout_s" "$bin" --gtest_color=no >"$log" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  # gtest's closing summary: "[  PASSED  ] N tests.", "[  SKIPPED ] N tests, listed below:", ...
  count() { sed -n "s/^\[  $1 *\] \([0-9]*\) tests\{0,1\}[.,].*/\1/p" "$log" | tail -1; }
  passed=$(count PASSED)
  failed=$(count FAILED)
  skipped=$(count SKIPPED)
  passed=${passed:-0} failed=${failed:-0} skipped=${skipped:-0}
  [ "$rc" = 124 ] && failed="$failed (timed out)"
  test_rows="$test_rows| $name | $passed | $failed | $skipped | $rc | ${dt}s |\n"
  { echo "=== $name (exit $rc, ${dt}s)"; cat "$log"; } >>"$out/gpu_tests.log"
done
{
  printf 'comparison\trel_error\ttol\n'
  grep -h '^parity ' "$out/gpu_tests.log" |
    sed -E 's/^parity (.*) rel_error ([^ ]+) tol ([^ ]+)$/\1\t\2\t\3/'
} >"$out/parity.tsv"

# --- the tiny config end to end ------------------------------------------------------------
: >"$out/e2e.log"
e2e_rows=""
run_tiny() {  # label, then peftrun arguments
  local label=$1
  shift
  local dir=/tmp/peftrun-e2e-$label
  rm -rf "$dir"
  local t0
  t0=$(date +%s)
  ours timeout "$e2e_timeout_s" "$bundle/bin/peftrun" configs/tiny.yaml --set output_dir="$dir" "$@" \
    >"/tmp/peftrun-e2e-$label.log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  { echo "=== $label: peftrun configs/tiny.yaml $* (exit $rc, ${dt}s)"
    cat "/tmp/peftrun-e2e-$label.log"; } >>"$out/e2e.log"
  local tps mem
  tps=$(grep -o '[0-9]* tok/s; train loss' "/tmp/peftrun-e2e-$label.log" | grep -o '^[0-9]*')
  mem=$(grep -o 'peak in use [0-9.]* [KMG]iB' "/tmp/peftrun-e2e-$label.log" | sed 's/peak in use //')
  e2e_rows="$e2e_rows| $label | $rc | ${dt}s | ${tps:-?} | ${mem:--} |\n"
}
run_tiny cpu --set runtime.device=cpu --set runtime.threads=8
run_tiny cuda_fp32 --set runtime.device=cuda --set runtime.compute_dtype=fp32
run_tiny cuda_bf16 --set runtime.device=cuda --set runtime.compute_dtype=bf16
python3 - "$out/loss_curves.tsv" <<'EOF' >"/tmp/peftrun-curves-summary.txt"
import json, math, sys
runs = ["cpu", "cuda_fp32", "cuda_bf16"]
curves, evals = {}, {}
for r in runs:
    curves[r], evals[r] = {}, {}
    try:
        for line in open(f"/tmp/peftrun-e2e-{r}/metrics.jsonl"):
            rec = json.loads(line)
            (evals if "eval_loss" in rec else curves)[r][rec["step"]] = rec.get("eval_loss", rec.get("loss"))
    except OSError:
        pass
with open(sys.argv[1], "w") as f:
    f.write("kind\tstep\t" + "\t".join(runs) + "\n")
    for kind, table in (("train", curves), ("eval", evals)):
        for s in sorted(set().union(*[table[r].keys() for r in runs])):
            f.write(f"{kind}\t{s}\t" + "\t".join(str(table[r].get(s, "")) for r in runs) + "\n")
def worst(r):
    d = [abs(curves[r][s] - curves["cpu"][s]) / abs(curves["cpu"][s])
         for s in curves["cpu"] if s in curves[r] and curves[r][s] is not None]
    return max(d) if d else float("nan")
for r in runs[1:]:
    last = max(evals[r]) if evals[r] else None
    ref = evals["cpu"].get(last) if last is not None else None
    print(f"| {r} vs cpu | {worst(r):.2e} | "
          f"{evals[r][last] if last is not None else '?'} vs {ref if ref is not None else '?'} |")
EOF

# --- summary -------------------------------------------------------------------------------
{
  echo "# peftrun GPU check, $(date -u +%Y-%m-%d)"
  echo
  echo "GPU: ${gpu:-unknown}; host $(hostname); $(grep '^commit' "$bundle/BUILD_INFO" 2>/dev/null)"
  echo
  echo "## GPU test executables (PEFTRUN_PARITY_REPORT=1; errors in parity.tsv)"
  echo
  echo "| executable | passed | failed | skipped | exit | time |"
  echo "|---|---|---|---|---|---|"
  printf "%b" "$test_rows"
  echo
  echo "Failed tests:"
  grep -h '^\[  FAILED  \] [A-Za-z]' "$out/gpu_tests.log" | sort -u | sed 's/^/    /'
  echo
  echo "## Tiny config end to end (200 steps, e2e.log; curves in loss_curves.tsv)"
  echo
  echo "| run | exit | time | tokens/s | peak device memory |"
  echo "|---|---|---|---|---|"
  printf "%b" "$e2e_rows"
  echo
  echo "| comparison | worst per-step train-loss rel. diff | final eval loss (run vs cpu) |"
  echo "|---|---|---|"
  cat /tmp/peftrun-curves-summary.txt
  echo
  echo "check took $(elapsed)s"
} >"$out/summary.md"
cat "$out/summary.md"
