"""Tools around the pipeline: inspect (what a file or model folder holds) and demo (everything, offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .output import emit, emit_json


def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="a stage file (.h5) or a model folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of text")] = False,
):
    """Show what a stage file or model folder holds: stage, settings, model, inputs, datasets, failures.

    Example:
      pig inspect feats.h5
    """
    from ..inspect import describe, render

    info = describe(path)
    if as_json:
        emit_json(info)
    else:
        emit(render(info))


def demo_cmd(
    work: Annotated[Path, typer.Argument(
        help="working folder (reused by a rerun: only missing steps are redone)")] = Path("pig-demo"),
    videos: Annotated[int, typer.Option(help="toy corpus size (70% train, 10% val, 20% test)")] = 3000,
    images: Annotated[int, typer.Option(help="still images for pretraining the two tower")] = 6000,
    pretrain_epochs: Annotated[int, typer.Option(help="epochs of two-tower pretraining on the images")] = 6,
    epochs: Annotated[int, typer.Option(help="training epochs per method (phase 2)")] = 6,
    generator_epochs: Annotated[int, typer.Option(help="PIG's phase 1 epochs (generator pretraining)")] = 2,
    frames: Annotated[int, typer.Option(help="frames per video")] = 8,
    seed: Annotated[int, typer.Option(help="seed for the corpus, the model and the training")] = 0,
    workers: Annotated[int, typer.Option(help="decoding processes")] = 1,
):
    """The whole method offline on CPU: a toy corpus, a small CLIP pretrained on its images, meanpool
    and PIG trained from it, every stage, and a table of R@1/R@5/R@10/MdR and online cost for meanpool
    (two tower), PIG (hybrid) and xpool (single tower), with the R@1 ceiling.

    Example:
      pig demo                      # about 6 minutes on 2 CPU cores
    """
    from ..demo import DemoSettings, ceiling, format_demo, run_demo

    settings = DemoSettings(videos=videos, images=images, pretrain_epochs=pretrain_epochs, epochs=epochs,
                            generator_epochs=generator_epochs, frames=frames, seed=seed, workers=workers)
    rows = run_demo(work, settings)
    emit(format_demo(rows, ceiling(Path(work) / "corpus")))
