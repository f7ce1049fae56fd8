"""`pig demo`: the whole method on a machine with no GPU and no network, in about ten minutes.

The recipe (docs/toy_corpus.md), each step a library call that a `pig` command also makes:
1. a toy corpus (`pig toy make`): multi-shot videos whose captions describe the salient shot, and
   still images for pretraining;
2. frames decoded once (`pig frames`): the images (T = 1) and the videos (T = frames);
3. a small CLIP pretrained from scratch as a two tower on the images (`pig init --preset toy`, then
   `pig train --method meanpool --backbone frames`), as the paper starts from a pretrained CLIP;
4. one start model for every method (`pig init --from` the pretrained model: the generator is a copy
   of its text encoder), then the same training of meanpool (two tower) and PIG (hybrid tower:
   phase 1 generator pretraining, phase 2 joint) on the training videos, best by validation;
5. every stage on the test videos (extract, select, generate, fuse) and `eval` on the test captions
   for meanpool, PIG, and xpool (single tower: PIG's fusioner with the real query, docs/method.md s.8);
6. a table of R@1/R@5/R@10/MdR and the online cost per query of each method, with the R@1 ceiling.

Every step reuses what a previous run in the same folder finished (corpus, frames, models, trainings,
stage files), so a rerun only redoes what is missing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..console import log


@dataclass
class DemoSettings:
    videos: int = 3000           # corpus size (70% train, 10% val, 20% test)
    images: int = 6000           # still images for pretraining
    frames: int = 8              # T: frames sampled per video
    pretrain_epochs: int = 6     # two-tower pretraining on the images
    epochs: int = 6              # phase 2 epochs per method
    generator_epochs: int = 2    # PIG's phase 1 (generator pretraining)
    batch_size: int = 64
    lr: float = 5e-4             # small model from scratch: one rate for every weight (docs/toy_corpus.md)
    seed: int = 0
    workers: int = 1             # decoding processes
    # segment centres, not the default uniform sampling: the demo's recorded figures (README,
    # benchmarks/RESULTS_effectiveness.md) were made with them, and the toy corpus is no paper benchmark
    sampling: str = "centre"


@dataclass
class DemoRow:
    method: str
    tower: str
    metrics: dict                # t2v R@1, R@5, R@10, MdR
    macs_per_query: int
    ms_per_query: float


@dataclass
class DemoRun:
    """What steps 1-5 made in a work folder: the corpus, the start model and each method's test index."""
    corpus: Path
    pretrained: Path             # the two tower pretrained on the images
    model: Path                  # the start model every method trains from
    frames: Path                 # decoded frames of the corpus's videos
    indexes: dict[str, Path]     # 'meanpool', 'pig' -> index.h5 (stage files beside it: index.stage_paths)


def run_demo(work: str | Path, settings: DemoSettings | None = None) -> list[DemoRow]:
    settings = settings or DemoSettings()
    work = Path(work)
    run = prepare_demo(work, settings)
    rows = evaluate_demo(run)
    _add_costs(rows, run.indexes["pig"], run.corpus / "test.csv")
    (work / "results.json").write_text(json.dumps({"settings": asdict(settings), "ceiling": ceiling(run.corpus),
                                                   "rows": [asdict(r) for r in rows]}, indent=2))
    return rows


def prepare_demo(work: Path, settings: DemoSettings) -> DemoRun:
    """Steps 1-5 up to the indexes."""
    corpus = make_corpus(work / "corpus", settings)
    image_frames = decode_frames(work / "frames" / "images.h5", corpus / "pretrain", 1, settings)
    video_frames = decode_frames(work / "frames" / "videos.h5", corpus / "videos", settings.frames, settings)
    pretrained = pretrain(work, corpus, image_frames, settings)
    model = start_model(work / "model", pretrained, settings)
    test_list = split_video_list(work, corpus)
    indexes = {}
    for method in ("meanpool", "pig"):
        best = train_method(work / "runs" / method, model, corpus, video_frames, method, settings)
        indexes[method] = index_test_videos(work / "index" / method / "index.h5", test_list, best, method, settings)
    return DemoRun(corpus, pretrained, model, video_frames, indexes)


