"""What trains in each phase, and the optimiser and learning-rate schedule of a phase.

Phase 1 trains the generator only; phase 2 everything the method uses (the backbone unless
--freeze-backbone; the EERCF rerank head W_g, W_F when EERCF's loss is part of it). Per phase: AdamW
(betas 0.9/0.98, weight decay on matrices only), two learning rates (CLIP weights: lr_clip; new
modules: lr), and a linear warm-up followed by cosine decay.
"""

from __future__ import annotations

import math

import torch

ADAM_BETAS = (0.9, 0.98)
ADAM_EPS = 1e-6            # open_clip's value for ViT models (CLIP trained ViTs with 1e-6 too)
# Prefixes of parameters that do not come from CLIP (they get --lr; everything else --lr-clip).
NEW_PREFIXES = ("generator.mapper.", "fusioner.", "backbone.", "eercf.")
# No weight decay here: W_g and W_F start as identities (an untrained head), and decay would pull them
# towards zero rather than back to that start.
NO_DECAY_PREFIXES = ("eercf.",)
BACKBONE_PREFIXES = ("clip.vision_model.", "clip.visual_projection.", "backbone.")


def is_trainable(name: str, phase: int, method: str, freeze_backbone: bool, backbone: str,
                 eercf: bool = False) -> bool:
    """Which parameters a phase trains: phase 1 the generator only; phase 2 everything the method uses
    (eercf: whether EERCF's loss is part of it)."""
    if name.startswith("generator."):
        return method == "pig"
    if phase == 1:
        return False
    if name.startswith("eercf."):
        return eercf
    if name.startswith("fusioner."):
        return method in ("pig", "xpool")
    if name.startswith(BACKBONE_PREFIXES):
        # proxies, frame CLS and temporal embedding exist only in the ViP backbone
        return not freeze_backbone and (backbone == "vip" or not name.startswith("backbone."))
    return True  # CLIP's text encoder, text projection, logit scale


def set_trainable(pig, phase: int, method: str, freeze_backbone: bool, backbone: str, eercf: bool = False) -> int:
    """Set requires_grad on every parameter; returns how many values train."""
    count = 0
    for name, param in pig.named_parameters():  # shared vision-tower weights appear once, as clip.*
        param.requires_grad_(is_trainable(name, phase, method, freeze_backbone, backbone, eercf))
        count += param.numel() if param.requires_grad else 0
    return count


def param_groups(pig, lr: float, lr_clip: float, weight_decay: float) -> list[dict]:
    """Trainable parameters by origin (new module / CLIP) and decay (matrices only: open_clip's rule,
    no decay for gains, biases and scalars such as the logit scale; none for the EERCF head either)."""
    groups: dict[str, dict] = {}
    for name, param in pig.named_parameters():
        if not param.requires_grad:
            continue
        origin = "new" if name.startswith(NEW_PREFIXES) else "clip"
        decay = param.ndim >= 2 and not name.startswith(NO_DECAY_PREFIXES)
        key = origin + ("" if decay else "_no_decay")
        group = groups.setdefault(key, {"name": key, "params": [], "lr": lr if origin == "new" else lr_clip,
                                        "weight_decay": weight_decay if decay else 0.0})
        group["params"].append(param)
    return [groups[k] for k in ("clip", "clip_no_decay", "new", "new_no_decay") if k in groups]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR factor: linear warm-up to 1 over warmup_steps, then cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def fused_adamw(device) -> bool:
    """Whether AdamW runs fused on this device: on a GPU (one kernel for every update, and with fp16's
    loss scaling the skip decision stays on the device); on the CPU as before."""
    return device.type == "cuda"


def make_optimizer(pig, lr: float, lr_clip: float, weight_decay: float, warmup: float, total_steps: int,
                   fused: bool = False):
    """AdamW over the trainable parameters and its warm-up + cosine schedule, for one phase's total_steps.
    fused: one kernel for every parameter's update (on a GPU: far fewer launches; the same AdamW)."""
    optimizer = torch.optim.AdamW(param_groups(pig, lr, lr_clip, weight_decay), betas=ADAM_BETAS, eps=ADAM_EPS,
                                  **({"fused": True} if fused else {}))
    warmup_steps = round(warmup * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps))
    return optimizer, scheduler
