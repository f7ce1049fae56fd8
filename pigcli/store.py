"""The HDF5 files that stages read and write: schema, provenance, crash-safe block writing, checks.

Every stage file carries root attributes:
    schema, stage, pig_version, created, settings (JSON), model (JSON {name, hash}),
    inputs (JSON [{path, stage, fingerprint}]), fingerprint (hash of stage+settings+model+inputs),
    timings (JSON, seconds per phase)
Rows are found by `/ids`, never by position in another file.

Writing: blocks of rows go to OUTPUT.partial.d/block-NNNNNN.h5, each written to a temporary name and
renamed, so a killed run (SIGKILL included) loses at most the block in flight and a rerun resumes.
`finish` joins the blocks into a temporary file next to OUTPUT (its disk space checked and reserved
first: HDF5 crashes when a write fails) and renames it to OUTPUT: no half-written output ever exists.
A writer holds an exclusive lock (OUTPUT.lock, flock: released by the kernel even on SIGKILL) for the
whole run, so a second writer of the same output is refused; it never writes over a file that is not
a pig stage file, nor over one of its own inputs, nor through a link at its lock or temporary names
(pigcli.safe_write); a full disk or a failed join is one clear error, finished blocks kept.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections import Counter
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .errors import PigError, StaleInputError
from .safe_write import check_target, is_disk_full, open_no_follow, remove_stale_temporaries, replacing

SCHEMA = "pig/1"
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
        # whichever stage wrote it (not necessarily the one this command usually reads) must write it again
        raise PigError(f"{path} is not a readable HDF5 file ({err}); rerun the command that wrote it (this "
                       f"command's input is made by: {rerun_hint})") from err
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


class RowReader:
    """Scattered rows of a 2-D HDF5 dataset, read straight from the file (os.pread) when it is
    stored without filters: HDF5's own selections cost 0.25 to 0.6 ms a row, which made the exact
    rescoring of an ANN query's 100 candidates cost 10x the ANN search (benchmarks/RESULTS_ann.md).
    Chunk offsets are looked up once per chunk and kept. Other layouts (compressed, unallocated
    chunks) use take_rows. Use as a context manager, or close()."""

    def __init__(self, dataset) -> None:
        self.dataset, self.offsets = dataset, {}
        self.row_bytes = int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
        plist = dataset.id.get_create_plist()
        self.direct = plist.get_nfilters() == 0 and dataset.ndim == 2
        self.chunk_rows = dataset.chunks[0] if dataset.chunks else None
        self.fd = os.open(dataset.file.filename, os.O_RDONLY) if self.direct else None

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """dataset[rows] for increasing row numbers."""
        rows = np.asarray(rows)
        out = np.empty((len(rows),) + tuple(self.dataset.shape[1:]), self.dataset.dtype)
        if not self.direct:
            return take_rows(self.dataset, rows)
        buffer = out.reshape(len(rows), -1).view(np.uint8)
        for i, row in enumerate(rows.tolist()):
            start = self._file_offset(row)
            if start is None:  # an unallocated chunk: HDF5 knows its fill value
                return take_rows(self.dataset, rows)
            os.preadv(self.fd, [buffer[i]], start)
        return out

    def _file_offset(self, row: int) -> int | None:
        if self.chunk_rows is None:
            base = self.offsets.setdefault(0, self.dataset.id.get_offset())
            return None if base is None else base + row * self.row_bytes
        chunk = row // self.chunk_rows
        if chunk not in self.offsets:
            info = self.dataset.id.get_chunk_info_by_coord((chunk * self.chunk_rows, 0))
            self.offsets[chunk] = info.byte_offset if info.size else None
        base = self.offsets[chunk]
        return None if base is None else base + (row - chunk * self.chunk_rows) * self.row_bytes

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RowReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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

    def __init__(self, output: str | Path, provenance: Provenance, force: bool = False, replace_stale: bool = False,
                 inputs: tuple | list = (), discard_stale_partial: bool = False):
        """force: recompute even an up-to-date output. replace_stale: overwrite an output (or unfinished
        run) made from other inputs or settings instead of refusing (the staged cache of `pig index`).
        inputs: the paths the command reads; the output may never be one of them. discard_stale_partial:
        an unfinished run with other inputs or settings is discarded with a note instead of refused (for
        cheap stages, so that a failed run never blocks the corrected rerun); a finished output made
        from other inputs still needs --force."""
        self.output = Path(output)
        self.provenance = provenance
        self.partial = Path(str(self.output) + ".partial.d")
        self.lock_path = Path(str(self.output) + ".lock")
        self._lock_fd: int | None = None
        check_output_path(self.output, inputs)
        self._acquire_lock()
        remove_stale_temporaries(self.output)  # a killed join's
        try:
            self._prepare(force, replace_stale, discard_stale_partial)
        except BaseException:
            self.close()
            raise

    # --- one writer per output -----------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        """Take OUTPUT.lock exclusively (non-blocking) or refuse, naming the process that holds it."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = open_no_follow(self.lock_path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise PigError(f"{self.output} is being written by another pig process ({holder}); "
                               "wait for it or choose another -o") from None
            # a holder that finished unlinks the lock file: the one we locked must still be the one there
            try:
                current = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        self._lock_fd = fd
        holder = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)[:300]}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError:  # a full disk: the lock holds all the same, only the message loses its details
            pass

    def close(self) -> None:
        """Release the lock (also done by the kernel when the process dies, however it dies)."""
        if self._lock_fd is None:
            return
        try:
            os.unlink(self.lock_path)  # while still holding it: see _acquire_lock
        except OSError:
            pass
        os.close(self._lock_fd)
        self._lock_fd = None

    def __del__(self):
        self.close()

    # --- what to do with an existing output or unfinished run --------------------------------------

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

    def _changed_settings(self) -> str:
        """' (settings that differ: NAME OLD -> NEW, ...)' between the existing output and this run, or ''.
        A setting the file does not record shows as 'unrecorded' (its old default, e.g. resize crop)."""
        try:
            old = read_attrs(self.output).get("settings", {})
        except (OSError, ValueError):
            return ""
        new = json.loads(json.dumps(self.provenance.settings))
        changed = [f"{key} {old.get(key, 'unrecorded')} -> {new.get(key, 'unrecorded')}"
                   for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        return f" (settings that differ: {', '.join(changed)})" if changed else ""

    def _prepare(self, force: bool, replace_stale: bool, discard_stale_partial: bool = False) -> None:
        manifest = self.partial / "manifest.json"
        if self.partial.is_symlink():
            raise PigError(f"{self.partial} is a symbolic link where pig keeps its unfinished run; pig does not "
                           "follow it: remove the link")
        # an unfinished run of this very command (same fingerprint) is resumed, also when it was a
        # --force run over an output made with other settings: its blocks are what was asked for
        same = self.partial.exists() and _manifest_fingerprint(manifest) == self.provenance.fingerprint
        existing = self._existing_fingerprint()
        if (existing is not None and existing != self.provenance.fingerprint and not (force or replace_stale)
                and not same):
            raise PigError(f"{self.output} exists with other inputs or settings; use --force to recompute it "
                           f"or -o to write elsewhere{self._changed_settings()}")
        if self.partial.exists() and not same:
            if discard_stale_partial and not (force or replace_stale):
                from .console import log

                log(f"discarding {self.partial}: an unfinished {self.provenance.stage} run over other inputs or settings")
            elif not (force or replace_stale):
                raise PigError(f"{self.partial} holds an unfinished run with other inputs or settings; "
                               "rerun that command to finish it, or add --force to discard it")
            self._remove_partial()
        if self.up_to_date() and not force:
            return
        self.partial.mkdir(parents=True, exist_ok=True)
        if not same:
            record = json.dumps({"fingerprint": self.provenance.fingerprint, "stage": self.provenance.stage})
            with _disk_full_is_an_error(self.partial, [manifest]):
                manifest.write_text(record)

    def _remove_partial(self) -> None:
        """Remove the files pig writes in OUTPUT.partial.d, then the folder if nothing else is left in it
        (--force never removes a file pig did not make)."""
        for pattern in PARTIAL_FILES:
            for path in self.partial.glob(pattern):
                path.unlink(missing_ok=True)
        try:
            self.partial.rmdir()
        except OSError:
            pass

    # --- writing ---------------------------------------------------------------------------------------

    def _block_path(self, number: int) -> Path:
        return self.partial / f"block-{number:06d}.h5"

    def done_blocks(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.partial.glob("block-*.h5")}

    def write_block(self, number: int, columns: dict[str, np.ndarray | list[str]]) -> None:
        """Write one block of rows: {dataset name: array with rows first, or list of str}.

        The block is built in memory and written with plain file I/O: its exact size is checked against
        the free space first, and a full disk is a clean OSError (HDF5 itself can crash when a write
        fails), turned into a PigError with the temporary file removed."""
        import h5py

        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as handle:
            for name, values in columns.items():
                _create(handle, name, values, chunk_rows=None)
        data = buffer.getbuffer()
        block = self._block_path(number)
        require_free_space(self.partial, len(data), block)
        with replacing(block) as tmp, _disk_full_is_an_error(block, [tmp]):
            with open(tmp, "wb") as handle:
                handle.write(data)

    def finish(self, extra_attrs: dict | None = None, chunk_rows: int = 256,
               layouts: dict[str, dict] | None = None) -> Path:
        """Join all blocks in order into OUTPUT atomically; remove the partial folder; release the lock.

        Datasets are chunked by `chunk_rows` rows, uncompressed; `layouts` sets other storage for some
        of them: {name: {"chunk_rows": n, "compression": "lzf" | "gzip" | None, "compression_opts": ...}}
        (blocks are always written uncompressed: the cost is paid once, here).
        """
        blocks = [self._block_path(number) for number in sorted(self.done_blocks())]
        return self.join_files(blocks, extra_attrs, chunk_rows, layouts)

    def join_files(self, sources: list[Path], extra_attrs: dict | None = None, chunk_rows: int = 256,
                   layouts: dict[str, dict] | None = None, on_rows: Callable[[int], None] | None = None) -> Path:
        """Write the rows of `sources` (HDF5 files with the same datasets, or none), in order, into
        OUTPUT atomically (OUTPUT.tmp, then a rename), with the provenance and `extra_attrs` as root
        attributes; remove the partial folder; release the lock. The blocks of a run (`finish`), or the
        stage files `pig merge` joins. Rows are copied in pieces (COPY_BYTES), never a whole file at
        once; on_rows(n) is told of every n rows of the first dataset copied (a progress bar)."""
        import h5py

        layouts = layouts or {}
        # HDF5 can crash (segfault, not raise) when a write fails half-way on a full disk: the space for
        # the whole file is checked, then reserved in the temporary file before HDF5 writes into it
        need = self._output_size(sources, chunk_rows, layouts)
        require_free_space(self.output.parent, need, self.output)
        with replacing(self.output) as tmp, _join_errors_are_one_line(self.output), \
                _disk_full_is_an_error(self.output, [tmp]):
            with h5py.File(tmp, "w") as out:
                for key, value in {**self.provenance.attrs(), **(extra_attrs or {})}.items():
                    out.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
            reserve_space(tmp, need)
            with h5py.File(tmp, "r+") as out:
                for path in sources:
                    with h5py.File(path, "r") as source:
                        for number, name in enumerate(source):
                            layout = {"chunk_rows": chunk_rows, **layouts.get(name, {})}
                            _append(out, name, source[name], **layout, on_rows=on_rows if number == 0 else None)
        self._remove_partial()
        self.close()
        return self.output

    def _output_size(self, sources: list[Path], chunk_rows: int, layouts: dict[str, dict]) -> int:
        """About the bytes `join_files` writes: the sources' bytes plus the unused rows of each dataset's
        last chunk (HDF5 stores whole chunks)."""
        import h5py

        size, rows, row_bytes = 0, Counter(), {}
        for path in sources:
            size += path.stat().st_size
            with h5py.File(path, "r") as block:
                for name in block:
                    dataset = block[name]
                    rows[name] += dataset.shape[0]
                    if h5py.check_string_dtype(dataset.dtype) is None:
                        row_bytes[name] = int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
        for name, count in rows.items():
            layout = {"chunk_rows": chunk_rows, **layouts.get(name, {})}
            if name in row_bytes and not layout.get("compression"):
                chunk = layout["chunk_rows"]
                size += (-count % chunk) * row_bytes[name]
        return size


PARTIAL_FILES = ("manifest.json", "block-*.h5", ".block-*.tmp")  # all that pig writes in OUTPUT.partial.d
DISK_MARGIN = 64 * 1024  # bytes kept free besides a write's own size (HDF5 metadata, the manifest)


def reserve_space(path: Path, nbytes: int) -> None:
    """Allocate the disk blocks of `path` up to `nbytes` (posix_fallocate; the file grows to that size
    with zeros, which HDF5 writes over and cuts off when it closes the file): a disk that fills during
    the write then fails here, with a clean ENOSPC, never inside HDF5."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.posix_fallocate(fd, 0, nbytes + DISK_MARGIN)
    finally:
        os.close(fd)


def require_free_space(folder: Path, nbytes: int, target: Path) -> None:
    """Refuse a write of about `nbytes` that clearly does not fit in `folder`'s file system."""
    free = shutil.disk_usage(folder).free
    if free < nbytes + DISK_MARGIN:
        raise PigError(f"no space left on device writing {target} (needs about {_size(nbytes)}, "
                       f"{_size(free)} free); free some space or choose another -o (finished blocks are kept)")


class _disk_full_is_an_error:
    """Turn a full disk (ENOSPC, also as HDF5's error text) into one PigError, removing `temporaries`."""

    def __init__(self, target: Path, temporaries: list[Path]):
        self.target, self.temporaries = target, temporaries

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or not is_disk_full(error):
            return False
        for path in self.temporaries:
            try:
                path.unlink()
            except OSError:
                pass
        raise PigError(f"no space left on device writing {self.target}; free some space or choose another -o "
                       "(finished blocks are kept)") from error


class _join_errors_are_one_line:
    """Any other failure of the final join (an I/O error, HDF5's own) as one line: the temporary file is
    removed by the caller, the blocks stay, so a rerun joins them again."""

    def __init__(self, target: Path):
        self.target = target

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if not isinstance(error, (OSError, RuntimeError)) or isinstance(error, PigError):
            return False
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PigError(f"cannot write {self.target} ({reason}); the finished blocks are kept: rerun the "
                       "command to join them again") from error



def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MB" if nbytes >= 2**20 else f"{nbytes / 1024:.0f} KB"


def _manifest_fingerprint(manifest: Path) -> str | None:
    try:
        return json.loads(manifest.read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def _read_holder(fd: int) -> str:
    """'pid N, started T: COMMAND' from a lock file, as far as it says."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder.get("pid"):
        return "pid unknown"
    return f"pid {holder['pid']}, started {holder.get('started', '?')}: {holder.get('command', '?')}"


def is_stage_file(path: str | Path) -> bool:
    """True for an HDF5 file with a pig `schema` attribute (of any version)."""
    import h5py

    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as handle:
            schema = handle.attrs.get("schema")
    except (OSError, ValueError):
        return False
    schema = schema.decode() if isinstance(schema, bytes) else schema
    return isinstance(schema, str) and schema.startswith("pig/")


def check_output_path(output: Path, inputs) -> None:
    """The one rule for every stage's -o, whatever the flags (--force included): never write over one of
    the command's own inputs, nor over an existing file that is not a pig stage file."""
    for item in inputs:
        if item is None or str(item) == "-":
            continue
        path = Path(item)
        if path.resolve() == output.resolve() or (path.exists() and output.exists() and os.path.samefile(path, output)):
            raise PigError(f"{output} is an input of this command; writing the output there would destroy it: "
                           "choose another -o")
    if output.is_dir():
        raise PigError(f"{output} is a folder; -o must name the file to write")
    check_target(output, "pig stage file", is_stage_file)


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


COPY_BYTES = 64 * 2**20  # bytes of one dataset read at a time when joining files


def _append(out, name: str, source, chunk_rows: int, compression: str | None = None,
            compression_opts: int | None = None, on_rows: Callable[[int], None] | None = None) -> None:
    if name not in out:
        dtype = source.dtype
        # chunk dimensions must be positive and fit maxshape: an empty axis (e.g. --patches none) gets
        # chunk 1 and an unlimited maximum
        chunks = (chunk_rows,) + tuple(max(1, d) for d in source.shape[1:])
        maxshape = (None,) + tuple(d or None for d in source.shape[1:])
        out.create_dataset(name, shape=(0,) + source.shape[1:], maxshape=maxshape, dtype=dtype, chunks=chunks,
                           compression=compression, compression_opts=compression_opts)
    target = out[name]
    start, count = target.shape[0], source.shape[0]
    target.resize(start + count, axis=0)
    row_bytes = max(1, int(np.prod(source.shape[1:], dtype=np.int64)) * source.dtype.itemsize)
    step = max(1, COPY_BYTES // row_bytes)
    for first in range(0, count, step):
        last = min(first + step, count)
        target[start + first : start + last] = source[first:last]
        if on_rows is not None:
            on_rows(last - first)
