"""Searching an index: rank (a ranked list per query, to stdout) and eval (retrieval metrics)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .options import (Device, OutputFormat, QueryModel, Rerank, Scoring, ScoringMethod, TokenFeatures, WeightCoarse,
                      WeightFs, WeightFw, WeightPw, rerank_weights)
from .output import emit, emit_json


def rank_cmd(
    index: Annotated[Optional[Path], typer.Argument(help="index file (default: $PIG_INDEX, else ./index.h5)")] = None,
    query_file: Annotated[Optional[Path], typer.Argument(help="queries embedded by pig embed-text")] = None,
    query: Annotated[Optional[List[str]], typer.Option("--query", "-q", help="a query text (repeatable)")] = None,
    queries: Annotated[Optional[str], typer.Option(help="query file (text/CSV/JSONL) or - for stdin")] = None,
    top: Annotated[int, typer.Option("--top", "-n", help="videos per query")] = 10,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", "-f", help="tsv: query, rank, video, score; jsonl: one object per line; trec: a TREC run")] = OutputFormat.tsv,
    method: Scoring = ScoringMethod.index,
    features: TokenFeatures = None,
    model: QueryModel = None,
    device: Device = "auto",
    rerank: Rerank = 0,
    w_fw: WeightFw = None,
    w_fs: WeightFs = None,
    w_pw: WeightPw = None,
    w_coarse: WeightCoarse = None,
    cost: Annotated[bool, typer.Option("--cost", help="also print each method's multiply-adds and time per query (stderr)")] = False,
):
    """Exact top-N videos for each query, to stdout.

    Examples:
      pig rank index.h5 q.h5 --top 10
      pig rank --query "a red car turns left" -n 5 --format jsonl
      pig rank index.h5 --queries queries.txt --method xpool
      pig rank index.h5 q.h5 --rerank 50          # EERCF coarse-to-fine on the top 50
      pig rank index.h5 q.h5 --rerank             # K and weights from pig tune-rerank (else K = 50)
    """
    from ..captions import Query, load_queries
    from ..console import warn
    from ..stages.rank import rank, resolve_rank_inputs, write_ranking

    index, query_file = resolve_rank_inputs(index, query_file)
    texts = None
    if query or queries:
        texts = [Query(f"q{i}", text) for i, text in enumerate(query or [], start=1)]
        if queries:
            more, warnings = load_queries(queries)
            for message in warnings:
                warn(message)
            texts += more
    ranking = rank(index, query_file=query_file, queries=texts, k=top, method=method.value, features=features,
                   model=model, device=device, rerank_k=rerank,
                   rerank_weights=rerank_weights(w_fw, w_fs, w_pw, w_coarse), cost=cost)
    write_ranking(ranking, fmt.value, sys.stdout)


def eval_cmd(
    index: Annotated[Path, typer.Argument(help="index file")],
    captions: Annotated[Path, typer.Option(
        "--captions", "-c", help="MSRVTT_JSFUSION_test.csv, video_id,caption CSV, or JSONL")],
    method: Scoring = ScoringMethod.index,
    features: TokenFeatures = None,
    paragraph: Annotated[bool, typer.Option(help="join all captions of a video into one query (DiDeMo, ActivityNet)")] = False,
    dsl: Annotated[bool, typer.Option(help="dual-softmax post-processing (needs all queries at once: not online)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    model: QueryModel = None,
    device: Device = "auto",
    rerank: Rerank = 0,
    w_fw: WeightFw = None,
    w_fs: WeightFs = None,
    w_pw: WeightPw = None,
    w_coarse: WeightCoarse = None,
):
    """R@1/5/10, MdR and MnR, text-to-video and video-to-text; ties ranked pessimistically.

    With --rerank: text-to-video only (the rerank is per query).

    Examples:
      pig eval index.h5 --captions MSRVTT_JSFUSION_test.csv
      pig eval index.h5 --captions test.csv --rerank 50
      pig eval index.h5 --captions test.csv --rerank --w-coarse 1   # tuned K and weights, one overridden
    """
    from ..console import warn
    from ..stages.evaluate import evaluate

    report = evaluate(index, captions, model=model, method=method.value, features=features, paragraph=paragraph,
                      dsl=dsl, device=device, rerank_k=rerank,
                      rerank_weights=rerank_weights(w_fw, w_fs, w_pw, w_coarse))
    if report.missing_videos:
        warn(f"{len(report.missing_videos)} captioned videos are not in the index and were left out "
             f"(e.g. {', '.join(report.missing_videos[:5])})")
    if report.uncaptioned_videos:
        warn(f"{report.uncaptioned_videos} index videos have no caption: they stay in the gallery as distractors")
    if as_json:
        emit_json(report.to_dict())
    else:
        emit(report.table())

