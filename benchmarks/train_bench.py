"""`pig train` throughput (pairs/s) on CPU: frozen-feature mode vs raw-video mode, in one run.

    python benchmarks/train_bench.py [--presets tiny,toy] [--videos 32] [--batch-size 16] [--epochs 3]
                                     [--workers 1] [--threads 1]

For each preset, on the same generated videos and model (method pig, phase 2):
  frozen features       --features feats.h5 --freeze-backbone (heads + text encoder; no decoding)
  raw, frozen backbone  --videos --freeze-backbone (decoding + backbone forward without gradients)
  raw, full fine-tune   --videos (decoding + backbone forward and backward)
pairs/s is that of the last epoch (steps plus waits for decoded batches, not validation), so that the
start of the decoding workers and the first-step warm-up are left out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODES = {  # name -> TrainConfig overrides
    "frozen features": dict(features=True, freeze_backbone=True),
    "raw, frozen backbone": dict(features=False, freeze_backbone=True),
    "raw, full fine-tune": dict(features=False, freeze_backbone=False),
}


def make_corpus(folder: Path, count: int, size: int = 64, frames: int = 24) -> Path:
    """count videos of a coloured square over grey; captions name the colour and the video number."""
    from pigcli.videowrite import write_video

    rng = np.random.default_rng(0)
    (folder / "videos").mkdir(parents=True)
    rows = []
    for i in range(count):
        colour = rng.integers(0, 256, 3)
        clip = np.full((frames, size, size, 3), 120, np.uint8)
        for t in range(frames):
            x = (5 * t + 7 * i) % (size - 24)
            clip[t, 20:44, x : x + 24] = colour
        write_video(folder / "videos" / f"v{i:03d}.mp4", clip)
        rows.append({"video_id": f"v{i:03d}", "caption": f"square {i} of colour {colour.tolist()}"})
    captions = folder / "captions.jsonl"
    captions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return captions


def last_epoch_rate(output: Path) -> float:
    epochs = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return [r for r in epochs if r["event"] == "epoch"][-1]["pairs_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,toy")
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing shared cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from pigcli.model.factory import init_random
    from pigcli.stages.extract import extract
    from pigcli.train import TrainConfig, train

    print("| preset | mode | videos | batch | frames | epochs | workers | torch threads | pairs/s (last epoch) "
          "| s/step | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        captions = make_corpus(tmp / "corpus", args.videos)
        for preset in args.presets.split(","):
            model = init_random(tmp / preset, preset)
            features = tmp / f"{preset}.h5"
            extract([tmp / "corpus" / "videos"], features, str(model), device="cpu", workers=args.workers)
            frames = json.loads((model / "config.json").read_text())["pig"]["num_frames"]
            for name, mode in MODES.items():
                output = tmp / f"run-{preset}-{name.replace(' ', '').replace(',', '-')}"
                config = TrainConfig(
                    output=output, captions=captions, model=str(model), method="pig", phases="2",
                    features=features if mode["features"] else None,
                    videos=None if mode["features"] else tmp / "corpus" / "videos",
                    freeze_backbone=mode["freeze_backbone"], epochs=args.epochs, batch_size=args.batch_size,
                    lr=1e-4, lr_clip=1e-5, device="cpu", workers=args.workers)
                start = time.perf_counter()
                train(config)
                wall = time.perf_counter() - start
                rate = last_epoch_rate(output)
                print(f"| {preset} | {name} | {args.videos} | {args.batch_size} | {frames} | {args.epochs} "
                      f"| {args.workers} | {args.threads} | {rate:.1f} | {args.batch_size / rate:.3f} | {wall:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
