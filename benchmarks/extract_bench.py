"""Extract throughput: decoded frames/s against the number of decoding workers, the model's frames/s
alone, and the whole `pig extract` loop at each number of workers.

    python benchmarks/extract_bench.py [--videos 32] [--preset b32] [--workers 1,2] [--size 224]
                                       [--decoder auto] [--device auto] [--batch-size N] [--no-extract]
                                       [--per-worker N] [--model DIR] [--videos-dir DIR]

On the same generated videos (48 frames, h264) and a random model of the preset's shape:
  decode, N workers : the decoding pool alone (pigcli.inputs.decode_pool, as extract runs it: T sampled frames
                      per video, resized and cropped), frames/s counted from the first video out, so the
                      workers' start (each imports torch) is left out; and in one process (0 workers)
  model             : the backbone alone on frames already decoded, in the device's batches (the GPU
                      synchronised before the clock stops)
  extract, N workers: the extract loop (decode in the pool, model, HDF5 writes: the file's timings)
Decoding keeps up when its frames/s at the default number of workers (one per CPU but one) is at
least the model's. benchmarks/gpu_check.sh runs this on a GPU machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_videos(folder: Path, count: int, size: int, frames: int = 48) -> list[Path]:
    from pigcli.toy.videowrite import write_video

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        video = np.full((frames, size, int(size * 4 / 3) // 2 * 2, 3), 100, np.uint8)
        video += rng.integers(0, 40, size=video.shape[1:], dtype=np.uint8)  # texture, so codecs work
        for t in range(frames):
            x = (t * 5) % (video.shape[2] - 40)
            video[t, 40:80, x : x + 40] = (200, 40 + i * 10 % 200, 40)
        paths.append(write_video(folder / f"v{i:03d}.mp4", video, fps=24))
    return paths


def decode_rate(paths: list[Path], num_frames: int, image_size: int, decoder: str, workers: int) -> float:
    """Decoded frames/s of the pool with `workers` processes, from its first video out (0: this process)."""
    from pigcli.inputs.decode_pool import decode_videos
    from pigcli.inputs.sources import VideoEntry

    entries = [VideoEntry(p.stem, p) for p in paths]
    stream = decode_videos(entries, num_frames, image_size, decoder, workers, timeout=120.0)
    start = time.perf_counter()
    first = next(stream)
    if workers:  # the clock starts when the workers are up
        start = time.perf_counter()
        rest = list(stream)
    else:
        rest = [first, *stream]
    seconds = time.perf_counter() - start
    failed = [d.error for d in [first, *rest] if d.error]
    if failed:
        raise RuntimeError(f"{len(failed)} videos failed to decode: {failed[0]}")
    return len(rest) * num_frames / seconds


def model_rate(pig, clips: list[np.ndarray], batch_size: int, device, precision: str, repeats: int = 1) -> float:
    """The backbone's frames/s alone on decoded frames (uint8 [T, 3, S, S] each), after one warm-up batch."""
    import torch

    from pigcli.core.device import autocast
    from pigcli.inputs.video import normalize

    config = pig.config
    batches = [torch.from_numpy(np.stack(clips[i : i + batch_size])) for i in range(0, len(clips), batch_size)]

    def run(pixels):
        with torch.inference_mode(), autocast(device, precision):
            pig.encode_video(normalize(pixels.to(device, non_blocking=True), config.image_mean, config.image_std))

    run(batches[0])
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        for pixels in batches:
            run(pixels)
    synchronize()
    return repeats * sum(len(b) for b in batches) * clips[0].shape[0] / (time.perf_counter() - start)


def extract_rate(videos: Path, output: Path, model_dir: Path, device: str, batch_size: int, workers: int,
                 decoder: str) -> float:
    """Frames/s of the extract loop (decode..write, from the output's timings) with `workers` decoders."""
    from pigcli.stages.extract import ExtractSettings, extract
    from pigcli.store import read_attrs

    extract([videos], output, str(model_dir), device=device, batch_size=batch_size, workers=workers,
            settings=ExtractSettings(decoder=decoder), force=True)
    attrs = read_attrs(output)
    return attrs["settings"]["num_frames"] * len(list(videos.iterdir())) / attrs["timings"]["wall"]


def parse_workers(text: str) -> list[int]:
    from pigcli.core.device import default_workers

    return [default_workers() if part == "default" else int(part) for part in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--preset", default="b32")
    parser.add_argument("--workers", default="0,1,2", help="decoding processes to measure, e.g. 0,1,2 or 1,4,8,default")
    parser.add_argument("--size", type=int, default=224, help="height of the generated videos")
    parser.add_argument("--decoder", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="videos per forward (default: extract's)")
    parser.add_argument("--no-extract", action="store_true", help="decoding and the model alone")
    parser.add_argument("--per-worker", type=int, default=None,
                        help="decode at most this many videos per worker (0 workers: as 1) for each decode rate")
    parser.add_argument("--model", type=Path, default=None, help="a model folder (default: random, --preset)")
    parser.add_argument("--videos-dir", type=Path, default=None, help="videos already made (default: generated)")
    args = parser.parse_args(argv)

    import torch

    from pigcli.core.device import default_workers, resolve_device
    from pigcli.inputs.decode_pool import decode_videos
    from pigcli.model.checkpoint import load_checkpoint
    from pigcli.model.factory import init_random
    from pigcli.stages.extract import BATCH_VIDEOS
    from pigcli.inputs.sources import VideoEntry
    from pigcli.inputs.video import resolve_decoder

    decoder = resolve_decoder(args.decoder)
    device, precision = resolve_device(args.device)
    batch_size = args.batch_size or BATCH_VIDEOS[device.type]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = args.videos_dir or tmp / "videos"
        paths = sorted(videos.glob("*.mp4")) if args.videos_dir else make_videos(videos, args.videos, args.size)
        model_dir = args.model or init_random(tmp / "model", args.preset)
        pig = load_checkpoint(model_dir, device).model
        num_frames, image_size = pig.config.num_frames, pig.image_size
        # the model's input: a few batches, decoded by the pool (a GPU gets the same batches 10 times)
        sample = paths[: max(2 * batch_size, 8)]
        clips = [d.clip.frames for d in decode_videos([VideoEntry(p.stem, p) for p in sample], num_frames,
                                                      image_size, decoder, default_workers(), timeout=120.0)]
        model = model_rate(pig, clips, batch_size, device, precision, repeats=1 if device.type == "cpu" else 10)
        rows = []
        for workers in parse_workers(args.workers):
            share = paths[: args.per_worker * max(workers, 1)] if args.per_worker else paths
            decoded = decode_rate(share, num_frames, image_size, decoder, workers)
            whole = None if args.no_extract else extract_rate(videos, tmp / "feats.h5", model_dir, str(device),
                                                              batch_size, workers, decoder)
            rows.append((workers, decoded, whole))
    made = f"model {args.model}" if args.model else f"preset {args.preset} (random weights)"
    print(f"{len(paths)} videos, T = {num_frames}, {image_size} px, decoder {decoder}, {made}, {device} {precision}, batch {batch_size} videos, torch threads {torch.get_num_threads()}")
    print(f"model alone: {model:.1f} frames/s\n")
    print("| workers | decoded frames/s | decoded / model | extract frames/s (loop) |")
    print("|---|---|---|---|")
    for workers, decoded, whole in rows:
        shown = "-" if whole is None else f"{whole:.1f}"
        print(f"| {workers} | {decoded:.1f} | {decoded / model:.2f} | {shown} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
