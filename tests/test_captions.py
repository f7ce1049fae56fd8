"""Caption and query file readers: every format, BOM, bad bytes, ids, warnings."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from pigcli.inputs.captions import Caption, Query, group_paragraphs, load_captions, load_queries, read_captions
from pigcli.errors import PigError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# ---------------------------------------------------------------- captions: formats


def test_msrvtt_jsfusion_csv_uses_key_as_id_and_keeps_quoted_commas(tmp_path):
    path = write(tmp_path, "MSRVTT_JSFUSION_test.csv",
                 "key,vid_key,video_id,sentence\n"
                 'ret0,msr7020,video7020,"a man, a dog and a ball"\n'
                 "ret1,msr7021,video7021,  people dancing  \n")
    assert load_captions(path) == [
        Caption("video7020", "a man, a dog and a ball", "ret0"),
        Caption("video7021", "people dancing", "ret1"),
    ]


@pytest.mark.parametrize("column", ["caption", "sentence", "text"])
def test_plain_csv_header_any_order_with_extra_columns(tmp_path, column):
    path = write(tmp_path, "caps.csv", f"split,{column},video_id\ntest,\"hello, world\",v1\ntest,bye,v1\ntest,x,v2\n")
    assert load_captions(path) == [
        Caption("v1", "hello, world", "v1#0"),
        Caption("v1", "bye", "v1#1"),
        Caption("v2", "x", "v2#0"),
    ]


def test_headerless_two_column_csv(tmp_path):
    path = write(tmp_path, "caps.csv", 'v1,"a cat, sleeping"\nv2,a dog\nv1,another\n')
    assert load_captions(path) == [
        Caption("v1", "a cat, sleeping", "v1#0"),
        Caption("v2", "a dog", "v2#0"),
        Caption("v1", "another", "v1#1"),
    ]


def test_utf8_bom_does_not_break_the_header(tmp_path):
    # Without BOM handling the first column would be '\ufeffkey' and the header unknown.
    path = write(tmp_path, "caps.csv", b"\xef\xbb\xbfvideo_id,caption\nv1,caf\xc3\xa9\n")
    assert load_captions(path) == [Caption("v1", "café", "v1#0")]


def test_jsonl_list_captions_ids_and_blank_counting(tmp_path):
    lines = [
        {"video_id": "v1", "caption": ["first", "  ", "third"]},  # blank is skipped but keeps its number
        {"video_id": "v2", "text": "only one", "id": 17},
        {"video_id": "v3", "sentence": ["a", "b"], "caption_id": "c3"},
        {"video_id": "v1", "caption": "fourth"},
    ]
    path = write(tmp_path, "caps.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    captions, warnings = read_captions(path)
    assert captions == [
        Caption("v1", "first", "v1#0"),
        Caption("v1", "third", "v1#2"),
        Caption("v2", "only one", "17"),
        Caption("v3", "a", "c3#0"),
        Caption("v3", "b", "c3#1"),
        Caption("v1", "fourth", "v1#3"),
    ]
    assert warnings == [f"{path}: skipped 1 blank caption: line 1"]


def test_json_list_and_dict(tmp_path):
    as_list = write(tmp_path, "a.json", json.dumps([{"video_id": "v1", "caption": "x"},
                                                   {"video_id": 5, "caption": ["y", "z"]}]))
    assert load_captions(as_list) == [Caption("v1", "x", "v1#0"), Caption("5", "y", "5#0"), Caption("5", "z", "5#1")]
    as_dict = write(tmp_path, "b.json", json.dumps({"v2": ["p", "q"], "v1": "r", "v3": {"sentences": ["s"]}}))
    assert load_captions(as_dict) == [Caption("v2", "p", "v2#0"), Caption("v2", "q", "v2#1"),
                                      Caption("v1", "r", "v1#0"), Caption("v3", "s", "v3#0")]


# ---------------------------------------------------------------- captions: errors


def test_non_utf8_names_file_and_line(tmp_path):
    path = write(tmp_path, "caps.csv", b"video_id,caption\nv1,ok\nv2,caf\xe9\n")
    with pytest.raises(PigError, match=r"caps\.csv line 3: not valid UTF-8.*0xe9"):
        load_captions(path)


def test_unknown_extension_lists_accepted_formats(tmp_path):
    path = write(tmp_path, "caps.xml", "<x/>")
    with pytest.raises(PigError, match=r"unsupported file type '\.xml'.*MSRVTT JSFUSION.*\.jsonl.*\.json"):
        load_captions(path)


def test_unrecognised_csv_shape(tmp_path):
    with pytest.raises(PigError, match="unrecognised CSV header or 3 columns"):
        load_captions(write(tmp_path, "caps.csv", "a,b,c\n1,2,3\n"))


def test_unquoted_comma_is_reported_with_fix(tmp_path):
    with pytest.raises(PigError, match=r"line 3: 3 fields, expected 2.*quote captions"):
        load_captions(write(tmp_path, "caps.csv", "video_id,caption\nv1,fine\nv2,a man, a dog\n"))


def test_duplicate_ids_rejected(tmp_path):
    path = write(tmp_path, "caps.jsonl", '{"video_id": "v1", "caption": "a", "id": 1}\n'
                                         '{"video_id": "v2", "caption": "b", "id": 1}\n')
    with pytest.raises(PigError, match=r"line 2: id '1' already used at line 1"):
        load_captions(path)


def test_missing_video_id_and_missing_file_and_empty(tmp_path):
    with pytest.raises(PigError, match="missing or empty video_id"):
        load_captions(write(tmp_path, "q.csv", "id,text\n1,hello\n"))
    with pytest.raises(PigError, match="captions file not found"):
        load_captions(tmp_path / "nope.csv")
    with pytest.raises(PigError, match="no captions found"):
        load_captions(write(tmp_path, "blank.csv", "video_id,caption\nv1,  \n"))


def test_bad_json_names_line(tmp_path):
    with pytest.raises(PigError, match=r"line 2: not valid JSON"):
        load_captions(write(tmp_path, "c.jsonl", '{"video_id": "v", "caption": "a"}\n{oops\n'))


# ---------------------------------------------------------------- paragraphs


def test_group_paragraphs_joins_in_first_seen_order():
    captions = [Caption("b", "one", "b#0"), Caption("a", "two", "a#0"), Caption("b", "three", "b#1")]
    assert group_paragraphs(captions) == [Caption("b", "one three", "b"), Caption("a", "two", "a")]


# ---------------------------------------------------------------- queries


def test_text_queries_blank_lines_and_bad_bytes(tmp_path):
    path = write(tmp_path, "q.txt", b"a dog\n\n  two spaces  \r\nbad \xff byte\n   \nlast")
    queries, warnings = load_queries(path)
    # ids follow physical line numbers, so q2 and q5 (blank) are simply absent
    assert queries == [Query("q1", "a dog"), Query("q3", "two spaces"),
                       Query("q4", "bad \ufffd byte"), Query("q6", "last")]
    assert warnings == [
        f"{path}: invalid UTF-8 in 1 line: 4 (bad bytes replaced with U+FFFD)",
        f"{path}: skipped 2 blank lines: 2, 5",
    ]


def test_csv_queries_with_ids(tmp_path):
    path = write(tmp_path, "q.csv", 'query_id,query\nA,"red car, fast"\nB,\nC,boat\n')
    queries, warnings = load_queries(path)
    assert queries == [Query("A", "red car, fast"), Query("C", "boat")]
    assert warnings == [f"{path}: skipped 1 blank query: line 3"]


def test_jsonl_queries_and_captions_file_as_queries(tmp_path):
    jsonl = write(tmp_path, "q.jsonl", '{"id": "x1", "text": "hello"}\n{"id": 2, "sentence": "world"}\n')
    assert load_queries(jsonl) == ([Query("x1", "hello"), Query("2", "world")], [])
    msrvtt = write(tmp_path, "m.csv", "key,vid_key,video_id,sentence\nret0,msr1,video1,a cat\n")
    assert load_queries(msrvtt) == ([Query("ret0", "a cat")], [])


def test_stdin_and_streams(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("first\n\nsecond\n"))
    assert load_queries("-") == ([Query("q1", "first"), Query("q3", "second")], ["<stream>: skipped 1 blank line: 2"])
    queries, warnings = load_queries(io.BytesIO(b"ok\nbad\xc3\n"))
    assert queries == [Query("q1", "ok"), Query("q2", "bad\ufffd")]
    assert warnings == ["<stream>: invalid UTF-8 in 1 line: 2 (bad bytes replaced with U+FFFD)"]


def test_empty_queries_is_an_error(tmp_path):
    with pytest.raises(PigError, match="no queries found"):
        load_queries(write(tmp_path, "q.txt", "\n  \n"))


def test_nul_bytes_are_replaced_and_reported_for_every_reader(tmp_path):
    # HDF5 cannot store a NUL in a string: one such line used to fail a whole embed-text batch
    text = write(tmp_path, "q.txt", b"a dog\x00runs\n\x00\nok\x00\n")
    queries, warnings = load_queries(text)
    assert queries == [Query("q1", "a dog runs"), Query("q3", "ok")]
    assert warnings == [f"{text}: NUL characters in 3 lines: 1, 2, 3 (each replaced with a space)",
                        f"{text}: skipped 1 blank line: 2"]
    jsonl = write(tmp_path, "q.jsonl", b'{"id": "a", "text": "x\\u0000y"}\n{"id": "b", "text": "raw\x00nul"}\n')
    queries, warnings = load_queries(jsonl)
    assert queries == [Query("a", "x y"), Query("b", "raw nul")]
    assert warnings == [f"{jsonl}: NUL characters in 1 line: 2 (each replaced with a space)",
                        f"{jsonl}: NUL characters (\\u0000) in line 1 (each replaced with a space)"]
    captions, warnings = read_captions(write(tmp_path, "caps.csv", b"video_id,caption\nv1,a\x00b\nv2,c\n"))
    assert [c.text for c in captions] == ["a b", "c"]
    assert warnings == [f"{tmp_path / 'caps.csv'}: NUL characters in 1 line: 2 (each replaced with a space)"]
    captions, _ = read_captions(write(tmp_path, "caps.json", '{"v1": ["x\\u0000y"]}'))
    assert captions == [Caption("v1", "x y", "v1#0")]


# ---------------------------------------------------------------- the official PIG / CLIP-ViP annotation files


def _official_jsonl(tmp_path: Path, name: str, records: list[dict]) -> Path:
    return write(tmp_path, name, "".join(json.dumps(record) + "\n" for record in records))


def test_official_jsonl_clip_id_with_a_string_or_a_list(tmp_path):
    """test1ka.jsonl gives one caption per clip as a string; training files may give a list per clip."""
    test = _official_jsonl(tmp_path, "test1ka.jsonl", [
        {"clip_id": "video7020", "text": "a woman creating a fondant baby"},
        {"clip_id": "video7021", "text": "a man is playing a guitar"}])
    assert load_captions(test) == [Caption("video7020", "a woman creating a fondant baby", "video7020#0"),
                                   Caption("video7021", "a man is playing a guitar", "video7021#0")]
    train = _official_jsonl(tmp_path, "train9k.jsonl", [
        {"clip_id": "video0", "text": ["a car is shown", "a man drives"]},
        {"clip_id": "video1", "text": "cartoon of a dog"},
        {"clip_id": "video0", "text": "a red car"}])  # a clip may also come back on another line
    assert load_captions(train) == [Caption("video0", "a car is shown", "video0#0"),
                                    Caption("video0", "a man drives", "video0#1"),
                                    Caption("video1", "cartoon of a dog", "video1#0"),
                                    Caption("video0", "a red car", "video0#2")]
    official_json = write(tmp_path, "test.json", json.dumps([{"clip_id": "a", "text": "one"}]))
    assert load_captions(official_json) == [Caption("a", "one", "a#0")]


def test_official_didemo_list_joins_into_one_paragraph(tmp_path):
    """DiDeMo: the official loader joins a clip's list of sentences with spaces; so does paragraph mode."""
    path = _official_jsonl(tmp_path, "didemo_test.jsonl", [
        {"clip_id": "clip_a.mp4", "text": ["a girl runs.", "she stops.", "the camera pans."]},
        {"clip_id": "clip_b.mp4", "text": ["a dog barks."]}])
    assert group_paragraphs(load_captions(path)) == [
        Caption("clip_a.mp4", "a girl runs. she stops. the camera pans.", "clip_a.mp4"),
        Caption("clip_b.mp4", "a dog barks.", "clip_b.mp4")]
    queries, _ = load_queries(path, paragraph=True)
    assert queries == [Query("clip_a.mp4", "a girl runs. she stops. the camera pans."),
                       Query("clip_b.mp4", "a dog barks.")]
    per_caption, _ = load_queries(path)
    assert [q.id for q in per_caption] == ["clip_a.mp4#0", "clip_a.mp4#1", "clip_a.mp4#2", "clip_b.mp4#0"]
    with pytest.raises(PigError, match="paragraph mode .* captions file"):
        load_queries(write(tmp_path, "q.txt", "a query\n"), paragraph=True)


def test_video_id_wins_over_clip_id_and_a_missing_id_names_both(tmp_path):
    both = _official_jsonl(tmp_path, "both.jsonl", [{"video_id": "v", "clip_id": "c", "text": "x"}])
    assert load_captions(both)[0].video_id == "v"
    none = _official_jsonl(tmp_path, "none.jsonl", [{"text": "x"}])
    with pytest.raises(PigError, match="line 1: missing or empty video_id / clip_id"):
        load_captions(none)
