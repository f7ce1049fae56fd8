"""`pig fuse`: one vector per video, the index (METHOD.md sections 4 and 8).

--method pig:      e_v = fusioner(q_hat, [x_v ; x_p ; x_f])  (hybrid tower; needs a generate file)
--method meanpool: e_v = norm(mean_f x_f)                    (two-tower baseline; any file with frames)
--method eercf:    e_v = W_g norm(mean_f norm(x_f))          (EERCF's coarse vector, section 7; W_g from
                   the model: the identity until `pig train --method eercf` learns it; not renormalised)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..store import Provenance, input_record, ok_rows, open_stage_file, read_ids, recorded_model
from .common import StageSummary, batched, eercf_head_for_file, model_for_file, run_blocks, start_stage, take_rows
from .runtime import autocast, resolve_device

FUSE_METHODS = ("pig", "meanpool", "eercf")
GENERATE_HINT = "pig generate sel.h5 -m MODEL -o gen.h5"


def meanpool(frames: np.ndarray) -> np.ndarray:
    """[N, T, D] -> norm(mean_f x_f) [N, D]."""
    mean = frames.astype(np.float32).mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def fuse(source_path: str | Path, output: str | Path, model: str | None = None, *, method: str = "pig",
         device: str = "auto", precision: str = "auto", batch_size: int = 1024, force: bool = False,
         replace_stale: bool = False) -> StageSummary:
    if method not in FUSE_METHODS:
        raise UsageError(f"--method must be one of {', '.join(FUSE_METHODS)}, not {method!r}")
    stages = ("generate",) if method == "pig" else ("generate", "select", "extract")
    with open_stage_file(source_path, stages, GENERATE_HINT) as source:
        rows = ok_rows(source)
        ids = read_ids(source)
        if method == "pig":
            torch_device, precision = resolve_device(device, precision)
            loaded = model_for_file(model, source, source_path, torch_device, "pig generate with this model")
            identity, model_path = loaded.identity.to_dict(), str(loaded.path.resolve())
        elif method == "eercf":  # W_g only: read alone from the model's weights
            head, info = eercf_head_for_file(model, source, source_path, "pig extract with this model")
            precision, identity, model_path = "fp32", info.identity.to_dict(), str(info.path.resolve())
        else:  # no weights involved: the index keeps the features' model identity
            precision, identity = "fp32", recorded_model(source)
            model_path = str(source.attrs.get("model_path", ""))
        provenance = Provenance("fuse", {"method": method, "precision": precision}, identity,
                                [input_record(source_path, source.attrs)], model_path)
        writer, summary = start_stage(output, provenance, len(rows), force, replace_stale)
        if summary.skipped:
            return summary

        def compute(block: np.ndarray) -> dict:
            source_rows = rows[block]
            frames = take_rows(source["frames"], source_rows)
            if method == "meanpool":
                embedding = meanpool(frames)
            elif method == "eercf":
                embedding = _eercf_embedding(head, frames)
            else:
                embedding = _run_fusioner(loaded.model, take_rows(source["pseudo_query"], source_rows),
                                          take_rows(source["video"], source_rows),
                                          take_rows(source["proxies"], source_rows), frames,
                                          batch_size, torch_device, precision)
            return {"ids": [ids[r] for r in source_rows], "embedding": embedding, "norm": row_norm_bounds(embedding)}

        return run_blocks(writer, summary, len(rows), compute, "fuse", "videos", extra_attrs={"method": method})


def row_norm_bounds(embedding: np.ndarray) -> np.ndarray:
    """Per-row L2 norms as float32 values never below the true norm (float64, rounded up): the bound
    that lets `pig rank` skip computing one per block (pigcli.search.exact_topk's row_norm_bound)."""
    exact = np.linalg.norm(np.asarray(embedding, np.float64), axis=1)
    return np.nextafter(exact.astype(np.float32), np.float32(np.inf))


def _eercf_embedding(head, frames: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return head.video_embed(torch.from_numpy(np.asarray(frames, np.float32))).numpy()


def _run_fusioner(pig, query, video, proxies, frames, batch_size: int, device, precision: str) -> np.ndarray:
    import torch

    out = np.empty((len(query), pig.embed_dim), np.float32)
    for part in batched(len(query), batch_size):
        tensors = [torch.from_numpy(np.asarray(a[part], np.float32)).to(device) for a in (query, video, proxies, frames)]
        with torch.inference_mode(), autocast(device, precision):
            out[part] = pig.fuse(*tensors).float().cpu().numpy()
    return out
