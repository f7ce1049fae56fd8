"""benchmarks/gpu_check.sh, the script to run first on a GPU machine: its --dry mode runs every step on CPU
and passes; a failing step makes it exit 1 with the step named and the end of its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

# every GPU path the check must exercise (issue 20), as its step names start
EXPECTED_STEPS = ["init", "frames", "extract fp32", "extract bf16", "select", "generate fp32", "generate bf16",
                  "embed-text fp32", "embed-text bf16", "fuse", "index", "eval", "rank a query file",
                  "rank -q TEXT --rerank", "serve --device cpu", "train fp32", "train bf16, --device auto",
                  "train fp16 (loss scaling), gradient checkpointing", "train --stop-after", "train --resume",
                  "train --resume ended with a last model", "torchrun --nproc-per-node 1", "extract_bench"]


@pytest.mark.slow
def test_dry_run_passes_every_step(tmp_path) -> None:
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry", "--logs", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("## Steps"):]
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    for expected in EXPECTED_STEPS:
        assert any(row.startswith(expected) for row in rows), (expected, rows)
    assert "FAILED" not in table and f"all {len(rows)} steps passed" in proc.stdout
    assert "model alone:" in proc.stdout and "| workers | decoded frames/s |" in proc.stdout
    assert "bf16, --device auto:" in proc.stdout and "autocast (bf16) against fp32" in proc.stdout
    assert len(list(tmp_path.glob("*.log"))) == len(rows) - 1  # one log per command (not the resume check)


def test_a_failed_step_is_named_with_the_end_of_its_output(tmp_path, capsys) -> None:
    check = gpu_check.Check(tmp_path, tmp_path, "cpu", env={}, timeout=60)
    assert check.run("passes", [sys.executable, "-c", "print('fine')"]) is not None
    assert check.run("breaks", [sys.executable, "-c", "import sys; print('what went wrong', file=sys.stderr); sys.exit(3)"]) is None
    assert [step.name for step in check.failed] == ["breaks"]
    assert check.failed[0].note.startswith("exit 3: what went wrong")
    tails = check.failure_tails()
    assert "02-breaks.log" in tails and "what went wrong" in tails and "01-passes" not in tails
    assert "FAILED breaks" in capsys.readouterr().out


def test_a_step_past_its_timeout_fails(tmp_path) -> None:
    check = gpu_check.Check(tmp_path, tmp_path, "cpu", env={}, timeout=1)
    assert check.run("sleeps", [sys.executable, "-c", "import time; time.sleep(30)"]) is None
    assert "timed out after 1s" in check.failed[0].note


def test_check_without_a_gpu_exits_2() -> None:
    if gpu_check_has_gpu():
        pytest.skip("a GPU is here")
    assert gpu_check.main([]) == 2


def gpu_check_has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
