"""`pig generate`: pseudo-queries q_hat from [x_v ; x_p ; x_f ; selected patches] (METHOD.md section 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..store import Provenance, input_record, open_stage_file, read_ids
from .common import StageSummary, batched, model_for_file, run_blocks, start_stage, take_rows
from .runtime import autocast, resolve_device

SELECT_HINT = "pig select feats.h5 -k 16 -o sel.h5"
CARRIED = ("video", "proxies", "frames")


def generate(selection: str | Path, output: str | Path, model: str | None = None, *, device: str = "auto",
             precision: str = "auto", batch_size: int = 256, force: bool = False,
             replace_stale: bool = False) -> StageSummary:

    torch_device, precision = resolve_device(device, precision)
    with open_stage_file(selection, ("select",), SELECT_HINT) as source:
        loaded = model_for_file(model, source, selection, torch_device,
                                "pig extract (then select) with this model")
        provenance = Provenance("generate", {"precision": precision}, loaded.identity.to_dict(),
                                [input_record(selection, source.attrs)], str(loaded.path.resolve()))
        total = source["ids"].shape[0]
        writer, summary = start_stage(output, provenance, total, force, replace_stale)
        if summary.skipped:
            return summary
        ids, pig = read_ids(source), loaded.model

        def compute(rows: np.ndarray) -> dict:
            columns = {"ids": [ids[r] for r in rows]}
            for name in CARRIED + ("selected",):
                columns[name] = take_rows(source[name], rows)
            tokens = np.concatenate([columns["video"][:, None], columns["proxies"], columns["frames"],
                                     columns.pop("selected")], axis=1)
            columns["pseudo_query"] = _run_generator(pig, tokens, batch_size, torch_device, precision)
            return columns

        return run_blocks(writer, summary, total, compute, "generate", "videos")


def _run_generator(pig, tokens: np.ndarray, batch_size: int, device, precision: str) -> np.ndarray:
    import torch

    out = np.empty((len(tokens), pig.embed_dim), np.float32)
    for part in batched(len(tokens), batch_size):
        with torch.inference_mode(), autocast(device, precision):
            q = pig.generate(torch.from_numpy(tokens[part]).to(device))
        out[part] = q.float().cpu().numpy()
    return out
