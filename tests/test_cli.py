"""The command line: help, --version, choices, exit codes, one-line errors, the output contract (stage
commands print their output path, or one JSON object with --json), `--rerank` without a number,
`pig init` and `pig inspect`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from conftest import TINY_DIM, TINY_L, TINY_T, write_broken, write_test_video
from pigcli import __version__
from pigcli.cli import app

FOUNDATION_COMMANDS = ("init", "extract", "inspect")
COMMANDS = ("init", "extract", "frames", "segments", "select", "generate", "fuse", "embed-text", "merge", "index", "rank", "eval",
            "tune-rerank", "index-ann", "serve", "train", "inspect", "explain", "demo", "toy make")


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


def test_version(run_pig) -> None:
    code, out, err = run_pig(["--version"])
    assert (code, out, err) == (0, f"pig {__version__}\n", "")


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_has_an_example(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout
    assert f"pig {command} " in result.stdout  # a runnable example line


def test_init_preset_prints_its_path(tmp_path) -> None:
    from pigcli.model.checkpoint import load_checkpoint

    result = CliRunner().invoke(app, ["init", "--preset", "tiny", "--frames", "4", "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'm'}\n"
    assert load_checkpoint(tmp_path / "m").model.config.num_frames == 4


def test_init_json(tmp_path) -> None:
    from pigcli.model.checkpoint import load_checkpoint

    result = CliRunner().invoke(app, ["init", "--preset", "tiny", "--json", "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    identity = load_checkpoint(tmp_path / "m").identity
    assert info == {"path": str(tmp_path / "m"), "name": identity.name, "hash": identity.hash}


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
    loaded = load_checkpoint(result.stdout.strip())
    theirs = clip.state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in loaded.model.clip.state_dict().items())
    assert loaded.model.config.source == str(folder)


def test_init_from_a_pig_folder_starts_new_heads_on_its_trained_clip(tmp_path, tiny_model_dir) -> None:
    """`pig init --from PIG_FOLDER`: the CLIP (and the ViP backbone when T matches) of a trained model,
    a generator copied from its text encoder, and fresh fusioner and EERCF head."""
    import torch

    from pigcli.model.checkpoint import load_checkpoint, save_checkpoint
    from pigcli.model.fusioner import Fusioner

    trained = load_checkpoint(tiny_model_dir)
    with torch.no_grad():  # "train" it: every weight moves, so copies can be told from fresh starts
        for param in trained.model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    source = save_checkpoint(trained.model, trained.tokenizer, tmp_path / "trained")
    frames = trained.model.config.num_frames
    result = CliRunner().invoke(app, ["init", "--from", str(source), "--frames", str(frames), "-k", "4",
                                      "-o", str(tmp_path / "start")])
    assert result.exit_code == 0, result.stderr
    new = load_checkpoint(result.stdout.strip()).model
    old = trained.model
    for key, value in old.clip.state_dict().items():
        assert torch.equal(new.clip.state_dict()[key], value), key
    assert torch.equal(new.backbone.temporal_embedding, old.backbone.temporal_embedding)
    text_layers, generator_layers = old.clip.text_model.encoder.layers.state_dict(), new.generator.layers.state_dict()
    assert all(torch.equal(generator_layers[key], value) for key, value in text_layers.items())  # a copy of the text encoder
    assert not torch.equal(new.generator.layers.state_dict()[next(iter(text_layers))],
                           old.generator.layers.state_dict()[next(iter(text_layers))])  # not the old generator
    assert torch.equal(new.eercf.w_g, torch.eye(new.embed_dim))
    fresh = Fusioner(new.embed_dim, new.config.fusion_heads, new.config.fusion_dropout).state_dict()
    assert all(torch.equal(value, fresh[key]) for key, value in new.fusioner.state_dict().items())  # identity start
    assert new.config.select_k == 4 and new.config.source.startswith("pig:")


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


# --- choices ------------------------------------------------------------------------------------------

# (command line before the option, option, a bad value, the choices --help must list)
CHOICES = [
    (["init", "-o", "m"], "--preset", "huge", "tiny|toy|b32"),
    (["extract", "v.mp4", "-o", "x.h5"], "--precision", "fp8", "auto|fp32|bf16|fp16"),
    (["extract", "v.mp4", "-o", "x.h5"], "--backbone", "cnn", "vip|frames"),
    (["extract", "v.mp4", "-o", "x.h5"], "--decoder", "ffmpeg", "auto|decord|pyav|torchcodec"),
    (["index", "v.mp4"], "--decoder", "ffmpeg", "auto|decord|pyav|torchcodec"),
    (["fuse", "gen.h5", "-o", "x.h5"], "--method", "attention", "pig|meanpool|eercf"),
    (["index", "v.mp4"], "--method", "attention", "pig|meanpool|eercf"),
    (["rank", "index.h5", "q.h5"], "--method", "faiss", "index|xpool"),
    (["rank", "index.h5", "q.h5"], "--format", "csv", "tsv|jsonl|trec"),
    (["eval", "index.h5", "-c", "c.csv"], "--method", "faiss", "index|xpool"),
    (["train", "--captions", "c.csv", "-o", "run"], "--method", "clip", "pig|meanpool|xpool|eercf"),
    (["train", "--captions", "c.csv", "-o", "run"], "--precision", "fp8", "auto|fp32|bf16|fp16"),
]


@pytest.mark.parametrize("before, option, bad, choices", CHOICES)
def test_choices_are_listed_and_checked(tmp_path, before, option, bad, choices) -> None:
    runner = CliRunner()
    command = before[0]
    help_text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
    assert choices in help_text, f"{command} --help does not list {choices}"
    result = runner.invoke(app, before + [option, bad], env={"COLUMNS": "200"})
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert option in result.stderr and bad in result.stderr
    assert result.stdout == ""


# --- one meaning per flag: -n is rank's results per query, -k the ITS tokens --------------------------

def parsed(args: list[str]) -> dict:
    """The parameters click parses from `pig ARGS` (nothing runs)."""
    import typer.main

    command = typer.main.get_command(app)
    sub = command.commands[args[0]]
    with sub.make_context(args[0], list(args[1:])) as ctx:
        return ctx.params


def test_rank_top_is_dash_n() -> None:
    assert parsed(["rank", "index.h5", "q.h5", "-n", "3"])["top"] == 3
    assert parsed(["rank", "index.h5", "q.h5", "--top", "4"])["top"] == 4
    assert parsed(["rank", "index.h5", "q.h5"])["top"] == 10
    result = CliRunner().invoke(app, ["rank", "index.h5", "q.h5", "-k", "3"])
    assert result.exit_code == 2 and "-k" in result.stderr


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_rank_empty_query_is_a_usage_error(text: str, tmp_path) -> None:
    # before any index or model is looked for: the mistake is the argument
    result = CliRunner().invoke(app, ["rank", str(tmp_path / "index.h5"), "-q", "a dog", "-q", text])
    assert result.exit_code == 2, result.output
    assert "error: --query/-q is empty: give the text to search for" in result.stderr
    assert result.stdout == ""


def test_rank_query_file_and_query_do_not_combine(tmp_path) -> None:
    for extra in (["-q", "a dog"], ["--queries", "queries.txt"]):
        result = CliRunner().invoke(app, ["rank", str(tmp_path / "index.h5"), str(tmp_path / "q.h5"), *extra])
        assert result.exit_code == 2, result.output
        assert "and --query/--queries do not combine: give one" in result.stderr
        assert str(tmp_path / "q.h5") in result.stderr


@pytest.mark.parametrize("command", ["init", "select", "index"])
def test_dash_k_is_its_tokens(command: str) -> None:
    before = {"init": ["init", "-o", "m"], "select": ["select", "feats.h5", "-o", "sel.h5"],
              "index": ["index", "v.mp4"]}[command]
    assert parsed(before + ["-k", "8"])["k"] == 8


# --- --rerank: with or without a number ---------------------------------------------------------------

@pytest.mark.parametrize("command", [["rank", "index.h5", "q.h5"], ["eval", "index.h5", "-c", "c.csv"]])
@pytest.mark.parametrize("args, want", [
    ([], 0),
    (["--rerank"], "auto"),                 # the model's tuned K (rerank.json), else 50
    (["--rerank", "auto"], "auto"),
    (["--rerank", "20"], 20),
    (["--rerank=20"], 20),
    (["--rerank", "--w-fw", "0.5"], "auto"),  # followed by another option
    (["--rerank", "-1"], -1),               # a negative number is a value (refused by the command)
    (["--rerank", "0"], 0),
])
def test_rerank_forms(command, args, want) -> None:
    assert parsed(command + args)["rerank"] == want
    if command[0] == "rank":
        # first on the line, followed by the positional arguments
        assert parsed(["rank"] + args + command[1:])["rerank"] == want


def test_fill_bare_values() -> None:
    from pigcli.cli.command import fill_bare_values

    bare = {"--rerank": "auto"}
    assert fill_bare_values(["a", "--rerank"], bare) == ["a", "--rerank", "auto"]
    assert fill_bare_values(["--rerank", "a"], bare) == ["--rerank", "auto", "a"]
    assert fill_bare_values(["--rerank", "auto", "a"], bare) == ["--rerank", "auto", "a"]
    assert fill_bare_values(["--rerank", "7", "a"], bare) == ["--rerank", "7", "a"]
    assert fill_bare_values(["--rerank=7"], bare) == ["--rerank=7"]
    assert fill_bare_values(["--", "--rerank"], bare) == ["--", "--rerank"]


# --- the output contract: stage commands print their output path, or one JSON object -----------------

STAGE_KEYS = {"output", "total", "processed", "failed", "skipped", "resumed_rows", "errors", "more_errors", "timings"}


def test_stage_commands_print_their_output_or_json(tmp_path, tiny_model_dir) -> None:
    """Each stage once with --json (the object, written), then again without (the path, up to date).
    One video of three is broken: extract and index exit 3, with the path or object printed all the same."""
    runner = CliRunner()

    def pig(*args, input=None):
        result = runner.invoke(app, [str(a) for a in args], input=input)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result.exit_code, result.stdout, result.stderr

    videos = tmp_path / "videos"
    write_test_video(videos / "a.mp4", 16, seed=1)
    write_test_video(videos / "b.mp4", 16, seed=2)
    write_broken("garbage", videos / "c.mp4")
    model, cpu = str(tiny_model_dir), ("--device", "cpu")
    files = {name: tmp_path / f"{name}.h5" for name in ("feats", "frames", "sel", "gen", "index", "q")}
    steps = [
        ("extract", [videos, "-m", model, "--workers", 0, *cpu], files["feats"], 3, 1),
        ("frames", [videos, "-m", model, "--workers", 0], files["frames"], 3, 1),
        ("select", [files["feats"], "-k", 8], files["sel"], 2, 0),
        ("generate", [files["sel"], *cpu], files["gen"], 2, 0),
        ("fuse", [files["gen"], *cpu], files["index"], 2, 0),
        ("embed-text", ["-", "-m", model, *cpu], files["q"], 2, 0),
    ]
    for command, args, output, total, failed in steps:
        code, out, err = pig(command, *args, "-o", output, "--json", input="a red square\nblue\n")
        assert code == (3 if failed else 0), (command, err)
        record = json.loads(out)
        assert set(record) == STAGE_KEYS, command
        assert record["output"] == str(output) and output.is_file()
        assert (record["total"], record["failed"], record["skipped"]) == (total, failed, False), command
        assert record["processed"] == total and record["resumed_rows"] == 0
        assert sum(record["errors"].values()) == failed and "wall" in record["timings"]
        code, out, err = pig(command, *args, "-o", output, input="a red square\nblue\n")
        assert code == (3 if failed else 0), (command, err)
        assert out == f"{output}\n" and "up to date" in err, command  # logs stay on stderr

    index = tmp_path / "idx.h5"
    code, out, err = pig("index", videos, "-m", model, "--workers", 0, *cpu, "-k", 8, "-o", index, "--json")
    assert code == 3, err
    record = json.loads(out)
    assert set(record) == STAGE_KEYS | {"stages"}
    assert record["output"] == str(index) and (record["total"], record["failed"]) == (3, 1)
    assert set(record["stages"]) == set(record["timings"]) == {"extract", "select", "generate", "fuse"}
    assert record["stages"]["fuse"]["output"] == str(index) and record["stages"]["select"]["total"] == 2
    assert "1 videos failed" in err
    code, out, err = pig("index", videos, "-m", model, "--workers", 0, *cpu, "-k", 8, "-o", index)
    assert code == 3 and out == f"{index}\n"
