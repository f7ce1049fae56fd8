#!/usr/bin/env bash
# GPU check of pig: extract frames/s at fp32 and under autocast, the autocast-vs-fp32 differences of
# extract, generate and embed-text against the stated tolerance, and training pairs/s (a few steps).
#
#   bash benchmarks/gpu_check.sh              # needs a CUDA GPU: B/32 shape, random weights, about 3 minutes
#   bash benchmarks/gpu_check.sh --dry        # CPU, tiny preset, 6 small videos: checks the script itself
#   bash benchmarks/gpu_check.sh --videos 256 --batch-size 64 --steps 50    # options: benchmarks/gpu_check.py --help
#
# Exit code: 0 ok, 1 a difference outside the tolerance (or an error), 2 no GPU without --dry.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PIG_QUIET=1 HF_HUB_OFFLINE=1
if [[ " $* " != *" --dry "* ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
exec python benchmarks/gpu_check.py "$@"
