"""EERCF rerank on top of an index (`pig rank --rerank K`, docs/method.md s.7) and the `--cost` report.

Expected scores are computed here in numpy (float64) from the extract file's frame and patch tokens
and the index embeddings, never with pigcli.model.eercf (whose units are in test_eercf.py):

    S_fw = sum_f (t.F_f) softmax_f((t.F)/0.01)       S_fs = t . norm(sum_f softmax_f((t.F)/0.1) F_f)
    S_pw = sum_p (t.P_p) softmax_p((t.P)/0.01)       S_coarse = e_t . e_v (the index score)
    reranked score = 0.8 S_fw + 0.2 S_fs + 0.2 S_pw + 0.5 S_coarse     (all tokens L2-normalised)

The CLI runs in-process (typer's CliRunner) as in test_stages.py.
"""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from conftest import TINY_DIM, TINY_L, TINY_P, TINY_T, VIDEO_FOLDER_SPECS
from test_stages import ids_of, pig, read  # the in-process CLI runner and file readers
N_VIDEOS = len(VIDEO_FOLDER_SPECS)
DEFAULT_W = dict(fw=0.8, fs=0.2, pw=0.2, coarse=0.5)


# --- helpers ----------------------------------------------------------------------------------------

def ranking(stdout: str) -> dict[str, list[tuple[str, float]]]:
    """TSV lines -> {query: [(video, score)] in rank order}; every line must be a result line."""
    out: dict[str, list] = {}
    for line in stdout.splitlines():
        query, rank, video, score = line.split("\t")
        items = out.setdefault(query, [])
        assert int(rank) == len(items) + 1
        items.append((video, float(score)))
    return out


def norm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def fine_numpy(text: np.ndarray, frames: np.ndarray, patches: np.ndarray | None,
               w_f: np.ndarray | None = None) -> dict[str, float]:
    """S_fw, S_fs and (with patches) S_pw of one text and one video, float64; w_f: a trained W_F [T, T]
    mixing S_fw's frame weights (a'_f = sum_g W_F[f, g] a_g); None: the identity."""
    t, f = norm(text), norm(frames)
    sims = f @ t
    weights = softmax(sims / 0.01)
    if w_f is not None:
        weights = np.asarray(w_f, np.float64) @ weights
    out = {"fw": float(sims @ weights), "fs": float(t @ norm(softmax(sims / 0.1) @ f))}
    if patches is not None and len(patches):
        sp = norm(patches) @ t
        out["pw"] = float(sp @ softmax(sp / 0.01))
    return out


