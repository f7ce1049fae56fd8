"""The default toy corpus ('shots'): videos of several shots, captions about the salient one.

    make_shots_corpus(DIR, videos=3000, seed=0) -> CorpusStats
    DIR/videos/<id>.mp4 and DIR/{train,val,test}.csv     multi-shot videos and their captions
    DIR/pretrain/<id>.mp4 and DIR/pretrain.csv           still images (1-frame videos) for pretraining
    DIR/objects.jsonl, DIR/corpus.json                   boxes per frame, settings and R@1 ceilings

Why it is built this way (docs/toy_corpus.md):
- Real captions describe what is salient in a video and rarely name the clutter around it. Here a video
  is 2 or 3 shots, each on its own background with objects of the same kinds; the longest shot (8 to
  10 of 16 frames) holds the salient event, a target object moving in one direction, and the captions
  describe only that: "a big red circle moves left on a striped grey background". The other shots are
  clutter: other objects moving on other backgrounds, never captioned. A method that pools every frame
  alike (mean pooling) mixes the clutter into the video's vector; one that predicts the likely query
  and attends to what it names (PIG's pseudo-query, or xpool's real query) can leave it out.
- The direction of motion still matters: about a third of the videos come with a twin that differs
  only in direction (same object, same background), which no model blind to frame order can tell apart.
- A caption's key (size, colour, shape, direction, background) is unique in the corpus, and no clutter
  shot shows another video's key, so a caption is true of its own video only: the R@1 ceiling is 100%
  (reported, with the ceiling of a model blind to frame order).
- The pretraining split holds still images of single objects on backgrounds, captioned without
  motion ("a big red circle on a striped grey background"): what a two-tower CLIP is first trained on
  before PIG and its baselines start from it, as the paper starts from a pretrained CLIP.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import UsageError
from .corpus import (BACKGROUNDS, COLOURS, DEFAULT_SPLITS, DIRECTIONS, FPS, SHAPES, SPLITS, TONES, Background,
                  CorpusStats, Scene, Track, _Layout, _prepare, _track, radii, render, tie_aware_r1, write_clips)

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
FRAMES, SIZE = 16, 64
MAIN_FRAMES = (8, 10)        # frames of the salient shot (of FRAMES): always the longest
TWINS = 0.35                 # share of videos that come with an opposite-direction twin
PRETRAIN_PER_VIDEO = 2.0     # pretraining images per video of the corpus, by default


@dataclass(frozen=True)
class Key:
    """What a caption says: the target object, its direction and the shot's background."""

    size: str        # small | big
    colour: str
    shape: str
    direction: str
    kind: str        # background: plain | striped | noisy
    tone: str

    @property
    def noun(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"

    def order_blind(self) -> tuple:
        return (self.size, self.colour, self.shape, self.kind, self.tone)

    def twin(self) -> "Key":
        return Key(self.size, self.colour, self.shape, OPPOSITE[self.direction], self.kind, self.tone)


def video_captions(key: Key) -> list[str]:
    """Three phrasings of the salient shot."""
    return [f"a {key.noun} moves {key.direction} on a {key.kind} {key.tone} background",
            f"on a {key.kind} {key.tone} background, a {key.noun} moves {key.direction}",
            f"a {key.noun} moving {key.direction} over a {key.tone} {key.kind} background"]


def image_captions(key: Key) -> list[str]:
    """Two phrasings of a still image (no motion)."""
    return [f"a {key.noun} on a {key.kind} {key.tone} background",
            f"a {key.tone} {key.kind} background with a {key.noun}"]


def draw_key(rng: np.random.Generator) -> Key:
    return Key(str(rng.choice(["small", "big"])), str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)),
               str(rng.choice(DIRECTIONS)), str(rng.choice(BACKGROUNDS)), str(rng.choice(list(TONES))))


# ---------------------------------------------------------------- shots


@dataclass(frozen=True)
class Shot:
    key: Key
    start: int                 # first frame of the shot in the video
    scene: Scene               # its frames, background and tracks
    salient: bool


