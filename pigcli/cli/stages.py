"""The pipeline stages: init, extract, frames, select, generate, fuse, embed-text, merge (stage files of
shards), and index (all of them).

Each prints the path it wrote on stdout, or one JSON object with --json (cli/output.py); logs and
progress go to stderr. Library imports happen inside the commands (`pig --help` stays instant).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..errors import PigError, UsageError
from .options import (MODEL_FLAGS, OUTPUT_FLAGS, BackboneOpt, Backbone, Decoder, DecoderOpt, Device, Force,
                      FuseMethod, IdsFrom, InputModel, ItsTokens, Model, OutputFile, Patches, Precision, PrecisionOpt,
                      Preset, RelativeIds, Resize, ResizeOpt, Sampling, SamplingOpt, SegmentsFile, Selector, SelectorOpt,
                      ShardOpt, StageJson, VideoBatch, Workers)
from .output import EXIT_SOME_FAILED, emit, emit_json, finish, index_record, log_failures, report_stage

VideoInputs = Annotated[List[str], typer.Argument(
    help="video files, folders (searched recursively) or list files")]


def init_cmd(
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="checkpoint folder to create")],
    source: Annotated[Optional[str], typer.Option("--from", help="CLIP to start from: hub id, CLIP folder, or a pig model folder (its CLIP, e.g. a pretrained two-tower, with new PIG heads); with --from-official: the CLIP the checkpoint was trained from (tokenizer and settings), default openai/clip-vit-base-patch32")] = None,
    official: Annotated[Optional[Path], typer.Option("--from-official", help="convert a checkpoint of the official code: a PIG model_best.pt (its state dict) or CLIP-ViP pretrained weights; T and P come from the checkpoint")] = None,
    preset: Annotated[Optional[Preset], typer.Option(help="a random CLIP of this size instead (offline)")] = None,
    frames: Annotated[int, typer.Option(help="frames sampled per video (T)")] = 12,
    proxies: Annotated[int, typer.Option(help="video proxy tokens (P)")] = 3,
    k: Annotated[int, typer.Option("-k", help="ITS tokens per video fed to the pseudo-query generator")] = 16,
    max_text_tokens: Annotated[int, typer.Option(help="text tokens kept per query (CLIP allows 77)")] = 50,
    seed: Annotated[int, typer.Option(help="seed for random weights (preset, and the new heads)")] = 0,
    vocab_from: Annotated[Optional[Path], typer.Option(
        help="with --preset: learn word tokens from this captions/text file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (path, name, hash) instead of the path")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace a pig model folder already at -o (never a folder pig did not make)")] = False,
):
    """Make a pig model folder from a CLIP checkpoint, or a small random one. Prints its path.

    Examples:
      pig init --from openai/clip-vit-base-patch32 -o models/pig-b32
      pig init --preset tiny -o models/tiny        # offline, for tests and demos
      pig init --preset toy --vocab-from data/toy/train.csv -o models/toy
      pig init --from-official outputs/msrvtt/pig_b32/ckpt/model_best.pt -o models/pig-official
      pig init --from-official pretrain_clipvip_base_32.pt --from openai/clip-vit-base-patch32 -o models/clipvip-b32
    """
    from ..model.checkpoint import ModelFolder, check_model_target
    from ..model.factory import init_from_clip, init_random
    from ..model.pig import PigConfig

    if official is not None and preset:
        raise UsageError("--from-official converts a checkpoint; --preset makes a random model: give one of them")
    if official is None and bool(source) == bool(preset):
        raise UsageError("give exactly one of --from (a CLIP) or --preset (a random CLIP), or --from-official")
    check_model_target(Path(os.path.abspath(output)), force)  # before any download or conversion
    config = PigConfig(num_frames=frames, num_proxies=proxies, select_k=k, max_text_tokens=max_text_tokens)
    if official is not None:
        from ..model.official import init_from_official

        path = init_from_official(official, output, source or OFFICIAL_BASE_CLIP, pig_config=config, seed=seed,
                                  force=force)
    elif preset:
        texts = _vocabulary_texts(vocab_from) if vocab_from else []
        path = init_random(output, preset.value, seed=seed, pig_config=config, vocab_texts=texts, force=force)
    else:
        path = init_from_clip(source, output, pig_config=config, seed=seed, force=force)
    if as_json:
        emit_json({"path": str(path), **ModelFolder.read(path).identity.to_dict()})
    else:
        emit(path)


OFFICIAL_BASE_CLIP = "openai/clip-vit-base-patch32"  # clip_config of the official PIG and CLIP-ViP B/32 configs


def _vocabulary_texts(path: Path) -> list:
    """Caption texts of a captions file, else the file's lines."""
    from ..inputs.captions import load_captions

    try:
        return [caption.text for caption in load_captions(path)]
    except PigError:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()


