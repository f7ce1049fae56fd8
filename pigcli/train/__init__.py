"""`pig train`: phase 1 (generator pretraining) and phase 2 (joint fine-tuning), docs/method.md section 6.

Library API:
    from pigcli.train import TrainConfig, train
    result = train(TrainConfig(output="runs/a", captions="train.csv", val_captions="val.csv",
                               features="feats.h5", model="models/pig-b32"))

Modules:
    config       TrainConfig, TrainResult, per-phase values, --phases, checks on the settings
    forward      what each method computes from a batch (TrainStep) and for validation
    data         captions (tokenized once), frozen features, raw-video and frames loaders, batch plans
    distributed  torchrun helpers, feature gathering
    optim        what trains in each phase, parameter groups, AdamW, warm-up + cosine schedule
    precision    fp16 loss scaling (LossScaler)
    recipes      named recipes (the official settings, each with its source) for --recipe
    validate     validation metrics, choice of the best checkpoint
    runlog       OUT/log.jsonl
    state        OUT/state.pt for --resume: save/load, RNG states, atomic writes, cadence, SIGTERM
    loop         the Trainer (phases, epochs, steps, checkpoints) and train()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["TrainConfig", "TrainResult", "train"]

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrainConfig, TrainResult
    from .loop import train

_MODULES = {"TrainConfig": "config", "TrainResult": "config", "train": "loop"}


def __getattr__(name: str):
    # Lazy, so that importing pigcli.train (e.g. from the CLI) does not import torch.
    if name in _MODULES:
        from importlib import import_module

        return getattr(import_module(f".{_MODULES[name]}", __name__), name)
    raise AttributeError(name)
