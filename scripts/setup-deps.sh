#!/usr/bin/env bash
# Installs the Debian packages peftrun needs, only those missing (fast when all are there).
set -euo pipefail

packages=(
  build-essential cmake pkg-config python3
  libyaml-cpp-dev        # config files
  libopenblas-dev        # CPU GEMMs
  nlohmann-json3-dev     # metrics.jsonl, safetensors headers, adapter_config.json, JSONL data
  libpcre2-dev           # tokenizer.json pre-tokenizer regexes (Unicode classes, lookahead)
  libutf8proc-dev        # tokenizer.json Unicode normalisers (NFC, NFKC, ...)
  libopenmpi-dev openmpi-bin  # multi-rank training (mpirun) and the CommMpi tests
  libgtest-dev googletest
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
