"""`pig train`: the training loop (docs/method.md section 6).

Stage 1 (generator pretraining): only the generator trains; L = L_gen.
Stage 2 (joint): everything the method uses trains (the backbone unless --freeze-backbone);
L = L_ret + alpha L_gen (L_ret alone for meanpool and xpool) + beta L_eercf (--eercf-weight beta,
default 0; --method eercf: L_eercf alone). L_eercf trains the EERCF rerank head W_g, W_F.

Per stage: AdamW (betas 0.9/0.98, weight decay 0.2 on matrices only), two learning rates (CLIP
weights: lr_clip; new modules: lr), cosine decay after a linear warm-up, gradient clipping,
bf16 autocast on GPU. Validation after every epoch on a separate split; the best checkpoint (by
text-to-video R@1) goes to OUT/best, the final one to OUT/last, both normal pig model folders.
OUT/state.pt makes a run resumable (--resume), OUT/log.jsonl records every step and epoch.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..console import log, progress, warn
from ..errors import UsageError
from ..core.metrics import retrieval_metrics
from ..model.checkpoint import save_checkpoint
from ..model.resolve import resolve_model
from ..model.pig import BACKBONES
from ..core.text import embed_texts
from ..core.device import autocast, resolve_device
from ..video import resolve_decoder
from . import distributed as dist_utils
from ..core.text import tokenize
from .data import FeatureSource, VideoSource, batches_per_epoch, epoch_plan, load_pairs, rank_slice
from ..core.methods import METHODS, xpool_scores
from .forward import TrainStep, encode_pixels, head_embedding
from ..core.losses import clamp_logit_scale_

STATE_FORMAT = "pig-train-state/1"
ADAM_BETAS = (0.9, 0.98)
ADAM_EPS = 1e-6            # open_clip's value for ViT models (CLIP trained ViTs with 1e-6 too)
# Prefixes of parameters that do not come from CLIP (they get --lr; everything else --lr-clip).
NEW_PREFIXES = ("generator.mapper.", "fusioner.", "backbone.", "eercf.")
# No weight decay here: W_g and W_F start as identities (an untrained head), and decay would pull them
# towards zero rather than back to that start.
NO_DECAY_PREFIXES = ("eercf.",)
BACKBONE_PREFIXES = ("clip.vision_model.", "clip.visual_projection.", "backbone.")
LOSS_KEYS = ("loss", "l_ret", "l_gen", "l_eercf")  # what TrainStep returns, logged per step and epoch
# Settings a resumed run may change: they do not alter the numbers.
RESUMABLE_CHANGES = ("resume", "stop_after", "workers", "device", "output")

PerStage = float | int | str | Sequence[float] | None


@dataclass
class TrainConfig:
    """Everything `pig train` takes. Per-stage values: one number (every stage) or 'A,B' (stage 1, stage 2)."""

    output: str | Path                          # run folder: best/, last/, state.pt, log.jsonl
    captions: str | Path                        # training captions (video_id, caption)
    model: str | None = None                    # starting checkpoint (-m), as elsewhere in pig
    features: str | Path | None = None          # frozen-feature mode: an `extract` file
    videos: str | Path | None = None            # raw-video mode: a folder (or list file) of videos
    val_captions: str | Path | None = None      # validation split (never the test split)
    method: str = "pig"                         # pig | meanpool | xpool | eercf
    stages: str | Sequence[int] | None = None   # '1,2' (default for pig), '1' or '2' (default otherwise)
    epochs: PerStage = 5
    steps: PerStage = None                      # optimiser steps per stage, instead of epochs
    batch_size: int = 128                       # global batch (split over torchrun ranks)
    lr: PerStage = "9e-5,1e-5"                  # new modules (mapper, fusioner, proxies, temporal embedding)
    lr_clip: PerStage = "9e-5,1e-6"             # CLIP weights (and the generator's copy of the text encoder)
    weight_decay: float = 0.2
    warmup: float = 0.01                        # fraction of each stage's steps
    alpha: float = 1.0                          # weight of L_gen
    eercf_weight: float = 0.0                   # weight of EERCF's loss added to the method's (trains W_g, W_F)
    grad_clip: float = 1.0
    freeze_backbone: bool = False               # stage 2 'heads only': vision tower, proxies, temporal frozen
    backbone: str | None = None                 # raw videos: vip | frames (features: the file's)
    decoder: str = "auto"
    workers: int = 2                            # decoding processes in raw-video mode (0: in-process)
    device: str = "auto"
    precision: str = "auto"                     # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    seed: int = 0
    resume: bool = False
    stop_after: int | None = None               # stop after this many steps in this invocation (resume later)

    @property
    def trains_eercf_head(self) -> bool:
        """Whether EERCF's loss is part of stage 2 (and so the rerank head W_g, W_F trains)."""
        return self.method == "eercf" or self.eercf_weight > 0

    def identity(self) -> dict[str, Any]:
        """The settings that define the run's numbers, JSON-ready and normalised (absolute paths, per-stage
        values as [stage 1, stage 2]), so that equal runs compare equal (resume) and records are explicit."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RESUMABLE_CHANGES}
        for name in ("captions", "features", "videos", "val_captions"):
            values[name] = os.path.abspath(values[name]) if values[name] is not None else None
        for name, cast in (("epochs", int), ("steps", int), ("lr", float), ("lr_clip", float)):
            values[name] = list(per_stage(values[name], name, cast).values())
        values["stages"] = list(parse_stages(values["stages"], self.method))
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
    stopped: bool = False           # stop_after reached: continue with resume=True
    train_videos: int = 0
    val_videos: int = 0
    missing_videos: int = 0         # captioned videos absent from the source (train + validation)
    failed_videos: int = 0          # videos that could not be decoded (raw-video mode)
    pairs_per_second: float = 0.0   # training throughput of this invocation (epochs without validation)


@dataclass
class _Position:
    stage_index: int = 0
    epoch: int = 0
    batch: int = 0        # batches done in the current epoch
    step: int = 0         # optimiser steps over the whole run
    stage_step: int = 0   # optimiser steps in the current stage


# --- settings -------------------------------------------------------------------------------------

def per_stage(value: PerStage, name: str, cast=float) -> dict[int, Any]:
    """'A' or A -> {1: A, 2: A}; 'A,B' or (A, B) -> {1: A, 2: B}; None -> {1: None, 2: None}."""
    if value is None:
        return {1: None, 2: None}
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        parsed = [cast(p) for p in parts]
    except ValueError:
        raise UsageError(f"--{name.replace('_', '-')} takes a number or 'stage1,stage2', not {value!r}") from None
    if len(parsed) not in (1, 2):
        raise UsageError(f"--{name.replace('_', '-')} takes one value or two (stage 1, stage 2), not {value!r}")
    return {1: parsed[0], 2: parsed[-1]}


def parse_stages(value: str | Sequence[int] | None, method: str) -> tuple[int, ...]:
    if value is None:
        return (1, 2) if method == "pig" else (2,)
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        stages = tuple(sorted({int(s) for s in items}))
    except ValueError:
        stages = ()
    if not stages or not set(stages) <= {1, 2}:
        raise UsageError(f"--stages must be 1, 2 or 1,2, not {value!r}")
    if 1 in stages and method != "pig":
        raise UsageError(f"stage 1 pretrains the pseudo-query generator, which --method {method} does not use; "
                         "use --stages 2")
    return stages


def check_config(config: TrainConfig, stages: tuple[int, ...]) -> None:
    if config.method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, not {config.method!r}")
    if config.backbone not in (None, *BACKBONES):
        raise UsageError(f"--backbone must be one of {', '.join(BACKBONES)}, not {config.backbone!r}")
    if (config.features is None) == (config.videos is None):
        raise UsageError("give exactly one of --features (an extract file, frozen backbone) or --videos (a folder)")
    if config.features is not None and 2 in stages and not config.freeze_backbone:
        raise UsageError("--features holds the outputs of a frozen backbone: stage 2 with --features needs "
                         "--freeze-backbone (or train from raw videos with --videos to fine-tune the backbone)")
    if config.batch_size < 1 or (2 in stages and config.batch_size < 2):
        raise UsageError(f"--batch-size must be at least 2 for the contrastive loss, not {config.batch_size}")
    if not 0 <= config.warmup < 1:
        raise UsageError(f"--warmup is a fraction of the steps in [0, 1), not {config.warmup}")
    if config.precision == "fp16":
        raise UsageError("--precision fp16 needs loss scaling, which pig train does not do; use bf16 or fp32")
    if config.eercf_weight < 0 or (config.method == "eercf" and config.eercf_weight):
        raise UsageError(f"--eercf-weight adds EERCF's loss to --method pig, meanpool or xpool (a weight >= 0); "
                         f"--method eercf trains with that loss alone, so leave it out (got {config.eercf_weight})")
    if config.stop_after is not None and config.stop_after < 1:
        raise UsageError(f"--stop-after must be a positive number of steps, not {config.stop_after}")


def training_device(config: TrainConfig, context: dist_utils.DistContext) -> tuple[torch.device, str]:
    device, precision = resolve_device(config.device, config.precision)
    if precision == "fp16":  # 'auto' on a GPU without bf16: fp16 would need loss scaling
        precision = "fp32"
    if device.type == "cuda" and context.active:
        device = torch.device("cuda", context.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device, precision


# --- parameters, optimiser, schedule --------------------------------------------------------------

def is_trainable(name: str, stage: int, method: str, freeze_backbone: bool, backbone: str,
                 eercf: bool = False) -> bool:
    """Which parameters a stage trains: stage 1 the generator only; stage 2 everything the method uses
    (eercf: whether EERCF's loss is part of it)."""
    if name.startswith("generator."):
        return method == "pig"
    if stage == 1:
        return False
    if name.startswith("eercf."):
        return eercf
    if name.startswith("fusioner."):
        return method in ("pig", "xpool")
    if name.startswith(BACKBONE_PREFIXES):
        # proxies, frame CLS and temporal embedding exist only in the ViP backbone
        return not freeze_backbone and (backbone == "vip" or not name.startswith("backbone."))
    return True  # CLIP's text encoder, text projection, logit scale


def set_trainable(pig, stage: int, method: str, freeze_backbone: bool, backbone: str, eercf: bool = False) -> int:
    """Set requires_grad on every parameter; returns how many values train."""
    count = 0
    for name, param in pig.named_parameters():  # shared vision-tower weights appear once, as clip.*
        param.requires_grad_(is_trainable(name, stage, method, freeze_backbone, backbone, eercf))
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
    progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))


