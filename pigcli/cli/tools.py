"""Tools around the pipeline: inspect (what a file or model folder holds), explain (a picture of a video's
ITS-selected patches) and demo (everything, offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .output import check_result_path, emit, emit_json, write_result_file


def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="a stage file (.h5) or a model folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of text")] = False,
):
    """Show what a stage file or model folder holds: stage, settings, model, inputs, datasets, failures.

    Example:
      pig inspect feats.h5
    """
    from ..tools.inspect import describe, render

    info = describe(path)
    if as_json:
        emit_json(info)
    else:
        emit(render(info))


def explain_cmd(
    video_id: Annotated[str, typer.Argument(help="the id of the video, as in the stage files and pig rank's output")],
    features: Annotated[Optional[Path], typer.Option(
        "--features", help="select file (or its generate/index file: followed back), or an extract file (then "
        "the top -k by ITS score); default: $PIG_INDEX, else ./index.h5")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write")] = Path("explain.png"),
    k: Annotated[Optional[int], typer.Option(
        "-k", help="patches to show: the top k by ITS score of an extract file (default: the model's select_k), "
        "or the best k of a select file's (default: all it selected)")] = None,
):
    """Draw a video's sampled frames with the ITS-selected patches outlined (yellow: lowest score of the
    selection, red: highest; the score printed in each patch). The frames are decoded again from the
    source video that extract recorded, exactly as extract sampled and cropped them.

    Examples:
      pig explain video7 --features sel.h5 -o explain.png
      pig explain video7 --features feats.h5 -k 8 -o top8.png     # top 8 by the extract file's ITS scores
    """
    from ..query.media import explain, png
    from ..query.rank import default_index_path

    features = features or default_index_path(None)
    check_result_path(output, [features])
    write_result_file(output, png(explain(features, video_id, k)), [features])
    emit(output)


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
    from ..tools.demo import DemoSettings, ceiling, format_demo, run_demo

    settings = DemoSettings(videos=videos, images=images, pretrain_epochs=pretrain_epochs, epochs=epochs,
                            generator_epochs=generator_epochs, frames=frames, seed=seed, workers=workers)
    rows = run_demo(work, settings)
    emit(format_demo(rows, ceiling(Path(work) / "corpus")))
