"""`pig extract` end to end: file schema, failures, reruns, patch selection, resume, worker pool."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_DIM, TINY_L, TINY_P, TINY_T, VIDEO_FOLDER_SPECS, read_h5, sigkill_after_first_block, write_broken, write_test_video
from pigcli.errors import PigError
from pigcli.stages.extract import ExtractSettings, extract

BROKEN = {"garbage": "cannot decode", "empty": "empty file (0 bytes)", "truncated": "cannot decode",
          "audio": "no video stream"}
SHORT = "zshort"  # a valid 5-frame video (fewer than T): must be ok, with repeated frames


def assert_same_rows(a: dict, b: dict, skip=("attrs",)) -> None:
    assert set(a) == set(b)
    for name in a:
        if name not in skip:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, video_folder) -> Path:
    """The 6 good videos + one of each broken kind + a short valid video."""
    folder = tmp_path_factory.mktemp("mixed")
    for name in VIDEO_FOLDER_SPECS:
        shutil.copy(video_folder / name, folder / name)
    for kind in BROKEN:
        write_broken(kind, folder / f"{kind}.mp4")
    write_broken("short", folder / f"{SHORT}.mp4")
    return folder


@pytest.fixture(scope="module")
def mixed_extract(tmp_path_factory, mixed_folder, tiny_model_dir):
    """(summary, file contents) of an in-process extract of mixed_folder, default settings."""
    output = tmp_path_factory.mktemp("mixed_out") / "feats.h5"
    summary = extract([mixed_folder], output, str(tiny_model_dir), device="cpu", workers=0)
    return summary, read_h5(output), output


# --- schema and values ----------------------------------------------------------------------------

def test_schema(mixed_extract, mixed_folder, tiny_model) -> None:
    summary, data, output = mixed_extract
    n = len(VIDEO_FOLDER_SPECS) + len(BROKEN) + 1
    assert (summary.total, summary.processed, summary.failed) == (n, n, len(BROKEN))
    shapes = {
        "ids": ((n,), object), "status": ((n,), object), "error": ((n,), object), "path": ((n,), object),
        "frame_index": ((n, TINY_T), np.int64), "timestamps": ((n, TINY_T), np.float64),
        "video": ((n, TINY_DIM), np.float32), "proxies": ((n, TINY_P, TINY_DIM), np.float32),
        "frames": ((n, TINY_T, TINY_DIM), np.float32),
        "patches": ((n, TINY_T * TINY_L, TINY_DIM), np.float16), "patch_index": ((n, TINY_T * TINY_L), np.int32),
        "its_score": ((n, TINY_T * TINY_L), np.float32),
    }
    for name, (shape, dtype) in shapes.items():
        assert data[name].shape == shape, name
        assert data[name].dtype == dtype, name
    with h5py.File(output, "r") as handle:  # ids, status, error: variable-length UTF-8 strings
        for name in ("ids", "status", "error", "path"):
            assert h5py.check_string_dtype(handle[name].dtype).encoding == "utf-8", name
    want_ids = sorted(p.stem for p in mixed_folder.iterdir())  # discovery sorts by path
    assert data["ids"].tolist() == want_ids

    attrs = data["attrs"]
    assert attrs["schema"] == "pig/1" and attrs["stage"] == "extract"
    settings = json.loads(attrs["settings"])
    assert settings["backbone"] == "vip" and settings["patches"] == "all" and settings["num_frames"] == TINY_T
    assert settings["precision"] == "fp32" and settings["image_size"] == 32 and settings["sampling"] == "uniform"
    assert json.loads(attrs["model"]) == tiny_model.identity.to_dict()
    inputs = json.loads(attrs["inputs"])
    assert inputs and inputs[0]["videos"] == n
    assert isinstance(attrs["fingerprint"], str) and len(attrs["fingerprint"]) == 16
    assert "timings" in attrs


def test_failures_are_recorded(mixed_extract) -> None:
    summary, data, _ = mixed_extract
    rows = {id_: i for i, id_ in enumerate(data["ids"])}
    for kind, message in BROKEN.items():
        i = rows[kind]
        assert data["status"][i] == "failed" and message in data["error"][i], (kind, data["error"][i])
        assert np.all(data["frame_index"][i] == -1) and np.all(np.isnan(data["timestamps"][i]))
        for name in ("video", "proxies", "frames", "patches", "its_score"):
            assert not np.any(data[name][i]), (kind, name)
    ok = [i for i, s in enumerate(data["status"]) if s == "ok"]
    assert len(ok) == len(VIDEO_FOLDER_SPECS) + 1
    assert all(data["error"][i] == "" for i in ok)
    assert sum(summary.errors.values()) == len(BROKEN)
    assert summary.errors["empty file (0 bytes)"] == 1


def _expected_tokens(tiny_model, path: Path, frames: int = TINY_T):
    """Decode with PyAV here (the file used 'auto' = decord: they give the same frames) and normalise
    with numpy: an independent route to the model's input."""
    import av

    with av.open(str(path)) as container:
        rgb = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    index = [i * (len(rgb) - 1) // (frames - 1) for i in range(frames)]  # uniform: the official linspace
    # squash, the official transform: floats in 0..1, resized to 32 x 32 (bicubic, no antialiasing), unrounded
    floats = torch.from_numpy(rgb[index]).permute(0, 3, 1, 2).float() / 255.0
    pixels = torch.nn.functional.interpolate(floats, size=(32, 32), mode="bicubic", align_corners=False,
                                             antialias=False).numpy()
    mean = np.array(tiny_model.model.config.image_mean, np.float32)[:, None, None]
    std = np.array(tiny_model.model.config.image_std, np.float32)[:, None, None]
    with torch.no_grad():
        tokens = tiny_model.model.encode_video(torch.from_numpy((pixels - mean) / std)[None], "vip")
    return index, tokens


@pytest.mark.parametrize("video_id", ["alpha", "echo", SHORT])
def test_ok_rows_hold_the_models_outputs(mixed_extract, mixed_folder, tiny_model, video_id: str) -> None:
    _, data, _ = mixed_extract
    i = data["ids"].tolist().index(video_id)
    path = next(mixed_folder.glob(video_id + ".*"))
    assert data["status"][i] == "ok" and data["path"][i] == str(path)
    index, tokens = _expected_tokens(tiny_model, path)
    assert data["frame_index"][i].tolist() == index
    np.testing.assert_allclose(data["timestamps"][i], np.array(index) / 8.0)
    for name in ("video", "proxies", "frames", "its_score"):
        np.testing.assert_allclose(data[name][i], getattr(tokens, name)[0].numpy(), atol=1e-5, rtol=0,
                                   err_msg=name)
    np.testing.assert_array_equal(data["patch_index"][i], np.arange(TINY_T * TINY_L))
    np.testing.assert_allclose(data["patches"][i].astype(np.float32), tokens.patches[0].numpy(), atol=2e-2, rtol=1e-2)
    if video_id == SHORT:
        assert index == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]  # 5 frames, 12 taken: linspace(0, 4, 12) truncated


