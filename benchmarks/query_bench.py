"""One-off `pig rank INDEX --query TEXT` on a ViT-B/32-shaped model: wall time and peak memory of the
text side alone (pigcli.model.text_encoder, what pig rank does now) against loading the whole model
(what it did before), and where the time goes.

    python benchmarks/query_bench.py --runs 5                       # makes WORK/b32 and WORK/index.h5
    python benchmarks/query_bench.py --runs 5 --baseline-tree ../pig-old   # also an older checkout's CLI

Each run is a fresh process, timed from start to exit (through a small launcher, which adds its own
start-up of some 20 ms); peak RSS is that child's ru_maxrss as the launcher's os.wait4 reports it. Old and new runs alternate, so both see
the same load on a busy machine; medians are printed, with new/old ratios.

  new    python -m pigcli rank INDEX --query TEXT -n 5 (this checkout's CLI)
  whole  this script's --child whole: what pig rank --query did before, step by step with the current
         code: import the CLI, resolve the index's model, load the whole model (ModelFolder.load),
         core.text.embed_texts, the index scan, the same output
  old    (--baseline-tree) python -m pigcli rank ... with PYTHONPATH=TREE

The breakdown (--child whole|light --breakdown) times, in one fresh process each: imports (the
modules the path needs, transformers' CLIPModel for the whole model), load (weights and tokenizer),
encode (one query; --threads 1 too) and scan (exact top-5 over the index, ids read).

The model is `pig init --preset b32` (random weights, 12-layer 512-wide text tower, 12-layer 768-wide
vision tower, saved locally); the index holds 8 random unit vectors written as a real `pig fuse` file
of that model (the scan of 8 rows costs microseconds either way: what is measured is everything else).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERY = "a man plays a guitar on stage"


# --- setup ---------------------------------------------------------------------------------------------

def make_model(work: Path) -> Path:
    from pigcli.model.factory import init_random

    path = work / "b32"
    if not (path / "checkpoint.json").is_file():
        init_random(path, "b32")
    return path


def make_index(work: Path, model: Path, videos: int = 8) -> Path:
    """A `pig fuse`-stage file of `videos` random unit vectors, recording `model` as its model."""
    import numpy as np

    from pigcli.model.checkpoint import ModelFolder
    from pigcli.store import Provenance, StageWriter

    path = work / "index.h5"
    if path.is_file():
        return path
    folder = ModelFolder.read(model)
    vectors = np.random.default_rng(0).standard_normal((videos, folder.embed_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    writer = StageWriter(path, Provenance("fuse", {"synthetic": videos}, folder.identity.to_dict(), [],
                                          str(model.resolve())))
    writer.write_block(0, {"ids": [f"video{i}" for i in range(videos)], "embedding": vectors,
                           "norm": np.linalg.norm(vectors, axis=1)})
    writer.finish()
    return path


# --- measuring a fresh process -------------------------------------------------------------------------

# The child is started by a small launcher: Linux keeps a process's peak RSS across fork and exec, so a
# child forked straight from this process (which holds the model it made) would report at least this
# process's peak. The launcher is small when it forks, so the figure it reports is the child's own.
LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, s, u = os.wait4(p.pid, 0); "
            "sys.stderr.write(f'\\nPEAK_RSS_KB {u.ru_maxrss}\\n'); sys.exit(os.waitstatus_to_exitcode(s))")


def run_child(argv: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of one fresh process, started in a folder that is not a
    checkout (`python -m pigcli` puts the current folder first on sys.path)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *argv], capture_output=True, env=env, text=True,
                          cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {proc.returncode}: {proc.stderr[-2000:]}")
    peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB ", 1)[1].split()[0])
    return wall, peak_kb / 1024, proc.stdout


def child_env(pythonpath: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIG_")}
    env["PYTHONPATH"] = pythonpath or str(Path(__file__).resolve().parents[1])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


# --- the paths, in a child process ------------------------------------------------------------------------

def child(mode: str, index: str, query: str, breakdown: bool, threads: int | None) -> None:
    """Run one path; print its ranking (TSV), or with breakdown the phase times as JSON."""
    times, clock = {}, time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name] = now - clock
        clock = now

    import importlib

    import torch

    if threads:
        torch.set_num_threads(threads)
    for module in ("h5py", "pigcli.cli"):  # the CLI, as `pig` imports it
        importlib.import_module(module)
    from pigcli.model.resolve import folder_for_file
    from pigcli.query.rank import Ranking, write_ranking
    from pigcli.query.scoring import rank_index, read_ids_at
    from pigcli.store import open_stage_file

    if mode == "whole":
        from pigcli.core.text import embed_texts

        importlib.import_module("transformers.models.clip.modeling_clip")  # what ModelFolder.load imports
    else:
        from pigcli.model.text_encoder import load_text_encoder
    phase("imports")
    with open_stage_file(index, ("fuse",), "") as handle:
        folder = folder_for_file(None, handle, index, "")
    if mode == "whole":
        loaded = folder.load("cpu")
    else:
        encoder = load_text_encoder(folder.path, "cpu")
    phase("load")
    text, _ = embed_texts(loaded, [query], device=torch.device("cpu")) if mode == "whole" else encoder.encode([query])
    phase("encode")
    scores, rows = rank_index(index, text, 5)
    ranking = Ranking(["q1"], read_ids_at(index, rows), rows, scores)
    phase("scan")
    if breakdown:
        print(json.dumps(times))
    else:
        write_ranking(ranking, "tsv", sys.stdout)


# --- the report -------------------------------------------------------------------------------------------

def end_to_end(index: Path, runs: int, baseline_tree: str | None) -> dict[str, list[tuple[float, float]]]:
    script = str(Path(__file__).resolve())
    commands = {
        "new": ([sys.executable, "-m", "pigcli", "rank", str(index), "--query", QUERY, "-n", "5"], child_env()),
        "whole": ([sys.executable, script, "--child", "whole", str(index)], child_env()),
    }
    if baseline_tree:
        commands["old"] = (commands["new"][0], child_env(str(Path(baseline_tree).resolve())))
    results: dict[str, list] = {name: [] for name in commands}
    outputs: dict[str, str] = {}
    for _ in range(runs):
        for name, (argv, env) in commands.items():
            wall, rss, out = run_child(argv, env)
            results[name].append((wall, rss))
            outputs[name] = out
    if len(set(outputs.values())) != 1:
        raise SystemExit(f"the paths ranked differently: {outputs}")
    return results


def breakdown(index: Path, runs: int) -> dict[str, dict[str, float]]:
    script = str(Path(__file__).resolve())
    variants = {"whole model": ["whole"], "text side": ["light"], "text side, 1 thread": ["light", "--threads", "1"]}
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, extra in variants.items():
            argv = [sys.executable, script, "--child", extra[0], str(index), "--breakdown", *extra[1:]]
            samples[name].append(json.loads(run_child(argv, child_env())[2]))
    return {name: {key: statistics.median(s[key] for s in rows) for key in rows[0]} for name, rows in samples.items()}


def print_report(results: dict, phases: dict, runs: int) -> None:
    wall = {name: statistics.median(w for w, _ in rows) for name, rows in results.items()}
    rss = {name: statistics.median(r for _, r in rows) for name, rows in results.items()}
    print(f"one-off `pig rank INDEX --query TEXT`, ViT-B/32-shaped model, 8-video index; median of {runs} runs, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| path | wall s | peak RSS MB | wall new/this | RSS new/this |")
    print("|---|---:|---:|---:|---:|")
    for name in results:
        print(f"| {name} | {wall[name]:.2f} | {rss[name]:.0f} | {wall['new'] / wall[name]:.2f} | "
              f"{rss['new'] / rss[name]:.2f} |")
    print("\nbreakdown (seconds, median, each in a fresh process)\n")
    keys = list(next(iter(phases.values())))
    print("| path | " + " | ".join(keys) + " | total |")
    print("|---|" + "---:|" * (len(keys) + 1))
    for name, times in phases.items():
        print(f"| {name} | " + " | ".join(f"{times[k]:.3f}" for k in keys) + f" | {sum(times.values()):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("bench_query"), help="where the model and index are made")
    parser.add_argument("--model", type=Path, help="a pig model folder (default: WORK/b32, pig init --preset b32)")
    parser.add_argument("--baseline-tree", help="a checkout of pig whose CLI to time as 'old'")
    parser.add_argument("--child", choices=["whole", "light"], help=argparse.SUPPRESS)
    parser.add_argument("index", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--breakdown", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.index, QUERY, args.breakdown, args.threads)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or make_model(args.work)
    index = make_index(args.work, model)
    results = end_to_end(index, args.runs, args.baseline_tree)
    print_report(results, breakdown(index, args.runs), args.runs)


if __name__ == "__main__":
    main()