def expected_rerank(q: dict, index: dict, feats: dict, coarse: dict, k: int, weights=DEFAULT_W,
                    patches: bool = True, w_f: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """{query: {video: combined score}} for the coarse top k of each query."""
    row_index = {v: i for i, v in enumerate(index["ids"])}
    row_feats = {v: i for i, v in enumerate(feats["ids"])}
    out = {}
    for qi, query in enumerate(q["ids"]):
        t = q["embedding"][qi]
        scores = {}
        for video, _ in coarse[query][:k]:
            r = row_feats[video]
            fine = fine_numpy(t, feats["frames"][r], feats["patches"][r] if patches else None, w_f)
            s_coarse = float(np.asarray(t, np.float64) @ np.asarray(index["embedding"][row_index[video]], np.float64))
            scores[video] = (weights["fw"] * fine["fw"] + weights["fs"] * fine["fs"]
                             + (weights["pw"] * fine["pw"] if patches else 0.0) + weights["coarse"] * s_coarse)
        out[query] = scores
    return out


def check_reranked(got: dict, coarse: dict, want: dict, k: int, top: int) -> int:
    """Asserts the rerank contract for every query; returns how many queries changed order in the top k."""
    moved = 0
    assert list(got) == list(coarse)
    for query, items in got.items():
        assert len(items) == len(coarse[query]) == top
        head, tail = items[:k], items[k:]
        assert sorted(v for v, _ in head) == sorted(v for v, _ in coarse[query][:k])      # a permutation
        assert tail == coarse[query][k:]                                                 # untouched below K
        for video, score in head:
            assert score == pytest.approx(want[query][video], abs=2e-5), (query, video)
        scores = [s for _, s in head]
        assert scores == sorted(scores, reverse=True)                                    # descending
        # the order is the numpy order wherever the expected scores are not near-tied
        exp = sorted(want[query].items(), key=lambda kv: -kv[1])
        for (va, sa), (vb, sb) in zip(exp, exp[1:]):
            if sa - sb > 1e-4:
                assert [v for v, _ in head].index(va) < [v for v, _ in head].index(vb)
        moved += [v for v, _ in head] != [v for v, _ in coarse[query][:k]]
    return moved


# --- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model_dir, tiny_extract):
    """select -> generate -> fuse (PIG index) from the session extract, a meanpool index, and q.h5."""
    from pigcli.stages.embed_text import embed_text
    from pigcli.stages.fuse import fuse
    from pigcli.stages.generate import generate
    from pigcli.stages.select import select

    root = tmp_path_factory.mktemp("rerank_chain")
    paths = SimpleNamespace(root=root, feats=tiny_extract, sel=root / "sel.h5", gen=root / "gen.h5",
                            index=root / "index.h5", mean=root / "mean.h5", q=root / "q.h5", model=tiny_model_dir)
    select(tiny_extract, paths.sel)
    generate(paths.sel, paths.gen, str(tiny_model_dir), device="cpu")
    fuse(paths.gen, paths.index, str(tiny_model_dir), device="cpu")
    fuse(tiny_extract, paths.mean, method="meanpool", device="cpu")
    text = root / "queries.txt"
    text.write_text("a red square moves left\nblue and green\na small dark box on a bright background\n"
                    "something bright in the corner\n")
    embed_text(text, paths.q, str(tiny_model_dir), device="cpu")
    return paths


@pytest.fixture(scope="module")
def no_patch(tmp_path_factory, tiny_model_dir, video_folder):
    """Extract of 4 of the videos with --patches none, and its meanpool index."""
    root = tmp_path_factory.mktemp("nopatch")
    videos = root / "videos"
    videos.mkdir()
    for name in list(VIDEO_FOLDER_SPECS)[:4]:
        shutil.copy(video_folder / name, videos / name)
    feats, index = root / "feats.h5", root / "mean.h5"
    code, _, err = pig("extract", videos, "-m", tiny_model_dir, "-o", feats, "--patches", "none",
                       "--workers", 0, "--device", "cpu")
    assert code == 0, err
    code, _, err = pig("fuse", feats, "--method", "meanpool", "-o", index, "--device", "cpu")
    assert code == 0, err
    return SimpleNamespace(feats=feats, index=index)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, video_folder):
    """A model whose EERCF head is not the identity (as after pig train --method eercf), 5 videos
    extracted with it, its meanpool and eercf indexes, and queries."""
    import torch

    from pigcli.model.checkpoint import load_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("trained_head")
    loaded = load_checkpoint(tiny_model_dir)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        loaded.model.eercf.w_f.copy_(torch.rand(TINY_T, TINY_T, generator=g))
        loaded.model.eercf.w_g.add_(0.3 * torch.randn(TINY_DIM, TINY_DIM, generator=g))
    model = save_checkpoint(loaded.model, loaded.tokenizer, root / "model")
    videos = root / "videos"
    videos.mkdir()
    for name in list(VIDEO_FOLDER_SPECS)[:5]:
        shutil.copy(video_folder / name, videos / name)
    paths = SimpleNamespace(model=model, feats=root / "feats.h5", mean=root / "mean.h5", eercf=root / "eercf.h5",
                            q=root / "q.h5", w_f=loaded.model.eercf.w_f.detach().numpy().astype(np.float64),
                            w_g=loaded.model.eercf.w_g.detach().numpy().astype(np.float64))
    for args in (("extract", videos, "-m", model, "-o", paths.feats, "--workers", 0, "--device", "cpu"),
                 ("fuse", paths.feats, "--method", "meanpool", "-o", paths.mean),
                 ("fuse", paths.feats, "--method", "eercf", "-o", paths.eercf),
                 ("embed-text", "-", "-m", model, "-o", paths.q, "--device", "cpu")):
        code, _, err = pig(*args, input="a red square moves left\nblue and green\nsomething bright\n")
        assert code == 0, err
    return paths


def run_rank(index, q, *extra) -> tuple[dict, str]:
    code, out, err = pig("rank", index, q, *extra)
    assert code == 0, err
    return ranking(out), out


# --- 1. the reranked ranking against numpy ------------------------------------------------------------

