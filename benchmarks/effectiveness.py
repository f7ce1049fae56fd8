"""`pig demo`'s comparison over several seeds, with the baselines, a tuned EERCF rerank and ablations.

    python benchmarks/effectiveness.py --seeds 0 1 2 --work /tmp/pig-eff            # main table
    python benchmarks/effectiveness.py --seeds 0 --ablations --work /tmp/pig-eff     # + ablations, seed 0
    python benchmarks/effectiveness.py --lr-study /tmp/pig-eff/seed0 --work /tmp/pig-lr   # pig's phase 2 rates

For each seed, in WORK/seed<S>, the demo's recipe (pigcli.tools.demo.prepare_demo) with that seed for the
corpus, the pretraining and every training: a 'shots' toy corpus, a two tower pretrained on its still
images, and from that one start model, the same training of
  meanpool   two tower (CLIP4Clip meanP)
  pig        hybrid tower (phase 1 generator pretraining, then phase 2)
  xpool      single tower, trained as such (its fusioner with the real query, for every pair)
then text-to-video metrics on the test split, plus
  pig+rerank       pig's index with EERCF's rerank (untrained head), K and weights tuned on the
                   validation split by `pig tune-rerank` (never on test)
  xpool oracle     pig's own fusioner with the real query instead of the pseudo-query
and ITS precision on the test videos. --ablations adds pig variants: k = 4, 8, 32 ITS tokens (16 is
the default), random patches instead of ITS, no phase 1, and the frame-wise backbone.

ITS precision: the share of the selected patches that lie on the captioned (target) object in their
frame, against chance = the share of all patches of the sampled frames that do. A flat index i over
T*L maps to frame i // L (source frame frame_index[i // L]) and patch i % L of a row-major
(S/P) x (S/P) grid. Two rules for 'on the object': the square intersects the object's box, or the
square's centre lies inside it.

Prints a markdown report to stdout and writes it, with every number, to WORK/effectiveness.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pigcli.tools.demo import (DemoRun, DemoSettings, split_video_list, ceiling, index_test_videos, prepare_demo,
                         start_model, train_method)

METRICS = ("R@1", "R@5", "R@10", "MdR")
RULES = ("intersect", "centre")
TOWERS = {"meanpool": "two tower", "pig": "hybrid tower", "xpool": "single tower (trained)",
          "pig+rerank": "hybrid + EERCF rerank (tuned on val)", "xpool oracle": "pig's fusioner, real query"}
# ablation row -> (start model's ITS k, train_method options, index options)
ABLATIONS = {
    "pig, k=4": (4, {}, {}),
    "pig, k=8": (8, {}, {}),
    "pig, k=32": (32, {}, {}),
    "pig, random patches": (16, {"selector": "random"}, {"selector": "random"}),
    "pig, no phase 1": (16, {"phase1": False}, {}),
    "pig, frames backbone": (16, {"backbone": "frames"}, {"backbone": "frames"}),
}
# --lr-study SEED_WORK: phase 2's learning rates of pig (docs/method.md s.6). pig's default gives the new
# modules (mapper, fusioner, proxies, temporal embedding) 10x CLIP's rate; the spec one rate for all. On
# an existing seed folder (its corpus and start model, read only), pig trains from frozen-backbone
# features (phases 1+2 with the demo's epochs, batch and warm-up), so what phase 2 trains is the
# generator, fusioner and CLIP's text tower; the toy corpus's scale of rates is the demo's 5e-4. Rows:
# the demo's one rate; new 5e-4 with CLIP 5e-5 (the 10x split); all 5e-5 (the spec's one rate, at the
# split's CLIP rate). Phase 1 is 5e-4 in every row. Test metrics of OUT/best (chosen on validation).
LR_STUDY = {
    "phase 2 all 5e-4 (the demo's one rate)": {"lr": "5e-4,5e-4", "lr_clip": "5e-4,5e-4"},
    "phase 2 new 5e-4, CLIP 5e-5 (10x split)": {"lr": "5e-4,5e-4", "lr_clip": "5e-4,5e-5"},
    "phase 2 all 5e-5 (one rate)": {"lr": "5e-4,5e-5", "lr_clip": "5e-4,5e-5"},
}


def lr_study(work: Path, seed_work: Path, settings: DemoSettings) -> dict:
    """{row: test t2v metrics} of pig trained from frozen features with each LR_STUDY setting."""
    from pigcli.model.checkpoint import load_checkpoint
    from pigcli.stages.extract import extract
    from pigcli.train import TrainConfig, train
    from pigcli.train.data import FeatureSource, load_pairs
    from pigcli.train.validate import Validator

    corpus, start = seed_work / "corpus", seed_work / "model"
    features = work / "feats.h5"
    work.mkdir(parents=True, exist_ok=True)
    extract([corpus / "videos"], features, str(start), device="cpu", workers=settings.workers)
    rows = {}
    for name, rates in LR_STUDY.items():
        run = work / "runs" / "".join(c if c.isalnum() else "-" for c in name)
        if not (run / "best").is_dir():
            train(TrainConfig(output=run, captions=corpus / "train.csv", val_captions=corpus / "val.csv",
                              model=str(start), features=features, phases="1,2",
                              epochs=f"{settings.generator_epochs},{settings.epochs}", freeze_backbone=True,
                              batch_size=settings.batch_size, warmup=0.05, seed=settings.seed, device="cpu",
                              workers=0, **rates))
        best = load_checkpoint(run / "best")
        source = FeatureSource(features, best, best.model.config.select_k)
        pairs = load_pairs(corpus / "test.csv", set(source.ids), "test captions")
        source.load(pairs.video_ids)
        metrics = Validator(best, source, pairs, "pig", source.backbone, 256, torch.device("cpu"), "fp32")()
        rows[name] = {k: metrics["t2v"][k] for k in METRICS}
    return rows


# ---------------------------------------------------------------- retrieval


def t2v(index: Path, captions: Path, **options) -> dict:
    """`pig eval` text-to-video metrics (options: method, rerank_k)."""
    from pigcli.query.evaluate import evaluate

    return evaluate(index, captions, **options).results["t2v"]


def trained_xpool(work: Path, run: DemoRun, settings: DemoSettings) -> Path:
    """xpool trained as a single tower; indexed with meanpool only to have its test tokens beside an index."""
    best = train_method(work / "runs" / "xpool", run.model, run.corpus, run.frames, "xpool", settings)
    return index_test_videos(work / "index" / "xpool" / "index.h5", work / "test_videos.txt", best, "meanpool",
                             settings)


def tuned_rerank(work: Path, run: DemoRun, settings: DemoSettings) -> dict:
    """Tune the rerank of pig's model on the validation videos, then rerank the test index with it."""
    from pigcli.query.tune_rerank import tune_rerank
    from pigcli.store import read_attrs

    model = Path(read_attrs(run.indexes["pig"])["model_path"])
    val_index = index_test_videos(work / "index" / "pig-val" / "index.h5", split_video_list(work, run.corpus, "val"),
                                  model, "pig", settings)
    report = tune_rerank(val_index, run.corpus / "val.csv", report=False)
    chosen = {**report.tuned.to_dict(), "val_r1_plain": report.baseline.metrics["R@1"]}
    return {"metrics": t2v(run.indexes["pig"], run.corpus / "test.csv", rerank_k="auto"), "tuned": chosen}


