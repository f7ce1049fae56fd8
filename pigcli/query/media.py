"""Pictures of what pig computed: the model's frames, the ITS-selected patches on them, thumbnails.

Public API (stable; `pig explain`, `pig rank --format html` and the web page of `pig serve` use it):

    model_frames(video_path, num_frames, image_size, decoder="auto", sampling, resize) -> uint8 [T, S, S, 3]
    SourceVideos(stage_file)             the source videos behind any stage file (via its extract file)
        .path(video_id) -> Path          the recorded source path, checked to exist
        .frames(video_id) -> [T, S, S, 3] the frames exactly as extract sampled and resized them (uint8)
        .thumbnails(video_id, count=4, max_side=160) -> list[bytes]   JPEGs of `count` of those frames
    video_path_for(stage_file, video_id) -> Path
    selected_patches(features_path, video_id, k=None) -> PatchView
    patch_boxes(view) -> list[PatchBox]  (frame, x0, y0, x1, y1, score) in model-frame pixels
    jpeg(frame, max_side=160, quality=85) -> bytes
    explain_image(view, frames, title="") -> PIL.Image.Image   the T frames, selected patches outlined
    explain(features_path, video_id, k=None) -> PIL.Image.Image  selected_patches + frames + explain_image
    ExplainLayout                        where explain_image puts each frame (and the image size)
    outline_colour(fraction) -> (r, g, b)  the outline of a patch whose score is `fraction` of the way
                                           from the lowest to the highest selected score
    png(image) -> bytes
    ranking_html(ranking, thumbnails, title="pig rank") -> str   a self-contained results page

Thumbnails are made on demand from the source video, not stored by extract: decoding again with the
sampling and resize that extract recorded (T, image size, decoder; pigcli/inputs/video.py, the same code) gives
exactly the frames the model saw, so patch boxes line up, the stage file format does not change, and no
extract run pays for pictures nobody looks at. The price: the source videos must still be where extract
found them (a clear error names the missing path), and each picture decodes its video once. The sampled
frame numbers are compared with the ones extract recorded, so a video rewritten since is reported, not
silently drawn with other frames.

Patch geometry (docs/method.md s.1-2): a video's T*L patches are numbered frame by frame, p = f*L + l,
and within a frame row-major over the G x G grid of the S x S model frame (L = G*G, patch size S/G px):
patch l covers x in [(l % G) * ps, (l % G + 1) * ps) and y in [(l // G) * ps, (l // G + 1) * ps).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..errors import PigError
from ..model.resolve import select_k_for
from ..stagefiles import (made_by, open_stage, recorded_resize, recorded_sampling, recorded_settings, stage_of,
                          upstream_file)
from ..store import decode_ids, open_stage_file, read_ids
from ..inputs.video import (DEFAULT_RESIZE, DEFAULT_SAMPLING, VideoError, Window, decord_available, read_clip,
                            sample_indices, to_uint8)

PATCH_STAGES = ("select", "generate", "fuse", "extract")  # files explain can read the selected patches from
SOURCE_STAGES = ("extract", "frames")                     # files that record each video's source path
MIN_CELL = 192        # px: small model frames are enlarged (nearest) to at least this for drawing
GAP = 6               # px between frames
TITLE_HEIGHT = 28     # px of the title bar
LABEL_HEIGHT = 18     # px of the label under each frame
MAX_COLUMNS = 4       # frames per row
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


# --- frames ----------------------------------------------------------------------------------------

def model_frames(video_path: str | Path, num_frames: int, image_size: int, decoder: str = "auto",
                 sampling: str = DEFAULT_SAMPLING, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """The T frames of a video as extract samples and resizes them: uint8 [T, S, S, 3] (RGB; squash's
    float frames rounded, as pictures need).

    Raises PigError (naming the path) for a video that is missing or cannot be decoded."""
    return _sampled(video_path, num_frames, image_size, decoder, sampling, resize)[0]


def _sampled(video_path, num_frames: int, image_size: int, decoder: str, sampling: str, resize: str,
             window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 frames [T, S, S, 3], sampled source frame numbers [T]) of the video, or of one shot of it."""
    try:
        clip = read_clip(video_path, num_frames, image_size, decoder, sampling=sampling, window=window, resize=resize)
    except VideoError as err:
        raise PigError(f"cannot read the source video {video_path}: {err}") from None
    return np.ascontiguousarray(to_uint8(clip.frames).transpose(0, 2, 3, 1)), clip.frame_index