def make_optimizer(pig, lr: float, lr_clip: float, weight_decay: float, warmup: float, total_steps: int):
    optimizer = torch.optim.AdamW(param_groups(pig, lr, lr_clip, weight_decay), betas=ADAM_BETAS, eps=ADAM_EPS)
    warmup_steps = round(warmup * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps))
    return optimizer, scheduler


# --- run files ------------------------------------------------------------------------------------

class RunLog:
    """OUT/log.jsonl: one JSON object per step, validation and epoch (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume: drop what an interrupted run logged after its last saved state."""
        if not (self.enabled and self.path.is_file()):
            return
        records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in records if r.get("step", 0) <= step and not (r.get("step") == step and r["event"] == "end")]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _metric_key(metrics: dict) -> tuple:
    """Best = highest t2v R@1; ties broken by R@5, then R@10 (small validation sets tie often)."""
    t2v = metrics["t2v"]
    return (t2v["R@1"], t2v["R@5"], t2v["R@10"])


def _short(metrics: dict | None) -> str:
    if not metrics:
        return "no validation"
    t2v = metrics["t2v"]
    return f"val t2v R@1 {t2v['R@1']:.1f} R@5 {t2v['R@5']:.1f} R@10 {t2v['R@10']:.1f} MdR {t2v['MdR']:.1f}"


