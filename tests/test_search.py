"""exact_topk against a brute-force full sort, for every scan precision."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import torch

import pigcli.core.search as search
from pigcli.core.search import exact_topk

PRECISIONS = ["auto", "fp32", "bf16", "fp16"]


def brute_force(index: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full float64 score matrix, np.lexsort on (-score, row): the definition of the answer."""
    scores = queries.astype(np.float64) @ index.astype(np.float64).T
    rows = np.arange(index.shape[0])
    order = np.stack([np.lexsort((rows, -s))[:k] for s in scores])
    return np.take_along_axis(scores, order, axis=1), order


def assert_matches(index: np.ndarray, queries: np.ndarray, k: int, **kwargs) -> None:
    scores, rows = exact_topk(index, queries, k, **kwargs)
    want_scores, want_rows = brute_force(index, queries, k)
    assert scores.dtype == np.float32 and rows.dtype == np.int64
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("block_rows", [1, 7, 256, 1000, 4096, 100_000])
def test_random_data_matches_full_sort(precision: str, block_rows: int) -> None:
    rng = np.random.default_rng(block_rows)
    index, queries = unit_rows(rng, 3000, 48), unit_rows(rng, 5, 48)
    assert_matches(index, queries, 10, block_rows=block_rows, precision=precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_many_blocks_and_tiles(precision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks that do not divide N, tiles that do not divide blocks."""
    monkeypatch.setattr(search, "_TILE_ROWS", 300)
    rng = np.random.default_rng(1)
    index, queries = unit_rows(rng, 20_011, 64), unit_rows(rng, 3, 64)
    assert_matches(index, queries, 25, block_rows=4093, precision=precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_single_query_and_k_above_n(precision: str) -> None:
    rng = np.random.default_rng(2)
    index, query = unit_rows(rng, 13, 16), unit_rows(rng, 1, 16)
    scores, rows = exact_topk(index, query, 50, block_rows=5, precision=precision)
    assert scores.shape == rows.shape == (1, 13)
    assert sorted(rows[0]) == list(range(13))
    assert_matches(index, query, 50, block_rows=5, precision=precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_integer_data_ties_come_out_in_row_order(precision: str) -> None:
    """Small integers: every score is exact in fp32, so ties are real and plentiful."""
    rng = np.random.default_rng(3)
    index = rng.integers(-2, 3, size=(5000, 8)).astype(np.float32)
    queries = rng.integers(-2, 3, size=(6, 8)).astype(np.float32)
    scores, rows = exact_topk(index, queries, 40, block_rows=777, precision=precision)
    want_scores, want_rows = brute_force(index, queries, 40)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_duplicate_float_rows_in_row_order(precision: str) -> None:
    """Copies of non-integer rows, spread over blocks and tile offsets, must score bit-identically
    (so they stay in row order) however the scan kernel handles their positions."""
    rng = np.random.default_rng(4)
    index, queries = unit_rows(rng, 9000, 40), unit_rows(rng, 4, 40)
    best = brute_force(index, queries, 1)[1][:, 0]
    copies = [5, 4096, 4097, 6001, 8999]
    for i, c in enumerate(copies):
        index[c] = index[best[i % len(best)]]
    scores, rows = exact_topk(index, queries, 8, block_rows=3000, precision=precision)
    np.testing.assert_array_equal(rows, brute_force(index, queries, 8)[1])
    for s, r in zip(scores, rows):
        same = [j for j in range(1, len(r)) if np.array_equal(index[r[j - 1]], index[r[j]])]
        assert same, "the planted copies should tie inside the top 8"
        assert all(s[j - 1] == s[j] and r[j - 1] < r[j] for j in same)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_fp16_index(precision: str) -> None:
    rng = np.random.default_rng(5)
    index, queries = unit_rows(rng, 4000, 32).astype(np.float16), unit_rows(rng, 3, 32)
    assert_matches(index, queries, 10, block_rows=999, precision=precision)
    assert_matches(index, queries[:1], 10, block_rows=999, precision=precision)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_h5py_dataset_read_block_by_block(tmp_path, dtype: type) -> None:
    rng = np.random.default_rng(6)
    index, queries = unit_rows(rng, 2500, 24).astype(dtype), unit_rows(rng, 4, 24)
    path = tmp_path / "index.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("emb", data=index)
    with h5py.File(path, "r") as f:
        reads = _ReadRecorder(f["emb"])
        got = exact_topk(reads, queries, 7, block_rows=600)
    assert max(reads.sizes) <= 600 and sum(reads.sizes) == 2500
    want = exact_topk(index, queries, 7, block_rows=600)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert_matches(index, queries, 7)


class _ReadRecorder:
    """An h5py Dataset that records how many rows each read_direct asks for."""

    def __init__(self, dataset: h5py.Dataset) -> None:
        self.dataset, self.sizes = dataset, []
        self.shape, self.dtype = dataset.shape, dataset.dtype

    def __getitem__(self, key):
        raise AssertionError("the whole dataset or a slice was read outside read_direct")

    def read_direct(self, dest: np.ndarray, source_sel: slice) -> None:
        self.sizes.append(dest.shape[0])
        self.dataset.read_direct(dest, source_sel)


def near_ties(precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows equal to one vector plus noise near the scan's resolution (per precision), so the
    scan's own order among the top rows is wrong."""
    rng = np.random.default_rng(7)
    base = unit_rows(rng, 1, 64)
    noise = {"bf16": 1e-3, "fp16": 5e-5}[precision]
    index = (base + noise * rng.standard_normal((3000, 64))).astype(np.float32)
    return index, unit_rows(rng, 8, 64)


def test_read_only_memmap_without_warnings(tmp_path) -> None:
    rng = np.random.default_rng(10)
    index, queries = unit_rows(rng, 1000, 16), unit_rows(rng, 2, 16)
    index.tofile(tmp_path / "index.f32")
    mapped = np.memmap(tmp_path / "index.f32", dtype=np.float32, mode="r", shape=index.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_matches(mapped, queries, 5, block_rows=300)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_near_ties_below_scan_resolution(precision: str) -> None:
    """Only the error-bound margin (and growing the candidate list) gets the order right."""
    index, queries = near_ties(precision)
    assert_matches(index, queries, 5, block_rows=1024, precision=precision)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_near_ties_fail_without_the_margin(precision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above has teeth: with a zero error bound the filter drops true top rows."""
    monkeypatch.setattr(search, "_error_bound", lambda *args: torch.zeros(1, 1))
    index, queries = near_ties(precision)
    with pytest.raises(AssertionError):
        assert_matches(index, queries, 5, block_rows=1024, precision=precision)


@pytest.mark.parametrize("scan", [torch.bfloat16, torch.float16, torch.float32])
def test_scan_error_within_bound_on_adversarial_data(scan: torch.dtype) -> None:
    """Same-sign entries that all round the same way: a kernel accumulating in bf16/fp16 rather
    than fp32 would break the bound the filter relies on; the bound is also not vacuous."""
    u = search._UNIT[scan]
    value = 1.0 + 0.99 * u  # rounds down to 1 in the scan dtype: relative error ~u, all one way
    x = torch.full((8, 2048), value) * torch.arange(1, 9, dtype=torch.float32)[:, None]
    q = torch.full((1, 2048), value)
    result = search._Scanner(q, scan).scan_block(x)
    exact = (x.double() * q.double()).sum(dim=1)
    err = float((result.values.double() / result.scale - exact).abs().max())
    slack = float(result.slack.max())
    assert err <= slack
    if scan != torch.float32:
        assert slack < 3 * err


def test_fp16_overflow_falls_back_to_fp32() -> None:
    rng = np.random.default_rng(8)
    index = (rng.standard_normal((500, 16)) * 5000).astype(np.float16)  # finite, |x| << 65504
    queries = rng.standard_normal((1, 16)).astype(np.float32) * 1000
    assert_matches(index, queries, 5, block_rows=128, precision="fp16")


def test_lowered_fp32_matmul_precision_stays_exact() -> None:
    rng = np.random.default_rng(9)
    index, queries = unit_rows(rng, 3000, 32), unit_rows(rng, 3, 32)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert_matches(index, queries, 10, block_rows=1000, precision="fp32")
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_row_norm_bound_replaces_the_norm_pass(precision: str, dtype: type, monkeypatch) -> None:
    """With a stored bound no block norm is computed, and the answer is still the exact one,
    near ties included (the bound is what the error margin is built from)."""
    index, queries = near_ties("fp16")
    index = (index * 3).astype(dtype)  # rows of norm about 3, not 1
    bound = float(np.linalg.norm(index.astype(np.float64), axis=1).max())

    def no_norm_pass(_):
        raise AssertionError("the block norm pass ran although a bound was given")

    monkeypatch.setattr(search, "_max_row_norm", no_norm_pass)
    for q in (queries[:1], queries):
        assert_matches(index, q, 5, block_rows=1024, precision=precision, row_norm_bound=bound)
    if precision == "fp16":  # the bound has teeth: far too small, the margin drops true rows (data made for fp16)
        with pytest.raises(AssertionError):
            assert_matches(index, queries, 5, block_rows=1024, precision=precision, row_norm_bound=bound * 1e-6)
    big = np.full((4, 3), 30000, np.float16)  # fp16 overflow is still caught from the bound
    assert_matches(big, np.ones((1, 3), np.float32), 2, precision="fp16",
                   row_norm_bound=float(np.linalg.norm(big[0].astype(np.float64))))


def test_no_queries() -> None:
    scores, rows = exact_topk(np.ones((4, 3), np.float32), np.zeros((0, 3), np.float32), 2)
    assert scores.shape == rows.shape == (0, 2)


def test_bad_inputs() -> None:
    index = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="empty"):
        exact_topk(np.ones((0, 3), np.float32), np.ones((1, 3), np.float32), 1)
    with pytest.raises(ValueError, match=r"D=5.*D=3"):
        exact_topk(index, np.ones((1, 5), np.float32), 1)
    with pytest.raises(ValueError, match="k must"):
        exact_topk(index, np.ones((1, 3), np.float32), 0)
    with pytest.raises(ValueError, match="precision"):
        exact_topk(index, np.ones((1, 3), np.float32), 1, precision="int8")
    with pytest.raises(ValueError, match="block_rows"):
        exact_topk(index, np.ones((1, 3), np.float32), 1, block_rows=0)
    with pytest.raises(ValueError, match="dtype"):
        exact_topk(index.astype(np.float64), np.ones((1, 3), np.float32), 1)
    with pytest.raises(ValueError, match="2-D"):
        exact_topk(index, np.ones(3, np.float32), 1)
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="row_norm_bound"):
            exact_topk(index, np.ones((1, 3), np.float32), 1, row_norm_bound=bad)


# ---------------------------------------------------------------- edge cases: NaN, overflow, underflow


def finite_brute_force(index: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """brute_force over the rows holding no NaN/inf, row numbers those of the whole index."""
    finite = np.flatnonzero(np.isfinite(index).all(axis=1))
    scores, order = brute_force(index[finite], queries, k)
    return scores, finite[order]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("with_bound", [False, True])
def test_nan_rows_filling_a_block_never_hide_valid_rows(precision: str, with_bound: bool) -> None:
    """A block with at least k NaN (and inf) rows: its valid rows still compete, scored exactly.
    With a stored bound (true for the finite rows) the scan itself sees the NaN scores."""
    rng = np.random.default_rng(11)
    index, queries = unit_rows(rng, 3000, 32), unit_rows(rng, 2, 32)
    want_scores, want_rows = finite_brute_force(index, queries, 10)
    bad = np.setdiff1d(np.arange(0, 1000, 37), want_rows)[:20]  # 20 rows of block 0, none of the top
    index[bad[:12]] = np.nan
    index[bad[12:16], 3] = np.inf
    index[bad[16:], 5] = -np.inf
    bound = float(np.linalg.norm(index[np.isfinite(index).all(axis=1)].astype(np.float64), axis=1).max())
    for q in (queries[:1], queries):
        scores, rows = exact_topk(index, q, 10, block_rows=1000, precision=precision,
                                  row_norm_bound=bound if with_bound else None)
        np.testing.assert_array_equal(rows, want_rows[: len(q)])
        np.testing.assert_allclose(scores, want_scores[: len(q)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_non_finite_rows_rank_last_in_row_order(precision: str) -> None:
    index = np.array([[np.nan, 1], [1, 2], [np.inf, 0], [0.5, 0.5], [3, -np.inf], [-1, 0]], np.float32)
    queries = np.array([[1, 1], [0, 0]], np.float32)
    scores, rows = exact_topk(index, queries, 6, block_rows=4, precision=precision)
    np.testing.assert_array_equal(rows, [[1, 3, 5, 0, 2, 4], [1, 3, 5, 0, 2, 4]])
    np.testing.assert_array_equal(scores[0], [3, 1, -1, -np.inf, -np.inf, -np.inf])
    np.testing.assert_array_equal(scores[1], [0, 0, 0, -np.inf, -np.inf, -np.inf])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_zero_query_with_rows_whose_fp32_norm_overflows(precision: str) -> None:
    """|x| ~ 1e37: the squares overflow fp32. A zero query scores every row 0: k ties, by row."""
    rng = np.random.default_rng(12)
    index = (rng.standard_normal((300, 32)) * 1e37).astype(np.float32)
    assert np.isfinite(index).all()
    scores, rows = exact_topk(index, np.zeros((1, 32), np.float32), 5, block_rows=100, precision=precision)
    np.testing.assert_array_equal(rows, [[0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(scores, np.zeros((1, 5), np.float32))
    queries = unit_rows(rng, 2, 32)  # and nonzero queries: scores ~1e37, still within fp32
    assert_matches((index / 10).astype(np.float32), queries, 5, block_rows=100, precision=precision)


def assert_matches_relative(index: np.ndarray, queries: np.ndarray, k: int, **kwargs) -> None:
    """assert_matches for scores of any magnitude: rows exact, scores to fp32 relative accuracy."""
    scores, rows = exact_topk(index, queries, k, **kwargs)
    want_scores, want_rows = brute_force(index, queries, k)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=0)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_tiny_entries_whose_fp32_norm_underflows(precision: str, kind: str) -> None:
    """Entries ~1e-25: their squares underflow, so a plain fp32 norm says 0 and a filter built on
    it has no margin; near ties at the scan's resolution then lose true top rows."""
    index, queries = near_ties(kind)
    index = (index * 1e-25).astype(np.float32)
    for q in (queries[:1], queries[:2]):
        assert_matches_relative(index, q, 10, block_rows=1024, precision=precision)


@pytest.mark.parametrize("seed", range(7))
def test_random_mixes_of_scales(seed: int) -> None:
    """Property-style: groups of rows at scales from 1e-30 to 1e30 (scores within fp32) with near
    ties inside each, stray rows of any scale, zero rows; every precision, 1 and 3 queries, with
    and without a norm bound: always the exact answer. Each seed centres its scales on one band of
    1e-27 .. 1e27, so both ends are covered; the largest group comes first, the strays last."""
    rng = np.random.default_rng(100 + seed)
    center = 10.0 ** (9 * seed - 27 + rng.uniform(-1, 1))
    base = unit_rows(rng, 1, 24)
    scales = np.sort(np.clip(center * 10.0 ** rng.uniform(-3, 3, size=6), 1e-30, 1e30))[::-1]
    noise = 10.0 ** rng.uniform(-4, -2.5, size=(6, 1, 1)) * rng.standard_normal((6, 500, 24))
    index = ((base + noise) * scales[:, None, None]).reshape(3000, 24)
    # Rows at any scale that score below zero (the queries lie near `base`), and zero rows.
    stray = 2100 + rng.choice(900, 40, replace=False)
    index[stray[:30]] = -(base + 0.1 * unit_rows(rng, 30, 24)) * 10.0 ** rng.uniform(-30, 30, size=(30, 1))
    index[stray[30:]] = 0
    index = index.astype(np.float32)
    queries = (base + 0.5 * unit_rows(rng, 3, 24)) * 10.0 ** rng.uniform(-4, 4, size=(3, 1))
    queries = queries.astype(np.float32)
    assert np.isfinite(index).all() and np.abs(index).max() <= 1.2e30
    bound = float(np.linalg.norm(index.astype(np.float64), axis=1).max())
    for precision in PRECISIONS:
        for q in (queries[:1], queries):
            assert_matches_relative(index, q, 10, block_rows=700, precision=precision)
            assert_matches_relative(index, q, 10, block_rows=700, precision=precision, row_norm_bound=bound)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", ["plain", "nan_in_a_late_tile", "fp16_overflow_in_a_late_tile", "huge_rows"])
def test_tiles_on_worker_threads_match_one_thread(precision: str, case: str, monkeypatch) -> None:
    """A block's tiles split over worker threads (torch threads > 1) give the same answer, bit for
    bit, as one thread, including when a late tile decides the block's fallback (non-finite rows:
    rescoring in full; fp16 overflow: an fp32 scan), and leave the caller's thread count alone."""
    monkeypatch.setattr(search, "_TILE_ROWS", 97)
    rng = np.random.default_rng(21)
    index, queries = unit_rows(rng, 2000, 32), unit_rows(rng, 3, 32)
    if case == "nan_in_a_late_tile":
        index[1900:1905] = np.nan
    elif case == "fp16_overflow_in_a_late_tile":
        index[1800:1810] *= 3000.0
    elif case == "huge_rows":
        index[1700:1710] *= 1e30
    before = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for q in (queries[:1], queries):
                results[threads, len(q)] = exact_topk(index, q, 10, block_rows=1000, precision=precision)
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    for (threads, n_q), (scores, rows) in results.items():
        np.testing.assert_array_equal(rows, results[1, n_q][1])
        np.testing.assert_array_equal(scores, results[1, n_q][0])
    want_scores, want_rows = finite_brute_force(index, queries, 10)
    np.testing.assert_array_equal(results[2, 3][1], want_rows)


# --- an fp16 copy held by the caller (pig serve) -----------------------------------------------------

@pytest.mark.parametrize("case", ["random", "near ties", "duplicates", "large entries"])
@pytest.mark.parametrize("with_bound", [False, True])
def test_fp16_scan_copy_gives_the_same_results(case: str, with_bound: bool, monkeypatch) -> None:
    """scan_copy replaces the scan's own cast of each tile: the same candidates, so bit-identical
    results, including near ties (the error bound still holds) and entries past fp16's range
    (the copy holds inf there; the scan's fp32 checks send those blocks to an fp32 scan)."""
    from pigcli.core.search import fp16_scan_copy

    monkeypatch.setattr(search, "_TILE_ROWS", 300)
    rng = np.random.default_rng(11)
    if case == "near ties":
        index, queries = near_ties("fp16")
    else:
        index, queries = unit_rows(rng, 5000, 32), unit_rows(rng, 1, 32)
        if case == "duplicates":
            index[100:4000:7] = index[50]
        if case == "large entries":
            index[2000:2100] *= 1e5
    bound = float(np.linalg.norm(index.astype(np.float64), axis=1).max()) * (1 + 1e-6) if with_bound else None
    copy = fp16_scan_copy(index)
    for k in (1, 10):
        plain = exact_topk(index, queries[:1], k, block_rows=1024, precision="fp16", row_norm_bound=bound)
        copied = exact_topk(index, queries[:1], k, block_rows=1024, precision="fp16", row_norm_bound=bound,
                            scan_copy=copy)
        np.testing.assert_array_equal(copied[1], plain[1])
        np.testing.assert_array_equal(copied[0], plain[0])
    assert_matches(index, queries[:1], 5, block_rows=1024, precision="fp16", scan_copy=copy)


def test_scan_copy_is_read_instead_of_casting(monkeypatch) -> None:
    """The test above has teeth: the fp16 scan reads the copy (a copy of other rows gives other rows)."""
    from pigcli.core.search import fp16_scan_copy

    rng = np.random.default_rng(12)
    index, query = unit_rows(rng, 3000, 32), unit_rows(rng, 1, 32)
    wrong = fp16_scan_copy(unit_rows(rng, 3000, 32))
    assert not np.array_equal(exact_topk(index, query, 10, precision="fp16", scan_copy=wrong)[1],
                              exact_topk(index, query, 10, precision="fp16")[1])


def test_scan_copy_must_fit_the_index() -> None:
    index = np.zeros((10, 4), np.float32)
    for bad in (np.zeros((10, 4), np.float32), np.zeros((9, 4), np.float16), np.zeros((4, 10), np.float16).T):
        with pytest.raises(ValueError, match="scan_copy"):
            exact_topk(index, np.ones((1, 4), np.float32), 3, scan_copy=bad)
