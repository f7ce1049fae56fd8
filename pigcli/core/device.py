"""Device and precision: what the stages, training and search run on.

PRECISIONS is the one list of precision names: model stages autocast to it, and the exact search
uses it for the precision of its candidate filter.
"""

from __future__ import annotations

import contextlib
import os

from ..choices import PRECISIONS, check_choice
from ..errors import UsageError


def resolve_device(device: str, precision: str = "auto"):
    """('auto'|'cpu'|'cuda[:n]', precision) -> (torch.device, concrete precision).

    A CUDA device always comes back with its index ('cuda' and 'auto' are the current GPU, cuda:0 unless
    torch.cuda.set_device chose another): torch.cuda.set_device and DistributedDataParallel refuse a
    device without one, and torch.device('cuda') is not equal to the cuda:0 of a tensor on it."""
    import torch

    check_choice("--precision", precision, PRECISIONS)
    torch_device = cuda_indexed(parse_device(device))
    if precision == "auto":
        # Mixed precision on GPU; fp32 on CPU, where bf16 is faster but changes the numbers (opt in).
        precision = "bf16" if torch_device.type == "cuda" and torch.cuda.is_bf16_supported() else (
            "fp16" if torch_device.type == "cuda" else "fp32")
    return torch_device, precision


def parse_device(device: str):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device, with a usage error for anything else or a
    GPU torch cannot see."""
    import torch

    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch_device = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}") from None
    if torch_device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu")
    return torch_device


def cuda_indexed(torch_device):
    """A CUDA device with its index: 'cuda' -> the current GPU; cuda:N checked against the GPUs there are."""
    import torch

    if torch_device.type != "cuda":
        return torch_device
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if torch_device.index is None else torch_device.index
    if index >= count:
        raise UsageError(f"--device {torch_device}: torch sees {count} CUDA GPU{'s' if count != 1 else ''} "
                         f"(cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def autocast(device, precision: str):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def cpu_threads(device, count: int):
    """At most `count` intra-op CPU threads inside the block (torch's setting restored after); no
    change on other devices or when torch already uses no more."""
    import torch

    before = torch.get_num_threads()
    if device.type != "cpu" or count >= before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_workers() -> int:
    """Decoding processes when none are asked for: the CPUs this process may run on, shared with the other
    processes torchrun started on this machine (LOCAL_WORLD_SIZE), less one left to the main process
    (the model's batches, HDF5 writes); at least 1. Decoding is what keeps a GPU waiting
    (benchmarks/RESULTS_extract.md), so it gets every other core."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS and Windows
        cpus = os.cpu_count() or 1
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    share = cpus // int(local) if local.isdigit() and int(local) > 0 else cpus
    return max(1, share - 1)