class SourceMissing(PigError):
    """A recorded source video is no longer there (pig serve says so to its page, without the path)."""


class SourceVideos:
    """The source videos of the rows of a stage file: found through the extract (or frames) file it was
    made from, which records each video's path and how it was sampled (T, image size, decoder).

    stage_file: any stage file (index, generate, select, extract, frames). features: a file to follow
    instead (the extract file itself, when stage_file's recorded inputs have been moved)."""

    def __init__(self, stage_file: str | Path, features: str | Path | None = None):
        self.file = _upstream_source(features or stage_file)
        with open_stage(self.file, *SOURCE_STAGES) as handle:
            settings = recorded_settings(handle)
            self.num_frames = int(settings["num_frames"])
            self.image_size = int(settings["image_size"])
            self.decoder = str(settings.get("decoder", "auto"))
            self.sampling = recorded_sampling(settings)
            self.resize = recorded_resize(settings)
            self._row = {video_id: row for row, video_id in enumerate(read_ids(handle))}

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._row

    def folders(self) -> set[Path]:
        """The folders of every recorded source path, as recorded (all rows: pig serve's allowed roots)."""
        with open_stage(self.file, *SOURCE_STAGES) as handle:
            folders = {os.path.dirname(path) for path in decode_ids(handle["path"][:])}  # strings: 1M Paths are slow
        return {Path(folder) for folder in folders}

    def missing_count(self) -> int:
        """Videos extracted ok whose recorded source file is no longer there (one stat per video)."""
        with open_stage(self.file, *SOURCE_STAGES) as handle:
            paths, statuses = decode_ids(handle["path"][:]), decode_ids(handle["status"][:])
        return sum(status == "ok" and not os.path.isfile(path) for path, status in zip(paths, statuses))

    def _record(self, video_id: str) -> tuple[Path, np.ndarray, Window | None]:
        """(recorded path, sampled frame numbers, the shot's frames for a shot row) of an ok row; only that
        row is read (indexes can be large)."""
        row = self._row.get(video_id)
        if row is None:
            raise PigError(f"video {video_id!r} is not in {self.file} ({_some_ids(list(self._row))})")
        with open_stage(self.file, *SOURCE_STAGES) as handle:
            path, status, error = (decode_ids(handle[name][row:row + 1])[0] for name in ("path", "status", "error"))
            frame_index = handle["frame_index"][row]
            shot = handle["shot_frames"][row] if "shot_frames" in handle else None
        if status != "ok":
            raise PigError(f"video {video_id!r} failed in {self.file}: {error}")
        return Path(path), frame_index, None if shot is None else Window(int(shot[0]), int(shot[1]))

    def path(self, video_id: str) -> Path:
        """The source file of `video_id` as extract recorded it (a relative path: from the current folder)."""
        return self._existing(video_id, self._record(video_id)[0])

    def _existing(self, video_id: str, path: Path) -> Path:
        if not path.is_file():
            if os.path.lexists(path):  # something else in its place (a pipe, a folder, a dangling link)
                raise PigError(f"the source video of {video_id!r} at {path} is no longer a regular file")
            raise SourceMissing(f"the source video of {video_id!r} is missing: {path} (moved or deleted since "
                                f"{self.file} was made); put it back, or rerun extract on its new place")
        return path

    def frames(self, video_id: str, path: Path | None = None) -> np.ndarray:
        """uint8 [T, S, S, 3]: the frames the model saw, decoded again from the source video (for a shot row,
        from its shot). path: the file to decode instead of the recorded one (pig serve's checked, resolved
        copy of that path)."""
        recorded_path, recorded, shot = self._record(video_id)
        path = self._existing(video_id, path or recorded_path)
        # decord and PyAV give the same frames (tests/test_video.py): a file made with decord still draws without it
        decoder = self.decoder if self.decoder != "decord" or decord_available() else "pyav"
        frames, sampled = _sampled(path, self.num_frames, self.image_size, decoder, self.sampling, self.resize,
                                   shot)
        if not np.array_equal(sampled, recorded):
            raise PigError(f"{path} has changed since {self.file} was made (sampled frames {sampled.tolist()}, "
                           f"recorded {recorded.tolist()}); rerun extract")
        return frames

    def thumbnails(self, video_id: str, count: int = 4, max_side: int = 160) -> list[bytes]:
        """JPEGs of `count` of the model's frames (thumbnail_frames)."""
        frames = self.frames(video_id)
        return [jpeg(frames[i], max_side) for i in thumbnail_frames(len(frames), count)]


