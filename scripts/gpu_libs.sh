# The library path for the binaries of a build-gpu/ bundle (scripts/gpu_bundle.sh) on a GPU
# machine, sourced by scripts/gpu_check.sh and scripts/gpu_bench.sh. Expects $root (the
# repository root) and $bundle (its build-gpu/); sets $ld_path and defines `ours CMD...`, which
# runs CMD with it. The bundle's compressed libraries are unpacked into /tmp/peftrun-gpu-lib.
libdir=/tmp/peftrun-gpu-lib
rm -rf "$libdir"
mkdir -p "$libdir"
cp -r "$bundle/lib/." "$libdir/"
for f in "$libdir"/*.xz; do [ -e "$f" ] && xz -d "$f"; done
# CUDA's own libraries: the toolkit's folders, the system's, or the pip wheels of PyTorch.
cuda_dirs=""
for lib in libcublasLt.so.13 libnccl.so.2 libcudart.so.13; do
  found=$( (ldconfig -p 2>/dev/null | awk -v n="$lib" '$1 == n {print $NF; exit}'); true)
  if [ -z "$found" ]; then
    found=$(find /usr/local/cuda* /usr/lib/x86_64-linux-gnu /opt /usr/local/lib -name "$lib" \
              2>/dev/null | head -1)
  fi
  if [ -n "$found" ]; then cuda_dirs="$cuda_dirs:$(dirname "$found")"; fi
done
# Only our binaries run with it (nvidia-smi and python3 keep the machine's own libraries).
ld_path="$libdir${cuda_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# This machine's libstdc++, libcudart, ... when present and new enough; the build machine's if not.
if env LD_LIBRARY_PATH="$ld_path" ldd "$bundle/bin/peftrun" 2>&1 | grep -q 'not found'; then
  ld_path="$ld_path:$libdir/fallback"
fi
ours() { env LD_LIBRARY_PATH="$ld_path" PEFTRUN_SOURCE_DIR="$root" "$@"; }
