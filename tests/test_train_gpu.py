"""What `pig train` does on a GPU, checked without one: the device chosen (torch.cuda monkeypatched as
a machine with GPUs), and the parts of a fast step that a CPU can hold (sync-free steps, captions
tokenized once, the checkpoint cadence, fused attention equal to the eager path)."""

from __future__ import annotations

import pytest
import torch
from torch.cuda._utils import _get_device_index

from pigcli.core.device import resolve_device
from pigcli.errors import UsageError
from pigcli.train import TrainConfig
from pigcli.train.distributed import DistContext
from pigcli.train.loop import training_device


class FakeCuda:
    """torch.cuda of a machine with `count` GPUs, current GPU 0; records set_device's arguments and
    refuses a device without an index as torch does."""

    def __init__(self, monkeypatch, count: int = 2):
        self.count, self.current, self.set = count, 0, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)

    def set_device(self, device) -> None:
        self.current = _get_device_index(device)  # torch's own check: ValueError for 'cuda' without index
        self.set.append(self.current)


def chosen(device: str, context: DistContext = DistContext()) -> torch.device:
    return training_device(TrainConfig(output="unused", captions="unused", device=device), context)[0]


@pytest.mark.parametrize("device, expected", [("auto", "cuda:0"), ("cuda", "cuda:0"), ("cuda:1", "cuda:1"),
                                              ("cpu", "cpu")])
def test_training_device_on_a_gpu_machine(monkeypatch, device, expected):
    cuda = FakeCuda(monkeypatch)
    got = chosen(device)
    assert got == torch.device(expected)
    assert cuda.set == ([got.index] if got.type == "cuda" else [])


def test_cuda_means_the_current_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=4)
    cuda.current = 3  # e.g. set by the caller before pig's train()
    assert chosen("cuda") == torch.device("cuda", 3)


@pytest.mark.parametrize("device", ["auto", "cuda", "cuda:0"])
def test_torchrun_gives_each_process_its_local_rank_gpu(monkeypatch, device):
    cuda = FakeCuda(monkeypatch)
    assert chosen(device, DistContext(rank=1, world_size=2, local_rank=1)) == torch.device("cuda", 1)
    assert cuda.set == [1]


def test_no_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=0)
    assert chosen("auto") == torch.device("cpu") and cuda.set == []
    with pytest.raises(UsageError, match="no CUDA GPU"):
        chosen("cuda")


@pytest.mark.parametrize("device, message", [("cuda:2", "sees 2 CUDA GPUs"), ("gpu", "auto, cpu, cuda or cuda:N"),
                                             ("mps", "auto, cpu, cuda or cuda:N")])
def test_devices_that_do_not_exist_are_usage_errors(monkeypatch, device, message):
    FakeCuda(monkeypatch)
    with pytest.raises(UsageError, match=message):
        resolve_device(device)


def test_every_stage_gets_an_indexed_gpu_and_gpu_precision(monkeypatch):
    FakeCuda(monkeypatch)
    assert resolve_device("auto") == (torch.device("cuda", 0), "bf16")
    assert resolve_device("cuda", "fp16") == (torch.device("cuda", 0), "fp16")
