"""`pig embed-text`: e_t = norm(text_projection(EOS state of CLIP's text encoder)) (docs/method.md s.5),
computed by the model's text side alone (pigcli.model.text_encoder reads no video-side weights).

Text longer than the model's max_text_tokens (50 by default, the PIG supplement's setting; paragraphs:
at least 64) is truncated with its end token kept; the run says which queries were cut.

The queries are part of the output's fingerprint, so an unfinished run over other queries (a run that
failed, then the file was fixed) is discarded with a note rather than refused: embedding is cheap.
An existing finished output made from other queries is still only replaced with --force.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..inputs.captions import load_queries, report_truncated
from ..console import warn
from ..core.text import text_token_limit
from ..store import Provenance, json_hash
from .common import StageSummary, run_blocks, start_stage


def embed_text(source, output: str | Path, model: str | None = None, *, max_tokens: int | None = None,
               device: str = "auto", precision: str = "auto", batch_size: int = 256, paragraph: bool = False,
               force: bool = False) -> StageSummary:
    """Embed queries from a text file (one per line), a CSV/JSONL with ids, or '-' (stdin), with the
    model's text side alone (pigcli.model.text_encoder).
    paragraph: one query per video of a captions file, its captions joined, at least 64 tokens."""
    from ..model.text_encoder import load_text_encoder

    queries, warnings = load_queries(source, paragraph)
    for message in warnings:
        warn(message)
    encoder = load_text_encoder(model, device, precision)
    max_tokens = max_tokens or text_token_limit(encoder.max_tokens, paragraph)
    provenance = Provenance(
        "embed-text", {"max_tokens": max_tokens, "precision": encoder.precision}, encoder.identity.to_dict(),
        [{"path": str(source), "queries": len(queries), "fingerprint": json_hash([(q.id, q.text) for q in queries])}],
        str(encoder.path.resolve()),
    )
    # embedding text is cheap: a run over other queries left unfinished (e.g. one that failed on a bad
    # file) is discarded rather than blocking the corrected rerun
    writer, summary = start_stage(output, provenance, len(queries), force, discard_stale_partial=True,
                                  inputs=[source] if isinstance(source, (str, Path)) else [])
    if summary.skipped:
        return summary
    all_truncated = np.zeros(len(queries), bool)

    def compute(rows: np.ndarray) -> dict:
        chosen = [queries[r] for r in rows]
        embedding, truncated = encoder.encode([q.text for q in chosen], batch_size, max_tokens=max_tokens)
        all_truncated[rows] = truncated
        return {"ids": [q.id for q in chosen], "text": [q.text for q in chosen], "embedding": embedding,
                "truncated": truncated}

    run_blocks(writer, summary, len(queries), compute, "embed-text", "queries")
    report_truncated([q.id for q in queries], all_truncated, max_tokens)
    return summary