def extract_cmd(
    videos: VideoInputs,
    output: OutputFile,
    model: Model = None,
    backbone: BackboneOpt = Backbone.vip,
    frames: Annotated[Optional[int], typer.Option(help="frames per video (default: the model's)")] = None,
    patches: Patches = "all",
    decoder: DecoderOpt = Decoder.auto,
    sampling: SamplingOpt = Sampling.uniform,
    resize: ResizeOpt = Resize.squash,
    device: Device = "auto",
    precision: PrecisionOpt = Precision.auto,
    batch_size: VideoBatch = None,
    workers: Workers = None,
    timeout: Annotated[float, typer.Option(help="seconds allowed to decode one video, or one group of up to 16 of its shots with --segments (in worker processes: --workers 0 has no timeout)")] = 120.0,
    relative_ids: RelativeIds = False,
    shard: ShardOpt = None,
    ids: IdsFrom = None,
    segments: SegmentsFile = None,
    force: Force = False,
    as_json: StageJson = False,
):
    """Decode videos and run the video backbone: video, proxy, frame and patch tokens, ITS scores.

    A killed run resumes where it stopped; an unchanged rerun does nothing.
    Exit code 3 when some videos could not be read (they are recorded in the file).
    Several GPUs or nodes: --shard, torchrun (one GPU per process; rank 0 merges), or a SLURM array
    with --shard auto and then pig merge (README, "Scaling out").

    Examples:
      pig extract videos/ -m models/pig-b32 -o feats.h5
      pig extract videos/ -m models/pig-b32 -o feats.h5 --shard 0/2     # writes feats.shard-0-of-2.h5
      torchrun --nproc-per-node 4 -m pigcli extract videos/ -m models/pig-b32 -o feats.h5
      pig extract videos/ -m models/old -o feats.h5 --sampling centre --resize crop   # frames as pig made them before
      pig extract msrvtt/videos/all --ids test1ka.jsonl -m models/pig-b32 -o test_feats.h5
      pig extract V3C1/videos --segments v3c1_shots.tsv -m models/pig-b32 -o shot_feats.h5   # a row per shot
    """
    from ..stages.extract import ExtractSettings, extract

    settings = ExtractSettings(num_frames=frames, backbone=backbone.value, patches=patches,
                               decoder=decoder.value, precision=precision.value,
                               sampling=sampling.value, resize=resize.value)

    def run(path, plan_shard, shard_device):
        return extract(videos, path, model, settings=settings, device=shard_device, batch_size=batch_size,
                       workers=workers, timeout=timeout, relative_ids=relative_ids, ids_from=ids, force=force,
                       shard=plan_shard, segments=segments)

    _report_sharded(run, output, shard, device, force, as_json)


def _report_sharded(run, output: Path, shard: str | None, device: str, force: bool, as_json: bool) -> None:
    """Run a video stage on this process's shard (stages/shard.py) and report it; under torchrun only
    rank 0, which merged every shard into OUTPUT, reports (the other ranks print nothing), and failed
    videos do not make the exit code 3 (torchrun would call the job crashed)."""
    from ..stages.shard import resolve_shard, run_sharded, shard_device

    plan = resolve_shard(shard)
    on_device = shard_device(device, plan)
    summary = run_sharded(lambda path, plan_shard: run(path, plan_shard, on_device), output, plan, force)
    if summary is None:
        return
    try:
        report_stage(summary, "videos", as_json)
    except typer.Exit as done:
        # torchrun reports any non-zero exit as a crashed job: failed videos are listed above and recorded
        if not (plan.torchrun and done.exit_code == EXIT_SOME_FAILED):
            raise


def segments_cmd(
    references: Annotated[List[Path], typer.Argument(
        help="master shot reference: folders of one file per video (.tsv, .msb, .csv; V3C's msb/), or such files")],
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="segments file to write (tab-separated)")],
):
    """Make one segments file (for --segments) from a master shot reference of one file per video.

    Each file (e.g. V3C's msb/00001.tsv: a header with startframe, starttime, endframe, endtime) is one
    video, named by the file name without extension; its rows become shots with TRECVID's ids,
    shot<video>_<n> counted from 1. Prints the path written.

    Examples:
      pig segments V3C1/msb -o v3c1_shots.tsv
      pig index V3C1/videos --segments v3c1_shots.tsv -m models/pig-b32 -o v3c1_index.h5
    """
    from ..console import log
    from ..inputs.segments import segments_from_msb

    videos, shots = segments_from_msb(references, output)
    log(f"{shots} shots of {videos} videos")
    emit(output)


FRAMES_MODEL_HELP = ("model whose num_frames and image size are the defaults of --frames and --size (its weights "
                     "are not read): default $PIG_MODEL, else openai/clip-vit-base-patch32")


