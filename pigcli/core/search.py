"""Exact top-k inner-product search over an index too large to score in one go.

The index is scanned in blocks of rows. Each block is scored by matmul (in tiles, so casting
and scoring read rows still in cache), optionally in a lower precision used only to pick
candidates; the candidates are rescored in fp32 and merged into a running top-k per query.
Memory is O(Q * (k + block_rows)) plus fixed tile buffers: the Q x N score matrix is never built.

Exactness argument for the low-precision filter (see `_error_bound`): every scanned score s' is
within e of the fp32 score s the caller gets back, so a row can only reach the final top-k if
s' >= L - e, where L is any lower bound on the final k-th score. Two such bounds are known:
the k-th best fp32 score found so far (exact), and the k-th best s' in the block minus e (those
k rows all score at least that much). Every row passing that test is rescored, so the result is
the same as an fp32 scan of everything. Returned scores all come from the one rescoring
routine, so identical rows get identical scores and ties resolve by row number.

Edge cases (any finite input is searched exactly): block norms are computed so that they neither
overflow nor underflow (`_max_row_norm` rescales by a power of two when the plain fp32 norm could
be off), and a block whose bound is not finite, or whose scores could overflow the scan, is
rescored in full instead of filtered. A non-finite score (a row holding NaN or inf, or a score
beyond the fp32 range) counts as -inf: such rows rank last, by row number, and never displace or
hide a finite one. `pig fuse` refuses to write such rows in the first place.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch

from ..choices import PRECISIONS

_SCAN_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Unit roundoff (half an ulp at 1) and half the smallest subnormal, per scan dtype.
_UNIT = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
_TINY = {torch.float32: 2.0**-150, torch.bfloat16: 2.0**-134, torch.float16: 2.0**-25}
_FP16_MAX_SAFE = 32768.0  # bound on |entry| and |score| for an fp16 scan (fp16 max: 65504)
_EXTRA_CANDIDATES = 32  # first guess of candidates beyond k per block; doubled when too few
_TILE_ROWS = 4096  # rows norm-checked, cast and scored while in cache (L2/L3); measured
_RESCORE_ELEMS = 1 << 22  # cap on gathered fp32 elements per rescoring chunk (16 MiB)
_SCORE_LIMIT = 2.0**126  # bound on |score| (plus slack) below which no fp32/bf16 value can overflow
_FP16_OVERFLOW = object()  # _scan_tiles: an fp16 value could overflow, redo the block in fp32


def exact_topk(
    index: Any,
    queries: np.ndarray,
    k: int,
    *,
    block_rows: int = 65536,
    precision: str = "auto",
    row_norm_bound: float | None = None,
    scan_copy: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner-product search.

    index: [N, D] numpy array (float32 or float16) or an h5py Dataset (read block by block,
    never whole); queries: [Q, D] float32. Returns (scores [Q, k'] float32, rows [Q, k'] int64),
    k' = min(k, N), each row sorted by descending score, ties broken by lower row number first.
    precision: "fp32" scans in fp32; "bf16"/"fp16" scan in that precision as a candidate filter
    (results are still exact fp32); "auto" picks the fastest measured on this project's benchmark.
    Exact for any finite input. Scores that are not finite (rows holding NaN or inf, scores past
    the fp32 range) count as -inf: those rows come last, in row order.
    row_norm_bound: an upper bound on the L2 norm of every index row (`pig fuse` stores one); it
    replaces the pass over each block that computes one, which costs about as much as a one-query
    scan. A bound that is too small breaks exactness: give only a true one (or None).
    scan_copy: index cast to float16 (`fp16_scan_copy`), kept by a caller that searches one in-memory
    index many times (`pig serve`): an fp16 scan reads it instead of casting the index tile by tile,
    which halves the bytes a one-query scan reads. The same candidates, so the same results.
    Runs on torch.get_num_threads() CPU threads (whole tiles per thread, `_TileWorkers`);
    torch.set_num_threads is left to the caller.
    """
    n_rows, dim = _check_index(index)
    q = _check_queries(queries, dim)
    _check_options(k, block_rows, precision, row_norm_bound)
    _check_scan_copy(scan_copy, index)
    k_out = min(int(k), n_rows)
    if q.shape[0] == 0:
        return np.empty((0, k_out), np.float32), np.empty((0, k_out), np.int64)
    top = RunningTopK(q.shape[0], k_out)
    scanner = _Scanner(q, _pick_scan_dtype(precision, index.dtype, q.shape[0]), row_norm_bound)
    for start, block in _iter_blocks(index, block_rows):
        x_scan = None if scan_copy is None else _as_tensor(scan_copy[start : start + block.shape[0]])
        local, scores = _block_candidates(scanner, _as_tensor(block), k_out, top.floor(), x_scan)
        top.merge(scores, local + start)
    return top.result()