# --- patches settings ------------------------------------------------------------------------------

def test_patches_top_k_keeps_the_best_by_its(mixed_extract, mixed_folder, tiny_model_dir, tmp_path) -> None:
    _, full, _ = mixed_extract
    output = tmp_path / "top4.h5"
    extract([mixed_folder], output, str(tiny_model_dir), settings=ExtractSettings(patches="top-4"),
            device="cpu", workers=0)
    top = read_h5(output)
    assert top["patches"].shape == (len(full["ids"]), 4, TINY_DIM) and top["patch_index"].shape == (len(full["ids"]), 4)
    assert json.loads(top["attrs"]["settings"])["patches"] == "top-4"
    for i, status in enumerate(top["status"]):
        if status != "ok":
            continue
        scores = full["its_score"][i]
        best = sorted(range(len(scores)), key=lambda j: -scores[j])[:4]
        assert sorted(top["patch_index"][i].tolist()) == sorted(best)
        assert np.all(np.diff(top["patch_index"][i]) > 0)  # stored in patch order
        np.testing.assert_array_equal(top["patches"][i], full["patches"][i][top["patch_index"][i]])
    np.testing.assert_array_equal(top["its_score"], full["its_score"])  # all scores are still kept


def test_patches_none(mixed_folder, tiny_model_dir, tmp_path) -> None:
    output = tmp_path / "none.h5"
    extract([mixed_folder / "alpha.mp4"], output, str(tiny_model_dir), settings=ExtractSettings(patches="none"),
            device="cpu", workers=0)
    data = read_h5(output)
    assert data["patches"].shape == (1, 0, TINY_DIM) and data["patch_index"].shape == (1, 0)
    assert data["its_score"].shape == (1, TINY_T * TINY_L) and np.all(data["its_score"] > 0)


def test_frames_backbone_file(mixed_folder, tiny_model_dir, tmp_path) -> None:
    output = tmp_path / "frames.h5"
    extract([mixed_folder / "alpha.mp4", mixed_folder / "charlie.avi"], output, str(tiny_model_dir),
            settings=ExtractSettings(backbone="frames", num_frames=4, patches="none"), device="cpu", workers=0)
    data = read_h5(output)
    assert data["proxies"].shape == (2, 0, TINY_DIM) and data["frames"].shape == (2, 4, TINY_DIM)
    np.testing.assert_allclose(data["video"], data["frames"].mean(axis=1), atol=1e-6)