def _radius(key: Key, size: int) -> int:
    small, big = radii(size)
    return small if key.size == "small" else big


def _mover(rng, layout: _Layout, key: Key, frames: int, role: str) -> Track:
    """The key's object crossing 35-55% of the frame in its direction (its swept box is reserved)."""
    size, radius = layout.size, _radius(key, layout.size)
    length = int(rng.integers(round(0.35 * size), round(0.55 * size) + 1))
    start = int(rng.integers(radius, size - radius - length))
    lane = int(rng.integers(radius, size - radius))
    along = [start + round(length * t / max(1, frames - 1)) for t in range(frames)]
    along = along[::-1] if key.direction in ("left", "up") else along
    horizontal = key.direction in ("left", "right")
    swept = (start - radius, lane - radius, start + length + radius + 1, lane + radius + 1)
    layout.take(swept if horizontal else (swept[1], swept[0], swept[3], swept[2]))
    xs, ys = (along, lane) if horizontal else (lane, along)
    return _track(key.shape, role, frames, xs, ys, radius, key.colour)


def _shot(rng, key: Key, frames: int, size: int, start: int, salient: bool, still: bool = False) -> Shot:
    """One shot: the key's object (moving, or still for an image) and sometimes a small still distractor."""
    layout = _Layout(size)
    role = "target" if salient else "clutter"
    if still:
        radius = _radius(key, size)
        x, y = layout.place(rng, radius) or (size // 2, size // 2)
        tracks = [_track(key.shape, role, frames, x, y, radius, key.colour)]
    else:
        tracks = [_mover(rng, layout, key, frames, role)]
    if rng.random() < 0.5:
        colour = str(rng.choice([c for c in COLOURS if c != key.colour]))
        small = radii(size)[0]
        spot = layout.place(rng, small)
        if spot is not None:
            tracks.append(_track(str(rng.choice(SHAPES)), "distractor", frames, spot[0], spot[1], small, colour))
    background = Background(key.kind, key.tone, bool(rng.random() < 0.5), int(rng.integers(2**31)))
    return Shot(key, start, Scene(size, background, tuple(tracks)), salient)


def _shot_lengths(rng, frames: int) -> tuple[list[int], int]:
    """Lengths of the shots in order, and which one is salient (the longest)."""
    main = int(rng.integers(MAIN_FRAMES[0] * frames // FRAMES, MAIN_FRAMES[1] * frames // FRAMES + 1))
    rest = frames - main
    one = rest < main and (rest < 5 or rng.random() < 0.4)  # one clutter shot, never as long as the salient one
    clutter = [rest] if one else [rest // 2, rest - rest // 2]
    position = int(rng.integers(0, len(clutter) + 1))
    return clutter[:position] + [main] + clutter[position:], position


# ---------------------------------------------------------------- planning a corpus (no files)


@dataclass
class ShotVideo:
    video_id: str
    split: str                  # train | val | test | pretrain
    key: Key
    shots: list[Shot]
    captions: list[str]
    twin: str | None = None

    @property
    def frames(self) -> int:
        return sum(shot.scene.frames for shot in self.shots)

    def render(self) -> np.ndarray:
        """[F, S, S, 3] uint8: the shots one after the other."""
        return np.concatenate([render(shot.scene) for shot in self.shots])


@dataclass
class ShotsPlan:
    videos: list[ShotVideo]                      # train, val and test, in id order
    pretrain: list[ShotVideo] = field(default_factory=list)


def _draw_keys(rng, count: int, used: set[Key]) -> list[tuple[Key, Key | None]]:
    """`count` new keys, a share of them as (key, opposite-direction twin) pairs."""
    p_pair = TWINS / (2 - TWINS)  # a unit is a pair with this probability: TWINS of the videos are in pairs
    units: list[tuple[Key, Key | None]] = []
    drawn = 0
    while drawn < count:
        key = draw_key(rng)
        if key in used:
            continue
        twin = key.twin() if drawn + 1 < count and key.twin() not in used and rng.random() < p_pair else None
        used.update(k for k in (key, twin) if k is not None)
        units.append((key, twin))
        drawn += 1 + (twin is not None)
    return units


def _clutter_key(rng, salient: Key, keys: set[Key]) -> Key:
    """A clutter shot's key: never a caption key of the corpus, never the salient object's colour."""
    while True:
        key = draw_key(rng)
        if key not in keys and key.colour != salient.colour:
            return key


def _video(rng, video_id: str, split: str, key: Key, keys: set[Key], frames: int, size: int) -> ShotVideo:
    lengths, salient = _shot_lengths(rng, frames)
    shots, start = [], 0
    for n, length in enumerate(lengths):
        shot_key = key if n == salient else _clutter_key(rng, key, keys)
        shots.append(_shot(rng, shot_key, length, size, start, n == salient))
        start += length
    return ShotVideo(video_id, split, key, shots, video_captions(key))


def plan_shots(videos: int = 3000, seed: int = 0, frames: int = FRAMES, size: int = SIZE,
               splits: Sequence[float] = DEFAULT_SPLITS, pretrain: int | None = None) -> ShotsPlan:
    """Every video's shots and captions, deterministic in the arguments; no rendering."""
    _check(videos, frames, size, splits)
    pretrain = round(PRETRAIN_PER_VIDEO * videos) if pretrain is None else pretrain
    rng = np.random.default_rng([seed, 7])
    used: set[Key] = set()
    units = _draw_keys(rng, videos, used)
    bounds = np.cumsum(np.asarray(splits, np.float64) / sum(splits))[:-1] * videos
    width = max(5, len(str(videos - 1)))
    plan, count = ShotsPlan([]), 0
    for key, twin in units:
        split = SPLITS[int(np.searchsorted(bounds, count, side="right"))]  # a pair shares its split
        ids = [f"shot{count + n:0{width}d}" for n in range(1 + (twin is not None))]
        for n, unit_key in enumerate(k for k in (key, twin) if k is not None):
            video = _video(rng, ids[n], split, unit_key, used, frames, size)
            video.twin = ids[1 - n] if twin is not None else None
            plan.videos.append(video)
        count += len(ids)
    for n in range(pretrain):  # still images: an object on a background, no motion
        key = draw_key(rng)
        shot = _shot(rng, key, 1, size, 0, salient=True, still=True)
        plan.pretrain.append(ShotVideo(f"img{n:0{width + 1}d}", "pretrain", key, [shot], image_captions(key)))
    return plan


def _check(videos: int, frames: int, size: int, splits: Sequence[float]) -> None:
    if videos < 1:
        raise UsageError(f"--videos must be at least 1, got {videos}")
    if frames < 8:
        raise UsageError(f"--frames must be at least 8 (shots need room), got {frames}")
    if size < 32 or size % 2:
        raise UsageError(f"--size must be even and at least 32 px, got {size}")
    if len(splits) != 3 or min(splits) < 0 or sum(splits) <= 0:
        raise UsageError(f"splits must be three non-negative fractions, got {splits}")


def shot_ceilings(videos: Sequence[ShotVideo]) -> tuple[float, float, float, float] | None:
    """(pessimistic, expected, order-blind pessimistic, order-blind expected) R@1 ceilings in percent:
    a caption fits every video with its key (itself only), or, blind to frame order, every video with
    its key up to the direction (its twin too)."""
    if not videos:
        return None
    exact = {v.key for v in videos}
    blind: dict[tuple, int] = {}
    for v in videos:
        blind[v.key.order_blind()] = blind.get(v.key.order_blind(), 0) + 1
    ties = [1 if v.key in exact else 0 for v in videos for _ in v.captions]
    blind_ties = [blind[v.key.order_blind()] for v in videos for _ in v.captions]
    return (*tie_aware_r1(ties), *tie_aware_r1(blind_ties))


# ---------------------------------------------------------------- writing a corpus


def make_shots_corpus(out_dir: str | Path, videos: int = 3000, seed: int = 0, frames: int = FRAMES,
                      size: int = SIZE, splits: Sequence[float] = DEFAULT_SPLITS, pretrain: int | None = None,
                      overwrite: bool = False, on_video: Callable[[], None] | None = None) -> CorpusStats:
    """Write the corpus (see the module docstring); corpus.json last, so a killed run never looks complete."""
    out = Path(out_dir)
    _prepare(out, overwrite)
    (out / "pretrain").mkdir(exist_ok=True)
    for old in (out / "pretrain").glob("*.mp4"):
        old.unlink()
    plan = plan_shots(videos, seed, frames, size, splits, pretrain)
    seconds = write_clips(((out / ("pretrain" if v.split == "pretrain" else "videos") / f"{v.video_id}.mp4", v.render)
                           for v in plan.videos + plan.pretrain), on_video)
    for split in SPLITS:
        _write_captions(out / f"{split}.csv", [v for v in plan.videos if v.split == split])
    _write_captions(out / "pretrain.csv", plan.pretrain)
    _write_objects(out / "objects.jsonl", plan.videos)
    settings = dict(kind="shots", videos=videos, seed=seed, frames=frames, size=size, splits=list(splits),
                    pretrain=len(plan.pretrain), fps=FPS, captions_per_video=3)
    stats = shots_stats(plan, str(out), settings, seconds)
    (out / "corpus.json").write_text(json.dumps({"generator": "pig toy make", "version": 2, "settings": settings,
                                                  "stats": asdict(stats)}, indent=2) + "\n")
    return stats


def shots_stats(plan: ShotsPlan, out_dir: str, settings: dict, seconds: float) -> CorpusStats:
    ceiling = shot_ceilings([v for v in plan.videos if v.split == "test"]) or (None,) * 4
    captions = sum(len(v.captions) for v in plan.videos)
    return CorpusStats(
        out_dir=out_dir, videos=len(plan.videos), splits={s: sum(v.split == s for v in plan.videos) for s in SPLITS},
        captions=captions, captions_per_video=round(captions / len(plan.videos), 3),
        stories={"shots": len(plan.videos), "pretrain images": len(plan.pretrain)},
        reversed_pairs=sum(v.twin is not None for v in plan.videos) // 2,
        r1_ceiling=ceiling[0], r1_ceiling_expected=ceiling[1], r1_order_blind=ceiling[2],
        r1_order_blind_expected=ceiling[3], redraws=0, clashes=0, seconds=round(seconds, 3),
        videos_per_s=round((len(plan.videos) + len(plan.pretrain)) / seconds, 1) if seconds else 0.0,
        settings=settings)


def _write_captions(path: Path, videos: Sequence[ShotVideo]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["video_id", "caption"])
        writer.writerows((v.video_id, text) for v in videos for text in v.captions)


def _write_objects(path: Path, videos: Sequence[ShotVideo]) -> None:
    """Per video: every object with its role (target: the captioned one; clutter; distractor) and its
    box in every frame of the video (null outside its shot), the shots, and which objects each caption
    names (the target): what ITS precision is measured against."""
    with open(path, "w", encoding="utf-8") as handle:
        for video in videos:
            objects, target = [], None
            for shot in video.shots:
                for track in shot.scene.tracks:
                    if shot.salient and track.role == "target":
                        target = len(objects)
                    boxes = [None] * video.frames
                    for t in range(shot.scene.frames):
                        boxes[shot.start + t] = track.box(t)
                    name = f"{'small' if track.radius[0] == radii(shot.scene.size)[0] else 'big'} {track.colour[0]} {track.shape}"
                    objects.append({"name": name, "role": track.role, "shape": track.shape,
                                    "colours": [track.colour[0]], "boxes": boxes})
            record = {"video_id": video.video_id, "split": video.split, "twin": video.twin, "frames": video.frames,
                      "size": video.shots[0].scene.size, "objects": objects,
                      "shots": [{"start": s.start, "frames": s.scene.frames, "salient": s.salient} for s in video.shots],
                      "captions": [{"caption": text, "objects": [target]} for text in video.captions]}
            handle.write(json.dumps(record) + "\n")
