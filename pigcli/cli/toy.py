"""`pig toy make`: the built-in toy text-video corpus (pigcli/toy.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .output import emit


def toy_make_cmd(
    out_dir: Annotated[Path, typer.Argument(help="folder to write (videos/, split CSVs, objects.jsonl, corpus.json)")],
    videos: Annotated[int, typer.Option(help="number of videos (3000 for the benchmark)")] = 1200,
    seed: Annotated[int, typer.Option(help="seed: the same seed gives the same corpus")] = 0,
    frames: Annotated[int, typer.Option(help="frames per video (at least 8)")] = 16,
    size: Annotated[int, typer.Option(help="frame width and height in pixels (even, at least 32)")] = 64,
    splits: Annotated[str, typer.Option(help="train,val,test fractions")] = "0.7,0.1,0.2",
    reversed_pairs: Annotated[float, typer.Option(
        help="fraction of videos that come with their time-reversed copy")] = 0.5,
    force: Annotated[bool, typer.Option(help="replace a toy corpus already in the folder")] = False,
):
    """Make a deterministic toy text-video corpus: coloured shapes that move, appear, leave or change.

    Captions are about the order of events, the direction of motion and small objects among
    distractors, so models that ignore frame order cannot solve it. The summary (split sizes,
    R@1 ceilings) goes to stderr; the folder path to stdout.

    Example:
      pig toy make data/toy --videos 3000
    """
    from ..console import log, progress
    from ..toy import make_corpus, parse_splits

    fractions = parse_splits(splits)
    with progress(videos, "writing videos", unit="videos") as bar:
        stats = make_corpus(out_dir, videos=videos, seed=seed, frames=frames, size=size, splits=fractions,
                            reversed_pairs=reversed_pairs, overwrite=force, on_video=bar.advance)
    log(stats.summary())
    emit(out_dir)
