"""GPU check of pig: every GPU path of the command line, run once, with the figures that matter.

    bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU: b32 preset (random weights), ~6 min on an H200
    bash benchmarks/gpu_check.sh --dry      # anywhere: CPU, the tiny preset, a few small videos (a check of the script)

On generated videos (a coloured square over grey, benchmarks/train_bench.make_corpus) and a random model
(`pig init --preset`), each step is one `python -m pigcli ...` process (or torchrun, or the HTTP server):
  init; frames; extract at fp32 and at the GPU's autocast precision; select; generate and embed-text at
  both precisions; fuse; index (the whole chain); eval; rank (a query file, and a query text with
  --rerank); serve on the GPU (started, one query over HTTP on 127.0.0.1, stopped); train from the frames
  file (TRAIN_RUNS: fp32, bf16 with --device auto, fp16 with loss scaling and gradient checkpointing,
  --stop-after then --resume, torchrun with one process); extract with --decoder torchcodec where it
  loads; and benchmarks/extract_bench.py: decoded frames/s against the number of decoding workers
  and the model's frames/s alone.
Then: a table of the steps (ok / FAILED, seconds), extract frames/s, decoded frames/s against workers,
training pairs/s, and the autocast outputs against fp32 (cosine >= 0.999 and relative difference <= 2%,
ITS <= 1%, the tolerance tests/test_precision.py states).
Exit code: 0 every step passed; 1 a step failed or a difference is outside the tolerance (the summary
names them; each step's output is in LOGS/NN-step.log); 2 no GPU without --dry.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # train_bench, when run as a script

MIN_COSINE, MAX_REL, MAX_ITS_REL = 0.999, 0.02, 0.01  # the tolerance tests/test_precision.py states

# --- training runs: one line each. A flag for every run goes in train_flags(); a new run is a new line. ---
# (name, flags added to train_flags(); a later flag overrides an earlier one, as on any command line).
# "{device}" is replaced by the device of the check (cuda, or cpu with --dry), "{long}" by the steps of
# the run whose pairs/s is reported (the last epoch's, so that the first step's warm-up is left out).
PAIRS_RUN = "bf16, --device auto"
TRAIN_RUNS = [
    ("fp32, --device {device}", ["--precision", "fp32", "--device", "{device}"]),
    (PAIRS_RUN, ["--precision", "bf16", "--device", "auto", "--steps", "{long}"]),
    ("fp16 (loss scaling), gradient checkpointing", ["--precision", "fp16", "--grad-checkpointing"]),
    ("losses read every step, state saved every 2 steps", ["--device", "{device}", "--log-every", "1",
                                                           "--save-every", "2steps"]),
]


@dataclass
class Sizes:
    """How big the check is: GPU (B/32 shape, 224 px) or --dry (tiny, CPU)."""
    preset: str
    videos: int
    height: int
    frames: int          # frames per generated video
    batch: int           # training pairs per step
    steps: int           # training steps of a run (one epoch when videos / batch allow)
    long_steps: int      # steps of the run whose pairs/s is reported
    bench_workers: str   # decoding workers for extract_bench
    per_worker: int      # videos decoded per worker there
    train_workers: int   # processes reading the frames file in training
    extract_flags: tuple  # extract and index (frames always decodes with the default workers)

    @classmethod
    def of(cls, dry: bool) -> "Sizes":
        if dry:
            return cls("tiny", 8, 64, 24, 4, 2, 4, "0,1", 4, 0, ("--workers", "0"))  # no worker starts on 2 cores
        return cls("b32", 384, 224, 48, 128, 3, 9, "1,4,8,default", 16, 4, ())


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    note: str = ""


@dataclass
class Check:
    """Runs the steps, each to its own log file; remembers which passed."""
    work: Path
    logs: Path
    device: str
    env: dict
    timeout: float
    in_process: bool = False  # --dry: pig's commands run in this process (CliRunner), sparing a torch import each
    steps: list[Step] = field(default_factory=list)

    def run(self, name: str, argv: list, timeout: float | None = None) -> subprocess.CompletedProcess | None:
        """One command; its output goes to LOGS/NN-name.log. None when it failed (exit code not 0)."""
        argv = [str(a) for a in argv]
        log = self.logs / f"{len(self.steps) + 1:02d}-{_slug(name)}.log"
        start = time.perf_counter()
        try:
            if self.in_process and argv[1:3] == ["-m", "pigcli"]:
                proc = self._invoke(argv)
            else:
                proc = subprocess.run(argv, cwd=self.work, env=self.env, capture_output=True, text=True,
                                      timeout=timeout or self.timeout)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as expired:
            proc, code = None, "timeout"
            out, err = _text(expired.stdout), _text(expired.stderr) + f"\ntimed out after {timeout or self.timeout:g}s"
        log.write_text(f"$ {shlex.join(argv)}\n--- stdout\n{out}\n--- stderr\n{err}\n--- exit {code}\n")
        ok = code == 0
        note = "" if ok else f"exit {code}: {_last_line(err)} (log: {log})"
        self.record(name, ok, time.perf_counter() - start, note)
        return proc if ok else None

    def _invoke(self, argv: list[str]) -> subprocess.CompletedProcess:
        """`python -m pigcli ARGS` as the same command line in this process (the current folder is work)."""
        import traceback

        from typer.testing import CliRunner

        from pigcli.cli import app

        result = CliRunner().invoke(app, argv[3:], env=self.env)
        err = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            err += "".join(traceback.format_exception(result.exception))
        return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, err)

    def pig(self, name: str, *args, timeout: float | None = None) -> subprocess.CompletedProcess | None:
        return self.run(name, [sys.executable, "-m", "pigcli", *args], timeout)

    def record(self, name: str, ok: bool, seconds: float, note: str = "") -> None:
        self.steps.append(Step(name, ok, seconds, note))
        print(f"{'ok    ' if ok else 'FAILED'} {name} ({seconds:.1f}s){'  ' + note if note else ''}", flush=True)

    @property
    def failed(self) -> list[Step]:
        return [s for s in self.steps if not s.ok]

    def failure_tails(self, lines: int = 15) -> str:
        """The end of each failed step's log (one output file is all a remote run may bring back)."""
        tails = []
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace")
            if "--- exit 0\n" not in text and "--- exit" in text:
                tails.append(f"--- {log.name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(tails)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")[:60]


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