def thumbnail_frames(total: int, count: int) -> np.ndarray:
    """Which of a video's `total` model frames a picture of `count` shows (all if count >= total): spread
    evenly, at segment centres, since the first and last frames are often fades. The one rule of
    `pig rank --format html`'s thumbnails and `pig serve`'s strips."""
    return sample_indices(total, min(count, total), "centre")


def video_path_for(stage_file: str | Path, video_id: str) -> Path:
    """The recorded source path of `video_id`, from any stage file (followed back to its extract file)."""
    return SourceVideos(stage_file).path(video_id)


def _upstream_source(stage_file: str | Path) -> Path:
    open_stage_file(stage_file, PATCH_STAGES + ("frames",), made_by("extract")).close()  # exists, and is one of them
    found = upstream_file(stage_file, SOURCE_STAGES)
    if found is None:
        raise PigError(f"cannot find the extract file {stage_file} was made from (it records where its inputs "
                       "were; one was moved or deleted): pass it with --features feats.h5")
    return found


# --- selected patches --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PatchView:
    """The ITS-selected patches of one video, and the geometry to draw them on its model frames."""
    video_id: str
    frames: np.ndarray      # [k] int: which of the T sampled frames each patch is in (0..T-1)
    patches: np.ndarray     # [k] int: patch number within its frame, row-major over the grid (0..L-1)
    scores: np.ndarray      # [k] float32: ITS score, best first
    num_frames: int         # T
    grid: int               # G: patches per side (L = G*G)
    patch_size: int         # px, in model frames
    image_size: int         # S = G * patch_size
    frame_index: np.ndarray  # [T] the sampled frame numbers in the source video
    timestamps: np.ndarray   # [T] seconds
    source: Path             # the file the patches were read from


class PatchBox(NamedTuple):
    frame: int   # 0..T-1
    x0: int      # inclusive, model-frame pixels
    y0: int
    x1: int      # exclusive
    y1: int
    score: float


def selected_patches(features_path: str | Path, video_id: str, k: int | None = None) -> PatchView:
    """The patches ITS selected for `video_id`, read from a select file (also found from a generate or
    fuse file's recorded inputs; k: only its first, best k), or chosen from an extract file's ITS scores
    (top k; k default: the model's select_k, else 16). The grid comes from the extract file (its T and
    image size)."""
    chosen_from, extract = _patch_files(features_path, video_id)
    with open_stage(extract, "extract") as handle:
        row = _row_in(handle, extract, video_id)
        settings = recorded_settings(handle)
        num_frames, image_size = int(settings["num_frames"]), int(settings["image_size"])
        patches_total = handle["its_score"].shape[1]
        frame_index, timestamps = handle["frame_index"][row], handle["timestamps"][row]
        its_score = handle["its_score"][row] if chosen_from == extract else None
        if its_score is not None and k is None:
            k = select_k_for(None, handle, extract, default_when_unknown=True)
    if its_score is not None:
        flat, scores = _top_k(its_score, k)
    else:
        flat, scores = _selection(chosen_from, video_id, k)
    per_frame = patches_total // num_frames
    grid = math.isqrt(per_frame)
    if grid * grid != per_frame or per_frame * num_frames != patches_total or image_size % grid:
        raise PigError(f"{extract}: {patches_total} patches over {num_frames} frames of {image_size} px do not "
                       f"form a square grid; rerun: {made_by('extract')} --force")
    flat = np.asarray(flat, np.int64)
    return PatchView(video_id, flat // per_frame, flat % per_frame, np.asarray(scores, np.float32), num_frames,
                     grid, image_size // grid, image_size, np.asarray(frame_index), np.asarray(timestamps),
                     Path(chosen_from))


