"""`pig demo`'s comparison at a larger size over several seeds: t2v retrieval and ITS precision.

    python benchmarks/effectiveness.py --videos 3000 --seeds 0 1 2 --epochs 25 --work /tmp/pig-eff

For each seed, in WORK/seed<S>, the demo's steps (pigcli.demo.prepare_demo / evaluate_demo) with that
seed for the corpus, the random 'toy' model and both trainings: text-to-video R@1/R@5/R@10/MdR of
meanpool (two tower), pig (hybrid tower) and xpool (single tower), plus pig + EERCF rerank of the top
--rerank-k with the untrained EERCF head (identities). With --eercf (default), two more trainings learn
the rerank head (docs/method.md s.7): pig with EERCF's loss added (`--eercf-weight 1`), ranked with and
without the rerank, and EERCF alone (`--method eercf`: index t . W_g v), with and without the rerank.
--rerank-k 0 skips every rerank. A rerun reuses what a seed's folder already holds.

ITS precision, per seed, on the pig model's select file of the test videos: the share of the selected
patches that lie on a described object in their frame, against chance = the share of all patches of
the sampled frames that do. A flat index i over T*L maps to frame i // L (the sampled source frame
frame_index[i // L]) and patch i % L of a row-major (S/P) x (S/P) grid, i.e. a P x P pixel square.
Two rules for 'on the object': the square intersects the object's box ('intersect'), or the square's
centre lies inside the box ('centre'). Two object sets: every object a caption of the video names
('named'; captions also name still distractors: "while a small red circle stays still"), and only
the named target and landmark objects ('event': what moves, appears or changes, and what it passes).

Prints a markdown report to stdout and writes it, with every number, to WORK/effectiveness.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pigcli.demo import DemoSettings, evaluate_demo, index_test_videos, prepare_demo, train_method

METRICS = ("R@1", "R@5", "R@10", "MdR")
RULES = ("intersect", "centre")
OBJECT_SETS = {"named": None, "event": ("target", "landmark")}  # set name -> roles kept (None: all)
RERANKED = "pig+eercf"
# trainings with the EERCF loss (--eercf): row name -> (method, --eercf-weight)
EERCF_TRAININGS = {"pig(L_eercf)": ("pig", 1.0), "eercf": ("eercf", 0.0)}
TOWERS = {"meanpool": "two tower", "pig": "hybrid tower", "xpool": "single tower",
          RERANKED: "hybrid tower + rerank (untrained head)",
          "pig(L_eercf)": "hybrid tower", "pig(L_eercf)+eercf": "hybrid tower + rerank (trained head)",
          "eercf": "two tower (W_g v)", "eercf+eercf": "two tower + rerank (trained head)"}


# ---------------------------------------------------------------- retrieval


def t2v(index: Path, captions: Path, rerank_k: int = 0) -> dict:
    """`pig eval` text-to-video metrics, with EERCF reranking of each caption's top rerank_k (the rerank
    head of the index's model)."""
    from pigcli.stages.evaluate import evaluate

    return evaluate(index, captions, rerank_k=rerank_k).results["t2v"]


def eercf_indexes(work: Path, settings: DemoSettings, corpus: Path) -> dict[str, Path]:
    """Train and index the methods of EERCF_TRAININGS on the demo's corpus, model and test videos."""
    indexes = {}
    for name, (method, weight) in EERCF_TRAININGS.items():
        best = train_method(work / "runs" / name, work / "model", corpus, method, settings, eercf_weight=weight)
        indexes[name] = index_test_videos(work / "index" / name / "index.h5", work / "test_videos.txt", best, method, settings)
    return indexes


def retrieval_rows(run, rerank_k: int, trained_heads: dict[str, Path]) -> dict[str, dict]:
    """method -> t2v metrics for one seed."""
    captions = run.corpus / "test.csv"
    rows = {row.method: row.metrics for row in evaluate_demo(run)}
    if rerank_k:
        rows[RERANKED] = t2v(run.indexes["pig"], captions, rerank_k)
    for name, index in trained_heads.items():
        rows[name] = t2v(index, captions)
        if rerank_k:
            rows[f"{name}+eercf"] = t2v(index, captions, rerank_k)
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


