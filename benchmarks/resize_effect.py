"""How far --resize squash (the official transform) and --resize crop (pig's earlier rule) move extract's outputs,
and how far a frames file's uint8 rounding of squash's float frames moves them.

    python benchmarks/resize_effect.py [--videos 16] [--preset b32] [--width 320 --height 240]

Writes --videos 4:3 videos (1/f noise panned like a camera, with moving squares: natural-image statistics
with edges; 24 frames at 8 fps, h264), makes a random model of --preset (b32: ViT-B/32 geometry at 224 px,
CLIP's normalisation), runs `extract` once per rule and prints, per video, the cosine between the two
files' video vectors and frame tokens, then the cosine between the video vectors of squash's float frames
and of the same frames rounded to uint8 as `pig frames` stores them, with the rounding's pixel error and
the share of values it clamps. The model is untrained: the cosines say how much the input moves through
CLIP's geometry, not how much a trained model's retrieval changes (docs/method.md, deviations).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pink_video(frames: int, height: int, width: int, rng) -> np.ndarray:
    """[T, H, W, 3] uint8: 1/f noise panned 2 px per frame, with two squares moving across it."""
    big_h, big_w = height + 2 * frames, width + 2 * frames
    fy, fx = np.meshgrid(np.fft.fftfreq(big_h), np.fft.fftfreq(big_w), indexing="ij")
    falloff = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(big_h, big_w))
    spectrum = (rng.standard_normal((3, big_h, big_w)) + 1j * rng.standard_normal((3, big_h, big_w))) * falloff
    image = np.fft.ifft2(spectrum).real
    image = (image - image.mean()) / image.std() * 45 + 128
    out = np.empty((frames, height, width, 3), np.uint8)
    side = height // 5
    squares = [(rng.integers(0, height - side), rng.integers(0, width - side), rng.integers(0, 256, 3))
               for _ in range(2)]
    for t in range(frames):
        frame = image[:, 2 * t : 2 * t + height, t : t + width].transpose(1, 2, 0).copy()
        for top, left, colour in squares:
            x = (left + 6 * t) % (width - side)
            frame[top : top + side, x : x + side] = colour
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--preset", default="b32")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()

    import h5py
    import torch

    from pigcli.inputs.video import normalize, read_clip, to_uint8
    from pigcli.model.checkpoint import load_checkpoint
    from pigcli.model.factory import init_random
    from pigcli.stages.extract import ExtractSettings, extract
    from pigcli.toy.videowrite import write_video

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        videos = root / "videos"
        videos.mkdir()
        for n in range(args.videos):
            write_video(videos / f"v{n:03d}.mp4", pink_video(24, args.height, args.width, rng), fps=8)
        model = init_random(root / "model", args.preset)
        files = {}
        for rule in ("squash", "crop"):
            files[rule] = root / f"{rule}.h5"
            extract([videos], files[rule], str(model), settings=ExtractSettings(patches="none", resize=rule),
                    device="cpu", workers=0)
        with h5py.File(files["squash"], "r") as squash, h5py.File(files["crop"], "r") as crop:
            video_cos = cosine(squash["video"][:], crop["video"][:])
            frame_cos = cosine(squash["frames"][:], crop["frames"][:])
        print(f"{args.videos} videos {args.width}x{args.height}, random {args.preset} model, 12 frames each")
        print(f"squash vs crop, video vector cosine: mean {video_cos.mean():.4f} min {video_cos.min():.4f}")
        print(f"squash vs crop, frame token cosine:  mean {frame_cos.mean():.4f} min {frame_cos.min():.4f}")

        loaded = load_checkpoint(model)
        pig, config = loaded.model.eval(), loaded.model.config
        rounding_cos, errors, clamped, values = [], [], 0, 0
        for path in sorted(videos.iterdir()):
            floats = read_clip(path, config.num_frames, pig.image_size, "pyav").frames
            rounded = to_uint8(floats)
            errors.append(np.abs(floats - rounded).max())
            clamped += int(((floats < -0.5) | (floats > 255.5)).sum())
            values += floats.size
            with torch.inference_mode():
                pair = torch.from_numpy(np.stack([floats, rounded.astype(np.float32)]))
                tokens = pig.encode_video(normalize(pair, config.image_mean, config.image_std), "vip")
            vectors = tokens.video.numpy()
            rounding_cos.append(cosine(vectors[0], vectors[1]))
        rounding_cos = np.array(rounding_cos)
        print(f"squash floats vs uint8 (pig frames), video vector cosine: mean {rounding_cos.mean():.6f} "
              f"min {rounding_cos.min():.6f}; pixel error max {max(errors):.2f} (0..255), "
              f"{100 * clamped / values:.3f}% of values clamped")


if __name__ == "__main__":
    main()
