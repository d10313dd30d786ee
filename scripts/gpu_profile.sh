#!/usr/bin/env bash
# Where peftrun's GPU time goes, kernel by kernel: Nsight Compute (ncu) times every kernel of a
# short run (one metric, gpu__time_duration, so each kernel runs once; the clocks are left alone)
# and prints the total per kernel name, largest first. On a machine with a CUDA GPU, from the
# repository root, after scripts/gpu_bundle.sh built build-gpu/ and it was carried there:
#
#   scripts/gpu_profile.sh CONFIG [peftrun options]     e.g. ... --set train.steps=2
#
# Writes $OUT/profile-kernels.csv (ncu's row per launch) and $OUT/profile.md (the table).
# ncu serialises the launches, so the run is slower than a real one; the shares are what count.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${OUT:-$root/gpu-profile-out}
mkdir -p "$out"
bundle=$root/build-gpu
# shellcheck source=scripts/gpu_libs.sh
source "$root/scripts/gpu_libs.sh"
ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -z "$ncu" ]; then
  echo "gpu_profile.sh: no ncu on this machine" | tee "$out/profile.md"
  exit 1
fi
config=$1
shift
ours timeout "${PEFTRUN_PROFILE_TIMEOUT:-200}" "$ncu" --clock-control none \
  --metrics gpu__time_duration.sum --csv \
  "$bundle/bin/peftrun" "$config" "$@" >"$out/profile-kernels.csv" 2>"$out/profile-stderr.txt"
echo "gpu_profile.sh: ncu exit $?"
python3 - "$out/profile-kernels.csv" >"$out/profile.md" <<'PY'
import csv, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1], errors="replace") if l.startswith('"'))]
if not rows:
    sys.exit("no ncu summary rows")
head = rows[0]
def col(*names):
    for n in names:
        if n in head:
            return head.index(n)
    return None
name_i = col("Kernel Name", "Function Name", "Name")
metric_i = col("Metric Name")
sum_i = col("Metric Value", "Sum")
count_i = col("Invocations")
unit_i = col("Metric Unit")
totals = {}
for r in rows[1:]:
    if metric_i is not None and r[metric_i] != "gpu__time_duration.sum":
        continue
    try:
        v = float(r[sum_i].replace(",", ""))
    except (ValueError, IndexError):
        continue
    scale = {"nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0}.get(
        r[unit_i] if unit_i is not None else "nsecond", 1e-9)
    n = r[name_i]
    for prefix in ("peftrun::", "blocks::", "cuda::"):
        n = n.replace(prefix, "")
    n = n[:160]
    t, c = totals.get(n, (0.0, 0))
    calls = int(r[count_i]) if count_i is not None and r[count_i].isdigit() else 1
    totals[n] = (t + v * scale, c + calls)
all_s = sum(t for t, _ in totals.values())
print(f"total kernel time {all_s * 1e3:.1f} ms over {sum(c for _, c in totals.values())} launches\n")
print("| kernel | ms | share | launches |\n|---|---|---|---|")
for n, (t, c) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:40]:
    print(f"| `{n}` | {t * 1e3:.1f} | {100 * t / all_s:.1f}% | {c} |")
PY
cat "$out/profile.md"
head -c 3000 "$out/profile-stderr.txt"
