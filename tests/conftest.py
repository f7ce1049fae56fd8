"""Shared fixtures: a tiny random pig model, real generated videos, broken files, and a CLI runner.

Everything is made on the fly (no downloads) and kept small so the suite runs on a laptop CPU.

Model (session-scoped):
    tiny_model_dir   folder made by `init_random(..., 'tiny')`: 32 px images, 8 px patches (16 patches
                     per frame), vision width 32, projection 32, 2 layers, 2 heads; T = 12, P = 3
    tiny_model       the loaded `LoadedModel` (model in eval mode, on CPU)

Videos:
    make_video(name, ...)      factory: writes a real video (codec follows the suffix) in a fresh folder
    video_folder               session-scoped folder of 6 small videos in 5 containers / 4 codecs
    make_broken(kind, ...)     factory: garbage / empty / truncated / audio / short files (BROKEN_KINDS)
    tiny_extract               session-scoped `pig extract` output of `video_folder` with `tiny_model_dir`

Frame content is deterministic (seeded): coloured squares moving over a background whose RED value
encodes the frame number (`FRAME_RED_BASE + FRAME_RED_STEP * i`); `frame_number(rgb)` reads it back,
so a test can check which source frames a decoder returned.

CLI:
    run_pig(args, env=None, timeout=...) -> (returncode, stdout, stderr), `python -m pigcli` in a
                     subprocess with HF offline and a private PIG_CACHE; `pig_env()` gives that env.
                     In-process, use typer.testing.CliRunner (stdout and stderr are separate).

Environment: an autouse fixture removes the caller's PIG_* variables and points PIG_CACHE at a
session tmp folder for every test.

Helpers (import with `from conftest import ...`): video_frames, frame_number, write_test_video,
write_broken, write_audio_only, pig_env, live_server_of, find_chromium, and the TINY_* / VIDEO_FOLDER_SPECS / BROKEN_KINDS constants.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# --- the tiny model -------------------------------------------------------------------------------

TINY_IMAGE = 32        # image_size of the 'tiny' preset
TINY_PATCH = 8         # patch_size
TINY_L = (TINY_IMAGE // TINY_PATCH) ** 2  # 16 patches per frame
TINY_WIDTH = 32        # vision hidden size
TINY_DIM = 32          # projection dim D
TINY_T = 12            # PigConfig default frames per video
TINY_P = 3             # PigConfig default proxies


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A pig checkpoint folder with random 'tiny' weights (seed 0). Treat as read-only."""
    from pigcli.model.factory import init_random

    return init_random(tmp_path_factory.mktemp("models") / "tiny", "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """`LoadedModel` of `tiny_model_dir` (eval mode, CPU). Do not modify its weights in a test."""
    from pigcli.model.checkpoint import load_checkpoint

    return load_checkpoint(tiny_model_dir)


# --- videos ---------------------------------------------------------------------------------------

FRAME_RED_BASE = 16
FRAME_RED_STEP = 6     # frames 0..39 have distinct red levels 16..250
MAX_IDENTIFIABLE_FRAMES = 40


def video_frames(num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """[N, H, W, 3] uint8: 3 coloured squares moving over a flat background, deterministic in `seed`.

    The red channel is the same everywhere in frame i (squares differ only in green/blue), so the
    frame number survives lossy coding and cropping: see `frame_number`.
    """
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 200, size=2)
    side = max(4, min(height, width) // 4)
    starts = rng.integers(0, [height - side, width - side], size=(3, 2))
    speeds = rng.integers(-3, 4, size=(3, 2))
    colours = rng.integers(0, 256, size=(3, 2))
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frames[i, :, :, 0] = (FRAME_RED_BASE + FRAME_RED_STEP * i) % 256
        frames[i, :, :, 1:] = background
        for start, speed, colour in zip(starts, speeds, colours):
            top, left = (start + speed * i) % [height - side, width - side]
            frames[i, top : top + side, left : left + side, 1:] = colour
    return frames


def frame_number(rgb: np.ndarray, channels_first: bool = False) -> int:
    """The frame number encoded by `video_frames` in a decoded frame ([H, W, 3] or [3, H, W])."""
    red = rgb[0] if channels_first else rgb[..., 0]
    return int(round((float(np.median(red)) - FRAME_RED_BASE) / FRAME_RED_STEP))


def write_test_video(path: str | Path, num_frames: int = 16, height: int = 48, width: int = 64, fps: int = 8,
                     seed: int = 0, codec: str | None = None) -> Path:
    """Write `video_frames(...)` to `path`; the codec follows the suffix (pigcli.toy.videowrite.CODECS)."""
    from pigcli.toy.videowrite import write_video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, video_frames(num_frames, height, width, seed), fps=fps, codec=codec)


@pytest.fixture
def make_video(tmp_path):
    """Factory: make_video('a.mp4', num_frames=16, height=48, width=64, fps=8, seed=0, codec=None,
    folder=None) -> Path. Relative names go under a fresh 'videos' folder of this test's tmp_path."""
    root = tmp_path / "videos"

    def make(name: str | Path, num_frames: int = 16, height: int = 48, width: int = 64, fps: int = 8,
             seed: int = 0, codec: str | None = None, folder: str | Path | None = None) -> Path:
        path = Path(folder or root) / name
        return write_test_video(path, num_frames, height, width, fps, seed, codec)

    return make


# name -> (frames, height, width, seed): 4 codecs (h264, mpeg4, mjpeg, vp8) in 5 containers,
# landscape, portrait and square frames. All have at least TINY_T frames. Widths avoid 16/24/48/72 px,
# which decord cannot read (dmlc/decord#336; 'auto' falls back to PyAV, see test_video.py).
VIDEO_FOLDER_SPECS = {
    "alpha.mp4": (16, 48, 64, 1),
    "bravo.mkv": (20, 64, 40, 2),
    "charlie.avi": (12, 40, 40, 3),
    "delta.webm": (18, 48, 64, 4),
    "echo.mov": (14, 36, 60, 5),
    "foxtrot.mp4": (24, 32, 56, 6),
}


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory) -> Path:
    """A folder of 6 good videos (VIDEO_FOLDER_SPECS). Read-only: copy it to add or remove files."""
    folder = tmp_path_factory.mktemp("video_folder")
    for name, (frames, height, width, seed) in VIDEO_FOLDER_SPECS.items():
        write_test_video(folder / name, frames, height, width, seed=seed)
    return folder


