"""`pig frames` (decode once, store the model's input frames) and `pig train --frames` (train from them).

The stage: its rows are exactly `read_clip`'s frames, failures are recorded (exit 3), the file's identity
does not depend on a model's weights, reruns, other settings and --force behave like every stage, and a
run killed with SIGKILL resumes to the same file. Training: cached frames give the same losses and
validation as decoding the videos every epoch, a frames file of another T or S is refused in one line,
and failed videos are left out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_IMAGE, TINY_T, VIDEO_FOLDER_SPECS, pig_env, read_h5, sigkill_after_first_block, write_broken, write_test_video
from pigcli.errors import PigError, StaleInputError, UsageError
from pigcli.stages.frames import FramesSettings, frames
from pigcli.train import TrainConfig, train
from pigcli.inputs.video import read_clip

BROKEN = {"garbage": "cannot decode", "empty": "empty file (0 bytes)", "audio": "no video stream"}

pytestmark = pytest.mark.usefixtures("one_thread")


def by_id(data: dict) -> dict:
    """{id: {dataset: row}}: rows are compared by id, never by position."""
    names = [n for n in data if n != "attrs"]
    return {vid: {n: data[n][i] for n in names} for i, vid in enumerate(data["ids"])}


def app():
    from pigcli.cli import app as typer_app

    return typer_app


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, video_folder) -> Path:
    """The 6 good videos, three broken files and a valid 5-frame video (fewer than T: repeated frames)."""
    folder = tmp_path_factory.mktemp("frames_mixed")
    for name in VIDEO_FOLDER_SPECS:
        shutil.copy(video_folder / name, folder / name)
    for kind in BROKEN:
        write_broken(kind, folder / f"{kind}.mp4")
    write_broken("short", folder / "zshort.mp4")
    return folder


@pytest.fixture(scope="module")
def mixed_frames(tmp_path_factory, mixed_folder, tiny_model_dir):
    """(summary, file contents, path) of an in-process `frames` run over mixed_folder, T and S from the model."""
    output = tmp_path_factory.mktemp("frames_out") / "frames.h5"
    summary = frames([mixed_folder], output, str(tiny_model_dir), workers=0)
    return summary, read_h5(output), output


# --- the stage ------------------------------------------------------------------------------------

def test_rows_are_read_clips_frames(mixed_frames, mixed_folder):
    summary, data, output = mixed_frames
    n = len(VIDEO_FOLDER_SPECS) + len(BROKEN) + 1
    assert (summary.total, summary.processed, summary.failed) == (n, n, len(BROKEN))
    assert data["pixels"].shape == (n, TINY_T, 3, TINY_IMAGE, TINY_IMAGE) and data["pixels"].dtype == np.uint8
    attrs = data["attrs"]
    assert attrs["stage"] == "frames" and json.loads(attrs["model"]) is None
    settings = json.loads(attrs["settings"])
    assert settings == {"num_frames": TINY_T, "image_size": TINY_IMAGE, "decoder": settings["decoder"],
                        "sampling": "uniform", "resize": "squash"}
    with h5py.File(output, "r") as handle:  # one video per chunk, uncompressed (stages/frames.py)
        assert handle["pixels"].chunks == (1, TINY_T, 3, TINY_IMAGE, TINY_IMAGE)
        assert handle["pixels"].compression is None
    rows = by_id(data)
    assert sorted(rows) == sorted(p.stem for p in mixed_folder.iterdir())
    for path in mixed_folder.iterdir():
        row = rows[path.stem]
        if path.stem in BROKEN:
            assert row["status"] == "failed" and BROKEN[path.stem] in row["error"], row["error"]
            assert not row["pixels"].any() and (row["frame_index"] == -1).all() and np.isnan(row["timestamps"]).all()
            continue
        clip = read_clip(path, TINY_T, TINY_IMAGE, settings["decoder"])
        assert row["status"] == "ok" and row["error"] == "" and row["path"] == str(path)
        # squash keeps floats; the file stores them rounded to the nearest integer in 0..255
        rounded = np.clip(np.round(clip.frames), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(row["pixels"], rounded, err_msg=path.name)
        np.testing.assert_array_equal(row["frame_index"], clip.frame_index)
        np.testing.assert_array_equal(row["timestamps"], clip.timestamps)
    assert rows["zshort"]["frame_index"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]  # uniform, 5 frames


def test_cli_reports_failures_with_exit_3(mixed_folder, mixed_frames, tmp_path):
    output = tmp_path / "cli.h5"
    result = CliRunner().invoke(app(), ["frames", str(mixed_folder), "--frames", str(TINY_T), "--size",
                                        str(TINY_IMAGE), "-o", str(output), "--workers", "0", "--json"])
    assert result.exit_code == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["output"] == str(output) and report["failed"] == len(BROKEN)
    assert report["errors"]["empty file (0 bytes)"] == 1
    assert f"{len(BROKEN)} videos failed" in result.stderr
    cli, library = read_h5(output), mixed_frames[1]
    for name in library:
        if name != "attrs":
            np.testing.assert_array_equal(cli[name], library[name], err_msg=name)
    # T and S given: the same file as with the model's defaults, no model read
    assert cli["attrs"]["fingerprint"] == library["attrs"]["fingerprint"]


def test_identity_is_videos_t_s_and_decoder_not_the_model(video_folder, tiny_model_dir, tmp_path, monkeypatch):
    from pigcli.model.factory import init_random

    output = tmp_path / "frames.h5"
    first = frames([video_folder / "alpha.mp4", video_folder / "charlie.avi"], output, str(tiny_model_dir), workers=0)
    assert not first.skipped and first.processed == 2
    other = init_random(tmp_path / "other", "tiny", seed=7)  # other weights, same T and S
    again = frames([video_folder / "alpha.mp4", video_folder / "charlie.avi"], output, str(other), workers=0)
    assert again.skipped and again.processed == 0
    # with T and S given no model is read at all: a $PIG_MODEL that does not exist is never looked at
    monkeypatch.setenv("PIG_MODEL", str(tmp_path / "no-such-model"))
    settings = FramesSettings(num_frames=TINY_T, image_size=TINY_IMAGE)
    assert frames([video_folder / "alpha.mp4", video_folder / "charlie.avi"], output, settings=settings,
                  workers=0).skipped
    with pytest.raises(UsageError, match="--size"):
        frames([video_folder / "alpha.mp4"], tmp_path / "x.h5", settings=FramesSettings(num_frames=2, image_size=0))


def test_rerun_does_nothing_and_other_settings_need_force(video_folder, tiny_model_dir, tmp_path):
    runner = CliRunner()
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("alpha.mp4", "echo.mov"):
        shutil.copy(video_folder / name, videos / name)
    output = tmp_path / "frames.h5"
    args = ["frames", str(videos), "-m", str(tiny_model_dir), "-o", str(output), "--workers", "0"]
    first = runner.invoke(app(), args)
    assert first.exit_code == 0 and first.stdout == f"{output}\n", first.stderr
    before = output.stat().st_mtime_ns
    again = runner.invoke(app(), args)
    assert again.exit_code == 0 and "up to date" in again.stderr and again.stdout == f"{output}\n"
    assert output.stat().st_mtime_ns == before

    changed = runner.invoke(app(), args + ["--size", "16"])
    assert changed.exit_code == 1 and "--force" in changed.stderr and changed.stderr.count("\n") == 1
    assert output.stat().st_mtime_ns == before
    forced = runner.invoke(app(), args + ["--size", "16", "--frames", "3", "--force"])
    assert forced.exit_code == 0, forced.stderr
    assert read_h5(output)["pixels"].shape == (2, 3, 3, 16, 16)


@pytest.mark.slow
def test_resume_after_kill(tmp_path, pig_cache, monkeypatch):
    """A frames run killed with SIGKILL after its first blocks resumes to the file of a clean run."""
    folder = tmp_path / "videos"
    count = 30
    for i in range(count):
        write_test_video(folder / f"v{i:02d}.mp4", 16 + i, seed=200 + i)
    output = tmp_path / "frames.h5"
    partial = Path(str(output) + ".partial.d")
    args = ["frames", folder, "--frames", "12", "--size", "64", "-o", output, "--workers", "0"]
    env = {"PIG_BLOCK_VIDEOS": "1"}  # one block per video

    done = sigkill_after_first_block(args, output, pig_cache, env)
    assert 1 <= done < count, done

    rerun = subprocess.run([sys.executable, "-m", "pigcli", *map(str, args)], env=pig_env(pig_cache, env),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stderr and f"of {count} videos already decoded" in rerun.stderr
    assert not partial.exists() and output.exists()

    monkeypatch.setenv("PIG_BLOCK_VIDEOS", "1")
    reference = tmp_path / "reference.h5"
    frames([folder], reference, settings=FramesSettings(num_frames=12, image_size=64), workers=0)
    resumed, straight = read_h5(output), read_h5(reference)
    assert resumed["attrs"]["fingerprint"] == straight["attrs"]["fingerprint"]
    resumed_rows, straight_rows = by_id(resumed), by_id(straight)
    assert sorted(resumed_rows) == sorted(straight_rows) == [f"v{i:02d}" for i in range(count)]
    for vid, row in straight_rows.items():
        for name, value in row.items():
            np.testing.assert_array_equal(resumed_rows[vid][name], value, err_msg=f"{vid} {name}")


# --- training from cached frames ------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_corpus(tmp_path_factory, video_folder):
    """(videos with one broken file, train captions, val captions, model without dropout, frames file)."""
    from pigcli.model.factory import init_random
    from pigcli.model.pig import PigConfig

    root = tmp_path_factory.mktemp("frames_train")
    videos = root / "videos"
    videos.mkdir()
    for name in VIDEO_FOLDER_SPECS:
        shutil.copy(video_folder / name, videos / name)
    ids = [Path(n).stem for n in VIDEO_FOLDER_SPECS]
    train_ids, val_ids = ids[:4], ids[4:]
    train_captions, val_captions = root / "train.csv", root / "val.csv"
    train_captions.write_text("video_id,caption\n" + "".join(f"{v},clip {v} number {i}\n{v},the {v} video\n"
                                                             for i, v in enumerate(train_ids)))
    val_captions.write_text("video_id,caption\n" + "".join(f"{v},clip {v}\n" for v in val_ids))
    model = init_random(root / "tiny-nodrop", "tiny", pig_config=PigConfig(fusion_dropout=0.0))
    cached = root / "frames.h5"  # crop: uint8 frames either way (squash's are rounded in a frames file only)
    frames([videos], cached, str(model), settings=FramesSettings(resize="crop"), workers=0)
    return videos, train_captions, val_captions, model, cached


def train_config(corpus, output: Path, **overrides) -> TrainConfig:
    videos, train_captions, val_captions, model, cached = corpus
    base = dict(output=output, captions=train_captions, val_captions=val_captions, model=str(model), frames=cached,
                phases="2", batch_size=4, steps=2, lr=1e-3, lr_clip=1e-3, warmup=0.1, device="cpu", workers=0)
    return TrainConfig(**{**base, **overrides})


def log_records(output: Path, event: str) -> list[dict]:
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == event]


@pytest.mark.slow
def test_cached_frames_train_like_raw_videos(train_corpus, tmp_path):
    """Full fine-tune (backbone included), same model, seed and captions: the same losses at every step
    and the same validation before and after, from cached frames as from decoding the videos (without
    the training jitter, which a frames file cannot have; with crop, whose frames a file holds exactly)."""
    from pigcli.model.checkpoint import load_checkpoint

    cached = train(train_config(train_corpus, tmp_path / "cached"))
    raw = train(train_config(train_corpus, tmp_path / "raw", frames=None, videos=train_corpus[0], jitter=False,
                             resize="crop"))
    steps_cached, steps_raw = log_records(tmp_path / "cached", "step"), log_records(tmp_path / "raw", "step")
    assert len(steps_cached) == len(steps_raw) == 2
    for a, b in zip(steps_cached, steps_raw):
        for key in ("loss", "l_ret", "l_gen"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    assert steps_cached[0]["l_ret"] > 0 and steps_cached[0]["l_gen"] > 0
    assert log_records(tmp_path / "cached", "val")[0]["val"] == log_records(tmp_path / "raw", "val")[0]["val"]
    assert cached.last_metrics == raw.last_metrics and cached.val_videos == 2
    before, after = load_checkpoint(train_corpus[3]).model.state_dict(), load_checkpoint(cached.last).model.state_dict()
    assert not torch.equal(before["clip.vision_model.encoder.layers.0.mlp.fc1.weight"],
                           after["clip.vision_model.encoder.layers.0.mlp.fc1.weight"])  # the backbone trained
    assert not torch.equal(before["backbone.temporal_embedding"], after["backbone.temporal_embedding"])


@pytest.mark.slow
def test_frame_source_reads_in_workers(train_corpus):
    """With a spawned reading worker the batches are the file's rows, in the planned order."""
    from pigcli.model.checkpoint import load_checkpoint
    from pigcli.train.data import FrameSource

    source = FrameSource(train_corpus[4], load_checkpoint(train_corpus[3]), workers=1)
    try:
        plan = [np.array([3, 0, 5]), np.array([1, 2])]
        batches = list(source.iterate(plan))
    finally:
        source.close()
    stored = read_h5(train_corpus[4])
    for rows, batch in zip(plan, batches):
        assert batch.rows.tolist() == rows.tolist() and batch.valid.all()
        for row, pixels in zip(rows, batch.pixels):
            np.testing.assert_array_equal(pixels.numpy(), stored["pixels"][list(stored["ids"]).index(source.ids[row])])


