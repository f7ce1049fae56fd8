"""The `pig` command line: thin Typer commands over the library functions.

Results go to stdout, logs and progress to stderr. Exit codes: 0 ok, 1 fatal error (one line; the
traceback with PIG_DEBUG=1), 2 usage error, 3 finished but some inputs failed.
Heavy imports (torch, transformers, h5py) happen inside commands so that `pig --help` is instant.
"""

import functools
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import PigError

EXIT_SOME_FAILED = 3

app = typer.Typer(
    help="pig: text-to-video retrieval with pseudo-query interaction (PIG) and EERCF reranking.\n\n"
    "Every stage reads and writes HDF5, so any stage can be inspected (pig inspect) and rerun alone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def command(*args, **kwargs):
    """Register a command whose known errors become one line on stderr and an exit code."""

    def wrap(func):
        @functools.wraps(func)
        def run(*f_args, **f_kwargs):
            try:
                return func(*f_args, **f_kwargs)
            except (typer.Exit, typer.Abort, KeyboardInterrupt):
                raise
            except PigError as err:
                _fail(str(err), err.exit_code)
            except Exception as err:  # unknown failures: still one line unless debugging
                if os.environ.get("PIG_DEBUG"):
                    raise
                _fail(f"{type(err).__name__}: {err} (set PIG_DEBUG=1 for the traceback)", 1)

        return app.command(*args, **kwargs)(run)

    return wrap


def _fail(message: str, code: int):
    if os.environ.get("PIG_DEBUG") and sys.exc_info()[0] is not None:
        raise
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


MODEL_HELP = "pig model folder, or any CLIP (hub id or folder); default: $PIG_MODEL, else openai/clip-vit-base-patch32"
FORCE_HELP = "recompute even if the output exists with other settings (discards an unfinished run)"


@command("init")
def init_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="checkpoint folder to create"),
    source: Optional[str] = typer.Option(None, "--from", help="CLIP to start from: hub id or local folder"),
    preset: Optional[str] = typer.Option(None, help="random CLIP of a named size instead: tiny | toy | b32"),
    frames: int = typer.Option(12, help="frames sampled per video (T)"),
    proxies: int = typer.Option(3, help="video proxy tokens (P)"),
    k: int = typer.Option(16, "-k", help="ITS tokens fed to the pseudo-query generator"),
    max_text_tokens: int = typer.Option(50, help="text tokens kept per query (CLIP allows 77)"),
    seed: int = typer.Option(0, help="seed for random weights (preset, and the new heads)"),
):
    """Make a pig model folder from a CLIP checkpoint, or a small random one.

    Examples:
      pig init --from openai/clip-vit-base-patch32 -o models/pig-b32
      pig init --preset tiny -o models/tiny        # offline, for tests and demos
    """
    from .model.checkpoint import init_from_clip, init_random
    from .model.pig import PigConfig

    if bool(source) == bool(preset):
        raise typer.BadParameter("give exactly one of --from or --preset")
    config = PigConfig(num_frames=frames, num_proxies=proxies, select_k=k, max_text_tokens=max_text_tokens)
    if preset:
        path = init_random(output, preset, seed=seed, pig_config=config)
    else:
        path = init_from_clip(source, output, pig_config=config, seed=seed)
    from .model.checkpoint import load_checkpoint

    typer.echo(f"{path}\t{load_checkpoint(path).identity.hash}")


@command("extract")
def extract_cmd(
    videos: List[str] = typer.Argument(..., help="video files, folders (searched recursively) or list files"),
    output: Path = typer.Option(..., "-o", "--output", help="HDF5 file to write"),
    model: Optional[str] = typer.Option(None, "-m", "--model", help=MODEL_HELP),
    backbone: str = typer.Option("vip", help="vip (video proxy tokens) | frames (CLIP per frame, CLIP4Clip style)"),
    frames: Optional[int] = typer.Option(None, help="frames per video (default: the model's)"),
    patches: str = typer.Option("all", help="patch tokens to keep: all | none | top-N (by ITS score)"),
    decoder: str = typer.Option("auto", help="auto (decord if installed) | decord | pyav"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    precision: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16"),
    batch_size: int = typer.Option(4, help="videos per model batch"),
    workers: int = typer.Option(2, help="decoding processes (0: decode in this process, no timeout)"),
    timeout: float = typer.Option(120.0, help="seconds allowed to decode one video"),
    relative_ids: bool = typer.Option(False, help="name videos by relative path instead of file name"),
    force: bool = typer.Option(False, help=FORCE_HELP),
):
    """Decode videos and run the video backbone: video, proxy, frame and patch tokens, ITS scores.

    A killed run resumes where it stopped; an unchanged rerun does nothing.
    Exit code 3 when some videos could not be read (they are recorded in the file).

    Example:
      pig extract videos/ -m models/pig-b32 -o feats.h5
    """
    from .stages.extract import ExtractSettings, extract

    settings = ExtractSettings(num_frames=frames, backbone=backbone, patches=patches, decoder=decoder,
                               precision=precision)
    summary = extract(videos, output, model, settings=settings, device=device, batch_size=batch_size,
                      workers=workers, timeout=timeout, relative_ids=relative_ids, force=force)
    _report(summary, "videos")


def _report(summary, unit: str) -> None:
    from .console import log

    if summary.skipped:
        log(f"{summary.output} is up to date ({summary.total} {unit}); use --force to recompute")
    else:
        rate = ""
        wall = summary.timings.get("wall")
        if wall:
            rate = f" in {wall:.1f}s ({summary.processed / wall:.2f} {unit}/s)"
        log(f"wrote {summary.output}: {summary.total - summary.failed} of {summary.total} {unit} ok{rate}")
    if summary.failed:
        log(f"{summary.failed} {unit} failed:")
        for message, count in summary.errors.most_common(5):
            log(f"  {count} x {message}")
        raise typer.Exit(EXIT_SOME_FAILED)


@command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(..., help="a stage file (.h5) or a model folder"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of text"),
):
    """Show what a stage file or model folder holds: stage, settings, model, inputs, datasets, failures.

    Example:
      pig inspect feats.h5
    """
    import json

    from .inspect import describe, render

    info = describe(path)
    typer.echo(json.dumps(info, indent=2, default=str) if as_json else render(info))


def main():  # pragma: no cover - console entry point alias
    app()
