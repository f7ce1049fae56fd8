"""`pig train`: the training loop (docs/method.md section 6), phase by phase, epoch by epoch, step by step.

Phase 1 (generator pretraining): only the generator trains; L = L_gen.
Phase 2 (joint): everything the method uses trains (the backbone unless --freeze-backbone);
L = L_ret + alpha L_gen (L_ret alone for meanpool and xpool) + beta L_eercf (--eercf-weight beta,
default 0; --method eercf: L_eercf alone). L_eercf trains the EERCF rerank head W_g, W_F.

Each phase has its own optimiser and schedule (optim), gradient clipping, and mixed precision on GPU
(bf16 autocast, or fp16 with loss scaling: precision); --grad-checkpointing trades compute for memory.
Validation after every epoch on a separate split (validate); the best checkpoint (by text-to-video
R@1) goes to OUT/best, the final one to OUT/last, both normal pig model folders. OUT/state.pt makes a
run resumable (state, --resume; saved on --save-every's cadence, at each phase's end and on SIGTERM),
OUT/log.jsonl records every step and epoch (runlog).

A step never waits for the GPU: captions are tokenized once, the step's losses stay on the device and
are copied to the host every --log-every steps (one wait), AdamW is fused on a GPU, and frames are
read ahead by DataLoader workers into pinned memory and normalised on the device (encode_pixels).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..console import log, progress, warn
from ..errors import StaleInputError, UsageError
from ..core.device import autocast, cuda_indexed, default_workers, resolve_device
from ..core.losses import clamp_logit_scale_
from ..core.text import text_token_limit, truncated
from ..inputs.captions import report_truncated
from ..model.checkpoint import check_model_target, save_checkpoint
from ..model.resolve import resolve_model
from ..inputs.video import DEFAULT_RESIZE, DEFAULT_SAMPLING, resolve_decoder
from ..stagefiles import made_by
from . import distributed as dist_utils
from .config import TrainConfig, TrainResult, check_config, parse_phases, per_phase
from .data import (CaptionTokens, FeatureSource, FrameSource, VideoSource, batches_per_epoch,
                   epoch_plan, load_pairs, rank_slice)
from .forward import TrainStep
from .optim import fused_adamw, make_optimizer, set_trainable
from .precision import LossScaler
from .runlog import RunLog
from .state import SaveCadence, StopSignal, load_state, restore_rng, save_state
from .validate import Validator, is_better, summary

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train"]

LOSS_KEYS = ("loss", "l_ret", "l_gen", "l_eercf")  # what TrainStep returns, logged per step and epoch


@dataclass
class _Position:
    phase_index: int = 0
    epoch: int = 0
    batch: int = 0        # batches done in the current epoch
    step: int = 0         # optimiser steps over the whole run
    phase_step: int = 0   # optimiser steps in the current phase


def training_device(config: TrainConfig, context: dist_utils.DistContext) -> tuple[torch.device, str]:
    """This process's device, always with its index, made the current GPU: --device (auto: a GPU when
    there is one), and under torchrun each process its LOCAL_RANK GPU."""
    device, precision = resolve_device(config.device, config.precision)
    if device.type == "cuda" and context.active:
        device = cuda_indexed(torch.device("cuda", context.local_rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device, precision


def peak_memory(device: torch.device) -> dict:
    """{'gpu_peak_mb': the most GPU memory tensors have held so far} on a GPU (the allocator's own count:
    no wait for the GPU); nothing on the CPU."""
    if device.type != "cuda":
        return {}
    return {"gpu_peak_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}


class Trainer:
    """One training run: set-up, then phase by phase, epoch by epoch, step by step from its position."""

    def __init__(self, config: TrainConfig, context: dist_utils.DistContext, stop: StopSignal | None = None):
        self.config, self.context = config, context
        self.stop_signal = stop or StopSignal()
        self.phases = parse_phases(config.phases, config.method)
        check_config(config, self.phases)
        self.epochs = per_phase(config.epochs, "epochs", int)
        self.steps = per_phase(config.steps, "steps", int)
        self.lr, self.lr_clip = per_phase(config.lr, "lr"), per_phase(config.lr_clip, "lr_clip")
        if config.batch_size % context.world_size:
            raise UsageError(f"--batch-size {config.batch_size} must be divisible by the "
                             f"{context.world_size} torchrun processes")
        self.out = Path(config.output)
        self._check_output()
        self.device, self.precision = training_device(config, context)
        torch.manual_seed(config.seed + context.rank)
        self.scaler = LossScaler(self.device, self.precision, config.loss_scale)
        self.loaded = resolve_model(config.model, self.device)
        self.pig = self.loaded.model
        self.source = self._open_source()
        # the run records the sampling and resize its frames were made with (a file's, or the options' for
        # --videos) and whether they are jittered (only --videos with uniform sampling is)
        self.config = config = replace(config, sampling=self.source.sampling, resize=self.source.resize)
        self.jitter = self._training_jitter()
        self.config = config = replace(config, jitter=self.jitter)
        self.text_tokens = text_token_limit(self.pig.config.max_text_tokens, config.paragraph)
        self.train_set = load_pairs(config.captions, set(self.source.ids), "training captions", config.paragraph)
        self.val_set = (load_pairs(config.val_captions, set(self.source.ids), "validation captions", config.paragraph)
                        if config.val_captions else None)
        self._check_splits()
        self._report_truncated()
        self.caption_tokens = CaptionTokens(self.loaded.tokenizer, self.train_set, self.text_tokens)
        self.source.load(self.train_set.video_ids + (self.val_set.video_ids if self.val_set else []))
        self.train_rows = np.array([self.source.row_of(v) for v in self.train_set.video_ids])
        self.validator = (Validator(self.loaded, self.source, self.val_set, config.method, self.backbone,
                                    config.batch_size, self.device, self.precision, config.selector,
                                    self.text_tokens)
                          if self.val_set else None)
        self.log = RunLog(self.out / "log.jsonl", context.is_main)
        self.position = _Position()
        self.best_metrics: dict | None = None
        self.last_metrics: dict | None = None
        self.final_loss: float | None = None
        self.epoch_losses: list[dict] = []  # this epoch's step losses (in the state: a resumed epoch's mean is whole)
        self.pending: list[tuple[dict, torch.Tensor]] = []  # step records whose numbers are still on the device
        self.cadence = SaveCadence(config.save_every)
        self.interrupted = False  # stopped by SIGTERM
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
        for name in ("best", "last"):  # refused now rather than after the first epoch
            check_model_target(self.out / name, force=None)
        if self.context.is_main:
            self.out.mkdir(parents=True, exist_ok=True)

    def _open_source(self):
        config, pig = self.config, self.pig
        if config.features is not None:
            source = FeatureSource(config.features, self.loaded, pig.config.select_k, config.selector)
            if config.backbone and config.backbone != source.backbone:
                raise UsageError(f"{config.features} holds '{source.backbone}' backbone features, not "
                                 f"--backbone {config.backbone}")
            self.backbone = source.backbone
            return self._check_frame_rules(source, config.features, "extract")
        self.backbone = config.backbone or "vip"
        if config.frames is not None:
            source = FrameSource(config.frames, self.loaded, self.workers, pin_memory=self.device.type == "cuda",
                                 seed=config.seed)
            return self._check_frame_rules(source, config.frames, "frames")
        try:
            decoder = resolve_decoder(config.decoder)
        except ValueError as err:
            raise UsageError(str(err)) from err
        return VideoSource(config.videos, pig.config.num_frames, pig.image_size, decoder, self.workers,
                           pin_memory=self.device.type == "cuda", seed=config.seed,
                           sampling=config.sampling or DEFAULT_SAMPLING, resize=config.resize or DEFAULT_RESIZE)

    @property
    def workers(self) -> int:
        """--workers, or from the CPU count shared by the training processes of this machine."""
        if self.config.workers is not None:
            return self.config.workers
        return default_workers()

    def _check_frame_rules(self, source, path, stage: str):
        """A features or frames file holds frames chosen and resized one way: --sampling and --resize, when
        given, must be those ways."""
        for option, wanted, held in (("sampling", self.config.sampling, source.sampling),
                                     ("resize", self.config.resize, source.resize)):
            if wanted is not None and wanted != held:
                source.close()
                raise StaleInputError(f"{path} holds frames made with --{option} {held}, not {wanted}; rerun: "
                                      f"{made_by(stage)} --{option} {wanted}, or leave out --{option} to train "
                                      f"on the file's frames")
        return source

    def _training_jitter(self) -> bool:
        """Whether training batches get the official jittered frames: uniform sampling decoded per epoch."""
        if not self.config.jitter or self.config.sampling != "uniform":
            return False
        if self.config.videos is None:
            log(f"{self.config.features or self.config.frames}: its frames are fixed, so training has no frame "
                "jitter (pig train --videos decodes each epoch with the official jittered sampling)")
            return False
        return True

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

    def _report_truncated(self) -> None:
        """Name the captions cut to the token limit, once, as pig rank and pig eval do."""
        if not self.context.is_main:
            return
        what = "paragraphs" if self.config.paragraph else "captions"
        for pairs, split in ((self.train_set, "training"), (self.val_set, "validation")):
            if pairs is not None:
                texts = [text for captions in pairs.captions for text in captions]
                report_truncated(pairs.caption_ids(), truncated(self.loaded.tokenizer, texts, self.text_tokens),
                                 self.text_tokens, f"{split} {what}")

    # state ---------------------------------------------------------------------------------------

    def save_state(self, optimizer, scheduler) -> None:
        self.flush_log()  # the state holds the epoch's losses so far
        self.cadence.saved(self.position.step)
        if self.context.is_main:
            save_state(self.out / "state.pt", self.config.identity(), asdict(self.position), self.pig, optimizer,
                       scheduler, self.device, {"best_metrics": self.best_metrics, "last_metrics": self.last_metrics,
                                                "final_loss": self.final_loss, "epoch_losses": self.epoch_losses,
                                                "scaler": self.scaler.state_dict()})

    def load_state(self) -> None:
        state = load_state(self.out / "state.pt", self.config.identity())
        self.pig.load_state_dict(state["model"])
        self.position = _Position(**state["position"])
        self.cadence.saved(self.position.step)  # the cadence counts from the state resumed
        self.best_metrics, self.last_metrics = state["best_metrics"], state["last_metrics"]
        self.final_loss, self.epoch_losses = state["final_loss"], state["epoch_losses"]
        self.scaler.load_state_dict(state.get("scaler"))  # fp16: continue with the scale reached
        self.log.truncate_after(self.position.step)
        self._resumed_state = state
        log(f"resuming {self.out} at phase {self.phases[min(self.position.phase_index, len(self.phases) - 1)]}, "
            f"epoch {self.position.epoch + 1}, step {self.position.step}")

    def save_model(self, name: str, phase: int, epoch: int, metrics: dict | None) -> Path | None:
        """A normal pig model folder (every pipeline stage accepts it), with the run's settings in its config."""
        if not self.context.is_main:
            return None
        self.pig.config.extra["train"] = {"settings": self.config.identity(), "phase": phase, "epoch": epoch + 1,
                                          "step": self.position.step, "val": metrics}
        return save_checkpoint(self.pig, self.loaded.tokenizer, self.out / name, name=f"{self.out.name}/{name}",
                               force=None)

    # running -------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        if self.config.resume:
            self.load_state()
        else:
            self.log.write({"event": "start", "step": 0, "settings": self.config.identity(),
                            "train_videos": len(self.train_set), "val_videos": len(self.val_set or []),
                            "world_size": self.context.world_size, "device": str(self.device),
                            "precision": self.precision, "loss_scaling": self.scaler.enabled})
            metrics = self.validate()
            if metrics:
                self.log.write({"event": "val", "phase": 0, "epoch": 0, "step": 0, "val": metrics})
                log(f"before training: {summary(metrics)}")
        stopped = False
        while self.position.phase_index < len(self.phases) and not stopped:
            stopped = self.run_phase(self.phases[self.position.phase_index])
        last = None
        if not stopped:
            phase = self.phases[-1]
            last = self.save_model("last", phase, self.phase_plan(phase)[0] - 1, self.last_metrics)
            self.log.write({"event": "end", "step": self.position.step})
        return self.result(stopped, last)

    def phase_plan(self, phase: int) -> tuple[int, int]:
        """(epochs, optimiser steps) of a phase: --steps when given, else --epochs full passes."""
        per_epoch = batches_per_epoch(len(self.train_set), self.config.batch_size)
        steps = self.steps[phase]
        if steps:
            return math.ceil(steps / per_epoch), steps
        epochs = self.epochs[phase]
        if not epochs or epochs < 1:
            raise UsageError(f"phase {phase} needs --epochs >= 1 or --steps >= 1")
        return epochs, epochs * per_epoch

    def run_phase(self, phase: int) -> bool:
        """Train one phase from the current position; True when stopped (--stop-after, SIGTERM)."""
        config, pig = self.config, self.pig
        epochs, total_steps = self.phase_plan(phase)
        trainable = set_trainable(pig, phase, config.method, config.freeze_backbone or self.source.frozen,
                                  self.backbone, eercf=config.trains_eercf_head)
        optimizer, scheduler = make_optimizer(pig, self.lr[phase], self.lr_clip[phase], config.weight_decay,
                                              config.warmup, total_steps, fused=fused_adamw(self.device))
        if self._resumed_state is not None:
            if self._resumed_state["optimizer"] is not None:
                optimizer.load_state_dict(self._resumed_state["optimizer"])
                scheduler.load_state_dict(self._resumed_state["scheduler"])
            restore_rng(self._resumed_state["rng"], self.device)
            self._resumed_state = None
        log(f"phase {phase}: {config.method}, {trainable:,} trainable weights, {epochs} epochs, {total_steps} steps, "
            f"batch {config.batch_size}, {len(self.train_set)} videos")
        step_module = self._wrap(TrainStep(pig, config.method, phase, config.alpha, self.backbone,
                                           config.eercf_weight, config.selector, config.grad_checkpointing))
        if config.compile:
            step_module = torch.compile(step_module)
        while self.position.epoch < epochs:
            if self.run_epoch(phase, step_module, optimizer, scheduler, total_steps):
                return True
        self.position = _Position(self.position.phase_index + 1, 0, 0, self.position.step, 0)
        self.save_state(None, None)
        return False

    def _wrap(self, step_module: TrainStep):
        if not self.context.active:
            return step_module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(step_module, device_ids=ids)

    def run_epoch(self, phase: int, step_module, optimizer, scheduler, total_steps: int) -> bool:
        """Train from the current batch to the end of the epoch, then validate; True when stopped."""
        config, position = self.config, self.position
        plan = epoch_plan(self.train_set, config.batch_size, config.seed, phase, position.epoch)
        plan = plan[: max(0, total_steps - position.phase_step + position.batch)]  # --steps may end mid-epoch
        local = [rank_slice(b, self.context.rank, self.context.world_size) for b in plan]
        todo = local[position.batch :]
        start, pairs_before, waited = time.perf_counter(), self.pairs_this_run, 0.0
        with progress(len(todo) * config.batch_size, f"phase {phase} epoch {position.epoch + 1}", "pairs") as bar:
            jitter = (config.seed, phase, position.epoch) if self.jitter else None
            batches = iter(self.source.iterate([self.train_rows[b.videos] for b in todo], jitter))
            for planned in todo:
                if config.stop_after is not None and self.steps_this_run >= config.stop_after:
                    self.train_seconds += time.perf_counter() - start
                    self.save_state(optimizer, scheduler)
                    log(f"stopped after {self.steps_this_run} steps (--stop-after); continue with --resume")
                    return True
                before = time.perf_counter()
                batch = next(batches)
                waited += time.perf_counter() - before
                self.train_step(step_module, optimizer, scheduler, planned, batch, phase)
                bar.advance(config.batch_size)
                if self.after_step(optimizer, scheduler):
                    self.train_seconds += time.perf_counter() - start
                    return True
            for _ in batches:  # the source is run to its end (a DataLoader's iterator finishes cleanly)
                pass
        self.flush_log()  # waits for the device: the epoch's time covers its steps
        seconds = time.perf_counter() - start  # steps and the waits for decoded batches, not validation
        self.train_seconds += seconds
        self.end_epoch(phase, optimizer, scheduler, {"seconds": round(seconds, 3),
                                                     "pairs_per_s": (self.pairs_this_run - pairs_before) / seconds,
                                                     "data_wait_s": round(waited, 3), **peak_memory(self.device)})
        return False

    def train_step(self, step_module, optimizer, scheduler, planned, batch, phase: int) -> None:
        """One optimiser step, queued on the device without waiting for it: its numbers are logged later
        (flush_log), from the device, every --log-every steps."""
        config, pig, device = self.config, self.pig, self.device
        input_ids = self.caption_tokens.batch(planned.videos, planned.captions).to(device, non_blocking=True)
        # a source whose rows all hold videos needs no mask (selecting by a mask makes the host wait)
        valid = None if self.source.always_valid else batch.valid.to(device, non_blocking=True)
        inputs = ({"pixels": batch.pixels.to(device, non_blocking=True)} if batch.pixels is not None
                  else {"tokens": batch.tokens.to(device)})
        enough = self._enough(batch, planned, phase)
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        scaling = {}
        if enough:  # the same decision on every rank: a batch of undecodable videos is skipped everywhere
            step_module.train()
            with autocast(device, self.precision):
                # no padding mask: CLIP's text tower is causal and pools at the first end token, so the
                # padding after it changes nothing, and transformers would check a mask on the host
                out = step_module(input_ids, None, valid, **inputs)
            optimizer.zero_grad(set_to_none=True)
            scaling = self.scaler.step(out["loss"], optimizer, config.grad_clip)  # fp16: S loss, unscale, maybe skip
            clamp_logit_scale_(pig.clip.logit_scale)
            losses = torch.stack([out[k].detach().float() for k in LOSS_KEYS])
            self.steps_this_run += 1
        else:
            losses = torch.full((len(LOSS_KEYS),), float("nan"), device=device)
        with warnings.catch_warnings():  # an fp16 step skipped for overflow is expected, not a misordered call
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            scheduler.step()  # even for a skipped batch: the schedule follows the plan
        self.position.batch += 1
        self.position.step += 1
        self.position.phase_step += 1
        self.pairs_this_run += len(planned.videos) * self.context.world_size
        numbers = torch.cat([losses, pig.clip.logit_scale.detach().float().exp().reshape(1)])
        record = {"event": "step", "phase": phase, "epoch": self.position.epoch + 1, "step": self.position.step,
                  "lr": lrs, "videos": int(batch.valid.numpy().sum()) if enough else 0, **scaling}
        self.pending.append((record, numbers))

    def _enough(self, batch, planned, phase: int) -> bool:
        """Whether the batch has the videos a step needs (1 in phase 1, 2 for the contrastive loss), the
        same on every rank; a source whose rows all hold videos needs no count over the ranks."""
        need = 1 if phase == 1 else 2
        if self.source.always_valid:
            return len(planned.videos) * self.context.world_size >= need
        return dist_utils.all_sum(float(batch.valid.sum()), self.device) >= need

    def after_step(self, optimizer, scheduler) -> bool:
        """Log every --log-every steps, save the state when --save-every says so, and stop on SIGTERM
        (saving the state); True when stopped. Under torchrun the ranks decide together, at the
        logged steps (a decision taken from each rank's clock or signal alone could differ)."""
        step = self.position.step
        synced = step % self.config.log_every == 0
        if synced:
            self.flush_log()
        clock = synced or not self.context.active
        stop, save = clock and self.stop_signal.received, self.cadence.due(step, clock)
        if synced and self.context.active:
            stop, save = dist_utils.any_rank([stop, save], self.device)
        if stop:
            self.save_state(optimizer, scheduler)
            self.interrupted = True
            log(f"stopped at step {step} by SIGTERM, state saved; continue with --resume")
        elif save:
            self.save_state(optimizer, scheduler)
        return stop

    def flush_log(self) -> None:
        """Write the pending step records, their numbers copied from the device at once (averaged over
        torchrun ranks), and add their losses to the epoch's."""
        if not self.pending:
            return
        records, numbers = zip(*self.pending)
        self.pending = []
        table = torch.stack(numbers)
        losses = dist_utils.mean_over_ranks(table[:, : len(LOSS_KEYS)]).double()
        rows = torch.cat([losses, table[:, len(LOSS_KEYS) :].double()], dim=1).tolist()  # the one wait
        for record, row in zip(records, rows):
            values = dict(zip(LOSS_KEYS, row))
            head = {k: record[k] for k in ("event", "phase", "epoch", "step")}
            rest = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in record.items() if k not in head}
            self.log.write({**head, **values, "scale": row[-1], **rest})  # rest: the loss scaler's tensors read
            self.epoch_losses.append(values)

    def end_epoch(self, phase: int, optimizer, scheduler, timing: dict) -> None:
        self.flush_log()
        position, losses = self.position, self.epoch_losses
        self.epoch_losses = []
        self.final_loss = float(np.nanmean([v["loss"] for v in losses])) if losses else self.final_loss
        metrics = self.validate()
        improved = is_better(metrics, self.best_metrics)
        if improved:
            self.best_metrics = metrics
            self.save_model("best", phase, position.epoch, metrics)
        self.last_metrics = metrics
        self.log.write({"event": "epoch", "phase": phase, "epoch": position.epoch + 1, "step": position.step,
                        "train_loss": self.final_loss,
                        **{key: float(np.nanmean([v[key] for v in losses])) if losses else None
                           for key in LOSS_KEYS if key != "loss"},
                        "val": metrics, "best": improved, **timing})
        log(f"phase {phase} epoch {position.epoch + 1}: loss {self.final_loss:.4f}, {summary(metrics)}"
            f"{' (best)' if improved else ''}")
        self.position = _Position(position.phase_index, position.epoch + 1, 0, position.step, position.phase_step)
        # the state is saved on --save-every's cadence, at the phase's end and on a stop, not every epoch

    def validate(self) -> dict | None:
        return self.validator() if self.validator else None

    def result(self, stopped: bool, last: Path | None) -> TrainResult:
        best = self.out / "best" if self.best_metrics is not None else None
        failures = getattr(self.source, "failures", {})
        if failures:
            self._warn(f"{len(failures)} videos could not be decoded and were left out of their batches: "
                 f"{self.source.failure_summary()}")
        return TrainResult(
            output=self.out, best=best, last=last, best_metrics=self.best_metrics, last_metrics=self.last_metrics,
            steps=self.position.step, final_loss=self.final_loss, stopped=stopped, interrupted=self.interrupted,
            train_videos=len(self.train_set), val_videos=len(self.val_set or []),
            missing_videos=len(self.train_set.missing) + len(self.val_set.missing if self.val_set else []),
            failed_videos=len(failures),
            pairs_per_second=self.pairs_this_run / self.train_seconds if self.train_seconds else 0.0)


def train(config: TrainConfig) -> TrainResult:
    """Run `pig train` (see the module docstring). Works as one process, or under torchrun (DDP).
    SIGTERM stops it resumably (the state saved; TrainResult.interrupted)."""
    context = dist_utils.setup(resolve_device(config.device)[0].type)
    if not context.is_main:
        os.environ["PIG_QUIET"] = "1"  # one rank talks: no duplicated logs or progress bars
    try:
        with StopSignal().installed() as stop:
            trainer = Trainer(config, context, stop)
            try:
                result = trainer.run()
                dist_utils.barrier(context)  # ranks leave together (see distributed.barrier)
                return result
            finally:
                trainer.source.close()
    finally:
        dist_utils.teardown(context)
