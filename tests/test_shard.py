"""Sharded extraction and `pig merge`: shards by id hash, two shards + merge equal one run, what merge
refuses, the shard in the provenance, torchrun (2 CPU processes, gloo) equal to one process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import VIDEO_FOLDER_SPECS, pig_env, read_h5, write_broken
from pigcli.cli import app
from pigcli.errors import PigError, UsageError
from pigcli.stages.extract import ExtractSettings, extract
from pigcli.stages.frames import FramesSettings, frames
from pigcli.stages.merge import merge
from pigcli.stages.select import select
from pigcli.stages.shard import Shard, parse_shard, resolve_shard, shard_of, shard_output

BROKEN = "garbage"  # a failed video, whose record must survive the merge


def by_id(data: dict) -> dict:
    """{dataset: {id: row}} of a read_h5 result (rows are found by id, never by position)."""
    ids = list(data["ids"])
    return {name: dict(zip(ids, values)) for name, values in data.items() if name != "attrs"}


def assert_same_by_id(a: dict, b: dict, rtol: float = 0.0) -> None:
    a, b = by_id(a), by_id(b)
    assert set(a) == set(b) and set(a["ids"]) == set(b["ids"])
    for name in a:
        for video_id, row in a[name].items():
            other = b[name][video_id]
            if rtol and np.asarray(row).dtype.kind == "f":
                np.testing.assert_allclose(other, row, rtol=rtol, atol=1e-7, err_msg=f"{name} {video_id}")
            else:
                np.testing.assert_array_equal(other, row, err_msg=f"{name} {video_id}")


@pytest.fixture(scope="module")
def videos(tmp_path_factory, video_folder) -> Path:
    folder = tmp_path_factory.mktemp("shard_videos")
    for name in VIDEO_FOLDER_SPECS:
        shutil.copy(video_folder / name, folder / name)
    write_broken("garbage", folder / f"{BROKEN}.mp4")
    return folder


@pytest.fixture(scope="module")
def whole(tmp_path_factory, videos, tiny_model_dir) -> Path:
    """One unsharded extract run (batch 1: a video's numbers then never depend on its batch mates)."""
    output = tmp_path_factory.mktemp("whole") / "feats.h5"
    extract([videos], output, str(tiny_model_dir), device="cpu", workers=0, batch_size=1)
    return output


@pytest.fixture(scope="module")
def shards(tmp_path_factory, videos, tiny_model_dir) -> list[Path]:
    """The two shard files of the same extract, -o feats.h5 --shard I/2."""
    out = tmp_path_factory.mktemp("shards") / "feats.h5"
    paths = []
    for index in range(2):
        shard = Shard(index, 2)
        path = shard_output(out, shard)
        extract([videos], path, str(tiny_model_dir), device="cpu", workers=0, batch_size=1, shard=shard)
        paths.append(path)
    return paths


# --- which videos a shard holds ---------------------------------------------------------------------------

def test_shards_partition_the_ids_stably() -> None:
    ids = [f"video{i:04d}" for i in range(2000)]
    for count in (1, 2, 3, 7):
        owners = [shard_of(i, count) for i in ids]
        assert set(owners) == set(range(count))
        # about an equal share each (the hash spreads ids), and listing order does not matter
        assert min(owners.count(s) for s in range(count)) > 0.8 * len(ids) / count
        assert [shard_of(i, count) for i in reversed(ids)] == owners[::-1]
    assert shard_of("alpha", 2) == 0 and shard_of("bravo", 2) == 1  # fixed: sha256, not Python's hash()


def test_shard_option_and_environment() -> None:
    assert parse_shard("1/4") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"
    for bad in ("4/4", "1-4", "a/2", "0/0"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)
    assert resolve_shard(None, {}).shard is None
    assert resolve_shard("0/1", {}).shard is None  # one shard is the whole input
    torchrun = resolve_shard(None, {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (torchrun.shard, torchrun.torchrun) == (Shard(2, 4), True)
    with pytest.raises(UsageError, match="torchrun"):
        resolve_shard("0/2", {"WORLD_SIZE": "2", "RANK": "0"})
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert resolve_shard("auto", slurm).shard == Shard(1, 3)
    assert resolve_shard(None, slurm).shard is None  # an array is only sharded when asked
    with pytest.raises(UsageError, match="neither torchrun"):
        resolve_shard("auto", {})
    assert shard_output("out/feats.h5", Shard(1, 4)) == Path("out/feats.shard-1-of-4.h5")


# --- two shards + merge = one run ---------------------------------------------------------------------------

def test_two_shards_and_merge_equal_one_run(whole, shards, tmp_path) -> None:
    parts = [read_h5(p) for p in shards]
    assert [sorted(p["ids"]) for p in parts] == [["alpha", "charlie", "echo"], ["bravo", "delta", "foxtrot", BROKEN]]
    assert [json.loads(p["attrs"]["settings"])["shard"] for p in parts] == ["0/2", "1/2"]

    merged = tmp_path / "feats.h5"
    summary = merge(shards, merged)
    assert (summary.total, summary.processed, summary.failed) == (7, 7, 1)
    data = read_h5(merged)
    assert_same_by_id(read_h5(whole), data)
    assert data["status"][list(data["ids"]).index(BROKEN)] == "failed"  # the failed record came along

    attrs = data["attrs"]
    one = read_h5(whole)["attrs"]
    assert json.loads(attrs["settings"]) == json.loads(one["settings"])  # the shard is dropped
    assert attrs["model"] == one["model"] and attrs["stage"] == "extract"
    inputs = json.loads(attrs["inputs"])
    assert [(i["path"], i["shard"], i["rows"]) for i in inputs] == [(str(shards[0]), "0/2", 3), (str(shards[1]), "1/2", 4)]
    assert [i["fingerprint"] for i in inputs] == [p["attrs"]["fingerprint"] for p in parts]

    # later stages read it like any extract file: select gives the same rows as on the one run
    select(merged, tmp_path / "sel_merged.h5", k=4)
    select(whole, tmp_path / "sel_whole.h5", k=4)
    assert_same_by_id(read_h5(tmp_path / "sel_whole.h5"), read_h5(tmp_path / "sel_merged.h5"))
    # an unchanged merge is a no-op
    assert merge(shards, merged).skipped


def test_frames_shards_merge_with_empty_shards_and_keep_the_layout(videos, tiny_model_dir, tmp_path) -> None:
    settings = FramesSettings(num_frames=4, image_size=16)
    frames([videos], tmp_path / "whole.h5", settings=settings, workers=0)
    paths = []
    for index in range(4):  # shards 0 and 3 of 4 hold none of these ids
        shard = Shard(index, 4)
        paths.append(shard_output(tmp_path / "frames.h5", shard))
        frames([videos], paths[-1], settings=settings, workers=0, shard=shard)
    assert [shard_of(v.stem, 4) for v in videos.iterdir()].count(0) == 0
    merge(paths, tmp_path / "frames.h5")
    assert_same_by_id(read_h5(tmp_path / "whole.h5"), read_h5(tmp_path / "frames.h5"))
    with h5py.File(tmp_path / "frames.h5", "r") as handle:
        assert handle["pixels"].chunks[0] == 1  # one video per chunk, as pig frames writes it


# --- what merge refuses ----------------------------------------------------------------------------------------

def test_merge_refuses_duplicate_ids_other_models_settings_and_stages(shards, whole, videos, tmp_path) -> None:
    with pytest.raises(PigError, match=r"4 ids are in more than one file: .*'bravo'"):
        merge([shards[0], shards[1], shards[1]], tmp_path / "dup.h5")
    with pytest.raises(PigError, match="ids are in more than one file"):
        merge([whole, shards[0]], tmp_path / "dup.h5")

    from pigcli.model.factory import init_random

    other_model = init_random(tmp_path / "other", "tiny", seed=1)
    other = tmp_path / "other.h5"
    extract([videos], other, str(other_model), device="cpu", workers=0, shard=Shard(1, 2))
    with pytest.raises(PigError, match="different models"):
        merge([shards[0], other], tmp_path / "mixed.h5")

    top = tmp_path / "top.h5"
    extract([videos], top, str(tmp_path / "other"), device="cpu", workers=0, shard=Shard(0, 2),
            settings=ExtractSettings(patches="top-8"))
    with pytest.raises(PigError, match="different settings: .* patches 'top-8' vs 'all'"):
        merge([top, other], tmp_path / "mixed.h5")

    select(shards[1], tmp_path / "sel.h5", k=4)
    with pytest.raises(PigError, match="a 'select' file"):
        merge([shards[0], tmp_path / "sel.h5"], tmp_path / "mixed.h5")
    with pytest.raises(PigError, match="an input of this command"):
        merge(shards, shards[0])
    assert not (tmp_path / "mixed.h5").exists() and not (tmp_path / "dup.h5").exists()


def test_a_resumed_run_of_another_shard_is_refused(videos, tiny_model_dir, tmp_path) -> None:
    output = tmp_path / "feats.h5"
    extract([videos], output, str(tiny_model_dir), device="cpu", workers=0, shard=Shard(0, 2))
    partial = Path(str(output) + ".partial.d")
    partial.mkdir()  # an unfinished run of shard 0/2 (its manifest names its fingerprint)
    (partial / "manifest.json").write_text(json.dumps({"fingerprint": read_h5(output)["attrs"]["fingerprint"]}))
    output.unlink()
    with pytest.raises(PigError, match="unfinished run with other inputs or settings"):
        extract([videos], output, str(tiny_model_dir), device="cpu", workers=0, shard=Shard(1, 2))


# --- the command line ------------------------------------------------------------------------------------------

def test_cli_shard_writes_beside_the_output_and_merge_reports(videos, tiny_model_dir, shards, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "feats.h5"
    result = runner.invoke(app, ["extract", str(videos), "-m", str(tiny_model_dir), "-o", str(out), "--shard", "0/2",
                                 "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "feats.shard-0-of-2.h5") and not out.exists()
    result = runner.invoke(app, ["extract", str(videos), "-o", str(out), "--shard", "2/2"])
    assert result.exit_code == 2 and "between 0 and N-1" in result.output
    result = runner.invoke(app, ["merge", *map(str, shards), "-o", str(out), "--json"])
    assert result.exit_code == 3, result.output  # a video failed: recorded, exit 3 as extract's
    record = json.loads(result.stdout)
    assert (record["total"], record["failed"]) == (7, 1)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_equal_one_run(videos, tiny_model_dir, whole, tmp_path, pig_cache) -> None:
    out = tmp_path / "feats.h5"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "pigcli",
               "extract", str(videos), "-m", str(tiny_model_dir), "-o", str(out), "--workers", "0", "--batch-size", "1"]
    proc = subprocess.run(command, capture_output=True, text=True, env=pig_env(pig_cache), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]  # a failed video is no crash under torchrun
    assert proc.stdout.strip() == str(out)  # rank 0 alone reports: the merged file
    assert "1 videos failed" in proc.stderr
    assert [shard_output(out, Shard(i, 2)).exists() for i in range(2)] == [True, True]
    # other thread counts than this process (torchrun sets OMP_NUM_THREADS=1) move the last bits only
    assert_same_by_id(read_h5(whole), read_h5(out), rtol=1e-5)
    assert [i["shard"] for i in json.loads(read_h5(out)["attrs"]["inputs"])] == ["0/2", "1/2"]
