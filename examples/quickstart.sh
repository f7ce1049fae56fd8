#!/usr/bin/env bash
# The whole pipeline on a built-in default, offline and on CPU, in about a minute:
# a few generated clips, a tiny random model, every stage, a ranked list and retrieval metrics.
# (The model is untrained, so the numbers are near chance: this shows the mechanics, not accuracy.)
set -euo pipefail
work=${1:-pig-quickstart}
mkdir -p "$work"
python "$(dirname "$0")/make_clips.py" "$work" --count 8 >/dev/null
[ -d "$work/model" ] || pig init --preset tiny -o "$work/model"
pig extract "$work/videos" -m "$work/model" -o "$work/feats.h5"
pig select "$work/feats.h5" -k 16 -o "$work/sel.h5"
pig generate "$work/sel.h5" -o "$work/gen.h5"
pig fuse "$work/gen.h5" -o "$work/index.h5"
pig inspect "$work/index.h5"
echo "--- pig rank: top 3 for one query"
pig rank "$work/index.h5" --query "a red square moves left" --top 3
echo "--- pig eval"
pig eval "$work/index.h5" --captions "$work/captions.csv"
