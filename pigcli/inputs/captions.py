"""Caption and query files.

Every reader takes one path: bytes -> decoded lines -> records (plain dicts) ->
Caption / Query objects, so BOMs, bad bytes, quoted commas and list-valued captions
are handled in one place whatever the format.

Caption formats (chosen by extension, then by the CSV header):
  .csv    MSRVTT JSFUSION 'key,vid_key,video_id,sentence'; any header with video_id and
          caption/sentence/text; or headerless 'video_id,caption'
  .jsonl  one object per line with video_id (or clip_id) and caption/sentence/text (a string or a list):
          the official PIG / CLIP-ViP annotations ({"clip_id": ..., "text": ...}, e.g. train9k.jsonl,
          test1ka.jsonl) as they are
  .json   a list of such objects, or {video_id: [captions]}

A list of texts gives one caption per item, in order; paragraph mode (`group_paragraphs`, DiDeMo and
ActivityNet) joins a video's captions with spaces, as the official loader joins DiDeMo's list.

NUL characters (raw bytes, or \\u0000 escapes in JSON) are replaced by a space and reported by line:
HDF5 cannot store them in a string, and one such line must not lose a whole batch.
"""

from __future__ import annotations

import codecs
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Sequence, TextIO

from ..errors import PigError


VIDEO_KEY = "video_id"
VIDEO_KEYS = (VIDEO_KEY, "clip_id")  # clip_id: the official PIG / CLIP-ViP annotation files
# First match wins, so 'caption' beats 'text' when a file has both.
TEXT_KEYS = ("caption", "sentence", "text", "query", "captions", "sentences")
ID_KEYS = ("caption_id", "query_id", "id", "key")
# Any of these in the first CSV row means it is a header (MSRVTT adds vid_key).
HEADER_WORDS = frozenset((*VIDEO_KEYS, "vid_key", *TEXT_KEYS, *ID_KEYS))
STRUCTURED_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")

FORMATS = (
    "accepted caption files: .csv with header 'key,vid_key,video_id,sentence' (MSRVTT JSFUSION) "
    "or any header with video_id and caption/sentence/text, headerless .csv 'video_id,caption', "
    ".jsonl objects with video_id or clip_id and caption/sentence/text (a string or a list), "
    ".json list of such objects or {video_id: [captions]}"
)

Record = tuple[str, dict[str, Any]]  # (where in the file, e.g. 'line 3', for messages; fields)


@dataclass(frozen=True)
class Caption:
    video_id: str
    text: str
    caption_id: str  # from the file if it has one, else f"{video_id}#{n}"


@dataclass
class Query:
    id: str
    text: str


# ---------------------------------------------------------------- public API


def read_captions(path: str | Path) -> tuple[list[Caption], list[str]]:
    """Captions plus warnings (skipped blank captions). Strict UTF-8: bad bytes are a PigError."""
    path = Path(path)
    name = str(path)
    lines, _, nul = _decode_lines(_read_bytes(path, "captions"), name, strict=True)
    records, nul_fields = _without_nul(_records(lines, name, path.suffix.lower()))
    captions, warnings = _build_captions(records, name)
    if not captions:
        raise PigError(f"{name}: no captions found; {FORMATS}")
    return captions, _nul_warning(name, nul, nul_fields) + warnings


def load_captions(path: str | Path) -> list[Caption]:
    """Captions of a file in any accepted format; warnings go to stderr like every other warning."""
    from ..console import warn

    captions, warnings = read_captions(path)
    for warning in warnings:
        warn(warning)
    return captions


def group_paragraphs(captions: list[Caption]) -> list[Caption]:
    """Paragraph mode (DiDeMo/ActivityNet): one query per video, its captions joined in order."""
    texts: dict[str, list[str]] = {}  # dicts keep first-seen order
    for caption in captions:
        texts.setdefault(caption.video_id, []).append(caption.text)
    return [Caption(video, " ".join(parts), video) for video, parts in texts.items()]


