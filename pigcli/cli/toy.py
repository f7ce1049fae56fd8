"""`pig toy make`: the built-in toy text-video corpora (pigcli/toy/shots.py, pigcli/toy/corpus.py)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .output import emit


class ToyKind(str, Enum):
    shots = "shots"    # multi-shot videos, captions about the salient shot (default)
    events = "events"  # order, direction and change events among distractors


def toy_make_cmd(
    out_dir: Annotated[Path, typer.Argument(help="folder to write (videos/, split CSVs, objects.jsonl, corpus.json)")],
    kind: Annotated[ToyKind, typer.Option(
        help="shots: 2-3 shots per video, captions describe the longest (salient) one, plus still images "
             "for pretraining (pretrain/, pretrain.csv); events: single-shot videos about event order, "
             "direction and change among distractors")] = ToyKind.shots,
    videos: Annotated[int, typer.Option(help="number of videos (3000 for the benchmark)")] = 3000,
    seed: Annotated[int, typer.Option(help="seed: the same seed gives the same corpus")] = 0,
    frames: Annotated[int, typer.Option(help="frames per video (at least 8)")] = 16,
    size: Annotated[int, typer.Option(help="frame width and height in pixels (even, at least 32)")] = 64,
    splits: Annotated[str, typer.Option(help="train,val,test fractions")] = "0.7,0.1,0.2",
    pretrain: Annotated[Optional[int], typer.Option(
        help="shots: still images for pretraining (default: 2 per video)")] = None,
    reversed_pairs: Annotated[float, typer.Option(
        help="events: fraction of videos that come with their time-reversed copy")] = 0.5,
    force: Annotated[bool, typer.Option(help="replace a toy corpus already in the folder")] = False,
):
    """Make a deterministic toy text-video corpus of coloured shapes, with captions and object boxes.

    shots (default): each video is 2-3 shots; the longest holds an object moving in one direction,
    and the captions describe only that shot, as real captions name what is salient and not the
    clutter; a third of the videos have a twin that differs only in direction. events: captions
    about the order of events, the direction of motion and small objects among distractors. The
    summary (split sizes, R@1 ceilings) goes to stderr; the folder path to stdout.

    Examples:
      pig toy make data/toy --videos 3000
      pig toy make data/events --kind events --videos 1200
    """
    from ..console import log, progress
    from ..toy.corpus import make_corpus, parse_splits
    from ..toy.shots import PRETRAIN_PER_VIDEO, make_shots_corpus

    fractions = parse_splits(splits)
    if kind is ToyKind.shots:
        total = videos + (round(PRETRAIN_PER_VIDEO * videos) if pretrain is None else pretrain)
        with progress(total, "writing videos", unit="videos") as bar:
            stats = make_shots_corpus(out_dir, videos=videos, seed=seed, frames=frames, size=size, splits=fractions,
                                      pretrain=pretrain, overwrite=force, on_video=bar.advance)
    else:
        with progress(videos, "writing videos", unit="videos") as bar:
            stats = make_corpus(out_dir, videos=videos, seed=seed, frames=frames, size=size, splits=fractions,
                                reversed_pairs=reversed_pairs, overwrite=force, on_video=bar.advance)
    log(stats.summary())
    emit(out_dir)
