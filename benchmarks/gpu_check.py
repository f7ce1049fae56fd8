"""GPU check: extract throughput at fp32 and under autocast, their differences, and training pairs/s.

    bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU (B/32 shape, random weights)
    bash benchmarks/gpu_check.sh --dry      # anywhere: CPU, the tiny preset, a few small videos, bf16

On generated videos (benchmarks/train_bench.make_corpus) and a random model of the preset's shape:
  1. `extract` at fp32 and at the device's autocast precision (bf16 where supported, else fp16):
     frames/s of the extract loop (decode in workers, model, HDF5 writes; from the file's timings);
  2. the autocast outputs against fp32, as a table: per dataset the smallest cosine of an output vector
     with its fp32 value and the largest difference relative to the largest fp32 entry (ITS scores: the
     largest difference relative to the largest score), for extract, generate and embed-text, checked
     against the stated tolerance (tests/test_precision.py: cosine >= 0.999, relative difference <= 2%;
     ITS <= 1%); and how many of each video's top-k ITS patches agree;
  3. a few training steps (method pig, phase 2, full fine-tune from the frames that `pig frames` stored)
     at the default precision: pairs/s.
Exit code 1 when a difference is outside the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_bench, when run as a script

MIN_COSINE, MAX_REL, MAX_ITS_REL = 0.999, 0.02, 0.01  # the tolerance tests/test_precision.py states


def differences(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(smallest cosine of an output vector with its fp32 value, largest |difference| / largest |fp32|)."""
    x = np.asarray(reference, np.float64).reshape(-1, reference.shape[-1])
    y = np.asarray(other, np.float64).reshape(-1, reference.shape[-1])
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    keep = norms > 0  # failed videos are zero rows in both
    cosine = float((np.sum(x * y, 1)[keep] / norms[keep]).min()) if keep.any() else 1.0
    return cosine, float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-30))


def top_k_agreement(reference: np.ndarray, other: np.ndarray, k: int) -> float:
    """Mean share of each video's top-k ITS patches that both precisions choose."""
    a, b = np.argsort(-reference, 1)[:, :k], np.argsort(-other, 1)[:, :k]
    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(a, b)]))


