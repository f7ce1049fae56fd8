"""`pig train`: the command over `pigcli.train.loop.train`.

The option defaults equal `TrainConfig`'s (tests/test_train.py checks it). Training runs in phases:
phase 1 pretrains the pseudo-query generator, phase 2 trains jointly ("stage" means a pipeline step).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import (MODEL_FLAGS, OUTPUT_FLAGS, RESIZE_HELP, SAMPLING_HELP, Backbone, Decoder, DecoderOpt, Resize,
                      Sampling, Selector, SelectorOpt, TrainMethod, TrainPrecision)
from .output import EXIT_SOME_FAILED, emit, emit_json

MODEL_HELP = ("starting pig model folder, or any CLIP (hub id or folder); "
              "default: $PIG_MODEL, else openai/clip-vit-base-patch32")
PER_PHASE = "one value for every phase, or 'PHASE1,PHASE2'"
METHOD_HELP = ("pig: hybrid tower; meanpool: two tower; xpool: single tower; "
               "eercf: two tower + EERCF loss")


def train_cmd(
    ctx: typer.Context,
    captions: Annotated[Path, typer.Option("--captions", help="training captions (csv/jsonl/json with video_id or clip_id, and caption/text), e.g. the official train9k.jsonl")],
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="run folder: best/, last/, state.pt, log.jsonl")],
    model: Annotated[Optional[str], typer.Option(*MODEL_FLAGS, help=MODEL_HELP)] = None,
    features: Annotated[Optional[Path], typer.Option(
        help="frozen-feature mode: an extract file (phase 1, or --freeze-backbone)")] = None,
    videos: Annotated[Optional[Path], typer.Option(
        help="raw-video mode: a folder (or list file) of videos, decoded every epoch")] = None,
    frames: Annotated[Optional[Path], typer.Option(
        help="cached-frames mode: a pig frames file (decoded once); the backbone trains unless --freeze-backbone")] = None,
    val_captions: Annotated[Optional[Path], typer.Option(
        help="validation split (never the test split): picks OUT/best by t2v R@1")] = None,
    paragraph: Annotated[bool, typer.Option(
        help="one caption per video, its captions joined, kept to at least 64 tokens (DiDeMo, ActivityNet)")] = False,
    method: Annotated[TrainMethod, typer.Option(help=METHOD_HELP)] = TrainMethod.pig,
    phases: Annotated[Optional[str], typer.Option(
        help="1 (generator pretraining), 2 (joint) or 1,2; default 1,2 for pig, 2 otherwise")] = None,
    epochs: Annotated[str, typer.Option(help=f"epochs per phase; {PER_PHASE}")] = "5",
    steps: Annotated[Optional[str], typer.Option(
        help=f"optimiser steps per phase instead of epochs; {PER_PHASE}")] = None,
    batch_size: Annotated[int, typer.Option(help="global batch (split over torchrun processes)")] = 128,
    lr: Annotated[str, typer.Option(
        help=f"learning rate of new modules (mapper, fusioner, proxies, temporal embedding); {PER_PHASE}")] = "9e-5,1e-5",
    lr_clip: Annotated[str, typer.Option(
        help=f"learning rate of CLIP weights (incl. the generator's text layers); {PER_PHASE}")] = "9e-5,1e-6",
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (weight matrices only)")] = 0.2,
    warmup: Annotated[float, typer.Option(
        help="linear warm-up, as a fraction of each phase's steps; then cosine decay")] = 0.01,
    alpha: Annotated[float, typer.Option(help="weight of the generation loss in phase 2")] = 1.0,
    eercf_weight: Annotated[float, typer.Option(
        help="add EERCF's loss with this weight in phase 2 (learns the rerank head W_g, W_F that "
        "pig rank --rerank uses); 0: off")] = 0.0,
    grad_clip: Annotated[float, typer.Option(help="gradient norm clipping")] = 1.0,
    freeze_backbone: Annotated[bool, typer.Option(
        help="phase 2 trains the heads and text encoder only (vision tower, proxies, temporal frozen)")] = False,
    backbone: Annotated[Optional[Backbone], typer.Option(
        help="--videos, --frames: vip or frames (default vip); with --features: the file's")] = None,
    selector: SelectorOpt = Selector.its,
    sampling: Annotated[Optional[Sampling], typer.Option(
        help=f"{SAMPLING_HELP}. Default: the --features or --frames file's; uniform for --videos")] = None,
    resize: Annotated[Optional[Resize], typer.Option(
        help=f"{RESIZE_HELP}. Default: the --features or --frames file's; squash for --videos")] = None,
    jitter: Annotated[bool, typer.Option(
        help="--videos with uniform sampling: jitter the first and last frame per video and epoch, as the "
        "official training does (seeded); files hold fixed frames")] = True,
    decoder: DecoderOpt = Decoder.auto,
    workers: Annotated[Optional[int], typer.Option(
        help="decoding processes with --videos, reading processes with --frames, which read ahead of the "
        "step (0: in this process); default: the CPUs less one, shared by torchrun's processes")] = None,
    device: Annotated[str, typer.Option(
        help="auto (the current GPU when there is one, else cpu) | cpu | cuda | cuda:N (torchrun: each "
        "process its LOCAL_RANK GPU)")] = "auto",
    precision: Annotated[TrainPrecision, typer.Option(
        help="auto: bf16 on a GPU that has it, else fp16; fp32 on CPU. fp16 scales the loss (dynamic, "
        "skipping overflowing steps), as the official recipe does")] = TrainPrecision.auto,
    grad_checkpointing: Annotated[bool, typer.Option(
        help="recompute the video tower's and generator's layer activations in backward: much less memory "
        "for about a third more compute (larger backbones, frames or batches per GPU)")] = False,
    compile: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the training step: faster steps on a GPU after a first minute or so "
        "of compiling")] = False,
    log_every: Annotated[int, typer.Option(
        help="copy the step losses from the device every N steps (each copy waits for the GPU); every step "
        "is still logged")] = 20,
    save_every: Annotated[str, typer.Option(
        help="write OUTPUT/state.pt (model and optimiser, for --resume) this often: a time (90s, 10m, 2h) or "
        "a number of steps (500steps); also at each phase's end, at --stop-after and on SIGTERM")] = "30m",
    seed: Annotated[int, typer.Option(help="seed for batches, captions and dropout")] = 0,
    recipe: Annotated[Optional[str], typer.Option(
        help="fill every option not given from a named recipe: msrvtt-b32 (the official PIG settings: "
        "phase 2 only, 100 epochs, batch 128, lr 3e-6, fp16, ...; pigcli/train/recipes.py lists each "
        "value's source); options given explicitly win")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in OUTPUT from OUTPUT/state.pt (same options)")] = False,
    stop_after: Annotated[Optional[int], typer.Option(
        help="stop after this many steps in this invocation, saving the state (time-limited jobs)")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="print one JSON object (best, last, best_metrics, steps, final_loss) instead of lines")] = False,
):
    """Train a pig model: phase 1 pretrains the pseudo-query generator, phase 2 fine-tunes jointly.

    Prints 'best PATH R@1' and 'last PATH' (tab-separated) to stdout, or one JSON object with --json;
    logs every step to OUTPUT/log.jsonl. Exit code 3 when some videos could not be decoded; 143 when
    stopped by SIGTERM (the state saved: continue with --resume).
    Multi-GPU: torchrun --nproc-per-node 4 -m pigcli train ... (DistributedDataParallel).

    Examples:
      pig train --captions train.csv --val-captions val.csv --features feats.h5 --phases 1 -m models/pig-b32 -o runs/p1
      pig train --captions train.csv --val-captions val.csv --videos videos/ -m runs/p1/best --phases 2 -o runs/p2
      pig frames videos/ -m runs/p1/best -o frames.h5   # decode once, then train many epochs from it:
      pig train --captions train.csv --val-captions val.csv --frames frames.h5 -m runs/p1/best --phases 2 -o runs/p2
      pig train ... --phases 2 --eercf-weight 1 -o runs/p2   # also learn the rerank head for pig rank --rerank
      torchrun --nproc-per-node 4 -m pigcli train --recipe msrvtt-b32 --captions train9k.jsonl \\
          --val-captions val.jsonl --frames frames.h5 -m models/pig-b32 -o runs/msrvtt   # the official settings
    """
    from ..train.loop import TrainConfig, train

    values = dict(
        output=output, captions=captions, model=model, features=features, videos=videos, frames=frames,
        val_captions=val_captions, paragraph=paragraph,
        method=method.value,
        phases=phases,
        epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, lr_clip=lr_clip,
        weight_decay=weight_decay, warmup=warmup, alpha=alpha, eercf_weight=eercf_weight, grad_clip=grad_clip,
        freeze_backbone=freeze_backbone, backbone=backbone.value if backbone else None, decoder=decoder.value,
        selector=selector.value, sampling=sampling.value if sampling else None,
        resize=resize.value if resize else None, jitter=jitter, workers=workers,
        device=device, precision=precision.value, grad_checkpointing=grad_checkpointing, compile=compile,
        log_every=log_every, save_every=save_every, seed=seed, resume=resume, stop_after=stop_after)
    if recipe:
        values = _with_recipe(ctx, recipe, values)
    result = train(TrainConfig(**values))
    if os.environ.get("RANK", "0") != "0":  # torchrun: one process reports
        return
    if as_json:
        emit_json({"best": result.best, "last": result.last, "best_metrics": result.best_metrics,
                   "steps": result.steps, "final_loss": result.final_loss, "stopped": result.stopped,
                   "failed_videos": result.failed_videos})
    else:
        if result.best is not None:
            emit(f"best\t{result.best}\t{result.best_metrics['t2v']['R@1']:.2f}")
        if result.last is not None:
            emit(f"last\t{result.last}")
    if result.interrupted:  # a job ended by SIGTERM reports it so; the state is saved for --resume
        raise typer.Exit(128 + signal.SIGTERM)
    if result.failed_videos:
        raise typer.Exit(EXIT_SOME_FAILED)


def _with_recipe(ctx: typer.Context, recipe: str, values: dict) -> dict:
    """The options not given on the command line filled from the recipe; says on stderr what it set and
    where the model's own settings (made by pig init) differ from the recipe's."""
    from ..console import log, warn
    from ..model.checkpoint import ModelFolder, is_checkpoint
    from ..train.recipes import apply_recipe, check_model

    # by name: typer may bring its own copy of click, whose ParameterSource is another class
    given = {name for name in values if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"}
    values, applied = apply_recipe(recipe, values, given)
    if os.environ.get("RANK", "0") == "0":
        log(f"recipe {recipe} set: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in applied.items()))
        model = values["model"] or os.environ.get("PIG_MODEL")
        if model and is_checkpoint(model):
            folder = ModelFolder.read(model)
            for difference in check_model(recipe, folder.config.to_dict(), folder.clip_config):
                warn(f"recipe {recipe}: the model's {difference}")
    return values