def load_queries(source: str | Path | TextIO | BinaryIO, paragraph: bool = False) -> tuple[list[Query], list[str]]:
    """Queries to embed, plus warnings.

    A path ending .csv/.jsonl/.ndjson/.json holds ids (id/query_id + text/query/caption/
    sentence, or any caption format, id = caption_id); any other path, '-' (stdin) or an
    open stream is plain text, one query per line, id 'q<line number>' (1-based, blank
    lines included, so ids do not shift when a line is emptied). Invalid UTF-8 is replaced
    and reported, never fatal, so one bad line does not lose a whole batch.
    paragraph: a captions file gives one query per video, its captions joined (id = the video id).
    """
    data, name, suffix = _query_source(source)
    lines, bad, nul = _decode_lines(data, name, strict=False)
    warnings = [f"{name}: invalid UTF-8 in {_plural(len(bad), 'line')}: {_short_list(bad)} "
                "(bad bytes replaced with U+FFFD)"] if bad else []
    if suffix in STRUCTURED_SUFFIXES:
        records, nul_fields = _without_nul(_records(lines, name, suffix))
        warnings += _nul_warning(name, nul, nul_fields)
        queries, more = _structured_queries(records, name, paragraph)
    elif paragraph:
        raise PigError(f"{name}: paragraph mode joins the captions of each video, so it needs a captions file "
                       f"(.csv/.jsonl/.json with video_id or clip_id and text), not plain text")
    else:
        warnings += _nul_warning(name, nul, [])
        queries, more = _text_queries(lines, name)
    if not queries:
        raise PigError(f"{name}: no queries found; give one query per line, or a .csv/.jsonl with id and text")
    return queries, warnings + more


# ---------------------------------------------------------------- bytes -> lines


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PigError(f"{what} file not found: {path}") from None
    except OSError as error:
        raise PigError(f"cannot read {what} file {path}: {error.strerror or error}") from None


def _query_source(source: str | Path | TextIO | BinaryIO) -> tuple[bytes, str, str]:
    """(bytes, name for messages, lower-case suffix or '' for plain text)."""
    if isinstance(source, (str, Path)) and str(source) == "-":
        source = sys.stdin  # looked up at call time so tests and callers can swap it
    if isinstance(source, (str, Path)):
        path = Path(source)
        return _read_bytes(path, "queries"), str(path), path.suffix.lower()
    return _stream_bytes(source), str(getattr(source, "name", "<stream>")), ""


def _stream_bytes(stream: TextIO | BinaryIO) -> bytes:
    # Prefer the raw bytes under a text stream: its own decoder would crash on bad UTF-8.
    buffer = getattr(stream, "buffer", None)
    data = buffer.read() if buffer is not None else stream.read()
    if isinstance(data, bytes):
        return data
    try:  # surrogateescape gives back the original bytes of a stream decoded that way
        return data.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates: keep them invalid so they get reported
        return data.encode("utf-8", "surrogatepass")