def retrieval_rows(work: Path, run: DemoRun, settings: DemoSettings) -> tuple[dict, dict]:
    """(method -> t2v metrics, the tuned rerank setting) for one seed."""
    test = run.corpus / "test.csv"
    rows = {"meanpool": t2v(run.indexes["meanpool"], test), "pig": t2v(run.indexes["pig"], test),
            "xpool": t2v(trained_xpool(work, run, settings), test, method="xpool")}
    rerank = tuned_rerank(work, run, settings)
    rows["pig+rerank"] = rerank["metrics"]
    rows["xpool oracle"] = t2v(run.indexes["pig"], test, method="xpool")
    return rows, rerank["tuned"]


def ablation_rows(work: Path, run: DemoRun, settings: DemoSettings) -> dict:
    rows = {}
    for name, (k, train_options, index_options) in ABLATIONS.items():
        slug = name.replace(", ", "-").replace(" ", "-").replace("=", "")
        model = run.model if k == 16 else start_model(work / f"model-k{k}", run.pretrained, settings, select_k=k)
        best = train_method(work / "runs" / slug, model, run.corpus, run.frames, "pig", settings, **train_options)
        index = index_test_videos(work / "index" / slug / "index.h5", work / "test_videos.txt", best, "pig", settings,
                                  **index_options)
        rows[name] = t2v(index, run.corpus / "test.csv")
    return rows