def test_rerank_scores_and_order_equal_numpy(chain) -> None:
    q = read(chain.q, "embedding")
    index = read(chain.index, "embedding")
    feats = read(chain.feats, "frames", "patches")
    assert feats["patches"].shape[1] == TINY_T * TINY_L
    top = N_VIDEOS
    coarse, coarse_out = run_rank(chain.index, chain.q, "--top", top)
    moved = 0
    for k in (2, 4):
        got, _ = run_rank(chain.index, chain.q, "--rerank", k, "--top", top)
        want = expected_rerank(q, index, feats, coarse, k)
        moved += check_reranked(got, coarse, want, k, top)
    assert moved > 0, "rerank never changed the coarse order: the test data do not exercise it"
    # K larger than the index: every video reranked
    got_all, _ = run_rank(chain.index, chain.q, "--rerank", 50, "--top", top)
    assert check_reranked(got_all, coarse, expected_rerank(q, index, feats, coarse, top), top, top) > 0
    # --top smaller than --rerank: the top of the K reranked (not a rerank of the top only)
    for short in (1, 2, 3):
        got, _ = run_rank(chain.index, chain.q, "--rerank", top, "--top", short)
        assert got == {query: items[:short] for query, items in got_all.items()}
    # only the coarse score: the coarse ranking, scores and all
    _, out = run_rank(chain.index, chain.q, "--rerank", 3, "--top", top,
                      "--w-coarse", 1, "--w-fw", 0, "--w-fs", 0, "--w-pw", 0)
    assert out == coarse_out
    # one fine term alone (S_pw): the numpy S_pw order
    only_pw = dict(fw=0.0, fs=0.0, pw=1.0, coarse=0.0)
    got, _ = run_rank(chain.index, chain.q, "--rerank", 4, "--top", top,
                      "--w-coarse", 0, "--w-fw", 0, "--w-fs", 0, "--w-pw", 1)
    check_reranked(got, coarse, expected_rerank(q, index, feats, coarse, 4, only_pw), 4, top)


# --- 2. only the candidates' rows are read ----------------------------------------------------------

def test_read_candidate_tokens_distinct_rows(chain) -> None:
    from pigcli.query.rerank import read_candidate_tokens

    feats = read(chain.feats, "frames", "patches")
    video_ids = read(chain.index)["ids"][::-1]                       # index rows != extract rows
    candidates = np.array([[4, 1, 5], [1, 4, 0]])
    tokens = read_candidate_tokens(chain.feats, video_ids, candidates)
    assert tokens.rows_read == len(np.unique(candidates)) == 4
    assert tokens.frames.shape == (4, TINY_T, TINY_DIM) and tokens.patches.shape == (4, TINY_T * TINY_L, TINY_DIM)
    assert tokens.local.shape == candidates.shape
    for qi in range(2):
        for ki in range(3):
            r = feats["ids"].index(video_ids[candidates[qi, ki]])
            np.testing.assert_array_equal(tokens.frames[tokens.local[qi, ki]], feats["frames"][r])
            np.testing.assert_array_equal(tokens.patches[tokens.local[qi, ki]], feats["patches"][r])


def test_candidate_rows_found_without_reading_every_id_when_rows_align(chain, monkeypatch) -> None:
    """Index rows = extract rows (no failed video): only the candidates' ids are read, to check."""
    import pigcli.query.rerank as rerank_module

    feats = read(chain.feats, "frames")
    candidates = np.array([[4, 1, 5]])
    video_ids = {r: feats["ids"][r] for r in (1, 4, 5)}              # as rank passes them: found rows only
    monkeypatch.setattr(rerank_module, "read_ids", lambda _: pytest.fail("read every id of the extract file"))
    tokens = rerank_module.read_candidate_tokens(chain.feats, video_ids, candidates)
    for ki, r in enumerate((4, 1, 5)):
        np.testing.assert_array_equal(tokens.frames[tokens.local[0, ki]], feats["frames"][r])


def _rows_of(key, length: int) -> list[int]:
    if isinstance(key, tuple):
        key = key[0]
    if isinstance(key, slice):
        return list(range(*key.indices(length)))
    if isinstance(key, (int, np.integer)):
        return [int(key)]
    return [int(x) for x in np.asarray(key).ravel()]


