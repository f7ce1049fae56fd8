"""`pig eval`: R@1/5/10, MdR, MnR, text-to-video and video-to-text (docs/method.md s.9).

Captions whose video is not in the index are counted and reported, never silently dropped; index
videos without a caption stay in the gallery as distractors (also reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..captions import group_paragraphs, load_captions
from ..errors import PigError, UsageError
from ..core.metrics import dsl as dual_softmax
from ..core.metrics import format_table, gt_ranks, retrieval_metrics, summarize
from ..store import open_stage_file, read_ids
from .rank import check_method, check_rerank
from .scoring import FEATURE_STAGES, INDEX_HINT, upstream_file, xpool_scores_blocks


@dataclass
class EvalReport:
    results: dict                      # {'t2v': {...}, 'v2t': {...}}
    method: str
    captions: int
    videos: int
    missing_videos: list[str] = field(default_factory=list)   # in the captions, not in the index
    uncaptioned_videos: int = 0
    dsl: bool = False
    paragraph: bool = False
    rerank_k: int = 0

    def to_dict(self) -> dict:
        return {"method": self.method, "dsl": self.dsl, "rerank": self.rerank_k, "paragraph": self.paragraph,
                "captions": self.captions,
                "videos": self.videos, "missing_videos": len(self.missing_videos),
                "uncaptioned_videos": self.uncaptioned_videos, "ties": "pessimistic", **self.results}

    def table(self) -> str:
        title = f"{self.method}{f' + EERCF rerank {self.rerank_k}' if self.rerank_k else ''}" \
                f"{' + DSL (needs all queries at once: not an online method)' if self.dsl else ''}: " \
                f"{self.captions} {'paragraphs' if self.paragraph else 'captions'}, {self.videos} videos"
        return format_table(self.results, title)


def evaluate(index: str | Path, captions_path: str | Path, *, model: str | None = None, method: str = "index",
             features: str | Path | None = None, paragraph: bool = False, dsl: bool = False,
             device: str = "auto", rerank_k: int = 0, rerank_weights=None) -> EvalReport:
    """Retrieval metrics of the index (or xpool) on these captions. rerank_k > 0: EERCF rerank of each
    caption's top rerank_k first (docs/method.md s.7; text-to-video only, as rerank is per query)."""
    from ..core.device import resolve_device
    from ..core.text import embed_texts
    from ..model.resolve import folder_for_file

    check_method(method)
    check_rerank(rerank_k, method)
    if rerank_k and dsl:
        raise UsageError("--rerank and --dsl do not combine: DSL rescores with all queries at once")
    captions = load_captions(captions_path)
    if paragraph:
        captions = group_paragraphs(captions)
    torch_device, _ = resolve_device(device)
    with open_stage_file(index, ("fuse",), INDEX_HINT) as handle:
        video_ids = read_ids(handle)
        embedding = handle["embedding"][:] if method == "index" else None  # xpool scores from the tokens
        loaded = folder_for_file(model, handle, index, "pig index with this model").load(torch_device)
    column = {vid: i for i, vid in enumerate(video_ids)}
    kept = [c for c in captions if c.video_id in column]
    missing = sorted({c.video_id for c in captions if c.video_id not in column})
    if not kept:
        raise PigError(f"none of the {len(captions)} captions in {captions_path} names a video of {index} "
                       f"(e.g. caption video {captions[0].video_id!r}, index video {video_ids[0]!r})")
    text, _ = embed_texts(loaded, [c.text for c in kept], device=torch_device)
    if method == "index":
        sim = text @ embedding.T
    else:
        features = features or upstream_file(index, FEATURE_STAGES)
        if features is None:
            raise PigError("--method xpool needs the token features of the index's videos: pass --features feats.h5")
        sim = np.concatenate([s.numpy() for _, s in xpool_scores_blocks(loaded.model, features, video_ids, text,
                                                                       torch_device)], axis=1)
    if dsl:
        sim = dual_softmax(sim)
    caption_video = np.array([column[c.video_id] for c in kept])
    if rerank_k:
        from .rerank import reranked_similarity

        features = features or upstream_file(index, ("extract",))
        if features is None:
            raise PigError("--rerank needs the token features of the index's videos: pass --features feats.h5")
        sim = reranked_similarity(sim, text, features, video_ids, rerank_k, rerank_weights, loaded.model.eercf,
                                  loaded.identity.to_dict())
        results = {"t2v": summarize(gt_ranks(sim, caption_video))}
    else:
        results = retrieval_metrics(sim, caption_video)
    return EvalReport(results, method, len(kept), len(video_ids), missing,
                      len(video_ids) - len(set(caption_video.tolist())), dsl, paragraph, rerank_k)
