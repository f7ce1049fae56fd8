"""The command line: help, exit codes, one-line errors, `pig init` and `pig inspect`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from conftest import TINY_DIM, TINY_L, TINY_T, write_broken, write_test_video
from pigcli.cli import app

FOUNDATION_COMMANDS = ("init", "extract", "inspect")


def test_help_lists_the_commands_and_is_fast(run_pig) -> None:
    start = time.monotonic()
    code, out, err = run_pig(["--help"])
    elapsed = time.monotonic() - start
    assert code == 0, err
    for command in FOUNDATION_COMMANDS:
        assert f" {command} " in out
    # what makes --help fast: no heavy import when the CLI module loads (a wall-clock bound alone
    # flakes on a loaded machine, so it is generous and the import check is exact)
    assert elapsed < 5.0, f"pig --help took {elapsed:.2f}s: a heavy import at module level?"
    heavy = subprocess.run([sys.executable, "-c", "import sys, pigcli.cli; "
                            "print(sorted({'torch', 'transformers', 'h5py'} & set(sys.modules)))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert heavy == "[]", f"pigcli.cli imports {heavy} at module level"


def test_no_arguments_shows_help(run_pig) -> None:
    code, out, err = run_pig([])
    assert code in (0, 2) and "Usage" in out + err  # Typer/click: no_args_is_help


@pytest.mark.parametrize("command", FOUNDATION_COMMANDS)
def test_command_help_has_an_example(run_pig, command: str) -> None:
    code, out, err = run_pig([command, "--help"], env={"COLUMNS": "120"})
    assert code == 0, err
    assert "Example" in out
    assert f"pig {command} " in out  # a runnable example line


def test_init_preset_prints_path_and_hash(tmp_path) -> None:
    from pigcli.model.checkpoint import load_checkpoint

    result = CliRunner().invoke(app, ["init", "--preset", "tiny", "--frames", "4", "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.stderr
    path, digest = result.stdout.strip().split("\t")
    loaded = load_checkpoint(path)
    assert loaded.identity.hash == digest and loaded.model.config.num_frames == 4


def test_init_from_a_clip_folder_keeps_its_weights(tmp_path) -> None:
    import torch

    from pigcli.model.checkpoint import load_checkpoint
    from pigcli.model.factory import random_clip
    from pigcli.model.clip_compat import write_byte_tokenizer

    folder = tmp_path / "clip"
    clip = random_clip("tiny", seed=3)
    clip.save_pretrained(folder)
    write_byte_tokenizer(folder)
    result = CliRunner().invoke(app, ["init", "--from", str(folder), "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.stderr
    loaded = load_checkpoint(result.stdout.strip().split("\t")[0])
    theirs = clip.state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in loaded.model.clip.state_dict().items())
    assert loaded.model.config.source == str(folder)


def test_init_from_an_unreachable_hub_fails_with_one_line(run_pig, tmp_path) -> None:
    """A hub host that does not resolve: only the local hub cache is tried. The hub client's retries
    (~30 s) would print 'Retrying in ...' lines; the error must be the only line."""
    code, out, err = run_pig(["init", "--from", "openai/clip-vit-base-patch32", "-o", tmp_path / "m"],
                             env={"HF_ENDPOINT": "https://hub.invalid", "HF_HOME": str(tmp_path / "hf")})
    assert code == 1 and out == ""
    assert err.startswith("error: cannot load CLIP 'openai/clip-vit-base-patch32'") and err.count("\n") == 1
    assert "pig init --preset tiny" in err and not (tmp_path / "m").exists()


def test_hub_resolvable_honours_offline_settings(monkeypatch) -> None:
    from pigcli.model.factory import hub_resolvable

    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # .invalid never resolves (RFC 2606)
    assert not hub_resolvable()
    monkeypatch.setenv("HF_ENDPOINT", "http://localhost:1")
    assert hub_resolvable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_resolvable()


def test_init_needs_exactly_one_source(tmp_path) -> None:
    result = CliRunner().invoke(app, ["init", "-o", str(tmp_path / "m")])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["init", "--preset", "tiny", "--from", "x", "-o", str(tmp_path / "m")])
    assert result.exit_code == 2


def test_unknown_model_path_is_one_line(tmp_path, video_folder) -> None:
    result = CliRunner().invoke(app, ["extract", str(video_folder / "alpha.mp4"), "-m", str(tmp_path / "no-model"),
                                      "-o", str(tmp_path / "x.h5"), "--workers", "0"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "no-model" in result.stderr and "pig init" in result.stderr
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("option", [["--patches", "foo"], ["--patches", "top-0"], ["--backbone", "cnn"],
                                    ["--decoder", "ffmpeg"], ["--precision", "fp8"], ["--workers", "two"]])
def test_bad_option_value_is_a_usage_error(tmp_path, video_folder, option) -> None:
    result = CliRunner().invoke(app, ["extract", str(video_folder / "alpha.mp4"), "-o", str(tmp_path / "x.h5"),
                                      "-m", str(tmp_path), *option])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert option[0] in result.stderr or option[1] in result.stderr
    assert not (tmp_path / "x.h5").exists()


def test_missing_input_is_fatal(tmp_path) -> None:
    result = CliRunner().invoke(app, ["extract", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "x.h5")])
    assert result.exit_code == 1 and "nothing-here" in result.stderr


# --- pig inspect --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_extract(tmp_path_factory, tiny_model_dir):
    """An extract file of 2 videos, one of them broken (audio only)."""
    from pigcli.stages.extract import ExtractSettings, extract

    folder = tmp_path_factory.mktemp("inspect_videos")
    write_test_video(folder / "good.mp4", 12)
    write_broken("audio", folder / "sound.mp4")
    output = folder.parent / (folder.name + ".h5")
    extract([folder], output, str(tiny_model_dir), settings=ExtractSettings(patches="top-4"), device="cpu",
            workers=0)
    return output


def test_inspect_extract_file(run_pig, small_extract) -> None:
    code, out, err = run_pig(["inspect", small_extract])
    assert code == 0, err
    assert "stage: extract" in out and "schema: pig/1" in out
    datasets = out.split("datasets:")[1]
    for name, shape in [("ids", (2,)), ("video", (2, TINY_DIM)), ("patches", (2, 4, TINY_DIM)),
                        ("its_score", (2, TINY_T * TINY_L))]:
        assert any(line.split()[:1] == [name] and str(shape) in line for line in datasets.splitlines()), name
    assert "failures: 1" in out and "1 x no video stream (audio-only or not a video)" in out
    assert '"patches": "top-4"' in out  # settings


def test_inspect_json(run_pig, small_extract, tiny_model) -> None:
    code, out, err = run_pig(["inspect", small_extract, "--json"])
    assert code == 0, err
    info = json.loads(out)
    assert info["stage"] == "extract" and info["settings"]["patches"] == "top-4"
    assert info["model"]["hash"] == tiny_model.identity.hash
    assert info["datasets"]["frames"] == {"shape": [2, TINY_T, TINY_DIM], "dtype": "float32"}
    assert info["failures"] == {"no video stream (audio-only or not a video)": 1}


def test_inspect_model_folder(tiny_model_dir, tiny_model) -> None:
    result = CliRunner().invoke(app, ["inspect", str(tiny_model_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["hash"] == tiny_model.identity.hash
    assert info["clip"]["vision"]["image_size"] == 32 and info["clip"]["vision"]["patch_size"] == 8


@pytest.mark.parametrize("make", ["missing", "not_hdf5"])
def test_inspect_bad_path_is_one_line(tmp_path, make: str) -> None:
    path = tmp_path / "thing.h5"
    if make == "not_hdf5":
        path.write_text("hello")
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