# --- the steps --------------------------------------------------------------------------------------------

def train_flags(paths: dict, sizes: Sizes) -> list:
    """The flags of every training run (TRAIN_RUNS adds its own): phase 2, full fine-tune, from the
    frames file, read by sizes.train_workers processes."""
    return ["--captions", paths["captions"], "--frames", paths["frames"], "-m", paths["model"], "--method", "pig",
            "--phases", "2", "--steps", sizes.steps, "--batch-size", sizes.batch, "--lr", "1e-5", "--lr-clip", "1e-6",
            "--workers", sizes.train_workers, "--json"]


def run_training(check: Check, paths: dict, sizes: Sizes) -> dict:
    """TRAIN_RUNS, --stop-after then --resume, and torchrun with one process; returns {run: pairs/s}."""
    common = train_flags(paths, sizes)
    fill = {"{device}": check.device, "{long}": str(sizes.long_steps)}
    rates = {}
    for number, (name, flags) in enumerate(TRAIN_RUNS):
        output = check.work / f"run{number}"
        flags = [fill.get(str(f), f) for f in flags]
        if check.pig(f"train {name.format(device=check.device)}", "train", *common, *flags, "-o", output):
            rates[name.format(device=check.device)] = last_epoch_rate(output)
    resumed = check.work / "run-resume"
    halves = ["--steps", 2 * sizes.steps, "--device", check.device, "-o", resumed]
    if check.pig("train --stop-after (half the steps)", "train", *common, *halves, "--stop-after", sizes.steps):
        proc = check.pig("train --resume (the other half)", "train", *common, *halves, "--resume")
        if proc:
            _expect(check, "train --resume ended with a last model",
                    json.loads(proc.stdout)["last"] is not None and (resumed / "last").is_dir())
    check.run("torchrun --nproc-per-node 1 pig train",
              [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "-m", "pigcli", "train", *common, "--device", check.device, "-o", check.work / "run-torchrun"])
    return rates


def last_epoch_rate(output: Path) -> float | None:
    epochs = [r for r in map(json.loads, (output / "log.jsonl").read_text().splitlines()) if r["event"] == "epoch"]
    return epochs[-1].get("pairs_per_s") if epochs else None


def _expect(check: Check, name: str, condition: bool, note: str = "") -> None:
    check.record(name, bool(condition), 0.0, "" if condition else note or "not as expected")


