"""Options shared by several commands, as `Annotated` types, and the choices they take.

One meaning per flag across commands: `-o/--output` is always the output path, `-m/--model` the
model, `-q/--query` a query text, `-k` the ITS tokens per video (init, select, index), `-n/--top`
the results per query (rank). A command that takes one of these options uses the alias below, with
its default in the signature:

    def select_cmd(features: ..., output: OutputFile, k: ItsTokens = None, force: Force = False): ...

Choices are `str` enums made from pigcli.choices' tuples, the ones the library checks against:
--help lists them and a wrong value is a usage error (exit 2) before the command runs. Commands pass
`.value` (a plain string) to the library.

Only typer, the standard library, pigcli.choices and pigcli.core.device (which imports torch only
inside its functions) are imported here (`pig --help` stays instant).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core.device import default_workers
from .. import choices as allowed

# --- choices ----------------------------------------------------------------------------------------


def choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str enum whose members are named as their values (('pig', 'meanpool') -> .pig, .meanpool)."""
    return Enum(name, {value: value for value in values}, type=str)


Precision = choices("Precision", allowed.PRECISIONS)
TrainPrecision = choices("TrainPrecision", allowed.PRECISIONS)  # fp16: with loss scaling
Selector = choices("Selector", allowed.SELECTORS)
Backbone = choices("Backbone", allowed.BACKBONES)
Decoder = choices("Decoder", allowed.DECODERS)
Sampling = choices("Sampling", allowed.SAMPLINGS)
Resize = choices("Resize", allowed.RESIZES)
FuseMethod = choices("FuseMethod", allowed.INDEX_METHODS)
ScoringMethod = choices("ScoringMethod", allowed.RANK_METHODS)
OutputFormat = choices("OutputFormat", allowed.FORMATS)
AnnType = choices("AnnType", allowed.ANN_TYPES)
TrainMethod = choices("TrainMethod", allowed.METHODS)
Preset = choices("Preset", allowed.PRESETS)


# --- options that may come without a value ------------------------------------------------------------

RERANK_AUTO = "auto"  # `--rerank` without a number: the model's tuned K (rerank.json), else 50 (query.rerank.AUTO)

# option -> the value it takes when given without one ("--rerank" last on the line, or followed by
# something that is not an integer). Filled in by PigCommand (cli/command.py) before parsing: Typer's
# parser has no optional-value options (typer.Option's flag_value is deprecated and ignored).
BARE_VALUES: dict[str, str] = {"--rerank": RERANK_AUTO}

# --- paths, models, devices -----------------------------------------------------------------------------

OUTPUT_FLAGS = ("-o", "--output")
MODEL_FLAGS = ("-m", "--model")
MODEL_HELP = "pig model folder, or any CLIP (hub id or folder); default: $PIG_MODEL, else openai/clip-vit-base-patch32"

OutputFile = Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="HDF5 file to write")]
Model = Annotated[Optional[str], typer.Option(*MODEL_FLAGS, help=MODEL_HELP)]
InputModel = Annotated[Optional[str], typer.Option(
    *MODEL_FLAGS, help="pig model folder (default: the one the input was made with)")]
QueryModel = Annotated[Optional[str], typer.Option(
    *MODEL_FLAGS, help="model to embed the text (default: the index's)")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="auto: bf16 on GPU, fp32 on CPU")]
Force = Annotated[bool, typer.Option(
    "--force/--no-force", help="recompute even if the output exists with other settings (discards an unfinished "
    "run of other settings; an unfinished run of these settings resumes)")]
StageJson = Annotated[bool, typer.Option(
    "--json", help="print one JSON object (output, counts, failures, timings) instead of the output path")]

# --- video decoding and extract settings (extract, frames, index) -------------------------------------------

BackboneOpt = Annotated[Backbone, typer.Option(
    "--backbone", help="vip: video proxy tokens; frames: CLIP per frame (CLIP4Clip style)")]
DecoderOpt = Annotated[Decoder, typer.Option(
    "--decoder", help="auto: decord if installed, else pyav; torchcodec: PyTorch's decoder, where it loads")]
SAMPLING_HELP = ("which T of a video's n frames: uniform = linspace(0, n-1, T), the official PIG / CLIP-ViP sampler "
                 "(default: runs compare with the paper and official checkpoints); centre = segment centres, "
                 "pig's sampler before this option (files made then)")
SamplingOpt = Annotated[Sampling, typer.Option("--sampling", help=SAMPLING_HELP)]
RESIZE_HELP = ("how a frame becomes S x S px: squash = resized to S x S, aspect squashed (bicubic, no antialiasing, "
               "floats kept), the official PIG / CLIP-ViP transform (default: runs compare with the paper and "
               "official checkpoints); crop = short side to S (antialiased), centre crop, pig's rule before this "
               "option (files made then)")