def _patch_files(features_path: str | Path, video_id: str) -> tuple[Path, Path]:
    """(the select or extract file the patches come from, the extract file with the frame grid)."""
    with open_stage(features_path, *PATCH_STAGES) as handle:
        stage = str(handle.attrs["stage"])
        _row_in(handle, features_path, video_id)  # the file asked about names the missing id
    chosen_from = Path(features_path) if stage in ("select", "extract") else upstream_file(features_path,
                                                                                          ("select", "extract"))
    if chosen_from is None:
        raise PigError(f"cannot find the select or extract file {features_path} was made from (moved or deleted); "
                       "pass that file instead")
    extract = chosen_from if stage_of(chosen_from) == "extract" else upstream_file(chosen_from, ("extract",))
    if extract is None:
        raise PigError(f"cannot find the extract file {chosen_from} was made from (moved or deleted): it holds the "
                       "frame grid; pass the extract file instead")
    return chosen_from, extract


def _selection(select_file: Path, video_id: str, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A select file's patches of `video_id` (flat numbers, scores), best first; the first k if given."""
    with open_stage(select_file, "select") as handle:
        row = _row_in(handle, select_file, video_id)
        flat, scores = handle["selected_index"][row], handle["selected_score"][row]
    if k is not None and not 0 < k <= len(flat):
        raise PigError(f"-k must be between 1 and {len(flat)} (the patches {select_file} selected), not {k}; "
                       "pass the extract file to choose more")
    return flat[:k], scores[:k]


def patch_boxes(view: PatchView) -> list[PatchBox]:
    """One box per selected patch, in the view's order (best first), in model-frame pixels."""
    size = view.patch_size
    return [PatchBox(int(f), int(p % view.grid) * size, int(p // view.grid) * size,
                     int(p % view.grid + 1) * size, int(p // view.grid + 1) * size, float(s))
            for f, p, s in zip(view.frames, view.patches, view.scores)]


def _top_k(its_score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from ..core.selection import top_k_patches

    if not 0 < k <= its_score.shape[0]:
        raise PigError(f"-k must be between 1 and {its_score.shape[0]} (the patches of a video), not {k}")
    flat = top_k_patches(its_score[None], k)[0]
    return flat, its_score[flat]


def _row_in(handle, path, video_id: str) -> int:
    ids = read_ids(handle)
    try:
        row = ids.index(video_id)
    except ValueError:
        raise PigError(f"video {video_id!r} is not in {path} ({_some_ids(ids)})") from None
    if "status" in handle and decode_ids(handle["status"][row:row + 1])[0] != "ok":
        raise PigError(f"video {video_id!r} failed in {path}: {decode_ids(handle['error'][row:row + 1])[0]}")
    return row


# --- images ----------------------------------------------------------------------------------------

def jpeg(frame: np.ndarray, max_side: int = 160, quality: int = 85) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes, shrunk (never enlarged) so that its longer side is at most max_side."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame, np.uint8))
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


PNG_MARKER = ("Software", "pig")  # a tEXt chunk: how pig knows a picture of its own (cli/output.py)
HTML_MARKER = '<meta name="generator" content="pig">'


def png(image) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(*PNG_MARKER)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def outline_colour(fraction: float) -> tuple[int, int, int]:
    """Yellow for the lowest selected score (0) to red for the highest (1)."""
    fraction = min(1.0, max(0.0, float(fraction)))
    return 255, round(220 * (1 - fraction)), 0


@dataclass(frozen=True)
class ExplainLayout:
    """Where explain_image draws: frames of `cell` px (the model frame enlarged `scale` times), in rows of
    `columns`, a title bar above and a label under each frame."""
    num_frames: int
    image_size: int

    @property
    def scale(self) -> int:
        return max(1, math.ceil(MIN_CELL / self.image_size))

    @property
    def cell(self) -> int:
        return self.image_size * self.scale

    @property
    def columns(self) -> int:
        return min(self.num_frames, MAX_COLUMNS)

    @property
    def rows(self) -> int:
        return math.ceil(self.num_frames / self.columns)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole image."""
        width = self.columns * self.cell + (self.columns + 1) * GAP
        height = TITLE_HEIGHT + self.rows * (self.cell + LABEL_HEIGHT + GAP)
        return width, height

    def frame_origin(self, frame: int) -> tuple[int, int]:
        """Top-left pixel of frame `frame` (0..T-1)."""
        row, column = divmod(frame, self.columns)
        return GAP + column * (self.cell + GAP), TITLE_HEIGHT + row * (self.cell + LABEL_HEIGHT + GAP)

    def outline_width(self) -> int:
        return max(2, self.scale)


def explain_image(view: PatchView, frames: np.ndarray, title: str = ""):
    """The T model frames in a grid with each selected patch outlined inside its box (colour from
    outline_colour by score, a tint as strong as the score) and its score printed in it."""
    from PIL import Image, ImageDraw

    if frames.shape[:3] != (view.num_frames, view.image_size, view.image_size):
        raise PigError(f"frames of shape {frames.shape} do not match {view.num_frames} frames of "
                       f"{view.image_size} px")
    layout = ExplainLayout(view.num_frames, view.image_size)
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    for f in range(view.num_frames):
        enlarged = Image.fromarray(frames[f]).resize((layout.cell, layout.cell), Image.Resampling.NEAREST)
        canvas.paste(enlarged, layout.frame_origin(f))
    draw = ImageDraw.Draw(canvas, "RGBA")
    _draw_boxes(draw, view, layout)
    _draw_labels(draw, view, layout, title or f"{view.video_id}: {len(view.scores)} ITS-selected patches")
    return canvas


def explain(features_path: str | Path, video_id: str, k: int | None = None):
    """`pig explain`: the picture of `video_id`'s selected patches (selected_patches' file rules), drawn on
    its frames decoded again from the source video."""
    view = selected_patches(features_path, video_id, k)
    frames = SourceVideos(view.source).frames(video_id)
    title = (f"{video_id}: the {len(view.scores)} patches ITS selected of {view.num_frames} frames x "
             f"{view.grid * view.grid} ({view.image_size} px; {view.source.name})")
    return explain_image(view, frames, title)


def _draw_boxes(draw, view: PatchView, layout: ExplainLayout) -> None:
    boxes = patch_boxes(view)
    if not boxes:
        return
    low, high = float(np.min(view.scores)), float(np.max(view.scores))
    line = layout.outline_width()
    side = view.patch_size * layout.scale
    font = _fitting_font(side - 2 * line - 2, max((_score_text(b.score) for b in boxes), key=len))
    for box in boxes:
        fraction = (box.score - low) / (high - low) if high > low else 1.0
        colour = outline_colour(fraction)
        left, top = layout.frame_origin(box.frame)
        x0, y0 = left + box.x0 * layout.scale, top + box.y0 * layout.scale
        x1, y1 = left + box.x1 * layout.scale - 1, top + box.y1 * layout.scale - 1  # inside the patch
        draw.rectangle((x0, y0, x1, y1), fill=colour + (round(40 + 80 * fraction),))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        if font is not None:
            draw.text((x0 + line + 1, y0 + line + 1), _score_text(box.score), fill=(255, 255, 255), font=font,
                      stroke_width=1, stroke_fill=(0, 0, 0))


def _draw_labels(draw, view: PatchView, layout: ExplainLayout, title: str) -> None:
    draw.text((GAP, 6), title, fill=TEXT, font=_font(14))
    label_font = _font(11)
    for f in range(view.num_frames):
        left, top = layout.frame_origin(f)
        seconds = view.timestamps[f]
        when = f" ({seconds:.1f} s)" if np.isfinite(seconds) else ""
        kept = int(np.sum(view.frames == f))
        label = f"frame {int(view.frame_index[f])}{when}: {kept} patch{'es' if kept != 1 else ''}"
        draw.text((left, top + layout.cell + 2), label, fill=TEXT, font=label_font)


def _score_text(score: float) -> str:
    """ITS scores are attention weights in [0, 1], small in an untrained model: two significant digits,
    no leading zero ('.12', '.0074')."""
    text = f"{score:.2g}"
    return text[1:] if text.startswith("0.") else text


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fitting_font(width: int, sample: str):
    """The largest font (6..14 px) whose `sample` fits in `width` px, or None if none does."""
    for size in range(14, 5, -1):
        font = _font(size)
        left, _, right, _ = font.getbbox(sample)
        if right - left <= width:
            return font
    return None


# --- the results page --------------------------------------------------------------------------------

PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h2 { font-size: 1.1em; margin-top: 2em; } h2 .qid { color: #888; font-weight: normal; }
table { border-collapse: collapse; } td, th { padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } td.thumbs img { height: 72px; margin-right: 2px; }
.missing { color: #a33; font-size: 0.9em; }
"""


def ranking_html(ranking, thumbnails: Callable[[str], Sequence[bytes]] | None, title: str = "pig rank") -> str:
    """A self-contained HTML page of a Ranking (pigcli.query.rank): per query its text (if known) and id,
    then rank, video id, score and thumbnails (JPEG data URIs) of each result. Every id and text is
    escaped. thumbnails(video_id) gives a video's JPEGs; a PigError from it is shown in that row."""
    texts = getattr(ranking, "query_texts", None) or [None] * len(ranking.query_ids)
    cache: dict[str, str] = {}
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">{HTML_MARKER}<title>{_esc(title)}</title>"
             f"<style>{PAGE_STYLE}</style></head><body>\n<h1>{_esc(title)}</h1>\n"]
    for qi, query_id in enumerate(ranking.query_ids):
        heading = _esc(texts[qi]) + f" <span class=\"qid\">({_esc(query_id)})</span>" if texts[qi] else _esc(query_id)
        parts.append(f"<h2>{heading}</h2>\n<table><tr><th>rank</th><th>video</th><th>score</th><th></th></tr>\n")
        for position, (row, score) in enumerate(zip(ranking.rows[qi], ranking.scores[qi]), start=1):
            video = ranking.video_ids[row]
            if video not in cache:
                cache[video] = _thumbnail_cell(video, thumbnails)
            parts.append(f"<tr><td class=\"num\">{position}</td><td>{_esc(video)}</td>"
                         f"<td class=\"num\">{float(score):.4f}</td><td class=\"thumbs\">{cache[video]}</td></tr>\n")
        parts.append("</table>\n")
    parts.append("</body></html>\n")
    return "".join(parts)


def _thumbnail_cell(video_id: str, thumbnails) -> str:
    if thumbnails is None:
        return ""
    try:
        images = thumbnails(video_id)
    except PigError as err:  # one video gone does not spoil the page: the reason goes in its row
        from ..console import warn

        warn(f"no thumbnails: {err}")
        return f"<span class=\"missing\">{_esc(str(err))}</span>"
    alt = _esc(video_id)
    return "".join(f"<img alt=\"{alt}\" src=\"data:image/jpeg;base64,{base64.b64encode(b).decode()}\">"
                   for b in images)


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


# --- small helpers -----------------------------------------------------------------------------------

def _some_ids(ids: list[str], shown: int = 3) -> str:
    if not ids:
        return "it has no videos"
    more = f", ... ({len(ids)} videos)" if len(ids) > shown else ""
    return "its ids: " + ", ".join(repr(i) for i in ids[:shown]) + more