def serve_and_query(check: Check, index: Path, timeout: float = 180.0) -> None:
    """pig serve on the device, /health until it answers, one GET /search, then SIGTERM."""
    port = _free_port()
    log = check.logs / f"{len(check.steps) + 1:02d}-serve.log"
    start = time.perf_counter()
    note = ""
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "pigcli", "serve", index, "--device", check.device,
                                   "--host", "127.0.0.1", "--port", str(port)],
                                  cwd=check.work, env=check.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            while not _answers(f"{base}/health"):
                if server.poll() is not None:
                    note = f"the server ended with exit code {server.returncode}"
                    break
                if time.perf_counter() - start > timeout:
                    note = f"no answer on {base}/health after {timeout:g}s"
                    break
                time.sleep(0.5)
            if not note:
                with urllib.request.urlopen(f"{base}/search?q=a+coloured+square&k=3", timeout=60) as answer:
                    body = json.loads(answer.read())
                if len(json.dumps(body)) < 20 or answer.status != 200:
                    note = f"unexpected answer: {body}"
        except Exception as err:  # any failure of the query is the step's failure
            note = f"{type(err).__name__}: {err}"
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                note = note or "the server did not stop on SIGTERM within 30s"
    check.record(f"serve --device {check.device}: start, GET /search on 127.0.0.1, stop", not note,
                 time.perf_counter() - start, f"{note} (log: {log})" if note else "")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


# --- autocast against fp32 ---------------------------------------------------------------------------------

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


def precision_table(work: Path, autocast: str) -> tuple[list[str], list[str]]:
    """Markdown lines of the autocast-vs-fp32 table, and the outputs outside the tolerance."""
    rows = []
    names = ("video", "proxies", "frames", "patches", "its_score")
    a, b = read(work / "feats_fp32.h5", names), read(work / f"feats_{autocast}.h5", names)
    for name in names[:-1]:
        rows.append(("extract", name, *differences(a[name], b[name]), MAX_REL))
    its_rel = float(np.abs(a["its_score"] - b["its_score"]).max() / a["its_score"].max())
    rows.append(("extract", "its_score", float("nan"), its_rel, MAX_ITS_REL))
    for stage, stem, name in (("generate", "gen", "pseudo_query"), ("embed-text", "q", "embedding")):
        x = read(work / f"{stem}_fp32.h5", (name,))[name]
        y = read(work / f"{stem}_{autocast}.h5", (name,))[name]
        rows.append((stage, name, *differences(x, y), MAX_REL))
    lines = ["| stage | output | min cosine | max rel. diff | within tolerance |", "|---|---|---|---|---|"]
    outside = []
    for stage, name, cosine, rel, bound in rows:
        ok = (np.isnan(cosine) or cosine >= MIN_COSINE) and rel <= bound
        outside += [] if ok else [f"{stage} {name}"]
        shown = "-" if np.isnan(cosine) else f"{cosine:.5f}"
        lines.append(f"| {stage} | {name} | {shown} | {rel:.4f} | {'yes' if ok else 'NO'} |")
    k = 16
    lines.append(f"\ntop-{k} ITS patches chosen alike: {top_k_agreement(a['its_score'], b['its_score'], k):.1%} "
                 f"(random weights: near-uniform scores, so ties flip)")
    return lines, outside


def extract_rate(path: Path) -> str:
    from pigcli.store import read_attrs

    attrs = read_attrs(path)
    run, rows = json.loads(attrs["run"]), len(read(path, ("status",))["status"])
    frames = rows * attrs["settings"]["num_frames"]
    return (f"{frames / attrs['timings']['wall']:.0f} frames/s ({rows} videos, {run['workers']} workers, "
            f"batch {run['batch_size']}; model {attrs['timings'].get('model', 0):.2f}s of the loop's "
            f"{attrs['timings']['wall']:.2f}s)")


