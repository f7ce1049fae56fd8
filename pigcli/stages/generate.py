"""`pig generate`: pseudo-queries q_hat from [x_v ; x_p ; x_f ; selected patches] (docs/method.md s.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.device import autocast, resolve_device
from ..core.methods import pseudo_query
from ..model.resolve import folder_for_file
from ..stagefiles import open_stage
from ..store import Provenance, input_record, read_ids, take_rows
from .common import StageSummary, batched, run_blocks, start_stage

CARRIED = ("video", "proxies", "frames")


def generate(selection: str | Path, output: str | Path, model: str | None = None, *, device: str = "auto",
             precision: str = "auto", batch_size: int = 256, force: bool = False,
             replace_stale: bool = False) -> StageSummary:
    torch_device, precision = resolve_device(device, precision)
    with open_stage(selection, "select") as source:
        folder = folder_for_file(model, source, selection, "pig extract (then select) with this model")
        provenance = Provenance("generate", {"precision": precision}, folder.identity.to_dict(),
                                [input_record(selection, source.attrs)], str(folder.path.resolve()))
        total = source["ids"].shape[0]
        writer, summary = start_stage(output, provenance, total, force, replace_stale, inputs=[selection])
        if summary.skipped:
            return summary
        ids, pig = read_ids(source), folder.load(torch_device).model

        def compute(rows: np.ndarray) -> dict:
            columns = {"ids": [ids[r] for r in rows]}
            for name in CARRIED + ("selected",):
                columns[name] = take_rows(source[name], rows)
            columns["pseudo_query"] = _run_generator(pig, columns, batch_size, torch_device, precision)
            del columns["selected"]
            return columns

        return run_blocks(writer, summary, total, compute, "generate", "videos")


def _run_generator(pig, columns: dict, batch_size: int, device, precision: str) -> np.ndarray:
    import torch

    count = len(columns["video"])
    out = np.empty((count, pig.embed_dim), np.float32)
    for part in batched(count, batch_size):
        tokens = [torch.from_numpy(np.asarray(columns[name][part], np.float32)).to(device)
                  for name in CARRIED + ("selected",)]
        with torch.inference_mode(), autocast(device, precision):
            out[part] = pseudo_query(pig, *tokens).float().cpu().numpy()
    return out
