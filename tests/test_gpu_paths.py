"""What the stages run on, tested without a GPU: the device a stage picks ('auto', 'cuda', 'cuda:N'; torch's
CUDA functions stand in for a machine with GPUs), the number of decoding workers by default, and the
torchcodec decoder (a one-line error where it cannot load; the frames of PyAV where it can)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from conftest import VIDEO_FOLDER_SPECS
from pigcli.core import device as device_module
from pigcli.core.device import default_workers, resolve_device
from pigcli.errors import UsageError
from pigcli.store import read_attrs
from pigcli.inputs.video import read_clip, resolve_decoder, torchcodec_problem


@pytest.fixture
def two_gpus(monkeypatch):
    """torch sees two CUDA GPUs, the second current (as after torch.cuda.set_device(1)); bf16 on both."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize("asked, index", [("auto", 1), ("cuda", 1), ("cuda:0", 0), ("cuda:1", 1)])
def test_a_gpu_comes_back_with_its_index(two_gpus, asked: str, index: int) -> None:
    chosen, precision = resolve_device(asked)
    assert chosen == torch.device("cuda", index) and chosen.index == index  # set_device accepts it
    assert precision == "bf16"


def test_a_gpu_that_is_not_there_is_a_usage_error(two_gpus) -> None:
    with pytest.raises(UsageError, match=r"torch sees 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_without_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == (torch.device("cpu"), "fp32")
    for asked in ("cuda", "cuda:0"):
        with pytest.raises(UsageError, match="torch sees no CUDA GPU; use --device cpu"):
            resolve_device(asked)


@pytest.mark.parametrize("asked", ["gpu", "cuda:x"])
def test_a_device_name_torch_does_not_know_is_a_usage_error(asked: str) -> None:
    with pytest.raises(UsageError, match="--device must be auto, cpu, cuda or cuda:N"):
        resolve_device(asked)


# --- decoding workers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cpus, workers", [(16, 15), (2, 1), (1, 1)])
def test_default_workers_leave_one_cpu_to_the_main_process(monkeypatch, cpus: int, workers: int) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(device_module.os, "sched_getaffinity", lambda pid: set(range(100, 100 + cpus)), raising=False)
    assert default_workers() == workers


@pytest.mark.parametrize("local_processes, workers", [("4", 3), ("16", 1), ("", 15)])
def test_default_workers_share_the_cpus_between_torchrun_processes(monkeypatch, local_processes, workers) -> None:
    monkeypatch.setattr(device_module.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local_processes)
    assert default_workers() == workers


def test_default_workers_without_affinity_count_the_cpus(monkeypatch) -> None:
    monkeypatch.delattr(device_module.os, "sched_getaffinity", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(device_module.os, "cpu_count", lambda: 8)
    assert default_workers() == 7


@pytest.mark.slow
def test_frames_and_extract_decode_with_the_default_workers(run_pig, video_folder, tiny_model_dir, tmp_path) -> None:
    """Without --workers the run records one worker per CPU but one, as the help says."""
    expected = default_workers()
    code, _, err = run_pig(["extract", video_folder, "-m", tiny_model_dir, "-o", tmp_path / "x.h5", "--device", "cpu"])
    assert code in (0, 3), err  # 3: the folder holds broken videos on purpose
    assert json.loads(read_attrs(tmp_path / "x.h5")["run"])["workers"] == expected
    code, out, err = run_pig(["frames", "--help"], env={"COLUMNS": "300"})
    assert f"one per CPU but one, here {expected};" in out


# --- torchcodec -------------------------------------------------------------------------------------------

@pytest.fixture
def no_torchcodec(monkeypatch):
    """torchcodec cannot be imported (as where it is not installed)."""
    for name in ("torchcodec", "torchcodec.decoders"):
        monkeypatch.setitem(sys.modules, name, None)


def test_torchcodec_missing_is_one_clear_line(no_torchcodec) -> None:
    with pytest.raises(ValueError) as info:
        resolve_decoder("torchcodec")
    assert str(info.value) == ("torchcodec is not installed (pip install torchcodec; it needs FFmpeg's shared "
                               "libraries); use --decoder pyav")
    assert resolve_decoder("auto") in ("decord", "pyav")  # auto never picks it


@pytest.mark.slow
def test_extract_with_torchcodec_missing_exits_with_a_usage_error(run_pig, video_folder, tiny_model_dir, tmp_path) -> None:
    if torchcodec_problem() is None:
        pytest.skip("torchcodec works here")
    code, out, err = run_pig(["extract", video_folder, "-m", tiny_model_dir, "-o", tmp_path / "x.h5",
                              "--decoder", "torchcodec"])
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "torchcodec is" in lines[0] and "use --decoder pyav" in lines[0], err
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.skipif(torchcodec_problem() is not None, reason="torchcodec cannot load here")
@pytest.mark.parametrize("name", list(VIDEO_FOLDER_SPECS))
def test_torchcodec_gives_pyavs_frames(video_folder, name: str) -> None:
    a = read_clip(video_folder / name, 12, 32, "torchcodec")
    b = read_clip(video_folder / name, 12, 32, "pyav")
    np.testing.assert_array_equal(a.frame_index, b.frame_index)
    assert a.num_frames == b.num_frames and a.fps == pytest.approx(b.fps)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 2
