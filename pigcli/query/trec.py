"""`pig eval RUN --qrels QRELS`: a TREC run scored as TRECVID scores Ad-hoc Video Search.

infAP and the inferred P@k are sample_eval.pl's estimates (pigcli.core.infap). AP, P@k and recall
come from trec_eval itself (the pytrec-eval-terrier package, `pip install 'pigcli[trec]'`), which
counts unjudged shots as not relevant: exact where every pooled shot is judged, lower bounds where
the judgements are a sample. Topics are those of both the run and the qrels (sample_eval.pl's mean);
each run is cut to its best `depth` shots by score, ties by shot id descending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.infap import CUTOFFS, DEPTH, Judgement, inferred_ap, run_order
from ..errors import PigError, UsageError
from ..inputs.trec import read_qrels, read_run

INSTALL_HINT = "pip install 'pigcli[trec]' (pytrec-eval-terrier)"


@dataclass
class TrecReport:
    depth: int
    per_topic: dict[str, dict[str, float]]      # topic -> measure -> value
    complete: bool                              # every pooled shot of these topics judged
    missing_topics: list[str] = field(default_factory=list)   # judged topics the run lacks
    unjudged_topics: list[str] = field(default_factory=list)  # run topics the qrels lack
    library: bool = True                        # AP, P@k and recall computed (trec_eval found)

    @property
    def mean(self) -> dict[str, float]:
        measures = next(iter(self.per_topic.values())).keys()
        return {m: sum(t[m] for t in self.per_topic.values()) / len(self.per_topic) for m in measures}

    def to_dict(self) -> dict:
        return {"topics": len(self.per_topic), "depth": self.depth, "complete_judgements": self.complete,
                "mean": self.mean, "per_topic": self.per_topic, "missing_topics": self.missing_topics,
                "unjudged_topics": self.unjudged_topics}

    def table(self) -> str:
        mean = self.mean
        width = max(len(m) for m in mean)
        rows = [f"{'measure':<{width}}  {'mean':>8}"] + [f"{m:<{width}}  {v:8.4f}" for m, v in mean.items()]
        rows.append(f"{len(self.per_topic)} topics, the best {self.depth} shots of each; infAP and iP@k: "
                    "sample_eval.pl's estimates")
        if self.library:
            rows.append("AP, P@k, recall: trec_eval, unjudged shots counted as not relevant: "
                        + ("exact (every pooled shot judged)" if self.complete
                           else "lower bounds (the judgements are a sample)"))
        return "\n".join(rows)


def evaluate_run(run_path: str | Path, qrels_path: str | Path, depth: int = DEPTH) -> TrecReport:
    if depth < 1:
        raise UsageError(f"--depth must be at least 1, not {depth}")
    qrels = read_qrels(qrels_path)
    run = {topic: run_order(scores)[:depth] for topic, scores in read_run(run_path).items()}
    topics = sorted(set(run) & set(qrels), key=_topic_key)
    if not topics:
        raise PigError(f"no topic of the run {run_path} is in the qrels {qrels_path} "
                       f"(run: {', '.join(sorted(run)[:5])}; qrels: {', '.join(sorted(qrels)[:5])})")
    cutoffs = sorted({c for c in CUTOFFS if c < depth} | {depth})
    per_topic = {t: _inferred(run[t], qrels[t], depth, cutoffs) for t in topics}
    library = _library_measures({t: run[t] for t in topics}, {t: qrels[t] for t in topics}, cutoffs, depth)
    for topic, measures in (library or {}).items():
        per_topic[topic].update(measures)
    complete = all(j.judged for t in topics for j in qrels[t].values())
    return TrecReport(depth, per_topic, complete, sorted(set(qrels) - set(run), key=_topic_key),
                      sorted(set(run) - set(qrels), key=_topic_key), library is not None)


def _topic_key(topic: str):
    return (0, int(topic), "") if topic.isdigit() else (1, 0, topic)


def _inferred(ranked: list[str], judgements: dict[str, Judgement], depth: int, cutoffs) -> dict[str, float]:
    scores = inferred_ap(ranked, judgements, depth=depth, cutoffs=cutoffs)
    return {"infAP": scores.infap, **{f"iP@{c}": p for c, p in scores.precision.items()},
            "inferred_relevant": scores.relevant, "inferred_relevant_retrieved": scores.relevant_retrieved}


def _library_measures(run: dict[str, list[str]], qrels: dict[str, dict[str, Judgement]], cutoffs,
                      depth: int) -> dict[str, dict[str, float]] | None:
    """AP, P@cutoffs and recall at depth from trec_eval (None, with a warning, where it is not installed)."""
    try:
        import pytrec_eval
    except ImportError:
        from ..console import warn

        warn(f"AP, P@k and recall need trec_eval: {INSTALL_HINT}; showing sample_eval's estimates only")
        return None
    names = {"map": "AP", **{f"P_{c}": f"P@{c}" for c in cutoffs}, f"recall_{depth}": f"recall@{depth}"}
    evaluator = pytrec_eval.RelevanceEvaluator(trec_eval_qrels(qrels), {"map", f"P.{','.join(map(str, cutoffs))}",
                                                                        f"recall.{depth}"})
    results = evaluator.evaluate(trec_eval_run(run))
    # trec_eval leaves out topics without a relevant shot; AP, P and recall are 0 there
    return {t: {ours: results.get(t, {}).get(theirs, 0.0) for theirs, ours in names.items()} for t in run}


def trec_eval_qrels(qrels: dict[str, dict[str, Judgement]]) -> dict[str, dict[str, int]]:
    """Judgements as trec_eval reads them: -1 (pooled, not judged) stays -1; strata are not its business."""
    return {topic: {shot: j.relevance for shot, j in shots.items()} for topic, shots in qrels.items()}


def trec_eval_run(run: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Ranked shots as scores that trec_eval orders the same way (the best first)."""
    return {topic: {shot: float(len(shots) - i) for i, shot in enumerate(shots)} for topic, shots in run.items()}
