"""How stage outputs are written: one writer per output, full disks, files pig must not overwrite,
`pig index` and costly stage files, resuming a killed --force run (pigcli.store.StageWriter)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from conftest import VIDEO_FOLDER_SPECS, pig_env, sigkill_after_first_block, write_test_video
from pigcli.cli import app

CLEAN_ENV = {"PIG_INDEX": None, "PIG_MODEL": None, "PIG_QUIET": None, "PIG_DEBUG": None}


def pig(*args, env: dict | None = None) -> tuple[int, str, str]:
    """`pig ARGS` in-process -> (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def one_error_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def leftovers(folder: Path) -> list[str]:
    """Temporary files a failed run must not leave behind."""
    return sorted(str(p.relative_to(folder)) for pattern in ("*.tmp", "*/.block-*.tmp", "*.lock")
                  for p in folder.glob(pattern))


# --- 1. one writer per output -----------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pigcli.store import Provenance, StageWriter
    writer = StageWriter(sys.argv[1], Provenance("select", {"k": 1}))
    print("ready", flush=True)
    time.sleep(600)
""")


def start_holder(output: Path, cache: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(output)], env=pig_env(cache),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_writer_is_refused_and_a_killed_one_blocks_nothing(tiny_extract, tmp_path, pig_cache) -> None:
    output = tmp_path / "x.h5"
    holder = start_holder(output, pig_cache)
    try:
        code, out, err = pig("select", tiny_extract, "-k", 4, "-o", output)
        assert code == 1
        one_error_line(err)
        assert f"{output} is being written by another pig process (pid {holder.pid}, started" in err
        assert "wait for it or choose another -o" in err
        assert not output.exists() and not list(Path(str(output) + ".partial.d").glob("block-*"))
    finally:
        holder.send_signal(signal.SIGKILL)  # as kill -9 would: the kernel releases the lock
        holder.wait()
    # the killed holder's unfinished run (other settings) is discarded with --force; its lock is gone
    code, out, err = pig("select", tiny_extract, "-k", 4, "-o", output, "--force")
    assert code == 0, err
    with h5py.File(output, "r") as handle:
        assert handle["selected_index"].shape == (len(VIDEO_FOLDER_SPECS), 4)
    assert leftovers(tmp_path) == []  # the lock file goes with a finished run


def test_two_fuse_runs_on_one_output_never_mix(tiny_extract, tmp_path, pig_cache) -> None:
    """Two real `pig fuse` processes started together: one writes, the other is refused or finds the
    output up to date; the file is whole."""
    output = tmp_path / "x.h5"
    args = [sys.executable, "-m", "pigcli", "fuse", str(tiny_extract), "--method", "meanpool", "-o", str(output)]
    procs = [subprocess.Popen(args, env=pig_env(pig_cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for proc in procs:
        proc.stdout.close(), proc.stderr.close()
    assert sorted(code for code, _ in results) in ([0, 0], [0, 1]), results
    for code, err in results:
        assert "Traceback" not in err and "BlockingIOError" not in err
        if code == 1:
            assert "is being written by another pig process" in one_error_line(err)
    with h5py.File(output, "r") as handle:
        assert handle["embedding"].shape[0] == len(VIDEO_FOLDER_SPECS)
    assert leftovers(tmp_path) == [] and not Path(str(output) + ".partial.d").exists()


# --- 2. a full disk -----------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (needs root); unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_leaving(folder: Path, free_bytes: int) -> Path:
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, shutil.disk_usage(folder).free - free_bytes))
    return filler


QUERIES = "".join(f"query number {i} about a red square\n" for i in range(2500))  # 3 blocks of <= 1024


def run_module(args: list, cache: Path, prelude: str = "") -> subprocess.CompletedProcess:
    """`python -m pigcli ARGS`, with `prelude` run first (to switch off a check)."""
    code = f"{prelude}\nfrom pigcli.cli import app\napp(prog_name='pig')"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=pig_env(cache), capture_output=True,
                          text=True, timeout=300)


def test_disk_full_in_embed_text_is_one_line_and_resumable(small_disk, tmp_path, tiny_model_dir, pig_cache) -> None:
    queries = tmp_path / "queries.txt"
    queries.write_text(QUERIES)
    output = small_disk / "q.h5"
    filler = fill_leaving(small_disk, 450 * 1024)  # one block (~270 KB) fits, two do not
    args = ["embed-text", queries, "-m", tiny_model_dir, "-o", output, "--device", "cpu"]
    run = run_module(args, pig_cache)
    assert run.returncode == 1, run.stderr
    assert one_error_line(run.stderr).startswith(f"error: no space left on device writing {output}.partial.d/")
    assert not output.exists() and leftovers(small_disk) == []
    partial = Path(str(output) + ".partial.d")
    assert sorted(p.name for p in partial.glob("block-*")) == ["block-000000.h5"]  # finished block kept

    filler.unlink()
    run = run_module(args, pig_cache)
    assert run.returncode == 0, run.stderr
    assert "resuming: 1024 of 2500 queries already done" in run.stderr
    with h5py.File(output, "r") as handle:
        assert handle["embedding"].shape[0] == 2500


def test_disk_full_during_a_block_write_is_caught(small_disk, tmp_path, tiny_model_dir, pig_cache) -> None:
    """The free-space check switched off: the write itself fails with ENOSPC; still one line, exit 1,
    the half-written block's temporary file removed, the finished blocks kept."""
    queries = tmp_path / "queries.txt"
    queries.write_text(QUERIES)
    output = small_disk / "q.h5"
    fill_leaving(small_disk, 450 * 1024)
    run = run_module(["embed-text", queries, "-m", tiny_model_dir, "-o", output, "--device", "cpu"], pig_cache,
                     prelude="import pigcli.store as s; s.require_free_space = lambda *a: None")
    assert run.returncode == 1, run.stderr
    assert one_error_line(run.stderr).startswith("error: no space left on device writing")
    assert not output.exists() and leftovers(small_disk) == []
    assert [p.name for p in Path(str(output) + ".partial.d").glob("block-*")] == ["block-000000.h5"]


def test_disk_full_in_extract_keeps_the_blocks(small_disk, video_folder, tiny_model_dir, pig_cache) -> None:
    """The blocks fit in 2 MB, the joined file (whole 256-row chunks of patch tokens) does not."""
    output = small_disk / "feats.h5"
    run = run_module(["extract", video_folder, "-m", tiny_model_dir, "-o", output, "--device", "cpu",
                      "--workers", "0"], pig_cache)
    assert run.returncode == 1, run.stderr
    assert one_error_line(run.stderr).startswith(f"error: no space left on device writing {output}")
    assert not output.exists() and leftovers(small_disk) == []
    assert [p.name for p in Path(str(output) + ".partial.d").glob("block-*")] == ["block-000000.h5"]


def test_disk_full_during_the_final_join_is_one_line_and_resumable(small_disk, video_folder, tiny_model_dir,
                                                                   pig_cache) -> None:
    """The free-space check switched off, the disk fills while the blocks are joined: HDF5 used to
    crash (segfault, rc 139) with OUT.tmp and OUT.lock left. Now: one line, exit 1, no temporary, the
    blocks kept; with the space back, the rerun only joins them."""
    output = small_disk / "feats.h5"
    args = ["extract", video_folder, "-m", tiny_model_dir, "-o", output, "--device", "cpu", "--workers", "0"]
    run = run_module(args, pig_cache, prelude="import pigcli.store as s; s.require_free_space = lambda *a: None")
    assert run.returncode == 1, run.stderr
    assert one_error_line(run.stderr).startswith(f"error: no space left on device writing {output}")
    assert not output.exists() and leftovers(small_disk) == [] and not list(small_disk.glob(".*"))
    assert [p.name for p in Path(str(output) + ".partial.d").glob("block-*")] == ["block-000000.h5"]

    subprocess.run(["mount", "-o", "remount,size=16M", str(small_disk)], check=True)
    run = run_module(args, pig_cache)
    assert run.returncode == 0, run.stderr
    assert "already" in run.stderr  # resumed: nothing decoded again
    with h5py.File(output, "r") as handle:
        assert handle["ids"].shape[0] == len(VIDEO_FOLDER_SPECS)


def test_any_failure_of_the_final_join_is_one_line_and_keeps_the_blocks(tiny_extract, tmp_path, monkeypatch) -> None:
    """An I/O error while the blocks are joined (no real disk needed: the copy is made to fail)."""
    import pigcli.store as store

    output = tmp_path / "fused.h5"
    append = store._append

    def failing_append(out, name, *args, **kwargs):
        if name == "embedding":
            raise OSError(5, "Input/output error")
        return append(out, name, *args, **kwargs)

    monkeypatch.setattr(store, "_append", failing_append)
    code, _, err = pig("fuse", tiny_extract, "--method", "meanpool", "-o", output)
    assert code == 1
    assert one_error_line(err).startswith(f"error: cannot write {output} (")
    assert "Input/output error" in err and "the finished blocks are kept" in err and "OSError" not in err
    assert not output.exists() and leftovers(tmp_path) == [] and not list(tmp_path.glob(".*"))
    assert [p.name for p in Path(str(output) + ".partial.d").glob("block-*")] == ["block-000000.h5"]

    monkeypatch.setattr(store, "_append", append)
    code, _, err = pig("fuse", tiny_extract, "--method", "meanpool", "-o", output)
    assert code == 0, err
    assert "resuming" in err and not Path(str(output) + ".partial.d").exists()


def test_a_disk_that_fills_before_the_join_reserves_its_space_is_one_line(tiny_extract, tmp_path, monkeypatch) -> None:
    """The free-space check passes, then another process takes the space: the reservation of the
    joined file's blocks fails with ENOSPC before HDF5 writes anything."""
    import errno

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    output = tmp_path / "fused.h5"
    code, _, err = pig("fuse", tiny_extract, "--method", "meanpool", "-o", output)
    assert code == 1 and one_error_line(err).startswith(f"error: no space left on device writing {output}")
    assert not output.exists() and leftovers(tmp_path) == [] and not list(tmp_path.glob(".*"))
    assert [p.name for p in Path(str(output) + ".partial.d").glob("block-*")] == ["block-000000.h5"]


# --- 6. never over a file that is not pig's, nor over an input ----------------------------------------

def test_output_over_a_query_file_is_refused(tmp_path, tiny_model_dir) -> None:
    queries = tmp_path / "queries.txt"
    queries.write_text("a red square\na green box\n")
    for extra in ([], ["--force"]):
        code, _, err = pig("embed-text", queries, "-m", tiny_model_dir, "-o", queries, "--device", "cpu", *extra)
        assert code == 1 and "is an input of this command" in one_error_line(err)
        assert queries.read_text() == "a red square\na green box\n"
    notes = tmp_path / "notes.h5"
    notes.write_text("my notes")
    code, _, err = pig("embed-text", queries, "-m", tiny_model_dir, "-o", notes, "--device", "cpu", "--force")
    assert code == 1 and "is not a pig stage file" in one_error_line(err)
    assert notes.read_text() == "my notes"


def test_output_over_a_video_is_refused(tmp_path, video_folder, tiny_model_dir) -> None:
    clip = tmp_path / "clip.mp4"
    shutil.copy(video_folder / "alpha.mp4", clip)
    other = tmp_path / "other.mp4"
    shutil.copy(video_folder / "bravo.mkv", other)
    before = clip.read_bytes(), other.read_bytes()
    code, _, err = pig("extract", clip, "-m", tiny_model_dir, "-o", clip, "--force", "--workers", 0)
    assert code == 1 and "is an input of this command" in one_error_line(err)
    code, _, err = pig("extract", clip, "-m", tiny_model_dir, "-o", other, "--force", "--workers", 0)
    assert code == 1 and "is not a pig stage file" in one_error_line(err)
    code, _, err = pig("frames", clip, "-m", tiny_model_dir, "-o", other, "--workers", 0)
    assert code == 1 and "is not a pig stage file" in one_error_line(err)
    assert (clip.read_bytes(), other.read_bytes()) == before
    assert leftovers(tmp_path) == [] and not list(tmp_path.glob("*.partial.d"))


def test_output_over_its_own_input_is_refused(tiny_extract, tmp_path) -> None:
    feats = tmp_path / "feats.h5"
    shutil.copy(tiny_extract, feats)
    stamp = feats.stat().st_mtime_ns
    code, _, err = pig("select", feats, "-k", 4, "-o", feats, "--force")
    assert code == 1 and f"{feats} is an input of this command" in one_error_line(err)
    code, _, err = pig("fuse", feats, "--method", "meanpool", "-o", tmp_path / "." / "feats.h5", "--force")
    assert code == 1 and "is an input of this command" in one_error_line(err)
    assert feats.stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.partial.d")) and leftovers(tmp_path) == []


# --- 7. pig index and a costly stage file made from other inputs -------------------------------------

def test_index_refuses_a_features_file_of_other_videos(tmp_path, video_folder, tiny_model_dir) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, names in ((first, ["alpha.mp4", "charlie.avi"]), (second, ["echo.mov"])):
        folder.mkdir()
        for name in names:
            shutil.copy(video_folder / name, folder / name)
    index = tmp_path / "idx.h5"
    feats = tmp_path / "idx.feats.h5"
    code, _, err = pig("extract", first, "-m", tiny_model_dir, "-o", feats, "--workers", 0, "--patches", "top-16")
    assert code == 0, err
    stamp = feats.stat().st_mtime_ns
    code, _, err = pig("index", second, "-m", tiny_model_dir, "-o", index, "--workers", 0)
    assert code == 1
    assert f"{feats} exists with other inputs or settings; use --force" in one_error_line(err)
    assert feats.stat().st_mtime_ns == stamp and not index.exists()
    code, _, err = pig("index", second, "-m", tiny_model_dir, "-o", index, "--workers", 0, "--force")
    assert code == 0, err
    with h5py.File(index, "r") as handle:
        assert [x.decode() if isinstance(x, bytes) else x for x in handle["ids"][:]] == ["echo"]


# --- 8. a killed --force run resumes ------------------------------------------------------------------

@pytest.mark.slow
def test_a_killed_forced_run_resumes_with_or_without_force(tmp_path, pig_cache, monkeypatch) -> None:
    folder = tmp_path / "videos"
    count = 16
    for i in range(count):
        write_test_video(folder / f"v{i:02d}.mp4", 16, seed=300 + i)
    output = tmp_path / "frames.h5"
    env = {"PIG_BLOCK_VIDEOS": "1"}
    base = ["frames", folder, "--frames", "4", "-o", output, "--workers", "0"]
    code, _, err = pig(*base, "--size", "16", env=env)
    assert code == 0, err

    for size, rerun_flags in (("48", []), ("40", ["--force"])):
        forced = base + ["--size", size, "--force"]
        done = sigkill_after_first_block(forced, output, pig_cache, env, replacing=True)
        assert 1 <= done < count, done
        code, _, err = pig(*base, "--size", size, *rerun_flags, env=env)
        assert code == 0, err
        assert "resuming" in err and f"of {count} videos already decoded" in err
        with h5py.File(output, "r") as handle:
            assert handle["pixels"].shape == (count, 4, 3, int(size), int(size))
        assert not Path(str(output) + ".partial.d").exists()
