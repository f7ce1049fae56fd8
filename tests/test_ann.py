"""Approximate search: pig index-ann and pig rank --ann (pigcli/core/ann.py, pigcli/query/ann.py).

Recall is measured against the exact scan (exact_topk) on small clustered data; every returned
score must be the exact fp32 score of its row. Needs faiss (the `ann` extra): skipped without it,
except the tests of what happens when it is missing.
"""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest

from pigcli.core.search import exact_topk
from pigcli.errors import PigError
from pigcli.store import Provenance, RowReader, StageWriter
import test_rerank
from test_stages import by_query, parse_tsv, pig

chain = test_rerank.chain  # fixture: a PIG index of the test videos, with q.h5

N, D, K = 6000, 32, 10
try:
    import faiss  # noqa: F401

    HAVE_FAISS = True
except ImportError:
    HAVE_FAISS = False
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss not installed (pip install faiss-cpu, or '.[ann]')")


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray, noise: float = 0.5) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, centres.shape[1])) / np.sqrt(D)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_index(path, embedding: np.ndarray, model_hash: str = "h1", variant: int = 0) -> None:
    """A fuse file; its fingerprint follows `variant` (the identity the ANN records, with the creation second)."""
    settings = {"synthetic": len(embedding), "variant": variant}
    writer = StageWriter(path, Provenance("fuse", settings, {"name": "m", "hash": model_hash}), force=True)
    writer.write_block(0, {"ids": [f"v{i}" for i in range(len(embedding))], "embedding": embedding})
    writer.finish()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((60, D))
    root = tmp_path_factory.mktemp("ann")
    embedding, queries = clustered(rng, N, centres), clustered(rng, 40, centres)
    write_index(root / "index.h5", embedding)
    exact_scores, exact_rows = exact_topk(embedding, queries, K)
    return root, embedding, queries, exact_rows


def recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(rows, truth)]))