def _decode_lines(data: bytes, name: str, strict: bool) -> tuple[list[str], list[int], list[int]]:
    """Lines with their endings (csv needs them for quoted newlines), 1-based bad-UTF-8 line numbers and
    1-based numbers of lines that held NUL bytes (each replaced by a space: never fatal, strict or not).

    Splits bytes, not str: str.splitlines also breaks on U+2028 etc., which may sit inside a caption.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    lines: list[str] = []
    bad: list[int] = []
    nul: list[int] = []
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        if b"\0" in raw:
            raw = raw.replace(b"\0", b" ")
            nul.append(number)
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            if strict:
                raise PigError(f"{name} line {number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at "
                               f"position {error.start + 1}); re-save the file as UTF-8") from None
            lines.append(raw.decode("utf-8", errors="replace"))
            bad.append(number)
    return lines, bad, nul


def _without_nul(records: list[Record]) -> tuple[list[Record], list[str]]:
    """Records with NULs (JSON's \\u0000 escapes) in string fields replaced by a space, and where they were."""
    found: list[str] = []

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\0", " ")
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    def has_nul(value: Any) -> bool:
        return ("\0" in value) if isinstance(value, str) else (
            isinstance(value, list) and any(isinstance(v, str) and "\0" in v for v in value))

    out: list[Record] = []
    for where, record in records:
        if any(has_nul(v) for v in record.values()):
            found.append(where)
            record = {key: clean(value) for key, value in record.items()}
        out.append((where, record))
    return out, found


# ---------------------------------------------------------------- lines -> records


def _records(lines: list[str], name: str, suffix: str) -> list[Record]:
    if suffix == ".csv":
        return _csv_records(lines, name)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_records(lines, name)
    if suffix == ".json":
        return _json_records("".join(lines), name)
    raise PigError(f"{name}: unsupported file type '{suffix or '(none)'}'; {FORMATS}")


def _csv_records(lines: list[str], name: str) -> list[Record]:
    reader = csv.reader(lines)
    header: list[str] | None = None
    records: list[Record] = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line: no caption at all, nothing to count
            if header is None:  # the first row decides: header, or data of a headerless file
                header, is_header = _csv_header(row, name, reader.line_num)
                if is_header:
                    continue
            if len(row) != len(header):
                raise PigError(f"{name} line {reader.line_num}: {len(row)} fields, expected {len(header)} "
                               f"({','.join(header)}); quote captions that contain commas")
            records.append((f"line {reader.line_num}", dict(zip(header, row))))
    except csv.Error as error:
        raise PigError(f"{name} line {reader.line_num}: malformed CSV ({error})") from None
    return records


def _csv_header(row: list[str], name: str, line: int) -> tuple[list[str], bool]:
    """(column names, whether the row is a header rather than data)."""
    cells = [cell.strip().lower() for cell in row]
    if HEADER_WORDS.intersection(cells):
        return cells, True
    if len(row) == 2:
        return [VIDEO_KEY, "caption"], False
    raise PigError(f"{name} line {line}: unrecognised CSV header or {len(row)} columns; {FORMATS}")


def _jsonl_records(lines: list[str], name: str) -> list[Record]:
    records: list[Record] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise PigError(f"{name} line {number}: not valid JSON ({error.msg}); "
                           "JSONL needs one object per line") from None
        records.append((f"line {number}", _as_object(value, name, f"line {number}")))
    return records


def _json_records(text: str, name: str) -> list[Record]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise PigError(f"{name} line {error.lineno}: not valid JSON ({error.msg})") from None
    if isinstance(document, list):
        return [(f"item {i}", _as_object(value, name, f"item {i}")) for i, value in enumerate(document)]
    if isinstance(document, dict):  # {video_id: captions}; a value may also be an object with 'sentences'
        return [(f"video {video!r}", {**value, VIDEO_KEY: video} if isinstance(value, dict)
                 else {VIDEO_KEY: video, "caption": value}) for video, value in document.items()]
    raise PigError(f"{name}: JSON must be a list of objects or {{video_id: [captions]}}; {FORMATS}")


def _as_object(value: Any, name: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PigError(f"{name} {where}: expected a JSON object, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------- records -> captions / queries


def _build_captions(records: list[Record], name: str) -> tuple[list[Caption], list[str]]:
    captions: list[Caption] = []
    per_video: dict[str, int] = {}
    used: dict[str, str] = {}
    blanks: list[str] = []
    for where, record in records:
        video = _required_id(record, VIDEO_KEYS, name, where)
        texts, is_list = _texts(record, name, where)
        file_id = _optional_id(record, name, where)
        for j, text in enumerate(texts):
            # Blank captions take a number too, so derived ids stay tied to the file position.
            n = per_video.get(video, 0)
            per_video[video] = n + 1
            if not text.strip():
                blanks.append(where)
                continue
            caption_id = (f"{file_id}#{j}" if is_list else file_id) if file_id else f"{video}#{n}"
            _claim(used, caption_id, name, where)
            captions.append(Caption(video, text.strip(), caption_id))
    return captions, _blank_warning(name, blanks, "caption")


def _structured_queries(records: list[Record], name: str, paragraph: bool) -> tuple[list[Query], list[str]]:
    if records and any(key in records[0][1] for key in VIDEO_KEYS):  # a captions file: query id = caption id
        captions, warnings = _build_captions(records, name)
        if paragraph:
            captions = group_paragraphs(captions)
        return [Query(c.caption_id, c.text) for c in captions], warnings
    if paragraph:
        raise PigError(f"{name}: paragraph mode needs a captions file (video_id or clip_id and text), "
                       "not a query file")
    queries: list[Query] = []
    used: dict[str, str] = {}
    blanks: list[str] = []
    for where, record in records:
        query_id = _required_id(record, ID_KEYS, name, where)
        texts, is_list = _texts(record, name, where)
        if is_list:
            raise PigError(f"{name} {where}: query text must be one string, not a list")
        if not texts[0].strip():
            blanks.append(where)
            continue
        _claim(used, query_id, name, where)
        queries.append(Query(query_id, texts[0].strip()))
    return queries, _blank_warning(name, blanks, "query")


def _text_queries(lines: list[str], name: str) -> tuple[list[Query], list[str]]:
    queries: list[Query] = []
    blanks: list[int] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text:
            queries.append(Query(f"q{number}", text))
        else:
            blanks.append(number)
    warnings = [f"{name}: skipped {_plural(len(blanks), 'blank line')}: {_short_list(blanks)}"] if blanks else []
    return queries, warnings


def _texts(record: dict[str, Any], name: str, where: str) -> tuple[list[str], bool]:
    """(texts, whether the file gave a list). null counts as a blank caption."""
    key = next((k for k in TEXT_KEYS if k in record), None)
    if key is None:
        raise PigError(f"{name} {where}: no text field (expected one of {', '.join(TEXT_KEYS)}); {FORMATS}")
    value = record[key]
    if value is None or isinstance(value, str):
        return [value or ""], False
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value, True
    raise PigError(f"{name} {where}: '{key}' must be a string or a list of strings, got {type(value).__name__}")


def _optional_id(record: dict[str, Any], name: str, where: str) -> str | None:
    key = next((k for k in ID_KEYS if k in record and record[k] is not None), None)
    return None if key is None else _id_text(record[key], key, name, where) or None


def _required_id(record: dict[str, Any], keys: tuple[str, ...], name: str, where: str) -> str:
    key = next((k for k in keys if k in record and record[k] is not None), None)
    value = "" if key is None else _id_text(record[key], key, name, where)
    if not value:
        raise PigError(f"{name} {where}: missing or empty {' / '.join(keys)}; {FORMATS}")
    return value


def _id_text(value: Any, key: str, name: str, where: str) -> str:
    # JSON files often use integer ids; bools and objects are mistakes, not ids.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PigError(f"{name} {where}: '{key}' must be a string or an integer, got {type(value).__name__}")
    return str(value).strip()


def _claim(used: dict[str, str], item_id: str, name: str, where: str) -> None:
    if item_id in used:
        raise PigError(f"{name} {where}: id {item_id!r} already used at {used[item_id]}; ids must be unique "
                       "(fix the file, or drop its id field to get '<video_id>#<n>' ids)")
    used[item_id] = where


# ---------------------------------------------------------------- message helpers


def _nul_warning(name: str, lines: list[int], wheres: list[str]) -> list[str]:
    """Lines with NUL bytes, and records whose fields held NULs from JSON escapes."""
    warnings = [f"{name}: NUL characters in {_plural(len(lines), 'line')}: {_short_list(lines)} "
                "(each replaced with a space)"] if lines else []
    if wheres:
        warnings.append(f"{name}: NUL characters (\\u0000) in {_short_list(wheres)} (each replaced with a space)")
    return warnings


def _blank_warning(name: str, wheres: list[str], what: str) -> list[str]:
    return [f"{name}: skipped {_plural(len(wheres), 'blank ' + what)}: {_short_list(wheres)}"] if wheres else []


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun[:-1]}ies" if noun.endswith("y") else f"{count} {noun}s"


def _short_list(items: list[Any], limit: int = 10) -> str:
    shown = ", ".join(str(item) for item in items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... (+{len(items) - limit} more)"


def report_truncated(ids: list[str], truncated: Sequence[bool], max_tokens: int, what: str = "queries") -> None:
    """One warning naming the texts (by id) that were cut to max_tokens, as every text reader reports them."""
    from ..console import warn

    cut = [item for item, flag in zip(ids, truncated) if flag]
    if cut:
        shown = ", ".join(cut[:10]) + (f" (+{len(cut) - 10} more)" if len(cut) > 10 else "")
        warn(f"{len(cut)} {what} longer than {max_tokens} tokens were truncated: {shown}")
