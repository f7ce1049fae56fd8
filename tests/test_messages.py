"""What pig says when something goes wrong, and its exit codes (README "Exit codes and output"):
PIG_DEBUG's values, failure summaries with "N more", rerun hints that name the right command,
decoders' own lines kept off stderr, a valid tiny video read by the decoder that can read it."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_broken, write_test_video
from pigcli.cli import app
from pigcli.errors import PigError

CLEAN_ENV = {"PIG_INDEX": None, "PIG_MODEL": None, "PIG_QUIET": None, "PIG_DEBUG": None}


def pig(*args, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})})


def one_error_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# --- PIG_DEBUG -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "false", "False", "no", "off", ""])
def test_pig_debug_off_values_keep_the_one_line(tmp_path, value) -> None:
    result = pig("select", tmp_path / "missing.h5", "-o", tmp_path / "x.h5", env={"PIG_DEBUG": value})
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1
    assert "not found" in one_error_line(result.stderr)


@pytest.mark.parametrize("value", ["1", "true", "yes", "ON"])
def test_pig_debug_on_values_raise_with_the_traceback(tmp_path, value) -> None:
    result = pig("select", tmp_path / "missing.h5", "-o", tmp_path / "x.h5", env={"PIG_DEBUG": value})
    assert isinstance(result.exception, PigError)


# --- failure summaries: the first 5 reasons, then "N more" --------------------------------------------

def test_failure_summary_and_json_say_how_many_more_reasons(tmp_path, tiny_model_dir) -> None:
    """7 garbage files: 7 different messages (each names its file)."""
    folder = tmp_path / "videos"
    for i in range(7):
        write_broken("garbage", folder / f"g{i}.mp4", seed=i)
    write_test_video(folder / "ok.mp4", 12)
    result = pig("extract", folder, "-m", tiny_model_dir, "-o", tmp_path / "f.h5", "--workers", 0)
    assert result.exit_code == 3, result.stderr
    lines = result.stderr.splitlines()
    listed = [line for line in lines if line.startswith("  1 x cannot decode")]
    assert len(listed) == 5
    assert "  ... and 2 more reasons (2 videos; the output file records each one)" in lines

    result = pig("extract", folder, "-m", tiny_model_dir, "-o", tmp_path / "g.h5", "--workers", 0, "--json")
    record = json.loads(result.stdout)
    assert len(record["errors"]) == 5 and record["more_errors"] == 2 and record["failed"] == 7


def test_a_short_summary_says_nothing_more(tmp_path, tiny_model_dir) -> None:
    folder = tmp_path / "videos"
    write_broken("garbage", folder / "g.mp4")
    write_test_video(folder / "ok.mp4", 12)
    result = pig("extract", folder, "-m", tiny_model_dir, "-o", tmp_path / "f.h5", "--workers", 0, "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["more_errors"] == 0 and "more reasons" not in result.stderr


# --- rerun hints name the command that wrote the file -------------------------------------------------

def corrupt_copy(source, target):
    """A copy of an HDF5 file with its superblock overwritten."""
    shutil.copy(source, target)
    with open(target, "r+b") as handle:
        handle.write(b"\0" * 512)
    return target


def test_a_corrupt_file_asks_for_the_command_that_wrote_it(tiny_extract, tmp_path) -> None:
    feats = corrupt_copy(tiny_extract, tmp_path / "feats.h5")
    result = pig("fuse", feats, "--method", "meanpool", "-o", tmp_path / "index.h5")
    err = one_error_line(result.stderr)
    assert result.exit_code == 1 and "is not a readable HDF5 file" in err
    assert "rerun the command that wrote it (this command's input is made by: pig extract" in err
    assert "pig generate" not in err

    index = corrupt_copy(tiny_extract, tmp_path / "index-1.h5")
    result = pig("merge", index, tiny_extract, "-o", tmp_path / "all.h5")
    err = one_error_line(result.stderr)
    assert result.exit_code == 1 and "rerun the command that wrote it" in err and "pig extract" not in err
    assert "each shard's own stage command with --shard I/N" in err


def test_a_missing_input_of_a_meanpool_fuse_names_extract(tmp_path) -> None:
    result = pig("fuse", tmp_path / "feats.h5", "--method", "meanpool", "-o", tmp_path / "index.h5")
    err = one_error_line(result.stderr)
    assert "make it with: pig extract" in err and "pig generate" not in err


# --- decoders ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["0", "1"])
def test_decoders_own_lines_stay_off_stderr(run_pig, tmp_path, tiny_model_dir, workers) -> None:
    folder = tmp_path / "videos"
    for kind in ("garbage", "truncated"):
        write_broken(kind, folder / f"{kind}.mp4")
    write_test_video(folder / "ok.mp4", 12)
    code, out, err = run_pig(["extract", folder, "-m", tiny_model_dir, "-o", tmp_path / "f.h5", "--workers", workers])
    assert code == 3, err
    assert len(err.splitlines()) == 4, err
    assert all(line.startswith(("wrote ", "2 videos failed:", "  1 x cannot decode: ")) for line in err.splitlines())
    assert "moov atom" not in err and "video_reader.cc" not in err and "[Errno" not in err


def test_a_valid_2x2_video_is_read(tmp_path, tiny_model_dir) -> None:
    """decord cannot copy 2x2 frames (DECORDArrayCopyFromTo: The size must exactly match); with the
    default decoder, PyAV reads it."""
    from pigcli.toy.videowrite import write_video

    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "tiny.mp4", np.random.default_rng(0).integers(0, 256, (12, 2, 2, 3), dtype=np.uint8))
    result = pig("extract", folder, "-m", tiny_model_dir, "-o", tmp_path / "f.h5", "--workers", 0)
    assert result.exit_code == 0, result.stderr
    with h5py.File(tmp_path / "f.h5", "r") as handle:
        assert [s.decode() if isinstance(s, bytes) else s for s in handle["status"][:]] == ["ok"]
    result = pig("frames", folder, "--frames", 4, "--size", 16, "-o", tmp_path / "p.h5", "--workers", 0)
    assert result.exit_code == 0, result.stderr


# --- exit codes ----------------------------------------------------------------------------------------

def test_exit_codes(tmp_path, tiny_model_dir) -> None:
    """0 ok, 1 fatal (one line), 2 usage error, 3 finished but some inputs failed (README)."""
    model = tmp_path / "m"
    assert pig("init", "--preset", "tiny", "-o", model).exit_code == 0
    fatal = pig("init", "--preset", "tiny", "-o", model)
    assert fatal.exit_code == 1 and "use --force" in one_error_line(fatal.stderr)
    assert pig("init", "-o", tmp_path / "n").exit_code == 2  # neither --from nor --preset
    assert pig("select", tmp_path / "f.h5", "-k", "many", "-o", tmp_path / "s.h5").exit_code == 2  # click's own
    folder = tmp_path / "videos"
    write_broken("garbage", folder / "g.mp4")
    write_test_video(folder / "ok.mp4", 12)
    some_failed = pig("extract", folder, "-m", tiny_model_dir, "-o", tmp_path / "f.h5", "--workers", 0)
    assert some_failed.exit_code == 3 and some_failed.stdout.strip() == str(tmp_path / "f.h5")


# --- pig init on a full disk -----------------------------------------------------------------------------

def test_init_on_a_full_disk_is_one_plain_line_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    import errno

    import safetensors.torch

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_model", disk_full)
    model = tmp_path / "m"
    result = pig("init", "--preset", "tiny", "-o", model)
    err = one_error_line(result.stderr)
    assert result.exit_code == 1 and err == f"error: cannot write {model}: No space left on device; free some space " \
                                           "or choose another -o\n"
    assert list(tmp_path.iterdir()) == []  # no m, no m.partial, no tokenizer folder
