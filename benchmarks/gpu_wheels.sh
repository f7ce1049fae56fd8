#!/usr/bin/env bash
# Fetch, HERE (a machine with pip and the internet), the wheels that pig needs and the GPU machine lacks,
# into .whl/ (git-ignored), for benchmarks/gpu_check.sh to run there in one call.
#
#   bash benchmarks/gpu_wheels.sh          # about 60 MB of Python 3.12 manylinux x86-64 wheels
#
# The GPU machine (nvidia-h200 of the device tool: Python 3.12, torch with CUDA, transformers, h5py, typer,
# rich, numpy, pillow, anyio, h11, click, annotated-doc) has no av, decord, pebble, fastapi or uvicorn and
# cannot reach a registry. Each package comes at the version installed here (the one the tests ran with)
# and without its dependencies (pip --no-deps): the ones the machine lacks are listed by name below.
# faiss (pig index-ann, rank --ann) is left out: gpu_check does not use it, and the wheels that travel
# must stay under the device tool's 64 MiB. See gpu_check.sh's header for the one `run` call that uses them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PACKAGES=(
    av decord pebble                                    # decoding (pig extract, frames, index; video writing)
    fastapi starlette pydantic pydantic-core uvicorn    # pig serve
    annotated-types typing-inspection typing-extensions opentelemetry-api   # what fastapi and pydantic import
)
pins=()
for name in "${PACKAGES[@]}"; do
    version=$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    pins+=("$name==$version")
done
rm -rf .whl && mkdir -p .whl
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux2010 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "${pins[@]}"
ls -1 .whl
du -sh .whl
