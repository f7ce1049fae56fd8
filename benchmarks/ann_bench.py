"""Approximate search (`pig index-ann`, `pig rank --ann`) against the exact scan, on synthetic
clustered vectors too large to hold in memory.

    python benchmarks/ann_bench.py --rows 10000000 --hnsw-rows 500000 --work /tmp/ann-bench

Data: `--clusters` unit centres (default rows/1000); each vector is a centre plus Gaussian noise of
norm about --noise, normalised; queries are drawn the same way. Generated deterministically chunk
by chunk (chunk i from seed [seed, i]) and written straight to a pig index file (the layout and
attributes `pig fuse` writes), so the matrix is never in memory whole. Ground truth: the exact
top-10 of every query by `exact_topk` streaming the file (what `pig rank` runs).

For each ANN type it builds the ANN with `pigcli.query.ann.build_ann` (what `pig index-ann` runs)
and searches with `AnnSearcher` (what `pig rank --ann` runs: ANN candidates, exact rescoring from
the index file), one query per call, at each thread count and nprobe / ef_search value. Reports
bytes per vector of the ANN file (what search holds in memory), build seconds, peak RSS of the
process, median and p95 ms per query, recall@10 against the exact top-10. hnsw holds every vector
in fp32 (4*D bytes each): it is measured on the first --hnsw-rows rows, with their own ground truth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHUNK = 65536


def main() -> None:
    args = parse_args()
    import faiss
    import torch

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"# {os.uname().nodename}: {os.cpu_count()} cores, torch {torch.__version__}, faiss {faiss.__version__}, "
          f"D={args.dim}, clusters={clusters(args)}, noise={args.noise}, queries={args.queries}", flush=True)
    print(f"# uptime at start: {uptime()}", flush=True)
    queries = query_vectors(args)
    results = []
    for kind in args.types:
        n = min(args.rows, args.hnsw_rows) if kind == "hnsw" else args.rows
        index = work / f"index-{n}-{args.dtype}-c{clusters(args)}-noise{args.noise}-seed{args.seed}.h5"
        if not index.exists():
            seconds = write_index(index, args, n)
            print(f"wrote {index} ({n} x {args.dim}, {args.dtype}) in {seconds:.0f} s", flush=True)
        truth, exact_ms = ground_truth(index, queries, args.k)
        print(f"N={n}: exact top-{args.k} of {len(queries)} queries, {exact_ms:.1f} ms/query "
              f"(batched, {torch.get_num_threads()} threads); uptime {uptime()}", flush=True)
        results += bench_type(args, kind, index, queries, truth, work)
    print(f"# uptime at end: {uptime()}")
    print()
    print(markdown_table(results))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--hnsw-rows", type=int, default=200_000, help="rows hnsw is measured on (fp32 in memory)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--clusters", type=int, default=0, help="default: rows / 1000")
    p.add_argument("--noise", type=float, default=0.8, help="norm of the noise added to a centre")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="stored index dtype")
    p.add_argument("--types", nargs="+", default=["ivfpq", "hnsw"])
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--refine", type=int, nargs="+", default=[10])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/ann-bench", help="folder for the index and ANN files (kept)")
    return p.parse_args()


def uptime() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def clusters(args) -> int:
    return args.clusters or max(1, args.rows // 1000)


def centres(args) -> np.ndarray:
    c = np.random.default_rng([args.seed, 1 << 30]).standard_normal((clusters(args), args.dim), dtype=np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def draw(rng: np.random.Generator, centre: np.ndarray, n: int, noise: float) -> np.ndarray:
    """n unit vectors: a random centre each, plus noise of norm about `noise` (uniform entries
    with the variance of Gaussian ones: 3x cheaper to draw, alike in 512 dimensions)."""
    d = centre.shape[1]
    x = centre[rng.integers(0, len(centre), n)]
    u = rng.random((n, d), dtype=np.float32)
    x += (u - np.float32(0.5)) * np.float32(noise * np.sqrt(12.0 / d))
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x


def query_vectors(args) -> np.ndarray:
    return draw(np.random.default_rng([args.seed, 1 << 31]), centres(args), args.queries, args.noise)


def write_index(path: Path, args, n: int) -> float:
    """A pig index file of n rows (chunk i drawn from seed [seed, i]), written chunk by chunk."""
    import h5py

    from pigcli.store import Provenance

    start = time.perf_counter()
    centre = centres(args)
    provenance = Provenance("fuse", {"synthetic": n, "seed": args.seed, "noise": args.noise},
                            {"name": "synthetic", "hash": f"synthetic-{args.seed}"})
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as out:
        for key, value in provenance.attrs().items():
            out.attrs[key] = value
        dtype = np.float32 if args.dtype == "fp32" else np.float16
        emb = out.create_dataset("embedding", (n, args.dim), dtype, chunks=(256, args.dim))
        norm = out.create_dataset("norm", (n,), np.float32)
        ids = out.create_dataset("ids", (n,), h5py.string_dtype())  # as StageWriter stores ids
        for i, lo in enumerate(range(0, n, CHUNK)):
            hi = min(n, lo + CHUNK)
            block = draw(np.random.default_rng([args.seed, i]), centre, hi - lo, args.noise).astype(dtype)
            emb[lo:hi] = block
            # unit rows up to fp32 rounding (relative error below D * 2^-24 = 3e-5 at D=512)
            norm[lo:hi] = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float32)) * np.float32(1.001)
            ids[lo:hi] = [f"v{r:08d}" for r in range(lo, hi)]
    os.replace(tmp, path)
    return time.perf_counter() - start


def ground_truth(index: Path, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    from pigcli.query.scoring import rank_index

    start = time.perf_counter()
    _, rows = rank_index(index, queries, k)
    return rows, (time.perf_counter() - start) * 1e3 / len(queries)


def bench_type(args, kind: str, index: Path, queries: np.ndarray, truth: np.ndarray, work: Path) -> list[dict]:
    import faiss
    import torch

    from pigcli.query.ann import AnnSearcher, build_ann

    ann = work / f"{index.stem}.{kind}.faiss"
    base_rss = peak_rss_reset()
    built = build_ann(index, ann, kind, force=True, seed=args.seed)
    build_peak_mb = (peak_rss_kib() - base_rss) / 1024
    n = built.rows
    print(f"{kind}: {built.params.factory()} built in {built.seconds:.0f} s, {built.bytes / n:.1f} bytes/vector, "
          f"+{build_peak_mb:.0f} MiB peak RSS; uptime {uptime()}", flush=True)
    knob, values = ("nprobe", args.nprobe) if kind == "ivfpq" else ("ef_search", args.ef_search)
    if kind == "flat":
        knob, values = None, [None]
    out = []
    with AnnSearcher(index, ann) as searcher:
        for threads in args.threads:
            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
            for value in values:
                for refine in args.refine if kind == "ivfpq" else [1]:  # others hold exact vectors
                    options = {"refine": refine, **({knob: value} if knob else {})}
                    searcher.search(queries[:5], args.k, **options)  # warm: pages of the lists, caches
                    times, found = [], []
                    for q in queries:
                        start = time.perf_counter()
                        found.append(searcher.search(q[None], args.k, **options)[1][0])
                        times.append((time.perf_counter() - start) * 1e3)
                    row = dict(kind=kind, factory=built.params.factory(), n=n, threads=threads, knob=knob,
                               value=value, refine=refine, recall=recall(np.array(found), truth),
                               ms=statistics.median(times), p95=float(np.percentile(times, 95)),
                               bytes=built.bytes / n, build_s=built.seconds, build_mb=build_peak_mb,
                               load=os.getloadavg()[0])
                    print(format_row(row), flush=True)
                    out.append(row)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found top-k & exact top-k| / k."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def peak_rss_reset() -> int:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return peak_rss_kib()


def peak_rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def format_row(r: dict) -> str:
    knob = f"{r['knob']}={r['value']} " if r["knob"] else ""
    return (f"{r['kind']} N={r['n']} threads={r['threads']} {knob}refine={r['refine']}: recall@10 {r['recall']:.3f}, "
            f"{r['ms']:.2f} ms/query (p95 {r['p95']:.2f}), load {r['load']:.1f}")


def markdown_table(rows: list[dict]) -> str:
    lines = ["| type | faiss | N | bytes/vector | build s | build peak MiB | threads | knob | refine "
             "| recall@10 | median ms/query | p95 ms | load |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        knob = f"{r['knob']}={r['value']}" if r["knob"] else "-"
        lines.append(f"| {r['kind']} | {r['factory']} | {r['n']:,} | {r['bytes']:.1f} | {r['build_s']:.0f} "
                     f"| {r['build_mb']:.0f} | {r['threads']} | {knob} | {r['refine']} | {r['recall']:.3f} "
                     f"| {r['ms']:.2f} | {r['p95']:.2f} | {r['load']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
