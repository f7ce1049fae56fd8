"""Online cost per query of each retrieval method on one index: multiply-adds (pigcli.core.cost) and
measured time, as `pig rank --cost` and the demo report them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..core.cost import rerank_macs, two_tower_macs, xpool_macs
from ..store import read_ids
from ..stagefiles import open_stage
from .scoring import rank_index, rank_xpool


@dataclass
class MethodCost:
    key: str              # 'scan', 'rerank' or 'xpool'
    method: str           # what the report calls it
    macs_per_query: int
    seconds_per_query: float
    note: str = ""


def measure_costs(index_path, text: np.ndarray, features, pig, device, rerank_k: int = 50, top: int = 10,
                  xpool_videos: int = 2000) -> list[MethodCost]:
    """Time each method on these queries; xpool on at most `xpool_videos` videos, scaled to N (linear in N)."""
    from .rerank import rerank

    with open_stage(index_path, "fuse") as handle:
        video_ids = read_ids(handle)
        n, dim = handle["embedding"].shape
    queries = len(text)
    costs = []
    rank_index(index_path, text[:1], max(top, rerank_k))  # untimed: the first call pays file and thread start-up
    start = time.perf_counter()
    scores, rows = rank_index(index_path, text, max(top, rerank_k))
    scan = (time.perf_counter() - start) / queries
    costs.append(MethodCost("scan", "index scan (meanpool = PIG)", two_tower_macs(n, dim), scan))
    if features is not None:
        import h5py

        with h5py.File(features, "r") as feats:
            frames, proxies, patches = feats["frames"].shape[1], feats["proxies"].shape[1], feats["patches"].shape[1]
        start = time.perf_counter()
        rerank(text, rows, scores, features, video_ids, rerank_k, head=pig.eercf)
        fine = (time.perf_counter() - start) / queries
        costs.append(MethodCost("rerank", f"index scan + EERCF rerank {rerank_k}",
                                two_tower_macs(n, dim) + rerank_macs(min(rerank_k, n), frames, patches, dim),
                                scan + fine))
        sample = video_ids[: min(n, xpool_videos)]
        start = time.perf_counter()
        rank_xpool(pig, features, sample, text, top, device)
        single = (time.perf_counter() - start) / queries * n / len(sample)
        note = "" if len(sample) == n else f"time scaled from {len(sample)} videos"
        costs.append(MethodCost("xpool", "xpool (single tower)", xpool_macs(n, 1 + proxies + frames, dim), single, note))
    return costs


def format_costs(costs: list[MethodCost], n_videos: int) -> str:
    base = costs[0]
    lines = [f"online cost per query, {n_videos} videos",
             f"{'method':<34} {'multiply-adds':>15} {'x scan':>8} {'ms':>10} {'x scan':>8}"]
    for cost in costs:
        lines.append(f"{cost.method:<34} {cost.macs_per_query:>15,} {cost.macs_per_query / base.macs_per_query:>8.1f} "
                     f"{cost.seconds_per_query * 1e3:>10.2f} {cost.seconds_per_query / base.seconds_per_query:>8.1f}"
                     + (f"  ({cost.note})" if cost.note else ""))
    return "\n".join(lines)