def test_rerank_reads_only_candidate_rows(chain, tmp_path, monkeypatch) -> None:
    import pigcli.query.rerank as rerank_module

    # an index whose rows are in the reverse order of the extract's: rows are found by id
    index = tmp_path / "reversed.h5"
    shutil.copy(chain.index, index)
    with h5py.File(index, "r+") as handle:
        ids = ids_of(handle)
        handle["ids"][...] = np.array(ids[::-1], dtype=object)
        handle["embedding"][...] = handle["embedding"][:][::-1]
    feats_ids = read(chain.feats)["ids"]
    coarse, _ = run_rank(index, chain.q, "--top", N_VIDEOS)

    requested: list[tuple[str, list[int]]] = []       # (dataset, rows) asked of take_rows in rerank.py
    real_take_rows = rerank_module.take_rows

    def recording_take_rows(dataset, rows):
        if dataset.name != "/ids":  # the ids of the candidates are read to find their rows
            requested.append((dataset.name, [int(r) for r in rows]))
        return real_take_rows(dataset, rows)

    reads: dict[str, list[int]] = {}                 # every h5py read of the extract's token datasets
    real_getitem, real_read_direct = h5py.Dataset.__getitem__, h5py.Dataset.read_direct
    feats_file = str(chain.feats.resolve())

    def record(dataset, key) -> None:
        if dataset.name in ("/frames", "/patches") and str(dataset.file.filename) in (feats_file, str(chain.feats)):
            reads.setdefault(dataset.name, []).extend(_rows_of(key, dataset.shape[0]))

    def recording_getitem(self, key, *args, **kwargs):
        record(self, key)
        return real_getitem(self, key, *args, **kwargs)

    def recording_read_direct(self, dest, source_sel=None, dest_sel=None):
        record(self, source_sel if source_sel is not None else slice(None))
        return real_read_direct(self, dest, source_sel, dest_sel)

    monkeypatch.setattr(rerank_module, "take_rows", recording_take_rows)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording_getitem)
    monkeypatch.setattr(h5py.Dataset, "read_direct", recording_read_direct)
    for k, top in ((2, N_VIDEOS), (1, 3)):
        requested.clear()
        reads.clear()
        got, _ = run_rank(index, chain.q, "--rerank", k, "--top", top, "--features", chain.feats)
        candidates = {v for items in coarse.values() for v, _ in items[:k]}
        assert len(candidates) < N_VIDEOS                     # the check below can tell "all rows" apart
        want_rows = sorted(feats_ids.index(v) for v in candidates)
        assert requested == [("/frames", want_rows), ("/patches", want_rows)]
        assert {name: sorted(rows) for name, rows in reads.items()} == dict(requested)  # nothing else read
        for query, items in got.items():
            assert sorted(v for v, _ in items[:k]) == sorted(v for v, _ in coarse[query][:k])


# --- 3. other indexes and extracts ------------------------------------------------------------------

def test_rerank_on_meanpool_index(chain) -> None:
    q = read(chain.q, "embedding")
    mean = read(chain.mean, "embedding")
    feats = read(chain.feats, "frames", "patches")
    coarse, _ = run_rank(chain.mean, chain.q, "--top", N_VIDEOS)
    got, _ = run_rank(chain.mean, chain.q, "--rerank", 3, "--top", N_VIDEOS)
    check_reranked(got, coarse, expected_rerank(q, mean, feats, coarse, 3), 3, N_VIDEOS)


def test_rerank_without_patches(chain, no_patch) -> None:
    q = read(chain.q, "embedding")
    mean = read(no_patch.index, "embedding")
    feats = read(no_patch.feats, "frames", "patches")
    assert feats["patches"].shape[1] == 0
    n = len(mean["ids"])
    coarse, _ = run_rank(no_patch.index, chain.q, "--top", n)
    got, _ = run_rank(no_patch.index, chain.q, "--rerank", 2, "--top", n)
    check_reranked(got, coarse, expected_rerank(q, mean, feats, coarse, 2, patches=False), 2, n)
    # --w-pw has nothing to weigh: the same ranking
    _, out_a = run_rank(no_patch.index, chain.q, "--rerank", 2, "--top", n)
    _, out_b = run_rank(no_patch.index, chain.q, "--rerank", 2, "--top", n, "--w-pw", 5)
    assert out_a == out_b


# --- 4. a trained head -------------------------------------------------------------------------------

