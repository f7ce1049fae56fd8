#!/usr/bin/env bash
# Byte-identity of a refactor: the quickstart pipeline and two tiny trainings, run with the code of
# BASE (default: main) and with this checkout, in the same folder (stage files record absolute input
# paths, which enter their fingerprints), then compared.
#
#   bash benchmarks/identity_check.sh [BASE] [WORK]      # about 3 minutes on 2 CPU cores
#
# Compared: every dataset of every HDF5 stage file (values, dtype, shape) and every root attribute
# except `created` and `timings` (wall-clock values); the stdout of rank (TSV), eval (--json, less
# its timings) and inspect; the trained models' weights tensor by tensor (bytes, dtype, names) with
# the safetensors metadata as a mapping, their checkpoint.json less `hash` (a hash of the file
# bytes, which that metadata's order changes from run to run), config.json and the tokenizer byte
# for byte, and log.jsonl less its times and rates. Exit 0 when all agree, 1 otherwise.
set -euo pipefail
base=${1:-main}
work=$(realpath -m "${2:-/tmp/pig-identity}")
repo=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$work" && mkdir -p "$work/base-code" "$work/inputs"
git -C "$repo" archive "$base" | tar -x -C "$work/base-code"
PYTHONPATH="$repo" python "$repo/examples/make_clips.py" "$work/inputs" --count 8 >/dev/null
PYTHONPATH="$work/base-code" python -m pigcli init --preset tiny -o "$work/inputs/model" >/dev/null

run() {  # run CODE_DIR OUT: the whole job in $work/run, then moved to OUT
    local code=$1 out=$2 r=$work/run
    local pig="env PYTHONPATH=$code PIG_CACHE=$work/cache python -m pigcli"
    rm -rf "$r" && mkdir -p "$r"
    # one model for both: model.safetensors' metadata (the map of shared weights) comes out in another
    # order from run to run, so two identical inits differ in bytes and in the model hash
    cp -r "$work/inputs/model" "$r/model"
    $pig extract "$work/inputs/videos" -m "$r/model" -o "$r/feats.h5" --workers 0 >/dev/null
    $pig frames "$work/inputs/videos" -m "$r/model" -o "$r/frames.h5" --workers 0 >/dev/null
    $pig select "$r/feats.h5" -k 16 -o "$r/sel.h5" >/dev/null
    $pig generate "$r/sel.h5" -o "$r/gen.h5" >/dev/null
    $pig fuse "$r/gen.h5" -o "$r/index.h5" >/dev/null
    $pig embed-text "$work/inputs/captions.csv" -m "$r/model" -o "$r/q.h5" >/dev/null
    $pig rank "$r/index.h5" "$r/q.h5" --top 5 > "$r/rank_file.tsv"
    $pig rank "$r/index.h5" --query "a red square moves left" --top 3 --rerank 4 > "$r/rank_query.tsv"
    $pig eval "$r/index.h5" --captions "$work/inputs/captions.csv" --json > "$r/eval.json"
    $pig inspect "$r/index.h5" > "$r/inspect.txt"
    $pig train --captions "$work/inputs/captions.csv" --features "$r/feats.h5" -m "$r/model" -o "$r/train_features" --freeze-backbone \
        --epochs 1 --batch-size 4 --device cpu --seed 0 >/dev/null
    $pig train --captions "$work/inputs/captions.csv" --frames "$r/frames.h5" -m "$r/model" -o "$r/train_frames" \
        --phases 2 --epochs 1 --batch-size 4 --device cpu --workers 0 --seed 0 >/dev/null
    rm -rf "$out" && mv "$r" "$out"
}

run "$work/base-code" "$work/base"
run "$repo" "$work/new"
python - "$work/base" "$work/new" <<'EOF'
import hashlib, json, sys
from pathlib import Path

import h5py
import numpy as np

base, new = Path(sys.argv[1]), Path(sys.argv[2])
WALL_CLOCK = {"created", "timings"}
problems, checked = [], 0


def h5_items(path):
    items = {}
    with h5py.File(path, "r") as handle:
        for key, value in handle.attrs.items():
            if key not in WALL_CLOCK:
                items[f"@{key}"] = value
        handle.visititems(lambda name, obj: items.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return items


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and (a.tobytes() == b.tobytes() if a.dtype != object
                                                          else a.tolist() == b.tolist())


def weights(path):
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        tensors = {name: (str(handle.get_tensor(name).dtype), handle.get_tensor(name).shape,
                          handle.get_tensor(name).tobytes()) for name in handle.keys()}
        return tensors, handle.metadata()


def stable_lines(path):
    return [line for line in path.read_text().splitlines() if not line.startswith(tuple(f"{k}:" for k in WALL_CLOCK))]


def parsed(text):
    """JSON text: one document, or one per line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines()]


def without_times(value):
    """A JSON value with every key that names a time left out."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items()
                if not any(word in k for word in ("time", "seconds", "elapsed", "wall", "_per_s"))}
    return [without_times(v) for v in value] if isinstance(value, list) else value


for one in sorted(p for p in base.rglob("*") if p.is_file()):
    rel = one.relative_to(base)
    other = new / rel
    if not other.exists():
        problems.append(f"{rel}: missing in the new run")
        continue
    if one.suffix == ".h5":
        a, b = h5_items(one), h5_items(other)
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b or not same(a[key], b[key]):
                problems.append(f"{rel}: {key} differs")
    elif one.suffix == ".safetensors":
        if weights(one) != weights(other):
            problems.append(f"{rel}: weights or metadata differ")
    elif one.name == "checkpoint.json":
        if {**json.loads(one.read_text()), "hash": ""} != {**json.loads(other.read_text()), "hash": ""}:
            problems.append(f"{rel}: differs (hash left out)")
    elif one.name in ("log.jsonl", "eval.json"):
        if without_times(parsed(one.read_text())) != without_times(parsed(other.read_text())):
            problems.append(f"{rel}: differs (times left out)")
    elif one.name == "inspect.txt":  # its created: and timings: lines are the wall-clock attributes
        if stable_lines(one) != stable_lines(other):
            problems.append(f"{rel}: differs (created and timings left out)")
    elif one.suffix in (".json", ".tsv", ".txt", ".csv"):
        if hashlib.sha256(one.read_bytes()).digest() != hashlib.sha256(other.read_bytes()).digest():
            problems.append(f"{rel}: bytes differ")
    else:
        continue  # state.pt and the like: pickles with run-specific content
    checked += 1
print(f"{checked} files compared, {len(problems)} differ")
for line in problems:
    print("  " + line)
sys.exit(1 if problems else 0)
EOF
