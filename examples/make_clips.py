"""Write a few short clips of coloured squares moving on a grey background, with captions.

    python examples/make_clips.py OUT_DIR [--count 8]

Writes OUT_DIR/videos/*.mp4 and OUT_DIR/captions.csv (video_id,caption). A stand-in corpus for the
quickstart until the toy corpus generator (`pig toy make`) lands.
"""

import argparse
import csv
from pathlib import Path

import numpy as np

from pigcli.toy.videowrite import write_video

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def clip(colour, motion, frames=24, height=96, width=128, size=24):
    """A square of `colour` crossing the frame in direction `motion`."""
    video = np.full((frames, height, width, 3), 110, np.uint8)
    dx, dy = MOTIONS[motion]
    for t in range(frames):
        progress = t / (frames - 1)
        x = int((width - size) * (progress if dx > 0 else 1 - progress if dx < 0 else 0.5))
        y = int((height - size) * (progress if dy > 0 else 1 - progress if dy < 0 else 0.5))
        video[t, y : y + size, x : x + size] = COLOURS[colour]
    return video


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args()
    (args.out / "videos").mkdir(parents=True, exist_ok=True)
    combos = [(c, m) for c in COLOURS for m in MOTIONS][: args.count]
    with open(args.out / "captions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "caption"])
        for i, (colour, motion) in enumerate(combos):
            video_id = f"clip{i:03d}"
            write_video(args.out / "videos" / f"{video_id}.mp4", clip(colour, motion))
            writer.writerow([video_id, f"a {colour} square moves {motion}"])
    print(args.out / "videos")


if __name__ == "__main__":
    main()