BROKEN_KINDS = ("garbage", "empty", "truncated", "audio", "short")


def write_audio_only(path: str | Path, codec: str | None = None, seconds: float = 0.5) -> Path:
    """A valid file with one audio stream and no video stream (aac in .mp4, mp2 otherwise)."""
    import av

    path = Path(path)
    codec = codec or ("aac" if path.suffix == ".mp4" else "mp2")
    rate, chunk = 16000, 1024
    sample_format, dtype = ("fltp", np.float32) if codec == "aac" else ("s16", np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        for i in range(int(seconds * rate) // chunk + 1):
            samples = np.zeros((1, chunk), dtype)
            frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout="mono")
            frame.sample_rate, frame.pts = rate, i * chunk
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_broken(kind: str, path: str | Path, seed: int = 0) -> Path:
    """A file of one BROKEN_KINDS kind at `path` (use a video suffix such as .mp4).

    garbage: random bytes; empty: 0 bytes; truncated: the first half of a valid mp4 (its index, at
    the end, is lost); audio: audio stream only; short: a VALID video of 5 frames (fewer than T = 12).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        full = write_test_video(path.with_name(path.stem + ".full.mp4"), 24, seed=seed)
        data = full.read_bytes()
        full.unlink()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "audio":
        write_audio_only(path)
    elif kind == "short":
        write_test_video(path, num_frames=5, seed=seed)
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {BROKEN_KINDS}")
    return path


@pytest.fixture
def make_broken(tmp_path):
    """Factory: make_broken(kind, name=None, folder=None) -> Path; kinds in BROKEN_KINDS."""
    root = tmp_path / "broken"

    def make(kind: str, name: str | None = None, folder: str | Path | None = None) -> Path:
        return write_broken(kind, Path(folder or root) / (name or f"{kind}.mp4"))

    return make


@pytest.fixture(scope="session")
def tiny_extract(tmp_path_factory, tiny_model_dir, video_folder) -> Path:
    """`extract(video_folder, model=tiny_model_dir)` with default settings (all patches), workers=0.

    For tests of later stages that need an extract file. Read-only.
    """
    from pigcli.stages.extract import extract

    output = tmp_path_factory.mktemp("extract") / "feats.h5"
    extract([video_folder], output, str(tiny_model_dir), device="cpu", workers=0)
    return output


# --- a live server and a browser ---------------------------------------------------------------------

@contextlib.contextmanager
def live_server_of(app):
    """Run an ASGI app (pig serve's) on a free local port with uvicorn in a thread, as pig serve runs it;
    yields its base URL."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def find_chromium() -> str | None:
    """The system's Chromium (the page's browser tests drive it; they skip without one)."""
    import shutil

    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


# --- the command line -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pig_cache(tmp_path_factory) -> Path:
    """A private PIG_CACHE, so tests never write to ~/.cache/pig."""
    return tmp_path_factory.mktemp("pig_cache")


@pytest.fixture(autouse=True)
def _hermetic_pig_env(monkeypatch, pig_cache):
    """Every test starts without the caller's PIG_* settings (PIG_MODEL, PIG_QUIET, ...), with a
    private PIG_CACHE. A test may still set its own with monkeypatch.setenv."""
    for name in [k for k in os.environ if k.startswith("PIG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIG_CACHE", str(pig_cache))


def pig_env(cache: Path | None = None, extra: dict | None = None) -> dict:
    """Environment for a `pig` subprocess: offline hub, quiet progress, no inherited PIG_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIG_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    if cache is not None:
        env["PIG_CACHE"] = str(cache)
    env.update(extra or {})
    return env


@pytest.fixture
def run_pig(pig_cache):
    """run_pig(args, env=None, timeout=300, cwd=None) -> (returncode, stdout, stderr).

    Runs `python -m pigcli ARGS` in a subprocess (args: list of str/Path, or one string split on
    spaces). `env` entries are added to `pig_env(pig_cache)`.
    """

    def run(args, env: dict | None = None, timeout: float = 300, cwd: str | Path | None = None):
        argv = args.split() if isinstance(args, str) else [str(a) for a in args]
        proc = subprocess.run([sys.executable, "-m", "pigcli", *argv], capture_output=True, text=True,
                              env=pig_env(pig_cache, env), timeout=timeout, cwd=cwd)
        return proc.returncode, proc.stdout, proc.stderr

    return run


def sigkill_after_first_block(args: list, output: Path, cache: Path, env: dict | None = None,
                              replacing: bool = False) -> int:
    """Run `python -m pigcli ARGS` and SIGKILL it once its first crash-safe block of `output` is on disk,
    as a user's kill -9 would; returns how many blocks were finished (the run must not have ended).
    replacing: `output` existed before (a --force run over it) and must still be the old file."""
    partial = Path(str(output) + ".partial.d")
    proc = subprocess.Popen([sys.executable, "-m", "pigcli", *map(str, args)], env=pig_env(cache, env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not partial.exists() or not list(partial.glob("block-*.h5")):
            assert proc.poll() is None, f"{args[0]} ended before its first block: " + proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no block appeared"
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert Path(output).exists() == replacing
    return len(list(partial.glob("block-*.h5")))


def read_h5(path: Path) -> dict:
    """Every dataset of a stage file as numpy (strings decoded), plus the root attrs."""
    import h5py

    out = {}
    with h5py.File(path, "r") as handle:
        for name in handle:
            data = handle[name][:]
            if h5py.check_string_dtype(handle[name].dtype) is not None:
                data = np.array([x.decode() if isinstance(x, bytes) else x for x in data], dtype=object)
            out[name] = data
        out["attrs"] = dict(handle.attrs)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on 2 shared cores: one torch thread avoids oversubscription (a tiny layer's backward
    was about 100x slower with 2 threads on busy cores). Modules that train use it for every test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
