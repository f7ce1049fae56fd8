"""`pig index-ann` and `pig rank --ann`: an approximate index over a pig index's rows (core/ann.py).

The faiss file (OUT) has a sidecar OUT.json that carries its identity: the pig index it was built
from (path, fingerprint, created, rows, dim), that index's model, the ANN type, build parameters and
query-time defaults, and the faiss file's size. `pig rank --ann OUT` refuses an index or model that
is not the one recorded, saying what to rebuild. faiss ids are the index's row numbers; the ids
come from the index (`read_ids_at`), and every candidate is rescored exactly from the index's rows.
Building reads the index in blocks (never the whole matrix): a random sample of rows to train, then
every row, block by block, into the ANN.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..console import log, progress, warn
from ..core.ann import (AnnParams, ann_candidates, default_params, exact_rescore, new_index, require_faiss,
                        set_query_params)
from ..errors import PigError, StaleInputError, UsageError
from ..safe_write import replacing, write_bytes
from ..store import RowReader, is_stage_file, recorded_model, take_rows
from ..stagefiles import open_stage
from .scoring import rank_index

ANN_FORMAT = "pig-ann/1"
ADD_BLOCK_ROWS = 65536  # rows read and added at a time: 128 MiB of fp32 at D=512


@dataclass
class AnnBuild:
    output: Path
    params: AnnParams
    rows: int
    seconds: float
    bytes: int
    skipped: bool = False


def sidecar_path(ann_path: str | Path) -> Path:
    return Path(str(ann_path) + ".json")


def index_identity(index_path: str | Path, handle) -> dict:
    """What ties an ANN to one pig index file: rewritten (even with the same settings), it differs."""
    embedding = handle["embedding"]
    return {"path": str(Path(index_path).resolve()), "fingerprint": str(handle.attrs["fingerprint"]),
            "created": str(handle.attrs.get("created", "")), "rows": int(embedding.shape[0]),
            "dim": int(embedding.shape[1])}


def build_ann(index_path: str | Path, output: str | Path, kind: str = "ivfpq", *, force: bool = False,
              seed: int = 0, **options) -> AnnBuild:
    """Build an ANN index of `kind` over the index file's rows. options: default_params' keywords
    (nlist, m, nbits, hnsw_m, ef_construction, nprobe, ef_search, refine; None: a default)."""
    output = Path(output)
    with open_stage(index_path, "fuse") as handle:
        identity = index_identity(index_path, handle)
        _check_output(output, index_path)
        params = default_params(kind, identity["rows"], identity["dim"], **options)
        meta = {"format": ANN_FORMAT, "index": identity, "model": recorded_model(handle), "params": params.to_dict()}
        if _up_to_date(output, meta):
            if not force:
                log(f"{output} is up to date (same index and parameters): kept")
                return AnnBuild(output, params, identity["rows"], 0.0, output.stat().st_size, skipped=True)
        elif output.exists() and not force:
            raise UsageError(f"{output} exists and was built from another index or with other parameters: "
                             "pass --force to replace it, or choose another -o")
        faiss = require_faiss()
        start = time.perf_counter()
        ann = new_index(params, identity["dim"])
        embedding = handle["embedding"]
        if params.train_rows:
            ann.train(_training_sample(embedding, params.train_rows, seed))
        with progress(identity["rows"], f"index-ann {kind}", "vectors") as bar:
            for block_start in range(0, identity["rows"], ADD_BLOCK_ROWS):
                block = embedding[block_start : block_start + ADD_BLOCK_ROWS]
                ann.add(np.ascontiguousarray(block, np.float32))
                bar.advance(len(block))
        seconds = time.perf_counter() - start
    # the sidecar last: a crash in between leaves a faiss file whose size no sidecar vouches for
    with replacing(output) as tmp:
        faiss.write_index(ann, str(tmp))
        size = tmp.stat().st_size
    meta.update(faiss_bytes=size, faiss_version=faiss.__version__, build_seconds=round(seconds, 3),
                built=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_bytes(sidecar_path(output), json.dumps(meta, indent=2).encode())
    return AnnBuild(output, params, identity["rows"], seconds, size)


def _check_output(output: Path, index_path: str | Path) -> None:
    if output.resolve() == Path(index_path).resolve() or is_stage_file(output):
        raise UsageError(f"-o {output} is a pig stage file; the ANN index goes to a file of its own, e.g. index.faiss")
    if output.exists() and not sidecar_path(output).is_file():
        raise UsageError(f"-o {output} exists and is not an ANN index made by pig index-ann "
                         f"(no {sidecar_path(output).name}): not overwritten")


def _up_to_date(output: Path, meta: dict) -> bool:
    try:
        old = read_meta(output)
    except PigError:
        return False
    return all(old.get(key) == meta[key] for key in ("format", "index", "model", "params"))


def _training_sample(embedding, n: int, seed: int) -> np.ndarray:
    """n distinct rows drawn at random (sorted, read in runs): the index may be ordered by source."""
    total = embedding.shape[0]
    rows = np.arange(total) if n >= total else np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
    log(f"training on {len(rows)} of {total} rows")
    return np.ascontiguousarray(take_rows(embedding, rows), np.float32)


def read_meta(ann_path: str | Path) -> dict:
    """The sidecar of an ANN file, checked to belong to it."""
    ann_path, side = Path(ann_path), sidecar_path(ann_path)
    if not ann_path.is_file():
        raise PigError(f"ANN index {ann_path} not found; build it with: pig index-ann INDEX -o {ann_path}")
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        raise PigError(f"{ann_path} has no readable {side.name} (what it was built from); rebuild it: "
                       f"pig index-ann INDEX -o {ann_path} --force") from None
    if meta.get("format") != ANN_FORMAT or meta.get("faiss_bytes") != ann_path.stat().st_size:
        raise StaleInputError(f"{side.name} does not describe {ann_path} (another format, or the file changed "
                              f"since); rebuild it: pig index-ann INDEX -o {ann_path} --force")
    return meta


def check_ann_matches(meta: dict, ann_path: str | Path, index_path: str | Path, handle) -> None:
    """Refuse an ANN built from another index file or with another model, naming the rebuild."""
    built, now = meta["index"], index_identity(index_path, handle)
    rebuild = f"pig index-ann {index_path} -o {ann_path} --force"
    model_then, model_now = meta.get("model") or {}, recorded_model(handle) or {}
    if model_then.get("hash") != model_now.get("hash"):
        raise StaleInputError(f"{ann_path} was built for model {model_then.get('name')} ({model_then.get('hash')}), "
                              f"but {index_path} holds model {model_now.get('name')} ({model_now.get('hash')}); "
                              f"rebuild: {rebuild}")
    if any(built[key] != now[key] for key in ("fingerprint", "created", "rows", "dim")):
        raise StaleInputError(f"{ann_path} was built from {built['path']} ({built['rows']} rows, made "
                              f"{built['created']}), not from this {index_path} ({now['rows']} rows, made "
                              f"{now['created']}); rebuild: {rebuild}")


class AnnSearcher:
    """An ANN file opened against its pig index, for many searches (the benchmark, a server):
    checked once, faiss index read once, the index file kept open for the exact rescoring."""

    def __init__(self, index_path: str | Path, ann_path: str | Path) -> None:
        faiss = require_faiss()
        meta = read_meta(ann_path)
        self.index_path, self.params = Path(index_path), AnnParams.from_dict(meta["params"])
        self.handle = open_stage(index_path, "fuse", random_access=True)
        try:
            check_ann_matches(meta, ann_path, index_path, self.handle)
            self.ann = faiss.read_index(str(ann_path))
            self.read_rows = RowReader(self.handle["embedding"])
        except BaseException:
            self.handle.close()
            raise

    def search(self, queries: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None,
               refine: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and exact scores among the ANN's candidates (core/ann.py); a query for which
        the ANN finds fewer than k rows is searched exactly instead, with a warning."""
        k = min(k, self.read_rows.dataset.shape[0])
        set_query_params(self.ann, self.params, _positive(nprobe, "--nprobe"), _positive(ef_search, "--ef-search"))
        refine = _positive(refine, "--refine") or self.params.query.get("refine", 1)
        candidates = ann_candidates(self.ann, queries, k * refine)
        unique = np.unique(candidates[candidates >= 0])
        scores, rows, short = exact_rescore(queries, candidates, self.read_rows(unique), k)
        if short.any():
            warn(f"the ANN found fewer than {k} videos for {int(short.sum())} queries: searched those exactly "
                 "(raise --nprobe / --ef-search)")
            scores[short], rows[short] = rank_index(self.index_path, queries[short], k)
        return scores, rows

    def close(self) -> None:
        self.read_rows.close()
        self.handle.close()

    def __enter__(self) -> "AnnSearcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rank_ann(index_path: str | Path, ann_path: str | Path, queries: np.ndarray, k: int, **options
             ) -> tuple[np.ndarray, np.ndarray]:
    """One search with an ANN file (options: nprobe, ef_search, refine; None: the recorded defaults)."""
    with AnnSearcher(index_path, ann_path) as searcher:
        return searcher.search(queries, k, **options)


def _positive(value: int | None, flag: str) -> int | None:
    if value is not None and value < 1:
        raise UsageError(f"{flag} must be at least 1, not {value}")
    return value
