"""Latency of the served query path (`pig serve`): HTTP in, text encoding, exact scan, JSON out.

    python benchmarks/serve_bench.py --videos 1000000 --queries 40

A synthetic index of N x 512 random unit vectors, written as a real `pig fuse` file (with its /norm
bounds) for a ViT-B/32-shaped random model (`pig init --preset b32`: B/32's text tower, 12 layers of
width 512; its byte-level tokenizer makes each query up to 50 tokens, more than CLIP's BPE would).
It starts `pig serve` on it in a subprocess, as a user would, and times GET /search?q=...&k=10 from
1 client (one query after another) and from 8 concurrent clients (threads), with distinct query texts.
Per query: the client's wall time, and from the Server-Timing header the server's encode and scan
times (of the batch the query was scanned with: concurrent queries share one scan) and the batch size;
"scan share" is the scan time summed over the queries over their wall time summed. Then the one-off CLI query, `pig rank INDEX --query
TEXT`, which loads the model and reads the index from disk every time, for comparison (and its top 10
is checked against the server's). Prints a markdown table; the machine load (uptime) before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLOURS = ("red", "blue", "green", "yellow", "white", "orange", "purple", "cyan")
SHAPES = ("circle", "square", "triangle", "cross", "diamond")
MOTIONS = ("moves left", "moves right", "moves up", "moves down", "stays still")
BACKGROUNDS = ("noisy brown", "striped grey", "dark blue", "black")


def query_texts(count: int) -> list[str]:
    """Distinct captions in the toy corpus's style (so no answer is a repeat of the one before)."""
    rng = np.random.default_rng(1)
    texts = set()
    while len(texts) < count:
        texts.add(f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} {rng.choice(MOTIONS)} "
                  f"on a {rng.choice(BACKGROUNDS)} background {int(rng.integers(1000))}")
    return sorted(texts)


