"""`pig select`: the Informativeness Token Selector from stored ITS scores (METHOD.md section 2).

For every video the k patch tokens with the highest score s_j = max_h A[h, j] are taken jointly over
all frames (not k per frame), in descending score order (ties: lower patch index first). The output
also carries x_v, x_p and x_f so that `generate` needs no other file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PigError
from ..store import (Provenance, input_record, ok_rows, open_stage_file, read_ids,
                     recorded_model)
from .common import StageSummary, run_blocks, start_stage, take_rows

EXTRACT_HINT = "pig extract VIDEOS -m MODEL -o feats.h5"
CARRIED = ("video", "proxies", "frames")


def top_k_patches(its_score: np.ndarray, k: int) -> np.ndarray:
    """[N, T*L] scores -> [N, k] flat patch indices, best first, ties to the lower index."""
    return np.argsort(-its_score, axis=1, kind="stable")[:, :k]


def select(features: str | Path, output: str | Path, k: int | None = None, force: bool = False,
           replace_stale: bool = False) -> StageSummary:
    """k: ITS tokens per video; default the select_k of the model the features were made with."""
    with open_stage_file(features, ("extract",), EXTRACT_HINT) as source:
        k = k or _model_select_k(source)
        rows = ok_rows(source)
        total_patches = source["its_score"].shape[1]
        if not 0 < k <= total_patches:
            raise PigError(f"-k must be between 1 and {total_patches} (the patches of a video), not {k}")
        kept = source["patch_index"].shape[1]
        if kept < k:
            raise PigError(f"{features} kept {kept} patch tokens per video, fewer than -k {k}; rerun extract "
                           f"with --patches all (or top-N with N >= {k})")
        provenance = Provenance("select", {"k": k}, recorded_model(source), [input_record(features, source.attrs)],
                                str(source.attrs.get("model_path", "")))
        writer, summary = start_stage(output, provenance, len(rows), force, replace_stale)
        if summary.skipped:
            return summary
        ids = read_ids(source)

        def compute(block: np.ndarray) -> dict:
            source_rows = rows[block]
            scores = take_rows(source["its_score"], source_rows)
            chosen = top_k_patches(scores, k)
            stored_index = take_rows(source["patch_index"], source_rows)
            stored = take_rows(source["patches"], source_rows)
            columns = {"ids": [ids[r] for r in source_rows],
                       "selected_index": chosen.astype(np.int32),
                       "selected_score": np.take_along_axis(scores, chosen, axis=1),
                       "selected": gather_patches(stored, stored_index, chosen)}
            for name in CARRIED:
                columns[name] = take_rows(source[name], source_rows)
            return columns

        return run_blocks(writer, summary, len(rows), compute, "select", "videos")


def _model_select_k(handle) -> int:
    from ..model.checkpoint import read_pig_config

    return read_pig_config(str(handle.attrs.get("model_path", ""))).select_k


def gather_patches(stored: np.ndarray, stored_index: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Features [N, k, D] of the chosen flat patch indices, looked up in the kept patches."""
    out = np.empty(chosen.shape + (stored.shape[-1],), np.float32)
    for i in range(len(chosen)):
        position = {int(p): j for j, p in enumerate(stored_index[i])}
        out[i] = stored[i][[position[int(p)] for p in chosen[i]]]
    return out
