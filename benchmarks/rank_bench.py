"""Benchmark pigcli.core.search.exact_topk against numpy, faiss flat and a plain matmul scan.

    python benchmarks/rank_bench.py --sizes 100000 1000000 --queries 1 100

Random unit vectors (D=512), stored float32 and float16. For each size, storage and query
count it times (median of --repeats calls after one warm-up call):
  exact_topk     pigcli.core.search.exact_topk, precision="auto" (one row per --block-rows value)
  exact_topk fp32  the same with precision="fp32" (plain fp32 scan + rescoring)
  exact_topk + norm bound  precision="auto" with row_norm_bound, the stored bound `pig fuse` writes
                 (/norm) and `pig rank` passes: no per-block norm pass (bound computed untimed)
  numpy          queries @ index.T, np.argpartition, sort of the k (fp16 storage: numpy
                 upcasts the whole matrix to fp32 inside the matmul)
  faiss flat     faiss.IndexFlatIP.search (fp32 copy of the stored values; build not timed)
  plain scan     one torch.matmul of the queries against the whole stored matrix, no top-k
Methods run round-robin (one call each per round), so load from other processes on a shared
machine falls on all of them alike. The script checks every method's top-k rows against a float64 brute force of the stored values.
Threads: each library's default (all cores) unless set through the environment, e.g.
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 for single-threaded figures.
Peak extra memory is the rise of the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs) during one call: it sees torch, numpy and faiss allocations alike.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pigcli.core.search import exact_topk  # noqa: E402
from pigcli.stages.fuse import row_norm_bounds  # noqa: E402

WITH_BOUND = "exact_topk + norm bound"

# Set these in the environment to pin every library to one thread (torch, faiss, OpenBLAS).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
Method = Callable[[], np.ndarray]  # returns rows [Q, k] (or None for the plain scan)


def main() -> None:
    args = parse_args()
    print(machine_line(args), flush=True)
    rows_out: list[dict] = []
    for n in args.sizes:
        rng = np.random.default_rng(n)
        index32 = unit_vectors(rng, n, args.dim)
        queries = {q: unit_vectors(rng, q, args.dim) for q in args.queries}
        for storage in args.storages:
            index = index32 if storage == "fp32" else index32.astype(np.float16)
            rows_out += bench_storage(args, index, storage, queries)
            del index
            gc.collect()
        del index32
        gc.collect()
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    print()
    print(markdown_table(rows_out))
    print()
    print(summary(rows_out))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="index rows N")
    p.add_argument("--queries", type=int, nargs="+", default=[1, 100], help="query counts Q")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7, help="timed calls per method (median)")
    p.add_argument("--block-rows", type=int, nargs="+", default=[65536], help="exact_topk block sizes")
    p.add_argument("--storages", nargs="+", choices=("fp32", "fp16"), default=["fp32", "fp16"],
                   help="stored index dtypes to time")
    p.add_argument("--no-faiss", action="store_true", help="skip faiss even if installed")
    p.add_argument("--baseline", metavar="REPO", help="also time exact_topk of another checkout (e.g. main) "
                   "in the same rounds, as 'exact_topk (baseline)'")
    return p.parse_args()


def machine_line(args: argparse.Namespace) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = " ".join(f"{v}={os.environ[v]}" for v in THREAD_ENV if v in os.environ) or "no thread env vars"
    return (
        f"# {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"numpy {np.__version__}, faiss {faiss_version()}, {env}, k={args.k}, D={args.dim}, "
        f"repeats={args.repeats}, load average at start {os.getloadavg()[0]:.2f}"
    )


def unit_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def bench_storage(args: argparse.Namespace, index: np.ndarray, storage: str, queries: dict) -> list[dict]:
    faiss_index = build_faiss(index) if not args.no_faiss else None
    out = []
    for n_q, q in queries.items():
        truth = reference_rows(index, q, args.k)
        found = methods(args, index, q, faiss_index)
        first = {name: first_call(method) for name, method in found.items()}
        times = round_robin(found, args.repeats)
        for name, (peak_mb, rows) in first.items():
            same = None if rows is None else bool(np.array_equal(rows, truth))
            ms = statistics.median(times[name]) * 1e3
            row = dict(n=index.shape[0], storage=storage, q=n_q, method=name, ms=ms, mb=peak_mb, same=same)
            print(format_progress(row), flush=True)
            out.append(row)
    del faiss_index
    return out


def methods(args: argparse.Namespace, index: np.ndarray, q: np.ndarray, faiss_index) -> dict[str, Method]:
    k = args.k
    found: dict[str, Method] = {}
    for b in args.block_rows:
        label = "exact_topk" if len(args.block_rows) == 1 else f"exact_topk B={b}"
        found[label] = lambda b=b: exact_topk(index, q, k, block_rows=b)[1]
    if args.baseline:
        old = baseline_exact_topk(args.baseline)
        found["exact_topk (baseline)"] = lambda: old(index, q, k, block_rows=args.block_rows[0])[1]
    found["exact_topk fp32"] = lambda: exact_topk(index, q, k, block_rows=args.block_rows[0], precision="fp32")[1]
    bound = max(float(row_norm_bounds(index[i : i + 65536]).max()) for i in range(0, len(index), 65536))
    found[WITH_BOUND] = lambda: exact_topk(index, q, k, block_rows=args.block_rows[0], row_norm_bound=bound)[1]
    found["numpy"] = lambda: numpy_topk(index, q, k)
    if faiss_index is not None:
        found["faiss flat"] = lambda: faiss_index.search(q, k)[1]
    found["plain scan"] = plain_scan(index, q)
    return found


def baseline_exact_topk(repo: str):
    """exact_topk of the pigcli package in another checkout, imported under another name."""
    import importlib
    import importlib.util

    root = Path(repo) / "pigcli"
    spec = importlib.util.spec_from_file_location("pig_baseline", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["pig_baseline"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("pig_baseline.core.search").exact_topk


def numpy_topk(index: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = q @ index.T  # [Q, N]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def plain_scan(index: np.ndarray, q: np.ndarray) -> Method:
    """One matmul of the queries against the stored matrix, in its stored dtype: the floor."""
    x = torch.from_numpy(index)
    qt = torch.from_numpy(q).to(x.dtype)

    def scan() -> None:
        torch.matmul(qt, x.T)

    return scan


def faiss_version() -> str:
    try:
        import faiss

        return faiss.__version__
    except ImportError:
        return "not installed"


def build_faiss(index: np.ndarray):
    try:
        import faiss
    except ImportError:
        print("faiss not installed: skipping the faiss column", flush=True)
        return None
    flat = faiss.IndexFlatIP(index.shape[1])
    flat.add(np.ascontiguousarray(index, dtype=np.float32))
    return flat


def reference_rows(index: np.ndarray, q: np.ndarray, k: int, block: int = 65536) -> np.ndarray:
    """float64 brute force over the stored values, ties by lower row: the exact answer."""
    best_s = np.full((q.shape[0], 0), -np.inf)
    best_r = np.zeros((q.shape[0], 0), dtype=np.int64)
    q64 = q.astype(np.float64)
    for start in range(0, index.shape[0], block):
        s = q64 @ index[start : start + block].astype(np.float64).T
        take = min(k, s.shape[1])
        part = np.argpartition(-s, take - 1, axis=1)[:, :take]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        best_r = np.concatenate([best_r, part + start], axis=1)
        order = np.stack([np.lexsort((r, -s_)) for s_, r in zip(best_s, best_r)])[:, :k]
        best_s, best_r = np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_r, order, axis=1)
    return best_r


def first_call(method: Method) -> tuple[float, np.ndarray | None]:
    """Warm-up call: (peak extra MiB, result rows)."""
    gc.collect()
    base = reset_peak_rss()
    rows = method()
    peak_mb = (peak_rss_kib() - base) / 1024 if base is not None else float("nan")
    return peak_mb, rows


def round_robin(found: dict[str, Method], repeats: int) -> dict[str, list[float]]:
    """Seconds per call, methods interleaved so that load from other processes on a shared
    machine falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(repeats):
        for name, method in found.items():
            start = time.perf_counter()
            method()
            times[name].append(time.perf_counter() - start)
    return times


