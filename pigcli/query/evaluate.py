"""`pig eval`: R@1/5/10, MdR, MnR, text-to-video and video-to-text (docs/method.md s.9).

Captions whose video is not in the index are counted and reported, never silently dropped; index
videos without a caption stay in the gallery as distractors (also reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..inputs.captions import group_paragraphs, load_captions
from ..errors import PigError, UsageError
from ..core.metrics import dsl as dual_softmax
from ..core.metrics import format_table, gt_ranks, retrieval_metrics, summarize
from ..store import read_ids
from .rank import check_method, check_rerank
from ..stagefiles import FEATURE_STAGES, open_stage, upstream_file
from .scoring import xpool_scores_blocks


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
    rerank_weights: object = None      # the RerankWeights used when rerank_k > 0

    def to_dict(self) -> dict:
        weights = {} if self.rerank_weights is None else {"rerank_weights": {
            key: getattr(self.rerank_weights, key) for key in ("fw", "fs", "pw", "coarse", "ps")}}
        return {"method": self.method, "dsl": self.dsl, "rerank": self.rerank_k, **weights,
                "paragraph": self.paragraph, "captions": self.captions,
                "videos": self.videos, "missing_videos": len(self.missing_videos),
                "uncaptioned_videos": self.uncaptioned_videos, "ties": "pessimistic", **self.results}

    def table(self) -> str:
        title = f"{self.method}{f' + EERCF rerank {self.rerank_k}' if self.rerank_k else ''}" \
                f"{' + DSL (needs all queries at once: not an online method)' if self.dsl else ''}: " \
                f"{self.captions} {'paragraphs' if self.paragraph else 'captions'}, {self.videos} videos"
        return format_table(self.results, title)


@dataclass
class EvalInputs:
    """What eval and tune-rerank score: the index, its model, and the captions that name its videos."""

    index: Path
    folder: object                     # the index's ModelFolder
    loaded: object                     # its LoadedModel
    device: object                     # torch device
    video_ids: list[str]
    captions: list                     # the captions kept (their video is in the index)
    missing: list[str]                 # captioned videos not in the index
    text: np.ndarray                   # [Q, D] caption embeddings
    caption_video: np.ndarray          # [Q] index row of each caption's video
    embedding: np.ndarray | None       # [N, D] the index (None for --method xpool)

    def index_similarity(self) -> np.ndarray:
        """[Q, N] caption x video scores of the index."""
        return self.text @ self.embedding.T

    @property
    def uncaptioned_videos(self) -> int:
        return len(self.video_ids) - len(set(self.caption_video.tolist()))


def load_eval_inputs(index: str | Path, captions_path: str | Path, *, model: str | None = None,
                     method: str = "index", paragraph: bool = False, device: str = "auto") -> EvalInputs:
    """Read the index and its model, keep the captions whose video is in the index, embed them (paragraphs:
    at least 64 tokens, docs/method.md s.5); a warning names the captions cut to the token limit."""
    from ..core.device import resolve_device
    from ..core.text import embed_texts, text_token_limit
    from ..model.resolve import folder_for_file
    from ..inputs.captions import report_truncated

    captions = load_captions(captions_path)
    if paragraph:
        captions = group_paragraphs(captions)
    torch_device, _ = resolve_device(device)
    with open_stage(index, "fuse") as handle:
        video_ids = read_ids(handle)
        embedding = handle["embedding"][:] if method == "index" else None  # xpool scores from the tokens
        folder = folder_for_file(model, handle, index, "pig index with this model")
    loaded = folder.load(torch_device)
    column = {vid: i for i, vid in enumerate(video_ids)}
    kept = [c for c in captions if c.video_id in column]
    missing = sorted({c.video_id for c in captions if c.video_id not in column})
    if not kept:
        raise PigError(f"none of the {len(captions)} captions in {captions_path} names a video of {index} "
                       f"(e.g. caption video {captions[0].video_id!r}, index video {video_ids[0]!r})")
    max_tokens = text_token_limit(loaded.model.config.max_text_tokens, paragraph)
    text, truncated = embed_texts(loaded, [c.text for c in kept], max_tokens=max_tokens, device=torch_device)
    report_truncated([c.caption_id for c in kept], truncated, max_tokens, "paragraphs" if paragraph else "captions")
    caption_video = np.array([column[c.video_id] for c in kept])
    return EvalInputs(Path(index), folder, loaded, torch_device, video_ids, kept, missing, text, caption_video,
                      embedding)


def evaluate(index: str | Path, captions_path: str | Path, *, model: str | None = None, method: str = "index",
             features: str | Path | None = None, paragraph: bool = False, dsl: bool = False,
             device: str = "auto", rerank_k: int | str = 0, rerank_weights=None) -> EvalReport:
    """Retrieval metrics of the index (or xpool) on these captions. rerank_k > 0: EERCF rerank of each
    caption's top rerank_k first (docs/method.md s.7; text-to-video only, as rerank is per query);
    "auto": the model's tuned K (rerank.json), else 50. rerank_weights: see query.rerank.resolve_rerank
    (None: the model's rerank.json, else the defaults)."""
    from .rerank import find_features, reranked_similarity, resolve_rerank

    check_method(method)
    check_rerank(rerank_k, method)
    if rerank_k and dsl:
        raise UsageError("--rerank and --dsl do not combine: DSL rescores with all queries at once")
    inputs = load_eval_inputs(index, captions_path, model=model, method=method, paragraph=paragraph, device=device)
    plan = resolve_rerank(rerank_k, rerank_weights, inputs.folder)
    if method == "index":
        sim = inputs.index_similarity()
    else:
        features = features or upstream_file(index, FEATURE_STAGES)
        if features is None:
            raise PigError("--method xpool needs the token features of the index's videos: pass --features feats.h5")
        sim = np.concatenate([s.numpy() for _, s in xpool_scores_blocks(inputs.loaded.model, features, inputs.video_ids,
                                                                       inputs.text, inputs.device)], axis=1)
    if dsl:
        sim = dual_softmax(sim)
    if plan.k:
        sim = reranked_similarity(sim, inputs.text, find_features(index, features), inputs.video_ids, plan.k,
                                  plan.weights, inputs.loaded.model.eercf, inputs.loaded.identity.to_dict())
        results = {"t2v": summarize(gt_ranks(sim, inputs.caption_video))}
    else:
        results = retrieval_metrics(sim, inputs.caption_video)
    return EvalReport(results, method, len(inputs.captions), len(inputs.video_ids), inputs.missing,
                      inputs.uncaptioned_videos, dsl, paragraph, plan.k, plan.weights if plan.k else None)
