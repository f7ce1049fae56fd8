"""End to end: `pig index` on real videos with the tiny model, then `pig rank` and `pig eval`, then the
staged cache (a new -k recomputes select, generate and fuse, never extract).

`pig index` and `pig rank` run as real subprocesses (what a user's shell sees on stdout and stderr);
the later commands run in-process to keep the suite short.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import VIDEO_FOLDER_SPECS
from pigcli.cli import app
from pigcli.core.metrics import retrieval_metrics

STAGES = ("extract", "select", "generate", "fuse")


def pig(*args) -> tuple[int, str, str]:
    env = {"PIG_INDEX": None, "PIG_MODEL": None, "PIG_QUIET": None, "PIG_DEBUG": None}
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def read(path, *names) -> dict:
    with h5py.File(path, "r") as handle:
        out = {"ids": [x.decode() if isinstance(x, bytes) else str(x) for x in handle["ids"][:]]}
        for name in names:
            out[name] = handle[name][:]
    return out


def text_embedding(loaded, text: str) -> np.ndarray:
    ids = loaded.tokenizer(text)["input_ids"]
    assert len(ids) <= 50
    with torch.no_grad():
        return loaded.model.encode_text(torch.tensor([ids]))[0].numpy().astype(np.float64)


def stage_lines(stderr: str) -> dict[str, str]:
    """`pig index` reports one line per stage: '<stage> <file>: up to date' or '... N rows in Xs'."""
    lines = {}
    for line in stderr.splitlines():
        words = line.split()
        if words and words[0] in STAGES:
            lines[words[0]] = line
    assert set(lines) == set(STAGES), stderr
    return lines


@pytest.mark.slow
def test_index_rank_eval_and_staged_cache(tmp_path, video_folder, tiny_model_dir, tiny_model, run_pig) -> None:
    index = tmp_path / "idx.h5"
    files = {"extract": tmp_path / "idx.feats.h5", "select": tmp_path / "idx.sel.h5",
             "generate": tmp_path / "idx.gen.h5", "fuse": index}

    # --- pig index ---------------------------------------------------------------------------------
    code, out, err = run_pig(["index", video_folder, "-m", tiny_model_dir, "-o", index, "--workers", "0"])
    assert code == 0, err
    assert out == f"{index}\n"  # stdout: the index path only
    lines = stage_lines(err)
    assert all("6 rows" in lines[s] and "up to date" not in lines[s] for s in STAGES), err
    assert all(path.is_file() for path in files.values())
    assert not list(tmp_path.glob("*.partial*")) and not list(tmp_path.glob("*.tmp"))
    stems = sorted(name.rsplit(".", 1)[0] for name in VIDEO_FOLDER_SPECS)
    built = read(index, "embedding")
    assert built["ids"] == stems
    assert built["embedding"].shape == (6, 32)
    np.testing.assert_allclose(np.linalg.norm(built["embedding"], axis=1), 1.0, atol=1e-5)
    assert read(files["select"], "selected_index")["selected_index"].shape == (6, 16)
    with h5py.File(index, "r") as handle:
        assert handle.attrs["stage"] == "fuse"
        assert json.loads(handle.attrs["model"])["hash"] == tiny_model.identity.hash
        assert json.loads(handle.attrs["inputs"])[0]["path"] == str(files["generate"].resolve())
    # the pseudo-queries make the index differ from plain mean pooling of the frames
    frames = read(files["extract"], "frames")["frames"].astype(np.float64).mean(axis=1)
    assert not np.allclose(built["embedding"], frames / np.linalg.norm(frames, axis=1, keepdims=True), atol=1e-3)

    # --- pig rank (subprocess: stdout is results only) -----------------------------------------------
    texts = ["a red square moves", "green boxes on a grey background"]
    code, out, err = run_pig(["rank", index, "--query", texts[0], "--query", texts[1], "--top", "3",
                              "--format", "jsonl"])
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]          # every stdout line is a result
    assert len(results) == 6
    for qi, text in enumerate(texts):
        got = [r for r in results if r["query_id"] == f"q{qi + 1}"]
        assert all(r["query"] == text for r in got)
        assert [r["rank"] for r in got] == [1, 2, 3]
        scores = built["embedding"].astype(np.float64) @ text_embedding(tiny_model, text)
        order = np.lexsort((np.arange(6), -scores))[:3]
        assert [r["video"] for r in got] == [stems[j] for j in order]
        np.testing.assert_allclose([r["score"] for r in got], scores[order], atol=2e-6)

    # --- pig eval ----------------------------------------------------------------------------------
    captions = [(vid, f"{desc} {vid}") for vid in stems[:5] for desc in ("squares in", "a clip called")]
    (tmp_path / "caps.csv").write_text("video_id,caption\n" + "".join(f"{v},{t}\n" for v, t in captions))
    code, out, err = pig("eval", index, "--captions", tmp_path / "caps.csv", "--json")
    assert code == 0, err
    report = json.loads(out)
    sim = np.stack([text_embedding(tiny_model, t) for _, t in captions]) @ built["embedding"].T.astype(np.float64)
    want = retrieval_metrics(sim, np.array([stems.index(v) for v, _ in captions]))
    for direction in ("t2v", "v2t"):
        for key, value in want[direction].items():
            assert report[direction][key] == pytest.approx(value, abs=1e-6), (direction, key)
    assert report["uncaptioned_videos"] == 1 and report["captions"] == 10

    # --- the staged cache: another -k ----------------------------------------------------------------
    stamps = {stage: os.stat(path).st_mtime_ns for stage, path in files.items()}
    code, out, err = pig("index", video_folder, "-m", tiny_model_dir, "-o", index, "--workers", 0, "-k", 8)
    assert code == 0, err
    lines = stage_lines(err)
    assert "up to date" in lines["extract"], err
    for stage in ("select", "generate", "fuse"):
        assert "up to date" not in lines[stage] and "6 rows" in lines[stage], err
    assert os.stat(files["extract"]).st_mtime_ns == stamps["extract"]
    assert all(os.stat(files[s]).st_mtime_ns != stamps[s] for s in ("select", "generate", "fuse"))
    assert read(files["select"], "selected_index")["selected_index"].shape == (6, 8)
    rebuilt = read(index, "embedding")
    assert rebuilt["ids"] == stems
    assert not np.allclose(rebuilt["embedding"], built["embedding"], atol=1e-6)  # fewer tokens, new index

    # and the same command again: every stage up to date, nothing rewritten
    stamps = {stage: os.stat(path).st_mtime_ns for stage, path in files.items()}
    code, out, err = pig("index", video_folder, "-m", tiny_model_dir, "-o", index, "--workers", 0, "-k", 8)
    assert code == 0, err
    assert all("up to date" in line for line in stage_lines(err).values()), err
    assert {stage: os.stat(path).st_mtime_ns for stage, path in files.items()} == stamps
