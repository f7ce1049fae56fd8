"""Deterministic toy text-video corpus: coloured shapes that move, appear, leave or change, with captions.

    make_corpus(DIR, videos=1200, seed=0) -> CorpusStats
    DIR/videos/<id>.mp4, DIR/{train,val,test}.csv ('video_id,caption'), DIR/objects.jsonl, DIR/corpus.json

Why it is built this way:
- A scene is a list of object tracks (centre, radius, colour and visibility per frame). Captions and
  facts are read back from the tracks, never from the random draw, so they agree with the pixels and
  the boxes by construction, and reversing every track gives the time-reversed video's captions.
- The events are ones that only the order of frames tells apart (left vs right, appears vs
  disappears, A then B, red turns blue vs blue turns red, grows vs shrinks), usually about a small
  object among distractors. Part of the corpus comes in time-reversed pairs, which a model blind to
  frame order (mean pooling) cannot tell apart at all: `order_blind` in the stats is its ceiling.
- A caption is a set of canonical atoms and is true of a video when its atoms are among the video's
  facts. A draw whose captions would be true of another video (or another video's captions of it) is
  redrawn, deterministically, so captions identify their video and the R@1 ceiling stays near 100%.

Boxes are pixel boxes [x0, y0, x1, y1), x1/y1 exclusive, tight around the drawn shape.
"""

from __future__ import annotations

import csv
import functools
import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from pigcli.errors import PigError, UsageError

# Bright object colours; background tones stay below 120 in every channel, so an object's exact colour
# never occurs in the background (tests find objects by colour).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (40, 90, 245), "yellow": (245, 220, 40),
    "purple": (165, 60, 225), "orange": (250, 140, 20), "cyan": (40, 220, 230), "white": (245, 245, 245),
}
TONES: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12), "grey": (75, 75, 75), "navy": (20, 28, 90), "brown": (85, 52, 20),
}
BACKGROUNDS = ("plain", "striped", "noisy")
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
DIRECTIONS = ("left", "right", "up", "down")
STORIES = ("move", "order", "change")
STORY_WEIGHTS = (0.4, 0.3, 0.3)
STILL = "stays still"

CAPTIONS_PER_VIDEO = 3
FPS = 8
MIN_FRAMES, MIN_SIZE = 8, 32
SPLITS = ("train", "val", "test")
DEFAULT_SPLITS = (0.7, 0.1, 0.2)
MAX_ATTEMPTS = 60       # draws per video before a clashing caption is accepted (and counted)
MARGIN = 2              # free pixels between objects, so boxes never overlap
STRIPE_LIFT, NOISE_AMPLITUDE = 40, 30

Atom = tuple  # ("does", noun, verb) | ("then", noun, verb, noun, verb) | ("past", noun, noun) | ("on", kind, tone)
Claim = tuple  # atoms, the event first; true of a video when all are among its facts
Box = tuple[int, int, int, int]


# ---------------------------------------------------------------- scene description


@dataclass(frozen=True)
class Background:
    kind: str       # plain | striped | noisy
    tone: str       # a TONES name
    vertical: bool  # stripe direction (not captioned)
    seed: int       # noise texture


@dataclass(frozen=True)
class Track:
    """One object over time; every field but shape and role has one value per frame."""

    shape: str
    role: str  # target | landmark | distractor: for objects.jsonl only, captions never read it
    x: tuple[int, ...]
    y: tuple[int, ...]
    radius: tuple[int, ...]
    colour: tuple[str, ...]
    visible: tuple[bool, ...]

    def reversed(self) -> Track:
        return Track(self.shape, self.role, self.x[::-1], self.y[::-1], self.radius[::-1], self.colour[::-1],
                     self.visible[::-1])

    def box(self, t: int) -> Box | None:
        if not self.visible[t]:
            return None
        x, y, r = self.x[t], self.y[t], self.radius[t]
        return (x - r, y - r, x + r + 1, y + r + 1)


@dataclass(frozen=True)
class Scene:
    size: int
    background: Background
    tracks: tuple[Track, ...]  # drawn in this order

    @property
    def frames(self) -> int:
        return len(self.tracks[0].x)

    def reversed(self) -> Scene:
        """The same video played backwards."""
        return Scene(self.size, self.background, tuple(track.reversed() for track in self.tracks))


