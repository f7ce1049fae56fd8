"""`pig train`: stage 1 (generator pretraining) and stage 2 (joint fine-tuning), docs/method.md section 6.

Library API:
    from pigcli.train import TrainConfig, train
    result = train(TrainConfig(output="runs/a", captions="train.csv", val_captions="val.csv",
                               features="feats.h5", model="models/pig-b32"))

Modules: losses (L_ret, L_gen), distributed (torchrun helpers, feature gathering), data (captions,
frozen features, raw-video loader, per-epoch batch plans), forward (the heads a method trains),
loop (optimiser, schedule, validation, checkpoints, resume).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["TrainConfig", "TrainResult", "train"]

if TYPE_CHECKING:  # pragma: no cover
    from .loop import TrainConfig, TrainResult, train


def __getattr__(name: str):
    # Lazy, so that importing pigcli.train (e.g. from the CLI) does not import torch.
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(name)
