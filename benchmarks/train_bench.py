"""`pig train` throughput (pairs/s) on CPU: frozen features, raw video and cached frames, in one run.

    python benchmarks/train_bench.py [--presets tiny,toy] [--videos 32] [--batch-size 16] [--epochs 3]
                                     [--workers 1] [--threads 1] [--video-size 64x64] [--video-frames 24]
                                     [--modes features,raw-frozen,raw,frames] [--profile STEPS]

For each preset, on the same generated videos and model (method pig, phase 2):
  frozen features                --features feats.h5 --freeze-backbone (heads + text encoder; no decoding)
  raw, frozen backbone           --videos --freeze-backbone (decoding + backbone forward without gradients)
  raw, full fine-tune            --videos (decoding + backbone forward and backward)
  cached frames, full fine-tune  --frames frames.h5 (pig frames decoded them once; backbone forward and backward)
pairs/s is that of the last epoch (steps plus waits for batches, not validation), so that the start of
the decoding (or reading) workers and the first-step warm-up are left out; "data wait" is the share of
that epoch the loop spent waiting for its next batch (the epoch record's data_wait_s, where the pig
version records it).

A second table gives the CPU seconds of one batch's parts, measured alone in this process (best of 3):
decoding its videos (read_clip), reading its frames from the frames file, and the full fine-tune
training step (forward and backward). Decoding's share of decode + step bounds what caching can gain
when the cores are busy (as here); with a spare core the decoding worker overlaps the step and raw video
loses less. Then one line per preset: what making the extract and frames files cost (once).
The generated videos (a coloured square over flat grey) decode faster than real footage of the same
size: their decoding share is a lower bound. The data path alone: the wall seconds per batch of a
FrameSource with --workers reading one epoch ahead of nothing (what the frames file can deliver), next to
the step's.

--profile STEPS: torch.profiler over that many full fine-tune steps (cached frames, after one warm-up
step) of each preset; prints the ops with the most self CPU time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODES = {  # name -> (source: features | videos | frames, freeze_backbone)
    "frozen features": ("features", True),
    "raw, frozen backbone": ("videos", True),
    "raw, full fine-tune": ("videos", False),
    "cached frames, full fine-tune": ("frames", False),
}
MODE_KEYS = dict(zip(("features", "raw-frozen", "raw", "frames"), MODES))  # --modes names


def make_corpus(folder: Path, count: int, width: int = 64, height: int = 64, frames: int = 24,
                workers: int = 0) -> Path:
    """count videos of a coloured square over grey; captions name the colour and the video number.
    workers > 0: written by that many processes (the same files)."""
    rng = np.random.default_rng(0)
    (folder / "videos").mkdir(parents=True)
    colours = [rng.integers(0, 256, 3).tolist() for _ in range(count)]
    jobs = [(folder / "videos" / f"v{i:03d}.mp4", i, colour, width, height, frames) for i, colour in enumerate(colours)]
    if workers > 0:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_square_video, *zip(*jobs)))
    else:
        for job in jobs:
            _write_square_video(*job)
    rows = [{"video_id": f"v{i:03d}", "caption": f"square {i} of colour {colour}"} for i, colour in enumerate(colours)]
    captions = folder / "captions.jsonl"
    captions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return captions


def _write_square_video(path: Path, i: int, colour: list, width: int, height: int, frames: int) -> None:
    from pigcli.toy.videowrite import write_video

    side, top = 24 * height // 64, 20 * height // 64  # 64x64: a 24 px square at row 20
    clip = np.full((frames, height, width, 3), 120, np.uint8)
    for t in range(frames):
        x = (5 * t + 7 * i) % (width - side)
        clip[t, top : top + side, x : x + side] = colour
    write_video(path, clip)


def cpu_seconds(work, repeats: int = 3) -> float:
    """Best CPU time (this process) of `work()` over `repeats` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def batch_costs(model: Path, videos: list[Path], frames_file: Path, batch_size: int, workers: int,
                profile_steps: int = 0) -> dict:
    """CPU seconds of one batch: decoding its videos, reading it from the frames file, a training step;
    the wall seconds per batch of the data path alone (FrameSource with `workers`)."""
    from pigcli.core.text import tokenize
    from pigcli.model.checkpoint import load_checkpoint
    from pigcli.train.data import ClipCollate, FrameDataset
    from pigcli.train.forward import TrainStep
    from pigcli.inputs.video import read_clip, resolve_decoder

    loaded = load_checkpoint(model)
    pig = loaded.model
    frames, size, decoder = pig.config.num_frames, pig.image_size, resolve_decoder("auto")
    videos = videos[:batch_size]
    dataset, collate = FrameDataset(frames_file, np.arange(len(videos))), ClipCollate(frames, size)
    batch = collate([dataset[i] for i in range(len(videos))])
    tokens = tokenize(loaded.tokenizer, [f"square {i}" for i in range(len(videos))], pig.config.max_text_tokens)
    step = TrainStep(pig, "pig", 2, 1.0, "vip")
    pig.train().requires_grad_(True)

    def train_step():
        step(tokens["input_ids"], tokens["attention_mask"], batch.valid, pixels=batch.pixels)["loss"].backward()

    costs = {"decode": cpu_seconds(lambda: [read_clip(v, frames, size, decoder) for v in videos]),
             "read": cpu_seconds(lambda: collate([dataset[i] for i in range(len(videos))])),
             "step": cpu_seconds(train_step), "data path": data_path_seconds(loaded, frames_file, batch_size, workers)}
    dataset.close()
    if profile_steps:
        costs["profile"] = profile(train_step, profile_steps)
    return costs


