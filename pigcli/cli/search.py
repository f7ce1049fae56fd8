"""Searching an index: rank (a ranked list per query, to stdout), eval (retrieval metrics) and
tune-rerank (EERCF's rerank K and weights chosen on validation captions, stored with the model)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .options import (OUTPUT_FLAGS, AnnType, Device, OutputFormat, QueryModel, Rerank, Scoring, ScoringMethod,
                      TokenFeatures, WeightCoarse, WeightFs, WeightFw, WeightPw, rerank_weights)
from .output import check_result_path, emit, emit_json


def rank_cmd(
    index: Annotated[Optional[Path], typer.Argument(help="index file (default: $PIG_INDEX, else ./index.h5)")] = None,
    query_file: Annotated[Optional[Path], typer.Argument(help="queries embedded by pig embed-text")] = None,
    query: Annotated[Optional[List[str]], typer.Option("--query", "-q", help="a query text (repeatable)")] = None,
    queries: Annotated[Optional[str], typer.Option(help="query file (text/CSV/JSONL) or - for stdin")] = None,
    topics: Annotated[Optional[Path], typer.Option(
        "--topics", help="TRECVID topics file (XML <videoAdhocSearchTopic num= text=> or 'ID text' lines): "
        "one query per topic, its id the topic number")] = None,
    top: Annotated[int, typer.Option("--top", "-n", help="videos (or shots) per query; TRECVID runs: 1000")] = 10,
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", "-f", help="tsv: query, rank, video, score, with backslash, tab, newline and CR in ids written "
        "as \\\\, \\t, \\n, \\r; jsonl: one object per line: query (the text; null if the query file has none), "
        "query_id, rank, video, score; trec: a TREC run (6 fields), with '%', whitespace "
        "and non-printable characters in ids percent-encoded (%20, %09, %25: undo with urllib.parse.unquote); "
        "html: one self-contained page (query texts, ranks, ids, scores, thumbnails), to -o or a pipe, "
        "never to a terminal")] = OutputFormat.tsv,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="write the ranking to this file (then its path is printed) instead of stdout")] = None,
    run_tag: Annotated[str, typer.Option(
        "--run-tag", help="trec: the run name in the last field (no whitespace)")] = "pig",
    thumbnails: Annotated[int, typer.Option(
        "--thumbnails", help="html: frames per video, decoded from the source videos (0: none)")] = 4,
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
    ann: Annotated[Optional[Path], typer.Option(
        "--ann", help="approximate search: candidates from this file of pig index-ann (built from this index), "
        "rescored exactly; default: the exact scan")] = None,
    nprobe: Annotated[Optional[int], typer.Option(
        "--nprobe", min=1, help="--ann ivfpq: inverted lists searched per query (default: recorded at build)")] = None,
    ef_search: Annotated[Optional[int], typer.Option(
        "--ef-search", min=1, help="--ann hnsw: search breadth (default: recorded at build)")] = None,
    refine: Annotated[Optional[int], typer.Option(
        "--refine", min=1, help="--ann: take refine x N candidates from the ANN, rescored exactly "
        "(default: recorded at build; 30 for ivfpq, 1 otherwise)")] = None,
):
    """Top-N videos for each query, to stdout (or -o FILE): exact, or approximate with --ann.

    --query/--queries are embedded with the model's text side alone (its text tower and projection,
    not the video side), the same embeddings in a fraction of the time and memory
    (benchmarks/RESULTS_query.md); --method xpool and --cost load the whole model.

    Examples:
      pig rank index.h5 q.h5 --top 10
      pig rank --query "a red car turns left" -n 5 --format jsonl
      pig rank index.h5 --queries queries.txt --method xpool
      pig rank index.h5 q.h5 --rerank 50          # EERCF coarse-to-fine on the top 50
      pig rank index.h5 q.h5 --rerank             # K and weights from pig tune-rerank (else K = 50)
      pig rank index.h5 --queries queries.txt -n 5 --format html -o results.html
      pig rank index.h5 q.h5 --ann index.faiss --nprobe 32   # approximate (pig index-ann)
      pig rank shots.h5 --topics topics.xml -n 1000 -f trec --run-tag F-Pig -o run.txt   # TRECVID
    """
    from ..inputs.captions import Query, load_queries
    from ..console import warn
    from ..errors import UsageError
    from ..query.rank import check_query_sources, default_index_path, rank, resolve_rank_inputs

    index, query_file = resolve_rank_inputs(index, query_file)
    check_query_sources(query_file, bool(query or queries or topics))
    if not run_tag or any(c.isspace() for c in run_tag):
        raise UsageError(f"--run-tag must be one word (no whitespace), not {run_tag!r}")
    if fmt == OutputFormat.html and output is None and sys.stdout.isatty():
        raise UsageError("--format html writes a whole page: give -o results.html (or redirect stdout)")
    if thumbnails < 0:
        raise UsageError(f"--thumbnails must be 0 or more, not {thumbnails}")
    inputs = [index, query_file, queries, topics, features]
    if output is not None:
        check_result_path(output, inputs)
    texts = None
    if query is not None and any(not text.strip() for text in query):
        raise UsageError("--query/-q is empty: give the text to search for, e.g. -q \"a red car\"")
    if query or queries or topics:
        texts = [Query(f"q{i}", text) for i, text in enumerate(query or [], start=1)]
        if topics:
            from ..inputs.trec import read_topics

            texts += read_topics(topics)
        if queries:
            more, warnings = load_queries(queries)
            for message in warnings:
                warn(message)
            texts += more
    ranking = rank(index, query_file=query_file, queries=texts, k=top, method=method.value, features=features,
                   model=model, device=device, rerank_k=rerank,
                   rerank_weights=rerank_weights(w_fw, w_fs, w_pw, w_coarse), cost=cost, ann=ann,
                   ann_options={"nprobe": nprobe, "ef_search": ef_search, "refine": refine})
    thumbs = None
    if fmt == OutputFormat.html and thumbnails:
        from functools import partial

        from ..query.media import SourceVideos

        thumbs = partial(SourceVideos(default_index_path(index), features).thumbnails, count=thumbnails)
    _write_ranking(ranking, fmt.value, output, thumbs, inputs, run_tag)


def _write_ranking(ranking, fmt: str, output: Path | None, thumbnails, inputs, run_tag: str = "pig") -> None:
    """To stdout, or to the file `output` (written whole, its path printed)."""
    import io

    from ..query.rank import write_ranking
    from .output import write_result_file

    if output is None:
        write_ranking(ranking, fmt, sys.stdout, run_name=run_tag, thumbnails=thumbnails)
        return
    text = io.StringIO()
    write_ranking(ranking, fmt, text, run_name=run_tag, thumbnails=thumbnails)
    write_result_file(output, text.getvalue().encode("utf-8"), inputs)
    emit(output)


def eval_cmd(
    index: Annotated[Path, typer.Argument(help="index file; with --qrels: a TREC run (pig rank --format trec)")],
    captions: Annotated[Optional[Path], typer.Option(
        "--captions", "-c", help="MSRVTT_JSFUSION_test.csv, video_id,caption CSV, or JSONL")] = None,
    qrels: Annotated[Optional[Path], typer.Option(
        "--qrels", help="TRECVID qrels ('topic stratum shot judgement', or sample_eval.pl's 5 fields): score "
        "the run given as the argument with infAP as sample_eval.pl estimates it, plus AP, P@k and recall")] = None,
    depth: Annotated[int, typer.Option(
        "--depth", help="--qrels: shots of each topic's run that count (sample_eval.pl's result size)")] = 1000,
    method: Scoring = ScoringMethod.index,
    features: TokenFeatures = None,
    paragraph: Annotated[bool, typer.Option(
        help="join all captions of a video into one query, kept to at least 64 tokens (DiDeMo, ActivityNet)")] = False,
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
    """R@1/5/10, MdR and MnR, text-to-video and video-to-text; ties ranked pessimistically; or, with
    --qrels, a TREC run scored as TRECVID scores Ad-hoc Video Search.

    Video-to-text as CLIP4Clip and X-Pool compute it: a video's captions form one group scored by its
    best caption, and each video ranks the groups. Captions longer than the token limit are named on
    stderr. With --rerank: text-to-video only (the rerank is per query).

    Examples:
      pig eval index.h5 --captions MSRVTT_JSFUSION_test.csv
      pig eval index.h5 --captions test1ka.jsonl                   # the official PIG / CLIP-ViP file
      pig eval didemo_index.h5 --captions didemo_test.jsonl --paragraph
      pig eval index.h5 --captions test.csv --rerank 50
      pig eval index.h5 --captions test.csv --rerank --w-coarse 1   # tuned K and weights, one overridden
      pig eval run.txt --qrels avs.qrels.tv19                      # infAP (sample_eval.pl), AP, P@k, recall

    With --qrels: infAP and inferred P@10/100/1000 as sample_eval.pl estimates them from the judged
    sample of each stratum; AP, P@k and recall from trec_eval (pip install 'pigcli[trec]'), unjudged
    shots counted as not relevant (exact only where every pooled shot is judged). The mean is over the
    topics of both the run and the qrels, as sample_eval.pl takes it.
    """
    from ..console import warn
    from ..errors import UsageError
    from ..query.evaluate import evaluate

    if (captions is None) == (qrels is None):
        raise UsageError("give --captions (an index's retrieval metrics) or --qrels (a TREC run's infAP), one of them")
    if qrels is not None:
        index_options = {"--method": method != ScoringMethod.index, "--features": features is not None,
                         "--paragraph": paragraph, "--dsl": dsl, "--model": model is not None, "--rerank": rerank != 0}
        given = [name for name, used in index_options.items() if used]
        if given:
            raise UsageError(f"{', '.join(given)} score an index; --qrels scores a finished run: leave them out")
        _eval_trec_run(index, qrels, depth, as_json)
        return

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


def _eval_trec_run(run: Path, qrels: Path, depth: int, as_json: bool) -> None:
    from ..console import warn
    from ..query.trec import evaluate_run

    report = evaluate_run(run, qrels, depth)
    if report.missing_topics:
        warn(f"{len(report.missing_topics)} judged topics have no shot in the run and are left out of the mean, "
             f"as sample_eval.pl leaves them (e.g. {', '.join(report.missing_topics[:5])})")
    if report.unjudged_topics:
        warn(f"{len(report.unjudged_topics)} run topics are not in the qrels (e.g. "
             f"{', '.join(report.unjudged_topics[:5])})")
    if as_json:
        emit_json(report.to_dict())
    else:
        emit(report.table())


def tune_rerank_cmd(
    index: Annotated[Path, typer.Argument(help="index file of VALIDATION videos (never the test split)")],
    captions: Annotated[Path, typer.Option(
        "--captions", "-c", help="validation captions (video_id,caption CSV, MSRVTT CSV or JSONL)")],
    features: Annotated[Optional[Path], typer.Option(
        "--features", help="extract file of the index's videos (default: found from the index's inputs)")] = None,
    model: QueryModel = None,
    device: Device = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the table, write nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the choice as JSON instead of the path")] = False,
):
    """Choose EERCF's rerank K and weights on validation captions and store them with the model.

    Tries K in 10, 20, 50, 100 (at most the index's videos), w_coarse in 0.5, 1, 2 and w_fw, w_fs,
    w_pw in 0, 0.2, 0.5, 1, scored by text-to-video R@1 (then R@5, then MdR) exactly as
    pig eval --rerank K scores them; the fine scores are computed once for the largest K. The plain
    index is the baseline: if no setting beats it, the choice is "off" (--rerank alone then ranks by
    the index). Writes MODEL/rerank.json next to the index's model (not its config or weights, so the
    model's hash and every stage file made with it stay valid) and prints its path; the table goes to
    stderr. pig rank/eval --rerank then use these weights (and --rerank alone this K); --w-* override.

    Use an index of VALIDATION videos with validation captions only: weights chosen on the test split
    make its metrics optimistic.

    Example:
      pig tune-rerank val_index.h5 --captions val.csv     # then: pig eval test_index.h5 -c test.csv --rerank
    """
    from ..query.tune_rerank import tune_rerank

    report = tune_rerank(index, captions, model=model, features=features, device=device, dry_run=dry_run)
    if as_json:
        emit_json({"output": str(report.written) if report.written else None, "off": report.off,
                   "baseline": report.baseline.metrics, "best": report.best.metrics,
                   "settings": len(report.scored), **report.tuned.to_dict()})
    elif report.written:
        emit(str(report.written))


def index_ann_cmd(
    index: Annotated[Path, typer.Argument(help="index file (pig fuse / pig index)")],
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="ANN file to write (and OUTPUT.json, its identity)")],
    kind: Annotated[AnnType, typer.Option(
        "--type", help="ivfpq: inverted lists + product quantisation (compact, for millions of videos); "
        "hnsw: a graph over the full vectors (fast, 4*D+256 bytes a video); flat: exhaustive (a reference)")
    ] = AnnType.ivfpq,
    nlist: Annotated[Optional[int], typer.Option(
        "--nlist", min=1, help="ivfpq: k-means cells (default: about 4 sqrt(N), at most 4096)")] = None,
    pq_m: Annotated[Optional[int], typer.Option(
        "--pq-m", min=1, help="ivfpq: PQ codes per vector, divides D (default: D/8)")] = None,
    nbits: Annotated[Optional[int], typer.Option(
        "--nbits", min=1, max=16, help="ivfpq: bits per PQ code (default 8)")] = None,
    hnsw_m: Annotated[Optional[int], typer.Option("--hnsw-m", min=2, help="hnsw: links per node (default 32)")] = None,
    ef_construction: Annotated[Optional[int], typer.Option(
        "--ef-construction", min=1, help="hnsw: build breadth (default 40)")] = None,
    nprobe: Annotated[Optional[int], typer.Option(
        "--nprobe", min=1, help="ivfpq: default lists searched per query (default: nlist/64)")] = None,
    ef_search: Annotated[Optional[int], typer.Option(
        "--ef-search", min=1, help="hnsw: default search breadth (default 64)")] = None,
    refine: Annotated[Optional[int], typer.Option(
        "--refine", min=1, help="default candidates per result, rescored exactly (default: ivfpq 30, else 1)")] = None,
    force: Annotated[bool, typer.Option(
        "--force/--no-force", help="replace an ANN file built from another index or with other parameters")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="print one JSON object (output, type, parameters, rows, seconds, bytes)")] = False,
):
    """Build an approximate-search index (faiss) over an index's vectors, for pig rank --ann.

    Needs faiss (pip install faiss-cpu). Reads the index block by block (ivfpq trains on a random
    sample of rows first), so the index need not fit in memory. Records which index and model it was
    built from, so pig rank --ann refuses another one. The exact scan stays pig rank's default.

    Examples:
      pig index-ann index.h5 -o index.faiss                      # ivfpq, parameters by size
      pig index-ann index.h5 -o index.faiss --type hnsw --ef-search 128
      pig rank index.h5 q.h5 --ann index.faiss --nprobe 64
    """
    from ..query.ann import build_ann

    built = build_ann(index, output, kind.value, force=force, nlist=nlist, m=pq_m, nbits=nbits, hnsw_m=hnsw_m,
                      ef_construction=ef_construction, nprobe=nprobe, ef_search=ef_search, refine=refine)
    if as_json:
        emit_json({"output": built.output, "type": built.params.type, "params": built.params.to_dict(),
                   "rows": built.rows, "seconds": round(built.seconds, 3), "bytes": built.bytes,
                   "skipped": built.skipped})
    else:
        emit(str(built.output))