def radii(size: int) -> tuple[int, int]:
    """(small, big) object radius in pixels for a frame of `size` px: 5 and 10 at 64 px."""
    return max(2, round(size / 13)), max(4, round(size / 6.4))


def size_word(radius: int, size: int) -> str:
    small, big = radii(size)
    return "small" if radius * 2 < small + big else "big"


def past_gap(size: int) -> int:
    """Largest free gap (px) between a mover's lane and an object it still counts as moving 'past'."""
    return max(4, size // 10)


# ---------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=None)
def shape_mask(shape: str, radius: int) -> np.ndarray:
    """[2r+1, 2r+1] bool; every shape touches all four sides, so the box is tight."""
    d = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    if shape == "circle":
        mask = dx * dx + dy * dy <= radius * (radius + 1)
    elif shape == "square":
        mask = np.ones_like(dx, dtype=bool)
    elif shape == "triangle":  # apex up
        mask = 2 * np.abs(dx) <= dy + radius
    elif shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) <= radius
    elif shape == "cross":
        arm = max(1, radius // 3)
        mask = (np.abs(dx) <= arm) | (np.abs(dy) <= arm)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask.flags.writeable = False  # cached: shared by every caller
    return mask


def background_image(background: Background, size: int) -> np.ndarray:
    """[size, size, 3] uint8, static over the video (static noise keeps the files small and fast)."""
    tone = np.array(TONES[background.tone], np.int16)
    image = np.broadcast_to(tone, (size, size, 3)).copy()
    if background.kind == "striped":
        band = np.arange(size) // max(2, size // 8) % 2 == 1
        lifted = band[None, :] if background.vertical else band[:, None]
        image[np.broadcast_to(lifted, (size, size))] += STRIPE_LIFT
    elif background.kind == "noisy":
        rng = np.random.default_rng(background.seed)
        image += rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, (size, size, 1), dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def render(scene: Scene) -> np.ndarray:
    """Frames [F, S, S, 3] uint8 of a scene; no files. Objects are painted in their exact colour."""
    frames = np.repeat(background_image(scene.background, scene.size)[None], scene.frames, axis=0)
    for track in scene.tracks:
        for t in range(scene.frames):
            box = track.box(t)
            if box is not None:
                x0, y0, x1, y1 = box
                frames[t, y0:y1, x0:x1][shape_mask(track.shape, track.radius[t])] = COLOURS[track.colour[t]]
    return frames


# ---------------------------------------------------------------- reading events back from the tracks


@dataclass(frozen=True)
class Event:
    noun: str         # the object as first seen, e.g. "small red circle"
    verb: str         # "moves left", "appears", "disappears", "turns blue", "grows", "shrinks", STILL
    time: int | None  # frame where it happens; None for motion over the whole video and for STILL


@dataclass(frozen=True)
class ToyCaption:
    text: str
    claim: Claim
    objects: tuple[int, ...]  # indices of the tracks it names


def read_event(track: Track, size: int) -> Event:
    """What one object does. The generator gives each object at most one kind of change."""
    shown = np.flatnonzero(track.visible)
    first, last = int(shown[0]), int(shown[-1])
    noun = f"{size_word(track.radius[first], size)} {track.colour[first]} {track.shape}"
    if first > 0:
        return Event(noun, "appears", first)
    if last < len(track.visible) - 1:
        return Event(noun, "disappears", last + 1)
    if track.colour[last] != track.colour[first]:
        return Event(noun, f"turns {track.colour[last]}", _first_change(track.colour))
    if size_word(track.radius[last], size) != size_word(track.radius[first], size):
        verb = "grows" if track.radius[last] > track.radius[first] else "shrinks"
        return Event(noun, verb, _first_change(track.radius))
    direction = _direction(track, size)
    return Event(noun, f"moves {direction}" if direction else STILL, None)


def _first_change(values: Sequence) -> int:
    return next(t for t, value in enumerate(values) if value != values[0])


def _direction(track: Track, size: int) -> str | None:
    """Direction of the net displacement when it is at least a fifth of the frame."""
    dx, dy = track.x[-1] - track.x[0], track.y[-1] - track.y[0]
    if max(abs(dx), abs(dy)) * 5 < size:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def passes(mover: Track, other: Track, size: int) -> bool:
    """The mover goes by a still object: it lies between the mover's start and end, close to its lane."""
    horizontal = abs(mover.x[-1] - mover.x[0]) >= abs(mover.y[-1] - mover.y[0])
    along, lane = (mover.x, mover.y) if horizontal else (mover.y, mover.x)
    at, offset = (other.x[0], other.y[0]) if horizontal else (other.y[0], other.x[0])
    near = abs(offset - lane[0]) <= mover.radius[0] + other.radius[0] + past_gap(size)
    return min(along[0], along[-1]) < at < max(along[0], along[-1]) and near


def _past_pairs(scene: Scene, events: list[Event]) -> list[tuple[int, int]]:
    return [(i, k) for i, a in enumerate(events) if a.verb.startswith("moves")
            for k, b in enumerate(events) if b.verb == STILL and passes(scene.tracks[i], scene.tracks[k], scene.size)]


def scene_facts(scene: Scene) -> frozenset[Atom]:
    """Every atom a caption may claim that is true of the scene."""
    events = [read_event(track, scene.size) for track in scene.tracks]
    timed = [e for e in events if e.time is not None]
    facts: set[Atom] = {("does", e.noun, e.verb) for e in events}
    facts |= {("then", a.noun, a.verb, b.noun, b.verb) for a in timed for b in timed if a.time < b.time}
    facts |= {("past", events[i].noun, events[k].noun) for i, k in _past_pairs(scene, events)}
    facts.add(("on", scene.background.kind, scene.background.tone))
    return frozenset(facts)


def describe(scene: Scene) -> list[ToyCaption]:
    """Up to CAPTIONS_PER_VIDEO captions: the main event, each with one context (what it passes, the
    background, or an object that stays still), so each names enough to pick out its video."""
    events = [read_event(track, scene.size) for track in scene.tracks]
    actors = [i for i, e in enumerate(events) if e.verb != STILL]
    timed = sorted((i for i in actors if events[i].time is not None), key=lambda i: events[i].time)
    if len(timed) >= 2:  # order of events: the first two
        i, j = timed[:2]
        a, b = events[i], events[j]
        text, named = f"a {a.noun} {a.verb}, then a {b.noun} {b.verb}", (i, j)
        head = ("then", a.noun, a.verb, b.noun, b.verb)
    elif actors:
        a = events[actors[0]]
        text, head, named = f"a {a.noun} {a.verb}", ("does", a.noun, a.verb), (actors[0],)
    else:
        raise ValueError("the scene has no event to describe")
    passed = [k for i, k in _past_pairs(scene, events) if (i,) == named][:1]
    bg = scene.background
    captions = [ToyCaption(f"{text} past a {events[k].noun}", (head, ("past", events[named[0]].noun, events[k].noun)),
                           named + (k,)) for k in passed]
    captions.append(ToyCaption(f"on a {bg.kind} {bg.tone} background, {text}", (head, ("on", bg.kind, bg.tone)), named))
    captions += [ToyCaption(f"{text}, while a {events[k].noun} {STILL}", (head, ("does", events[k].noun, STILL)),
                            named + (k,)) for k, e in enumerate(events) if e.verb == STILL and k not in passed]
    return captions[:CAPTIONS_PER_VIDEO]


# ---------------------------------------------------------------- drawing scenes


class _Layout:
    """Boxes taken so far: objects never overlap, so each box holds only its object's pixels."""

    def __init__(self, size: int):
        self.size = size
        self.taken: list[Box] = []

    def fits(self, box: Box) -> bool:
        x0, y0, x1, y1 = box
        inside = x0 >= 0 and y0 >= 0 and x1 <= self.size and y1 <= self.size
        return inside and all(x1 + MARGIN <= a0 or a1 + MARGIN <= x0 or y1 + MARGIN <= b0 or b1 + MARGIN <= y0
                              for a0, b0, a1, b1 in self.taken)

    def take(self, box: Box) -> bool:
        if not self.fits(box):
            return False
        self.taken.append(box)
        return True

    def place(self, rng: np.random.Generator, radius: int, tries: int = 40) -> tuple[int, int] | None:
        for _ in range(tries):
            x, y = (int(v) for v in rng.integers(radius, self.size - radius, 2))
            if self.take((x - radius, y - radius, x + radius + 1, y + radius + 1)):
                return x, y
        return None


def _track(shape: str, role: str, frames: int, x, y, radius, colour, visible=True) -> Track:
    """A Track from per-frame sequences or constants (a constant is repeated over the frames)."""
    def per_frame(value):
        return tuple(value) if isinstance(value, (list, tuple)) else (value,) * frames
    return Track(shape, role, per_frame(x), per_frame(y), per_frame(radius), per_frame(colour), per_frame(visible))


def _radius(rng: np.random.Generator, size: int, p_small: float) -> int:
    small, big = radii(size)
    return small if rng.random() < p_small else big


def _shape(rng: np.random.Generator) -> str:
    return str(rng.choice(SHAPES))


def _still_objects(rng, layout: _Layout, frames: int, colours: list[str], count: int, role: str = "distractor",
                   p_small: float = 0.4) -> list[Track] | None:
    tracks = []
    for colour in colours[:count]:
        radius = _radius(rng, layout.size, p_small)
        spot = layout.place(rng, radius)
        if spot is None:
            return None
        tracks.append(_track(_shape(rng), role, frames, spot[0], spot[1], radius, colour))
    return tracks


def _move_story(rng, size: int, frames: int, colours: list[str]) -> list[Track] | None:
    """A target crosses part of the frame, often past a landmark, among still distractors."""
    layout = _Layout(size)
    radius = _radius(rng, size, 0.6)
    length = int(rng.integers(round(0.35 * size), round(0.55 * size) + 1))
    start = int(rng.integers(radius, size - radius - length))
    lane = int(rng.integers(radius, size - radius))
    direction = str(rng.choice(DIRECTIONS))
    along = [start + round(length * t / (frames - 1)) for t in range(frames)]
    along = along[::-1] if direction in ("left", "up") else along
    horizontal = direction in ("left", "right")
    xs, ys = (along, lane) if horizontal else (lane, along)
    swept = (start - radius, lane - radius, start + length + radius + 1, lane + radius + 1)
    layout.take(swept if horizontal else (swept[1], swept[0], swept[3], swept[2]))
    tracks = [_track(_shape(rng), "target", frames, xs, ys, radius, colours[0])]
    if rng.random() < 0.7:
        tracks += _landmark(rng, layout, frames, radius, start, length, lane, horizontal, colours[1])
    count = (1 if len(tracks) == 2 else 2) + int(rng.integers(0, 2))
    distractors = _still_objects(rng, layout, frames, colours[2:], count)
    return None if distractors is None else tracks + distractors


def _landmark(rng, layout: _Layout, frames: int, radius: int, start: int, length: int, lane: int,
              horizontal: bool, colour: str) -> list[Track]:
    """A still object beside the mover's lane, between its start and end (so the mover goes past it)."""
    own = _radius(rng, layout.size, 0.4)
    at = int(rng.integers(start + length // 4, start + length - length // 4 + 1))
    gap = int(rng.integers(MARGIN + 1, past_gap(layout.size) + 1))
    for side in rng.permutation([-1, 1]):
        offset = lane + int(side) * (radius + own + gap)
        x, y = (at, offset) if horizontal else (offset, at)
        if layout.take((x - own, y - own, x + own + 1, y + own + 1)):
            return [_track(_shape(rng), "landmark", frames, x, y, own, colour)]
    return []


def _order_story(rng, size: int, frames: int, colours: list[str]) -> list[Track] | None:
    """Two objects appear or disappear, one after the other, among still distractors."""
    layout = _Layout(size)
    gap = 3
    first = int(rng.integers(2, frames - 1 - gap))
    times = (first, int(rng.integers(first + gap, frames - 1)))
    tracks = []
    for colour, when in zip(colours, times):
        radius = _radius(rng, size, 0.6)
        spot = layout.place(rng, radius)
        if spot is None:
            return None
        appears = rng.random() < 0.5
        visible = [(t >= when) == appears for t in range(frames)]
        tracks.append(_track(_shape(rng), "target", frames, spot[0], spot[1], radius, colour, visible))
    distractors = _still_objects(rng, layout, frames, colours[2:], 2 + int(rng.integers(0, 2)))
    return None if distractors is None else tracks + distractors


def _change_story(rng, size: int, frames: int, colours: list[str]) -> list[Track] | None:
    """One object turns another colour, grows or shrinks, among still distractors."""
    layout = _Layout(size)
    small, big = radii(size)
    spot = layout.place(rng, big)  # room for the biggest state
    if spot is None:
        return None
    kind = str(rng.choice(["colour", "colour", "grows", "shrinks"]))
    colour, radius = colours[0], _radius(rng, size, 0.6)
    if kind == "colour":
        when = int(rng.integers(frames // 3, 2 * frames // 3 + 1))
        colour = [colours[0]] * when + [colours[1]] * (frames - when)
    else:  # gradual, over a quarter of the video
        start, steps = int(rng.integers(frames // 4, frames // 2 + 1)), max(2, frames // 4)
        radius = [small + round((big - small) * min(1.0, max(0, t - start + 1) / steps)) for t in range(frames)]
        radius = radius[::-1] if kind == "shrinks" else radius
    tracks = [_track(_shape(rng), "target", frames, spot[0], spot[1], radius, colour)]
    distractors = _still_objects(rng, layout, frames, colours[2:], 2 + int(rng.integers(0, 2)))
    return None if distractors is None else tracks + distractors


STORY_MAKERS: dict[str, Callable[..., list[Track] | None]] = {
    "move": _move_story, "order": _order_story, "change": _change_story}


def draw_scene(rng: np.random.Generator, size: int, frames: int) -> Scene | None:
    """One random scene; None when the objects did not fit (the caller draws again)."""
    story = str(rng.choice(STORIES, p=STORY_WEIGHTS))
    background = Background(str(rng.choice(BACKGROUNDS)), str(rng.choice(list(TONES))), bool(rng.random() < 0.5),
                            int(rng.integers(2**31)))
    colours = [str(c) for c in rng.permutation(list(COLOURS))]  # distinct colours within a video
    tracks = STORY_MAKERS[story](rng, size, frames, colours)
    return None if tracks is None else Scene(size, background, tuple(tracks))


# ---------------------------------------------------------------- which videos a caption is true of


class ClaimIndex:
    """Facts of the videos added so far, to find the videos a claim is true of and the claims a new
    video's facts make true."""

    def __init__(self):
        self._videos_with: dict[Atom, set[int]] = defaultdict(set)
        self._claims_by_head: dict[Atom, list[Claim]] = defaultdict(list)
        self.count = 0

    def add(self, facts: frozenset[Atom], claims: Iterable[Claim] = ()) -> int:
        for atom in facts:
            self._videos_with[atom].add(self.count)
        for claim in claims:
            self._claims_by_head[claim[0]].append(claim)
        self.count += 1
        return self.count - 1

    def videos_where_true(self, claim: Claim) -> set[int]:
        sets = sorted((self._videos_with.get(atom, set()) for atom in claim), key=len)
        return set.intersection(*sets) if sets else set()

    def claims_true_of(self, facts: frozenset[Atom]) -> list[Claim]:
        return [claim for atom in facts for claim in self._claims_by_head.get(atom, ())
                if facts.issuperset(claim)]


def _clashes(index: ClaimIndex, unit: list[tuple[frozenset[Atom], list[ToyCaption]]]) -> int:
    """Captions of a candidate unit (a video, or a video and its reversal) that are true of another
    video, plus earlier captions that the unit's videos make true."""
    count = 0
    for n, (facts, captions) in enumerate(unit):
        count += sum(bool(index.videos_where_true(c.claim)) for c in captions) + len(index.claims_true_of(facts))
        count += sum(facts.issuperset(c.claim) for m, (_, others) in enumerate(unit) if m != n for c in others)
    return count


def tie_aware_r1(ties: Sequence[int]) -> tuple[float, float]:
    """(pessimistic, expected) R@1 in percent of a perfect model, where caption i fits ties[i] videos
    (its own included) equally well. Pessimistic ties (docs/method.md s.9) rank it at ties-1: a hit only
    when ties == 1; a random tie break gives 1/ties."""
    ties = np.asarray(ties, dtype=np.float64)
    if ties.size == 0 or (ties < 1).any():
        raise ValueError("every caption fits at least its own video")
    return float(100 * np.mean(ties == 1)), float(100 * np.mean(1 / ties))


def caption_ties(facts: Sequence[frozenset[Atom]], claims: Sequence[tuple[int, Claim]],
                 twin: dict[int, int] | None = None) -> list[int]:
    """For each (video, claim): how many of the videos the claim is true of. With `twin` (video -> its
    time-reversed copy among them), for a model blind to frame order: twins count as ties too."""
    index = ClaimIndex()
    for video_facts in facts:
        index.add(video_facts)
    ties = []
    for video, claim in claims:
        fits = index.videos_where_true(claim)
        if video not in fits:
            raise ValueError(f"claim {claim} is not true of its own video {video}")
        if twin is not None:
            fits |= {twin[v] for v in fits if v in twin}
        ties.append(len(fits))
    return ties


# ---------------------------------------------------------------- planning a corpus (no files)


@dataclass
class ToyVideo:
    video_id: str
    scene: Scene
    captions: list[ToyCaption]
    facts: frozenset[Atom]
    split: str
    twin: str | None = None  # id of its time-reversed copy, when the corpus holds one


@dataclass
class CorpusPlan:
    videos: list[ToyVideo]
    redraws: int = 0  # draws thrown away (no room for the objects, or a caption fitting another video)
    clashes: int = 0  # units accepted with a clash after MAX_ATTEMPTS draws


@dataclass
class CorpusStats:
    out_dir: str
    videos: int
    splits: dict[str, int]
    captions: int
    captions_per_video: float
    stories: dict[str, int]
    reversed_pairs: int
    r1_ceiling: float | None           # test split, pessimistic ties (docs/method.md s.9)
    r1_ceiling_expected: float | None  # test split, random tie break
    r1_order_blind: float | None       # the same for a model blind to frame order (e.g. mean pooling)
    r1_order_blind_expected: float | None
    redraws: int
    clashes: int
    seconds: float = 0.0
    videos_per_s: float = 0.0
    settings: dict = field(default_factory=dict)

    def summary(self) -> str:
        def pct(value):
            return "n/a" if value is None else f"{value:.1f}%"
        counts = ", ".join(f"{n} {name}" for name, n in self.splits.items())
        return (f"wrote {self.out_dir}: {self.videos} videos ({counts}), {self.captions_per_video:g} captions each, "
                f"{self.reversed_pairs} pairs told apart only by frame order, in {self.seconds:.1f}s "
                f"({self.videos_per_s:.1f} videos/s)\n"
                f"test R@1 ceiling: {pct(self.r1_ceiling)} (pessimistic ties), {pct(self.r1_ceiling_expected)} "
                f"(expected); blind to frame order: {pct(self.r1_order_blind)} / {pct(self.r1_order_blind_expected)}")


def parse_splits(text: str) -> tuple[float, float, float]:
    """'0.7,0.1,0.2' -> train, val, test fractions (normalised)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        raise UsageError(f"--splits must be three non-negative numbers train,val,test, e.g. 0.7,0.1,0.2; got {text!r}")
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def _check_settings(videos: int, seed: int, frames: int, size: int, splits: Sequence[float],
                    reversed_pairs: float) -> None:
    if videos < 1:
        raise UsageError(f"--videos must be at least 1, got {videos}")
    if seed < 0:
        raise UsageError(f"--seed must be non-negative, got {seed}")
    if frames < MIN_FRAMES:
        raise UsageError(f"--frames must be at least {MIN_FRAMES} (events need room), got {frames}")
    if size < MIN_SIZE or size % 2:
        raise UsageError(f"--size must be even and at least {MIN_SIZE} px (H.264 4:2:0 needs even sizes), got {size}")
    if len(splits) != 3 or min(splits) < 0 or sum(splits) <= 0:
        raise UsageError(f"splits must be three non-negative fractions, got {splits}")
    if not 0 <= reversed_pairs <= 1:
        raise UsageError(f"--reversed-pairs must be between 0 and 1, got {reversed_pairs}")


def _unit_splits(videos: int, seed: int, splits: Sequence[float], reversed_pairs: float) -> list[tuple[int, str]]:
    """(videos in the unit, split) per unit; a pair and its reversal share a split (else the test
    split would hold only half of the pairs that make frame order matter)."""
    pairs = int(videos * reversed_pairs) // 2  # never more videos than asked for
    sizes = np.array([2] * pairs + [1] * (videos - 2 * pairs))
    sizes = np.random.default_rng([seed, 1, 0, 0]).permutation(sizes)
    fractions = np.asarray(splits, np.float64) / sum(splits)
    bounds = np.cumsum(fractions)[:-1] * videos
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return [(int(n), SPLITS[int(np.searchsorted(bounds, start, side="right"))]) for n, start in zip(sizes, starts)]


Described = tuple[Scene, frozenset[Atom], list[ToyCaption]]


def _draw_unit(index: ClaimIndex, seed: int, unit: int, size: int, frames: int,
               paired: bool) -> tuple[list[Described], int, bool]:
    """(scenes with facts and captions, redraws, clash): the first draw whose captions fit no other
    video; after MAX_ATTEMPTS, the last one that fitted on the frame."""
    best: list[Described] | None = None
    for attempt in range(MAX_ATTEMPTS):
        scene = draw_scene(np.random.default_rng([seed, 0, unit, attempt]), size, frames)
        if scene is None:
            continue
        scenes = [scene, scene.reversed()] if paired else [scene]
        described = [(s, scene_facts(s), describe(s)) for s in scenes]
        if len(described[0][2]) < CAPTIONS_PER_VIDEO:
            continue
        best = described
        if not _clashes(index, [(facts, captions) for _, facts, captions in described]):
            return described, attempt, False
    if best is None:
        raise RuntimeError(f"no scene fitted a {size} px frame in {MAX_ATTEMPTS} draws (seed {seed}, unit {unit})")
    return best, MAX_ATTEMPTS - 1, True


def plan_corpus(videos: int = 1200, seed: int = 0, frames: int = 16, size: int = 64,
                splits: Sequence[float] = DEFAULT_SPLITS, reversed_pairs: float = 0.5) -> CorpusPlan:
    """Scenes, captions and splits of a corpus, without rendering: deterministic in its arguments."""
    _check_settings(videos, seed, frames, size, splits, reversed_pairs)
    width = max(5, len(str(videos - 1)))
    index = ClaimIndex()
    plan = CorpusPlan([])
    for unit, (count, split) in enumerate(_unit_splits(videos, seed, splits, reversed_pairs)):
        described, redraws, clash = _draw_unit(index, seed, unit, size, frames, paired=count == 2)
        plan.redraws += redraws
        plan.clashes += clash
        ids = [f"toy{len(plan.videos) + n:0{width}d}" for n in range(count)]
        for n, (scene, facts, captions) in enumerate(described):
            index.add(facts, [c.claim for c in captions])
            plan.videos.append(ToyVideo(ids[n], scene, captions, facts, split,
                                        twin=ids[1 - n] if count == 2 else None))
    return plan


def read_plan(out_dir: str | Path) -> CorpusPlan:
    """The plan (scenes, captions) of a written corpus, redrawn from its corpus.json settings: to render
    a video's frames or read its tracks without decoding the mp4 (e.g. to check ITS precision)."""
    path = Path(out_dir) / "corpus.json"
    try:
        settings = json.loads(path.read_text())["settings"]
    except (OSError, ValueError, KeyError) as error:
        raise PigError(f"{path}: not a toy corpus description ({error})") from None
    return plan_corpus(settings["videos"], settings["seed"], settings["frames"], settings["size"],
                       settings["splits"], settings["reversed_pairs"])


def ceilings(videos: Sequence[ToyVideo]) -> tuple[float, float, float, float] | None:
    """(pessimistic, expected, order-blind pessimistic, order-blind expected) R@1 ceilings, in percent,
    of text-to-video retrieval among `videos` with all their captions; None without videos."""
    if not videos:
        return None
    number = {video.video_id: n for n, video in enumerate(videos)}
    claims = [(n, c.claim) for n, video in enumerate(videos) for c in video.captions]
    facts = [video.facts for video in videos]
    twin = {n: number[v.twin] for n, v in enumerate(videos) if v.twin in number}
    return (*tie_aware_r1(caption_ties(facts, claims)), *tie_aware_r1(caption_ties(facts, claims, twin)))


# ---------------------------------------------------------------- writing a corpus


def make_corpus(out_dir: str | Path, videos: int = 1200, seed: int = 0, frames: int = 16, size: int = 64,
                splits: Sequence[float] = DEFAULT_SPLITS, reversed_pairs: float = 0.5, overwrite: bool = False,
                on_video: Callable[[], None] | None = None) -> CorpusStats:
    """Write the corpus to out_dir (see the module docstring); corpus.json last, so a killed run
    never looks complete. `on_video` is called after each video file (progress)."""
    out = Path(out_dir)
    _prepare(out, overwrite)
    plan = plan_corpus(videos, seed, frames, size, splits, reversed_pairs)
    seconds = write_clips(((out / "videos" / f"{v.video_id}.mp4", lambda v=v: render(v.scene)) for v in plan.videos),
                          on_video)
    for split in SPLITS:
        _write_captions(out / f"{split}.csv", [v for v in plan.videos if v.split == split])
    _write_objects(out / "objects.jsonl", plan.videos)
    settings = dict(videos=videos, seed=seed, frames=frames, size=size, splits=list(splits),
                    reversed_pairs=reversed_pairs, fps=FPS, captions_per_video=CAPTIONS_PER_VIDEO)
    stats = corpus_stats(plan, str(out), settings, seconds)
    (out / "corpus.json").write_text(json.dumps({"generator": "pig toy make", "version": 1, "settings": settings,
                                                  "stats": asdict(stats)}, indent=2) + "\n")
    return stats


def write_clips(clips: Iterable[tuple[Path, Callable[[], np.ndarray]]], on_video: Callable[[], None] | None) -> float:
    """Render and write each (path, render function) as an mp4 at FPS; returns the seconds it took."""
    from pigcli.toy.videowrite import write_video  # PyAV: only when writing

    started = time.perf_counter()
    for path, frames in clips:
        write_video(path, frames(), fps=FPS)
        if on_video is not None:
            on_video()
    return time.perf_counter() - started


def corpus_stats(plan: CorpusPlan, out_dir: str, settings: dict, seconds: float = 0.0) -> CorpusStats:
    ceiling = ceilings([v for v in plan.videos if v.split == "test"]) or (None,) * 4
    stories = defaultdict(int)
    for video in plan.videos:
        stories[_story(video.captions[0].claim)] += 1
    captions = sum(len(v.captions) for v in plan.videos)
    return CorpusStats(
        out_dir=out_dir, videos=len(plan.videos),
        splits={s: sum(v.split == s for v in plan.videos) for s in SPLITS},
        captions=captions, captions_per_video=round(captions / len(plan.videos), 3), stories=dict(stories),
        reversed_pairs=sum(v.twin is not None for v in plan.videos) // 2,
        r1_ceiling=ceiling[0], r1_ceiling_expected=ceiling[1], r1_order_blind=ceiling[2],
        r1_order_blind_expected=ceiling[3], redraws=plan.redraws, clashes=plan.clashes,
        seconds=round(seconds, 3), videos_per_s=round(len(plan.videos) / seconds, 1) if seconds else 0.0,
        settings=settings)


def _story(claim: Claim) -> str:
    head = claim[0]
    if head[0] == "then":
        return "order"
    return "move" if head[2].startswith("moves") else "change"


def _prepare(out: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder unless it is a toy corpus and overwrite is set."""
    if out.exists() and not out.is_dir():
        raise PigError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not (out / "corpus.json").exists():
            raise PigError(f"{out} is not empty and holds no toy corpus (corpus.json); choose an empty folder")
        if not overwrite:
            raise PigError(f"{out} already holds a toy corpus; use --force to replace it")
        (out / "corpus.json").unlink()
        for old in (out / "videos").glob("*.mp4"):  # ours: the folder is a toy corpus
            old.unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)


def _write_captions(path: Path, videos: Sequence[ToyVideo]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["video_id", "caption"])
        writer.writerows((v.video_id, c.text) for v in videos for c in v.captions)


def _write_objects(path: Path, videos: Sequence[ToyVideo]) -> None:
    """Per video: every object's name, role and box per frame (null while hidden), and which objects
    each caption names (for checking which tokens ITS selects)."""
    with open(path, "w", encoding="utf-8") as handle:
        for video in videos:
            scene = video.scene
            objects = [{"name": read_event(track, scene.size).noun, "role": track.role, "shape": track.shape,
                        "colours": sorted(set(track.colour)),
                        "boxes": [track.box(t) for t in range(scene.frames)]} for track in scene.tracks]
            record = {"video_id": video.video_id, "split": video.split, "twin": video.twin,
                      "frames": scene.frames, "size": scene.size, "objects": objects,
                      "captions": [{"caption": c.text, "objects": list(c.objects)} for c in video.captions]}
            handle.write(json.dumps(record) + "\n")
