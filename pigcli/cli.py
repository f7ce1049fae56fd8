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

import click
import typer
from typer.core import TyperCommand

from .cli_toy import toy_make_cmd
from .cli_train import train_cmd
from .errors import PigError, UsageError

EXIT_SOME_FAILED = 3
# click's usage errors keep click's own handling (exit 2); typer may vendor its own copy of click.
CLICK_ERRORS = tuple({click.exceptions.ClickException,
                      *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")})

app = typer.Typer(
    help="pig: text-to-video retrieval with pseudo-query interaction (PIG) and EERCF reranking.\n\n"
    "Every stage reads and writes HDF5, so any stage can be inspected (pig inspect) and rerun alone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def command(*args, target: typer.Typer | None = None, **kwargs):
    """Register a command (on `target`, default the main app) whose known errors become one line on
    stderr and an exit code."""

    def wrap(func):
        @functools.wraps(func)
        def run(*f_args, **f_kwargs):
            try:
                return func(*f_args, **f_kwargs)
            except (typer.Exit, typer.Abort, KeyboardInterrupt) + CLICK_ERRORS:
                raise
            except PigError as err:
                _fail(str(err), err.exit_code)
            except Exception as err:  # unknown failures: still one line unless debugging
                if os.environ.get("PIG_DEBUG"):
                    raise
                _fail(f"{type(err).__name__}: {err} (set PIG_DEBUG=1 for the traceback)", 1)

        return (target or app).command(*args, **kwargs)(run)

    return wrap


RERANK_DEFAULT_K = 50  # `--rerank` given without a number: EERCF's K


class RerankCommand(TyperCommand):
    """A command whose `--rerank` may come without a number (then K = RERANK_DEFAULT_K).

    click options need a value; the value is filled in before parsing when `--rerank` ends the
    command line or is followed by something that is not a number."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        filled: list[str] = []
        for i, arg in enumerate(args):
            filled.append(arg)
            if arg == "--rerank" and (i + 1 == len(args) or not args[i + 1].lstrip("-").isdigit()):
                filled.append(str(RERANK_DEFAULT_K))
            if arg == "--":
                filled.extend(args[i + 1:])
                break
        return super().parse_args(ctx, filled)


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
    vocab_from: Optional[Path] = typer.Option(None, help="with --preset: learn word tokens from this captions/text file"),
):
    """Make a pig model folder from a CLIP checkpoint, or a small random one.

    Examples:
      pig init --from openai/clip-vit-base-patch32 -o models/pig-b32
      pig init --preset tiny -o models/tiny        # offline, for tests and demos
      pig init --preset toy --vocab-from data/toy/train.csv -o models/toy
    """
    from .model.factory import init_from_clip, init_random
    from .model.pig import PigConfig

    if bool(source) == bool(preset):
        raise UsageError("give exactly one of --from (a CLIP) or --preset (a random CLIP)")
    config = PigConfig(num_frames=frames, num_proxies=proxies, select_k=k, max_text_tokens=max_text_tokens)
    if preset:
        texts = _vocabulary_texts(vocab_from) if vocab_from else []
        path = init_random(output, preset, seed=seed, pig_config=config, vocab_texts=texts)
    else:
        path = init_from_clip(source, output, pig_config=config, seed=seed)
    from .model.checkpoint import ModelFolder

    typer.echo(f"{path}\t{ModelFolder.read(path).identity.hash}")


def _vocabulary_texts(path: Path) -> list:
    """Caption texts of a captions file, else the file's lines."""
    from .captions import load_captions

    try:
        return [caption.text for caption in load_captions(path)]
    except PigError:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()


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


DEVICE_HELP = "auto | cpu | cuda | cuda:N"


@command("select")
def select_cmd(
    features: Path = typer.Argument(..., help="extract file"),
    output: Path = typer.Option(..., "-o", "--output", help="HDF5 file to write"),
    k: Optional[int] = typer.Option(None, "-k", help="tokens per video, chosen jointly over all frames (default: the model's, 16)"),
    force: bool = typer.Option(False, help=FORCE_HELP),
):
    """Informativeness Token Selector: the k most attended patch tokens of each video (docs/method.md s.2).

    Example:
      pig select feats.h5 -k 16 -o sel.h5
    """
    from .stages.select import select

    _report(select(features, output, k=k, force=force), "videos")


@command("generate")
def generate_cmd(
    selection: Path = typer.Argument(..., help="select file"),
    output: Path = typer.Option(..., "-o", "--output", help="HDF5 file to write"),
    model: Optional[str] = typer.Option(None, "-m", "--model", help="pig model folder (default: the one the input was made with)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    force: bool = typer.Option(False, help=FORCE_HELP),
):
    """Pseudo-queries: one generated query vector per video from its selected tokens (docs/method.md s.3).

    Example:
      pig generate sel.h5 -m models/pig-b32 -o gen.h5
    """
    from .stages.generate import generate

    _report(generate(selection, output, model, device=device, force=force), "videos")


@command("fuse")
def fuse_cmd(
    source: Path = typer.Argument(..., help="generate file (or any feature file with --method meanpool or eercf)"),
    output: Path = typer.Option(..., "-o", "--output", help="index file to write"),
    model: Optional[str] = typer.Option(None, "-m", "--model", help="pig model folder (default: the one the input was made with)"),
    method: str = typer.Option("pig", help="pig (pseudo-query attention) | meanpool (two-tower baseline) | eercf (W_g of mean frames: EERCF's coarse index)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    force: bool = typer.Option(False, help=FORCE_HELP),
):
    """Fuse each video into one vector: the index that rank searches (docs/method.md s.4).

    Examples:
      pig fuse gen.h5 -m models/pig-b32 -o index.h5
      pig fuse feats.h5 --method meanpool -o meanpool.h5
      pig fuse feats.h5 --method eercf -o eercf.h5      # then: pig rank eercf.h5 q.h5 --rerank 50
    """
    from .stages.fuse import fuse

    _report(fuse(source, output, model, method=method, device=device, force=force), "videos")


@command("embed-text")
def embed_text_cmd(
    queries: str = typer.Argument(..., help="text file (one query per line), CSV/JSONL with ids, or - for stdin"),
    output: Path = typer.Option(..., "-o", "--output", help="HDF5 file to write"),
    model: Optional[str] = typer.Option(None, "-m", "--model", help=MODEL_HELP),
    max_tokens: Optional[int] = typer.Option(None, help="truncate longer text (default: the model's, 50)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    force: bool = typer.Option(False, help=FORCE_HELP),
):
    """Embed queries with CLIP's text encoder (docs/method.md s.5).

    Examples:
      pig embed-text queries.txt -m models/pig-b32 -o q.h5
      echo "a dog catches a frisbee" | pig embed-text - -m models/pig-b32 -o q.h5
    """
    from .stages.embed_text import embed_text

    _report(embed_text(queries, output, model, max_tokens=max_tokens, device=device, force=force), "queries")


# EERCF rerank options, shared by rank and eval (defaults: docs/method.md section 7, RerankWeights)
RERANK_OPTION = typer.Option(0, "--rerank", help=f"EERCF: rerank each query's top K by frame/patch scores with the model's rerank head; --rerank alone: K = {RERANK_DEFAULT_K} (the paper's); 0: off. The K scores become the combined rerank scores")
W_FW_OPTION = typer.Option(0.8, "--w-fw", help="rerank weight of S_fw (frame-weighted score)")
W_FS_OPTION = typer.Option(0.2, "--w-fs", help="rerank weight of S_fs (text-gated frame pooling)")
W_PW_OPTION = typer.Option(0.2, "--w-pw", help="rerank weight of S_pw (patch-weighted score)")
W_COARSE_OPTION = typer.Option(0.5, "--w-coarse", help="rerank weight of the index score")


@command("rank", cls=RerankCommand)
def rank_cmd(
    index: Optional[Path] = typer.Argument(None, help="index file (default: $PIG_INDEX, else ./index.h5)"),
    query_file: Optional[Path] = typer.Argument(None, help="queries embedded by pig embed-text"),
    query: Optional[List[str]] = typer.Option(None, "--query", "-q", help="a query text (repeatable)"),
    queries: Optional[str] = typer.Option(None, "--queries", help="query file (text/CSV/JSONL) or - for stdin"),
    top: int = typer.Option(10, "--top", "-k", help="videos per query"),
    fmt: str = typer.Option("tsv", "--format", "-f", help="tsv (query, rank, video, score) | jsonl | trec"),
    method: str = typer.Option("index", help="index (the stored vectors) | xpool (single tower: real query attends to each video; slow)"),
    features: Optional[Path] = typer.Option(None, help="token features for --method xpool and --rerank (default: found from the index's inputs)"),
    model: Optional[str] = typer.Option(None, "-m", "--model", help="model to embed text queries (default: the index's)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    rerank: int = RERANK_OPTION,
    w_fw: float = W_FW_OPTION,
    w_fs: float = W_FS_OPTION,
    w_pw: float = W_PW_OPTION,
    w_coarse: float = W_COARSE_OPTION,
    cost: bool = typer.Option(False, "--cost", help="also print each method's multiply-adds and time per query (stderr)"),
):
    """Exact top-K videos for each query, to stdout.

    Examples:
      pig rank index.h5 q.h5 --top 10
      pig rank --query "a red car turns left" --format jsonl
      pig rank index.h5 --queries queries.txt --method xpool
      pig rank index.h5 q.h5 --rerank 50          # EERCF coarse-to-fine on the top 50
    """
    from .captions import Query, load_queries
    from .console import warn
    from .stages.rank import rank, resolve_rank_inputs, write_ranking

    index, query_file = resolve_rank_inputs(index, query_file)
    texts = None
    if query or queries:
        texts = [Query(f"q{i}", text) for i, text in enumerate(query or [], start=1)]
        if queries:
            more, warnings = load_queries(queries)
            for message in warnings:
                warn(message)
            texts += more
    weights = _rerank_weights(w_fw, w_fs, w_pw, w_coarse)
    ranking = rank(index, query_file=query_file, queries=texts, k=top, method=method, features=features,
                   model=model, device=device, rerank_k=rerank, rerank_weights=weights, cost=cost)
    write_ranking(ranking, fmt, sys.stdout)


def _rerank_weights(w_fw: float, w_fs: float, w_pw: float, w_coarse: float):
    from .model.eercf import RerankWeights

    return RerankWeights(fw=w_fw, fs=w_fs, pw=w_pw, coarse=w_coarse)


@command("eval", cls=RerankCommand)
def eval_cmd(
    index: Path = typer.Argument(..., help="index file"),
    captions: Path = typer.Option(..., "--captions", "-c", help="MSRVTT_JSFUSION_test.csv, video_id,caption CSV, or JSONL"),
    method: str = typer.Option("index", help="index | xpool (single tower, needs the features)"),
    features: Optional[Path] = typer.Option(None, help="token features for --method xpool and --rerank (default: found from the index's inputs)"),
    paragraph: bool = typer.Option(False, help="join all captions of a video into one query (DiDeMo, ActivityNet)"),
    dsl: bool = typer.Option(False, help="dual-softmax post-processing (needs all queries at once: not online)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    model: Optional[str] = typer.Option(None, "-m", "--model", help="model to embed captions (default: the index's)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    rerank: int = RERANK_OPTION,
    w_fw: float = W_FW_OPTION,
    w_fs: float = W_FS_OPTION,
    w_pw: float = W_PW_OPTION,
    w_coarse: float = W_COARSE_OPTION,
):
    """R@1/5/10, MdR and MnR, text-to-video and video-to-text; ties ranked pessimistically.

    With --rerank: text-to-video only (the rerank is per query).

    Examples:
      pig eval index.h5 --captions MSRVTT_JSFUSION_test.csv
      pig eval index.h5 --captions test.csv --rerank 50
    """
    import json

    from .console import warn
    from .stages.evaluate import evaluate

    report = evaluate(index, captions, model=model, method=method, features=features, paragraph=paragraph,
                      dsl=dsl, device=device, rerank_k=rerank, rerank_weights=_rerank_weights(w_fw, w_fs, w_pw, w_coarse))
    if report.missing_videos:
        warn(f"{len(report.missing_videos)} captioned videos are not in the index and were left out "
             f"(e.g. {', '.join(report.missing_videos[:5])})")
    if report.uncaptioned_videos:
        warn(f"{report.uncaptioned_videos} index videos have no caption: they stay in the gallery as distractors")
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())


@command("index")
def index_cmd(
    videos: List[str] = typer.Argument(..., help="video files, folders or list files"),
    output: Path = typer.Option(Path("index.h5"), "-o", "--output", help="index file; stage files go beside it"),
    model: Optional[str] = typer.Option(None, "-m", "--model", help=MODEL_HELP),
    k: Optional[int] = typer.Option(None, "-k", help="ITS tokens per video (default: the model's, 16)"),
    method: str = typer.Option("pig", help="pig | meanpool | eercf (see pig fuse --help)"),
    backbone: str = typer.Option("vip", help="vip | frames"),
    patches: str = typer.Option("all", help="patch tokens to keep: all | none | top-N"),
    decoder: str = typer.Option("auto", help="auto | decord | pyav"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    batch_size: int = typer.Option(4, help="videos per model batch"),
    workers: int = typer.Option(2, help="decoding processes"),
    relative_ids: bool = typer.Option(False, help="name videos by relative path"),
    force: bool = typer.Option(False, help="recompute every stage"),
):
    """extract -> select -> generate -> fuse in one go, reusing every stage file that is still valid.

    Example:
      pig index videos/ -m models/pig-b32 -o index.h5      # then: pig rank --query "..."
    """
    from .stages.extract import ExtractSettings
    from .stages.index import build_index

    settings = ExtractSettings(backbone=backbone, patches=patches, decoder=decoder)
    summaries = build_index(videos, output, model, k=k, method=method, settings=settings, device=device,
                            batch_size=batch_size, workers=workers, relative_ids=relative_ids, force=force)
    extract_summary = summaries["extract"]
    if extract_summary.failed:
        _report(extract_summary, "videos")


@command("demo")
def demo_cmd(
    work: Path = typer.Argument(Path("pig-demo"), help="working folder (reused by a rerun: only missing steps are redone)"),
    videos: int = typer.Option(1200, help="toy corpus size (70% train, 10% val, 20% test)"),
    epochs: int = typer.Option(25, help="training epochs per method"),
    frames: int = typer.Option(8, help="frames per video"),
    seed: int = typer.Option(0, help="seed for the corpus, the model and the training"),
    workers: int = typer.Option(1, help="decoding processes"),
):
    """The whole method offline on CPU: toy corpus, training from scratch, every stage, and a table
    of R@1/R@5/R@10/MdR and online cost for meanpool (two tower), PIG (hybrid) and xpool (single tower).

    Example:
      pig demo                      # about 10 minutes on 2 CPU cores
    """
    from .demo import DemoSettings, format_demo, run_demo

    settings = DemoSettings(videos=videos, epochs=epochs, frames=frames, seed=seed, workers=workers)
    typer.echo(format_demo(run_demo(work, settings)))


command("train")(train_cmd)

toy_app = typer.Typer(help="The built-in toy text-video corpus.", no_args_is_help=True)
app.add_typer(toy_app, name="toy")
command("make", target=toy_app)(toy_make_cmd)


def main():  # pragma: no cover - console entry point alias
    app()
