"""Validation after every epoch: text-to-video and video-to-text metrics on the validation split.

Each method is scored the way its index would be: e_t . e_v for pig, meanpool and eercf, and
e_t . fuse(e_t, [x_v; x_p; x_f]) for xpool. The best checkpoint is the one with the highest
text-to-video R@1 (ties broken by R@5, then R@10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.device import autocast
from ..core.methods import xpool_scores
from ..core.metrics import retrieval_metrics
from ..core.text import embed_texts
from .data import PairSet
from .forward import encode_pixels, head_embedding


@dataclass
class Validator:
    """Scores the validation split with the model of `loaded` (the one being trained)."""

    loaded: object                  # LoadedModel: the model and its tokenizer
    source: object                  # FeatureSource | VideoSource | FrameSource holding the validation videos
    pairs: PairSet                  # validation videos and their captions
    method: str
    backbone: str
    batch_size: int
    device: torch.device
    precision: str
    selector: str = "its"           # how the generator's patches are chosen (core.selection)
    max_tokens: int | None = None   # text tokens kept per caption (None: the model's max_text_tokens)

    @torch.no_grad()
    def __call__(self) -> dict:
        """Text-to-video and video-to-text metrics of the model as it is now."""
        pig = self.loaded.model
        pig.eval()
        parts, keep = self._videos()
        texts = [text for caps, ok in zip(self.pairs.captions, keep) if ok for text in caps]
        caption_video = np.repeat(np.arange(int(keep.sum())),
                                  [len(c) for c, ok in zip(self.pairs.captions, keep) if ok])
        text, _ = embed_texts(self.loaded, texts, max_tokens=self.max_tokens, device=self.device,
                              precision=self.precision)
        sim = self._scores(torch.from_numpy(text).to(self.device), parts, torch.from_numpy(keep).to(self.device))
        return retrieval_metrics(sim, caption_video)

    def _videos(self) -> tuple[list, np.ndarray]:
        """Per block of videos: e_v [b, D] (xpool: its keys x_v, x_p, x_f); and which videos decoded."""
        pig = self.loaded.model
        rows = np.array([self.source.row_of(v) for v in self.pairs.video_ids])
        blocks = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        parts, valid = [], []
        for batch in self.source.iterate(blocks):
            with autocast(self.device, self.precision):
                inputs = (encode_pixels(pig, batch.pixels.to(self.device), self.backbone, self.selector) if batch.pixels is not None
                          else batch.tokens.to(self.device))
                if self.method == "xpool":
                    parts.append([t.float() for t in (inputs.video, inputs.proxies, inputs.frames)])
                else:
                    parts.append(head_embedding(pig, inputs, self.method).float())
            valid.append(batch.valid.cpu().numpy())
        return parts, np.concatenate(valid)

    def _scores(self, text: torch.Tensor, parts: list, keep: torch.Tensor) -> np.ndarray:
        """[captions, valid videos] scores e_t . e_v (xpool: e_t . fuse(e_t, keys), block by block)."""
        if self.method != "xpool":
            video = torch.cat(parts)[keep]
            return (text @ video.T).float().cpu().numpy()
        keys = [torch.cat([p[i] for p in parts])[keep] for i in range(3)]
        blocks = []
        for start in range(0, keys[0].shape[0], self.batch_size):
            block = [k[start : start + self.batch_size] for k in keys]
            with autocast(self.device, self.precision):
                blocks.append(xpool_scores(self.loaded.model, text, *block).float())
        return torch.cat(blocks, dim=1).cpu().numpy()


def is_better(metrics: dict | None, best: dict | None) -> bool:
    """Whether validation metrics beat the best so far (None: no validation, never better)."""
    return metrics is not None and (best is None or _metric_key(metrics) > _metric_key(best))


def _metric_key(metrics: dict) -> tuple:
    """Best = highest t2v R@1; ties broken by R@5, then R@10 (small validation sets tie often)."""
    t2v = metrics["t2v"]
    return (t2v["R@1"], t2v["R@5"], t2v["R@10"])


def summary(metrics: dict | None) -> str:
    """One line for the console: t2v R@1, R@5, R@10 and median rank."""
    if not metrics:
        return "no validation"
    t2v = metrics["t2v"]
    return f"val t2v R@1 {t2v['R@1']:.1f} R@5 {t2v['R@5']:.1f} R@10 {t2v['R@10']:.1f} MdR {t2v['MdR']:.1f}"
