"""The HDF5 files that stages read and write: schema, provenance, crash-safe block writing, checks.

Every stage file carries root attributes:
    schema, stage, pig_version, created, settings (JSON), model (JSON {name, hash}),
    inputs (JSON [{path, stage, fingerprint}]), fingerprint (hash of stage+settings+model+inputs),
    timings (JSON, seconds per phase)
Rows are found by `/ids`, never by position in another file.

Writing: blocks of rows go to OUTPUT.partial.d/block-NNNNNN.h5, each written to a temporary name and
renamed, so a killed run (SIGKILL included) loses at most the block in flight and a rerun resumes.
`finish` joins the blocks into OUTPUT.tmp and renames it to OUTPUT: no half-written output ever exists.
"""

from __future__ import annotations

import hashlib
from collections import Counter
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .errors import PigError, StaleInputError

SCHEMA = "pig/1"
EXTRACT_HINT = "pig extract VIDEOS -m MODEL -o feats.h5"  # how the file most stages start from is made
STR = "str"  # marker dtype for variable-length UTF-8 datasets


def json_hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Provenance:
    stage: str
    settings: dict
    model: dict | None = None
    inputs: list[dict] = field(default_factory=list)
    model_path: str | None = None   # where the model was loaded from: a default for later stages, not identity

    @property
    def fingerprint(self) -> str:
        return json_hash([SCHEMA, self.stage, self.settings, self.model, self.inputs])

    def attrs(self) -> dict:
        return {
            "schema": SCHEMA,
            "stage": self.stage,
            "pig_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": json.dumps(self.settings, sort_keys=True),
            "model": json.dumps(self.model),
            "inputs": json.dumps(self.inputs),
            "fingerprint": self.fingerprint,
            "model_path": self.model_path or "",
        }


def input_record(path: str | Path, attrs) -> dict:
    """How a stage file is named as the input of a later stage."""
    return {"path": str(Path(path).resolve()), "stage": str(attrs["stage"]), "fingerprint": str(attrs["fingerprint"])}


# --- reading --------------------------------------------------------------------------------------

def read_attrs(path: str | Path) -> dict:
    """Root attributes of a stage file, JSON fields decoded."""
    import h5py

    with h5py.File(path, "r") as handle:
        attrs = dict(handle.attrs)
    for key in ("settings", "model", "inputs", "timings"):
        if key in attrs:
            attrs[key] = json.loads(attrs[key])
    return attrs


def open_stage_file(path: str | Path, stages: tuple[str, ...], rerun_hint: str, random_access: bool = False):
    """Open a stage file for reading, checking that it exists, is a pig file, and has a usable stage.
    random_access: reads of scattered rows follow; HDF5's chunk cache then only costs, so it is turned
    off (the rerank's reads: benchmarks/RESULTS_cost.md)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        partial = Path(str(path) + ".partial.d")
        hint = f" (an unfinished run left {partial}; rerun it to resume)" if partial.exists() else ""
        raise PigError(f"{path} not found{hint}; make it with: {rerun_hint}")
    try:
        handle = h5py.File(path, "r", **({"rdcc_nbytes": 0} if random_access else {}))
    except OSError as err:
        raise PigError(f"{path} is not a readable HDF5 file ({err}); rerun: {rerun_hint}") from err
    # read before any close(): attributes of a closed file read as None
    schema, stage = handle.attrs.get("schema"), handle.attrs.get("stage")
    if schema != SCHEMA:
        handle.close()
        raise StaleInputError(f"{path} was not written by this version of pig (schema {schema!r}, "
                              f"expected {SCHEMA!r}); rerun: {rerun_hint}")
    if stage not in stages:
        handle.close()
        raise StaleInputError(f"{path} is a '{stage}' file; this command needs a "
                              f"{' or '.join(repr(s) for s in stages)} file, made with: {rerun_hint}")
    return handle


def recorded_model(handle) -> dict | None:
    """The {name, hash} of the model a stage file was computed with."""
    return json.loads(handle.attrs["model"])


def recorded_model_path(handle) -> str:
    """Where the stage file's model was loaded from ('' if not recorded): the default model of the next stage."""
    return str(handle.attrs.get("model_path", ""))


def require_same_model(path: str | Path, handle, identity: dict, rerun_hint: str) -> None:
    """Refuse a stage file computed with another model."""
    recorded = recorded_model(handle)
    if recorded and recorded.get("hash") != identity.get("hash"):
        raise StaleInputError(
            f"{path} was made with model {recorded.get('name')} ({recorded.get('hash')}), not "
            f"{identity.get('name')} ({identity.get('hash')}); rerun with this model: {rerun_hint}"
        )


def read_ids(handle) -> list[str]:
    return decode_ids(handle["ids"][:])


def decode_ids(values) -> list[str]:
    """Stored ids (bytes or str) as str."""
    return [_text(x) for x in values]


def ok_rows(handle) -> np.ndarray:
    """Row numbers whose status is ok (files without /status: every row)."""
    if "status" not in handle:
        return np.arange(handle["ids"].shape[0])
    return np.flatnonzero(np.array([_text(s) == "ok" for s in handle["status"][:]], dtype=bool))


def take_rows(dataset, rows: np.ndarray) -> np.ndarray:
    """dataset[rows] for increasing row numbers: one slice when they are contiguous; from an HDF5
    dataset, one slice read per run of consecutive rows (h5py's point selection is much slower
    for scattered rows: benchmarks/RESULTS_cost.md)."""
    rows = np.asarray(rows)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return dataset[int(rows[0]) : int(rows[-1]) + 1]
    if not hasattr(dataset, "read_direct") or len(rows) == 0:
        return dataset[rows]
    out = np.empty((len(rows),) + tuple(dataset.shape[1:]), dataset.dtype)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for first, end in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])):
        lo, hi = int(rows[first]), int(rows[end - 1]) + 1
        dataset.read_direct(out, np.s_[lo:hi], np.s_[int(first) : int(end)])
    return out


