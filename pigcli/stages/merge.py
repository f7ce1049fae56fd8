"""`pig merge`: join stage files of one stage, made with the same model and settings, row by row.

The files are typically the shards of one `pig extract --shard I/N` or `pig frames --shard I/N` run
(stages/shard.py), but any files of one stage merge: per-shard select, generate or fuse files, or the
queries of several embed-text runs. Refused: files of different stages, models or settings (the shard
aside), a file of another pig version's schema, and ids found in more than one file (a few are named).
The rows keep their order, file after file; failed videos' records come along with the rest.

Provenance: the output records the common settings (without the shard), the model, and as its inputs
each merged file with its path, stage, fingerprint, shard and row count; root attributes that every
input has alike (e.g. fuse's method) are kept, timings are summed. Writing goes through the stage
writer (lock, OUT.tmp then a rename, never over an input), copying bounded pieces of rows.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..console import log, progress, warn
from ..errors import PigError, UsageError
from ..store import Provenance, input_record, open_stage_file, read_attrs, read_ids
from .common import StageSummary, count_failures, start_stage

MERGEABLE = ("extract", "frames", "select", "generate", "fuse", "embed-text")
HINT = "each shard's own stage command with --shard I/N"
PROVENANCE_ATTRS = ("schema", "stage", "pig_version", "created", "settings", "model", "inputs", "fingerprint",
                    "model_path", "timings")
SHOWN = 5  # duplicate ids named in the error


@dataclass
class _Part:
    """What merge needs to know of one input file."""
    path: Path
    attrs: dict
    ids: list[str]
    layout: dict  # dataset -> (row shape, dtype, chunk rows, compression, compression_opts)

    @property
    def shard(self) -> str | None:
        return self.attrs["settings"].get("shard")

    @property
    def identity(self) -> dict:
        """What must agree between merged files: stage, model and settings without the shard."""
        settings = {k: v for k, v in self.attrs["settings"].items() if k != "shard"}
        model = self.attrs.get("model") or {}
        return {"stage": self.attrs["stage"], "model": model.get("hash"), "settings": settings}


def merge(inputs: list[str | Path], output: str | Path, *, force: bool = False) -> StageSummary:
    """Join `inputs` (stage files of one stage, model and settings) into `output`."""
    if not inputs:
        raise UsageError("pig merge needs at least one stage file")
    parts = [_read_part(Path(path)) for path in inputs]
    _require_same_identity(parts)
    _require_same_layout(parts)
    _refuse_duplicate_ids(parts)
    _warn_incomplete_shards(parts)
    first = parts[0]
    records = [{**input_record(p.path, p.attrs), "shard": p.shard, "rows": len(p.ids)} for p in parts]
    provenance = Provenance(first.attrs["stage"], first.identity["settings"], first.attrs.get("model"), records,
                            first.attrs.get("model_path") or None)
    total = sum(len(p.ids) for p in parts)
    writer, summary = start_stage(output, provenance, total, force, inputs=[p.path for p in parts])
    if summary.skipped:
        return count_failures(summary)
    start = time.perf_counter()
    filled = [p for p in parts if p.ids]  # an empty shard (no video hashed to it) has no datasets
    layouts = {name: {"chunk_rows": chunk, "compression": comp, "compression_opts": opts}
               for name, (_, _, chunk, comp, opts) in (filled[0].layout.items() if filled else ())}
    try:
        with progress(total, "merge", "rows") as bar:
            writer.join_files([p.path for p in filled], _shared_attrs(parts), layouts=layouts, on_rows=bar.advance)
    finally:
        writer.close()
    summary.processed = total
    summary.timings = {"wall": round(time.perf_counter() - start, 3)}
    log(f"merged {len(parts)} {first.attrs['stage']} files: {total} rows")
    return count_failures(summary)


def _read_part(path: Path) -> _Part:
    with open_stage_file(path, MERGEABLE, HINT) as handle:
        ids = read_ids(handle) if "ids" in handle else []
        layout = {name: (tuple(d.shape[1:]), str(d.dtype), (d.chunks or (256,))[0], d.compression, d.compression_opts)
                  for name, d in handle.items()}
    return _Part(path, read_attrs(path), ids, layout)


def _require_same_identity(parts: list[_Part]) -> None:
    first = parts[0]
    for part in parts[1:]:
        mine, theirs = first.identity, part.identity
        if mine["stage"] != theirs["stage"]:
            raise PigError(f"cannot merge a '{theirs['stage']}' file ({part.path}) with a '{mine['stage']}' file "
                           f"({first.path}): merge files of one stage")
        if mine["model"] != theirs["model"]:
            raise PigError(f"cannot merge files made with different models: {first.path} with "
                           f"{_model_name(first)}, {part.path} with {_model_name(part)}; rerun one with the other's model")
        if mine["settings"] != theirs["settings"]:
            keys = sorted(k for k in {*mine["settings"], *theirs["settings"]}
                          if mine["settings"].get(k) != theirs["settings"].get(k))
            shown = ", ".join(f"{k} {mine['settings'].get(k)!r} vs {theirs['settings'].get(k)!r}" for k in keys)
            raise PigError(f"cannot merge files made with different settings: {first.path} and {part.path} "
                           f"differ in {shown}; rerun one with the other's settings")


def _model_name(part: _Part) -> str:
    model = part.attrs.get("model") or {}
    return f"{model.get('name')} ({model.get('hash')})"


def _require_same_layout(parts: list[_Part]) -> None:
    """Same datasets with the same row shape and type (settings agree, so only a damaged or hand-made
    file can differ; checked here so that the join never fails half-way)."""
    filled = [p for p in parts if p.ids]
    for part in filled[1:]:
        mine = {name: spec[:2] for name, spec in filled[0].layout.items()}
        theirs = {name: spec[:2] for name, spec in part.layout.items()}
        if mine != theirs:
            different = sorted(n for n in {*mine, *theirs} if mine.get(n) != theirs.get(n))
            raise PigError(f"cannot merge {part.path} with {filled[0].path}: their datasets differ "
                           f"({', '.join(different)})")


def _refuse_duplicate_ids(parts: list[_Part]) -> None:
    seen: dict[str, Path] = {}
    duplicates: list[str] = []
    for part in parts:
        for video_id in part.ids:
            if video_id in seen:
                duplicates.append(f"{video_id!r} ({seen[video_id]}, {part.path})")
            else:
                seen[video_id] = part.path
    if duplicates:
        more = f" and {len(duplicates) - SHOWN} more" if len(duplicates) > SHOWN else ""
        raise PigError(f"cannot merge: {len(duplicates)} ids are in more than one file: "
                       f"{'; '.join(duplicates[:SHOWN])}{more}; merge each shard once")


def _warn_incomplete_shards(parts: list[_Part]) -> None:
    """Merging shards that do not make up one whole run is allowed (e.g. more later), with a warning."""
    shards = [p.shard for p in parts if p.shard]
    if not shards:
        return
    counts = {s.split("/")[1] for s in shards}
    if len(counts) == 1 and len(shards) == len(parts):
        count = int(counts.pop())
        missing = sorted(set(range(count)) - {int(s.split("/")[0]) for s in shards})
        if missing:
            warn(f"merging {len(shards)} of {count} shards: shard{'s' if len(missing) > 1 else ''} "
                 f"{', '.join(f'{i}/{count}' for i in missing)} missing")
        return
    warn(f"the merged files are not the shards of one run ({', '.join(p.shard or 'unsharded' for p in parts)})")


def _shared_attrs(parts: list[_Part]) -> dict:
    """Root attributes besides the provenance: those all inputs have alike, and the summed timings."""
    shared = {key: value for key, value in parts[0].attrs.items()
              if key not in PROVENANCE_ATTRS and all(p.attrs.get(key) == value for p in parts[1:])}
    timings = Counter()
    for part in parts:
        timings.update(part.attrs.get("timings") or {})
    return {**shared, "timings": {k: round(v, 3) for k, v in timings.items()}}
