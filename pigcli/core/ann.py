"""Approximate inner-product search with faiss (optional: `pip install 'pigcli[ann]'`).

Three kinds of ANN index over the rows of a pig index, always with the inner-product metric (pig
scores are dot products and index rows are not all unit length: `pig fuse --method eercf` does not
renormalise):
  flat   faiss IndexFlatIP: exhaustive, a reference (4*D bytes a vector)
  ivfpq  inverted lists over k-means cells (nlist), residuals product-quantised into m codes of
         nbits bits (m*nbits/8 bytes a vector); the coarse quantizer is an HNSW graph over the
         centroids when nlist is large, so adding and querying do not scan every centroid
  hnsw   an HNSW graph over the full vectors (M links a node; 4*D + 8*M bytes a vector)
faiss ids are row numbers of the pig index (vectors are added in row order). Every candidate the
ANN finds is rescored in exact fp32 against the stored row (`exact_rescore`), so returned scores
are the ones the exact scan gives; only which rows are found is approximate. `refine` asks the ANN
for refine*k candidates, which recovers most of what product quantisation loses.
faiss is imported lazily (`require_faiss`): pig runs without it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..choices import ANN_TYPES, check_choice
from ..errors import PigError
from .search import RunningTopK, rescore_rows

INSTALL_HINT = "pip install faiss-cpu (or: pip install 'pigcli[ann]')"
_POINTS_PER_CENTROID = 39  # faiss warns below this many training points per k-means centroid
_MAX_TRAIN_PER_CENTROID = 40  # k-means time grows with it: 570 s to build 1M on a busy 2-core machine
_HNSW_QUANTIZER_FROM = 2048  # nlist from which an HNSW graph over the centroids beats scanning them
_QUANTIZER_EF_SEARCH = 128  # search breadth of that graph at query time
# ivfpq candidates per result to rescore exactly: recall@10 on clustered data (benchmarks/RESULTS_ann.md)
# was 0.94 at 1M with 30, but 0.81 at 10M with 30 and 0.95 with 100; sizes between them take 100
_REFINE_SMALL, _REFINE_LARGE, _REFINE_LARGE_FROM = 30, 100, 2_000_000


def require_faiss():
    """The faiss module, or a one-line error saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise PigError(f"approximate search needs faiss, which is not installed: {INSTALL_HINT}") from None
    return faiss


@dataclass
class AnnParams:
    """What defines an ANN index (build time) and its query-time defaults."""

    type: str
    nlist: int = 0           # ivfpq: k-means cells
    m: int = 0               # ivfpq: PQ codes per vector
    nbits: int = 0           # ivfpq: bits per code
    hnsw_m: int = 0          # hnsw: graph links per node (also the ivfpq coarse quantizer's)
    ef_construction: int = 0
    train_rows: int = 0      # ivfpq: rows sampled to train k-means and PQ
    query: dict = field(default_factory=dict)  # defaults of nprobe / ef_search / refine

    def factory(self) -> str:
        """The faiss index_factory string."""
        if self.type == "flat":
            return "Flat"
        if self.type == "hnsw":
            return f"HNSW{self.hnsw_m}"
        quantizer = f"_HNSW{self.hnsw_m}" if self.hnsw_m else ""
        return f"IVF{self.nlist}{quantizer},PQ{self.m}x{self.nbits}"

    def to_dict(self) -> dict:
        return {**asdict(self), "factory": self.factory()}

    @classmethod
    def from_dict(cls, values: dict) -> "AnnParams":
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in values.items() if key in names})