# ---------------------------------------------------------------- ITS precision


def patch_squares(grid: int, patch_px: float) -> np.ndarray:
    """[L, 4] pixel squares (x0, y0, x1, y1), x1/y1 exclusive, of a row-major grid x grid patch layout."""
    row, col = np.divmod(np.arange(grid * grid), grid)
    return np.stack([col, row, col + 1, row + 1], axis=1) * patch_px


def on_boxes(squares: np.ndarray, boxes: list, rule: str) -> np.ndarray:
    """[L] bool: squares on any of the boxes [x0, y0, x1, y1) (intersect or centre rule)."""
    hit = np.zeros(len(squares), bool)
    for x0, y0, x1, y1 in boxes:
        if rule == "intersect":
            hit |= (squares[:, 0] < x1) & (x0 < squares[:, 2]) & (squares[:, 1] < y1) & (y0 < squares[:, 3])
        else:
            cx, cy = (squares[:, 0] + squares[:, 2]) / 2, (squares[:, 1] + squares[:, 3]) / 2
            hit |= (x0 <= cx) & (cx < x1) & (y0 <= cy) & (cy < y1)
    return hit


def captioned_objects(record: dict) -> list[dict]:
    """Objects of an objects.jsonl record that a caption names."""
    named = sorted({i for caption in record["captions"] for i in caption["objects"]})
    return [record["objects"][i] for i in named]


def on_object_map(record: dict, frame_index: np.ndarray, squares: np.ndarray, rule: str) -> np.ndarray:
    """[T, L] bool: patch l of sampled frame t lies on a captioned object visible in that source frame."""
    objects = captioned_objects(record)
    return np.stack([on_boxes(squares, [o["boxes"][f] for o in objects if o["boxes"][f] is not None], rule)
                     for f in frame_index])


@dataclass
class Selection:
    selected: dict[str, np.ndarray]   # video id -> [k] flat patch indices over T*L (select file)
    frames: dict[str, np.ndarray]     # video id -> [T] sampled source frame numbers (extract file)
    image_size: int                   # S: the model's input frames are S x S
    patches_per_frame: int            # L


def read_selection(sel_path: Path, feats_path: Path) -> Selection:
    import h5py

    from pigcli.store import read_attrs, read_ids

    with h5py.File(sel_path, "r") as sel, h5py.File(feats_path, "r") as feats:
        selected = dict(zip(read_ids(sel), sel["selected_index"][:]))
        frames = dict(zip(read_ids(feats), feats["frame_index"][:]))
        patches = feats["its_score"].shape[1] // feats["frame_index"].shape[1]
    return Selection(selected, frames, int(read_attrs(feats_path)["settings"]["image_size"]), patches)


def video_squares(selection: Selection, video_size: int) -> np.ndarray:
    """Patch squares in a video's own pixels (square toy frames: resize + crop is a uniform scale)."""
    grid = int(round(np.sqrt(selection.patches_per_frame)))
    if grid * grid != selection.patches_per_frame:
        raise ValueError(f"{selection.patches_per_frame} patches per frame is not a square grid")
    return patch_squares(grid, video_size / grid)


