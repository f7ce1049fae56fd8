"""Segments files: shots as the rows of extract, frames and index (`--segments FILE`, docs/shots.md).

One row per shot, in a text file with a header line (columns separated by tabs, else commas; '#' lines
and blank lines ignored; other columns ignored):

    shot            video   startframe  endframe        frame numbers from 0, both included
    shot00001_1     00001   0           82              (TRECVID's V3C master shot reference: msb/VIDEO.tsv)

or `starttime endtime` instead (seconds, both included: the frames whose time i / fps lies between
them). The header names the unit; with both pairs, frames are used (they are exact).

The file is read as a stream, twice: once to check it (`scan_segments`: every video known, start >= 0,
end >= start, numbers, no shot id twice) and hash it, then row by row as the stage goes (`shot_entries`).
Memory grows with the number of distinct videos (their id -> path table) and 8 bytes per shot (a
64-bit hash of each id, for the duplicate check), never with the shots' rows themselves.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import PigError
from ..safe_write import check_target, replacing, write_errors
from .sources import VideoEntry
from .video import Window

UNIT_COLUMNS = {"frames": ("startframe", "endframe"), "seconds": ("starttime", "endtime")}


@dataclass(frozen=True)
class Segment:
    line: int
    shot: str
    video: str
    window: Window


@dataclass(frozen=True)
class SegmentsInfo:
    """What `scan_segments` found: the file's identity, its unit, how many shots and which videos."""
    path: Path
    sha256: str
    unit: str
    shots: int                # in the file
    rows: int                 # of them, those of the shard asked for (all without one)
    videos: tuple[str, ...]   # the videos of those rows, in the order they first appear

    def identity(self) -> dict:
        """How a stage file records the segments file (a resume with another one is refused)."""
        return {"sha256": self.sha256, "unit": self.unit, "shots": self.shots}