def default_params(kind: str, n_rows: int, dim: int, *, nlist: int | None = None, m: int | None = None,
                   nbits: int | None = None, hnsw_m: int | None = None, ef_construction: int | None = None,
                   nprobe: int | None = None, ef_search: int | None = None, refine: int | None = None) -> AnnParams:
    """Build parameters for n_rows x dim vectors, each None replaced by a default that suits the size."""
    check_choice("--type", kind, ANN_TYPES, PigError)
    if kind == "flat":
        return AnnParams("flat", query={"refine": 1})
    if kind == "hnsw":
        return AnnParams("hnsw", hnsw_m=hnsw_m or 32, ef_construction=ef_construction or 40,
                         query={"ef_search": ef_search or 64, "refine": refine or 1})
    nlist = nlist or _default_nlist(n_rows)
    if nlist * _POINTS_PER_CENTROID > n_rows:
        raise PigError(f"--nlist {nlist} needs at least {nlist * _POINTS_PER_CENTROID} rows to train "
                       f"(39 per cell), the index has {n_rows}: use a smaller --nlist or --type hnsw/flat")
    m = m or _default_m(dim)
    if dim % m:
        raise PigError(f"--pq-m {m} must divide the dimension {dim}")
    train_rows = min(n_rows, max(nlist * _MAX_TRAIN_PER_CENTROID, 65536))
    nbits = nbits or min(8, int(math.log2(train_rows / _POINTS_PER_CENTROID)))
    quantizer_m = (hnsw_m or 32) if nlist >= _HNSW_QUANTIZER_FROM else 0
    return AnnParams("ivfpq", nlist=nlist, m=m, nbits=nbits, hnsw_m=quantizer_m, train_rows=train_rows,
                     query={"nprobe": nprobe or max(1, nlist // 64), "refine": refine or _default_refine(n_rows)})


def _default_refine(n_rows: int) -> int:
    return _REFINE_SMALL if n_rows < _REFINE_LARGE_FROM else _REFINE_LARGE


def _default_nlist(n_rows: int) -> int:
    """About 4 sqrt(N) cells as a power of two, at most 4096 (k-means time grows with nlist x
    training rows) and with 39 training rows per cell."""
    target = 4 * math.sqrt(n_rows)
    nlist = 2 ** round(math.log2(max(target, 1)))
    return int(max(1, min(nlist, 4096, 2 ** int(math.log2(max(1, n_rows // _POINTS_PER_CENTROID))))))


def _default_m(dim: int) -> int:
    """The most codes a vector with at least 8 dimensions each (64 bytes at D=512)."""
    return max(c for c in range(1, max(1, dim // 8) + 1) if dim % c == 0)


def new_index(params: AnnParams, dim: int):
    faiss = require_faiss()
    index = faiss.index_factory(dim, params.factory(), faiss.METRIC_INNER_PRODUCT)
    if params.type == "hnsw":
        index.hnsw.efConstruction = params.ef_construction
    if params.type == "ivfpq":
        # polysemous codes only serve Hamming filtering, which pig does not use; their training
        # took 45 of 46 s on a 20k x 64 index
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    return index


def set_query_params(index, params: AnnParams, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Apply the query-time knobs (given, else the defaults recorded at build time)."""
    faiss = require_faiss()
    if params.type == "ivfpq":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(nprobe or params.query["nprobe"], params.nlist)
        if params.hnsw_m:
            # faiss's default breadth (16) for finding the nprobe nearest cells missed cells of
            # true neighbours: recall@10 0.72 -> 0.81 at 10M with 128 (benchmarks/RESULTS_ann.md)
            faiss.downcast_index(ivf.quantizer).hnsw.efSearch = max(_QUANTIZER_EF_SEARCH, ivf.nprobe)
    elif params.type == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = ef_search or params.query["ef_search"]


def ann_candidates(index, queries: np.ndarray, n_candidates: int) -> np.ndarray:
    """Candidate rows [Q, n_candidates] (faiss ids = row numbers; -1 where the ANN found fewer)."""
    _, rows = index.search(np.ascontiguousarray(queries, np.float32), n_candidates)
    return rows


def exact_rescore(queries: np.ndarray, candidates: np.ndarray, vectors: np.ndarray, k: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact fp32 top-k among each query's candidates, as exact_topk would rank them.

    candidates: [Q, C] row numbers, -1 for none; vectors: [U, D] the stored rows of
    np.unique(candidates[candidates >= 0]), in that order. Returns (scores [Q, k], rows [Q, k],
    short [Q] bool: the queries with fewer than k candidates, whose tails are -inf / -1)."""
    unique = np.unique(candidates[candidates >= 0])
    valid = candidates >= 0
    # rows ascending per query (invalid last), so RunningTopK keeps ties in row order
    order = np.argsort(np.where(valid, candidates, np.iinfo(np.int64).max), axis=1, kind="stable")
    rows = np.take_along_axis(candidates, order, axis=1)
    valid = np.take_along_axis(valid, order, axis=1)
    local = torch.from_numpy(np.searchsorted(unique, np.where(valid, rows, unique[0] if unique.size else 0)))
    q = torch.from_numpy(np.ascontiguousarray(queries, np.float32))
    x = torch.from_numpy(np.ascontiguousarray(vectors, np.float32)) if unique.size else torch.zeros(1, q.shape[1])
    scores = rescore_rows(q, x, local)
    scores[torch.from_numpy(~valid)] = -math.inf
    top = RunningTopK(q.shape[0], k)
    top.merge(scores, torch.from_numpy(np.where(valid, rows, -1)))
    out_scores, out_rows = top.result()
    return out_scores, out_rows, valid.sum(axis=1) < k