def its_precision(run: DemoRun) -> dict:
    """{rule: {'precision', 'chance' (percent), 'videos', 'k'}} over the test videos: per video the share
    of selected (resp. all) patches on a captioned object, averaged over videos."""
    from pigcli.stages.index import stage_paths

    paths = stage_paths(run.indexes["pig"])
    selection = read_selection(paths["sel"], paths["feats"])
    records = [json.loads(line) for line in (run.corpus / "objects.jsonl").read_text().splitlines()]
    records = [r for r in records if r["video_id"] in selection.selected]
    result = {}
    for rule in RULES:
        chosen, everything = [], []
        for record in records:
            video = record["video_id"]
            on = on_object_map(record, selection.frames[video], video_squares(selection, record["size"]), rule)
            chosen.append(on.reshape(-1)[selection.selected[video]].mean())
            everything.append(on.mean())
        result[rule] = {"precision": 100 * float(np.mean(chosen)), "chance": 100 * float(np.mean(everything)),
                        "videos": len(records), "k": int(len(selection.selected[records[0]["video_id"]]))}
    return result


# ---------------------------------------------------------------- one seed, all seeds


def run_seed(work: Path, settings: DemoSettings, ablations: bool) -> dict:
    started = time.perf_counter()
    run = prepare_demo(work, settings)
    rows, tuned = retrieval_rows(work, run, settings)
    result = {"seed": settings.seed, "rows": rows, "tuned_rerank": tuned, "its": its_precision(run),
              "ceiling": ceiling(run.corpus)}
    if ablations:
        result["ablations"] = ablation_rows(work, run, settings)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(per_seed: list[dict], key: str = "rows") -> dict:
    """{method: {metric: (mean, std)}} over the seeds that have `key`."""
    seeds = [s for s in per_seed if key in s]
    return {m: {k: mean_std([s[key][m][k] for s in seeds]) for k in METRICS} for m in seeds[0][key]} if seeds else {}


# ---------------------------------------------------------------- report


def _pm(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.1f} ± {pair[1]:.1f}"


def _table(summary: dict, towers: dict | None = None) -> list[str]:
    lines = ["| method | tower | R@1 | R@5 | R@10 | MdR |", "|---|---|---|---|---|---|"]
    for method, metrics in summary.items():
        lines.append(f"| {method} | {(towers or {}).get(method, '')} | " + " | ".join(_pm(metrics[k]) for k in METRICS) + " |")
    return lines


