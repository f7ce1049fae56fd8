"""`pig select`: the ITS tokens of every video, from the scores extract stored (docs/method.md s.2).

The choice itself is pigcli.core.selection's. The output also carries x_v, x_p and x_f so that
`generate` needs no other file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.selection import SELECTORS, choose_patches, gather_patches, require_kept_patches
from ..errors import PigError
from ..store import (EXTRACT_HINT, Provenance, input_record, ok_rows, open_stage_file, read_ids,
                     recorded_model, recorded_model_path, take_rows)
from .common import StageSummary, run_blocks, start_stage

CARRIED = ("video", "proxies", "frames")


def select(features: str | Path, output: str | Path, k: int | None = None, model: str | None = None,
           force: bool = False, replace_stale: bool = False, selector: str = "its") -> StageSummary:
    """k: ITS tokens per video; default the select_k of the model (-m, else the one the features record).
    selector 'random' takes k random patches instead (an ablation: what ITS adds)."""
    if selector not in SELECTORS:
        raise PigError(f"--selector must be one of {', '.join(SELECTORS)}, not {selector!r}")
    with open_stage_file(features, ("extract",), EXTRACT_HINT) as source:
        k = k or _model_select_k(model, source, features)
        rows = ok_rows(source)
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
        ids = read_ids(source)

        def compute(block: np.ndarray) -> dict:
            source_rows = rows[block]
            scores = take_rows(source["its_score"], source_rows)
            chosen = choose_patches(scores, k, selector)
            columns = {"ids": [ids[r] for r in source_rows],
                       "selected_index": chosen.astype(np.int32),
                       "selected_score": np.take_along_axis(scores, chosen, axis=1),
                       "selected": gather_patches(take_rows(source["patches"], source_rows),
                                                  take_rows(source["patch_index"], source_rows), chosen)}
            for name in CARRIED:
                columns[name] = take_rows(source[name], source_rows)
            return columns

        return run_blocks(writer, summary, len(rows), compute, "select", "videos")


def _model_select_k(model: str | None, handle, path) -> int:
    from ..model.resolve import folder_for_file

    return folder_for_file(model, handle, path, "pig extract with this model, or pass -k").config.select_k
