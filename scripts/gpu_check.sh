#!/usr/bin/env bash
# One command for the first run on a GPU (see scripts/gpu_check.py): `bash scripts/gpu_check.sh`, or `--cpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/gpu_check.py "$@"
