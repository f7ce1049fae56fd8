#!/usr/bin/env bash
# The one script to run first on any GPU machine: every GPU path of the pig command line (train at
# fp32/bf16/fp16 with loss scaling, gradient checkpointing, --stop-after/--resume, torchrun with one
# process; frames, extract, select, generate, embed-text, fuse, index, eval, rank --rerank, serve), the
# autocast outputs against fp32, extract frames/s against decoding workers and training pairs/s.
# Steps and figures: benchmarks/gpu_check.py (its TRAIN_RUNS: one line per training run).
#
#   bash benchmarks/gpu_check.sh              # needs a CUDA GPU: b32 preset, random weights; ~6 min on an H200, 16 cores
#   bash benchmarks/gpu_check.sh --dry        # CPU, tiny preset, 8 small videos: checks the script itself (tests/test_gpu_check.py)
#   bash benchmarks/gpu_check.sh --logs DIR   # keep each step's output in DIR
#
# On the device tool's nvidia-h200 machine (no av, decord, pebble, fastapi, uvicorn there, no registry):
# first, here, `bash benchmarks/gpu_wheels.sh` (fills the git-ignored .whl/), then ONE `run` call with
# carry [".whl"] and timeout_s 600:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; set -o pipefail; bash benchmarks/gpu_check.sh 2>&1 | tee $OUT/gpu_check.log
# and record its output in benchmarks/RESULTS_gpu.md.
#
# Exit code: 0 every step passed; 1 a step failed or an autocast difference is outside the tolerance
# (the summary at the end names them); 2 no GPU without --dry.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PIG_QUIET=1 HF_HUB_OFFLINE=1
if [[ " $* " != *" --dry "* ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
exec python3 benchmarks/gpu_check.py "$@"
