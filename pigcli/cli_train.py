"""`pig train`: the Typer command over `pigcli.train.loop.train` (registered by pigcli/cli.py).

Only typer and the standard library are imported here, so `pig --help` stays instant. The option
defaults equal `TrainConfig`'s (tests/test_train.py checks it).
"""

import os
from pathlib import Path
from typing import Optional

import typer

EXIT_SOME_FAILED = 3
MODEL_HELP = "starting pig model folder, or any CLIP (hub id or folder); default: $PIG_MODEL, else openai/clip-vit-base-patch32"
PER_STAGE = "one value for every stage, or 'STAGE1,STAGE2'"


def train_cmd(
    captions: Path = typer.Option(..., "--captions", help="training captions (csv/jsonl/json with video_id, caption)"),
    output: Path = typer.Option(..., "-o", "--output", help="run folder: best/, last/, state.pt, log.jsonl"),
    model: Optional[str] = typer.Option(None, "-m", "--model", help=MODEL_HELP),
    features: Optional[Path] = typer.Option(None, "--features", help="frozen-feature mode: an extract file (stage 1, or --freeze-backbone)"),
    videos: Optional[Path] = typer.Option(None, "--videos", help="raw-video mode: a folder (or list file) of videos, decoded every epoch"),
    val_captions: Optional[Path] = typer.Option(None, "--val-captions", help="validation split (never the test split): picks OUT/best by t2v R@1"),
    method: str = typer.Option("pig", help="pig (hybrid tower) | meanpool (two tower) | xpool (single tower) | eercf (two tower + EERCF loss)"),
    phases: Optional[str] = typer.Option(None, help="training phases: 1 (generator pretraining), 2 (joint) or 1,2; default 1,2 for pig, 2 otherwise"),
    epochs: str = typer.Option("5", help=f"epochs per stage; {PER_STAGE}"),
    steps: Optional[str] = typer.Option(None, help=f"optimiser steps per stage instead of epochs; {PER_STAGE}"),
    batch_size: int = typer.Option(128, help="global batch (split over torchrun processes)"),
    lr: str = typer.Option("9e-5,1e-5", help=f"learning rate of new modules (mapper, fusioner, proxies, temporal embedding); {PER_STAGE}"),
    lr_clip: str = typer.Option("9e-5,1e-6", help=f"learning rate of CLIP weights (incl. the generator's text layers); {PER_STAGE}"),
    weight_decay: float = typer.Option(0.2, help="AdamW weight decay (weight matrices only)"),
    warmup: float = typer.Option(0.01, help="linear warm-up, as a fraction of each stage's steps; then cosine decay"),
    alpha: float = typer.Option(1.0, help="weight of the generation loss in stage 2"),
    eercf_weight: float = typer.Option(0.0, help="add EERCF's loss with this weight in stage 2 (learns the rerank head W_g, W_F that pig rank --rerank uses); 0: off"),
    grad_clip: float = typer.Option(1.0, help="gradient norm clipping"),
    freeze_backbone: bool = typer.Option(False, help="stage 2 trains the heads and text encoder only (vision tower, proxies, temporal frozen)"),
    backbone: Optional[str] = typer.Option(None, help="raw videos: vip | frames (default vip); with --features: the file's"),
    decoder: str = typer.Option("auto", help="auto (decord if installed) | decord | pyav"),
    workers: int = typer.Option(2, help="decoding processes in raw-video mode (0: decode in this process)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N (torchrun: each process its LOCAL_RANK GPU)"),
    precision: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16"),
    seed: int = typer.Option(0, help="seed for batches, captions and dropout"),
    resume: bool = typer.Option(False, help="continue the run in OUTPUT from OUTPUT/state.pt (same options)"),
    stop_after: Optional[int] = typer.Option(None, help="stop after this many steps in this invocation, saving the state (time-limited jobs)"),
):
    """Train a pig model: stage 1 pretrains the pseudo-query generator, stage 2 fine-tunes jointly.

    Prints 'best PATH R@1' and 'last PATH' to stdout; logs every step to OUTPUT/log.jsonl.
    Multi-GPU: torchrun --nproc-per-node 4 -m pigcli train ... (DistributedDataParallel).

    Examples:
      pig train --captions train.csv --val-captions val.csv --features feats.h5 --phases 1 -m models/pig-b32 -o runs/s1
      pig train --captions train.csv --val-captions val.csv --videos videos/ -m runs/s1/best --phases 2 -o runs/s2
      pig train ... --phases 2 --eercf-weight 1 -o runs/s2   # also learn the rerank head for pig rank --rerank
    """
    from .train.loop import TrainConfig, train

    config = TrainConfig(
        output=output, captions=captions, model=model, features=features, videos=videos, val_captions=val_captions,
        method=method, phases=phases, epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, lr_clip=lr_clip,
        weight_decay=weight_decay, warmup=warmup, alpha=alpha, eercf_weight=eercf_weight, grad_clip=grad_clip, freeze_backbone=freeze_backbone,
        backbone=backbone, decoder=decoder, workers=workers, device=device, precision=precision, seed=seed,
        resume=resume, stop_after=stop_after)
    result = train(config)
    if os.environ.get("RANK", "0") != "0":  # torchrun: one process reports
        return
    if result.best is not None:
        typer.echo(f"best\t{result.best}\t{result.best_metrics['t2v']['R@1']:.2f}")
    if result.last is not None:
        typer.echo(f"last\t{result.last}")
    if result.failed_videos:
        raise typer.Exit(EXIT_SOME_FAILED)
