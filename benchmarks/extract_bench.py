"""Extract throughput, and what the pipeline adds over decoding and the model alone.

    python benchmarks/extract_bench.py [--videos 16] [--preset b32] [--workers 1] [--size 224]

Measures in one run, on the same generated videos and model:
  decode   : read_clip on every video, sequentially, in this process
  forward  : the backbone on the already decoded frames, same batches
  extract  : the whole `extract` call (workers decoding in parallel with the model, writing HDF5)
and prints videos/s, frames/s and the ratios extract / (decode + forward) and extract / forward, for
the extract loop (decode..write, as recorded in the file's timings) and for the whole call (which
also loads the model and starts the decoding workers: a fixed cost of a few seconds).
Target (issue 2): extract <= 1.15 x (decode + forward); with a spare core, extract close to forward.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_videos(folder: Path, count: int, size: int, frames: int = 48) -> list[Path]:
    from pigcli.toy.videowrite import write_video

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        video = np.full((frames, size, int(size * 4 / 3) // 2 * 2, 3), 100, np.uint8)
        video += rng.integers(0, 40, size=video.shape[1:], dtype=np.uint8)  # texture, so codecs work
        for t in range(frames):
            x = (t * 5) % (video.shape[2] - 40)
            video[t, 40:80, x : x + 40] = (200, 40 + i * 10 % 200, 40)
        paths.append(write_video(folder / f"v{i:03d}.mp4", video, fps=24))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--preset", default="b32")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=224, help="height of the generated videos")
    args = parser.parse_args()

    from pigcli.model.checkpoint import load_checkpoint
    from pigcli.model.factory import init_random
    from pigcli.stages.extract import extract
    from pigcli.store import read_attrs
    from pigcli.inputs.video import normalize, read_clip

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "videos").mkdir()
        paths = make_videos(tmp / "videos", args.videos, args.size)
        model_dir = init_random(tmp / "model", args.preset)
        loaded = load_checkpoint(model_dir)
        pig, frames = loaded.model, loaded.model.config.num_frames

        start = time.perf_counter()
        clips = [read_clip(p, frames, pig.image_size) for p in paths]
        decode = time.perf_counter() - start

        config = pig.config
        start = time.perf_counter()
        for i in range(0, len(clips), args.batch_size):
            pixels = torch.from_numpy(np.stack([c.frames for c in clips[i : i + args.batch_size]]))
            with torch.inference_mode():
                pig.encode_video(normalize(pixels, config.image_mean, config.image_std))
        forward = time.perf_counter() - start

        start = time.perf_counter()
        extract([tmp / "videos"], tmp / "feats.h5", str(model_dir), batch_size=args.batch_size,
                workers=args.workers)
        wall = time.perf_counter() - start
        loop = read_attrs(tmp / "feats.h5")["timings"]["wall"]  # decode..write, without loading the model

    n = args.videos
    print("| preset | videos | frames/video | workers | torch threads | decode s | forward s | extract s (call) "
          "| extract s (loop) | videos/s | frames/s | loop/(decode+forward) | loop/forward | call/(decode+forward) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.preset} | {n} | {frames} | {args.workers} | {torch.get_num_threads()} | {decode:.2f} | "
          f"{forward:.2f} | {wall:.2f} | {loop:.2f} | {n / loop:.2f} | {n * frames / loop:.1f} | "
          f"{loop / (decode + forward):.3f} | {loop / forward:.3f} | {wall / (decode + forward):.3f} |")


if __name__ == "__main__":
    main()