def frames_cmd(
    videos: VideoInputs,
    output: OutputFile,
    model: Annotated[Optional[str], typer.Option(*MODEL_FLAGS, help=FRAMES_MODEL_HELP)] = None,
    frames: Annotated[Optional[int], typer.Option(help="frames per video, T (default: the model's)")] = None,
    size: Annotated[Optional[int], typer.Option(help="image size in px, S (default: the model's)")] = None,
    decoder: DecoderOpt = Decoder.auto,
    sampling: SamplingOpt = Sampling.uniform,
    resize: ResizeOpt = Resize.squash,
    workers: Workers = None,
    timeout: Annotated[float, typer.Option(help="seconds allowed to decode one video, or one group of up to 16 of its shots with --segments (in worker processes: --workers 0 has no timeout)")] = 120.0,
    relative_ids: RelativeIds = False,
    shard: ShardOpt = None,
    ids: IdsFrom = None,
    segments: SegmentsFile = None,
    force: Force = False,
    as_json: StageJson = False,
):
    """Decode videos once and store their sampled frames, for pig train --frames.

    The frames are stored as training feeds them to the backbone (resized by --resize, before
    normalisation; uint8, so squash's float frames are rounded: docs/method.md s.1), so `pig train --frames` fine-tunes the whole model for many epochs without
    decoding again. The file depends on the videos, T, S, the decoder, --sampling and --resize only: it serves
    every model with the same num_frames and image size; -m only gives the defaults of T and S. Its
    frames are fixed, so training from it has no sampling jitter (pig train --videos jitters).
    Size: T*3*S*S bytes per video (1.8 MB at T=12, S=224).

    A killed run resumes where it stopped; an unchanged rerun does nothing.
    Exit code 3 when some videos could not be read (they are recorded in the file).

    Examples:
      pig frames videos/ -m models/pig-b32 -o frames.h5
      pig train --captions train.csv --frames frames.h5 -m models/pig-b32 -o runs/ft
      pig frames videos/ -o frames.h5 --shard 1/4                 # writes frames.shard-1-of-4.h5
      pig frames msrvtt/videos/all --ids train9k.jsonl -m models/pig-b32 -o train_frames.h5
    """
    from ..stages.frames import FramesSettings, frames as frames_stage

    settings = FramesSettings(num_frames=frames, image_size=size, decoder=decoder.value, sampling=sampling.value,
                              resize=resize.value)

    def run(path, plan_shard, _device):
        return frames_stage(videos, path, model, settings=settings, workers=workers, timeout=timeout,
                            relative_ids=relative_ids, ids_from=ids, force=force,
                            shard=plan_shard, segments=segments)

    _report_sharded(run, output, shard, "cpu", force, as_json)


def select_cmd(
    features: Annotated[Path, typer.Argument(help="extract file")],
    output: OutputFile,
    k: ItsTokens = None,
    model: InputModel = None,
    selector: SelectorOpt = Selector.its,
    force: Force = False,
    as_json: StageJson = False,
):
    """Informativeness Token Selector: the k most attended patch tokens of each video (docs/method.md s.2).

    Without -k, k is the model's (-m, default the one the features were made with).

    Example:
      pig select feats.h5 -k 16 -o sel.h5
    """
    from ..stages.select import select

    report_stage(select(features, output, k=k, model=model, force=force, selector=selector.value), "videos", as_json)


def generate_cmd(
    selection: Annotated[Path, typer.Argument(help="select file")],
    output: OutputFile,
    model: InputModel = None,
    device: Device = "auto",
    precision: PrecisionOpt = Precision.auto,
    force: Force = False,
    as_json: StageJson = False,
):
    """Pseudo-queries: one generated query vector per video from its selected tokens (docs/method.md s.3).

    Example:
      pig generate sel.h5 -m models/pig-b32 -o gen.h5
    """
    from ..stages.generate import generate

    report_stage(generate(selection, output, model, device=device, precision=precision.value, force=force),
                 "videos", as_json)


FUSE_METHOD_HELP = ("pig: pseudo-query attention; meanpool: two-tower baseline; "
                    "eercf: W_g of mean frames (EERCF's coarse index)")


def fuse_cmd(
    source: Annotated[Path, typer.Argument(
        help="generate file (or any feature file with --method meanpool or eercf)")],
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="index file to write")],
    model: InputModel = None,
    method: Annotated[FuseMethod, typer.Option(help=FUSE_METHOD_HELP)] = FuseMethod.pig,
    device: Device = "auto",
    precision: PrecisionOpt = Precision.auto,
    force: Force = False,
    as_json: StageJson = False,
):
    """Fuse each video into one vector: the index that rank searches (docs/method.md s.4).

    Examples:
      pig fuse gen.h5 -m models/pig-b32 -o index.h5
      pig fuse feats.h5 --method meanpool -o meanpool.h5
      pig fuse feats.h5 --method eercf -o eercf.h5      # then: pig rank eercf.h5 q.h5 --rerank 50
    """
    from ..stages.fuse import fuse

    summary = fuse(source, output, model, method=method.value, device=device, precision=precision.value, force=force)
    report_stage(summary, "videos", as_json)


