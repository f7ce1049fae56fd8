"""What `pig train` takes (`TrainConfig`) and returns (`TrainResult`), and the checks on those settings.

Training runs in phases: phase 1 pretrains the pseudo-query generator, phase 2 trains jointly. Per-phase
values (--epochs, --steps, --lr, --lr-clip) are one value for every phase or 'A,B' (phase 1, phase 2).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from ..errors import UsageError
from ..choices import BACKBONES, METHODS, RESIZES, SAMPLINGS, SELECTORS, check_choice

PHASES = (1, 2)
# Settings a resumed run may change: they do not alter the numbers.
RESUMABLE_CHANGES = ("resume", "stop_after", "workers", "device", "output", "log_every", "save_every", "compile")
# Settings added after runs may have been started, with the value that reproduces what those runs did:
# a state that does not record one was made with that value, and resumes when the run still has it.
ADDED_SETTINGS = {"paragraph": False, "sampling": "centre", "jitter": False, "loss_scale": None,
                  "grad_checkpointing": False, "recipe": None, "resize": "crop"}

PerPhase = float | int | str | Sequence[float] | None


@dataclass
class TrainConfig:
    """Everything `pig train` takes. Per-phase values: one number (every phase) or 'A,B' (phase 1, phase 2)."""

    output: str | Path                          # run folder: best/, last/, state.pt, log.jsonl
    captions: str | Path                        # training captions (video_id, caption)
    model: str | None = None                    # starting checkpoint (-m), as elsewhere in pig
    features: str | Path | None = None          # frozen-feature mode: an `extract` file
    videos: str | Path | None = None            # raw-video mode: a folder (or list file) of videos
    frames: str | Path | None = None            # cached-frames mode: a `pig frames` file (decoded once)
    val_captions: str | Path | None = None      # validation split (never the test split)
    paragraph: bool = False                     # one caption per video, its captions joined, >= 64 tokens
    method: str = "pig"                         # pig | meanpool | xpool | eercf
    phases: str | Sequence[int] | None = None   # '1,2' (default for pig), '1' or '2' (default otherwise)
    epochs: PerPhase = 5
    steps: PerPhase = None                      # optimiser steps per phase, instead of epochs
    batch_size: int = 128                       # global batch (split over torchrun ranks)
    lr: PerPhase = "9e-5,1e-5"                  # new modules (mapper, fusioner, proxies, temporal embedding)
    lr_clip: PerPhase = "9e-5,1e-6"             # CLIP weights (and the generator's copy of the text encoder)
    weight_decay: float = 0.2
    warmup: float = 0.01                        # fraction of each phase's steps
    alpha: float = 1.0                          # weight of L_gen
    eercf_weight: float = 0.0                   # weight of EERCF's loss added to the method's (trains W_g, W_F)
    grad_clip: float = 1.0
    freeze_backbone: bool = False               # phase 2 'heads only': vision tower, proxies, temporal frozen
    backbone: str | None = None                 # videos, frames: vip | frames (features: the file's)
    selector: str = "its"                       # patches fed to the generator: its | random (an ablation)
    sampling: str | None = None                 # uniform | centre; None: a features/frames file's, else uniform
    resize: str | None = None                   # squash | crop; None: a features/frames file's, else squash
    jitter: bool = True                         # --videos with uniform sampling: the official training jitter
    decoder: str = "auto"
    workers: int | None = None                  # decoding (--videos) or reading (--frames) processes; 0: in-process;
                                                # None: from the CPU count (core.device.default_workers)
    device: str = "auto"
    precision: str = "auto"                     # auto (GPU: bf16, else fp16; CPU: fp32) | fp32 | bf16 | fp16
    loss_scale: float | None = None             # initial loss scale; None: 2**16, dynamic, with fp16 only; a number
                                                # turns scaling on at any precision (how CPU tests check it)
    grad_checkpointing: bool = False            # recompute the video tower's and generator's layers in backward
    recipe: str | None = None                   # the named recipe the settings came from (pigcli.train.recipes)
    compile: bool = False                       # torch.compile the training step (first steps compile)
    log_every: int = 20                         # steps whose losses are copied from the device at once
    save_every: str = "30m"                     # OUT/state.pt cadence: N s|m|h (time) or N steps
    seed: int = 0
    resume: bool = False
    stop_after: int | None = None               # stop after this many steps in this invocation (resume later)

    @property
    def trains_eercf_head(self) -> bool:
        """Whether EERCF's loss is part of phase 2 (and so the rerank head W_g, W_F trains)."""
        return self.method == "eercf" or self.eercf_weight > 0

    def identity(self) -> dict[str, Any]:
        """The settings that define the run's numbers, JSON-ready and normalised (absolute paths, per-phase
        values as [phase 1, phase 2]), so that equal runs compare equal (resume) and records are explicit."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RESUMABLE_CHANGES}
        for name in ("captions", "features", "videos", "frames", "val_captions"):
            values[name] = os.path.abspath(values[name]) if values[name] is not None else None
        for name, cast in (("epochs", int), ("steps", int), ("lr", float), ("lr_clip", float)):
            values[name] = list(per_phase(values[name], name, cast).values())
        values["phases"] = list(parse_phases(values["phases"], self.method))
        return values


@dataclass
class TrainResult:
    output: Path
    best: Path | None               # OUT/best (None without a validation split)
    last: Path | None               # OUT/last (None when stopped early by stop_after)
    best_metrics: dict | None       # validation metrics of the best checkpoint
    last_metrics: dict | None       # validation metrics after the last epoch
    steps: int                      # optimiser steps over the whole run
    final_loss: float | None        # mean training loss of the last epoch
    stopped: bool = False           # stop_after reached, or SIGTERM: continue with resume=True
    interrupted: bool = False       # stopped by SIGTERM (the state saved)
    train_videos: int = 0
    val_videos: int = 0
    missing_videos: int = 0         # captioned videos absent from the source (train + validation)
    failed_videos: int = 0          # videos that could not be decoded (raw-video mode)
    pairs_per_second: float = 0.0   # training throughput of this invocation (epochs without validation)


def per_phase(value: PerPhase, name: str, cast=float) -> dict[int, Any]:
    """'A' or A -> {1: A, 2: A}; 'A,B' or (A, B) -> {1: A, 2: B}; None -> {1: None, 2: None}."""
    if value is None:
        return {1: None, 2: None}
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        parsed = [cast(p) for p in parts]
    except ValueError:
        raise UsageError(f"--{name.replace('_', '-')} takes a number or 'phase1,phase2', not {value!r}") from None
    if len(parsed) not in (1, 2):
        raise UsageError(f"--{name.replace('_', '-')} takes one value or two (phase 1, phase 2), not {value!r}")
    return {1: parsed[0], 2: parsed[-1]}


def parse_phases(value: str | Sequence[int] | None, method: str) -> tuple[int, ...]:
    """--phases -> the sorted phases to run; None: (1, 2) for pig, (2,) for the other methods."""
    if value is None:
        return PHASES if method == "pig" else (2,)
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        phases = tuple(sorted({int(p) for p in items}))
    except ValueError:
        phases = ()
    if not phases or not set(phases) <= set(PHASES):
        raise UsageError(f"--phases must be 1, 2 or 1,2, not {value!r}")
    if 1 in phases and method != "pig":
        raise UsageError(f"phase 1 pretrains the pseudo-query generator, which --method {method} does not use; "
                         "use --phases 2")
    return phases


def check_config(config: TrainConfig, phases: tuple[int, ...]) -> None:
    check_choice("--method", config.method, METHODS)
    check_choice("--selector", config.selector, SELECTORS)
    for option, value, allowed in (("--sampling", config.sampling, SAMPLINGS), ("--resize", config.resize, RESIZES),
                                   ("--backbone", config.backbone, BACKBONES)):
        if value is not None:  # None: the features' or model's own
            check_choice(option, value, allowed)
    if sum(value is not None for value in (config.features, config.videos, config.frames)) != 1:
        raise UsageError("give exactly one of --features (an extract file, frozen backbone), --videos (a folder, "
                         "decoded every epoch) or --frames (a pig frames file, decoded once)")
    if config.features is not None and 2 in phases and not config.freeze_backbone:
        raise UsageError("--features holds the outputs of a frozen backbone: phase 2 with --features needs "
                         "--freeze-backbone (or fine-tune the backbone from --frames FILE, made once with "
                         "pig frames, or from raw videos with --videos)")
    if config.batch_size < 1 or (2 in phases and config.batch_size < 2):
        raise UsageError(f"--batch-size must be at least 2 for the contrastive loss, not {config.batch_size}")
    if not 0 <= config.warmup < 1:
        raise UsageError(f"--warmup is a fraction of the steps in [0, 1), not {config.warmup}")
    if config.loss_scale is not None and not config.loss_scale > 0:
        raise UsageError(f"the loss scale must be a positive number, not {config.loss_scale}")
    if config.eercf_weight < 0 or (config.method == "eercf" and config.eercf_weight):
        raise UsageError(f"--eercf-weight adds EERCF's loss to --method pig, meanpool or xpool (a weight >= 0); "
                         f"--method eercf trains with that loss alone, so leave it out (got {config.eercf_weight})")
    if config.workers is not None and config.workers < 0:
        raise UsageError(f"--workers must be 0 (read in this process) or more, not {config.workers}")
    if config.log_every < 1:
        raise UsageError(f"--log-every must be a positive number of steps, not {config.log_every}")
    parse_cadence(config.save_every)
    if config.stop_after is not None and config.stop_after < 1:
        raise UsageError(f"--stop-after must be a positive number of steps, not {config.stop_after}")


CADENCE_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_cadence(value: str) -> tuple[str, float]:
    """--save-every: '10m', '90s', '2h' -> ('seconds', 600.0); '500steps' -> ('steps', 500)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|steps?)\s*", str(value))
    if not match or not float(match.group(1)) > 0:
        raise UsageError(f"--save-every takes a time (90s, 10m, 2h) or a number of steps (500steps), not {value!r}")
    amount, unit = float(match.group(1)), match.group(2)
    if unit.startswith("step"):
        if not amount.is_integer():
            raise UsageError(f"--save-every takes a whole number of steps, not {value!r}")
        return "steps", int(amount)
    return "seconds", amount * CADENCE_UNITS[unit]