def assert_exact_scores(embedding, queries, scores, rows) -> None:
    """Every returned score is the row's fp32 dot product, in descending order."""
    want = np.einsum("qd,qkd->qk", queries.astype(np.float64), embedding[rows].astype(np.float64))
    np.testing.assert_allclose(scores, want, rtol=0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.fixture(scope="module")
def built(data):
    from pigcli.query.ann import build_ann

    root = data[0]
    return {kind: build_ann(root / "index.h5", root / f"{kind}.faiss", kind) for kind in ("flat", "ivfpq", "hnsw")}


@needs_faiss
def test_flat_equals_the_exact_scan(data, built) -> None:
    from pigcli.query.ann import rank_ann

    root, embedding, queries, truth = data
    scores, rows = rank_ann(root / "index.h5", built["flat"].output, queries, K)
    want_scores, want_rows = exact_topk(embedding, queries, K)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(scores, want_scores)  # the same rescoring routine: bit-identical


@needs_faiss
@pytest.mark.parametrize("kind, floor", [("ivfpq", 0.9), ("hnsw", 0.95)])
def test_recall_against_exact(data, built, kind: str, floor: float) -> None:
    from pigcli.query.ann import rank_ann

    root, embedding, queries, truth = data
    scores, rows = rank_ann(root / "index.h5", built[kind].output, queries, K)
    assert recall(rows, truth) >= floor
    assert_exact_scores(embedding, queries, scores, rows)


def test_large_ivfpq_indexes_rescore_more_candidates() -> None:
    """10M rows needed refine 100 for recall@10 0.9 (benchmarks/RESULTS_ann.md); 1M rows 30."""
    from pigcli.core.ann import default_params

    assert default_params("ivfpq", 1_000_000, 512).query["refine"] == 30
    assert default_params("ivfpq", 10_000_000, 512).query["refine"] == 100
    assert default_params("ivfpq", 10_000_000, 512, refine=7).query["refine"] == 7


@needs_faiss
def test_ivfpq_knobs_trade_speed_for_recall(data, built) -> None:
    from pigcli.query.ann import AnnSearcher

    root, embedding, queries, truth = data
    params = built["ivfpq"].params
    assert params.query == {"nprobe": max(1, params.nlist // 64), "refine": 30}   # a small index
    with AnnSearcher(root / "index.h5", built["ivfpq"].output) as searcher:
        one = recall(searcher.search(queries, K, nprobe=1, refine=1)[1], truth)
        wide = recall(searcher.search(queries, K, nprobe=params.nlist, refine=20)[1], truth)
    assert one < wide and wide >= 0.97


@needs_faiss
def test_sidecar_records_identity_and_parameters(data, built) -> None:
    root = data[0]
    meta = json.loads((root / "ivfpq.faiss.json").read_text())
    with h5py.File(root / "index.h5") as handle:
        assert meta["index"]["fingerprint"] == handle.attrs["fingerprint"]
        assert meta["index"]["created"] == handle.attrs["created"]
    assert meta["index"]["rows"] == N and meta["index"]["dim"] == D
    assert meta["model"] == {"name": "m", "hash": "h1"}
    assert meta["params"]["factory"] == built["ivfpq"].params.factory()
    assert meta["faiss_bytes"] == (root / "ivfpq.faiss").stat().st_size
    index = faiss.read_index(str(root / "ivfpq.faiss"))
    assert index.ntotal == N and index.metric_type == faiss.METRIC_INNER_PRODUCT


@needs_faiss
def test_rank_refuses_another_index_or_model(data, built, tmp_path) -> None:
    from pigcli.query.ann import build_ann, rank_ann

    root, embedding, queries, _ = data
    other = tmp_path / "other.h5"
    write_index(other, embedding, variant=1)  # the same vectors, but another file made from other inputs
    with pytest.raises(PigError, match=r"was built from .*index\.h5.*rebuild: pig index-ann .*other\.h5"):
        rank_ann(other, built["flat"].output, queries, K)
    ann = tmp_path / "flat.faiss"
    build_ann(other, ann, "flat")
    write_index(other, embedding, model_hash="h2", variant=1)  # rebuilt with another model
    with pytest.raises(PigError, match=r"built for model m \(h1\).*holds model m \(h2\)"):
        rank_ann(other, ann, queries, K)


@needs_faiss
def test_rank_refuses_a_changed_or_undescribed_ann_file(data, built, tmp_path) -> None:
    from pigcli.query.ann import rank_ann

    root, _, queries, _ = data
    copy = tmp_path / "copy.faiss"
    copy.write_bytes(built["flat"].output.read_bytes())
    with pytest.raises(PigError, match=r"no readable copy\.faiss\.json"):
        rank_ann(root / "index.h5", copy, queries, K)
    (tmp_path / "copy.faiss.json").write_text((root / "hnsw.faiss.json").read_text())  # another file's sidecar
    with pytest.raises(PigError, match="does not describe"):
        rank_ann(root / "index.h5", copy, queries, K)


@needs_faiss
def test_build_is_skipped_when_up_to_date_and_refuses_other_settings(data, built) -> None:
    from pigcli.query.ann import build_ann

    root = data[0]
    again = build_ann(root / "index.h5", root / "hnsw.faiss", "hnsw")
    assert again.skipped
    with pytest.raises(PigError, match="--force"):
        build_ann(root / "index.h5", root / "hnsw.faiss", "hnsw", hnsw_m=8)
    with pytest.raises(PigError, match="at least 234000 rows"):
        build_ann(root / "index.h5", root / "x.faiss", "ivfpq", nlist=6000)


@needs_faiss
def test_cli_index_ann_and_rank_ann(data, built, tmp_path) -> None:
    root, embedding, queries, truth = data
    ann = tmp_path / "cli.faiss"
    code, out, err = pig("index-ann", root / "index.h5", "-o", ann, "--type", "hnsw", "--ef-search", 16, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["rows"] == N and report["params"]["query"]["ef_search"] == 16
    q = tmp_path / "q.h5"
    writer = StageWriter(q, Provenance("embed-text", {}, {"name": "m", "hash": "h1"}))
    writer.write_block(0, {"ids": [f"q{i}" for i in range(len(queries))], "embedding": queries})
    writer.finish()
    code, out, err = pig("rank", root / "index.h5", q, "--ann", ann, "--ef-search", 64, "-n", K)
    assert code == 0, err
    got = by_query(parse_tsv(out))
    rows = np.array([[int(video[1:]) for video, _ in got[f"q{i}"]] for i in range(len(queries))])
    assert recall(rows, truth) >= 0.95
    code, _, err = pig("rank", root / "index.h5", q, "--ann", tmp_path / "missing.faiss")
    assert code == 1 and "pig index-ann INDEX -o" in err and len(err.strip().splitlines()) == 1
    code, _, err = pig("index-ann", root / "index.h5", "-o", root / "index.h5")
    assert code == 2 and "pig stage file" in err


def test_without_faiss_one_line_with_the_install_command(data, monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    code, _, err = pig("index-ann", data[0] / "index.h5", "-o", tmp_path / "x.faiss")
    assert code == 1
    assert err.strip().splitlines() == ["error: approximate search needs faiss, which is not installed: "
                                        "pip install faiss-cpu (or: pip install 'pigcli[ann]')"]


@needs_faiss
@pytest.mark.slow
def test_rerank_composes_with_ann(chain, tmp_path) -> None:
    """--ann --rerank: the ANN's candidates, then EERCF's rerank; with a flat ANN, as without --ann."""
    ann = tmp_path / "chain.faiss"
    code, _, err = pig("index-ann", chain.index, "-o", ann, "--type", "flat")
    assert code == 0, err
    exact = pig("rank", chain.index, chain.q, "--rerank", 3, "-n", 5)
    approx = pig("rank", chain.index, chain.q, "--rerank", 3, "-n", 5, "--ann", ann)
    assert exact[0] == approx[0] == 0, approx[2]
    assert approx[1] == exact[1] and approx[1]
    code, _, err = pig("rank", chain.index, chain.q, "--method", "xpool", "--ann", ann)
    assert code == 2 and "--ann replaces the exact index scan" in err


def test_row_reader_reads_rows_as_h5py(tmp_path) -> None:
    """Direct reads (chunked and contiguous layouts) and the fallback (compressed) agree with h5py."""
    x = np.random.default_rng(1).standard_normal((1000, 12)).astype(np.float32)
    rows = np.array([0, 3, 4, 255, 256, 511, 999])
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("chunked", data=x, chunks=(256, 12))
        f.create_dataset("contiguous", data=x)
        f.create_dataset("gzip", data=x, chunks=(100, 12), compression="gzip")
        f.create_dataset("big_endian", data=x.astype(">f4"), chunks=(64, 12))
        f.create_dataset("unwritten", shape=(1000, 12), dtype=np.float32, chunks=(256, 12), fillvalue=7.0)
    with h5py.File(tmp_path / "x.h5") as f:
        for name in ("chunked", "contiguous", "gzip", "big_endian"):
            with RowReader(f[name]) as read:
                np.testing.assert_array_equal(read(rows), x[rows])
                assert read.direct == (name != "gzip")
        with RowReader(f["unwritten"]) as read:
            np.testing.assert_array_equal(read(rows), np.full((len(rows), 12), 7.0, np.float32))
