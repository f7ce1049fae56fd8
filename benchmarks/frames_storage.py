"""How `pig frames` stores its uint8 pixels: size and read speed of HDF5 compression and chunk choices.

    python benchmarks/frames_storage.py [--rows 96] [--frames 12] [--sizes 64,224] [--batch 16] [--image PHOTO]

For each content kind and image size, the same [rows, T, 3, S, S] uint8 array is written through
StageWriter (the stage's own writer) with each layout, then read back the way training reads it:
random batches of `--batch` rows (sorted, `store.take_rows`) over one epoch, and once sequentially.
Content kinds:
  toy      the toy corpus's look: flat background, a few moving coloured squares (pigcli.toy.corpus-like)
  noise    1/f ("pink") noise that drifts between frames: about as hard to compress as natural images
  photo    --image PHOTO (any picture PyAV decodes), panned over: a camera moving over a real scene
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

LAYOUTS = {  # name -> StageWriter.finish layout of /pixels
    "none, chunk 1": dict(chunk_rows=1),
    "none, chunk 4": dict(chunk_rows=4),
    "lzf, chunk 1": dict(chunk_rows=1, compression="lzf"),
    "lzf, chunk 4": dict(chunk_rows=4, compression="lzf"),
    "gzip 1, chunk 1": dict(chunk_rows=1, compression="gzip", compression_opts=1),
    "gzip 1, chunk 4": dict(chunk_rows=4, compression="gzip", compression_opts=1),
}


def toy_frames(rows: int, frames: int, size: int, rng) -> np.ndarray:
    out = np.empty((rows, frames, 3, size, size), np.uint8)
    side = size // 4
    for r in range(rows):
        out[r] = rng.integers(60, 200, (3, 1, 1), dtype=np.uint8)[None]
        for _ in range(3):
            colour = rng.integers(0, 256, (3, 1, 1), dtype=np.uint8)
            top, left = rng.integers(0, size - side, 2)
            for t in range(frames):
                x = (left + 2 * t) % (size - side)
                out[r, t, :, top : top + side, x : x + side] = colour
    return out


def noise_frames(rows: int, frames: int, size: int, rng) -> np.ndarray:
    """1/f noise per video, shifted a little each frame (camera motion), with mild per-frame noise."""
    out = np.empty((rows, frames, 3, size, size), np.uint8)
    big = size + 2 * frames
    fy, fx = np.meshgrid(np.fft.fftfreq(big), np.fft.fftfreq(big), indexing="ij")
    falloff = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / big)
    for r in range(rows):
        spectrum = (rng.standard_normal((3, big, big)) + 1j * rng.standard_normal((3, big, big))) * falloff
        image = np.fft.ifft2(spectrum).real
        image = (image - image.mean()) / image.std() * 45 + 128
        for t in range(frames):
            frame = image[:, 2 * t : 2 * t + size, t : t + size] + rng.normal(0, 2, (3, size, size))
            out[r, t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def photo_frames(path: str, rows: int, frames: int, size: int, rng) -> np.ndarray:
    import av

    from pigcli.inputs.video import resize_and_crop

    with av.open(path) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    window = min(rgb.shape[:2]) * 2 // 3
    out = np.empty((rows, frames, 3, size, size), np.uint8)
    for r in range(rows):
        top, left = rng.integers(0, rgb.shape[0] - window), rng.integers(0, rgb.shape[1] - window - frames * 4)
        clips = np.stack([rgb[top : top + window, left + 4 * t : left + 4 * t + window] for t in range(frames)])
        out[r] = resize_and_crop(clips, size)
    return out


def write(path: Path, pixels: np.ndarray, layout: dict) -> float:
    from pigcli.store import Provenance, StageWriter

    writer = StageWriter(path, Provenance("frames", {"bench": True}), force=True)
    for number, start in enumerate(range(0, len(pixels), 64)):
        writer.write_block(number, {"pixels": pixels[start : start + 64]})
    start = time.perf_counter()
    writer.finish(layouts={"pixels": layout})
    return time.perf_counter() - start


def read_epoch(path: Path, rows: int, batch: int, rng) -> tuple[float, float]:
    """(seconds for one epoch of random sorted batches, seconds for one sequential pass)."""
    import h5py

    from pigcli.store import take_rows

    order = rng.permutation(rows)
    with h5py.File(path, "r") as handle:
        data = handle["pixels"]
        start = time.perf_counter()
        for i in range(0, rows, batch):
            take_rows(data, np.sort(order[i : i + batch]))
        random_s = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(0, rows, batch):
            data[i : i + batch]
        sequential_s = time.perf_counter() - start
    return random_s, sequential_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--sizes", default="64,224")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image", help="a photo to pan over (the 'photo' content); left out without it")
    args = parser.parse_args()

    print("| content | S | layout | MB | ratio | write s | random-batch read MB/s | sequential read MB/s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(int, args.sizes.split(",")):
            kinds = {"toy": toy_frames, "noise": noise_frames}
            if args.image:
                kinds["photo"] = lambda rows, frames, size, rng: photo_frames(args.image, rows, frames, size, rng)
            for kind, make in kinds.items():
                pixels = make(args.rows, args.frames, size, np.random.default_rng(0))
                raw_mb = pixels.nbytes / 2**20
                for name, layout in LAYOUTS.items():
                    path = Path(tmp) / f"{kind}-{size}-{name.replace(' ', '').replace(',', '-')}.h5"
                    write_s = write(path, pixels, layout)
                    runs = [read_epoch(path, args.rows, args.batch, np.random.default_rng(i)) for i in range(3)]
                    random_s, sequential_s = (min(r[0] for r in runs), min(r[1] for r in runs))  # best of 3
                    mb = path.stat().st_size / 2**20
                    print(f"| {kind} | {size} | {name} | {mb:.1f} | {raw_mb / mb:.2f} | {write_s:.2f} "
                          f"| {raw_mb / random_s:.0f} | {raw_mb / sequential_s:.0f} |", flush=True)
                    path.unlink()


if __name__ == "__main__":
    main()