def read_segments(path: str | Path) -> Iterator[Segment]:
    """The shots of a segments file, one at a time, each checked on its own (numbers, start >= 0,
    end >= start); a bad row is a PigError naming the file and line."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as err:
        raise PigError(f"{path}: cannot read the segments file ({err.strerror or err})") from None
    with handle:
        header, columns, separator = None, {}, "\t"
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if header is None:
                separator = "\t" if "\t" in line else ","
                header = [name.strip().lower() for name in line.split(separator)]
                columns, unit = _columns(path, header)
                continue
            yield _segment(path, number, [field.strip() for field in line.split(separator)], columns, unit)
    if header is None:
        raise PigError(f"{path}: empty segments file (expected a header: shot, video, startframe, endframe)")


def _columns(path: Path, header: list[str]) -> tuple[dict, str]:
    unit = next((u for u, names in UNIT_COLUMNS.items() if all(n in header for n in names)), None)
    missing = [name for name in ("shot", "video") if name not in header]
    if missing or unit is None:
        wanted = ", ".join(missing + ([] if unit else ["startframe and endframe (or starttime and endtime)"]))
        raise PigError(f"{path}: the header line ({', '.join(header)}) lacks {wanted}")
    names = ("shot", "video", *UNIT_COLUMNS[unit])
    return {name: header.index(name) for name in names}, unit


def _segment(path: Path, number: int, fields: list[str], columns: dict, unit: str) -> Segment:
    where = f"{path} line {number}"
    if len(fields) <= max(columns.values()):
        raise PigError(f"{where}: {len(fields)} columns, the header has more")
    start_name, end_name = UNIT_COLUMNS[unit]
    try:
        start, end = (float(fields[columns[name]]) for name in (start_name, end_name))
    except ValueError:
        raise PigError(f"{where}: {start_name} and {end_name} must be numbers, not "
                       f"{fields[columns[start_name]]!r} and {fields[columns[end_name]]!r}") from None
    if unit == "frames" and not (start.is_integer() and end.is_integer()):
        raise PigError(f"{where}: frame numbers must be whole numbers ({start:g}, {end:g})")
    shot, video = fields[columns["shot"]], fields[columns["video"]]
    if not shot or not video:
        raise PigError(f"{where}: empty shot or video id")
    if start < 0:
        raise PigError(f"{where}: shot {shot!r} starts before 0 ({start:g})")
    if end < start:
        raise PigError(f"{where}: shot {shot!r} ends before it starts ({start_name} {start:g}, {end_name} {end:g})")
    return Segment(number, shot, video, Window(start, end, unit))


def scan_segments(path: str | Path, videos: dict[str, Path], holds=None) -> SegmentsInfo:
    """Check a whole segments file against the videos found (id -> path) and hash it (module docstring).
    holds(shot id): which shots the run will read (a shard's), counted in `rows`."""
    path = Path(path)
    digest, hashes, used, unit, rows = hashlib.sha256(), array("q"), {}, "frames", 0
    for segment in read_segments(path):
        if segment.video not in videos:
            raise PigError(f"{path} line {segment.line}: video {segment.video!r} of shot {segment.shot!r} is not "
                           f"among the {len(videos)} videos given (ids are file names without extension)")
        hashes.append(_id_hash(segment.shot))
        unit = segment.window.unit
        if holds is None or holds(segment.shot):
            used.setdefault(segment.video, None)
            rows += 1
    with path.open("rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    if not hashes:
        raise PigError(f"{path}: no shots (only a header)")
    _refuse_duplicates(path, np.frombuffer(hashes, np.int64))
    return SegmentsInfo(path, digest.hexdigest()[:16], unit, len(hashes), rows, tuple(used))


def _id_hash(shot: str) -> int:
    return int.from_bytes(hashlib.blake2b(shot.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def _refuse_duplicates(path: Path, hashes: np.ndarray) -> None:
    ordered = np.sort(hashes)
    repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not repeated:
        return
    lines: dict[str, list[int]] = {}
    for segment in read_segments(path):  # a second pass only for the few ids whose hash repeats
        if _id_hash(segment.shot) in repeated:
            lines.setdefault(segment.shot, []).append(segment.line)
    twice = [(shot, found) for shot, found in lines.items() if len(found) > 1]
    if twice:  # else two different ids share a 64-bit hash: no duplicate
        shot, found = twice[0]
        more = f" (and {len(twice) - 1} more ids)" if len(twice) > 1 else ""
        raise PigError(f"{path}: shot id {shot!r} is on lines {', '.join(map(str, found))}{more}; shot ids must be unique")


def shot_entries(path: str | Path, videos: dict[str, Path], holds=None) -> Iterator[VideoEntry]:
    """The shots as rows of a video stage, read as a stream; holds(shot id): only a shard's shots."""
    for segment in read_segments(path):
        if holds is None or holds(segment.shot):
            yield VideoEntry(segment.shot, videos[segment.video], segment.window, segment.video)


# --- from a master shot reference ------------------------------------------------------------------------

MSB_SUFFIXES = (".tsv", ".msb", ".csv")


def segments_from_msb(folders: list[str | Path], output: str | Path) -> tuple[int, int]:
    """Write one segments file from master shot reference files, one per video (V3C's msb/VIDEO.tsv: a
    header with startframe, starttime, endframe, endtime): the video id is the file name without
    extension, the shot id TRECVID's shot<video>_<n>, n counted from 1 in file order. The unit columns the
    files have are kept as they are. Returns (videos, shots); written next to OUTPUT, then renamed (safe_write: only a
    segments file pig wrote is replaced)."""
    files = sorted(p for folder in map(Path, folders)
                   for p in (folder.iterdir() if folder.is_dir() else [folder]) if p.suffix in MSB_SUFFIXES)
    if not files:
        raise PigError(f"no master shot reference files ({', '.join(MSB_SUFFIXES)}) in {', '.join(map(str, folders))}")
    output, shots = Path(output), 0
    check_target(output, "segments file", _is_segments_file)
    names = None
    with write_errors(output), replacing(output) as tmp, tmp.open("w", encoding="utf-8") as out:
        for path in files:
            header, _ = _msb_header(path)
            _columns(path, ["shot", "video", *header])  # the header must name a unit's pair
            kept = [name for pair in UNIT_COLUMNS.values() for name in pair if name in header]
            if names is None:
                names = kept
                out.write("\t".join(("shot", "video", *names)) + "\n")
            elif kept != names:
                raise PigError(f"{path}: its columns ({', '.join(kept)}) differ from {files[0]}'s ({', '.join(names)})")
            shots += _copy_msb(path, names, out)
    return len(files), shots


def _is_segments_file(path: Path) -> bool:
    """A file `pig segments` wrote: its first line is the header it writes."""
    try:
        with path.open("rb") as handle:
            return handle.readline(256).startswith(b"shot\tvideo\t")
    except OSError:
        return False


def _msb_header(path: Path) -> tuple[list[str], str]:
    """A reference file's column names (lower case) and separator (tab, else comma)."""
    with path.open(encoding="utf-8") as handle:
        first = handle.readline().rstrip("\r\n")
    separator = "\t" if "\t" in first else ","
    return [name.strip().lower() for name in first.split(separator)], separator


def _copy_msb(path: Path, names: list[str], out) -> int:
    """Append a reference file's shots to the segments file `out`; returns how many."""
    header, separator = _msb_header(path)
    columns = [header.index(name) for name in names]
    video, count = path.stem, 0
    with path.open(encoding="utf-8") as handle:
        next(handle)
        for number, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            fields = [field.strip() for field in line.rstrip("\r\n").split(separator)]
            if len(fields) < len(header):
                raise PigError(f"{path} line {number}: {len(fields)} columns, the header has {len(header)}")
            count += 1
            out.write("\t".join((f"shot{video}_{count}", video, *(fields[c] for c in columns))) + "\n")
    return count
