"""Shots as rows (`--segments`, pigcli/inputs/segments.py): a generated collection of multi-shot videos whose
shots differ in colour and whose red channel encodes the frame number (conftest.frame_number).

Each row is a shot: its id is the shot id, its recorded frame numbers lie inside the shot and are the
uniform rule over the shot's frames (computed here independently), and its pixels are those frames (red:
frame number; green: the shot's colour). Seconds give the rows frame numbers give; a SIGKILLed run resumes
by shot and refuses another segments file; shards merged equal one run; a bad segments file is one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import (FRAME_RED_BASE, FRAME_RED_STEP, TINY_IMAGE, frame_number, pig_env, read_h5,
                      sigkill_after_first_block)
from pigcli.cli import app
from pigcli.stages.frames import FramesSettings, frames
from pigcli.stages.merge import merge
from pigcli.stages.shard import Shard, shard_output

T = 4
FPS = 8
GREENS = (30, 120, 210, 75)  # one colour per shot of a video (by its place in the video)
# video -> its shots as (first frame, last frame), both included; the last shot of v2 runs past the end
SHOTS = {
    "v0": [(0, 9), (10, 21), (22, 31)],
    "v1": [(0, 4), (5, 5), (6, 19), (20, 35)],
    "v2": [(0, 13), (14, 30)],
}
LENGTHS = {"v0": 32, "v1": 36, "v2": 27}


def shot_video_frames(video: str) -> np.ndarray:
    """[N, 32, 40, 3]: red encodes the frame number, green the shot's colour, blue the video."""
    frames = np.zeros((LENGTHS[video], 32, 40, 3), np.uint8)
    for i in range(LENGTHS[video]):
        frames[i, ..., 0] = FRAME_RED_BASE + FRAME_RED_STEP * i
        frames[i, ..., 2] = 60 + 60 * int(video[1])
    for k, (first, last) in enumerate(SHOTS[video]):
        frames[first : last + 1, ..., 1] = GREENS[k]
    return frames


def shot_rows() -> list[tuple[str, str, int, int, int]]:
    """(shot id, video, first, last, colour) in file order: TRECVID's shot ids, shot<video>_<n> from 1."""
    return [(f"shot{video}_{k + 1}", video, first, last, GREENS[k])
            for video, shots in SHOTS.items() for k, (first, last) in enumerate(shots)]