def described_objects(record: dict, roles: tuple[str, ...] | None) -> list[dict]:
    """Objects of an objects.jsonl record that a caption names, of the given roles (None: any)."""
    named = sorted({i for caption in record["captions"] for i in caption["objects"]})
    return [record["objects"][i] for i in named if roles is None or record["objects"][i]["role"] in roles]


def on_object_map(record: dict, frame_index: np.ndarray, squares: np.ndarray, roles, rule: str) -> np.ndarray:
    """[T, L] bool: patch l of sampled frame t lies on a described object visible in that source frame."""
    objects = described_objects(record, roles)
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
    """Patch squares in a video's own pixels. The toy's frames are square, so resize + centre crop is a
    uniform scale by video_size / S (the identity for 64 px videos and a 64 px model)."""
    grid = int(round(np.sqrt(selection.patches_per_frame)))
    if grid * grid != selection.patches_per_frame:
        raise ValueError(f"{selection.patches_per_frame} patches per frame is not a square grid")
    return patch_squares(grid, video_size / grid)


def its_precision(run) -> dict:
    """{object set: {rule: {'precision', 'chance' (percent), 'videos', 'k'}}} over the test videos:
    per video the share of selected (resp. all) patches on a described object, averaged over videos."""
    from pigcli.stages.index import stage_paths

    paths = stage_paths(run.indexes["pig"])
    selection = read_selection(paths["sel"], paths["feats"])
    records = [json.loads(line) for line in (run.corpus / "objects.jsonl").read_text().splitlines()]
    records = [r for r in records if r["video_id"] in selection.selected]
    result: dict = {}
    for name, roles in OBJECT_SETS.items():
        for rule in RULES:
            chosen, everything = [], []
            for record in records:
                video = record["video_id"]
                on = on_object_map(record, selection.frames[video], video_squares(selection, record["size"]),
                                   roles, rule)
                chosen.append(on.reshape(-1)[selection.selected[video]].mean())
                everything.append(on.mean())
            result.setdefault(name, {})[rule] = {
                "precision": 100 * float(np.mean(chosen)), "chance": 100 * float(np.mean(everything)),
                "videos": len(records), "k": int(len(selection.selected[records[0]["video_id"]]))}
    return result


# ---------------------------------------------------------------- one seed, all seeds


def run_seed(work: Path, settings: DemoSettings, rerank_k: int, with_eercf: bool) -> dict:
    started = time.perf_counter()
    run = prepare_demo(work, settings)
    trained_heads = eercf_indexes(work, settings, run.corpus) if with_eercf else {}
    rows = retrieval_rows(run, rerank_k, trained_heads)
    its = its_precision(run)
    return {"seed": settings.seed, "rows": rows, "its": its, "seconds": round(time.perf_counter() - started, 1)}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize_seeds(per_seed: list[dict]) -> dict:
    """{'retrieval': {method: {metric: [mean, std]}}, 'its': {set: {rule: {'precision'|'chance': [mean, std]}}}}."""
    methods = per_seed[0]["rows"]
    retrieval = {m: {k: mean_std([s["rows"][m][k] for s in per_seed]) for k in METRICS} for m in methods}
    its = {name: {rule: {q: mean_std([s["its"][name][rule][q] for s in per_seed]) for q in ("precision", "chance")}
                  for rule in RULES} for name in OBJECT_SETS}
    return {"retrieval": retrieval, "its": its}


# ---------------------------------------------------------------- report


def _pm(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.1f} ± {pair[1]:.1f}"