def test_fuse_eercf_is_w_g_of_mean_normalised_frames(trained) -> None:
    feats = read(trained.feats, "frames")
    index = read(trained.eercf, "embedding")
    assert index["ids"] == feats["ids"]
    v = norm(norm(feats["frames"]).mean(axis=1))
    np.testing.assert_allclose(index["embedding"], v @ trained.w_g.T, atol=2e-5)
    assert '"method": "eercf"' in index["attrs"]["settings"]


def test_rerank_uses_the_trained_head_of_the_index_model(trained) -> None:
    q = read(trained.q, "embedding")
    feats = read(trained.feats, "frames", "patches")
    n = len(feats["ids"])
    for index_path in (trained.mean, trained.eercf):  # coarse: meanpool score, or EERCF's t . W_g v
        index = read(index_path, "embedding")
        coarse, _ = run_rank(index_path, trained.q, "--top", n)
        got, _ = run_rank(index_path, trained.q, "--rerank", 4, "--top", n)
        want = expected_rerank(q, index, feats, coarse, 4, w_f=trained.w_f)
        untrained = expected_rerank(q, index, feats, coarse, 4)
        assert max(abs(want[a][v] - untrained[a][v]) for a in want for v in want[a]) > 1e-3  # W_F matters here
        check_reranked(got, coarse, want, 4, n)
    # queries embedded on the fly load the whole model: the same head, the same ranking
    _, from_file = run_rank(trained.mean, trained.q, "--rerank", 4, "--top", n)
    code, on_the_fly, err = pig("rank", trained.mean, "--query", "a red square moves left", "--rerank", 4,
                                "--top", n)
    assert code == 0, err
    first = [line.split("\t")[1:] for line in from_file.splitlines() if line.startswith("q1\t")]
    assert first
    assert [line.split("\t")[1:3] for line in on_the_fly.splitlines()] == [f[:2] for f in first]


def test_rerank_needs_the_index_model(trained, chain, tmp_path) -> None:
    moved = tmp_path / "model"
    shutil.copytree(trained.model, moved)
    index = tmp_path / "mean.h5"
    shutil.copy(trained.mean, index)
    with h5py.File(index, "a") as handle:  # the recorded model folder is gone
        handle.attrs["model_path"] = str(tmp_path / "gone")
    code, _, err = pig("rank", index, trained.q, "--rerank", 2, "--features", trained.feats)
    assert code != 0 and "-m MODEL" in err
    code, _, err = pig("rank", index, trained.q, "--rerank", 2, "--features", trained.feats, "-m", moved)
    assert code == 0, err
    code, _, err = pig("rank", index, trained.q, "--rerank", 2, "--features", trained.feats, "-m", chain.model)
    assert code != 0 and "was made with model" in err
    # tokens from another model's extract file are refused, not scored
    code, _, err = pig("rank", trained.mean, trained.q, "--rerank", 2, "--features", chain.feats)
    assert code != 0 and str(chain.feats) in err and "was made with model" in err