# --- the trainer ----------------------------------------------------------------------------------

class Trainer:
    def __init__(self, config: TrainConfig, context: dist_utils.DistContext):
        self.config, self.context = config, context
        self.stages = parse_stages(config.stages, config.method)
        check_config(config, self.stages)
        self.epochs = per_stage(config.epochs, "epochs", int)
        self.steps = per_stage(config.steps, "steps", int)
        self.lr, self.lr_clip = per_stage(config.lr, "lr"), per_stage(config.lr_clip, "lr_clip")
        if config.batch_size % context.world_size:
            raise UsageError(f"--batch-size {config.batch_size} must be divisible by the "
                             f"{context.world_size} torchrun processes")
        self.out = Path(config.output)
        self._check_output()
        self.device, self.precision = training_device(config, context)
        torch.manual_seed(config.seed + context.rank)
        self.loaded = resolve_model(config.model, self.device)
        self.pig = self.loaded.model
        self.source = self._open_source()
        self.train_set = load_pairs(config.captions, set(self.source.ids), "training captions")
        self.val_set = (load_pairs(config.val_captions, set(self.source.ids), "validation captions")
                        if config.val_captions else None)
        self._check_splits()
        self.source.load(self.train_set.video_ids + (self.val_set.video_ids if self.val_set else []))
        self.train_rows = np.array([self.source.row_of(v) for v in self.train_set.video_ids])
        self.log = RunLog(self.out / "log.jsonl", context.is_main)
        self.position = _Position()
        self.best_metrics: dict | None = None
        self.last_metrics: dict | None = None
        self.final_loss: float | None = None
        self.epoch_losses: list[dict] = []  # this epoch's step losses (in the state: a resumed epoch's mean is whole)
        self.steps_this_run = 0
        self.train_seconds = 0.0
        self.pairs_this_run = 0
        self._resumed_state: dict | None = None

    # set-up --------------------------------------------------------------------------------------

    def _check_output(self) -> None:
        state = self.out / "state.pt"
        if self.config.resume and not state.is_file():
            raise UsageError(f"--resume: {state} not found; start the run without --resume")
        if not self.config.resume and state.is_file():
            raise UsageError(f"{self.out} holds a run (state.pt); continue it with --resume or choose another -o")
        if self.context.is_main:
            self.out.mkdir(parents=True, exist_ok=True)

    def _open_source(self):
        config, pig = self.config, self.pig
        if config.features is not None:
            source = FeatureSource(config.features, self.loaded, pig.config.select_k)
            if config.backbone and config.backbone != source.backbone:
                raise UsageError(f"{config.features} holds '{source.backbone}' backbone features, not "
                                 f"--backbone {config.backbone}")
            self.backbone = source.backbone
            return source
        self.backbone = config.backbone or "vip"
        try:
            decoder = resolve_decoder(config.decoder)
        except ValueError as err:
            raise UsageError(str(err)) from err
        return VideoSource(config.videos, pig.config.num_frames, pig.image_size, decoder, config.workers,
                           pin_memory=self.device.type == "cuda", seed=config.seed)

    def _warn(self, message: str) -> None:
        if self.context.is_main:  # one rank talks
            warn(message)

    def _check_splits(self) -> None:
        if self.val_set is None:
            self._warn("no --val-captions: no validation, so no best checkpoint (OUT/last only)")
            return
        shared = set(self.train_set.video_ids) & set(self.val_set.video_ids)
        if shared:
            self._warn(f"{len(shared)} validation videos are also training videos: validation R@1 is optimistic")

    # state ---------------------------------------------------------------------------------------

    def save_state(self, optimizer, scheduler) -> None:
        if not self.context.is_main:
            return
        state = {"format": STATE_FORMAT, "config": self.config.identity(), "position": asdict(self.position),
                 "model": self.pig.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
                 "scheduler": scheduler.state_dict() if scheduler else None, "rng": rng_state(self.device),
                 "best_metrics": self.best_metrics, "last_metrics": self.last_metrics, "final_loss": self.final_loss,
                 "epoch_losses": self.epoch_losses}
        _atomic_torch_save(state, self.out / "state.pt")

    def load_state(self) -> None:
        state = torch.load(self.out / "state.pt", map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise UsageError(f"{self.out / 'state.pt'} is not a pig training state ({state.get('format')!r})")
        saved, current = state["config"], self.config.identity()
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise UsageError(f"--resume with other settings than the run in {self.out} ({details}); "
                             "resume with the same options, or start a new run with another -o")
        self.pig.load_state_dict(state["model"])
        self.position = _Position(**state["position"])
        self.best_metrics, self.last_metrics = state["best_metrics"], state["last_metrics"]
        self.final_loss, self.epoch_losses = state["final_loss"], state["epoch_losses"]
        self.log.truncate_after(self.position.step)
        self._resumed_state = state
        log(f"resuming {self.out} at stage {self.stages[min(self.position.stage_index, len(self.stages) - 1)]}, "
            f"epoch {self.position.epoch + 1}, step {self.position.step}")

    def save_model(self, name: str, stage: int, epoch: int, metrics: dict | None) -> Path | None:
        """A normal pig model folder (every stage accepts it), with the run's settings in its config."""
        if not self.context.is_main:
            return None
        self.pig.config.extra["train"] = {"settings": self.config.identity(), "stage": stage, "epoch": epoch + 1,
                                          "step": self.position.step, "val": metrics}
        return save_checkpoint(self.pig, self.loaded.tokenizer, self.out / name, name=f"{self.out.name}/{name}")

    # running -------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        if self.config.resume:
            self.load_state()
        else:
            self.log.write({"event": "start", "step": 0, "settings": self.config.identity(),
                            "train_videos": len(self.train_set), "val_videos": len(self.val_set or []),
                            "world_size": self.context.world_size, "device": str(self.device),
                            "precision": self.precision})
            metrics = self.validate()
            if metrics:
                self.log.write({"event": "val", "stage": 0, "epoch": 0, "step": 0, "val": metrics})
                log(f"before training: {_short(metrics)}")
        stopped = False
        while self.position.stage_index < len(self.stages) and not stopped:
            stopped = self.run_stage(self.stages[self.position.stage_index])
        last = None
        if not stopped:
            stage = self.stages[-1]
            last = self.save_model("last", stage, self.stage_plan(stage)[0] - 1, self.last_metrics)
            self.log.write({"event": "end", "step": self.position.step})
        return self.result(stopped, last)

    def stage_plan(self, stage: int) -> tuple[int, int]:
        """(epochs, optimiser steps) of a stage: --steps when given, else --epochs full passes."""
        per_epoch = batches_per_epoch(len(self.train_set), self.config.batch_size)
        steps = self.steps[stage]
        if steps:
            return math.ceil(steps / per_epoch), steps
        epochs = self.epochs[stage]
        if not epochs or epochs < 1:
            raise UsageError(f"stage {stage} needs --epochs >= 1 or --steps >= 1")
        return epochs, epochs * per_epoch

    def run_stage(self, stage: int) -> bool:
        """Train one stage from the current position; True when stopped by stop_after."""
        config, pig = self.config, self.pig
        epochs, total_steps = self.stage_plan(stage)
        trainable = set_trainable(pig, stage, config.method, config.freeze_backbone or self.source.frozen,
                                  self.backbone, eercf=config.trains_eercf_head)
        optimizer, scheduler = make_optimizer(pig, self.lr[stage], self.lr_clip[stage], config.weight_decay,
                                              config.warmup, total_steps)
        if self._resumed_state is not None:
            if self._resumed_state["optimizer"] is not None:
                optimizer.load_state_dict(self._resumed_state["optimizer"])
                scheduler.load_state_dict(self._resumed_state["scheduler"])
            restore_rng(self._resumed_state["rng"], self.device)
            self._resumed_state = None
        log(f"stage {stage}: {config.method}, {trainable:,} trainable weights, {epochs} epochs, {total_steps} steps, "
            f"batch {config.batch_size}, {len(self.train_set)} videos")
        step_module = self._wrap(TrainStep(pig, config.method, stage, config.alpha, self.backbone,
                                                config.eercf_weight))
        while self.position.epoch < epochs:
            if self.run_epoch(stage, step_module, optimizer, scheduler, total_steps):
                return True
        self.position = _Position(self.position.stage_index + 1, 0, 0, self.position.step, 0)
        self.save_state(None, None)
        return False

    def _wrap(self, step_module: TrainStep):
        if not self.context.active:
            return step_module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(step_module, device_ids=ids)

    def run_epoch(self, stage: int, step_module, optimizer, scheduler, total_steps: int) -> bool:
        """Train from the current batch to the end of the epoch, then validate; True when stopped."""
        config, position = self.config, self.position
        plan = epoch_plan(self.train_set, config.batch_size, config.seed, stage, position.epoch)
        plan = plan[: max(0, total_steps - position.stage_step + position.batch)]  # --steps may end mid-epoch
        local = [rank_slice(b, self.context.rank, self.context.world_size) for b in plan]
        todo = local[position.batch :]
        start, pairs_before = time.perf_counter(), self.pairs_this_run
        with progress(len(todo) * config.batch_size, f"stage {stage} epoch {position.epoch + 1}", "pairs") as bar:
            batches = self.source.iterate([self.train_rows[b.videos] for b in todo])
            for batch, planned in zip(batches, todo):  # source first: it is run to its end
                if config.stop_after is not None and self.steps_this_run >= config.stop_after:
                    self.train_seconds += time.perf_counter() - start
                    self.save_state(optimizer, scheduler)
                    log(f"stopped after {self.steps_this_run} steps (--stop-after); continue with --resume")
                    return True
                self.epoch_losses.append(self.train_step(step_module, optimizer, scheduler, planned, batch, stage))
                bar.advance(config.batch_size)
        seconds = time.perf_counter() - start  # steps and the waits for decoded batches, not validation
        self.train_seconds += seconds
        self.end_epoch(stage, optimizer, scheduler, {"seconds": round(seconds, 3),
                                                     "pairs_per_s": (self.pairs_this_run - pairs_before) / seconds})
        return False

    def train_step(self, step_module, optimizer, scheduler, planned, batch, stage: int) -> dict:
        config, pig, device = self.config, self.pig, self.device
        texts = [self.train_set.captions[v][c] for v, c in zip(planned.videos, planned.captions)]
        tokens = tokenize(self.loaded.tokenizer, texts, pig.config.max_text_tokens)
        tokens = {k: v.to(device) for k, v in tokens.items()}
        valid = batch.valid.to(device)
        inputs = ({"pixels": batch.pixels.to(device, non_blocking=True)} if batch.pixels is not None
                  else {"tokens": batch.tokens.to(device)})
        enough = dist_utils.all_sum(float(valid.sum()), device) >= (1 if stage == 1 else 2)
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        values = {key: float("nan") for key in LOSS_KEYS}
        if enough:  # the same decision on every rank: a batch of undecodable videos is skipped everywhere
            step_module.train()
            with autocast(device, self.precision):
                out = step_module(tokens["input_ids"], tokens["attention_mask"], valid, **inputs)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
            optimizer.step()
            clamp_logit_scale_(pig.clip.logit_scale)
            values = dist_utils.mean_over_ranks({k: float(out[k].detach()) for k in values}, device)
            self.steps_this_run += 1
        scheduler.step()  # even for a skipped batch: the schedule follows the plan
        self.position.batch += 1
        self.position.step += 1
        self.position.stage_step += 1
        self.pairs_this_run += len(planned.videos) * self.context.world_size
        record = {"event": "step", "stage": stage, "epoch": self.position.epoch + 1, "step": self.position.step,
                  **values, "scale": float(pig.clip.logit_scale.detach().exp()), "lr": lrs,
                  "videos": int(valid.sum()) if enough else 0}
        self.log.write(record)
        return values

    def end_epoch(self, stage: int, optimizer, scheduler, timing: dict) -> None:
        position, losses = self.position, self.epoch_losses
        self.epoch_losses = []
        self.final_loss = float(np.nanmean([v["loss"] for v in losses])) if losses else self.final_loss
        metrics = self.validate()
        improved = metrics is not None and (self.best_metrics is None
                                            or _metric_key(metrics) > _metric_key(self.best_metrics))
        if improved:
            self.best_metrics = metrics
            self.save_model("best", stage, position.epoch, metrics)
        self.last_metrics = metrics
        self.log.write({"event": "epoch", "stage": stage, "epoch": position.epoch + 1, "step": position.step,
                        "train_loss": self.final_loss,
                        **{key: float(np.nanmean([v[key] for v in losses])) if losses else None
                           for key in LOSS_KEYS if key != "loss"},
                        "val": metrics, "best": improved, **timing})
        log(f"stage {stage} epoch {position.epoch + 1}: loss {self.final_loss:.4f}, {_short(metrics)}"
            f"{' (best)' if improved else ''}")
        self.position = _Position(position.stage_index, position.epoch + 1, 0, position.step, position.stage_step)
        self.save_state(optimizer, scheduler)

    # validation ----------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict | None:
        """Text-to-video and video-to-text metrics on the validation split, for the method being trained."""
        if self.val_set is None:
            return None
        pig, val = self.pig, self.val_set
        pig.eval()
        rows = np.array([self.source.row_of(v) for v in val.video_ids])
        blocks = [rows[i : i + self.config.batch_size] for i in range(0, len(rows), self.config.batch_size)]
        parts, valid = [], []
        for batch in self.source.iterate(blocks):
            with autocast(self.device, self.precision):
                inputs = (encode_pixels(pig, batch.pixels.to(self.device), self.backbone) if batch.pixels is not None
                          else batch.tokens.to(self.device))
                if self.config.method == "xpool":
                    parts.append([t.float() for t in (inputs.video, inputs.proxies, inputs.frames)])
                else:
                    parts.append(head_embedding(pig, inputs, self.config.method).float())
            valid.append(batch.valid.cpu().numpy())
        keep = np.concatenate(valid)
        texts = [text for caps, ok in zip(val.captions, keep) if ok for text in caps]
        caption_video = np.repeat(np.arange(int(keep.sum())), [len(c) for c, ok in zip(val.captions, keep) if ok])
        text, _ = embed_texts(self.loaded, texts, device=self.device, precision=self.precision)
        sim = self._val_scores(torch.from_numpy(text).to(self.device), parts, torch.from_numpy(keep).to(self.device))
        return retrieval_metrics(sim, caption_video)

    def _val_scores(self, text: torch.Tensor, parts: list, keep: torch.Tensor) -> np.ndarray:
        """[captions, valid videos] scores e_t . e_v (xpool: e_t . fuse(e_t, keys), block by block)."""
        if self.config.method != "xpool":
            video = torch.cat(parts)[keep]
            return (text @ video.T).float().cpu().numpy()
        keys = [torch.cat([p[i] for p in parts])[keep] for i in range(3)]
        blocks = []
        for start in range(0, keys[0].shape[0], self.config.batch_size):
            block = [k[start : start + self.config.batch_size] for k in keys]
            with autocast(self.device, self.precision):
                blocks.append(xpool_scores(self.pig, text, *block).float())
        return torch.cat(blocks, dim=1).cpu().numpy()

    def result(self, stopped: bool, last: Path | None) -> TrainResult:
        best = self.out / "best" if self.best_metrics is not None else None
        failures = getattr(self.source, "failures", {})
        if failures:
            self._warn(f"{len(failures)} videos could not be decoded and were left out of their batches: "
                 f"{self.source.failure_summary()}")
        return TrainResult(
            output=self.out, best=best, last=last, best_metrics=self.best_metrics, last_metrics=self.last_metrics,
            steps=self.position.step, final_loss=self.final_loss, stopped=stopped,
            train_videos=len(self.train_set), val_videos=len(self.val_set or []),
            missing_videos=len(self.train_set.missing) + len(self.val_set.missing if self.val_set else []),
            failed_videos=len(failures),
            pairs_per_second=self.pairs_this_run / self.train_seconds if self.train_seconds else 0.0)


def train(config: TrainConfig) -> TrainResult:
    """Run `pig train` (see the module docstring). Works as one process, or under torchrun (DDP)."""
    context = dist_utils.setup(resolve_device(config.device)[0].type)
    if not context.is_main:
        os.environ["PIG_QUIET"] = "1"  # one rank talks: no duplicated logs or progress bars
    try:
        trainer = Trainer(config, context)
        try:
            return trainer.run()
        finally:
            trainer.source.close()
    finally:
        dist_utils.teardown(context)