def fp16_scan_copy(index: np.ndarray) -> np.ndarray:
    """The fp16 copy of an in-memory fp32 index that `exact_topk(..., scan_copy=)` scans: entries
    rounded to nearest as the scan's own cast rounds them (values past fp16's range become inf; the
    scan's overflow checks, which look at the fp32 rows, then rescan those blocks in fp32)."""
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(index, dtype=np.float16)


# ---------------------------------------------------------------- input checks


def _check_index(index: Any) -> tuple[int, int]:
    shape = getattr(index, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"index must be a 2-D [N, D] array, got shape {shape}")
    dtype = np.dtype(index.dtype)
    if dtype.kind != "f" or dtype.itemsize not in (2, 4):
        raise ValueError(f"index dtype must be float32 or float16, got {dtype}")
    if shape[0] == 0:
        raise ValueError("index is empty (N == 0): nothing to search")
    return int(shape[0]), int(shape[1])


def _check_queries(queries: np.ndarray, dim: int) -> torch.Tensor:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2:
        raise ValueError(f"queries must be a 2-D [Q, D] array, got shape {q.shape}")
    if q.shape[1] != dim:
        raise ValueError(f"dimension mismatch: queries have D={q.shape[1]}, index has D={dim}")
    return torch.from_numpy(q)


def _check_options(k: int, block_rows: int, precision: str, row_norm_bound: float | None) -> None:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    if int(block_rows) != block_rows or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if row_norm_bound is not None and not (0 <= row_norm_bound < math.inf):
        raise ValueError(f"row_norm_bound must be a finite number >= 0, got {row_norm_bound}")


def _check_scan_copy(scan_copy: np.ndarray | None, index: Any) -> None:
    if scan_copy is None:
        return
    if not isinstance(scan_copy, np.ndarray) or scan_copy.dtype != np.float16 or scan_copy.shape != tuple(index.shape):
        raise ValueError(f"scan_copy must be a float16 array of the index's shape {tuple(index.shape)}, got "
                         f"{getattr(scan_copy, 'dtype', type(scan_copy).__name__)} {getattr(scan_copy, 'shape', '')}")
    if not scan_copy.flags.c_contiguous:
        raise ValueError("scan_copy must be C-contiguous (fp16_scan_copy makes one)")


def _pick_scan_dtype(precision: str, stored: np.dtype, n_queries: int) -> torch.dtype:
    """The matmul dtype of the scan; "auto" follows the timings in benchmarks/RESULTS_rank.md.
    fp16 matrix-vector is memory-bound (torch's fp32 one is not, and an fp32 index is cast to
    fp16 tile by tile in cache), but fp16 matrix-matrix is slow on CPU: from 2 queries on an
    fp32 index (3 on an fp16 one, which bf16 must first cast) bf16 is the fastest kernel."""
    if precision != "auto":
        return _SCAN_DTYPES[precision]
    fp16_max_queries = 2 if np.dtype(stored).itemsize == 2 else 1
    return torch.float16 if n_queries <= fp16_max_queries else torch.bfloat16


# ---------------------------------------------------------------- block reading


