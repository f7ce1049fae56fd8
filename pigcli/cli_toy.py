"""`pig toy make`: the toy text-video corpus (pigcli/toy.py).

Only the command function lives here: pigcli/cli.py registers it, with its error handling, as the
`make` command of a `toy` sub-app (typer.Typer().add_typer).
"""

from pathlib import Path

import typer


def toy_make_cmd(
    out_dir: Path = typer.Argument(..., help="folder to write (videos/, split CSVs, objects.jsonl, corpus.json)"),
    videos: int = typer.Option(1200, help="number of videos (3000 for the benchmark)"),
    seed: int = typer.Option(0, help="seed: the same seed gives the same corpus"),
    frames: int = typer.Option(16, help="frames per video (at least 8)"),
    size: int = typer.Option(64, help="frame width and height in pixels (even, at least 32)"),
    splits: str = typer.Option("0.7,0.1,0.2", help="train,val,test fractions"),
    reversed_pairs: float = typer.Option(0.5, help="fraction of videos that come with their time-reversed copy"),
    force: bool = typer.Option(False, help="replace a toy corpus already in the folder"),
):
    """Make a deterministic toy text-video corpus: coloured shapes that move, appear, leave or change.

    Captions are about the order of events, the direction of motion and small objects among
    distractors, so models that ignore frame order cannot solve it. The summary (split sizes,
    R@1 ceilings) goes to stderr; the folder path to stdout.

    Example:
      pig toy make data/toy --videos 3000
    """
    from .console import log, progress
    from .toy import make_corpus, parse_splits

    fractions = parse_splits(splits)
    with progress(videos, "writing videos", unit="videos") as bar:
        stats = make_corpus(out_dir, videos=videos, seed=seed, frames=frames, size=size, splits=fractions,
                            reversed_pairs=reversed_pairs, overwrite=force, on_video=bar.advance)
    log(stats.summary())
    typer.echo(str(out_dir))
