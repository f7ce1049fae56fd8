"""Finding the videos a command was given: folders (recursive), files, or list files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import PigError
from .video import VIDEO_EXTENSIONS, Window, is_video_file

LIST_EXTENSIONS = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class VideoEntry:
    """One row of a video stage: a whole video, or one shot of it (window: its bounds; inputs/segments.py)."""
    id: str
    path: Path
    window: Window | None = None
    video_id: str = ""   # the shot's video (shots only)


def discover_videos(inputs: list[str | Path], relative_ids: bool = False,
                    ids_from: str | Path | None = None) -> list[VideoEntry]:
    """Expand inputs into videos with ids (file name without extension, or relative path with --relative-ids).

    ids_from: a captions file (e.g. the official train9k.jsonl); its video ids name the videos, each found
    in the input folders as the official loader finds it (`videos_by_id`).
    """
    if ids_from is not None:
        return videos_by_id(inputs, _caption_video_ids(ids_from))
    entries: list[VideoEntry] = []
    for item in inputs:
        entries.extend(_expand(Path(item), relative_ids))
    if not entries:
        raise PigError(f"no videos found in {', '.join(map(str, inputs))} "
                       f"(looked for {', '.join(VIDEO_EXTENSIONS)})")
    _check_unique(entries)
    return entries


def videos_by_id(folders: list[str | Path], ids: list[str]) -> list[VideoEntry]:
    """One entry per id, named by the id, as the official PIG / CLIP-ViP loader finds videos: FOLDER/ID.mp4
    (an id with '/' names a subfolder, as LSMDC's), else FOLDER/<the id's last part>.mp4 (the official rule
    for the other sets); pig also accepts any video extension, .mp4 first. An id found nowhere keeps the
    first path tried, so the stage records it as a failed video ('file not found')."""
    roots = [Path(folder) for folder in folders]
    for root in roots:
        if not root.is_dir():
            raise PigError(f"{root}: not a folder; with --ids, give the folder that holds the videos")
    entries = []
    for video_id in ids:
        names = dict.fromkeys((video_id, video_id.rsplit("/", 1)[-1]))  # in order, without repeats
        candidates = [root / (name + ext) for name in names for root in roots for ext in _BY_ID_EXTENSIONS]
        entries.append(VideoEntry(video_id, next((p for p in candidates if p.exists()), candidates[0])))
    if not entries:
        raise PigError("no video ids to look up: the --ids file names no videos")
    return entries


_BY_ID_EXTENSIONS = (".mp4", *(ext for ext in VIDEO_EXTENSIONS if ext != ".mp4"))


def _caption_video_ids(path: str | Path) -> list[str]:
    from .captions import load_captions

    return list(dict.fromkeys(caption.video_id for caption in load_captions(path)))


def _expand(item: Path, relative_ids: bool) -> list[VideoEntry]:
    if item.is_dir():
        # Everything with a video name but folders: a broken symlink, a named pipe or a device becomes a
        # failed video (read_clip says which, without opening it) instead of vanishing from the run.
        files = sorted(p for p in item.rglob("*") if is_video_file(p) and not p.is_dir())
        return [VideoEntry(_video_id(p, item, relative_ids), p) for p in files]
    if not item.exists():
        raise PigError(f"{item}: no such file or folder")
    if item.suffix.lower() in LIST_EXTENSIONS:
        return _read_list(item, relative_ids)
    if item.suffix.lower() in VIDEO_EXTENSIONS:
        return [VideoEntry(item.stem, item)]
    raise PigError(f"{item}: not a video ({', '.join(VIDEO_EXTENSIONS)}), a folder, or a list file "
                   f"({', '.join(LIST_EXTENSIONS)})")


def _read_list(list_file: Path, relative_ids: bool) -> list[VideoEntry]:
    """One path per line, relative to the list file's folder; blank lines and '#' comments ignored."""
    base = list_file.parent
    entries = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line) if Path(line).is_absolute() else base / line
        entries.append(VideoEntry(_video_id(path, base, relative_ids), path))
    return entries


def _video_id(path: Path, root: Path, relative_ids: bool) -> str:
    if relative_ids:
        try:
            return path.relative_to(root).with_suffix("").as_posix()
        except ValueError:
            pass
    return path.stem


def _check_unique(entries: list[VideoEntry]) -> None:
    seen: dict[str, Path] = {}
    for entry in entries:
        if entry.id in seen:
            raise PigError(f"two videos have the id {entry.id!r}: {seen[entry.id]} and {entry.path}; "
                           "rename one, or use --relative-ids to name videos by their path")
        seen[entry.id] = entry.path


def videos_fingerprint(entries: list[VideoEntry]) -> str:
    """Changes when a video is added, removed, renamed or rewritten (size or modification time)."""
    digest = hashlib.sha256()
    for entry in entries:
        try:
            stat = entry.path.stat()
            signature = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            signature = "missing"
        digest.update(f"{entry.id}\0{entry.path.resolve()}\0{signature}\n".encode())
    return digest.hexdigest()[:16]