def embed_text_cmd(
    queries: Annotated[str, typer.Argument(
        help="text file (one query per line), CSV/JSONL with ids, or - for stdin")],
    output: OutputFile,
    model: Model = None,
    max_tokens: Annotated[Optional[int], typer.Option(
        help="truncate longer text (default: the model's, 50; with --paragraph at least 64)")] = None,
    paragraph: Annotated[bool, typer.Option(
        help="captions file: one query per video, its captions joined (DiDeMo, ActivityNet)")] = False,
    device: Device = "auto",
    precision: PrecisionOpt = Precision.auto,
    force: Force = False,
    as_json: StageJson = False,
):
    """Embed queries with CLIP's text encoder (docs/method.md s.5). Truncated queries are named on stderr.

    Reads only the model's text tower and projection (not the video side): the same embeddings as
    the whole model, in a fraction of the time and memory.

    Examples:
      pig embed-text queries.txt -m models/pig-b32 -o q.h5
      echo "a dog catches a frisbee" | pig embed-text - -m models/pig-b32 -o q.h5
      pig embed-text test1ka.jsonl -o q.h5                        # official annotations: ids video7020#0, ...
      pig embed-text didemo_test.jsonl --paragraph -o q.h5        # one query per video, id = clip_id
    """
    from ..stages.embed_text import embed_text

    summary = embed_text(queries, output, model, max_tokens=max_tokens, paragraph=paragraph, device=device,
                         precision=precision.value,
                         force=force)
    report_stage(summary, "queries", as_json)


def merge_cmd(
    files: Annotated[List[Path], typer.Argument(help="stage files of one stage, model and settings (e.g. the shards of one run)")],
    output: OutputFile,
    force: Force = False,
    as_json: StageJson = False,
):
    """Join stage files made with the same model and settings (e.g. extract shards) into one, by rows.

    Refused: files of different stages, models or settings (the shard aside) and ids that are in
    more than one file. The output lists every merged file with its shard and fingerprint; failed
    videos' records are merged too. Works for extract, frames, select, generate, fuse and embed-text
    files; later stages read a merged file like any other.

    Examples:
      pig merge feats.shard-*-of-4.h5 -o feats.h5
      pig merge frames.shard-0-of-2.h5 frames.shard-1-of-2.h5 -o frames.h5
    """
    from ..stages.merge import merge

    report_stage(merge(files, output, force=force), "rows", as_json)


def index_cmd(
    videos: VideoInputs,
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="index file; stage files go beside it")] = Path("index.h5"),
    model: Model = None,
    k: ItsTokens = None,
    selector: SelectorOpt = Selector.its,
    method: Annotated[FuseMethod, typer.Option(help=FUSE_METHOD_HELP)] = FuseMethod.pig,
    backbone: BackboneOpt = Backbone.vip,
    patches: Patches = "all",
    decoder: DecoderOpt = Decoder.auto,
    sampling: SamplingOpt = Sampling.uniform,
    resize: ResizeOpt = Resize.squash,
    device: Device = "auto",
    precision: PrecisionOpt = Precision.auto,
    batch_size: VideoBatch = None,
    workers: Workers = None,
    relative_ids: RelativeIds = False,
    ids: IdsFrom = None,
    segments: SegmentsFile = None,
    force: Annotated[bool, typer.Option(help="recompute every stage")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (output, counts, failures, "
                                          "timings, and each stage's) instead of the index path")] = False,
):
    """extract -> select -> generate -> fuse in one go, reusing every stage file that is still valid.

    Prints the index path. Exit code 3 when some videos could not be read.

    Examples:
      pig index videos/ -m models/pig-b32 -o index.h5      # then: pig rank --query "..."
      pig index msrvtt/videos/all --ids test1ka.jsonl -m runs/s2/best -o test_index.h5   # the 1k-A test videos
      pig index V3C1/videos --segments v3c1_shots.tsv -m runs/s2/best -o v3c1_index.h5       # one row per shot
    """
    from ..stages.extract import ExtractSettings
    from ..stages.index import build_index

    settings = ExtractSettings(backbone=backbone.value, patches=patches, decoder=decoder.value,
                               precision=precision.value, sampling=sampling.value, resize=resize.value)
    summaries = build_index(videos, output, model, k=k, method=method.value, settings=settings, device=device,
                            batch_size=batch_size, workers=workers, relative_ids=relative_ids, force=force,
                            selector=selector.value, ids_from=ids, segments=segments)
    log_failures(summaries["extract"], "videos")
    finish(index_record(output, summaries), "output", as_json)
