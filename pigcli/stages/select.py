"""`pig select`: the ITS tokens of every video, from the scores extract stored (docs/method.md s.2).

The choice itself is pigcli.core.selection's. The output also carries x_v, x_p and x_f so that
`generate` needs no other file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..choices import SELECTORS, check_choice
from ..core.selection import PatchIndexError, choose_patches, gather_patches
from ..errors import PigError
from ..model.resolve import select_k_for
from ..stagefiles import corrupt_extract, open_stage, require_extract_layout, require_kept_patches
from ..store import Provenance, input_record, ok_rows, read_ids, recorded_model, recorded_model_path, take_rows
from .common import StageSummary, run_blocks, start_stage

CARRIED = ("video", "proxies", "frames")


def select(features: str | Path, output: str | Path, k: int | None = None, model: str | None = None,
           force: bool = False, replace_stale: bool = False, selector: str = "its") -> StageSummary:
    """k: ITS tokens per video; default the select_k of the model (-m, else the one the features record).
    selector 'random' takes k random patches instead (an ablation: what ITS adds)."""
    check_choice("--selector", selector, SELECTORS, PigError)
    try:  # a damaged file can fail even its attributes (open_stage reads schema and stage)
        source = open_stage(features, "extract")
    except (OSError, RuntimeError) as err:
        raise corrupt_extract(features, f"cannot read it: {err}") from None
    with source:
        require_extract_layout(features, source, CARRIED)
        k = k or select_k_for(model, source, features)
        rows = _read(features, ok_rows, source)
        total_patches = source["its_score"].shape[1]
        if not 0 < k <= total_patches:
            raise PigError(f"-k must be between 1 and {total_patches} (the patches of a video), not {k}")
        require_kept_patches(features, source["patch_index"].shape[1], k)
        settings = {"k": k} if selector == "its" else {"k": k, "selector": selector}  # its: as files before
        provenance = Provenance("select", settings, recorded_model(source), [input_record(features, source.attrs)],
                                recorded_model_path(source))
        writer, summary = start_stage(output, provenance, len(rows), force, replace_stale, inputs=[features])
        if summary.skipped:
            return summary
        ids = _read(features, read_ids, source)

        def compute(block: np.ndarray) -> dict:
            try:  # reads only: an HDF5 error here is the input's (the writer's come later, in run_blocks)
                return read_block(block)
            except (OSError, RuntimeError) as err:
                raise corrupt_extract(features, f"cannot read its rows: {err}") from None

        def read_block(block: np.ndarray) -> dict:
            source_rows = rows[block]
            scores = take_rows(source["its_score"], source_rows)
            chosen = choose_patches(scores, k, selector)
            columns = {"ids": [ids[r] for r in source_rows],
                       "selected_index": chosen.astype(np.int32),
                       "selected_score": np.take_along_axis(scores, chosen, axis=1),
                       "selected": _gather(features, ids, source, source_rows, chosen)}
            for name in CARRIED:
                columns[name] = take_rows(source[name], source_rows)
            return columns

        return run_blocks(writer, summary, len(rows), compute, "select", "videos")


def _read(features, reader, source):
    try:
        return reader(source)
    except (OSError, RuntimeError) as err:
        raise corrupt_extract(features, f"cannot read it: {err}") from None


def _gather(features, ids: list[str], source, source_rows: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    try:
        return gather_patches(take_rows(source["patches"], source_rows),
                              take_rows(source["patch_index"], source_rows), chosen)
    except PatchIndexError as err:
        raise corrupt_extract(features, f"video {ids[source_rows[err.row]]!r}: its patch_index lacks patch "
                                        f"{err.patch}, which its its_score chooses") from None