# --- the command line, reruns and settings changes -------------------------------------------------

@pytest.mark.slow
def test_cli_extract_reports_failures(run_pig, mixed_folder, mixed_extract, tiny_model_dir, tmp_path) -> None:
    output = tmp_path / "cli.h5"
    code, out, err = run_pig(["extract", mixed_folder, "-m", tiny_model_dir, "-o", output, "--workers", "0"])
    assert code == 3, err
    assert out == f"{output}\n"  # the file is written (failures recorded in it): its path, as on success
    assert f"{len(VIDEO_FOLDER_SPECS) + 1} of {len(VIDEO_FOLDER_SPECS) + 1 + len(BROKEN)} videos ok" in err
    assert f"{len(BROKEN)} videos failed" in err
    for message in ("empty file (0 bytes)", "no video stream"):
        assert message in err
    assert "Traceback" not in err
    assert_same_rows(read_h5(output), mixed_extract[1])  # the CLI is the library call


def test_rerun_is_skipped_and_changed_settings_need_force(mixed_folder, tiny_model_dir, tmp_path) -> None:
    runner = CliRunner()
    output = tmp_path / "feats.h5"
    (tmp_path / "videos").mkdir()
    for name in ("alpha.mp4", "charlie.avi"):
        shutil.copy(mixed_folder / name, tmp_path / "videos" / name)
    args = ["extract", str(tmp_path / "videos"), "-m", str(tiny_model_dir), "-o", str(output),
            "--workers", "0", "--device", "cpu"]
    first = runner.invoke(app(), args)
    assert first.exit_code == 0, first.stderr
    before = output.stat().st_mtime_ns
    again = runner.invoke(app(), args)
    assert again.exit_code == 0 and "up to date" in again.stderr
    assert output.stat().st_mtime_ns == before

    changed = runner.invoke(app(), args + ["--patches", "top-4"])
    assert changed.exit_code == 1 and "--force" in changed.stderr
    assert changed.stderr.count("\n") == 1  # one line
    assert "(settings that differ: patches all -> top-4)" in changed.stderr
    assert output.stat().st_mtime_ns == before
    # a file made with crop records no resize (as files made before --resize): the default squash differs
    other = [str(tmp_path / "crop.h5") if a == str(output) else a for a in args]
    crop = runner.invoke(app(), other + ["--resize", "crop"])
    assert crop.exit_code == 0, crop.stderr
    assert "resize" not in json.loads(read_h5(tmp_path / "crop.h5")["attrs"]["settings"])
    squash = runner.invoke(app(), other)
    assert squash.exit_code == 1 and squash.stderr.count("\n") == 1
    assert "use --force to recompute it" in squash.stderr and "resize unrecorded -> squash" in squash.stderr
    forced = runner.invoke(app(), args + ["--patches", "top-4", "--force"])
    assert forced.exit_code == 0, forced.stderr
    assert read_h5(output)["patches"].shape == (2, 4, TINY_DIM)

    # a video that changed on disk makes the output stale too
    os.utime(tmp_path / "videos" / "charlie.avi", ns=(1, 1))
    assert runner.invoke(app(), args + ["--patches", "top-4"]).exit_code == 1


def app():
    from pigcli.cli import app as typer_app

    return typer_app


