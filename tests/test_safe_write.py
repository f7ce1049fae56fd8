"""The one rule for every path pig writes (pigcli.safe_write): pig creates or replaces only what it made
itself, never follows a link at its own temporary or lock names, and a failed write leaves the previous
file. Models (init, train's checkpoints), rankings, pictures, stage files and their locks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import pytest
from test_writing import one_error_line, pig

from pigcli.errors import PigError


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def model_hash(folder: Path) -> str:
    return json.loads((folder / "checkpoint.json").read_text())["hash"]


# --- models: pig init, pig train's checkpoints ------------------------------------------------------

def test_init_never_empties_a_folder_that_is_not_a_model(tmp_path) -> None:
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    for extra in ([], ["--force"]):
        code, out, err = pig("init", "--preset", "tiny", "-o", folder, *extra)
        assert code == 1 and out == ""
        assert "exists and is not a pig model folder" in one_error_line(err) and "pig never replaces it (--force neither)" in err
        assert tree(folder) == {"a.txt": b"a", "sub/b.txt": b"b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left


def test_init_into_the_parent_folder_deletes_nothing(tmp_path, monkeypatch) -> None:
    """`pig init --preset tiny -o ..` run from scr/a/b once emptied scr/a, the working folder included."""
    work = tmp_path / "scr" / "a" / "b"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("keep")
    monkeypatch.chdir(work)
    code, _, err = pig("init", "--preset", "tiny", "-o", "..", "--force")
    assert code == 1 and "is not a pig model folder" in one_error_line(err)
    assert tree(tmp_path / "scr") == {"a/b/notes.txt": b"keep"}


def test_init_over_a_live_model_needs_force(tmp_path) -> None:
    model = tmp_path / "m"
    assert pig("init", "--preset", "tiny", "-o", model)[0] == 0
    umask = os.umask(0)
    os.umask(umask)
    assert model.stat().st_mode & 0o777 == 0o777 & ~umask  # staged in a folder of the usual permissions
    first = tree(model)
    code, _, err = pig("init", "--preset", "tiny", "--seed", "1", "-o", model)
    assert code == 1 and f"{model} is a pig model folder already; use --force" in one_error_line(err)
    assert tree(model) == first
    code, out, err = pig("init", "--preset", "tiny", "--seed", "1", "-o", model, "--force")
    assert code == 0, err
    assert out.strip() == str(model) and model_hash(model) != json.loads(first["checkpoint.json"])["hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # nothing aside, nothing staged


def test_init_fills_an_empty_folder(tmp_path) -> None:
    model = tmp_path / "empty"
    model.mkdir()
    code, _, err = pig("init", "--preset", "tiny", "-o", model)
    assert code == 0, err
    assert (model / "checkpoint.json").is_file()


def test_force_never_removes_a_users_file_inside_a_model(tmp_path) -> None:
    model = tmp_path / "m"
    assert pig("init", "--preset", "tiny", "-o", model)[0] == 0
    (model / "notes.txt").write_text("mine")
    code, _, err = pig("init", "--preset", "tiny", "--seed", "1", "-o", model, "--force")
    assert code == 1 and "holds files that pig did not make (notes.txt)" in one_error_line(err)
    assert (model / "notes.txt").read_text() == "mine"


def test_a_runs_checkpoint_is_replaced_but_never_a_users_file_in_it(tmp_path, tiny_model) -> None:
    """pig train saves RUN/last every epoch (no --force needed for its own folder); a user's file
    in RUN/last stops it with one line instead of being removed."""
    from pigcli.model.checkpoint import save_checkpoint

    last = tmp_path / "run" / "last"
    save_checkpoint(tiny_model.model, tiny_model.tokenizer, last, force=None)
    save_checkpoint(tiny_model.model, tiny_model.tokenizer, last, force=None)  # its own: replaced
    (last / "mine.txt").write_text("mine")
    with pytest.raises(PigError, match=r"holds files that pig did not make \(mine.txt\)"):
        save_checkpoint(tiny_model.model, tiny_model.tokenizer, last, force=None)
    assert (last / "mine.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last"]


def test_train_refuses_a_run_folder_whose_last_holds_a_users_file(tmp_path, tiny_extract, tiny_model_dir) -> None:
    """Checked before anything loads: the run would otherwise stop at its first checkpoint."""
    run = tmp_path / "run"
    (run / "last").mkdir(parents=True)
    (run / "last" / "mine.txt").write_text("mine")
    captions = tmp_path / "c.csv"
    captions.write_text("video_id,caption\nalpha,a red square\n")
    code, _, err = pig("train", "--captions", captions, "--features", tiny_extract, "-m", tiny_model_dir,
                       "--phases", 1, "-o", run)
    assert code == 1 and f"{run / 'last'} exists and is not a pig model folder" in one_error_line(err)
    assert tree(run) == {"last/mine.txt": b"mine"}


def test_a_failed_model_write_leaves_the_previous_model(tmp_path, tiny_model, monkeypatch) -> None:
    """A full disk while writing the weights: one line, the old model whole, no staging folder left."""
    import errno

    import safetensors.torch

    from pigcli.model.checkpoint import save_checkpoint

    model = tmp_path / "m"
    save_checkpoint(tiny_model.model, tiny_model.tokenizer, model)
    before = tree(model)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_model", disk_full)
    with pytest.raises(PigError, match=f"cannot write {model}: No space left on device") as caught:
        save_checkpoint(tiny_model.model, tiny_model.tokenizer, model, force=True)
    assert "\n" not in str(caught.value) and "OSError" not in str(caught.value)
    assert tree(model) == before and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# --- results: pig rank -o, pig explain -o -------------------------------------------------------------

@pytest.fixture(scope="module")
def index(tmp_path_factory, tiny_extract, tiny_model_dir) -> Path:
    from pigcli.stages.fuse import fuse

    path = tmp_path_factory.mktemp("safe") / "index.h5"
    fuse(tiny_extract, path, str(tiny_model_dir), method="meanpool", device="cpu")
    return path


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "trec", "html"])
def test_rank_replaces_its_own_earlier_ranking(index, tmp_path, fmt) -> None:
    out = tmp_path / f"r.{fmt}"
    assert pig("rank", index, "-q", "a red square", "--format", fmt, "-o", out)[0] == 0
    first = out.read_bytes()
    code, _, err = pig("rank", index, "-q", "a green box", "-n", 2, "--format", fmt, "-o", out)
    assert code == 0, err
    assert out.read_bytes() != first and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_rank_never_overwrites_a_file_pig_did_not_write(index, tmp_path, tiny_model_dir, video_folder) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    video = tmp_path / "alpha.mp4"
    shutil.copy(video_folder / "alpha.mp4", video)
    other_h5 = tmp_path / "data.h5"
    with h5py.File(other_h5, "w") as handle:
        handle["x"] = [1, 2, 3]
    notes = tmp_path / "notes.tsv"
    notes.write_text("my\tnotes\n")
    before = tree(tmp_path)
    for target in (model / "config.json", video, other_h5, notes):
        code, out, err = pig("rank", index, "-q", "a red square", "-m", model, "-o", target)
        assert code == 1 and out == ""
        assert f"{target} exists and is not a pig result" in one_error_line(err)
    assert tree(tmp_path) == before


def test_explain_never_overwrites_a_picture_pig_did_not_write(tmp_path, tiny_extract) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"holiday" * 10)
    code, _, err = pig("explain", "alpha", "--features", tiny_extract, "-o", photo)
    assert code == 1 and "is not a pig result" in one_error_line(err)
    assert photo.read_bytes() == b"\x89PNG\r\n\x1a\n" + b"holiday" * 10
    out = tmp_path / "explain.png"
    for _ in range(2):  # its own picture is replaced
        code, _, err = pig("explain", "alpha", "--features", tiny_extract, "-o", out)
        assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explain.png", "photo.png"]


def test_a_failed_result_write_leaves_the_previous_file(index, tmp_path, monkeypatch) -> None:
    out = tmp_path / "r.tsv"
    assert pig("rank", index, "-q", "a red square", "-o", out)[0] == 0
    before = out.read_bytes()

    def disk_full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    code, _, err = pig("rank", index, "-q", "a green box", "-o", out)
    monkeypatch.undo()
    assert code == 1 and f"cannot write {out}: No space left on device" in one_error_line(err)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r.tsv"]


# --- links at pig's own temporary and lock names --------------------------------------------------

def test_links_at_pigs_temporary_and_lock_names_are_never_followed(index, tmp_path, tiny_extract) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    ranking = tmp_path / "r.tsv"
    stage = tmp_path / "fused.h5"
    for name in (".r.tsv.tmp", "fused.h5.tmp"):  # the temporary names of earlier versions
        (tmp_path / name).symlink_to(victim)
    assert pig("rank", index, "-q", "a red square", "-o", ranking)[0] == 0
    assert pig("fuse", tiny_extract, "--method", "meanpool", "-o", stage)[0] == 0
    assert victim.read_text() == "precious"
    assert (tmp_path / ".r.tsv.tmp").is_symlink() and (tmp_path / "fused.h5.tmp").is_symlink()

    lock = tmp_path / "other.h5.lock"
    lock.symlink_to(victim)
    code, _, err = pig("fuse", tiny_extract, "--method", "meanpool", "-o", tmp_path / "other.h5")
    assert code == 1 and f"{lock} is a symbolic link" in one_error_line(err)
    assert victim.read_text() == "precious" and not (tmp_path / "other.h5").exists()


def test_a_link_at_a_partial_folder_is_not_followed(tmp_path, tiny_extract) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    (tmp_path / "x.h5.partial.d").symlink_to(elsewhere)
    code, _, err = pig("fuse", tiny_extract, "--method", "meanpool", "-o", tmp_path / "x.h5", "--force")
    assert code == 1 and "is a symbolic link" in one_error_line(err)
    assert tree(elsewhere) == {"keep.txt": b"keep"}


def test_safe_write_temporaries_are_new_files_next_to_the_target(tmp_path) -> None:
    from pigcli import safe_write

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with safe_write.replacing(target) as tmp:
            assert tmp.parent == tmp_path and tmp.read_bytes() == b"" and not tmp.is_symlink()
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]
    safe_write.write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]


def test_discarding_an_unfinished_run_keeps_a_users_file_in_its_folder(tmp_path, tiny_extract) -> None:
    output = tmp_path / "x.h5"
    partial = tmp_path / "x.h5.partial.d"
    partial.mkdir()
    (partial / "manifest.json").write_text('{"fingerprint": "another run", "stage": "fuse"}')
    (partial / "block-000000.h5").write_bytes(b"old block")
    (partial / "mine.txt").write_text("mine")
    code, _, err = pig("fuse", tiny_extract, "--method", "meanpool", "-o", output, "--force")
    assert code == 0, err
    assert tree(partial) == {"mine.txt": b"mine"} and output.is_file()


def test_a_killed_joins_temporary_is_removed_by_the_next_writer(tmp_path, tiny_extract) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    stale, planted, other = (tmp_path / name for name in (".x.h5.0123abcd.tmp", ".x.h5.cafebabe.tmp", ".x.h5.notes.tmp"))
    stale.write_bytes(b"half a join")
    planted.symlink_to(victim)
    other.write_text("mine")
    code, _, err = pig("fuse", tiny_extract, "--method", "meanpool", "-o", tmp_path / "x.h5")
    assert code == 0, err
    assert not stale.exists() and planted.is_symlink() and other.read_text() == "mine"
    assert victim.read_text() == "precious"


def test_a_link_at_the_output_itself_is_refused(tmp_path, tiny_extract) -> None:
    """Even to a stage file: replacing the link would not update what it points to, as the user meant."""
    real = tmp_path / "real.h5"
    shutil.copy(tiny_extract, real)
    (tmp_path / "link.h5").symlink_to(real)
    code, _, err = pig("select", tiny_extract, "-o", tmp_path / "link.h5", "--force")
    assert code == 1 and f"{tmp_path / 'link.h5'} is a symbolic link; pig never replaces it" in one_error_line(err)
    assert (tmp_path / "link.h5").is_symlink()
