#!/usr/bin/env bash
# Builds what a GPU session runs, here (where the toolkit, MPI and every dependency are
# installed), into build-gpu/, small enough to travel with the working tree to a GPU machine
# that lacks those dependencies (the device tool's `carry`: 64 MiB with the tree):
#
#   build-gpu/bin/    peftrun and every gpu_* test executable, Release, sm_90 only, stripped
#   build-gpu/lib/    the non-CUDA shared libraries they need (from ldd), so LD_LIBRARY_PATH=
#                     build-gpu/lib finds them; the largest travel xz-compressed (*.xz) and
#                     scripts/gpu_check.sh unpacks them on the GPU machine
#   build-gpu/lib/fallback/   libstdc++, libgcc_s, libcudart, libz and libudev of this
#                     machine, used there only if the machine's own are missing or too old
#
# CUDA's big libraries (cuBLASLt, NCCL) and the driver are NOT copied: the GPU machine has
# them. Test executables are run directly by gpu_check.sh (no ctest: the CTest files hold this
# machine's absolute paths). Usage: scripts/gpu_bundle.sh [extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=build-gpu
budget_mib=${PEFTRUN_BUNDLE_BUDGET_MIB:-56}  # 64 MiB carry limit minus the tree (~5 MiB)

cmake -S . -B "$out/cmake" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DPEFTRUN_CUDA=ON -DPEFTRUN_NCCL=ON "$@" >"$out.configure.log"
targets=(peftrun)
for src in tests/gpu/*_test.cpp; do
  case "$(basename "$src")" in
    # Left out (they would only skip on the lent GPU machine, and the carry budget is tight):
    # the emulated device's own checks, and the multi-rank test, which needs mpirun and a GPU
    # per rank.
    emulated_device_test.cpp | cuda_distributed_test.cpp) continue ;;
  esac
  targets+=("gpu_$(basename "$src" .cpp)")
done
cmake --build "$out/cmake" -j"$(nproc)" --target "${targets[@]}"

rm -rf "$out/bin" "$out/lib"
mkdir -p "$out/bin" "$out/lib/fallback"
cp "$out/cmake/peftrun" "$out/bin/"
for t in "${targets[@]:1}"; do cp "$out/cmake/tests/$t" "$out/bin/"; done
strip --strip-unneeded "$out"/bin/*

# Shared libraries: everything ldd resolves except the C runtime, the CUDA driver and CUDA's
# own libraries (present on the GPU machine; libcudart also goes to fallback/, it is small).
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|libcuda\.so|libcublas|libcublasLt|libnccl|libstdc\+\+|libgcc_s|libcudart|libz\.so|libudev)'
for bin in "$out"/bin/*; do
  ldd "$bin" | awk '/=> \//{print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ $name =~ $skip ]]; then continue; fi
  cp -L "$path" "$out/lib/$name"
done
for name in libstdc++.so.6 libgcc_s.so.1 libcudart.so.13 libz.so.1 libudev.so.1; do
  path=$(ldd "$out/bin/peftrun" | awk -v n="$name" '$1 == n {print $3}')
  if [ -n "$path" ]; then cp -L "$path" "$out/lib/fallback/$name"; fi
done
# Compress what is large (OpenBLAS alone is ~35 MiB); gpu_check.sh restores it.
find "$out/lib" -type f -size +4M ! -name '*.xz' -exec xz -9 -T0 {} \;

# The recorded build, for the results.
{
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -1 || true)"
  echo "source_dir_at_build: $root"
} >"$out/BUILD_INFO"
rm -f "$out.configure.log"

bytes=$(du -cb "$out/bin" "$out/lib" "$out/BUILD_INFO" | tail -1 | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
echo "build-gpu bundle: ${mib} MiB in bin/ + lib/ (budget ${budget_mib} MiB)"
du -sh "$out"/bin "$out"/lib
if [ "$mib" -gt "$budget_mib" ]; then
  echo "gpu_bundle.sh: the bundle is over budget; carry would refuse it" >&2
  exit 1
fi
echo "carry: [\"$out/bin\", \"$out/lib\", \"$out/BUILD_INFO\"]; run: scripts/gpu_check.sh"