def test_other_frame_count_or_size_is_refused_in_one_line(train_corpus, video_folder, tmp_path):
    other = tmp_path / "frames8.h5"
    frames([video_folder / "alpha.mp4"], other, settings=FramesSettings(num_frames=8, image_size=TINY_IMAGE),
           workers=0)
    with pytest.raises(StaleInputError, match=f"8 frames of {TINY_IMAGE} px.*takes {TINY_T} frames.*pig frames VIDEOS -m"):
        train(train_config(train_corpus, tmp_path / "run", frames=other))
    result = CliRunner().invoke(app(), ["train", "--captions", str(train_corpus[1]), "--frames", str(other),
                                        "-m", str(train_corpus[3]), "--device", "cpu", "-o", str(tmp_path / "cli")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "pig frames VIDEOS -m" in result.stderr
    from pigcli.stages.extract import extract

    features = tmp_path / "feats.h5"
    extract([video_folder / "alpha.mp4"], features, str(train_corpus[3]), device="cpu", workers=0)
    with pytest.raises(StaleInputError, match="'frames' file.*pig frames"):  # an extract file is no frames file
        train(train_config(train_corpus, tmp_path / "run2", frames=features))


def test_failed_videos_are_left_out_and_exactly_one_source(train_corpus, tmp_path, make_broken):
    videos = tmp_path / "videos"
    shutil.copytree(train_corpus[0], videos)
    make_broken("garbage", "broken.mp4", folder=videos)
    cached = tmp_path / "frames.h5"
    assert frames([videos], cached, str(train_corpus[3]), workers=0).failed == 1
    captions = tmp_path / "train.csv"
    captions.write_text(train_corpus[1].read_text() + "broken,a broken video\nghost,no such video\n")
    result = train(train_config(train_corpus, tmp_path / "run", frames=cached, captions=captions, val_captions=None,
                                freeze_backbone=True, steps=1))
    assert (result.train_videos, result.missing_videos, result.failed_videos) == (4, 2, 0)
    assert log_records(tmp_path / "run", "step")[0]["videos"] == 4
    with pytest.raises(UsageError, match="exactly one of --features .*--videos .*--frames"):
        train(train_config(train_corpus, tmp_path / "both", videos=train_corpus[0]))


# --- videos named by the ids of an annotation file -------------------------------------------------------

def test_ids_from_official_annotations_find_videos_as_the_official_loader(tmp_path, tiny_model_dir):
    """FOLDER/ID.mp4; an id with '/' is a subfolder (LSMDC), else its last part names the file (the official
    rule); another extension is accepted; an id with no file becomes a failed video (exit 3)."""
    from pigcli.inputs.sources import videos_by_id

    folder = tmp_path / "all"
    for name in ("video7020.mp4", "1004_Juno/1004_Juno_00.01.mp4", "clip9.avi", "video7021.webm"):
        write_test_video(folder / name, 12, 32, 40)
    ids = ["video7020", "1004_Juno/1004_Juno_00.01", "split_a/clip9", "video7021", "ghost"]
    entries = videos_by_id([folder], ids)
    assert [e.id for e in entries] == ids
    assert [e.path.relative_to(folder).as_posix() for e in entries] == [
        "video7020.mp4", "1004_Juno/1004_Juno_00.01.mp4", "clip9.avi", "video7021.webm", "ghost.mp4"]

    annotations = tmp_path / "test1ka.jsonl"
    annotations.write_text("".join(json.dumps({"clip_id": i, "text": f"caption of {i}"}) + "\n" for i in ids))
    output = tmp_path / "frames.h5"
    result = CliRunner().invoke(app(), ["frames", str(folder), "--ids", str(annotations), "-m", str(tiny_model_dir),
                                        "--workers", "0", "-o", str(output), "--json"])
    assert result.exit_code == 3, result.output
    data = read_h5(output)
    assert list(data["ids"]) == ids and list(data["status"]) == ["ok"] * 4 + ["failed"]
    assert "file not found" in data["error"][4]
    with pytest.raises(PigError, match="not a folder; with --ids"):
        videos_by_id([folder / "video7020.mp4"], ids)
