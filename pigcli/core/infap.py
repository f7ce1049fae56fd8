"""Inferred AP with stratified sampling (xinfAP), as TRECVID's sample_eval.pl estimates it.

TRECVID judges only a sample of each topic's pooled shots: the pool is split into strata (say the top
ranks of every run, then deeper ranks) and each stratum s is judged at its own rate. The qrels list
every pooled shot with its stratum and a judgement: -1 pooled but not judged, 0 not relevant, 1 (or
more) relevant. Yilmaz, Kanoulas and Aslam (SIGIR 2008, "A simple and efficient sampling method for
estimating AP and NDCG") estimate AP from it; sample_eval.pl computes, per topic:

- per stratum: N_s pooled shots, n_s judged (judgement >= 0), r_s judged relevant (> 0);
  the number of relevant shots R = sum over strata with n_s > 0 of r_s * N_s / n_s;
- walking the run from the top (at most `depth` shots): at a judged relevant shot at rank k, its
  precision is (1 + sum_s d_s * (m_s + a) / (j_s + b)) / k, where above rank k d_s shots of the run
  were pooled in stratum s, j_s of them judged and m_s judged relevant, and (a, b) = (1e-5, 3e-5)
  smooths an empty stratum; the shot's precision adds to its stratum's sum S_s;
- infAP = sum_s (r_s N_s / n_s) / R * S_s / r_s = sum_s (N_s / n_s) * S_s / R (S_s is 0 where r_s
  is), multiplied by R / depth when R exceeds the depth (a run cannot retrieve more than `depth`);
- inferred P@c: sum_s d_s * (m_s + a) / (j_s + b) over the top c shots (the shot at rank c
  included), divided by c; a run shorter than c keeps its last estimate.

trec_eval's infAP is the one-stratum case with b = 2e-5 (TREC_EVAL_SMOOTHING); tests/test_trec.py
checks that against trec_eval itself. The run is ordered as both tools order it: by score, then by
shot id descending (string order), whatever the rank column says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SAMPLE_EVAL_SMOOTHING = (1e-5, 3e-5)  # sample_eval.pl: (relevant above + 1e-5) / (judged above + 3e-5)
TREC_EVAL_SMOOTHING = (1e-5, 2e-5)    # trec_eval's infAP: (relevant above + 1e-5) / (judged above + 2e-5)
DEPTH = 1000                          # shots per topic that count (TRECVID AVS runs submit up to 1000)
CUTOFFS = (10, 100, 1000)             # the inferred precisions sample_eval.pl prints (iP10, iP100, iP1000)


@dataclass(frozen=True)
class Judgement:
    stratum: str
    relevance: int  # -1 pooled but not judged, 0 not relevant, > 0 relevant

    @property
    def judged(self) -> bool:
        return self.relevance >= 0

    @property
    def relevant(self) -> bool:
        return self.relevance > 0


@dataclass
class InferredScores:
    infap: float
    precision: dict[int, float]   # cutoff -> inferred precision at that cutoff
    relevant: float               # estimated relevant shots of the topic (R)
    relevant_retrieved: float     # estimated relevant shots in the run's top `depth`
    retrieved: int                # shots of the run that count (at most `depth`)


@dataclass
class _StratumCounts:
    """Per stratum: pooled shots, judged ones and judged relevant ones (of the qrels, or of a run's top)."""
    pooled: Counter = field(default_factory=Counter)
    judged: Counter = field(default_factory=Counter)
    relevant: Counter = field(default_factory=Counter)

    def add(self, judgement: Judgement) -> None:
        self.pooled[judgement.stratum] += 1
        self.judged[judgement.stratum] += judgement.judged
        self.relevant[judgement.stratum] += judgement.relevant

    def smoothed_relevant(self, smoothing: tuple[float, float]) -> float:
        """Relevant shots among those counted, each stratum's pooled shots times its smoothed rate."""
        a, b = smoothing
        return sum(d * (self.relevant[s] + a) / (self.judged[s] + b) for s, d in self.pooled.items() if d)


def _counts(judgements: Iterable[Judgement]) -> _StratumCounts:
    counts = _StratumCounts()
    for judgement in judgements:
        counts.add(judgement)
    return counts


def run_order(scores: Mapping[str, float]) -> list[str]:
    """Shot ids by score, highest first; ties by shot id, descending (sample_eval.pl and trec_eval)."""
    shots = sorted(scores, reverse=True)
    shots.sort(key=lambda shot: -scores[shot])  # stable: ties keep the descending id order
    return shots


def estimated_relevant(judgements: Mapping[str, Judgement]) -> float:
    """R: judged relevant shots of each stratum scaled by that stratum's sampling rate (N_s / n_s)."""
    counts = _counts(judgements.values())
    return sum(counts.relevant[s] * n / counts.judged[s] for s, n in counts.pooled.items() if counts.judged[s])


def inferred_ap(ranked: Sequence[str], judgements: Mapping[str, Judgement], depth: int = DEPTH,
                cutoffs: Sequence[int] = CUTOFFS,
                smoothing: tuple[float, float] = SAMPLE_EVAL_SMOOTHING) -> InferredScores:
    """infAP and inferred P@cutoffs of one topic's ranked shot ids (best first) against its judgements."""
    pool = _counts(judgements.values())
    total_relevant = estimated_relevant(judgements)
    above = _StratumCounts()
    precision_sums: Counter = Counter()  # S_s
    retrieved_estimates: list[float] = []
    for rank, shot in enumerate(ranked[:depth], start=1):
        judgement = judgements.get(shot)
        if judgement is not None and judgement.relevant:
            precision_sums[judgement.stratum] += (1 + above.smoothed_relevant(smoothing)) / rank
        if judgement is not None:
            above.add(judgement)
        retrieved_estimates.append(above.smoothed_relevant(smoothing))
    infap = 0.0
    if total_relevant:
        infap = sum(n / pool.judged[s] * precision_sums[s] for s, n in pool.pooled.items()
                    if pool.judged[s]) / total_relevant
        if total_relevant > depth:
            infap *= total_relevant / depth
    last = retrieved_estimates[-1] if retrieved_estimates else 0.0
    precision = {c: (retrieved_estimates[c - 1] if c <= len(retrieved_estimates) else last) / c for c in cutoffs}
    return InferredScores(infap, precision, total_relevant, last, len(retrieved_estimates))