def format_report(settings: dict, command: str, per_seed: list[dict]) -> str:
    seeds = [s["seed"] for s in per_seed]
    first = per_seed[0]
    lines = ["# pig effectiveness on the toy corpus", "", f"Command: `{command}`", "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
             f"Seeds {seeds} (each: its own corpus, pretraining and trainings); wall seconds per seed: "
             + ", ".join(str(s["seconds"]) for s in per_seed),
             f"Test split: {first['its']['intersect']['videos']} videos, 3 captions each; R@1 ceiling "
             f"{first['ceiling']['r1']:.1f}, {first['ceiling']['r1_order_blind']:.1f} blind to frame order (seed {seeds[0]}).",
             "", f"## Text-to-video retrieval on the test split: mean ± std over {len(seeds)} seed(s)", ""]
    lines += _table(summarize(per_seed), TOWERS)
    lines += ["", "Std: sample standard deviation over seeds (n - 1). Ties ranked pessimistically.", "",
              "## Per seed", "", "| method | seed | R@1 | R@5 | R@10 | MdR |", "|---|---|---|---|---|---|"]
    for method in first["rows"]:
        for s in per_seed:
            lines.append(f"| {method} | {s['seed']} | " + " | ".join(f"{s['rows'][method][k]:.1f}" for k in METRICS) + " |")
    lines += ["", "Tuned rerank per seed (on the validation split): "
              + "; ".join(f"seed {s['seed']}: {json.dumps(s['tuned_rerank'])}" for s in per_seed)]
    ablated = summarize(per_seed, "ablations")
    if ablated:
        with_ablations = [s["seed"] for s in per_seed if "ablations" in s]
        base = {"pig (k=16, ITS, phases 1+2, ViP)": summarize([s for s in per_seed if "ablations" in s])["pig"],
                "xpool oracle (real query)": summarize([s for s in per_seed if "ablations" in s])["xpool oracle"]}
        lines += ["", f"## Ablations of pig (seed(s) {with_ablations})", ""] + _table({**base, **ablated})
    lines += ["", f"## ITS precision (pig model, k = {first['its']['intersect']['k']} selected patches per video)", "",
              "| on the object when | ITS precision % | chance % | ratio | per seed (precision / chance) |",
              "|---|---|---|---|---|"]
    for rule in RULES:
        precision = mean_std([s["its"][rule]["precision"] for s in per_seed])
        chance = mean_std([s["its"][rule]["chance"] for s in per_seed])
        seeds_text = ", ".join(f"{s['its'][rule]['precision']:.1f} / {s['its'][rule]['chance']:.1f}" for s in per_seed)
        lines.append(f"| {_RULE_TEXT[rule]} | {_pm(precision)} | {_pm(chance)} | {precision[0] / chance[0]:.2f} | "
                     f"{seeds_text} |")
    lines += ["", "Captioned object: the target of the salient shot (clutter and still distractors are never "
              "captioned). Precision: share of the selected patches on it in their sampled frame; chance: share "
              "of all patches of the sampled frames on it; both averaged over videos."]
    return "\n".join(lines)


def format_lr_study(command: str, rows: dict) -> str:
    lines = ["## Phase 2 learning rates of pig (frozen backbone)", "", f"Command: `{command}`", "",
             "| phase 2 rates | R@1 | R@5 | R@10 | MdR |", "|---|---|---|---|---|"]
    lines += [f"| {name} | " + " | ".join(f"{m[k]:.1f}" for k in METRICS) + " |" for name, m in rows.items()]
    return "\n".join(lines)


_RULE_TEXT = {"intersect": "square intersects the box", "centre": "square centre inside the box"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = DemoSettings()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--videos", type=int, default=defaults.videos, help="toy corpus size per seed (70/10/20)")
    parser.add_argument("--images", type=int, default=defaults.images, help="still images for pretraining")
    parser.add_argument("--pretrain-epochs", type=int, default=defaults.pretrain_epochs)
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="phase 2 epochs of every method")
    parser.add_argument("--generator-epochs", type=int, default=defaults.generator_epochs, help="pig's phase 1")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="decoding processes")
    parser.add_argument("--ablations", action="store_true", help="also the ablations of pig, on the first seed")
    parser.add_argument("--lr-study", type=Path, metavar="SEED_WORK",
                        help="only the study of pig's phase 2 rates, from frozen features, on the corpus and "
                        "start model of an existing seed folder (read only); results in WORK")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pig-eff"), help="one sub-folder per seed; reused")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    command = "python benchmarks/effectiveness.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    base = DemoSettings(videos=args.videos, images=args.images, pretrain_epochs=args.pretrain_epochs,
                        epochs=args.epochs, generator_epochs=args.generator_epochs, workers=args.workers)
    if args.lr_study:
        print(format_lr_study(command, lr_study(args.work, args.lr_study, replace(base, seed=args.seeds[0]))))
        return
    per_seed = [run_seed(args.work / f"seed{seed}", replace(base, seed=seed), args.ablations and n == 0)
                for n, seed in enumerate(args.seeds)]
    settings = {k: v for k, v in asdict(base).items() if k != "seed"}
    report = format_report(settings, command, per_seed)
    print(report)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "effectiveness.json").write_text(json.dumps(
        {"command": command, "settings": settings, "seeds": args.seeds, "per_seed": per_seed, "markdown": report},
        indent=2, default=str))


if __name__ == "__main__":
    main()
