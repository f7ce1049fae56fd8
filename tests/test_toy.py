"""The toy corpus generator (pigcli/toy/corpus.py): determinism, files, captions that agree with the pixels and
boxes, captions that change when time runs backwards, and the R@1 ceiling."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from pigcli.inputs.captions import load_captions
from pigcli.errors import PigError, UsageError
from pigcli.toy.corpus import (COLOURS, STILL, ClaimIndex, caption_ties, ceilings, describe, make_corpus, parse_splits,
                        plan_corpus, read_plan, render, scene_facts, tie_aware_r1)
from pigcli.inputs.video import read_clip

SETTINGS = dict(videos=40, seed=7, frames=12, size=32)
ORDER = re.compile(r"a (\w+ \w+ \w+) (appears|disappears), then a (\w+ \w+ \w+) (appears|disappears)")
MOVE = re.compile(r"a (\w+ \w+ \w+) moves (left|right|up|down)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "corpus"
    stats = make_corpus(out, **SETTINGS)
    return out, stats, plan_corpus(**SETTINGS)


@pytest.fixture(scope="module")
def objects(corpus):
    out = corpus[0]
    return [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]


def _centre(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_corpus_and_another_seed_a_different_one():
    first, again = plan_corpus(**SETTINGS), plan_corpus(**SETTINGS)
    assert [c.text for v in first.videos for c in v.captions] == [c.text for v in again.videos for c in v.captions]
    assert [v.split for v in first.videos] == [v.split for v in again.videos]
    for a, b in zip(first.videos[:5], again.videos[:5]):
        np.testing.assert_array_equal(render(a.scene), render(b.scene))
    other = plan_corpus(**{**SETTINGS, "seed": 8})
    assert [c.text for v in other.videos for c in v.captions] != [c.text for v in first.videos for c in v.captions]
    assert not np.array_equal(render(other.videos[0].scene), render(first.videos[0].scene))


def test_written_files_follow_the_plan(corpus, objects):
    out, _, plan = corpus
    assert [o["video_id"] for o in objects] == [v.video_id for v in plan.videos]
    written = {(c.video_id, c.text) for split in ("train", "val", "test") for c in load_captions(out / f"{split}.csv")}
    assert written == {(v.video_id, c.text) for v in plan.videos for c in v.captions}


# ---------------------------------------------------------------- files


def test_videos_decode_with_pyav(corpus):
    out, _, plan = corpus
    files = sorted((out / "videos").glob("*.mp4"))
    assert [f.stem for f in files] == sorted(v.video_id for v in plan.videos)
    for path in files[:10]:
        clip = read_clip(path, 4, SETTINGS["size"], decoder="pyav")
        assert clip.num_frames == SETTINGS["frames"] and clip.frames.shape == (4, 3, 32, 32)


def test_splits_are_disjoint_cover_every_video_and_keep_pairs_together(corpus):
    out, stats, plan = corpus
    ids = {split: {c.video_id for c in load_captions(out / f"{split}.csv")} for split in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert set().union(*ids.values()) == {p.stem for p in (out / "videos").glob("*.mp4")}
    assert {s: len(v) for s, v in ids.items()} == stats.splits and sum(stats.splits.values()) == SETTINGS["videos"]
    split_of = {v.video_id: v.split for v in plan.videos}
    assert all(split_of[v.twin] == v.split for v in plan.videos if v.twin)
    assert stats.reversed_pairs == 10  # half of 40 videos come in pairs
    odd = plan_corpus(**{**SETTINGS, "videos": 3, "reversed_pairs": 1.0})
    assert len(odd.videos) == 3 and sum(v.twin is not None for v in odd.videos) == 2


def test_corpus_json_and_summary(corpus):
    out, stats, _ = corpus
    saved = json.loads((out / "corpus.json").read_text())
    assert saved["settings"]["videos"] == 40 and saved["stats"]["r1_ceiling"] == stats.r1_ceiling
    assert stats.captions_per_video == 3 and stats.videos_per_s > 0
    assert "R@1 ceiling" in stats.summary()
    assert [c.text for v in read_plan(out).videos for c in v.captions] == \
        [c.text for v in corpus[2].videos for c in v.captions]


# ---------------------------------------------------------------- captions agree with pixels and boxes


def test_boxes_lie_in_the_frame_and_hold_exactly_the_objects_pixels(corpus, objects):
    _, _, plan = corpus
    size = SETTINGS["size"]
    for video, record in zip(plan.videos, objects):
        frames = render(video.scene)
        for track, obj in zip(video.scene.tracks, record["objects"]):
            assert len(obj["boxes"]) == SETTINGS["frames"]
            for t, box in enumerate(obj["boxes"]):
                painted = np.all(frames[t] == COLOURS[track.colour[t]], axis=-1)
                if box is None:
                    assert not painted.any()
                    continue
                x0, y0, x1, y1 = box
                assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
                ys, xs = np.nonzero(painted)
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box)


def test_motion_captions_agree_with_the_box_trajectory(corpus, objects):
    checked = 0
    for record in objects:
        names = [o["name"] for o in record["objects"]]
        for caption in record["captions"]:
            match = MOVE.search(caption["caption"])
            if not match:
                continue
            boxes = record["objects"][names.index(match[1])]["boxes"]
            (x0, y0), (x1, y1) = _centre(boxes[0]), _centre(boxes[-1])
            expected = {"left": x1 < x0, "right": x1 > x0, "up": y1 < y0, "down": y1 > y0}
            assert expected[match[2]], caption
            checked += 1
    assert checked > 0


def test_order_captions_agree_with_the_appearance_frames(corpus, objects):
    checked = 0
    for record in objects:
        names = [o["name"] for o in record["objects"]]
        for caption in record["captions"]:
            match = ORDER.search(caption["caption"])
            if not match:
                continue
            times = [_event_frame(record["objects"][names.index(match[i])]["boxes"], match[i + 1]) for i in (1, 3)]
            assert times[0] < times[1], caption
            checked += 1
    assert checked > 0


def _event_frame(boxes, verb: str) -> int:
    shown = [t for t, box in enumerate(boxes) if box is not None]
    assert shown == list(range(shown[0], shown[-1] + 1))  # one appearance or disappearance, no flicker
    return shown[0] if verb == "appears" else shown[-1] + 1


def test_reversing_time_changes_every_caption():
    for video in plan_corpus(**{**SETTINGS, "reversed_pairs": 0.0}).videos:
        backwards = video.scene.reversed()
        assert not {c.text for c in video.captions} & {c.text for c in describe(backwards)}
        assert not any(scene_facts(backwards).issuperset(c.claim) for c in video.captions)


def test_every_caption_is_true_of_its_video(corpus):
    for video in corpus[2].videos:
        assert all(video.facts.issuperset(c.claim) for c in video.captions)


# ---------------------------------------------------------------- R@1 ceiling


def test_tie_aware_r1_on_a_hand_made_case():
    pessimistic, expected = tie_aware_r1([1, 1, 2, 4])
    assert pessimistic == 50.0 and expected == pytest.approx(100 * (1 + 1 + 0.5 + 0.25) / 4)
    with pytest.raises(ValueError):
        tie_aware_r1([0])


def test_caption_ties_count_every_video_a_claim_is_true_of():
    a, b, c = ("on", "plain", "black"), ("does", "small red circle", "moves left"), ("does", "big blue square", STILL)
    facts = [frozenset({a, b}), frozenset({a, c}), frozenset({a, b, c})]
    claims = [(0, (b, a)), (1, (c,)), (2, (b, c))]
    assert caption_ties(facts, claims) == [2, 2, 1]
    assert caption_ties(facts, claims, twin={0: 1, 1: 0}) == [3, 3, 1]  # order-blind: 0 and 1 look alike
    with pytest.raises(ValueError):
        caption_ties(facts, [(1, (b,))])  # not true of its own video


def test_claim_index_finds_stored_claims_a_new_video_makes_true():
    index = ClaimIndex()
    index.add(frozenset({("x",), ("y",)}), [(("x",), ("y",))])
    assert index.claims_true_of(frozenset({("x",), ("y",), ("z",)})) == [(("x",), ("y",))]
    assert index.claims_true_of(frozenset({("x",)})) == []


def test_default_corpus_ceiling_is_above_90_and_order_blind_models_lose_the_pairs():
    plan = plan_corpus()  # the defaults: 1200 videos, 16 frames, 64 px; descriptions only, no files
    pessimistic, expected, blind, blind_expected = ceilings([v for v in plan.videos if v.split == "test"])
    assert pessimistic > 90 and expected >= pessimistic
    assert blind < 75 and blind_expected < expected


# ---------------------------------------------------------------- settings and the folder


def test_settings_are_checked():
    assert parse_splits("7,1,2") == pytest.approx((0.7, 0.1, 0.2))
    for bad in ("0.5,0.5", "a,b,c", "-1,1,1", "0,0,0"):
        with pytest.raises(UsageError):
            parse_splits(bad)
    for bad in (dict(videos=0), dict(frames=4), dict(size=33), dict(size=16), dict(reversed_pairs=2.0), dict(seed=-1)):
        with pytest.raises(UsageError):
            plan_corpus(**{**SETTINGS, **bad})


def test_folder_rules(tmp_path):
    small = dict(videos=3, frames=8, size=32)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(PigError, match="no toy corpus"):
        make_corpus(tmp_path / "other", **small)
    make_corpus(tmp_path / "toy", seed=1, **small)
    with pytest.raises(PigError, match="--force"):
        make_corpus(tmp_path / "toy", **small)
    make_corpus(tmp_path / "toy", seed=2, videos=2, frames=8, size=32, overwrite=True)
    assert len(list((tmp_path / "toy" / "videos").glob("*.mp4"))) == 2  # old videos removed


def test_cli_command_prints_only_the_folder(tmp_path):
    from typer.testing import CliRunner

    from pigcli.cli import app

    out = tmp_path / "toy"
    result = CliRunner().invoke(app, ["toy", "make", str(out), "--videos", "4", "--frames", "8", "--size", "32", "--splits", "2,1,1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert "R@1 ceiling" in result.stderr
    assert json.loads((out / "corpus.json").read_text())["stats"]["videos"] == 4

