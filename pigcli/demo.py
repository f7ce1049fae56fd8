"""`pig demo`: the whole method on a machine with no GPU and no network, in a few minutes.

1. a toy corpus (`pig toy make`): shapes that move, appear, leave or change; captions about motion
   direction, event order and small objects among distractors;
2. a small CLIP from scratch (preset 'toy', word tokens learned from the training captions);
3. two trainings with the same code and data: meanpool (two tower) and PIG (hybrid tower);
4. every stage on the test videos (extract, select, generate, fuse) and `eval` on the test captions
   for meanpool, PIG, and xpool (single tower: PIG's fusioner with the real query, docs/method.md s.8);
5. a table of R@1/R@5/R@10/MdR and the online cost per query of each method.

Every step reuses what a previous run in the same folder finished (corpus, model, trainings, stage
files), so a rerun only redoes what is missing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .console import log


@dataclass
class DemoSettings:
    videos: int = 1200           # corpus size (70% train, 10% val, 20% test)
    frames: int = 8              # T: frames sampled per video
    epochs: int = 25
    batch_size: int = 64
    lr: float = 5e-4             # from scratch: one rate for every weight (docs/toy-corpus.md)
    seed: int = 0
    workers: int = 1             # decoding processes


@dataclass
class DemoRow:
    method: str
    tower: str
    metrics: dict                # t2v R@1, R@5, R@10, MdR
    macs_per_query: int
    ms_per_query: float


@dataclass
class DemoRun:
    """What steps 1-4 made in a work folder: the toy corpus and the test-split index of each trained method."""
    corpus: Path
    indexes: dict[str, Path]     # 'meanpool', 'pig' -> index.h5 (stage files beside it: index.stage_paths)


def run_demo(work: str | Path, settings: DemoSettings | None = None) -> list[DemoRow]:
    settings = settings or DemoSettings()
    work = Path(work)
    run = prepare_demo(work, settings)
    rows = evaluate_demo(run)
    _add_costs(rows, run.indexes["pig"], run.corpus / "test.csv")
    (work / "results.json").write_text(json.dumps({"settings": asdict(settings),
                                                   "rows": [asdict(r) for r in rows]}, indent=2))
    return rows


def prepare_demo(work: Path, settings: DemoSettings) -> DemoRun:
    """Steps 1-4 up to the indexes: corpus, random model, both trainings, every stage on the test videos."""
    corpus = _corpus(work / "corpus", settings)
    model = _model(work / "model", corpus, settings)
    test_list = _test_video_list(work, corpus)
    indexes = {}
    for method in ("meanpool", "pig"):
        best = train_method(work / "runs" / method, model, corpus, method, settings)
        indexes[method] = index_test_videos(work / "index" / method / "index.h5", test_list, best, method, settings)
    return DemoRun(corpus, indexes)


def evaluate_demo(run: DemoRun) -> list[DemoRow]:
    """t2v metrics on the test captions of meanpool, PIG, and xpool (PIG's fusioner with the real query)."""
    return [_evaluate(method, run.indexes[trained], run.corpus / "test.csv", scoring)
            for method, trained, scoring in (("meanpool", "meanpool", "index"), ("pig", "pig", "index"),
                                             ("xpool", "pig", "xpool"))]


def _corpus(folder: Path, settings: DemoSettings) -> Path:
    from .toy import make_corpus

    if (folder / "corpus.json").is_file():
        log(f"corpus: reusing {folder}")
    else:
        stats = make_corpus(folder, videos=settings.videos, seed=settings.seed)
        log(stats.summary())
    return folder


def _model(folder: Path, corpus: Path, settings: DemoSettings) -> Path:
    from .captions import load_captions
    from .model.checkpoint import is_checkpoint
    from .model.factory import init_random
    from .model.pig import PigConfig

    if not is_checkpoint(folder):
        texts = [c.text for c in load_captions(corpus / "train.csv")]
        init_random(folder, "toy", seed=settings.seed, pig_config=PigConfig(num_frames=settings.frames),
                    vocab_texts=texts)
        log(f"model: a random 'toy' CLIP in {folder}")
    return folder


def _test_video_list(work: Path, corpus: Path) -> Path:
    from .captions import load_captions

    ids = dict.fromkeys(c.video_id for c in load_captions(corpus / "test.csv"))
    listing = work / "test_videos.txt"
    listing.write_text("".join(f"corpus/videos/{vid}.mp4\n" for vid in ids))
    return listing


def train_method(run: Path, model: Path, corpus: Path, method: str, settings: DemoSettings,
           eercf_weight: float = 0.0) -> Path:
    from .model.checkpoint import is_checkpoint
    from .train import TrainConfig, train

    if is_checkpoint(run / "best") and (run / "done").is_file():
        log(f"train {method}: reusing {run / 'best'}")
        return run / "best"
    log(f"train {method}: {settings.epochs} epochs from scratch on the training split")
    config = TrainConfig(output=run, captions=corpus / "train.csv", val_captions=corpus / "val.csv", model=str(model),
                         videos=corpus / "videos", method=method, eercf_weight=eercf_weight, phases="2",
                         epochs=settings.epochs,
                         batch_size=settings.batch_size, lr=settings.lr, lr_clip=settings.lr, warmup=0.05,
                         seed=settings.seed, workers=settings.workers, resume=(run / "state.pt").is_file())
    result = train(config)
    (run / "done").write_text(json.dumps(result.best_metrics))
    return result.best


def index_test_videos(output: Path, videos: Path, model: Path, method: str, settings: DemoSettings) -> Path:
    from .stages.index import build_index

    output.parent.mkdir(parents=True, exist_ok=True)
    build_index([videos], output, str(model), method=method, workers=settings.workers)
    return output


def _evaluate(method: str, index: Path, captions: Path, scoring: str) -> DemoRow:
    from .stages.evaluate import evaluate

    report = evaluate(index, captions, method=scoring)
    tower = {"meanpool": "two tower", "pig": "hybrid tower", "xpool": "single tower"}[method]
    return DemoRow(method, tower, report.results["t2v"], 0, 0.0)


def _add_costs(rows: list[DemoRow], pig_index: Path, captions: Path, queries: int = 32) -> None:
    """Online cost per query: index scan for meanpool and PIG (the same: one D-vector per video), xpool."""
    from .captions import load_captions
    from .core.text import embed_texts
    from .model.checkpoint import load_checkpoint
    from .stages.cost import measure_costs
    from .stages.scoring import upstream_file
    from .store import read_attrs

    loaded = load_checkpoint(read_attrs(pig_index)["model_path"])
    texts = [c.text for c in load_captions(captions)][:queries]
    embedding, _ = embed_texts(loaded, texts)
    costs = measure_costs(pig_index, embedding, upstream_file(pig_index, ("extract",)), loaded.model,
                          next(loaded.model.parameters()).device)
    by_key = {cost.key: cost for cost in costs}
    for row in rows:
        cost = by_key["xpool" if row.method == "xpool" else "scan"]
        row.macs_per_query, row.ms_per_query = cost.macs_per_query, cost.seconds_per_query * 1e3


def format_demo(rows: list[DemoRow]) -> str:
    lines = [f"{'method':<10} {'tower':<13} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MdR':>6} {'MACs/query':>14} {'ms/query':>9}"]
    for row in rows:
        m = row.metrics
        lines.append(f"{row.method:<10} {row.tower:<13} {m['R@1']:>6.1f} {m['R@5']:>6.1f} {m['R@10']:>6.1f} "
                     f"{m['MdR']:>6.1f} {row.macs_per_query:>14,} {row.ms_per_query:>9.2f}")
    lines.append("text-to-video on the toy test split; ties ranked pessimistically")
    lines.append("ms/query measured on this small test index, where fixed costs dominate; "
                 "at scale see benchmarks/RESULTS_cost.md")
    return "\n".join(lines)
