#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a trained adapter: installs what is missing,
# builds Release into build/, trains the embedded default config (CPU is fine) into runs/tiny/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
scripts/build.sh
build/peftrun configs/tiny.yaml "$@"