def write_segments(path: Path, unit: str = "frames", rows=None, separator: str = "\t") -> Path:
    names = ("startframe", "endframe") if unit == "frames" else ("starttime", "endtime")
    lines = [separator.join(("shot", "video", *names))]
    for shot, video, first, last, _ in rows or shot_rows():
        bounds = (first, last) if unit == "frames" else (first / FPS, last / FPS)
        lines.append(separator.join((shot, video, *map(str, bounds))))
    path.write_text("# V3C-style shots\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, Path]:
    """(folder of the multi-shot videos, their segments file in frames)."""
    from pigcli.toy.videowrite import write_video

    root = tmp_path_factory.mktemp("shots")
    (root / "videos").mkdir()
    for video in SHOTS:
        write_video(root / "videos" / f"{video}.mp4", shot_video_frames(video), fps=FPS)
    return root / "videos", write_segments(root / "shots.tsv")


def run_frames(collection, output: Path, segments: Path | None = None, **kwargs) -> dict:
    videos, default_segments = collection
    frames([videos], output, settings=FramesSettings(num_frames=T, image_size=TINY_IMAGE), workers=0,
           segments=segments or default_segments, **kwargs)
    return read_h5(output)


def uniform_in(first: int, last: int) -> np.ndarray:
    """The official sampler over a shot's frames, written out: first + int(linspace(0, n - 1, T))."""
    n = last - first + 1
    return np.array([first + int(i * (n - 1) / (T - 1)) for i in range(T)])


def test_rows_are_shots_sampled_inside_their_bounds(collection, tmp_path):
    data = run_frames(collection, tmp_path / "frames.h5")
    expected = shot_rows()
    assert list(data["ids"]) == [shot for shot, *_ in expected]
    assert list(data["shot_video"]) == [video for _, video, *_ in expected]
    for row, (shot, video, first, last, green) in enumerate(expected):
        last_decoded = min(last, LENGTHS[video] - 1)  # v2's last shot is cut at the video's end
        assert data["status"][row] == "ok", (shot, data["error"][row])
        assert list(data["shot_frames"][row]) == [first, last_decoded], shot
        np.testing.assert_array_equal(data["frame_index"][row], uniform_in(first, last_decoded), err_msg=shot)
        np.testing.assert_allclose(data["timestamps"][row], data["frame_index"][row] / FPS)
        for pixels, index in zip(data["pixels"][row], data["frame_index"][row]):
            assert frame_number(pixels, channels_first=True) == index, shot
            assert abs(float(np.median(pixels[1])) - green) < 12, (shot, index)


def test_seconds_give_the_rows_frames_give(collection, tmp_path):
    in_frames = run_frames(collection, tmp_path / "frames.h5")
    in_seconds = run_frames(collection, tmp_path / "seconds.h5", write_segments(tmp_path / "s.csv", "seconds",
                                                                                 separator=","))
    for name in ("ids", "frame_index", "shot_frames", "pixels"):
        np.testing.assert_array_equal(in_seconds[name], in_frames[name], err_msg=name)
    settings = [json.loads(d["attrs"]["settings"])["segments"] for d in (in_frames, in_seconds)]
    assert settings[0]["unit"] == "frames" and settings[1]["unit"] == "seconds"
    assert settings[0]["sha256"] != settings[1]["sha256"] and settings[0]["shots"] == len(shot_rows())


def test_a_shot_past_the_end_of_its_video_fails_alone(collection, tmp_path):
    rows = [*shot_rows()[:2], ("shotv0_9", "v0", 40, 50, 0)]
    data = run_frames(collection, tmp_path / "late.h5", write_segments(tmp_path / "late.tsv", rows=rows))
    assert list(data["status"]) == ["ok", "ok", "failed"]
    assert data["error"][2] == "shot starts at frame 40, the video has 32 frames"


def test_shards_merged_equal_one_run(collection, tmp_path):
    whole = run_frames(collection, tmp_path / "whole.h5")
    output = tmp_path / "sharded.h5"
    parts = [shard_output(output, Shard(i, 2)) for i in range(2)]
    for i, part in enumerate(parts):
        frames([collection[0]], part, settings=FramesSettings(num_frames=T, image_size=TINY_IMAGE), workers=1,
               segments=collection[1], shard=Shard(i, 2))
    assert all(len(read_h5(part)["ids"]) > 0 for part in parts)  # both shards hold shots
    merge(parts, output)
    merged = read_h5(output)
    order = {shot: row for row, shot in enumerate(merged["ids"])}
    rows = [order[shot] for shot in whole["ids"]]
    assert sorted(order) == sorted(whole["ids"])
    for name in ("pixels", "frame_index", "timestamps", "shot_frames", "status"):
        np.testing.assert_array_equal(merged[name][rows], whole[name], err_msg=name)


def test_pictures_draw_a_shots_own_frames(collection, tmp_path):
    """pig explain, html thumbnails and serve's strips decode a row again: a shot row gives its shot's frames."""
    from pigcli.query.media import SourceVideos

    output = tmp_path / "frames.h5"
    data = run_frames(collection, output)
    source = SourceVideos(output)
    for row in (1, 4, len(data["ids"]) - 1):
        np.testing.assert_array_equal(source.frames(data["ids"][row]), data["pixels"][row].transpose(0, 2, 3, 1))


def test_segments_from_a_master_shot_reference(collection, tmp_path):
    """V3C's layout: msb/VIDEO.tsv, a header with startframe, starttime, endframe, endtime; the shots get
    TRECVID's ids and give the rows a hand-written segments file gives."""
    msb = tmp_path / "msb"
    msb.mkdir()
    for video, shots in SHOTS.items():
        rows = [f"{first}\t{first / FPS:.3f}\t{last}\t{last / FPS:.3f}" for first, last in shots]
        (msb / f"{video}.tsv").write_text("startframe\tstarttime\tendframe\tendtime\n" + "\n".join(rows) + "\n")
    output = tmp_path / "from_msb.tsv"
    result = CliRunner().invoke(app, ["segments", str(msb), "-o", str(output)])
    assert result.exit_code == 0 and result.stdout == f"{output}\n", result.output
    lines = output.read_text().splitlines()
    assert lines[0] == "shot\tvideo\tstartframe\tendframe\tstarttime\tendtime"
    assert lines[1:3] == ["shotv0_1\tv0\t0\t9\t0.000\t1.125", "shotv0_2\tv0\t10\t21\t1.250\t2.625"]
    hand_written = run_frames(collection, tmp_path / "hand.h5")
    converted = run_frames(collection, tmp_path / "converted.h5", output)
    for name in ("ids", "frame_index", "pixels"):
        np.testing.assert_array_equal(converted[name], hand_written[name], err_msg=name)


def test_pig_segments_replaces_only_its_own_file(tmp_path):
    """-o over a segments file it wrote is replaced; over any other file, or a link, it is refused and
    the file keeps its bytes (safe_write's rule)."""
    msb = tmp_path / "msb"
    msb.mkdir()
    (msb / "v0.tsv").write_text("startframe\tendframe\n0\t9\n")
    own, other, link = tmp_path / "own.tsv", tmp_path / "notes.tsv", tmp_path / "link.tsv"
    other.write_text("my notes\n")
    link.symlink_to(other)
    for _ in range(2):  # the second run replaces the first one's file
        result = CliRunner().invoke(app, ["segments", str(msb), "-o", str(own)])
        assert result.exit_code == 0, result.output
    assert own.read_text() == "shot\tvideo\tstartframe\tendframe\nshotv0_1\tv0\t0\t9\n"
    for target in (other, link):
        result = CliRunner().invoke(app, ["segments", str(msb), "-o", str(target)])
        assert result.exit_code == 1 and "pig never replaces it" in result.output, result.output
    assert other.read_text() == "my notes\n" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.tsv", "msb", "notes.tsv", "own.tsv"]


BAD_SEGMENTS = {
    "unknown video": ([("shotv9_1", "v9", 0, 5, 0)], " line 3: video 'v9' of shot 'shotv9_1' is not among the 3 videos given (ids are file names without "
                      "extension)"),
    "end before start": ([("shotv0_1", "v0", 8, 3, 0)], " line 3: shot 'shotv0_1' ends before it starts (startframe 8, endframe 3)"),
    "duplicate shot id": ([("shotv0_1", "v0", 0, 5, 0), ("shotv0_2", "v0", 6, 9, 0), ("shotv0_1", "v1", 0, 5, 0)],
                          ": shot id 'shotv0_1' is on lines 3, 5; shot ids must be unique"),
}


@pytest.mark.parametrize("case", sorted(BAD_SEGMENTS))
def test_a_bad_segments_file_is_one_clear_line(case, collection, tmp_path, tiny_model_dir):
    rows, message = BAD_SEGMENTS[case]
    segments = write_segments(tmp_path / "bad.tsv", rows=rows)
    for command in (["frames", "--frames", str(T), "--size", "32"], ["index", "-m", tiny_model_dir]):
        result = CliRunner().invoke(app, [*map(str, command), str(collection[0]), "--segments", str(segments),
                                          "-o", str(tmp_path / "out.h5"), "--workers", "0"])
        assert result.exit_code == 1, result.output
        assert result.stderr == f"error: {segments}{message}\n", result.stderr
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.slow
def test_a_killed_run_resumes_by_shot_and_refuses_another_segments_file(collection, tmp_path, pig_cache):
    videos, segments = collection
    output = tmp_path / "frames.h5"
    args = ["frames", videos, "--segments", segments, "--frames", T, "--size", TINY_IMAGE, "-o", output,
            "--workers", "0"]
    env = {"PIG_BLOCK_VIDEOS": "1"}  # one block per shot
    done = sigkill_after_first_block(args, output, pig_cache, env)
    assert 1 <= done < len(shot_rows()), done

    other = write_segments(tmp_path / "other.tsv", rows=shot_rows()[:-1])
    refused = subprocess.run([sys.executable, "-m", "pigcli", *map(str, args[:3]), other, *map(str, args[4:])],
                             env=pig_env(pig_cache, env), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "holds an unfinished run with other inputs or settings" in refused.stderr

    rerun = subprocess.run([sys.executable, "-m", "pigcli", *map(str, args)], env=pig_env(pig_cache, env),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"of {len(shot_rows())} shots already decoded" in rerun.stderr
    resumed = read_h5(output)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIG_BLOCK_VIDEOS", "1")
        straight = run_frames(collection, tmp_path / "straight.h5")
    assert resumed["attrs"]["fingerprint"] == straight["attrs"]["fingerprint"]
    for name in ("ids", "pixels", "frame_index", "shot_frames", "shot_video"):
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)


@pytest.mark.slow
def test_index_has_one_row_per_shot(collection, tmp_path, tiny_model_dir):
    from pigcli.stages.index import build_index

    output = tmp_path / "index.h5"
    build_index([collection[0]], output, str(tiny_model_dir), device="cpu", workers=0, segments=collection[1])
    with h5py.File(output, "r") as index, h5py.File(tmp_path / "index.feats.h5", "r") as feats:
        ids = [x.decode() for x in index["ids"][:]]
        assert ids == [shot for shot, *_ in shot_rows()]
        assert index["embedding"].shape[0] == len(ids)
        assert (feats["frame_index"][:] >= feats["shot_frames"][:, :1]).all()
        assert (feats["frame_index"][:] <= feats["shot_frames"][:, 1:]).all()
