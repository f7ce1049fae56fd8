"""Device and precision: what the stages, training and search run on.

PRECISIONS is the one list of precision names: model stages autocast to it, and the exact search
uses it for the precision of its candidate filter.
"""

from __future__ import annotations

import contextlib

from ..choices import PRECISIONS, check_choice


def resolve_device(device: str, precision: str = "auto"):
    """('auto'|'cpu'|'cuda[:n]', precision) -> (torch.device, concrete precision)."""
    import torch

    check_choice("--precision", precision, PRECISIONS)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu")
    torch_device = torch.device(device)
    if precision == "auto":
        # Mixed precision on GPU; fp32 on CPU, where bf16 is faster but changes the numbers (opt in).
        precision = "bf16" if torch_device.type == "cuda" and torch.cuda.is_bf16_supported() else (
            "fp16" if torch_device.type == "cuda" else "fp32")
    return torch_device, precision


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
