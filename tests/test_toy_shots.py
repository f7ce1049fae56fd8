"""The 'shots' toy corpus: captions describe the longest shot only, keys are unique, twins differ only
in direction, files agree with the plan (pixels, boxes, captions), and the R@1 ceilings follow."""

import csv
import json

import numpy as np
import pytest

from pigcli.toy.corpus import COLOURS
from pigcli.toy.shots import OPPOSITE, make_shots_corpus, plan_shots, shot_ceilings, video_captions


@pytest.fixture(scope="module")
def plan():
    return plan_shots(videos=300, seed=3, pretrain=20)


def test_the_plan_is_deterministic(plan):
    again = plan_shots(videos=300, seed=3, pretrain=20)
    assert [(v.video_id, v.key, v.captions) for v in again.videos] == [(v.video_id, v.key, v.captions) for v in plan.videos]
    assert [v.key for v in plan_shots(videos=300, seed=4, pretrain=20).videos] != [v.key for v in plan.videos]


def test_the_salient_shot_is_the_longest_and_the_only_one_captioned(plan):
    keys = {v.key for v in plan.videos}
    assert len(keys) == len(plan.videos)  # a caption's key belongs to one video
    for video in plan.videos:
        lengths = [shot.scene.frames for shot in video.shots]
        salient = [shot for shot in video.shots if shot.salient]
        assert len(salient) == 1 and salient[0].key == video.key
        assert salient[0].scene.frames == max(lengths) and lengths.count(max(lengths)) == 1
        assert sum(lengths) == video.frames == 16 and 2 <= len(video.shots) <= 3
        for shot in video.shots:
            if not shot.salient:  # clutter: never a caption of the corpus, never the target's colour
                assert shot.key not in keys and shot.key.colour != video.key.colour
        assert video.captions == video_captions(video.key)
        assert all(video.key.direction in text and video.key.colour in text for text in video.captions)


def test_twins_differ_only_in_direction_and_share_their_split(plan):
    by_id = {v.video_id: v for v in plan.videos}
    twins = [v for v in plan.videos if v.twin is not None]
    assert 0.2 < len(twins) / len(plan.videos) < 0.5
    for video in twins:
        other = by_id[video.twin]
        assert other.twin == video.video_id and other.split == video.split
        assert other.key.direction == OPPOSITE[video.key.direction]
        assert other.key.order_blind() == video.key.order_blind()


def test_rendered_frames_show_the_target_in_its_shot(plan):
    video = plan.videos[0]
    frames = video.render()
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
    salient = next(shot for shot in video.shots if shot.salient)
    target = salient.scene.tracks[0]
    xs = []
    for t in range(salient.scene.frames):
        x0, y0, x1, y1 = target.box(t)
        centre = frames[salient.start + t, (y0 + y1 - 1) // 2, (x0 + x1 - 1) // 2]
        assert tuple(centre) == COLOURS[video.key.colour]
        xs.append((x0, y0))
    dx, dy = np.subtract(xs[-1], xs[0])
    moved = {"right": dx > 0, "left": dx < 0, "down": dy > 0, "up": dy < 0}
    assert moved[video.key.direction]


def test_ceilings_count_ties_and_frame_order(plan):
    test = [v for v in plan.videos if v.split == "test"]
    exact, _, blind, blind_expected = shot_ceilings(test)
    assert exact == 100.0
    twins_in_test = sum(v.twin is not None for v in test)
    assert twins_in_test > 0 and blind < 100.0 and blind <= blind_expected < 100.0
    assert shot_ceilings([]) is None


def test_corpus_files_agree_with_the_plan(tmp_path):
    from pigcli.inputs.video import read_clip

    out = tmp_path / "toy"
    stats = make_shots_corpus(out, videos=12, seed=1, pretrain=5, splits=(2, 1, 1))
    plan = plan_shots(videos=12, seed=1, pretrain=5, splits=(2, 1, 1))
    assert stats.videos == 12 and sum(stats.splits.values()) == 12
    assert "R@1 ceiling" in stats.summary()
    rows = [row for split in ("train", "val", "test") for row in csv.DictReader(open(out / f"{split}.csv"))]
    assert len(rows) == 36 and {r["video_id"] for r in rows} == {v.video_id for v in plan.videos}
    images = list(csv.DictReader(open(out / "pretrain.csv")))
    assert len(images) == 10 and all("moves" not in r["caption"] for r in images)
    assert len(list((out / "videos").glob("*.mp4"))) == 12 and len(list((out / "pretrain").glob("*.mp4"))) == 5
    clip = read_clip(out / "pretrain" / f"{plan.pretrain[0].video_id}.mp4", 1, 64)
    assert clip.frames.shape == (1, 3, 64, 64)
    records = [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]
    first = records[0]
    video = plan.videos[0]
    target = first["objects"][first["captions"][0]["objects"][0]]
    assert target["role"] == "target" and target["colours"] == [video.key.colour]
    salient = next(s for s in first["shots"] if s["salient"])
    inside = range(salient["start"], salient["start"] + salient["frames"])
    assert all((box is not None) == (t in inside) for t, box in enumerate(target["boxes"]))
    assert json.loads((out / "corpus.json").read_text())["settings"]["kind"] == "shots"