def data_path_seconds(loaded, frames_file: Path, batch_size: int, workers: int, epochs: int = 3) -> float:
    """Wall seconds per batch of reading shuffled batches from the frames file with `workers`, nothing
    else running in this process (the last of `epochs` passes: the workers have started)."""
    from pigcli.train.data import FrameSource

    source = FrameSource(frames_file, loaded, workers)
    rng = np.random.default_rng(0)
    try:
        for _ in range(epochs):
            order = rng.permutation(len(source.ids))
            batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
            start = time.perf_counter()
            for _batch in source.iterate(batches):
                pass
            seconds = (time.perf_counter() - start) / len(batches)
    finally:
        source.close()
    return seconds


def profile(work, steps: int, rows: int = 12) -> str:
    """The ops with the most self CPU time over `steps` calls of work() (after one warm-up call)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    work()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            work()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def last_epoch(output: Path) -> dict:
    epochs = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return [r for r in epochs if r["event"] == "epoch"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,toy")
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing shared cores)")
    parser.add_argument("--video-size", default="64x64", help="WIDTHxHEIGHT of the generated videos")
    parser.add_argument("--video-frames", type=int, default=24, help="frames per generated video")
    parser.add_argument("--modes", default=",".join(MODE_KEYS), help=f"the modes to run: {', '.join(MODE_KEYS)}")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="profile this many full fine-tune steps per preset (torch.profiler, CPU)")
    args = parser.parse_args()
    modes = {MODE_KEYS[key]: MODES[MODE_KEYS[key]] for key in args.modes.split(",")}
    torch.set_num_threads(args.threads)

    from pigcli.model.factory import init_random
    from pigcli.stages.extract import extract
    from pigcli.stages.frames import frames as make_frames
    from pigcli.train import TrainConfig, train

    print("| preset | mode | videos | batch | frames | epochs | workers | torch threads | pairs/s (last epoch) "
          "| s/step | data wait | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    notes, costs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        width, height = map(int, args.video_size.split("x"))
        captions = make_corpus(tmp / "corpus", args.videos, width, height, args.video_frames)
        for preset in args.presets.split(","):
            model = init_random(tmp / preset, preset)
            sources = {"videos": tmp / "corpus" / "videos", "features": tmp / f"{preset}.h5",
                       "frames": tmp / f"{preset}.frames.h5"}
            start = time.perf_counter()
            extract([sources["videos"]], sources["features"], str(model), device="cpu", workers=args.workers)
            extract_s, start = time.perf_counter() - start, time.perf_counter()
            make_frames([sources["videos"]], sources["frames"], str(model), workers=args.workers)
            frames_s = time.perf_counter() - start
            notes.append(f"{preset}: pig extract {extract_s:.1f} s, pig frames {frames_s:.1f} s "
                         f"({sources['frames'].stat().st_size / 2**20:.1f} MB) for {args.videos} videos")
            costs[preset] = batch_costs(model, sorted(sources["videos"].iterdir()), sources["frames"],
                                        args.batch_size, args.workers, args.profile)
            frames = json.loads((model / "config.json").read_text())["pig"]["num_frames"]
            for name, (source, freeze) in modes.items():
                output = tmp / f"run-{preset}-{name.replace(' ', '').replace(',', '-')}"
                config = TrainConfig(
                    output=output, captions=captions, model=str(model), method="pig", phases="2",
                    **{source: sources[source]}, freeze_backbone=freeze, epochs=args.epochs,
                    batch_size=args.batch_size, lr=1e-4, lr_clip=1e-5, device="cpu", workers=args.workers)
                start = time.perf_counter()
                train(config)
                wall = time.perf_counter() - start
                epoch = last_epoch(output)
                rate = epoch["pairs_per_s"]
                wait = f"{epoch['data_wait_s'] / epoch['seconds']:.0%}" if "data_wait_s" in epoch else "-"
                print(f"| {preset} | {name} | {args.videos} | {args.batch_size} | {frames} | {args.epochs} "
                      f"| {args.workers} | {args.threads} | {rate:.1f} | {args.batch_size / rate:.3f} | {wait} "
                      f"| {wall:.1f} |", flush=True)
    print()
    print(f"| preset | CPU s per batch of {args.batch_size}: decode (read_clip) | read cached frames "
          f"| training step (full fine-tune) | decode share of decode + step | data path alone, wall s per batch "
          f"({args.workers} workers) |")
    print("|---|---|---|---|---|---|")
    for preset, cost in costs.items():
        share = cost["decode"] / (cost["decode"] + cost["step"])
        print(f"| {preset} | {cost['decode']:.3f} | {cost['read']:.4f} | {cost['step']:.3f} | {share:.0%} "
              f"| {cost['data path']:.4f} |")
    for preset, cost in costs.items():
        if "profile" in cost:
            print(f"\n{preset}: {args.profile} full fine-tune steps, ops by self CPU time\n\n{cost['profile']}")
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