def format_report(settings: dict, command: str, per_seed: list[dict], summary: dict) -> str:
    seeds = [s["seed"] for s in per_seed]
    its = per_seed[0]["its"]["named"]["intersect"]
    lines = ["# pig effectiveness on the toy corpus", "", f"Command: `{command}`", "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
             f"Seeds {seeds} (each: its own corpus, random model and trainings); wall seconds per seed: "
             + ", ".join(str(s["seconds"]) for s in per_seed), "",
             f"## Text-to-video retrieval on the test split: mean ± std over {len(seeds)} seed(s)", "",
             "| method | tower | R@1 | R@5 | R@10 | MdR |", "|---|---|---|---|---|---|"]
    for method, metrics in summary["retrieval"].items():
        lines.append(f"| {method} | {TOWERS[method]} | " + " | ".join(_pm(metrics[k]) for k in METRICS) + " |")
    lines += ["", "Std is the sample standard deviation over seeds (n - 1). Ties ranked pessimistically. "
              "X+eercf: X's index with each caption's top K reranked by EERCF (`pig eval --rerank K`) with "
              "the rerank head of X's model; pig(L_eercf): pig trained with EERCF's loss added.", "",
              "## Per seed", "",
              "| method | seed | R@1 | R@5 | R@10 | MdR |", "|---|---|---|---|---|---|"]
    for method in summary["retrieval"]:
        for s in per_seed:
            lines.append(f"| {method} | {s['seed']} | " + " | ".join(f"{s['rows'][method][k]:.1f}" for k in METRICS) + " |")
    lines += ["", f"## ITS precision (pig model, {its['videos']} test videos, k = {its['k']} selected patches "
              "per video)", "",
              "| objects | on the object when | ITS precision % | chance % | ratio | per seed (precision / chance) |",
              "|---|---|---|---|---|---|"]
    for name in OBJECT_SETS:
        for rule in RULES:
            agg = summary["its"][name][rule]
            seeds_text = ", ".join(f"{s['its'][name][rule]['precision']:.1f} / {s['its'][name][rule]['chance']:.1f}"
                                   for s in per_seed)
            ratio = agg["precision"][0] / agg["chance"][0] if agg["chance"][0] else float("nan")
            lines.append(f"| {name} | {_RULE_TEXT[rule]} | {_pm(agg['precision'])} | {_pm(agg['chance'])} | "
                         f"{ratio:.2f} | {seeds_text} |")
    lines += ["", "named: every object a caption of the video names (targets, landmarks, and still distractors "
              "named as context); event: only the named targets and landmarks. Precision: share of the selected "
              "patches on such an object in their sampled frame; chance: share of all patches of the sampled "
              "frames on one; both averaged over videos."]
    return "\n".join(lines)


_RULE_TEXT = {"intersect": "square intersects the box", "centre": "square centre inside the box"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = DemoSettings()
    parser.add_argument("--videos", type=int, default=3000, help="toy corpus size per seed (70/10/20 split)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--frames", type=int, default=defaults.frames, help="T: frames sampled per video")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="decoding processes")
    parser.add_argument("--rerank-k", type=int, default=50, help="EERCF rerank of each index's top K (0: skip)")
    parser.add_argument("--eercf", action=argparse.BooleanOptionalAction, default=True,
                        help="also train pig with EERCF's loss and EERCF alone (the trained rerank heads)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pig-eff"), help="one sub-folder per seed; reused")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    command = "python benchmarks/effectiveness.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    base = dict(videos=args.videos, frames=args.frames, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                workers=args.workers)
    per_seed = [run_seed(args.work / f"seed{seed}", DemoSettings(seed=seed, **base), args.rerank_k, args.eercf)
                for seed in args.seeds]
    summary = summarize_seeds(per_seed)
    settings = {**base, "rerank_k": args.rerank_k, "eercf_trainings": args.eercf, "model": "toy (random init)"}
    report = format_report(settings, command, per_seed, summary)
    print(report)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "effectiveness.json").write_text(json.dumps(
        {"command": command, "settings": settings, "seeds": args.seeds, "per_seed": per_seed, "summary": summary,
         "markdown": report}, indent=2))


if __name__ == "__main__":
    main()
