"""The output contract of every `pig` command.

stdout carries results only, so that `out=$(pig ...)` and pipes work:
  - stage commands (init, extract, frames, select, generate, fuse, embed-text, index) print the path they
    wrote, one line; with --json, one JSON object instead (`stage_record`, `index_record`; init:
    path, name, hash);
  - rank prints the ranking (tsv | jsonl | trec | html), or with -o the path it wrote; explain the PNG's
    path; eval a table or --json; tune-rerank the rerank.json
    it wrote (its table on stderr) or --json; inspect text or --json;
    train 'best<TAB>PATH<TAB>R@1' and 'last<TAB>PATH' lines or --json; toy make the corpus folder.
stderr carries everything else: logs, progress bars, warnings, and errors (one line, 'error: ...').

Exit codes: 0 ok; 1 fatal error; 2 usage error; 3 finished, but some inputs failed (the output was
written and is printed, with the failures recorded in it and summarised on stderr).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3



def emit(text: Any) -> None:
    """One result line on stdout."""
    typer.echo(str(text))


def emit_json(obj: dict) -> None:
    """One JSON object on stdout."""
    typer.echo(json.dumps(obj, indent=2, default=str))  # Paths (and anything else) as text


def finish(record: dict, path_key: str, as_json: bool) -> None:
    """Print a stage command's result (the path, or the record as JSON); exit 3 when some inputs failed."""
    if as_json:
        emit_json(record)
    else:
        emit(record[path_key])
    if record.get("failed"):
        raise typer.Exit(EXIT_SOME_FAILED)


# --- stage summaries ------------------------------------------------------------------------------------------


def stage_record(summary) -> dict:
    """The --json object of one stage run (a pigcli.stages.common.StageSummary)."""
    return {
        "output": str(summary.output),
        "total": summary.total,
        "processed": summary.processed,
        "failed": summary.failed,
        "skipped": summary.skipped,
        "resumed_rows": summary.resumed_rows,
        **error_record(summary.errors),
        "timings": dict(summary.timings),
    }


def index_record(output: Path, summaries: dict) -> dict:
    """The --json object of `pig index`: the stage_record keys for the whole run (counts are videos,
    from extract: the only stage where an input can fail; skipped when every stage was; timings: each
    stage's wall time), and each stage's own record under "stages"."""
    extract = summaries["extract"]
    return {
        "output": str(output),
        "total": extract.total,
        "processed": extract.processed,
        "failed": extract.failed,
        "skipped": all(s.skipped for s in summaries.values()),
        "resumed_rows": extract.resumed_rows,
        **error_record(extract.errors),
        "timings": {name: s.timings.get("wall", 0.0) for name, s in summaries.items()},
        "stages": {name: stage_record(s) for name, s in summaries.items()},
    }


def log_summary(summary, unit: str) -> None:
    """One line on stderr about a stage run (written or up to date), then its failures."""
    from ..console import log

    if summary.skipped:
        log(f"{summary.output} is up to date ({summary.total} {unit}); use --force to recompute")
    else:
        rate = ""
        wall = summary.timings.get("wall")
        if wall:
            rate = f" in {wall:.1f}s ({summary.processed / wall:.2f} {unit}/s)"
        log(f"wrote {summary.output}: {summary.total - summary.failed} of {summary.total} {unit} ok{rate}")
    log_failures(summary, unit)


def error_record(errors) -> dict:
    """--json's "errors" (the most frequent messages, console.TOP_REASONS, and their counts) and
    "more_errors": how many other messages there are (0 when all are listed)."""
    from ..console import top_reasons

    listed, more, _ = top_reasons(errors)
    return {"errors": dict(listed), "more_errors": more}


def log_failures(summary, unit: str) -> None:
    from ..console import log, top_reasons

    if summary.failed:
        log(f"{summary.failed} {unit} failed:")
        listed, more, rows = top_reasons(summary.errors)
        for message, count in listed:
            log(f"  {count} x {message}")
        if more:
            log(f"  ... and {more} more reasons ({rows} {unit}; the output file records each one)")


def report_stage(summary, unit: str, as_json: bool) -> None:
    """Log a stage run on stderr and print its result on stdout (the output contract)."""
    log_summary(summary, unit)
    finish(stage_record(summary), "output", as_json)


# --- result files (-o of rank and explain) ----------------------------------------------------------------------


def check_result_path(path: Path, inputs: tuple | list = ()) -> None:
    """A result file (a page, a picture, a ranking) may replace an earlier result of pig's, but never one
    of the command's inputs, nor any other file (safe_write's rule). Checked before the work, so a bad
    -o fails at once."""
    import os

    from ..errors import PigError
    from ..safe_write import check_target

    path = Path(path)
    if path.is_dir():
        raise PigError(f"{path} is a folder; -o must name the file to write")
    for item in inputs:
        if item is not None and path.exists() and Path(item).exists() and os.path.samefile(item, path):
            raise PigError(f"{path} is an input of this command; writing there would destroy it: choose another -o")
    check_target(path, "pig result (a ranking, page or picture that pig wrote)", is_pig_result)


RESULT_HEAD = 64 * 1024  # bytes of an existing file read to tell whether pig wrote it
TSV_LINE = re.compile(r"[^\t\n]*\t\d+\t[^\t\n]*\t\S+")   # query, rank, video, score
TREC_LINE = re.compile(r"\S+ Q0 \S+ \d+ \S+ \S+")             # qid Q0 doc rank score run


def is_pig_result(path: Path) -> bool:
    """True for an empty file or one that `pig rank -o` / `pig explain -o` writes: a PNG or HTML page
    with pig's marker (query.media.PNG_MARKER, HTML_MARKER), or lines that are all ranking lines of one
    format (TSV, JSONL, TREC)."""
    from ..query.media import HTML_MARKER, PNG_MARKER

    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        head = handle.read(RESULT_HEAD)
    if head.startswith(b"\x89PNG"):
        return b"tEXt" + "\0".join(PNG_MARKER).encode() in head
    if head.startswith(b"<!DOCTYPE html>"):
        return HTML_MARKER.encode() in head
    lines = head.decode("utf-8", "replace").split("\n")
    if len(head) == RESULT_HEAD:
        lines = lines[:-1]  # the last one may be cut
    lines = [line for line in lines if line]
    return all(TSV_LINE.fullmatch(line) for line in lines) or all(TREC_LINE.fullmatch(line) for line in lines) \
        or all(_is_jsonl_ranking_line(line) for line in lines)


def _is_jsonl_ranking_line(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and set(record) in JSONL_KEYS


JSONL_KEYS = ({"query", "query_id", "rank", "video", "score"},  # query: the text, query_id: the id
              {"query", "rank", "video", "score"})              # before query_id: query held the id


def write_result_file(path: Path, data: bytes, inputs: tuple | list = ()) -> None:
    """Write a result to `path` (check_result_path's rules) atomically: whole or not at all."""
    from ..safe_write import write_bytes, write_errors

    path = Path(path)
    check_result_path(path, inputs)
    with write_errors(path):
        write_bytes(path, data)
