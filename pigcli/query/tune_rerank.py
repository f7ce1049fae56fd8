"""`pig tune-rerank`: choose EERCF's rerank K and weights on VALIDATION captions (docs/method.md s.7).

Every setting of a small grid (K x w_coarse x w_fw x w_fs x w_pw) is scored by the text-to-video R@1
of the reranked ranking, ties broken by R@5, then MdR (lower), then the smaller K, computed as
`pig eval --rerank K` computes it (the same candidates, fine scores, reorder and lift: query/rerank.py).
The fine scores of the candidates are computed once, for the largest K; every weight setting and every
smaller K reorders a prefix of them, so the grid costs one rerank plus a metric per setting.

The plain index (no rerank) is the baseline: a setting is chosen only if it beats it by the same order;
otherwise the choice is "off" (K = 0). The choice is written to the index model's folder as
rerank.json (ModelFolder.write_rerank), which `pig rank --rerank` and `pig eval --rerank` then use.

Tune on validation videos and captions only: weights chosen on the test split would make its
metrics optimistic.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.metrics import gt_ranks, summarize
from ..errors import UsageError

GRID_K = (10, 20, 50, 100)
GRID_COARSE = (0.5, 1.0, 2.0)
GRID_FINE = (0.0, 0.2, 0.5, 1.0)  # each of w_fw, w_fs, w_pw
SHOW = 5  # settings shown in the table, after the baseline


@dataclass(frozen=True)
class Setting:
    """One grid point: rerank the top k with these weights."""

    k: int
    weights: object  # RerankWeights

    def label(self) -> str:
        w = self.weights
        return f"{self.k:>4}  {w.fw:>5g} {w.fs:>5g} {w.pw:>5g} {w.coarse:>8g}"


@dataclass
class Scored:
    setting: Setting | None  # None: the plain index (no rerank)
    metrics: dict            # summarize(): R@1, R@5, R@10, MdR, MnR, count

    def key(self) -> tuple:
        """Larger is better: R@1, then R@5, then MdR lower, then a smaller K (cheaper)."""
        k = self.setting.k if self.setting is not None else 0
        return (self.metrics["R@1"], self.metrics["R@5"], -self.metrics["MdR"], -k)


@dataclass
class TuneReport:
    baseline: Scored
    scored: list[Scored]              # every grid setting, best first
    best: Scored                      # the best setting (it may not beat the baseline)
    k: int                            # the choice: best.setting.k, or 0 ("off")
    captions: int
    videos: int
    written: Path | None = None       # rerank.json, unless dry_run
    tuned: object = None              # the TunedRerank written (or that would be)
    notes: list[str] = field(default_factory=list)

    @property
    def off(self) -> bool:
        return self.k == 0

    def table(self, show: int = SHOW) -> str:
        """The baseline and the best `show` settings, the choice marked."""
        head = f"{'':2}{'K':>4}  {'w_fw':>5} {'w_fs':>5} {'w_pw':>5} {'w_coarse':>8}  {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MdR':>6}"
        lines = [f"tune-rerank: {len(self.scored)} settings on {self.captions} captions, {self.videos} videos "
                 "(text-to-video; ties pessimistic)", head]

        def row(item: Scored, label: str, chosen: bool) -> str:
            m = item.metrics
            return (f"{'*' if chosen else ' '} {label:<32}  {m['R@1']:>6.1f} {m['R@5']:>6.1f} {m['R@10']:>6.1f} "
                    f"{m['MdR']:>6.1f}")

        lines.append(row(self.baseline, "   0  no rerank (the plain index)", self.off))
        for i, item in enumerate(self.scored[:show]):
            lines.append(row(item, item.setting.label(), not self.off and i == 0))
        before, after = self.baseline.metrics["R@1"], self.best.metrics["R@1"]
        if self.off:
            lines.append(f"choice: off: no setting beats the plain index (best rerank R@1 {after:.1f} vs {before:.1f})")
        else:
            from .rerank import format_weights

            lines.append(f"choice: rerank the top {self.k}, {format_weights(self.best.setting.weights)} "
                         f"(R@1 {before:.1f} -> {after:.1f})")
        return "\n".join(lines)


def default_grid(n_videos: int, has_patches: bool = True, ks: Sequence[int] = GRID_K) -> list[Setting]:
    """K in `ks` capped at the number of videos; w_coarse in GRID_COARSE; w_fw, w_fs, w_pw in GRID_FINE,
    not all zero (that is the plain index again); w_pw only 0 without stored patches."""
    from ..model.eercf import RerankWeights

    k_values = sorted({min(k, n_videos) for k in ks if k >= 1})
    pw_values = GRID_FINE if has_patches else (0.0,)
    return [Setting(k, RerankWeights(fw=fw, fs=fs, pw=pw, coarse=coarse))
            for k, coarse, fw, fs, pw in itertools.product(k_values, GRID_COARSE, GRID_FINE, GRID_FINE, pw_values)
            if (fw, fs, pw) != (0.0, 0.0, 0.0)]


def score_settings(sim: np.ndarray, caption_video: np.ndarray, candidates, settings: Sequence[Setting]) -> list[Scored]:
    """Text-to-video metrics of each setting, from one CandidateScores of the largest K (a smaller K
    reorders the first K columns): the ranking `pig eval --rerank K` scores, per setting."""
    from .rerank import lift_reranked

    out = []
    for setting in settings:
        if setting.k > candidates.k:
            raise ValueError(f"setting K {setting.k} is above the {candidates.k} candidates scored")
        rows, combined = candidates.reorder(setting.weights, setting.k)
        out.append(Scored(setting, summarize(gt_ranks(lift_reranked(sim, rows, combined), caption_video))))
    return out


def tune_rerank(index: str | Path, captions: str | Path, *, model: str | None = None,
                features: str | Path | None = None, device: str = "auto", grid: Sequence[Setting] | None = None,
                dry_run: bool = False, report: bool = True) -> TuneReport:
    """Choose the rerank K and weights of the index's model on validation captions and write them to
    its folder's rerank.json (not with dry_run). grid: the settings to try (default: default_grid);
    report: print the table and the path to stderr. The index must hold validation videos only."""
    from ..console import err_console, warn
    from ..model.checkpoint import TunedRerank
    from .evaluate import load_eval_inputs
    from .rerank import candidate_scores, coarse_top, find_features

    notes = []
    if "test" in Path(captions).name.lower():
        notes.append(f"{captions} looks like test captions: tune on the validation split only "
                     "(weights chosen on test make its metrics optimistic)")
    inputs = load_eval_inputs(index, captions, model=model, device=device)
    if inputs.missing:
        notes.append(f"{len(inputs.missing)} captioned videos are not in the index and were left out "
                     f"(e.g. {', '.join(inputs.missing[:5])})")
    features = find_features(index, features)
    sim = inputs.index_similarity()
    n_videos = sim.shape[1]
    baseline = Scored(None, summarize(gt_ranks(sim, inputs.caption_video)))  # = pig eval's t2v, no rerank

    k_max = min(max(GRID_K) if grid is None else max((s.k for s in grid), default=0), n_videos)
    if k_max < 1:
        raise UsageError("the rerank grid is empty")
    rows, coarse = coarse_top(sim, k_max)
    candidates = candidate_scores(inputs.text, rows, coarse, features, inputs.video_ids,
                                  inputs.loaded.model.eercf, inputs.loaded.identity.to_dict(),
                                  with_ps=grid is not None and any(s.weights.ps != 0 for s in grid))
    if grid is None:
        grid = default_grid(n_videos, candidates.has_patches)
    grid = [s if s.k <= n_videos else Setting(n_videos, s.weights) for s in grid]
    if not candidates.has_patches:
        grid = [Setting(s.k, s.weights.without_patches()) for s in grid]
    scored = score_settings(sim, inputs.caption_video, candidates, grid)
    order = sorted(range(len(scored)), key=lambda i: (scored[i].key(), -i), reverse=True)  # ties: grid order
    scored = [scored[i] for i in order]
    best = scored[0]
    k = best.setting.k if best.key()[:3] > baseline.key()[:3] else 0
    tuned = TunedRerank(k, best.setting.weights, str(captions), n_videos, baseline.metrics["R@1"],
                        best.metrics["R@1"], extra={"index": str(index), "captions": len(inputs.captions),
                                                    "settings_tried": len(scored)})
    result = TuneReport(baseline, scored, best, k, len(inputs.captions), n_videos, None, tuned, notes)
    if not dry_run:
        result.written = inputs.folder.write_rerank(tuned)
        result.tuned = inputs.folder.rerank
    if report:
        for note in notes:
            warn(note)
        err_console.print(result.table(), markup=False)
        if result.written:
            err_console.print(f"wrote {result.written} (pig rank/eval --rerank use it)", markup=False)
    return result