def evaluate_demo(run: DemoRun) -> list[DemoRow]:
    """t2v metrics on the test captions of meanpool, PIG, and xpool (PIG's fusioner with the real query)."""
    return [_evaluate(method, run.indexes[trained], run.corpus / "test.csv", scoring)
            for method, trained, scoring in (("meanpool", "meanpool", "index"), ("pig", "pig", "index"),
                                             ("xpool", "pig", "xpool"))]


def make_corpus(folder: Path, settings: DemoSettings) -> Path:
    from ..toy.shots import make_shots_corpus

    if (folder / "corpus.json").is_file():
        log(f"corpus: reusing {folder}")
    else:
        stats = make_shots_corpus(folder, videos=settings.videos, seed=settings.seed, pretrain=settings.images)
        log(stats.summary())
    return folder


def ceiling(corpus: Path) -> dict:
    """The test split's R@1 ceilings recorded with the corpus."""
    stats = json.loads((corpus / "corpus.json").read_text())["stats"]
    return {"r1": stats["r1_ceiling"], "r1_order_blind": stats["r1_order_blind"]}


def decode_frames(output: Path, videos: Path, num_frames: int, settings: DemoSettings) -> Path:
    from ..stages.frames import FramesSettings, frames
    from ..toy.shots import SIZE

    output.parent.mkdir(parents=True, exist_ok=True)
    frames([videos], output,
           settings=FramesSettings(num_frames=num_frames, image_size=SIZE, sampling=settings.sampling),
           workers=settings.workers)
    return output


def pretrain(work: Path, corpus: Path, image_frames: Path, settings: DemoSettings) -> Path:
    """A random 'toy' CLIP (word tokens from every caption) trained as a two tower on the still images."""
    from ..inputs.captions import load_captions
    from ..model.checkpoint import is_checkpoint
    from ..model.factory import init_random
    from ..model.pig import PigConfig

    folder = work / "model-images"
    if not is_checkpoint(folder):
        texts = [c.text for name in ("pretrain.csv", "train.csv") for c in load_captions(corpus / name)]
        init_random(folder, "toy", seed=settings.seed, pig_config=PigConfig(num_frames=1), vocab_texts=texts)
    return _train(work / "runs" / "pretrain", folder, corpus / "pretrain.csv", None, image_frames, "meanpool",
                  settings, phases="2", epochs=settings.pretrain_epochs, batch_size=2 * settings.batch_size,
                  backbone="frames")


def start_model(folder: Path, pretrained: Path, settings: DemoSettings, select_k: int = 16) -> Path:
    """The pretrained CLIP with new PIG heads and T frames: where every method starts."""
    from ..model.checkpoint import is_checkpoint
    from ..model.factory import init_from_pig
    from ..model.pig import PigConfig

    if not is_checkpoint(folder):
        init_from_pig(pretrained, folder, PigConfig(num_frames=settings.frames, select_k=select_k), seed=settings.seed)
        log(f"model: {folder}, the pretrained two tower with new PIG heads")
    return folder


def split_video_list(work: Path, corpus: Path, split: str = "test") -> Path:
    """A list file of a split's videos (paths relative to the work folder)."""
    from ..inputs.captions import load_captions

    ids = dict.fromkeys(c.video_id for c in load_captions(corpus / f"{split}.csv"))
    listing = work / f"{split}_videos.txt"
    listing.write_text("".join(f"corpus/videos/{vid}.mp4\n" for vid in ids))
    return listing


def train_method(run: Path, model: Path, corpus: Path, video_frames: Path, method: str, settings: DemoSettings,
                 phase1: bool = True, **options) -> Path:
    """One method's training on the training videos from the start model; PIG runs both phases (phase1
    False: phase 2 only). options: more TrainConfig settings (backbone, selector, eercf_weight)."""
    both = method == "pig" and phase1
    phases = "1,2" if both else "2"
    epochs = f"{settings.generator_epochs},{settings.epochs}" if both else settings.epochs
    return _train(run, model, corpus / "train.csv", corpus / "val.csv", video_frames, method, settings,
                  phases=phases, epochs=epochs, **options)


