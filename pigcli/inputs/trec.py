"""TREC-style evaluation files: runs, qrels with strata (TRECVID), and TRECVID topics.

Run: `topic Q0 shot rank score tag`, whitespace separated, six fields a line (what pig rank --format
trec writes). Qrels, one judged or pooled shot a line, in either layout sample_eval.pl users meet:
  4 fields  `topic stratum shot judgement`            (TRECVID's AVS qrels)
  5 fields  `topic iteration shot stratum judgement`  (what sample_eval.pl itself reads)
with judgement -1 (pooled, not judged), 0 (not relevant) or a relevance grade > 0. Topics: TRECVID's
XML (`<videoAdhocSearchTopic num="611" text="..."/>`, the text as an attribute or as the element's
text) or plain `611 Find shots of ...` lines.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from ..core.infap import Judgement
from ..errors import PigError
from .captions import Query

TOPIC_TAG = "videoAdhocSearchTopic"


def _lines(path: str | Path, what: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise PigError(f"{what} file not found: {path}") from None
    except OSError as error:
        raise PigError(f"cannot read {what} file {path}: {error.strerror or error}") from None
    return [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_run(path: str | Path) -> dict[str, dict[str, float]]:
    """topic -> shot -> score; a shot listed twice keeps its last score (as sample_eval.pl does)."""
    run: dict[str, dict[str, float]] = {}
    for number, fields in _lines(path, "run"):
        if len(fields) != 6:
            raise PigError(f"{path} line {number}: a TREC run line has 6 fields (topic Q0 shot rank score tag), "
                           f"not {len(fields)}")
        topic, _, shot, _, score, _ = fields
        run.setdefault(topic, {})[shot] = _number(score, float, path, number, "score")
    if not run:
        raise PigError(f"{path}: no run lines (topic Q0 shot rank score tag)")
    return run


def read_qrels(path: str | Path) -> dict[str, dict[str, Judgement]]:
    """topic -> shot -> Judgement(stratum, relevance), from 4- or 5-field lines (one layout per file)."""
    qrels: dict[str, dict[str, Judgement]] = {}
    width = None
    for number, fields in _lines(path, "qrels"):
        if len(fields) not in (4, 5) or (width is not None and len(fields) != width):
            raise PigError(f"{path} line {number}: qrels lines have 4 fields (topic stratum shot judgement) or 5 "
                           f"(topic iteration shot stratum judgement), the same in every line; found {len(fields)}")
        width = len(fields)
        topic, stratum, shot = (fields[0], fields[1], fields[2]) if width == 4 else (fields[0], fields[3], fields[2])
        relevance = _number(fields[-1], int, path, number, "judgement")
        if relevance < -1:
            raise PigError(f"{path} line {number}: judgement {relevance}: use -1 (not judged), 0 or a grade > 0")
        qrels.setdefault(topic, {})[shot] = Judgement(stratum, relevance)
    if not qrels:
        raise PigError(f"{path}: no qrels lines (topic stratum shot judgement)")
    return qrels


def _number(text: str, kind, path, number: int, what: str):
    try:
        return kind(text)
    except ValueError:
        raise PigError(f"{path} line {number}: {what} {text!r} is not a number") from None


def read_topics(path: str | Path) -> list[Query]:
    """TRECVID topics as queries whose ids are the topic numbers: XML or `ID text` lines."""
    lines = _lines(path, "topics")
    if lines and lines[0][1][0].startswith("<"):
        topics = _xml_topics(path)
    else:
        topics = [Query(fields[0], " ".join(fields[1:])) for _, fields in lines if len(fields) > 1]
        bad = [number for number, fields in lines if len(fields) < 2]
        if bad:
            raise PigError(f"{path} line {bad[0]}: a topic line is 'ID text' (e.g. '611 Find shots of a drone')")
    if not topics:
        raise PigError(f"{path}: no topics found (TRECVID XML <{TOPIC_TAG} num=... text=...> or 'ID text' lines)")
    ids = [t.id for t in topics]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise PigError(f"{path}: topic ids repeat: {', '.join(repeated[:10])}")
    return topics


def _xml_topics(path: str | Path) -> list[Query]:
    try:  # the DOCTYPE line the official files carry is skipped by the parser, never fetched
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise PigError(f"{path}: not valid XML ({error})") from None
    topics = []
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != TOPIC_TAG:
            continue
        number = element.get("num")
        text = element.get("text") or " ".join("".join(element.itertext()).split())
        if not number or not text:
            raise PigError(f"{path}: a <{TOPIC_TAG}> needs num and text (attribute or element text)")
        topics.append(Query(number.strip(), re.sub(r"\s+", " ", text).strip()))
    return topics