def _iter_blocks(index: Any, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, block). Blocks of an h5py Dataset reuse one buffer: use before the next."""
    n_rows = index.shape[0]
    native = np.dtype(index.dtype).newbyteorder("=")  # torch takes native byte order only
    buffer = None
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        if isinstance(index, np.ndarray) or not hasattr(index, "read_direct"):
            # A view when already contiguous and native: the usual in-memory case copies nothing.
            yield start, np.ascontiguousarray(index[start:stop], dtype=native)
            continue
        if buffer is None:  # read_direct into one buffer: no fresh allocation per block
            buffer = np.empty((min(block_rows, n_rows), index.shape[1]), dtype=native)
        view = buffer[: stop - start]
        index.read_direct(view, np.s_[start:stop])
        yield start, view


def _as_tensor(block: np.ndarray) -> torch.Tensor:
    """Zero-copy view. Blocks are only read, so torch's warning about read-only arrays (a
    read-only np.memmap index, say) does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(block)


# ---------------------------------------------------------------- one block


def _block_candidates(
    scanner: _Scanner, x: torch.Tensor, k: int, floor: torch.Tensor, x_scan: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of block x (local numbers, ascending per query) that may enter the top-k, with their
    exact fp32 scores. floor: [Q] exact k-th best score so far (-inf until k rows are held).
    x_scan: the block's fp16 copy (exact_topk's scan_copy), or None."""
    n_q, n = scanner.q.shape[0], x.shape[0]
    scan = scanner.scan_block(x, x_scan) if n > k else None
    if scan is None:  # every row is needed anyway, or the block has no finite error bound
        local = torch.arange(n).expand(n_q, n)
    else:
        local = _select(scan, floor, k)
        local = torch.sort(local, dim=1).values  # ascending rows: ties then merge in row order
    return local, rescore_rows(scanner.q, x, local)


class _Scan(NamedTuple):
    values: torch.Tensor  # [Q, n] approximate scores of the queries times `scale`
    scale: float  # a power of two, so scaling is exact
    slack: torch.Tensor  # [Q, 1] bound on |values / scale - exact fp32 score|


class _Scanner:
    """Scores blocks in the scan dtype. Holds the per-call query data and reuses its buffers:
    a fresh block-sized tensor per block costs page faults that showed in the benchmark."""

    def __init__(self, q: torch.Tensor, scan: torch.dtype, row_norm_bound: float | None = None) -> None:
        self.q, self.scan, self.row_norm_bound = q, scan, row_norm_bound
        self.q_norm = torch.linalg.vector_norm(q.double(), dim=1, keepdim=True)
        self.q_peak = float(self.q_norm.max())  # NaN or inf when a query is not finite
        self.scale = _query_scale(q) if scan == torch.float16 else 1.0
        self.workers = _TileWorkers.get()
        self._buffers = [_Buffers() for _ in range(max(1, self.workers.count))]

    def scan_block(self, x: torch.Tensor, x_scan: torch.Tensor | None = None) -> _Scan | None:
        """Approximate scores of the queries against block x, with their error bound; None when
        no finite bound holds (non-finite entries or queries, scores that could overflow).
        x_scan: x cast to fp16 beforehand, read by an fp16 scan instead of casting x."""
        scan = self._scan_tiles(x, self.scan, self.scale, x_scan if self.scan == torch.float16 else None)
        # An fp16 value could overflow (entries or scores near 65504): redo in fp32.
        return self._scan_tiles(x, torch.float32, 1.0) if scan is _FP16_OVERFLOW else scan

    def _scan_tiles(self, x: torch.Tensor, dtype: torch.dtype, scale: float, x_scan: torch.Tensor | None = None) -> Any:
        """Tile by tile, so the norm pass, the cast and the matmul read rows still in cache.
        Returns a _Scan, None (no finite bound) or _FP16_OVERFLOW."""
        q_scan = (self.q * scale).to(dtype)
        q_bound = float(self.q_norm.max()) * scale
        out = self._buffers[0].get("scores", dtype, (self.q.shape[0], x.shape[0]))
        # Tiles only pay off when a cast is fused in or the tiles go to several workers; otherwise
        # one matmul is fastest.
        rows = _TILE_ROWS if x.dtype != dtype or x_scan is not None else x.shape[0]
        tiles = [(t, min(t + rows, x.shape[0])) for t in range(0, x.shape[0], rows)]

        def score(tile_range: tuple[int, int], buffers: _Buffers) -> float:
            tile = x[tile_range[0] : tile_range[1]]
            if tile.dtype == torch.float16 and dtype != torch.float16:
                tile = buffers.cast(tile, torch.float32, "x32")  # exact; fp16->bf16 casts are slow
            # inf when the tile is not all finite
            norm = self.row_norm_bound if self.row_norm_bound is not None else _max_row_norm(tile)
            if self.q_peak * norm < _SCORE_LIMIT and not (dtype == torch.float16 and not _fp16_safe(q_bound, norm)):
                scanned = buffers.cast(tile, dtype, "x_scan") if x_scan is None else x_scan[tile_range[0] : tile_range[1]]
                torch.matmul(q_scan, scanned.T, out=out[:, tile_range[0] : tile_range[1]])
            return norm

        x_norm = 0.0
        # The same decisions, in tile order, as a serial scan that stops at the first failing tile.
        for norm in self.workers.map(score, tiles, self._buffers):
            x_norm = max(x_norm, norm)
            if not self.q_peak * x_norm < _SCORE_LIMIT:  # also False for NaN
                return None
            if dtype == torch.float16 and not _fp16_safe(q_bound, x_norm):
                return _FP16_OVERFLOW
        slack = (_error_bound(dtype, x.shape[1], self.q_norm * scale, x_norm) / scale).float()
        if not bool(torch.isfinite(slack).all()):  # e.g. gamma_D infinite for fp16 accumulation
            return None
        return _Scan(out, scale, slack)


class _Buffers:
    """Named scratch tensors, reused across blocks (one set per tile worker)."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def cast(self, x: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
        return x if x.dtype == dtype else self.get(name, dtype, tuple(x.shape)).copy_(x)

    def get(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self._tensors.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < numel:
            buf = self._tensors[name] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(shape)


class _TileWorkers:
    """Runs a block's tiles on the caller's torch thread count, as that many threads with one
    torch thread each. A tile's norm, cast and matmul are short OpenMP regions; split over torch's
    threads, each region ended in a barrier where libgomp's spin-waiting threads lost their cores
    to other processes: one query over 262k fp32 rows at 2 threads took 1576 ms against 168 ms
    for a plain matmul (171 ms with whole tiles per thread: benchmarks/RESULTS_rank.md).
    torch.set_num_threads is per thread, so the workers' setting leaves the caller's alone.
    """

    _pools: dict[int, ThreadPoolExecutor] = {}

    def __init__(self, count: int) -> None:
        self.count = count
        if count >= 2 and count not in self._pools:
            self._pools[count] = ThreadPoolExecutor(count, "pig-scan", initializer=torch.set_num_threads, initargs=(1,))
        self.pool = self._pools.get(count)

    @classmethod
    def get(cls) -> "_TileWorkers":
        return cls(torch.get_num_threads())

    def map(self, score, tiles: list[tuple[int, int]], buffers: list[_Buffers]) -> list[float]:
        """score(tile, buffers) of every tile, in tile order. Workers take the next tile as they
        finish one, so a worker that loses its core delays one tile, not a fixed share."""
        if self.pool is None or len(tiles) < 2:
            return [score(tile, buffers[0]) for tile in tiles]
        results: list[float] = [0.0] * len(tiles)
        next_tile = itertools.count()  # next() on it is atomic under the GIL

        def work(own: _Buffers) -> None:
            for i in iter(lambda: next(next_tile), None):
                if i >= len(tiles):
                    return
                results[i] = score(tiles[i], own)

        for future in [self.pool.submit(work, b) for b in buffers[: min(self.count, len(tiles))]]:
            future.result()
        return results


def _select(scan: _Scan, floor: torch.Tensor, k: int) -> torch.Tensor:
    """Local rows [Q, m] including every row whose approximate score is >= L - slack, where
    L = max(floor, k-th best approximate score - slack) (module docstring)."""
    n = scan.values.shape[1]
    m = min(k + _EXTRA_CANDIDATES, n)
    while True:
        vals, idx = torch.topk(scan.values, m, dim=1)
        top = vals[:, 0]
        if bool((torch.isnan(top) | (top == math.inf)).any()):
            # topk puts NaN and +inf first, and only rows holding NaN/inf make them (scores of
            # finite rows cannot overflow here): they score -inf, so give them -inf and redo.
            torch.nan_to_num_(scan.values, nan=-math.inf, posinf=-math.inf, neginf=-math.inf)
            continue
        vals = vals.float() / scan.scale
        lower = torch.maximum(floor.unsqueeze(1), vals[:, k - 1 : k] - scan.slack)
        keep = vals >= lower - scan.slack
        # Complete once every query's m-th best is below L - slack: the rows left out score less.
        if m == n or not bool(keep[:, -1].any()):
            # vals is sorted, so the first max-count columns hold every query's kept rows.
            return idx[:, : int(keep.sum(dim=1).max())]
        m = min(2 * m, n)


def rescore_rows(q: torch.Tensor, x: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Exact fp32 scores of rows `local` [Q, m] of x. Each score is an elementwise product summed
    over D, so identical rows get bit-identical scores (matmul kernels give no such promise),
    which keeps ties in row order. Non-finite scores become -inf (ranked last, module docstring).
    Chunked over m to bound the gathered copy."""
    n_q, m = local.shape
    width = max(1, _RESCORE_ELEMS // max(1, n_q * x.shape[1]))
    parts = []
    for c in range(0, m, width):
        part = local[:, c : c + width]
        rows = x.index_select(0, part.reshape(-1)).view(*part.shape, -1).float()  # [Q, w, D]
        parts.append((rows * q.unsqueeze(1)).sum(dim=2))
    scores = torch.cat(parts, dim=1) if parts else torch.empty(n_q, 0)
    return torch.nan_to_num_(scores, nan=-math.inf, posinf=-math.inf, neginf=-math.inf)


# ---------------------------------------------------------------- error bound


def _max_row_norm(x: torch.Tensor) -> float:
    """An upper bound on the L2 norm of every row of x, from one cheap pass over the block; inf
    when x holds NaN or inf. Holds for any finite x: the fp32 norm is trusted only when it can
    have neither overflowed nor lost much to underflow; otherwise x is rescaled by a power of two."""
    if x.dtype == torch.float16:
        # fp16 norms are slow in torch; max|x| is one fast reduction and ||row|| <= sqrt(D) max|x|.
        return math.sqrt(x.shape[1]) * _peak(x)
    norm = float(torch.linalg.vector_norm(x, dim=1).max())
    if math.isnan(norm):
        return math.inf
    # Squares below 2^-126 may be lost (flushed or rounded as subnormals), and entries the
    # rescaling pushes into subnormals rounded: together at most sqrt(D) 2^-62 on any row's norm.
    underflow = math.sqrt(x.shape[1]) * 2.0**-62
    rounding = 1.0 + 2.0 * _gamma(x.shape[1] + 2)  # the fp32 norm is itself rounded
    if math.isfinite(norm) and underflow <= norm * 2.0**-24:
        return norm * rounding + underflow  # the usual case: one pass, no rescaling
    peak = _peak(x)  # the plain norm overflowed or may have underflowed
    if peak == 0.0 or not math.isfinite(peak):
        return peak
    exponent = math.frexp(peak)[1]  # peak * 2^-exponent in [0.5, 1): no square overflows
    scaled = float(torch.linalg.vector_norm(x * 2.0**-exponent, dim=1).max())
    return math.ldexp(scaled * rounding + underflow, exponent)


def _peak(x: torch.Tensor) -> float:
    """max |x| as a Python float; inf when x holds NaN or inf."""
    lo, hi = (float(v) for v in torch.aminmax(x))
    return max(-lo, hi) if math.isfinite(lo) and math.isfinite(hi) else math.inf


def _gamma(n: int, unit: float = _UNIT[torch.float32]) -> float:
    """Higham's gamma_n: relative error bound of an n-term dot product rounded with `unit`."""
    return n * unit / (1.0 - n * unit) if n * unit < 1.0 else math.inf


def _error_bound(scan: torch.dtype, dim: int, q_norm: torch.Tensor, x_norm: float) -> torch.Tensor:
    """Bound on |scan score - returned fp32 score| for every row of a block, per query.

    With u the unit roundoff of the scan's inputs/output, g = gamma_D of its accumulator and
    A = sum_j |q_j x_j| <= ||q|| ||x|| (Cauchy-Schwarz):
      rounding q and x to the scan dtype              <= (2u + u^2) A
      accumulating the D products                      <= g (1+u)^2 A
      rounding the result to the scan dtype           <= u (1 + 2u + u^2 + g (1+u)^2) A
      the returned fp32 score is itself a dot product  <= gamma_D(fp32) A
    which sums to at most (3u + g + gamma_D(fp32)) (1+u)^3 A. Underflow adds at most `tiny` per
    rounded element or result: 2 tiny (sqrt(D) (||q|| + ||x||) + 1) covers it."""
    u, accumulate = _scan_units(scan)
    relative = (3.0 * u + _gamma(dim, accumulate) + _gamma(dim)) * (1.0 + u) ** 3
    absolute = 2.0 * _TINY[scan] * (math.sqrt(dim) * (q_norm + x_norm) + 1.0)
    return (relative * q_norm * x_norm + absolute).float()


def _scan_units(scan: torch.dtype) -> tuple[float, float]:
    """(unit roundoff of inputs/output, of the accumulator) of a torch CPU matmul in `scan`.
    bf16 (oneDNN/MKL) and fp16 kernels accumulate in fp32, which tests/test_search.py checks,
    unless the caller allowed fp16 reduced-precision reduction. An fp32 matmul may round its
    inputs to tf32 or bf16 when the caller lowered torch.set_float32_matmul_precision."""
    fp32 = _UNIT[torch.float32]
    if scan == torch.float16 and torch._C._get_cpu_allow_fp16_reduced_precision_reduction():
        return _UNIT[scan], _UNIT[scan]
    if scan != torch.float32:
        return _UNIT[scan], fp32
    mode = torch.get_float32_matmul_precision()
    return {"highest": fp32, "high": _UNIT[torch.float16]}.get(mode, _UNIT[torch.bfloat16]), fp32


def _query_scale(q: torch.Tensor) -> float:
    """Power of two bringing the largest |query entry| into [0.5, 1): keeps fp16 queries off
    overflow and subnormals. Exact, so it changes no rounding except the fp16 one it avoids."""
    peak = float(q.abs().max())
    return 1.0 if peak == 0.0 or not math.isfinite(peak) else 2.0 ** (-math.frexp(peak)[1])


def _fp16_safe(q_norm_scaled: float, x_norm: float) -> bool:
    """No fp16 value can overflow: every |x entry| <= x_norm and |score| <= ||q|| * x_norm."""
    return x_norm < _FP16_MAX_SAFE and q_norm_scaled * x_norm < _FP16_MAX_SAFE


# ---------------------------------------------------------------- running top-k


class RunningTopK:
    """Best k (score, row) pairs per query so far, sorted by score desc then row asc."""

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = k
        self.scores = torch.empty(n_queries, 0)
        self.rows = torch.empty(n_queries, 0, dtype=torch.int64)

    def floor(self) -> torch.Tensor:
        """Exact k-th best score per query, or -inf while fewer than k rows are held."""
        if self.scores.shape[1] < self.k:
            return torch.full((self.scores.shape[0],), -math.inf)
        return self.scores[:, self.k - 1]

    def merge(self, scores: torch.Tensor, rows: torch.Tensor) -> None:
        """Add candidates whose rows are ascending and above every row held: a stable sort of
        [held, new] by score then keeps equal scores in row order."""
        s = torch.cat([self.scores, scores], dim=1)
        r = torch.cat([self.rows, rows], dim=1)
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.scores, self.rows = s.gather(1, order), r.gather(1, order)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scores.numpy().astype(np.float32, copy=False), self.rows.numpy()