def test_eval_rerank_equals_the_ranks_of_rank_rerank(trained, tmp_path) -> None:
    import json

    feats = read(trained.feats)
    videos = feats["ids"]
    texts = ["a red square moves left", "blue and green", "something bright", "a dark box", "colours change"]
    captions = tmp_path / "captions.csv"
    captions.write_text("video_id,caption\n" + "".join(f"{v},{t}\n" for v, t in zip(videos, texts)))
    queries = tmp_path / "queries.txt"
    queries.write_text("".join(t + "\n" for t in texts))
    for k in (0, 3):
        code, out, err = pig("rank", trained.mean, "--queries", queries, "--rerank", k, "--top", len(videos))
        assert code == 0, err
        got = ranking(out)
        ranks = [1 + [v for v, _ in got[f"q{i + 1}"]].index(video) for i, video in enumerate(videos)]
        code, out, err = pig("eval", trained.mean, "--captions", captions, "--rerank", k, "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["rerank"] == k and ("v2t" in report) == (k == 0)
        assert report["t2v"]["R@1"] == pytest.approx(100.0 * np.mean(np.array(ranks) == 1))
        assert report["t2v"]["MnR"] == pytest.approx(np.mean(ranks))
    code, _, err = pig("eval", trained.mean, "--captions", captions, "--rerank", 3, "--dsl")
    assert code == 2 and "--dsl" in err


def test_rerank_without_a_number_takes_k_50(trained) -> None:
    n = len(read(trained.feats)["ids"])
    _, with_50 = run_rank(trained.mean, trained.q, "--rerank", 50, "--top", n)
    _, attached = run_rank(trained.mean, trained.q, "--rerank=50", "--top", n)
    _, bare_last = run_rank(trained.mean, trained.q, "--top", n, "--rerank")
    _, bare_before_option = run_rank(trained.mean, trained.q, "--rerank", "--top", n)
    _, bare_first = run_rank("--rerank", trained.mean, trained.q, "--top", n)
    _, coarse = run_rank(trained.mean, trained.q, "--top", n)
    assert with_50 == attached == bare_last == bare_before_option == bare_first != coarse


# --- 5. --cost -----------------------------------------------------------------------------------------

def parse_costs(stderr: str) -> dict[str, int]:
    """{method: multiply-adds} from the --cost table."""
    out = {}
    for line in stderr.splitlines():
        m = re.match(r"^(index scan \(meanpool = PIG\)|index scan \+ EERCF rerank \d+|xpool \(single tower\))"
                     r"\s+([\d,]+)\s", line)
        if m:
            out[m.group(1)] = int(m.group(2).replace(",", ""))
    return out


def test_cost_report(chain) -> None:
    from pigcli.core.cost import xpool_macs

    k, n, d = 3, N_VIDEOS, TINY_DIM
    _, plain = run_rank(chain.index, chain.q, "--rerank", k, "--top", 4)
    code, out, err = pig("rank", chain.index, chain.q, "--rerank", k, "--top", 4, "--cost")
    assert code == 0, err
    assert out == plain                                                # stdout: only the ranking
    ranking(out)
    assert f"online cost per query, {n} videos" in err
    costs = parse_costs(err)
    assert set(costs) == {"index scan (meanpool = PIG)", f"index scan + EERCF rerank {k}", "xpool (single tower)"}
    assert costs["index scan (meanpool = PIG)"] == n * d
    keys = 1 + TINY_P + TINY_T                                         # video, proxy and frame tokens
    assert costs["xpool (single tower)"] == n * (3 * d * d + 2 * keys * d + d) == xpool_macs(n, keys, d)
    assert xpool_macs(n, keys, d, cached_keys=False) == n * (2 * keys * d * d + 3 * d * d + 2 * keys * d + d)
    t, np_ = TINY_T, TINY_T * TINY_L
    per_candidate = t * d + t * t + t + t * d + 2 * d + np_ * d + np_
    assert costs[f"index scan + EERCF rerank {k}"] == n * d + k * per_candidate
    # the meanpool index over the same videos: the same scan cost (default K = 50, capped at N)
    code, out_mean, err_mean = pig("rank", chain.mean, chain.q, "--top", 4, "--cost")
    assert code == 0, err_mean
    ranking(out_mean)
    mean_costs = parse_costs(err_mean)
    assert mean_costs["index scan (meanpool = PIG)"] == costs["index scan (meanpool = PIG)"]
    assert mean_costs["xpool (single tower)"] == costs["xpool (single tower)"]
    assert mean_costs["index scan + EERCF rerank 50"] == n * d + n * per_candidate


def test_cost_without_patches(chain, no_patch) -> None:
    code, out, err = pig("rank", no_patch.index, chain.q, "--rerank", 2, "--top", 2, "--cost")
    assert code == 0, err
    ranking(out)
    n, d, t = 4, TINY_DIM, TINY_T
    costs = parse_costs(err)
    assert costs["index scan (meanpool = PIG)"] == n * d
    assert costs["index scan + EERCF rerank 2"] == n * d + 2 * (t * d + t * t + t + t * d + 2 * d)


# --- 5. usage errors ---------------------------------------------------------------------------------

def test_rerank_with_xpool_is_usage_error(chain) -> None:
    code, out, err = pig("rank", chain.index, chain.q, "--method", "xpool", "--rerank", 3)
    assert code == 2 and out == ""
    assert "--rerank" in err and "xpool" in err


@pytest.mark.parametrize("value", [["--rerank", "-1"], ["--rerank=-1"]])
def test_negative_rerank_is_usage_error(chain, value) -> None:
    code, out, err = pig("rank", chain.index, chain.q, *value)
    assert code == 2 and out == ""
    assert "--rerank" in err