def test_folder_without_videos(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a video")
    result = CliRunner().invoke(app(), ["extract", str(tmp_path / "empty"), "-o", str(tmp_path / "x.h5")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no videos found in") and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.h5").exists()


def test_duplicate_ids_and_relative_ids(tmp_path, tiny_model_dir) -> None:
    one = write_test_video(tmp_path / "videos" / "one" / "clip.mp4", 12, seed=1)
    two = write_test_video(tmp_path / "videos" / "two" / "clip.mkv", 12, seed=2)
    result = CliRunner().invoke(app(), ["extract", str(tmp_path / "videos"), "-o", str(tmp_path / "x.h5"),
                                        "-m", str(tiny_model_dir), "--workers", "0"])
    assert result.exit_code == 1
    assert str(one) in result.stderr and str(two) in result.stderr and "--relative-ids" in result.stderr
    with pytest.raises(PigError, match="clip"):
        extract([tmp_path / "videos"], tmp_path / "x.h5", str(tiny_model_dir), device="cpu", workers=0)

    output = tmp_path / "rel.h5"
    summary = extract([tmp_path / "videos"], output, str(tiny_model_dir), device="cpu", workers=0,
                      relative_ids=True, settings=ExtractSettings(num_frames=2, patches="none"))
    assert summary.failed == 0
    assert read_h5(output)["ids"].tolist() == ["one/clip", "two/clip"]


# --- resume after SIGKILL ---------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_after_kill(tmp_path, tiny_model_dir, pig_cache, run_pig, monkeypatch) -> None:
    folder = tmp_path / "videos"
    for i in range(12):
        write_test_video(folder / f"v{i:02d}.mp4", 16 + i, seed=100 + i)
    output = tmp_path / "feats.h5"
    partial = Path(str(output) + ".partial.d")
    args = ["extract", folder, "-m", tiny_model_dir, "-o", output, "--workers", "0", "--device", "cpu"]
    env = {"PIG_BLOCK_VIDEOS": "1"}  # 12 blocks of 1 video

    done = sigkill_after_first_block(args, output, pig_cache, env)
    assert 1 <= done < 12, done

    code, out, err = run_pig(args, env=env)
    assert code == 0, err
    assert "resuming" in err and "of 12 videos already extracted" in err
    assert not partial.exists() and output.exists()

    monkeypatch.setenv("PIG_BLOCK_VIDEOS", "1")
    reference = tmp_path / "reference.h5"
    extract([folder], reference, str(tiny_model_dir), device="cpu", workers=0)
    resumed, straight = read_h5(output), read_h5(reference)
    assert_same_rows(resumed, straight)
    assert resumed["attrs"]["fingerprint"] == straight["attrs"]["fingerprint"]


def test_bad_block_size_env(tmp_path, tiny_model_dir, video_folder, monkeypatch) -> None:
    monkeypatch.setenv("PIG_BLOCK_VIDEOS", "0")
    with pytest.raises(PigError, match="PIG_BLOCK_VIDEOS"):
        extract([video_folder / "alpha.mp4"], tmp_path / "x.h5", str(tiny_model_dir), device="cpu", workers=0)


# --- worker processes and the per-video timeout ------------------------------------------------------

@pytest.mark.slow
def test_worker_pool_matches_in_process_and_times_out(mixed_folder, mixed_extract, tiny_model_dir, tmp_path) -> None:
    """--workers 2 gives the same file as --workers 0; a decode slower than --timeout is killed and
    recorded as failed. (A named pipe no longer serves as the hang: read_clip refuses it unopened.)"""
    from pigcli.inputs.decode_pool import decode_videos
    from pigcli.inputs.sources import VideoEntry

    output = tmp_path / "pool.h5"
    summary = extract([mixed_folder], output, str(tiny_model_dir), device="cpu", workers=2, timeout=60)
    data = read_h5(output)
    assert summary.failed == len(BROKEN)
    pooled = {name: value for name, value in data.items() if name != "attrs"}
    in_process = {name: value for name, value in mixed_extract[1].items() if name != "attrs"}
    assert_same_rows(pooled, in_process)
    # PyAV decodes every frame: 3000 frames take far longer than 0.05 s and pebble's 0.1 s check of
    # timeouts (about 0.45 s on an idle core; 600 frames, 0.09 s, could finish before the check)
    slow = write_test_video(tmp_path / "slow.mp4", num_frames=3000, height=120, width=160)
    start = time.monotonic()
    (decoded,) = decode_videos([VideoEntry("slow", slow)], TINY_T, 32, "pyav", workers=1, timeout=0.05)
    assert time.monotonic() - start < 60
    assert decoded.clip is None and decoded.error == "decoding timed out after 0.05s"


def test_fifo_and_broken_symlink_are_failed_videos_never_opened(tmp_path, video_folder, tiny_model_dir) -> None:
    """With --workers 0 there is no timeout: a named pipe (opening one with no writer blocks forever)
    must be refused unopened, found in a folder or given by name; a dangling symlink is a failure too."""
    import signal

    from pigcli.cli import app

    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(video_folder / "alpha.mp4", folder / "alpha.mp4")
    os.mkfifo(folder / "pipe.mp4")
    os.symlink(tmp_path / "gone.mp4", folder / "link.mp4")
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)

    def hung(*_):
        raise TimeoutError("a named pipe was opened")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        result = CliRunner().invoke(app, ["extract", str(folder), str(fifo), "-m", str(tiny_model_dir), "-o",
                                          str(tmp_path / "feats.h5"), "--device", "cpu", "--workers", "0"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert result.exit_code == 3, (result.output, result.exception)
    data = read_h5(tmp_path / "feats.h5")
    errors = dict(zip(data["ids"].tolist(), data["error"].tolist()))
    assert errors == {"alpha": "", "link": f"broken symlink -> {tmp_path / 'gone.mp4'}",
                      "pipe": "not a regular file (a named pipe): not opened",
                      "hang": "not a regular file (a named pipe): not opened"}
    assert "broken symlink" in result.stderr and "named pipe" in result.stderr