def _train(run: Path, model: Path, captions: Path, val_captions: Path | None, frames: Path, method: str,
           settings: DemoSettings, phases: str, epochs, batch_size: int | None = None, **options) -> Path:
    """`pig train` from cached frames; returns OUT/best (OUT/last without validation). Reused when done."""
    from ..model.checkpoint import is_checkpoint
    from ..train import TrainConfig, train

    result = run / ("best" if val_captions else "last")
    if is_checkpoint(result) and (run / "done").is_file():
        log(f"train {run.name}: reusing {result}")
        return result
    log(f"train {run.name}: {method}, phases {phases}, epochs {epochs}")
    config = TrainConfig(output=run, captions=captions, val_captions=val_captions, model=str(model), frames=frames,
                         method=method, phases=phases, epochs=epochs,
                         batch_size=batch_size or settings.batch_size, lr=settings.lr, lr_clip=settings.lr,
                         warmup=0.05, seed=settings.seed, workers=0, resume=(run / "state.pt").is_file(), **options)
    outcome = train(config)
    (run / "done").write_text(json.dumps(outcome.best_metrics))
    return result


def index_test_videos(output: Path, videos: Path, model: Path, method: str, settings: DemoSettings,
                      backbone: str = "vip", selector: str = "its") -> Path:
    from ..stages.extract import ExtractSettings
    from ..stages.index import build_index

    output.parent.mkdir(parents=True, exist_ok=True)
    build_index([videos], output, str(model), method=method, workers=settings.workers,
                settings=ExtractSettings(backbone=backbone, sampling=settings.sampling), selector=selector)
    return output


def _evaluate(method: str, index: Path, captions: Path, scoring: str) -> DemoRow:
    from ..query.evaluate import evaluate

    report = evaluate(index, captions, method=scoring)
    tower = {"meanpool": "two tower", "pig": "hybrid tower", "xpool": "single tower"}[method]
    return DemoRow(method, tower, report.results["t2v"], 0, 0.0)


def _add_costs(rows: list[DemoRow], pig_index: Path, captions: Path, queries: int = 32) -> None:
    """Online cost per query: index scan for meanpool and PIG (the same: one D-vector per video), xpool."""
    from ..inputs.captions import load_captions
    from ..core.text import embed_texts
    from ..model.checkpoint import load_checkpoint
    from ..query.cost import measure_costs
    from ..stagefiles import upstream_file
    from ..store import read_attrs

    loaded = load_checkpoint(read_attrs(pig_index)["model_path"])
    texts = [c.text for c in load_captions(captions)][:queries]
    embedding, _ = embed_texts(loaded, texts)
    costs = measure_costs(pig_index, embedding, upstream_file(pig_index, ("extract",)), loaded.model,
                          next(loaded.model.parameters()).device)
    by_key = {cost.key: cost for cost in costs}
    for row in rows:
        cost = by_key["xpool" if row.method == "xpool" else "scan"]
        row.macs_per_query, row.ms_per_query = cost.macs_per_query, cost.seconds_per_query * 1e3


def format_demo(rows: list[DemoRow], ceilings: dict | None = None) -> str:
    lines = [f"{'method':<10} {'tower':<13} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MdR':>6} {'MACs/query':>14} {'ms/query':>9}"]
    for row in rows:
        m = row.metrics
        lines.append(f"{row.method:<10} {row.tower:<13} {m['R@1']:>6.1f} {m['R@5']:>6.1f} {m['R@10']:>6.1f} "
                     f"{m['MdR']:>6.1f} {row.macs_per_query:>14,} {row.ms_per_query:>9.2f}")
    lines.append("text-to-video on the toy test split; ties ranked pessimistically; xpool: PIG's fusioner with the "
                 "real query for every pair (benchmarks/RESULTS_effectiveness.md also trains xpool on its own)")
    if ceilings:
        lines.append(f"R@1 ceiling {ceilings['r1']:.1f} (captions fit their own video only); "
                     f"{ceilings['r1_order_blind']:.1f} for a model blind to frame order")
    lines.append("ms/query measured on this small test index, where fixed costs dominate; "
                 "at scale see benchmarks/RESULTS_cost.md")
    return "\n".join(lines)