ResizeOpt = Annotated[Resize, typer.Option("--resize", help=RESIZE_HELP)]
Patches = Annotated[str, typer.Option("--patches", help="patch tokens to keep: all | none | top-N (by ITS score)")]
VideoBatch = Annotated[Optional[int], typer.Option(
    "--batch-size", help="videos per model batch (default: 4 on CPU, 32 on GPU)")]
Workers = Annotated[Optional[int], typer.Option(
    "--workers", show_default=False,
    help=f"decoding processes (default: one per CPU but one, here {default_workers()}; 0: decode in this process, "
    "no timeout)")]
ShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", metavar="I/N|auto",
    help="do only shard I of N (0 <= I < N; a video's shard is a hash of its id) and write OUT with "
    ".shard-I-of-N before its suffix (feats.h5 -> feats.shard-1-of-4.h5), then: pig merge. auto: "
    "torchrun's RANK/WORLD_SIZE, else SLURM_ARRAY_TASK_ID/COUNT. Under torchrun shards are automatic "
    "and rank 0 merges them into OUT")]
IdsFrom = Annotated[Optional[Path], typer.Option(
    "--ids", help="captions file (e.g. the official train9k.jsonl): its video ids name the videos, found in the "
    "folders given as the official loader finds them: FOLDER/ID.mp4, else FOLDER/<last part of ID>.mp4 (any "
    "video extension; not found: a failed video)")]
SegmentsFile = Annotated[Optional[Path], typer.Option(
    "--segments", help="shots as the rows: a file with one row per shot and a header naming its columns, shot, "
    "video (id of one of the videos given), startframe and endframe (frame numbers from 0, both included, as "
    "TRECVID's master shot reference) or starttime and endtime (seconds); tabs or commas. Each shot's frames "
    "are sampled inside it and its id is the row id (docs/shots.md)")]
RelativeIds = Annotated[bool, typer.Option(
    "--relative-ids/--no-relative-ids", help="name videos by relative path instead of file name")]

# --- ITS tokens (init, select, index) ------------------------------------------------------------------------

ItsTokens = Annotated[Optional[int], typer.Option(
    "-k", help="ITS tokens per video, chosen jointly over all frames (default: the model's, 16)")]
SelectorOpt = Annotated[Selector, typer.Option(
    "--selector", help="its: the k most attended patches; random: k random patches (an ablation of ITS)")]

# --- scoring (rank, eval) ----------------------------------------------------------------------------------

Scoring = Annotated[ScoringMethod, typer.Option(
    "--method", help="index: the stored vectors; xpool: single tower, the real query attends to each "
    "video's tokens (slow; needs the features)")]
TokenFeatures = Annotated[Optional[Path], typer.Option(
    "--features", help="token features for --method xpool and --rerank (default: found from the index's inputs)")]

# EERCF rerank: K and weights are decided in one place, pigcli.query.rerank.resolve_rerank (the
# model's rerank.json from pig tune-rerank, else docs/method.md section 7's defaults); a --w-* given
# overrides that one weight.


def _rerank_value(value):
    """--rerank's value: a number of videos, or 'auto' (what --rerank alone means)."""
    if value is None or isinstance(value, int):
        return value
    if value == RERANK_AUTO:
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number of videos (or {RERANK_AUTO!r})") from None


Rerank = Annotated[str, typer.Option(
    "--rerank", metavar="[K]", callback=_rerank_value,
    help="EERCF: rerank each query's top K by frame/patch scores with the model's rerank head; "
    "--rerank alone: the model's tuned K (rerank.json from pig tune-rerank; if tuned off, no rerank), "
    "else K = 50 (the paper's); 0: off. The K scores become the combined rerank scores")]
_WEIGHT_DEFAULT = "default: the model's rerank.json (pig tune-rerank), else"
WeightFw = Annotated[Optional[float], typer.Option(
    "--w-fw", help=f"rerank weight of S_fw (frame-weighted score); {_WEIGHT_DEFAULT} 0.8")]
WeightFs = Annotated[Optional[float], typer.Option(
    "--w-fs", help=f"rerank weight of S_fs (text-gated frame pooling); {_WEIGHT_DEFAULT} 0.2")]
WeightPw = Annotated[Optional[float], typer.Option(
    "--w-pw", help=f"rerank weight of S_pw (patch-weighted score); {_WEIGHT_DEFAULT} 0.2")]
WeightCoarse = Annotated[Optional[float], typer.Option(
    "--w-coarse", help=f"rerank weight of the index score; {_WEIGHT_DEFAULT} 0.5")]


def rerank_weights(w_fw: float | None, w_fs: float | None, w_pw: float | None, w_coarse: float | None) -> dict:
    """The --w-* options given, for the library (which fills in the others: query.rerank.resolve_rerank)."""
    given = {"fw": w_fw, "fs": w_fs, "pw": w_pw, "coarse": w_coarse}
    return {key: value for key, value in given.items() if value is not None}