def read(path: Path, names: tuple[str, ...]) -> dict:
    import h5py

    with h5py.File(path, "r") as handle:
        return {name: handle[name][:] for name in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, tiny preset, few small videos (a check of the script)")
    parser.add_argument("--videos", type=int, default=None, help="default 128 (dry: 6)")
    parser.add_argument("--preset", default=None, help="default b32 (dry: tiny)")
    parser.add_argument("--batch-size", type=int, default=None, help="extract: videos per forward (default: pig's)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default 6; dry: 0)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 30; dry: 2)")
    parser.add_argument("--train-batch", type=int, default=None, help="training pairs per step (default 64; dry: 4)")
    args = parser.parse_args()
    dry = args.dry
    videos = args.videos or (6 if dry else 128)
    preset = args.preset or ("tiny" if dry else "b32")
    workers = args.workers if args.workers is not None else (0 if dry else 6)
    steps, train_batch = args.steps or (2 if dry else 30), args.train_batch or (4 if dry else 64)

    import torch

    from pigcli.model.factory import init_random
    from pigcli.stages.embed_text import embed_text
    from pigcli.stages.extract import ExtractSettings, extract
    from pigcli.stages.frames import frames as make_frames
    from pigcli.stages.generate import generate
    from pigcli.stages.select import select
    from pigcli.store import read_attrs
    from pigcli.train import TrainConfig, train
    from train_bench import make_corpus

    if dry:
        device, autocast_precision = "cpu", "bf16"
    elif not torch.cuda.is_available():
        print("error: torch sees no CUDA GPU; run with --dry for a CPU check of the script", file=sys.stderr)
        return 2
    else:
        device = "cuda"
        autocast_precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        size = 64 if dry else 224
        captions = make_corpus(tmp / "corpus", videos, width=size * 4 // 3 // 2 * 2, height=size, frames=24 if dry else 48)
        print(f"made {videos} videos of {size} px in {time.perf_counter() - start:.1f}s; preset {preset} (random weights)")
        model = init_random(tmp / "model", preset)

        # 1. extract throughput, fp32 and autocast
        print("\n| precision | videos | frames/video | batch | workers | loop s | model s | frames/s |")
        print("|---|---|---|---|---|---|---|---|")
        files = {}
        for precision in ("fp32", autocast_precision):
            files[precision] = tmp / f"feats_{precision}.h5"
            extract([tmp / "corpus" / "videos"], files[precision], str(model), device=device, workers=workers,
                    batch_size=args.batch_size, settings=ExtractSettings(precision=precision))
            attrs = read_attrs(files[precision])
            timings, frames_per_video = attrs["timings"], attrs["settings"]["num_frames"]
            batch = json.loads(attrs["run"])["batch_size"]
            print(f"| {precision} | {videos} | {frames_per_video} | {batch} | {workers} | {timings['wall']:.2f} | "
                  f"{timings['model']:.2f} | {videos * frames_per_video / timings['wall']:.1f} |")

        # 2. autocast against fp32: extract, generate, embed-text
        print("\n| stage | output | min cosine | max rel. diff | within tolerance |")
        print("|---|---|---|---|---|")
        rows = []
        names = ("video", "proxies", "frames", "patches", "its_score")
        a, b = read(files["fp32"], names), read(files[autocast_precision], names)
        for name in names[:-1]:
            rows.append(("extract", name, *differences(a[name], b[name]), MAX_REL))
        its_rel = float(np.abs(a["its_score"] - b["its_score"]).max() / a["its_score"].max())
        rows.append(("extract", "its_score", float("nan"), its_rel, MAX_ITS_REL))
        select(files["fp32"], tmp / "sel.h5")
        texts = tmp / "queries.txt"
        texts.write_text("".join(f"a coloured square number {i} slides across a grey field\n" for i in range(64)))
        for precision in ("fp32", autocast_precision):
            generate(tmp / "sel.h5", tmp / f"gen_{precision}.h5", device=device, precision=precision)
            embed_text(texts, tmp / f"q_{precision}.h5", str(model), device=device, precision=precision)
        for stage, stem, name in (("generate", "gen", "pseudo_query"), ("embed-text", "q", "embedding")):
            x = read(tmp / f"{stem}_fp32.h5", (name,))[name]
            y = read(tmp / f"{stem}_{autocast_precision}.h5", (name,))[name]
            rows.append((stage, name, *differences(x, y), MAX_REL))
        for stage, name, cosine, rel, bound in rows:
            ok = (np.isnan(cosine) or cosine >= MIN_COSINE) and rel <= bound
            failures += [] if ok else [f"{stage} {name}"]
            shown = "-" if np.isnan(cosine) else f"{cosine:.5f}"
            print(f"| {stage} | {name} | {shown} | {rel:.4f} | {'yes' if ok else 'NO'} |")
        k = 16
        print(f"top-{k} ITS patches chosen alike: {top_k_agreement(a['its_score'], b['its_score'], k):.1%} "
              f"(random weights: near-uniform scores, so ties flip)")

        # 3. training steps from cached frames, default precision
        make_frames([tmp / "corpus" / "videos"], tmp / "frames.h5", str(model), workers=workers)
        config = TrainConfig(output=tmp / "run", captions=captions, model=str(model), method="pig", phases="2",
                             frames=tmp / "frames.h5", steps=steps, batch_size=train_batch, device=device,
                             workers=min(workers, 4), lr=1e-5, lr_clip=1e-6)
        start = time.perf_counter()
        result = train(config)
        print(f"\ntraining: {steps} steps of {train_batch} pairs (pig, phase 2, full fine-tune, frames file, "
              f"precision auto): {result.pairs_per_second:.1f} pairs/s ({time.perf_counter() - start:.1f}s with set-up)")
    if failures:
        print(f"outside the tolerance: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