def failure_counts(path: str | Path) -> "Counter[str]":
    """Error text -> number of rows that failed with it."""
    import h5py

    with h5py.File(path, "r") as handle:
        if "status" not in handle:
            return Counter()
        status, errors = handle["status"][:], handle["error"][:]
    return Counter(_text(e) for s, e in zip(status, errors) if _text(s) == "failed")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- writing --------------------------------------------------------------------------------------

class StageWriter:
    """Crash-safe, resumable writer of one stage output, in numbered blocks of rows."""

    def __init__(self, output: str | Path, provenance: Provenance, force: bool = False, replace_stale: bool = False):
        """force: recompute even an up-to-date output. replace_stale: overwrite an output (or unfinished
        run) made from other inputs or settings instead of refusing (the staged cache of `pig index`)."""
        self.output = Path(output)
        self.provenance = provenance
        self.partial = Path(str(self.output) + ".partial.d")
        self._prepare(force, replace_stale)

    def up_to_date(self) -> bool:
        """True when OUTPUT exists with the same inputs and settings: nothing to do."""
        return self._existing_fingerprint() == self.provenance.fingerprint

    def _existing_fingerprint(self) -> str | None:
        if not self.output.exists():
            return None
        try:
            return str(read_attrs(self.output).get("fingerprint"))
        except OSError:
            return None

    def _prepare(self, force: bool, replace_stale: bool) -> None:
        existing = self._existing_fingerprint()
        if existing is not None and existing != self.provenance.fingerprint and not (force or replace_stale):
            raise PigError(f"{self.output} exists with other inputs or settings; use --force to recompute it "
                           "or -o to write elsewhere")
        manifest = self.partial / "manifest.json"
        if self.partial.exists():
            same = manifest.is_file() and json.loads(manifest.read_text()).get("fingerprint") == self.provenance.fingerprint
            if not same and not (force or replace_stale):
                raise PigError(f"{self.partial} holds an unfinished run with other inputs or settings; "
                               "rerun that command to finish it, or add --force to discard it")
            if force or not same:
                shutil.rmtree(self.partial)
        if self.up_to_date() and not force:
            return
        self.partial.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"fingerprint": self.provenance.fingerprint, "stage": self.provenance.stage}))

    def _block_path(self, number: int) -> Path:
        return self.partial / f"block-{number:06d}.h5"

    def done_blocks(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.partial.glob("block-*.h5")}

    def write_block(self, number: int, columns: dict[str, np.ndarray | list[str]]) -> None:
        """Write one block of rows: {dataset name: array with rows first, or list of str}."""
        import h5py

        tmp = self.partial / f".block-{number:06d}.tmp"
        with h5py.File(tmp, "w") as handle:
            for name, values in columns.items():
                _create(handle, name, values, chunk_rows=None)
        os.replace(tmp, self._block_path(number))

    def finish(self, extra_attrs: dict | None = None, chunk_rows: int = 256,
               layouts: dict[str, dict] | None = None) -> Path:
        """Join all blocks in order into OUTPUT atomically; remove the partial folder.

        Datasets are chunked by `chunk_rows` rows, uncompressed; `layouts` sets other storage for some
        of them: {name: {"chunk_rows": n, "compression": "lzf" | "gzip" | None, "compression_opts": ...}}
        (blocks are always written uncompressed: the cost is paid once, here).
        """
        import h5py

        blocks = sorted(self.done_blocks())
        tmp = Path(str(self.output) + ".tmp")
        layouts = layouts or {}
        with h5py.File(tmp, "w") as out:
            for key, value in {**self.provenance.attrs(), **(extra_attrs or {})}.items():
                out.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
            for number in blocks:
                with h5py.File(self._block_path(number), "r") as block:
                    for name in block:
                        layout = {"chunk_rows": chunk_rows, **layouts.get(name, {})}
                        _append(out, name, block[name], **layout)
        os.replace(tmp, self.output)
        shutil.rmtree(self.partial, ignore_errors=True)
        return self.output


def _h5_dtype(values):
    import h5py

    if isinstance(values, list):
        return h5py.string_dtype("utf-8")
    return values.dtype


def _create(handle, name: str, values, chunk_rows: int | None):
    data = np.array(values, dtype=object) if isinstance(values, list) else values
    shape = data.shape
    chunks = None
    if chunk_rows:
        chunks = (max(1, min(chunk_rows, shape[0] or 1)),) + tuple(shape[1:])
    return handle.create_dataset(name, data=data, dtype=_h5_dtype(values), maxshape=(None,) + tuple(shape[1:]),
                                 chunks=chunks)


def _append(out, name: str, source, chunk_rows: int, compression: str | None = None,
            compression_opts: int | None = None) -> None:
    if name not in out:
        dtype = source.dtype
        # chunk dimensions must be positive and fit maxshape: an empty axis (e.g. --patches none) gets
        # chunk 1 and an unlimited maximum
        chunks = (chunk_rows,) + tuple(max(1, d) for d in source.shape[1:])
        maxshape = (None,) + tuple(d or None for d in source.shape[1:])
        out.create_dataset(name, shape=(0,) + source.shape[1:], maxshape=maxshape, dtype=dtype, chunks=chunks,
                           compression=compression, compression_opts=compression_opts)
    target = out[name]
    start = target.shape[0]
    target.resize(start + source.shape[0], axis=0)
    target[start:] = source[:]
