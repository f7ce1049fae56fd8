"""Online cost per query of meanpool / PIG, PIG + EERCF rerank, and xpool, at 10k and 100k videos.

    python benchmarks/cost_bench.py --sizes 10000 100000 --queries 8

Synthetic but real-shaped data (ViT-B/32 at 12 frames: D = 512, T = 12, P = 3, 49 patches kept per
video) written as real pig stage files (an extract file and a fuse index), and a ViT-B/32-shaped
random model for the xpool fusioner. Uses `pigcli.query.cost.measure_costs`, the same code as
`pig rank --cost`. Prints one markdown table per size.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def unit(rng, shape) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def write_synthetic(folder: Path, n: int, model_identity: dict, dim=512, frames=12, proxies=3, patches=49,
                    block=4096) -> tuple[Path, Path]:
    from pigcli.store import Provenance, StageWriter, input_record, read_attrs

    rng = np.random.default_rng(n)
    feats = StageWriter(folder / "feats.h5", Provenance("extract", {"synthetic": n}, model_identity, []))
    index = StageWriter(folder / "index.h5", Provenance("fuse", {"synthetic": n}, model_identity, []))
    for number, start in enumerate(range(0, n, block)):
        rows = min(block, n - start)
        ids = [f"v{i:07d}" for i in range(start, start + rows)]
        frame_tokens = unit(rng, (rows, frames, dim))
        feats.write_block(number, {
            "ids": ids, "status": ["ok"] * rows,
            "video": unit(rng, (rows, dim)), "proxies": unit(rng, (rows, proxies, dim)), "frames": frame_tokens,
            "patches": unit(rng, (rows, patches, dim)).astype(np.float16),
        })
        mean = frame_tokens.mean(axis=1)
        index.write_block(number, {"ids": ids, "embedding": mean / np.linalg.norm(mean, axis=1, keepdims=True)})
    feats.finish()
    index.provenance.inputs = [input_record(folder / "feats.h5", read_attrs(folder / "feats.h5"))]
    index.finish()
    return folder / "index.h5", folder / "feats.h5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--rerank", type=int, default=50)
    parser.add_argument("--xpool-videos", type=int, default=10000, help="videos xpool is timed on (scaled to N)")
    args = parser.parse_args()

    import torch

    from pigcli.model.checkpoint import load_checkpoint
    from pigcli.model.factory import init_random
    from pigcli.query.cost import format_costs, measure_costs

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loaded = load_checkpoint(init_random(tmp / "model", "b32"))
        queries = unit(np.random.default_rng(0), (args.queries, 512))
        print(f"torch threads: {torch.get_num_threads()}, queries: {args.queries}\n")
        for n in args.sizes:
            folder = tmp / f"n{n}"
            folder.mkdir()
            index, feats = write_synthetic(folder, n, loaded.identity.to_dict())
            costs = measure_costs(index, queries, feats, loaded.model, torch.device("cpu"), args.rerank,
                                  xpool_videos=args.xpool_videos)
            print("```\n" + format_costs(costs, n) + "\n```\n")
            for path in (index, feats):
                path.unlink()


if __name__ == "__main__":
    main()
