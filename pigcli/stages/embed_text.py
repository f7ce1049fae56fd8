"""`pig embed-text`: e_t = norm(text_projection(EOS state of CLIP's text encoder)) (METHOD.md section 5).

Text longer than the model's max_text_tokens (50 by default, the PIG supplement's setting) is
truncated with its end token kept; the run says which queries were cut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..captions import Query, load_queries
from ..console import warn
from ..store import Provenance, json_hash
from .common import StageSummary, batched, run_blocks, start_stage
from .runtime import autocast, resolve_device


def embed_texts(loaded, texts: list[str], *, max_tokens: int | None = None, batch_size: int = 256,
                device=None, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (e_t [Q, D] float32, truncated [Q] bool) with a loaded model."""
    import torch

    pig, tokenizer = loaded.model, loaded.tokenizer
    device = device or next(pig.parameters()).device
    max_tokens = max_tokens or pig.config.max_text_tokens
    lengths = np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]])
    out = np.empty((len(texts), pig.embed_dim), np.float32)
    for part in batched(len(texts), batch_size):
        batch = tokenizer(texts[part], padding="max_length", truncation=True, max_length=max_tokens,
                          return_tensors="pt")
        with torch.inference_mode(), autocast(device, precision):
            emb = pig.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        out[part] = emb.float().cpu().numpy()
    return out, lengths > max_tokens


def report_truncated(queries: list[Query], truncated: np.ndarray, max_tokens: int) -> None:
    cut = [q.id for q, t in zip(queries, truncated) if t]
    if cut:
        shown = ", ".join(cut[:10]) + (f" (+{len(cut) - 10} more)" if len(cut) > 10 else "")
        warn(f"{len(cut)} queries longer than {max_tokens} tokens were truncated: {shown}")


def embed_text(source, output: str | Path, model: str | None = None, *, max_tokens: int | None = None,
               device: str = "auto", precision: str = "auto", batch_size: int = 256,
               force: bool = False) -> StageSummary:
    """Embed queries from a text file (one per line), a CSV/JSONL with ids, or '-' (stdin)."""
    from ..model.checkpoint import resolve_model

    queries, warnings = load_queries(source)
    for message in warnings:
        warn(message)
    torch_device, precision = resolve_device(device, precision)
    loaded = resolve_model(model, torch_device)
    max_tokens = max_tokens or loaded.model.config.max_text_tokens
    provenance = Provenance(
        "embed-text", {"max_tokens": max_tokens, "precision": precision}, loaded.identity.to_dict(),
        [{"path": str(source), "queries": len(queries), "fingerprint": json_hash([(q.id, q.text) for q in queries])}],
        str(loaded.path.resolve()),
    )
    writer, summary = start_stage(output, provenance, len(queries), force)
    if summary.skipped:
        return summary
    all_truncated = np.zeros(len(queries), bool)

    def compute(rows: np.ndarray) -> dict:
        chosen = [queries[r] for r in rows]
        embedding, truncated = embed_texts(loaded, [q.text for q in chosen], max_tokens=max_tokens,
                                           batch_size=batch_size, device=torch_device, precision=precision)
        all_truncated[rows] = truncated
        return {"ids": [q.id for q in chosen], "text": [q.text for q in chosen], "embedding": embedding,
                "truncated": truncated}

    run_blocks(writer, summary, len(queries), compute, "embed-text", "queries")
    report_truncated(queries, all_truncated, max_tokens)
    return summary
