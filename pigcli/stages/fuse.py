"""`pig fuse`: one vector per video, the index (docs/method.md sections 4, 7 and 8).

--method pig:      e_v = fusioner(q_hat, [x_v ; x_p ; x_f])  (hybrid tower; needs a generate file)
--method meanpool: e_v = norm(mean_f x_f)                    (two-tower baseline; any file with frames)
--method eercf:    e_v = W_g norm(mean_f norm(x_f))          (EERCF's coarse vector; W_g from the model:
                   the identity until `pig train --method eercf` learns it; not renormalised)
The vectors come from pigcli.core.methods, as in training and validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.device import autocast, resolve_device
from ..choices import INDEX_METHODS, check_choice
from ..core.methods import video_embedding
from ..errors import PigError
from ..stagefiles import open_stage
from ..store import (Provenance, input_record, ok_rows, read_ids, recorded_model,
                     recorded_model_path, take_rows)
from .common import StageSummary, batched, run_blocks, start_stage

FUSE_METHODS = INDEX_METHODS
KEYS = ("video", "proxies", "frames")


class _HeadOnly:
    """What video_embedding needs of a model for --method eercf: the EERCF head, read alone."""

    def __init__(self, head):
        self.eercf = head


def fuse(source_path: str | Path, output: str | Path, model: str | None = None, *, method: str = "pig",
         device: str = "auto", precision: str = "auto", batch_size: int = 1024, force: bool = False,
         replace_stale: bool = False) -> StageSummary:
    from ..model.resolve import folder_for_file

    check_choice("--method", method, FUSE_METHODS)
    stages = ("generate",) if method == "pig" else ("extract", "select", "generate")  # the hint names the first
    with open_stage(source_path, *stages) as source:
        rows = ok_rows(source)
        ids = read_ids(source)
        torch_device, precision = resolve_device(device, precision) if method == "pig" else ("cpu", "fp32")
        if method == "meanpool":  # no weights involved: the index keeps the features' model identity
            pig, identity, model_path = None, recorded_model(source), recorded_model_path(source)
        else:
            rerun = "pig generate with this model" if method == "pig" else "pig extract with this model"
            folder = folder_for_file(model, source, source_path, rerun)
            # eercf needs only W_g: read alone from the weights, much faster than loading the model
            pig = folder.load(torch_device).model if method == "pig" else _HeadOnly(folder.load_eercf_head())
            identity, model_path = folder.identity.to_dict(), str(folder.path.resolve())
        provenance = Provenance("fuse", {"method": method, "precision": precision}, identity,
                                [input_record(source_path, source.attrs)], model_path)
        writer, summary = start_stage(output, provenance, len(rows), force, replace_stale, inputs=[source_path])
        if summary.skipped:
            return summary

        def compute(block: np.ndarray) -> dict:
            source_rows = rows[block]
            names = KEYS + (("pseudo_query",) if method == "pig" else ())
            columns = {name: take_rows(source[name], source_rows) for name in names}
            embedding = _embed(pig, method, columns, batch_size, torch_device, precision)
            block_ids = [ids[r] for r in source_rows]
            _refuse_non_finite(embedding, block_ids, int(block[0]))
            return {"ids": block_ids, "embedding": embedding, "norm": row_norm_bounds(embedding)}

        return run_blocks(writer, summary, len(rows), compute, "fuse", "videos", extra_attrs={"method": method})


def _refuse_non_finite(embedding: np.ndarray, ids: list[str], first_row: int, shown: int = 3) -> None:
    """An index row holding NaN or inf has no meaningful score (search ranks it last): refuse to
    write one, before its block is stored, naming how many rows of the block and the first ids."""
    bad = np.flatnonzero(~np.isfinite(embedding).all(axis=1))
    if bad.size:
        names = ", ".join(str(ids[i]) for i in bad[:shown]) + (", ..." if bad.size > shown else "")
        raise PigError(f"{bad.size} videos in rows {first_row}-{first_row + len(ids) - 1} get a NaN or "
                       f"inf embedding ({names}); no index written: check the input file and the model")


def row_norm_bounds(embedding: np.ndarray) -> np.ndarray:
    """Per-row L2 norms as float32 values never below the true norm (float64, rounded up): the bound
    that lets `pig rank` skip computing one per block (pigcli.core.search.exact_topk's row_norm_bound)."""
    exact = np.linalg.norm(np.asarray(embedding, np.float64), axis=1)
    return np.nextafter(exact.astype(np.float32), np.float32(np.inf))


def _embed(pig, method: str, columns: dict, batch_size: int, device, precision: str) -> np.ndarray:
    import torch

    count = len(columns["frames"])
    out = np.empty((count, columns["frames"].shape[-1]), np.float32)
    for part in batched(count, batch_size):
        t = {name: torch.from_numpy(np.asarray(values[part], np.float32)).to(device) for name, values in columns.items()}
        with torch.inference_mode(), autocast(torch.device(device), precision):
            embedding = video_embedding(pig, method, t["video"], t["proxies"], t["frames"], q_hat=t.get("pseudo_query"))
        out[part] = embedding.float().cpu().numpy()
    return out