def write_index(path: Path, n: int, dim: int, model_dir: Path, block: int = 65536) -> None:
    """N random unit vectors as a `pig fuse` index of the model in model_dir."""
    from pigcli.model.checkpoint import ModelFolder
    from pigcli.stages.fuse import row_norm_bounds
    from pigcli.store import Provenance, StageWriter

    folder = ModelFolder.read(model_dir)
    writer = StageWriter(path, Provenance("fuse", {"synthetic": n}, folder.identity.to_dict(), [],
                                          str(model_dir.resolve())))
    rng = np.random.default_rng(n)
    for number, start in enumerate(range(0, n, block)):
        rows = min(block, n - start)
        x = rng.standard_normal((rows, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        writer.write_block(number, {"ids": [f"v{i:07d}" for i in range(start, start + rows)], "embedding": x,
                                    "norm": row_norm_bounds(x)})
    writer.finish({"method": "pig"})
    writer.close()


def start_server(index: Path, port: int, threads: int | None) -> tuple[subprocess.Popen, float]:
    import httpx

    command = [sys.executable, "-m", "pigcli", "serve", str(index), "--port", str(port)]
    if threads:
        command += ["--threads", str(threads)]
    started = time.perf_counter()
    server = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    while True:
        if server.poll() is not None:
            raise SystemExit("pig serve ended: " + server.stderr.read())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server, time.perf_counter() - started
        except httpx.HTTPError:
            time.sleep(0.5)


def server_timing(header: str) -> dict[str, float]:
    """'encode;dur=12.3, scan;dur=80.1, batch;desc="3 queries"' -> {'encode': 0.0123, 'scan': 0.0801, 'batch': 3}."""
    out = {}
    for part in filter(None, (p.strip() for p in header.split(","))):
        name, _, value = part.partition(";")
        if value.startswith("dur="):
            out[name] = float(value[4:]) / 1e3
        elif value.startswith("desc="):
            out[name] = int(value[5:].strip('"').split()[0])
    return out


def run_clients(url: str, texts: list[str], clients: int) -> dict:
    """Each client sends its share of the texts one after another; returns per-query timings and errors."""
    import httpx

    records, errors, lock = [], [], threading.Lock()

    def client(mine: list[str]) -> None:
        with httpx.Client(timeout=120) as session:
            for text in mine:
                start = time.perf_counter()
                try:
                    answer = session.get(f"{url}/search", params={"q": text, "k": 10})
                    wall = time.perf_counter() - start
                    ok = answer.status_code == 200 and len(answer.json()["results"]) == 10
                except httpx.HTTPError as err:
                    ok, wall, answer = False, time.perf_counter() - start, err
                with lock:
                    if ok:
                        records.append({"wall": wall, **server_timing(answer.headers.get("server-timing", ""))})
                    else:
                        errors.append(str(getattr(answer, "text", answer))[:200])

    threads = [threading.Thread(target=client, args=(texts[i::clients],)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"records": records, "errors": errors, "seconds": time.perf_counter() - start}


def cli_query(index: Path, text: str) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pigcli", "rank", str(index), "--query", text, "-n", "10"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    return time.perf_counter() - start, [line.split("\t")[2] for line in out.stdout.splitlines()]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def row(label: str, run: dict) -> str:
    recs = run["records"]
    wall = [r["wall"] for r in recs]
    share = lambda name: sum(r.get(name, 0.0) for r in recs) / max(sum(wall), 1e-12)  # noqa: E731
    return (f"| {label} | {len(recs)} | {len(run['errors'])} | {percentile(wall, 50) * 1e3:.1f} | "
            f"{percentile(wall, 95) * 1e3:.1f} | {percentile([r.get('encode', 0) for r in recs], 50) * 1e3:.1f} | "
            f"{percentile([r.get('scan', 0) for r in recs], 50) * 1e3:.1f} | {100 * share('scan'):.0f}% | "
            f"{statistics.mean([r.get('batch', 1) for r in recs]) if recs else 0:.1f} | {len(recs) / run['seconds']:.1f} |")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=1_000_000, help="index rows N")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=40, help="timed queries per client setting")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--cli-runs", type=int, default=3, help="one-off `pig rank --query` runs (median)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--threads", type=int, default=None, help="pig serve --threads (default: torch's)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the model and index here (default: a temp folder)")
    args = p.parse_args()

    from pigcli.model.factory import init_random

    print(f"# before: {uptime()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model_dir, index = work / "b32", work / f"index-{args.videos}.h5"
        if not (model_dir / "checkpoint.json").is_file():
            init_random(model_dir, "b32")
        if not index.is_file():
            started = time.perf_counter()
            write_index(index, args.videos, args.dim, model_dir)
            print(f"# wrote {index} ({args.videos} x {args.dim}) in {time.perf_counter() - started:.0f} s", flush=True)
        server, startup = start_server(index, args.port, args.threads)
        url = f"http://127.0.0.1:{args.port}"
        try:
            print(f"# pig serve ready in {startup:.1f} s (index read into RAM, model loaded)", flush=True)
            texts = query_texts(args.queries * (1 + len(args.clients)))
            run_clients(url, texts[:3], 1)  # warm-up: first-call costs (allocations, thread pools)
            runs = {}
            for i, clients in enumerate(args.clients, start=1):
                runs[clients] = run_clients(url, texts[i * args.queries:(i + 1) * args.queries], clients)
                print(f"# {clients} clients done; load: {uptime()}", flush=True)
            import httpx

            served_top = [r["video"] for r in httpx.get(f"{url}/search", params={"q": texts[0], "k": 10},
                                                        timeout=120).json()["results"]]
        finally:
            server.terminate()
            server.wait()
        cli = [cli_query(index, texts[0]) for _ in range(args.cli_runs)]
    print(f"# after: {uptime()}\n")
    print(f"N = {args.videos:,} x {args.dim}, k = 10, {args.queries} queries per setting, "
          f"pig serve --threads {args.threads or 'default'}\n")
    print("| clients | queries | errors | p50 ms | p95 ms | encode p50 ms | scan p50 ms | scan share | mean batch | queries/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for clients, run in runs.items():
        print(row(str(clients), run))
    cli_times = [seconds for seconds, _ in cli]
    print(f"\none-off `pig rank INDEX --query TEXT -n 10`: median {statistics.median(cli_times):.2f} s "
          f"over {len(cli)} runs (min {min(cli_times):.2f} s); same top 10 as the server: {cli[0][1] == served_top}")
    for clients, run in runs.items():
        for message in run["errors"][:3]:
            print(f"error with {clients} clients: {message}")


if __name__ == "__main__":
    main()
