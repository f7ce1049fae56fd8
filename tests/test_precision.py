"""Autocast (--precision bf16) against fp32 on CPU for the model stages: extract, generate, embed-text.

The stated tolerance (README "Scaling out", GPU throughput): every output vector has cosine >= 0.999
with its fp32 value and no entry differs by more than 2% of the largest fp32 entry; ITS scores differ
by at most 1% of the largest score. benchmarks/gpu_check.sh measures the same on a GPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import read_h5
from pigcli.cli import app
from pigcli.stages.embed_text import embed_text
from pigcli.stages.extract import ExtractSettings, extract
from pigcli.stages.generate import generate
from pigcli.stages.select import select

MIN_COSINE, MAX_REL = 0.999, 0.02


def assert_close_to_fp32(reference: np.ndarray, other: np.ndarray, name: str) -> None:
    x = np.asarray(reference, np.float64).reshape(-1, reference.shape[-1])
    y = np.asarray(other, np.float64).reshape(-1, reference.shape[-1])
    keep = np.linalg.norm(x, axis=1) > 0  # zero rows: failed videos, zero in both
    cosine = np.sum(x * y, 1)[keep] / np.linalg.norm(x, axis=1)[keep] / np.linalg.norm(y, axis=1)[keep]
    assert cosine.min() >= MIN_COSINE, f"{name}: cosine {cosine.min():.5f}"
    assert np.abs(x - y).max() <= MAX_REL * np.abs(x).max(), name
    assert not np.array_equal(x, y), f"{name}: bf16 changed nothing (was autocast on?)"


@pytest.fixture(scope="module")
def extracts(tmp_path_factory, video_folder, tiny_model_dir) -> dict:
    folder = tmp_path_factory.mktemp("precision")
    out = {}
    for precision in ("fp32", "bf16"):
        out[precision] = folder / f"{precision}.h5"
        extract([video_folder], out[precision], str(tiny_model_dir), device="cpu", workers=0,
                settings=ExtractSettings(precision=precision))
    return out


def test_bf16_extract_is_within_tolerance_of_fp32(extracts) -> None:
    a, b = read_h5(extracts["fp32"]), read_h5(extracts["bf16"])
    assert json.loads(b["attrs"]["settings"])["precision"] == "bf16"
    for name in ("video", "proxies", "frames", "patches"):
        assert_close_to_fp32(a[name], b[name], name)
    assert np.abs(a["its_score"] - b["its_score"]).max() <= 0.01 * a["its_score"].max()


def test_bf16_generate_and_embed_text_are_within_tolerance(extracts, tiny_model_dir, tmp_path) -> None:
    select(extracts["fp32"], tmp_path / "sel.h5", k=8)
    queries = tmp_path / "q.txt"
    queries.write_text("a red square moves left\na blue square on grey\nthree squares\n")
    for precision in ("fp32", "bf16"):
        generate(tmp_path / "sel.h5", tmp_path / f"gen_{precision}.h5", device="cpu", precision=precision)
        embed_text(queries, tmp_path / f"q_{precision}.h5", str(tiny_model_dir), device="cpu", precision=precision)
    for stem, name in (("gen", "pseudo_query"), ("q", "embedding")):
        assert_close_to_fp32(read_h5(tmp_path / f"{stem}_fp32.h5")[name], read_h5(tmp_path / f"{stem}_bf16.h5")[name], name)


def test_precision_option_of_generate_and_embed_text(extracts, tiny_model_dir, tmp_path) -> None:
    runner = CliRunner()
    select(extracts["fp32"], tmp_path / "sel.h5", k=8)
    (tmp_path / "q.txt").write_text("a red square\n")
    for args in (["generate", str(tmp_path / "sel.h5"), "-o", str(tmp_path / "gen.h5")],
                 ["embed-text", str(tmp_path / "q.txt"), "-m", str(tiny_model_dir), "-o", str(tmp_path / "q.h5")]):
        result = runner.invoke(app, [*args, "--device", "cpu", "--precision", "bf16"])
        assert result.exit_code == 0, result.output
        assert json.loads(read_h5(result.stdout.strip())["attrs"]["settings"])["precision"] == "bf16"