def reset_peak_rss() -> int | None:
    """Hand freed heap back to the OS (else reused pages hide new allocations), then reset."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: peak RSS := current RSS
        return peak_rss_kib()
    except OSError:
        return None


def peak_rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))


def format_progress(r: dict) -> str:
    return f"N={r['n']} {r['storage']} Q={r['q']} {r['method']}: {r['ms']:.1f} ms, +{r['mb']:.0f} MiB, top-k same={r['same']}"


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| N | stored | Q | method | median ms | x exact_topk | top-10 = exact fp32 | peak extra MiB |",
        "|---:|---|---:|---|---:|---:|---|---:|",
    ]
    for r in rows:
        ref = next(x for x in rows if same_case(x, r) and x["method"].startswith("exact_topk"))
        same = "n/a (no top-k)" if r["same"] is None else ("yes" if r["same"] else "**NO**")
        lines.append(
            f"| {r['n']:,} | {r['storage']} | {r['q']} | {r['method']} | {r['ms']:.1f} "
            f"| {r['ms'] / ref['ms']:.2f} | {same} | {r['mb']:.0f} |"
        )
    return "\n".join(lines)


def same_case(a: dict, b: dict) -> bool:
    return (a["n"], a["storage"], a["q"]) == (b["n"], b["storage"], b["q"])


def summary(rows: list[dict]) -> str:
    """The two ratios the targets are stated in."""
    out = []
    for r in rows:
        if r["method"] not in ("exact_topk", WITH_BOUND) and not r["method"].startswith("exact_topk B="):
            continue
        case = [x for x in rows if same_case(x, r)]
        plain = next(x for x in case if x["method"] == "plain scan")
        faiss_row = next((x for x in case if x["method"] == "faiss flat"), None)
        vs_faiss = f", faiss flat / {r['method']} = {faiss_row['ms'] / r['ms']:.2f}" if faiss_row else ""
        out.append(
            f"- N={r['n']:,} {r['storage']} Q={r['q']} {r['method']}: "
            f"{r['method']} / plain scan = {r['ms'] / plain['ms']:.2f}{vs_faiss}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