# --- the check ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, tiny preset, few small videos (a check of the script)")
    parser.add_argument("--logs", type=Path, default=None, help="folder for each step's output (default: a temporary one, kept on failure)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one step may take")
    args = parser.parse_args(argv)
    sizes = Sizes.of(args.dry)

    import torch

    if args.dry:
        device, autocast = "cpu", "bf16"
    elif not torch.cuda.is_available():
        print("error: torch sees no CUDA GPU; run with --dry for a CPU check of the script", file=sys.stderr)
        return 2
    else:
        device, autocast = "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"{len(os.sched_getaffinity(0))} CPUs")
    from pigcli.core.device import default_workers
    from pigcli.inputs.video import torchcodec_problem
    from train_bench import make_corpus

    work = Path(tempfile.mkdtemp(prefix="pig-gpu-check-"))
    logs = args.logs or work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PIG_QUIET": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PIG_CACHE": str(work / "cache"),
           "PYTHONUNBUFFERED": "1"}
    check = Check(work, logs, device, env, args.timeout, in_process=args.dry)
    os.chdir(work)  # the steps name their files relative to it
    start = time.perf_counter()
    captions = make_corpus(work / "corpus", sizes.videos, width=sizes.height * 4 // 3 // 2 * 2, height=sizes.height,
                           frames=sizes.frames, workers=default_workers())
    videos, model = work / "corpus" / "videos", work / "model"
    print(f"made {sizes.videos} videos of {sizes.height} px, {sizes.frames} frames, in {time.perf_counter() - start:.1f}s; "
          f"preset {sizes.preset} (random weights); {device}, autocast {autocast}; work folder {work}\n", flush=True)
    paths = {"captions": captions, "frames": work / "frames.h5", "model": model}
    (work / "queries.txt").write_text("".join(f"a coloured square number {i} slides across a grey field\n"
                                              for i in range(64)))

    check.pig(f"init --preset {sizes.preset}", "init", "--preset", sizes.preset, "-o", model)
    check.pig("frames (default workers)", "frames", videos, "-m", model, "-o", paths["frames"])
    for precision in ("fp32", autocast):
        check.pig(f"extract {precision}", "extract", videos, "-m", model, "-o", f"feats_{precision}.h5",
                  "--device", device, "--precision", precision, *sizes.extract_flags)
    check.pig("select", "select", "feats_fp32.h5", "-o", "sel.h5")
    for precision in ("fp32", autocast):
        check.pig(f"generate {precision}", "generate", "sel.h5", "-o", f"gen_{precision}.h5", "--device", device,
                  "--precision", precision)
        check.pig(f"embed-text {precision}", "embed-text", "queries.txt", "-m", model, "-o", f"q_{precision}.h5",
                  "--device", device, "--precision", precision)
    check.pig("fuse", "fuse", "gen_fp32.h5", "-o", "index.h5", "--device", device)
    check.pig("index (extract..fuse)", "index", videos, "-m", model, "-o", "index2.h5", "--device", device,
              *sizes.extract_flags)
    check.pig("eval", "eval", "index.h5", "-c", captions, "--device", device)
    check.pig("rank a query file", "rank", "index.h5", "q_fp32.h5", "--device", device)
    check.pig("rank -q TEXT --rerank", "rank", "index.h5", "-q", "a coloured square", "--rerank", "--device", device)
    serve_and_query(check, work / "index.h5")
    rates = run_training(check, paths, sizes)
    problem = torchcodec_problem()
    if problem is None:
        check.pig("extract --decoder torchcodec", "extract", videos, "-m", model, "-o", "feats_tc.h5",
                  "--device", device, "--decoder", "torchcodec")
    bench = check.run("extract_bench: decoded frames/s against workers, the model alone",
                      [sys.executable, HERE / "extract_bench.py", "--videos-dir", videos, "--model", model,
                       "--device", device, "--workers", sizes.bench_workers, "--per-worker", sizes.per_worker,
                       "--no-extract"])

    print("\n## Figures\n")
    for precision in ("fp32", autocast):
        if (work / f"feats_{precision}.h5").exists():
            print(f"extract {precision}: {extract_rate(work / f'feats_{precision}.h5')}")
    if bench:
        print("\nextract_bench (decoding alone, in the pool, against workers; the model alone):\n")
        print(bench.stdout.strip())
    print("\ntraining pairs/s (last epoch; phase 2, full fine-tune, from the frames file, batch "
          f"{sizes.batch}):")
    for name, rate in rates.items():
        print(f"  {name}: {'-' if rate is None else f'{rate:.1f}'}")
    if problem is not None:
        print(f"\nextract --decoder torchcodec: not run ({problem})")
    outside = []
    try:
        lines, outside = precision_table(work, autocast)
        print(f"\nautocast ({autocast}) against fp32:\n")
        print("\n".join(lines))
    except (OSError, KeyError) as err:
        outside = [f"the autocast comparison could not read its files ({err})"]

    print(f"\n## Steps ({time.perf_counter() - start:.0f}s in all)\n")
    print("| step | result | seconds |\n|---|---|---|")
    for step in check.steps:
        print(f"| {step.name} | {'ok' if step.ok else 'FAILED'} | {step.seconds:.1f} |")
    if check.failed or outside:
        print(f"\n## The end of each failed step's output\n\n{check.failure_tails()}")
        for step in check.failed:
            print(f"FAILED: {step.name}: {step.note}", file=sys.stderr)
        if outside:
            print(f"outside the tolerance: {', '.join(outside)}", file=sys.stderr)
        print(f"{len(check.failed)} of {len(check.steps)} steps failed; logs in {logs}", file=sys.stderr)
        return 1
    print(f"\nall {len(check.steps)} steps passed")
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # kept on failure, for the logs and files
    return 0


if __name__ == "__main__":
    sys.exit(main())
