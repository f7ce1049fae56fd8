"""The per-video and per-query stages (select, generate, fuse, embed-text, rank, eval) against direct computations.

Every expected value here is computed in the test from the stage files and the model weights, with
numpy or a plain model call, never by calling the stage code that made the file. The CLI is run
in-process (typer's CliRunner: separate stdout and stderr, exit codes) to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_DIM, TINY_L, TINY_P, TINY_T
from pigcli.cli import app
from pigcli.errors import PigError
from pigcli.core.metrics import dsl, retrieval_metrics

CLEAN_ENV = {"PIG_INDEX": None, "PIG_MODEL": None, "PIG_QUIET": None, "PIG_DEBUG": None}


# --- helpers ----------------------------------------------------------------------------------------

def pig(*args, env: dict | None = None, input: bytes | str | None = None) -> tuple[int, str, str]:
    """`pig ARGS` in-process -> (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})}, input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def ids_of(handle) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in handle["ids"][:]]


def read(path, *names) -> dict:
    with h5py.File(path, "r") as handle:
        out = {"ids": ids_of(handle), "attrs": dict(handle.attrs)}
        for name in names:
            out[name] = handle[name][:]
    return out


def expected_text_embedding(loaded, text: str, max_tokens: int = 50) -> np.ndarray:
    """e_t from the tokenizer's ids, truncated by hand to [BOS, first max-2 tokens, EOS], no padding."""
    tokenizer = loaded.tokenizer
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    if len(ids) > max_tokens:
        ids = ids[: max_tokens - 1] + [tokenizer.eos_token_id]
    with torch.no_grad():
        return loaded.model.encode_text(torch.tensor([ids]))[0].numpy()


def parse_tsv(stdout: str) -> list[tuple[str, int, str, float]]:
    rows = []
    for line in stdout.splitlines():
        query, rank, video, score = line.split("\t")      # every line must be a result line
        rows.append((query, int(rank), video, float(score)))
    return rows


def by_query(rows) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list] = {}
    for query, rank, video, score in rows:
        out.setdefault(query, []).append((rank, video, score))
    for query, items in out.items():
        assert [r for r, _, _ in items] == list(range(1, len(items) + 1)), f"ranks of {query} not 1..n"
        out[query] = [(v, s) for _, v, s in items]
    return out


def brute_force(e_t: np.ndarray, e_v: np.ndarray, video_ids: list[str], k: int):
    """Per query: [(video id, score)] by descending score, ties to the lower index row."""
    # elementwise products summed per pair (not a BLAS matmul, whose summation order can differ between
    # columns): identical index rows then get bit-identical scores
    scores = (e_t.astype(np.float64)[:, None, :] * e_v.astype(np.float64)[None, :, :]).sum(-1)
    out = []
    for row in scores:
        order = np.lexsort((np.arange(len(row)), -row))[:k]
        out.append([(video_ids[j], row[j]) for j in order])
    return out


def assert_same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]], atol: float = 2e-5) -> None:
    assert [v for v, _ in got] == [v for v, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=atol)


# --- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model_dir, tiny_extract):
    """select (model default k) -> generate -> fuse (pig) from the session extract; meanpool index too."""
    from pigcli.stages.fuse import fuse
    from pigcli.stages.generate import generate
    from pigcli.stages.select import select

    root = tmp_path_factory.mktemp("chain")
    paths = SimpleNamespace(root=root, feats=tiny_extract, sel=root / "sel.h5", gen=root / "gen.h5",
                            index=root / "index.h5", mean=root / "mean.h5", model=tiny_model_dir)
    select(tiny_extract, paths.sel)
    generate(paths.sel, paths.gen, str(tiny_model_dir), device="cpu")
    fuse(paths.gen, paths.index, str(tiny_model_dir), device="cpu")
    fuse(tiny_extract, paths.mean, method="meanpool", device="cpu")
    return paths


@pytest.fixture(scope="module")
def queries(chain, tiny_model_dir):
    """q.h5 of three queries, made with the tiny model."""
    from pigcli.stages.embed_text import embed_text

    text = chain.root / "queries.txt"
    text.write_text("a red square moves left\nblue and green\na small dark box on a bright background\n")
    out = chain.root / "q.h5"
    embed_text(text, out, str(tiny_model_dir), device="cpu")
    return out


@pytest.fixture(scope="module")
def model_b(tmp_path_factory, tiny_model_dir):
    """Another model: the tiny model with a changed generator and fusioner (so another content hash)."""
    from pigcli.model.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(tiny_model_dir)
    with torch.no_grad():
        loaded.model.generator.mapper.weight.mul_(1.5)
        loaded.model.fusioner.linear.weight.mul_(0.5)
    path = save_checkpoint(loaded.model, loaded.tokenizer, tmp_path_factory.mktemp("models_b") / "model_b",
                           name="model_b")
    assert load_checkpoint(path).identity.hash != load_checkpoint(tiny_model_dir).identity.hash
    return path


# --- select -----------------------------------------------------------------------------------------

def test_select_is_joint_top_k_of_stored_scores(chain) -> None:
    feats = read(chain.feats, "its_score", "patches", "patch_index", "video", "proxies", "frames", "status")
    sel = read(chain.sel, "selected_index", "selected_score", "selected", "video", "proxies", "frames")
    k = 16                                                      # the tiny model's default select_k
    assert sel["selected_index"].shape == (6, k)
    assert json.loads(sel["attrs"]["settings"]) == {"k": k}
    row_of = {vid: i for i, vid in enumerate(feats["ids"])}
    assert sorted(sel["ids"]) == sorted(feats["ids"])
    frames_hit = set()
    for i, vid in enumerate(sel["ids"]):
        r = row_of[vid]
        score = feats["its_score"][r]
        assert score.shape == (TINY_T * TINY_L,)
        want = np.argsort(-score, kind="stable")[:k]
        want_py = sorted(range(len(score)), key=lambda j: (-score[j], j))[:k]
        np.testing.assert_array_equal(want, want_py)
        np.testing.assert_array_equal(sel["selected_index"][i], want)
        np.testing.assert_array_equal(sel["selected_score"][i], score[want])
        assert score[want].min() >= np.delete(score, want).max()  # jointly over all frames
        # every patch kept ('all'): stored row position == flat patch index
        np.testing.assert_array_equal(feats["patch_index"][r], np.arange(TINY_T * TINY_L))
        np.testing.assert_array_equal(sel["selected"][i], feats["patches"][r][want].astype(np.float32))
        for name in ("video", "proxies", "frames"):
            np.testing.assert_array_equal(sel[name][i], feats[name][r])
        frames_hit.update((want // TINY_L).tolist())
    assert len(frames_hit) > 1  # not all from one frame (a per-frame bug would also show in the equality)


def test_select_random_patches_is_the_ablation_of_its(chain, tmp_path) -> None:
    """--selector random: k distinct patches per video, fixed by the video (its scores), not the top k."""
    code, out, err = pig("select", chain.feats, "-k", 6, "--selector", "random", "-o", tmp_path / "rand.h5")
    assert code == 0, err
    feats, rand = read(chain.feats, "its_score"), read(tmp_path / "rand.h5", "selected_index")
    assert json.loads(rand["attrs"]["settings"]) == {"k": 6, "selector": "random"}
    row_of = {vid: i for i, vid in enumerate(feats["ids"])}
    not_top = 0
    for i, vid in enumerate(rand["ids"]):
        chosen, score = rand["selected_index"][i], feats["its_score"][row_of[vid]]
        assert len(set(chosen.tolist())) == 6 and chosen.max() < len(score)
        not_top += set(chosen.tolist()) != set(np.argsort(-score, kind="stable")[:6].tolist())
    assert not_top == len(rand["ids"])
    assert pig("select", chain.feats, "-k", 6, "--selector", "random", "-o", tmp_path / "again.h5")[0] == 0
    np.testing.assert_array_equal(read(tmp_path / "again.h5", "selected_index")["selected_index"], rand["selected_index"])


@pytest.fixture(scope="module")
def topn_extract(tmp_path_factory, tiny_model_dir):
    """3 good videos + 1 unreadable file, extracted keeping only the top-20 patches by ITS score."""
    from conftest import write_broken, write_test_video
    from pigcli.stages.extract import ExtractSettings, extract

    root = tmp_path_factory.mktemp("topn")
    for n in range(3):
        write_test_video(root / "videos" / f"v{n}.mp4", 16, 48, 64, seed=20 + n)
    write_broken("garbage", root / "videos" / "broken.mp4")
    out = root / "feats.h5"
    summary = extract([root / "videos"], out, str(tiny_model_dir), settings=ExtractSettings(patches="top-20"),
                      device="cpu", workers=0)
    assert summary.failed == 1
    return out


def test_select_from_top_n_patches_drops_failed_videos(topn_extract, tmp_path) -> None:
    code, _, err = pig("select", topn_extract, "-k", 12, "-o", tmp_path / "sel.h5")
    assert code == 0, err
    feats = read(topn_extract, "its_score", "patches", "patch_index", "status")
    sel = read(tmp_path / "sel.h5", "selected_index", "selected")
    status = [s.decode() if isinstance(s, bytes) else s for s in feats["status"]]
    assert status.count("failed") == 1
    good = [vid for vid, s in zip(feats["ids"], status) if s == "ok"]
    assert sel["ids"] == good and "broken" not in sel["ids"]
    assert feats["patch_index"].shape[1] == 20
    for i, vid in enumerate(sel["ids"]):
        r = feats["ids"].index(vid)
        want = sorted(range(TINY_T * TINY_L), key=lambda j: (-feats["its_score"][r][j], j))[:12]
        np.testing.assert_array_equal(sel["selected_index"][i], want)
        stored = list(feats["patch_index"][r])
        np.testing.assert_array_equal(sel["selected"][i],
                                      np.stack([feats["patches"][r][stored.index(j)] for j in want]).astype(np.float32))
    # meanpool index from the same file: failed row left out too
    code, _, err = pig("fuse", topn_extract, "--method", "meanpool", "-o", tmp_path / "mean.h5")
    assert code == 0, err
    assert read(tmp_path / "mean.h5")["ids"] == good


def test_select_refuses_k_above_kept_patches(topn_extract, tmp_path) -> None:
    code, out, err = pig("select", topn_extract, "-k", 24, "-o", tmp_path / "sel.h5")
    assert code == 1 and out == ""
    assert "--patches" in err and "20" in err
    assert not (tmp_path / "sel.h5").exists()
    from pigcli.stages.select import select

    with pytest.raises(PigError, match="--patches"):
        select(topn_extract, tmp_path / "sel2.h5", k=21)


def _damaged_extract(source, path, how: str):
    shutil.copy(source, path)
    with h5py.File(path, "a") as handle:
        if how == "patch_index":  # rows that no longer hold the patches its_score chooses
            handle["patch_index"][:] = 0
        elif how == "shape":
            del handle["its_score"]
            handle["its_score"] = np.zeros(handle["ids"].shape[0], np.float32)
        elif how == "missing":
            del handle["patches"]
        else:  # fewer rows in one dataset than ids
            data = handle["frames"][:-1]
            del handle["frames"]
            handle["frames"] = data
    return path


@pytest.mark.parametrize("how, detail", [
    ("patch_index", r"video '\w+': its patch_index lacks patch \d+, which its its_score chooses"),
    ("shape", r"'its_score' has shape \(\d+,\), expected 2 dimensions"),
    ("missing", r"no 'patches' dataset"),
    ("rows", r"'frames' has \d+ rows, 'ids' \d+"),
])
def test_select_on_a_damaged_extract_file_says_which_file_and_what_to_rerun(tiny_extract, tiny_model_dir, tmp_path,
                                                                            how, detail) -> None:
    import re

    damaged = _damaged_extract(tiny_extract, tmp_path / "feats.h5", how)
    code, out, err = pig("select", damaged, "-m", tiny_model_dir, "-o", tmp_path / "sel.h5")
    assert code == 1 and out == "", err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(f"^error: {re.escape(str(damaged))} is damaged or not a complete extract file \\({detail}\\); "
                     r"rerun: pig extract VIDEOS -m MODEL -o feats\.h5 --force$", err.strip()), err
    assert "KeyError" not in err and "IndexError" not in err
    assert not (tmp_path / "sel.h5").exists()


def test_a_missing_recorded_model_is_an_error_that_says_to_pass_m(tiny_extract, tiny_model_dir, tmp_path) -> None:
    """Stages after extract default to the model the file records; when that folder is gone they say so
    (before, select silently fell back to pig's default k)."""
    import shutil

    moved = tmp_path / "feats.h5"
    shutil.copy(tiny_extract, moved)
    with h5py.File(moved, "a") as handle:
        handle.attrs["model_path"] = str(tmp_path / "deleted-model")
    code, out, err = pig("select", moved, "-o", tmp_path / "sel.h5")
    assert code == 1 and out == ""
    assert "deleted-model is gone; pass -m MODEL" in err and err.count("\n") == 1
    assert not (tmp_path / "sel.h5").exists()
    assert pig("select", moved, "-m", tiny_model_dir, "-o", tmp_path / "sel.h5")[0] == 0
    assert read(tmp_path / "sel.h5", "selected_index")["selected_index"].shape[1] == 16  # the model's k
    assert pig("select", moved, "-k", 4, "-o", tmp_path / "sel4.h5")[0] == 0  # -k needs no model


# --- generate and fuse ------------------------------------------------------------------------------

def test_generate_file_equals_model_generate(chain, tiny_model) -> None:
    sel = read(chain.sel, "video", "proxies", "frames", "selected")
    gen = read(chain.gen, "pseudo_query", "video", "proxies", "frames")
    tokens = np.concatenate([sel["video"][:, None], sel["proxies"], sel["frames"], sel["selected"]], axis=1)
    assert tokens.shape == (6, 1 + TINY_P + TINY_T + 16, TINY_DIM)
    with torch.no_grad():
        want = tiny_model.model.generate(torch.from_numpy(tokens)).numpy()
    for i, vid in enumerate(gen["ids"]):
        j = sel["ids"].index(vid)
        np.testing.assert_allclose(gen["pseudo_query"][i], want[j], atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(gen["frames"][i], sel["frames"][j])
    assert not np.allclose(want[0], want[1])  # the pseudo-query depends on the video


def test_fuse_pig_equals_model_fuse(chain, tiny_model) -> None:
    gen = read(chain.gen, "pseudo_query", "video", "proxies", "frames")
    index = read(chain.index, "embedding")
    assert json.loads(index["attrs"]["settings"])["method"] == "pig"
    with torch.no_grad():
        want = tiny_model.model.fuse(*(torch.from_numpy(gen[n]) for n in ("pseudo_query", "video", "proxies",
                                                                            "frames"))).numpy()
    for i, vid in enumerate(index["ids"]):
        np.testing.assert_allclose(index["embedding"][i], want[gen["ids"].index(vid)], atol=1e-5, rtol=1e-5)
    assert index["embedding"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(index["embedding"], axis=1), 1.0, atol=1e-5)


def test_fuse_meanpool_is_norm_of_mean_frames(chain) -> None:
    feats = read(chain.feats, "frames")
    mean = read(chain.mean, "embedding")
    for i, vid in enumerate(mean["ids"]):
        m = feats["frames"][feats["ids"].index(vid)].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(mean["embedding"][i], m / np.linalg.norm(m), atol=1e-6)
    assert sorted(mean["ids"]) == sorted(feats["ids"])


def test_take_rows_reads_scattered_rows_of_an_hdf5_dataset(tmp_path) -> None:
    from pigcli.store import take_rows

    data = np.arange(40 * 3 * 2, dtype=np.float32).reshape(40, 3, 2)
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        handle.create_dataset("x", data=data, chunks=(8, 3, 2))
    with h5py.File(tmp_path / "x.h5", "r", rdcc_nbytes=0) as handle:
        for rows in ([0], [5, 6, 7], [0, 2, 3, 4, 9, 17, 18, 39], [39], list(range(0, 40, 3)), []):
            got = take_rows(handle["x"], np.array(rows, dtype=np.int64))
            np.testing.assert_array_equal(got, data[rows])
            assert got.dtype == data.dtype and got.shape == (len(rows), 3, 2)


def test_fuse_stores_row_norm_bounds_that_rank_uses(chain, monkeypatch) -> None:
    """/norm: per row, float32 never below the float64 norm of the stored row and at most 2 ulps above."""
    import pigcli.core.search as search
    from pigcli.query.scoring import rank_index

    for path in (chain.index, chain.mean):
        got = read(path, "embedding", "norm")
        exact = np.linalg.norm(got["embedding"].astype(np.float64), axis=1)
        assert got["norm"].dtype == np.float32 and np.all(got["norm"] >= exact)
        assert np.all(got["norm"] <= np.nextafter(np.nextafter(exact.astype(np.float32), np.inf), np.inf))
    embedding = read(chain.index, "embedding")["embedding"]
    queries = embedding[:3] + 0.01
    want = np.argsort(-(queries.astype(np.float64) @ embedding.astype(np.float64).T), axis=1, kind="stable")[:, :4]
    monkeypatch.setattr(search, "_max_row_norm", lambda _: pytest.fail("rank computed block norms"))
    _, rows = rank_index(chain.index, queries, 4)
    np.testing.assert_array_equal(rows, want)


def test_fuse_refuses_nan_embeddings_in_one_line(tiny_extract, tmp_path, monkeypatch) -> None:
    """A NaN or inf index row has no score to rank by: fuse writes no index and names the rows."""
    import pigcli.stages.fuse as fuse_stage

    real = fuse_stage.video_embedding

    def broken(*args, **kwargs):
        out = real(*args, **kwargs).clone()
        out[1], out[3, 0] = float("nan"), float("inf")
        return out

    monkeypatch.setattr(fuse_stage, "video_embedding", broken)
    output = tmp_path / "mean.h5"
    code, out, err = pig("fuse", tiny_extract, "--method", "meanpool", "-o", output)
    ids = read(tiny_extract)["ids"]
    assert code == 1 and out == "", err
    assert err.count("\n") == 1 and err.startswith("error: 2 videos in rows 0-")
    assert f"({ids[1]}, {ids[3]})" in err and "NaN or inf" in err
    assert not output.exists()


# --- embed-text -------------------------------------------------------------------------------------

def _check_embeddings(path, tiny_model, want_ids: list[str], want_texts: list[str]) -> None:
    got = read(path, "embedding", "text")
    assert got["ids"] == want_ids
    assert [t.decode() if isinstance(t, bytes) else t for t in got["text"]] == want_texts
    for row, text in zip(got["embedding"], want_texts):
        np.testing.assert_allclose(row, expected_text_embedding(tiny_model, text), atol=1e-5)


def test_embed_text_file_with_blank_lines_and_bad_bytes(tmp_path, tiny_model_dir, tiny_model) -> None:
    source = tmp_path / "queries.txt"
    source.write_bytes(b"a dog runs\n\n  \ncaf\xff\xfe on a street\nred car\n")
    code, out, err = pig("embed-text", source, "-m", tiny_model_dir, "-o", tmp_path / "q.h5")
    assert code == 0, err
    assert out == f"{tmp_path / 'q.h5'}\n"
    assert "invalid UTF-8 in 1 line: 4" in err
    assert "2 blank lines: 2, 3" in err
    bad = b"caf\xff\xfe on a street".decode("utf-8", "replace")
    _check_embeddings(tmp_path / "q.h5", tiny_model, ["q1", "q4", "q5"], ["a dog runs", bad, "red car"])


def test_embed_text_from_stdin(tmp_path, tiny_model_dir, tiny_model) -> None:
    code, _, err = pig("embed-text", "-", "-m", tiny_model_dir, "-o", tmp_path / "q.h5",
                       input=b"first query\nthe second one\n")
    assert code == 0, err
    _check_embeddings(tmp_path / "q.h5", tiny_model, ["q1", "q2"], ["first query", "the second one"])


def test_embed_text_csv_with_ids(tmp_path, tiny_model_dir, tiny_model) -> None:
    source = tmp_path / "queries.csv"
    source.write_text('id,text\nalpha,a dog\nbeta,"a cat, sleeping"\n')
    code, _, err = pig("embed-text", source, "-m", tiny_model_dir, "-o", tmp_path / "q.h5")
    assert code == 0, err
    _check_embeddings(tmp_path / "q.h5", tiny_model, ["alpha", "beta"], ["a dog", "a cat, sleeping"])


def test_embed_text_truncates_long_queries_and_says_so(tmp_path, tiny_model_dir, tiny_model) -> None:
    long_text = "a very long query " * 8                       # ~145 byte tokens > 50
    source = tmp_path / "queries.csv"
    source.write_text(f"id,text\nshort,a dog\nlong,{long_text}\n")
    code, _, err = pig("embed-text", source, "-m", tiny_model_dir, "-o", tmp_path / "q.h5")
    assert code == 0, err
    assert "truncated" in err and "long" in err and "50" in err and "short" not in err.split("truncated")[1]
    got = read(tmp_path / "q.h5", "embedding", "truncated")
    assert got["truncated"].tolist() == [False, True]
    np.testing.assert_allclose(got["embedding"][1], expected_text_embedding(tiny_model, long_text.strip()), atol=1e-5)
    # --max-tokens changes where it is cut
    code, _, err = pig("embed-text", source, "-m", tiny_model_dir, "-o", tmp_path / "q8.h5", "--max-tokens", 8)
    assert code == 0, err
    got8 = read(tmp_path / "q8.h5", "embedding", "truncated")
    assert got8["truncated"].tolist() == [False, True]  # "a dog": 4 byte tokens + BOS/EOS
    np.testing.assert_allclose(got8["embedding"][1], expected_text_embedding(tiny_model, long_text.strip(), 8),
                               atol=1e-5)


# --- rank -------------------------------------------------------------------------------------------

def _index_with(chain, tmp_path, name: str, edit) -> "os.PathLike":
    path = tmp_path / name
    shutil.copy(chain.index, path)
    with h5py.File(path, "r+") as handle:
        emb = handle["embedding"][:]
        handle["embedding"][...] = edit(emb)
    return path


def test_rank_equals_brute_force_with_ties(chain, queries, tmp_path) -> None:
    def duplicate(emb):
        emb[4] = emb[1]
        return emb

    index = _index_with(chain, tmp_path, "dup.h5", duplicate)
    e_v = read(index, "embedding")
    q = read(queries, "embedding")
    for top, flag in ((6, "--top"), (3, "-n")):
        code, out, err = pig("rank", index, queries, flag, top)
        assert code == 0, err
        got = by_query(parse_tsv(out))
        assert list(got) == q["ids"]
        want = brute_force(q["embedding"], e_v["embedding"], e_v["ids"], top)
        for qi, query in enumerate(q["ids"]):
            assert_same_ranking(got[query], want[qi])
        if top == 6:
            for query in q["ids"]:
                order = [v for v, _ in got[query]]
                assert order.index(e_v["ids"][1]) == order.index(e_v["ids"][4]) - 1  # tied: lower row first
    # every video identical: the order is the index's row order
    same = _index_with(chain, tmp_path, "same.h5", lambda emb: np.repeat(emb[2:3], len(emb), axis=0))
    code, out, err = pig("rank", same, queries, "--top", 6)
    assert code == 0, err
    for items in by_query(parse_tsv(out)).values():
        assert [v for v, _ in items] == e_v["ids"]


def test_rank_formats(chain, queries) -> None:
    results = {}
    for fmt in ("tsv", "jsonl", "trec"):
        code, out, err = pig("rank", chain.index, queries, "-n", 4, "--format", fmt)
        assert code == 0, err
        rows = []
        for line in out.splitlines():
            if fmt == "tsv":
                query, rank, video, score = line.split("\t")
            elif fmt == "jsonl":
                obj = json.loads(line)
                assert set(obj) == {"query", "query_id", "rank", "video", "score"}
                query, rank, video, score = obj["query_id"], obj["rank"], obj["video"], obj["score"]
            else:
                query, q0, video, rank, score, run = line.split(" ")
                assert q0 == "Q0" and run
            rows.append((query, int(rank), video, round(float(score), 5)))
        assert len(rows) == 3 * 4
        results[fmt] = rows
    assert results["tsv"] == results["jsonl"] == results["trec"]


def test_rank_trecvid_topics_to_a_run_that_pig_eval_scores(chain, tmp_path) -> None:
    # TRECVID topics (XML) -> a TREC run with the topic ids and the run tag, --top 1000 on a small
    # index giving every row; the same scores as the topic texts asked with --query; then pig eval
    # --qrels on that run gives trec_eval's AP where every shot is judged.
    import pytrec_eval

    topics = tmp_path / "topics.xml"
    topics.write_text('<videoAdhocSearchTopics>\n<videoAdhocSearchTopic num="1701" text="a red square moves left"/>\n'
                      '<videoAdhocSearchTopic num="1702" text="blue and green"/>\n</videoAdhocSearchTopics>\n')
    run = tmp_path / "run.txt"
    code, out, err = pig("rank", chain.index, "--topics", topics, "-n", 1000, "-f", "trec", "--run-tag", "F-Pig",
                         "-o", run)
    assert code == 0, err
    lines = [line.split() for line in run.read_text().splitlines()]
    videos = read(chain.index)["ids"]
    assert [f[0] for f in lines] == ["1701"] * len(videos) + ["1702"] * len(videos)
    assert {f[5] for f in lines} == {"F-Pig"} and {f[1] for f in lines} == {"Q0"}
    code, out, err = pig("rank", chain.index, "-q", "blue and green", "-n", 1000, "-f", "trec")
    assert [f[2:5] for f in lines if f[0] == "1702"] == [line.split()[2:5] for line in out.splitlines()]
    qrels = tmp_path / "qrels"
    qrels.write_text("".join(f"{topic} 1 {video} {int(i % 3 == j)}\n" for j, topic in enumerate(("1701", "1702"))
                             for i, video in enumerate(videos)))
    code, out, err = pig("eval", run, "--qrels", qrels, "--json")
    assert code == 0, err
    report = json.loads(out)
    judged = {t: {v: int(r) for t2, _, v, r in map(str.split, qrels.read_text().splitlines()) if t2 == t}
              for t in ("1701", "1702")}
    scored = {t: {f[2]: float(f[4]) for f in lines if f[0] == t} for t in ("1701", "1702")}
    want = pytrec_eval.RelevanceEvaluator(judged, {"map"}).evaluate(scored)
    assert report["complete_judgements"] and report["topics"] == 2
    for topic in ("1701", "1702"):
        assert report["per_topic"][topic]["AP"] == want[topic]["map"]
        assert report["per_topic"][topic]["infAP"] == pytest.approx(want[topic]["map"], abs=1e-4)


ODD_IDS = ["clip\t0021 é", "a\nb", "c\rd", "sp ace", "back\\slash", "50%", "nb\u00a0sp\x1f"]


def _odd_ranking():
    from pigcli.query.rank import Ranking

    videos = list(reversed(ODD_IDS))
    rows = np.array([[0, 1, 2], [3, 4, 5], [6, 0, 1]] + [[2, 3, 4]] * (len(ODD_IDS) - 3))
    scores = np.tile(np.array([0.5, 0.25, -0.125], np.float32), (len(ODD_IDS), 1))
    return Ranking(list(ODD_IDS), videos, rows, scores), [
        (q, rank, videos[r], float(s)) for q, qrows, qscores in zip(ODD_IDS, rows, scores)
        for rank, (r, s) in enumerate(zip(qrows, qscores), start=1)]


def _parse_ranking(fmt: str, text: str) -> list[tuple]:
    from urllib.parse import unquote

    from pigcli.query.rank import tsv_unescape

    rows = []
    assert text.endswith("\n")
    for line in text.split("\n")[:-1]:  # only \n ends a row: a raw CR or tab inside an id is a bug
        if fmt == "tsv":
            fields = line.split("\t")
            assert len(fields) == 4, line
            query, rank, video, score = tsv_unescape(fields[0]), fields[1], tsv_unescape(fields[2]), fields[3]
        elif fmt == "jsonl":
            obj = json.loads(line)
            query, rank, video, score = obj["query_id"], obj["rank"], obj["video"], obj["score"]
        else:
            fields = line.split()
            assert len(fields) == 6 and fields[1] == "Q0" and fields[5] == "pig", line
            assert " ".join(fields) == line  # single spaces, nothing else
            query, video, rank, score = unquote(fields[0]), unquote(fields[2]), fields[3], fields[4]
        rows.append((query, int(rank), video, float(score)))
    return rows


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "trec"])
def test_rank_formats_give_back_ids_with_tabs_newlines_and_spaces(fmt) -> None:
    import io

    from pigcli.query.rank import write_ranking

    ranking, want = _odd_ranking()
    stream = io.StringIO(newline="")
    write_ranking(ranking, fmt, stream)
    assert _parse_ranking(fmt, stream.getvalue()) == want


def test_rank_query_on_the_fly_equals_query_file(chain, tmp_path, tiny_model_dir) -> None:
    text = "a bright square in the corner"
    (tmp_path / "one.txt").write_text(text + "\n")
    code, _, err = pig("embed-text", tmp_path / "one.txt", "-m", tiny_model_dir, "-o", tmp_path / "one.h5")
    assert code == 0, err
    code, from_file, err = pig("rank", chain.index, tmp_path / "one.h5", "--top", 6)
    assert code == 0, err
    code, on_the_fly, err = pig("rank", chain.index, "--query", text, "--top", 6)
    assert code == 0, err
    assert from_file.splitlines()[0].startswith("q1\t1\t")
    assert on_the_fly == from_file


def test_rank_pig_index_and_missing_index(chain, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, explicit, err = pig("rank", chain.index, "--query", "a box", "--top", 2)
    assert code == 0, err
    code, out, err = pig("rank", "--query", "a box", "--top", 2, env={"PIG_INDEX": str(chain.index)})
    assert code == 0, err
    assert out == explicit
    code, out, err = pig("rank", "--query", "a box")                 # no index anywhere
    assert code == 1 and out == ""
    assert "index.h5" in err and "not found" in err and "PIG_INDEX" in err and "pig index" in err
    code, out, err = pig("rank", "--query", "a box", env={"PIG_INDEX": str(tmp_path / "nope.h5")})
    assert code == 1 and "nope.h5" in err and "PIG_INDEX" in err
    shutil.copy(chain.index, tmp_path / "index.h5")                  # ./index.h5 is the last default
    code, out, err = pig("rank", "--query", "a box", "--top", 2)
    assert code == 0, err
    assert out == explicit


def test_rank_query_file_alone_with_pig_index(chain, queries) -> None:
    code, out, err = pig("rank", chain.index, queries, "--top", 2)
    assert code == 0, err
    code2, out2, err2 = pig("rank", queries, "--top", 2, env={"PIG_INDEX": str(chain.index)})
    assert (code2, out2) == (0, out), err2


def xpool_scores(tiny_model, feats: dict, e_t: np.ndarray, video_ids: list[str]) -> np.ndarray:
    """s(t, v) = e_t . fusioner(e_t, [x_v; x_p; x_f]), one (query, video) pair at a time."""
    fusioner = tiny_model.model.fusioner
    scores = np.empty((len(e_t), len(video_ids)))
    with torch.no_grad():
        for a, t in enumerate(e_t):
            for b, vid in enumerate(video_ids):
                r = feats["ids"].index(vid)
                keys = np.concatenate([feats["video"][r][None], feats["proxies"][r], feats["frames"][r]])
                e_v = fusioner(torch.from_numpy(t)[None], torch.from_numpy(keys)[None])[0].numpy()
                scores[a, b] = float(t.astype(np.float64) @ e_v.astype(np.float64))
    return scores


def test_rank_query_file_alone_and_query_do_not_combine(chain, queries) -> None:
    code, out, err = pig("rank", queries, "-q", "a dog", env={"PIG_INDEX": str(chain.index)})
    assert code == 2 and out == ""
    assert f"a query file from pig embed-text ({queries}) and --query/--queries do not combine: give one" in err


def test_rank_library_refuses_blank_query(chain) -> None:
    from pigcli.inputs.captions import Query
    from pigcli.errors import UsageError
    from pigcli.query.rank import rank

    with pytest.raises(UsageError, match=r"empty query \(q2\)"):
        rank(chain.index, queries=[Query("q1", "a dog"), Query("q2", " ")])


def test_rank_xpool_equals_fusioner_per_pair(chain, queries, tiny_model, tmp_path) -> None:
    q = read(queries, "embedding")
    feats = read(chain.feats, "video", "proxies", "frames")
    index_ids = read(chain.index)["ids"]
    scores = xpool_scores(tiny_model, feats, q["embedding"], index_ids)
    # an index whose rows are in another order than the features file's (rows are found by id)
    reversed_index = tmp_path / "reversed.h5"
    shutil.copy(chain.index, reversed_index)
    with h5py.File(reversed_index, "r+") as handle:
        handle["ids"][...] = np.array(index_ids[::-1], dtype=object)
        handle["embedding"][...] = handle["embedding"][:][::-1]
    outputs = []
    for index, extra in ((chain.index, []), (chain.index, ["--features", chain.feats]),
                         (reversed_index, ["--features", chain.feats])):
        code, out, err = pig("rank", index, queries, "--method", "xpool", "--top", 6, *extra)
        assert code == 0, err
        got = by_query(parse_tsv(out))
        rows = index_ids[::-1] if index == reversed_index else index_ids
        table = scores[:, ::-1] if index == reversed_index else scores
        for a, query in enumerate(q["ids"]):
            order = np.lexsort((np.arange(len(rows)), -table[a]))
            assert_same_ranking(got[query], [(rows[j], table[a, j]) for j in order])
        outputs.append(out)
    assert outputs[0] == outputs[1]
    # the single tower is not the index: its scores differ from e_t . e_v
    code, out, _ = pig("rank", chain.index, queries, "--top", 5)
    assert out != outputs[0]


def test_rank_stdout_holds_only_results(chain, tiny_model) -> None:
    long_query = "a square that moves across the frame " * 4
    code, out, err = pig("rank", chain.index, "--query", long_query, "--query", "dog", "--top", 2,
                         "--format", "jsonl")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 4 and [json.loads(line)["query_id"] for line in lines] == ["q1", "q1", "q2", "q2"]
    assert [json.loads(line)["query"] for line in lines] == [long_query, long_query, "dog", "dog"]  # the texts
    assert "truncated" in err and "q1" in err                          # logs on stderr
    e_v = read(chain.index, "embedding")
    want = brute_force(np.stack([expected_text_embedding(tiny_model, long_query.strip())]), e_v["embedding"],
                       e_v["ids"], 2)[0]
    got = [(json.loads(line)["video"], json.loads(line)["score"]) for line in lines[:2]]
    assert_same_ranking(got, want)


# --- eval -------------------------------------------------------------------------------------------

CAPTIONS = {  # index position -> captions; index row 5 has none; 'ghost' is not in the index
    0: ["a red square", "squares moving on grey", "three boxes"],
    1: ["a green block slides"],
    2: ["blue and yellow squares", "a small clip"],
    3: ["coloured tiles drifting", "a webm video", "shapes move right"],
    4: ["a short movie of boxes", "tiny squares"],
}


def _write_captions(path, video_ids: list[str]) -> list[tuple[str, str]]:
    rows = [(video_ids[i], text) for i, texts in CAPTIONS.items() for text in texts]
    rows.insert(3, ("ghost", "a caption of a missing video"))
    path.write_text("video_id,caption\n" + "".join(f'{v},"{t}"\n' for v, t in rows))
    return rows


def _expected_metrics(tiny_model, index_path, captions: list[tuple[str, str]], post=None) -> dict:
    e_v = read(index_path, "embedding")
    column = {vid: i for i, vid in enumerate(e_v["ids"])}
    kept = [(v, t) for v, t in captions if v in column]
    e_t = np.stack([expected_text_embedding(tiny_model, t) for _, t in kept])
    sim = e_t @ e_v["embedding"].T
    if post is not None:
        sim = post(sim)
    return retrieval_metrics(sim, np.array([column[v] for v, _ in kept]))


def _assert_metrics(got: dict, want: dict) -> None:
    for direction in ("t2v", "v2t"):
        assert set(want[direction]) <= set(got[direction])
        for key, value in want[direction].items():
            assert got[direction][key] == pytest.approx(value, abs=1e-6), (direction, key)


def test_eval_multi_caption_matches_metrics(chain, tiny_model, tmp_path) -> None:
    video_ids = read(chain.index)["ids"]
    captions = _write_captions(tmp_path / "caps.csv", video_ids)
    code, out, err = pig("eval", chain.index, "--captions", tmp_path / "caps.csv", "--json")
    assert code == 0, err
    report = json.loads(out)
    want = _expected_metrics(tiny_model, chain.index, captions)
    _assert_metrics(report, want)
    assert report["captions"] == 11 and report["videos"] == 6 and report["t2v"]["count"] == 11
    assert report["v2t"]["count"] == 5 and report["missing_videos"] == 1 and report["uncaptioned_videos"] == 1
    assert report["dsl"] is False and report["ties"] == "pessimistic"
    assert "ghost" in err and "not in the index" in err and "no caption" in err
    # the random model's ranks are not all the same, so the metrics do test something
    assert 0 < report["t2v"]["R@1"] < 100 or report["t2v"]["MnR"] > 1
    # the table: labelled rows, pessimistic ties said
    code, table, _ = pig("eval", chain.index, "--captions", tmp_path / "caps.csv")
    assert code == 0
    assert "t2v" in table and "v2t" in table and "pessimistic" in table and "DSL" not in table
    t2v_row = next(line for line in table.splitlines() if line.startswith("t2v")).split()
    assert float(t2v_row[1]) == pytest.approx(want["t2v"]["R@1"], abs=0.05)
    assert float(t2v_row[5]) == pytest.approx(want["t2v"]["MnR"], abs=0.05)


def test_eval_paragraph_and_dsl(chain, tiny_model, tmp_path) -> None:
    video_ids = read(chain.index)["ids"]
    captions = _write_captions(tmp_path / "caps.csv", video_ids)
    code, out, err = pig("eval", chain.index, "--captions", tmp_path / "caps.csv", "--json", "--paragraph")
    assert code == 0, err
    report = json.loads(out)
    paragraphs: dict[str, list[str]] = {}
    for v, t in captions:
        paragraphs.setdefault(v, []).append(t)
    want = _expected_metrics(tiny_model, chain.index, [(v, " ".join(ts)) for v, ts in paragraphs.items()])
    _assert_metrics(report, want)
    assert report["paragraph"] is True and report["captions"] == 5 and report["t2v"]["count"] == 5

    code, out, err = pig("eval", chain.index, "--captions", tmp_path / "caps.csv", "--json", "--dsl")
    assert code == 0, err
    report = json.loads(out)
    assert report["dsl"] is True
    _assert_metrics(report, _expected_metrics(tiny_model, chain.index, captions, post=dsl))
    code, table, _ = pig("eval", chain.index, "--captions", tmp_path / "caps.csv", "--dsl")
    assert code == 0 and "DSL" in table.splitlines()[0] and "not an online method" in table


def test_eval_paragraphs_keep_64_tokens_and_truncated_texts_are_named(chain, tiny_model, tmp_path) -> None:
    """Paragraph sets: the joined query keeps 64 tokens, not the model's 50; texts cut to the limit are
    named on stderr, as pig rank does."""
    video_ids = read(chain.index)["ids"]
    parts = {video_ids[0]: ["a red square moves left", "then it stops near the edge of the frame"],  # 53 tokens
             video_ids[1]: ["a green block slides " * 4]}                                           # 70 tokens
    path = tmp_path / "didemo.jsonl"
    path.write_text("".join(json.dumps({"clip_id": v, "text": t}) + "\n" for v, t in parts.items()))
    code, out, err = pig("eval", chain.index, "--captions", path, "--json", "--paragraph")
    assert code == 0, err
    paragraphs = [(v, " ".join(t).strip()) for v, t in parts.items()]
    assert [len(tiny_model.tokenizer(p)["input_ids"]) for _, p in paragraphs] == [53, 70]
    e_v = read(chain.index, "embedding")
    e_t = np.stack([expected_text_embedding(tiny_model, p, max_tokens=64) for _, p in paragraphs])
    _assert_metrics(json.loads(out), retrieval_metrics(e_t @ e_v["embedding"].T, np.array([0, 1])))
    assert f"1 paragraphs longer than 64 tokens were truncated: {video_ids[1]}" in err
    code, out, err = pig("eval", chain.index, "--captions", path, "--json")  # captions: the model's 50 tokens
    assert code == 0 and f"1 captions longer than 50 tokens were truncated: {video_ids[1]}#0" in err


def test_eval_xpool_matches_metrics_of_per_pair_scores(chain, tiny_model, tmp_path) -> None:
    video_ids = read(chain.index)["ids"]
    captions = [c for c in _write_captions(tmp_path / "caps.csv", video_ids) if c[0] != "ghost"]
    code, out, err = pig("eval", chain.index, "--captions", tmp_path / "caps.csv", "--json", "--method", "xpool")
    assert code == 0, err
    report = json.loads(out)
    assert report["method"] == "xpool"
    e_t = np.stack([expected_text_embedding(tiny_model, t) for _, t in captions])
    sim = xpool_scores(tiny_model, read(chain.feats, "video", "proxies", "frames"), e_t, video_ids)
    _assert_metrics(report, retrieval_metrics(sim, np.array([video_ids.index(v) for v, _ in captions])))


# --- refusals and the staged cache ------------------------------------------------------------------

def test_stage_files_of_another_model_are_refused(chain, queries, model_b, tmp_path) -> None:
    code, out, err = pig("generate", chain.sel, "-m", model_b, "-o", tmp_path / "gen.h5")
    assert code == 1 and out == ""
    assert "model_b" in err and "rerun" in err and "pig extract" in err
    assert not (tmp_path / "gen.h5").exists()

    code, _, err = pig("fuse", chain.gen, "-m", model_b, "-o", tmp_path / "index.h5")
    assert code == 1 and "rerun" in err and "pig generate" in err

    code, _, err = pig("embed-text", "-", "-m", model_b, "-o", tmp_path / "qb.h5", input="a query\n")
    assert code == 0, err
    code, out, err = pig("rank", chain.index, tmp_path / "qb.h5")
    assert code == 1 and out == ""
    assert "model_b" in err and "pig embed-text" in err

    (tmp_path / "caps.csv").write_text("video_id,caption\nalpha,a red square\n")
    code, _, err = pig("eval", chain.index, "--captions", tmp_path / "caps.csv", "-m", model_b)
    assert code == 1 and "model_b" in err and "pig index" in err
    assert pig("eval", chain.index, "--captions", tmp_path / "caps.csv")[0] == 0
    code, _, err = pig("rank", chain.index, "--query", "x", "-m", model_b)
    assert code == 1 and "model_b" in err and "pig index" in err
    # same model, explicitly: accepted
    code, _, err = pig("generate", chain.sel, "-m", chain.model, "-o", tmp_path / "gen_a.h5")
    assert code == 0, err


def test_files_of_the_wrong_stage_are_refused(chain, queries, tmp_path) -> None:
    code, out, err = pig("generate", chain.feats, "-o", tmp_path / "gen.h5")
    assert code == 1 and out == "" and "needs a 'select' file" in err and "pig select" in err
    code, _, err = pig("fuse", chain.sel, "-o", tmp_path / "index.h5")
    assert code == 1 and "needs a 'generate' file" in err and "pig generate" in err
    code, _, err = pig("rank", queries, queries)
    assert code == 1 and "needs a 'fuse' file" in err and "pig index" in err
    code, _, err = pig("rank", chain.index, chain.index)
    assert code == 1 and "needs a 'embed-text' file" in err and "pig embed-text" in err
    code, _, err = pig("select", chain.gen, "-o", tmp_path / "sel.h5")
    assert code == 1 and "needs a 'extract' file" in err and "pig extract" in err
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    code, _, err = pig("select", tmp_path / "junk.h5", "-o", tmp_path / "sel.h5")
    assert code == 1 and "HDF5" in err and "pig extract" in err
    code, _, err = pig("generate", tmp_path / "missing.h5", "-o", tmp_path / "gen.h5")
    assert code == 1 and "not found" in err and "pig select" in err
    assert not any(p.name.startswith(("gen", "sel", "index")) for p in tmp_path.iterdir())


def test_wrong_stage_message_names_the_stage_given(chain, tmp_path) -> None:
    code, _, err = pig("generate", chain.feats, "-o", tmp_path / "gen.h5")
    assert code == 1 and "is a 'extract' file" in err
    with h5py.File(tmp_path / "old.h5", "w") as handle:
        handle.attrs["schema"], handle.attrs["stage"] = "pig/0", "select"
    code, _, err = pig("generate", tmp_path / "old.h5", "-o", tmp_path / "gen.h5")
    assert code == 1 and "pig/0" in err


def test_up_to_date_rerun_is_skipped_and_changed_settings_refused(chain, tmp_path) -> None:
    sel, gen = tmp_path / "sel.h5", tmp_path / "gen.h5"
    assert pig("select", chain.feats, "-k", 8, "-o", sel)[0] == 0
    assert pig("generate", sel, "-o", gen)[0] == 0                     # model: the one the input names
    stamps = {p: os.stat(p).st_mtime_ns for p in (sel, gen)}
    code, out, err = pig("select", chain.feats, "-k", 8, "-o", sel)
    assert code == 0 and out == f"{sel}\n" and "up to date" in err
    code, _, err = pig("generate", sel, "-o", gen)
    assert code == 0 and "up to date" in err
    assert {p: os.stat(p).st_mtime_ns for p in (sel, gen)} == stamps

    code, _, err = pig("select", chain.feats, "-k", 4, "-o", sel)     # other settings
    assert code == 1 and "--force" in err
    assert os.stat(sel).st_mtime_ns == stamps[sel]
    code, _, err = pig("select", chain.feats, "-k", 4, "-o", sel, "--force")
    assert code == 0, err
    assert read(sel, "selected_index")["selected_index"].shape == (6, 4)
    code, _, err = pig("generate", sel, "-o", gen)                      # its input changed
    assert code == 1 and "--force" in err
    code, _, err = pig("generate", sel, "-o", gen, "--force")
    assert code == 0, err
    assert json.loads(read(gen)["attrs"]["inputs"])[0]["fingerprint"] == read(sel)["attrs"]["fingerprint"]


def test_embed_text_nul_byte_is_replaced_and_a_stale_partial_run_is_discarded(tmp_path, tiny_model_dir,
                                                                               tiny_model) -> None:
    out = tmp_path / "q.h5"
    # a run over other queries that died, leaving its partial folder
    stale = out.parent / "q.h5.partial.d"
    stale.mkdir()
    (stale / "manifest.json").write_text('{"fingerprint": "0123456789abcdef", "stage": "embed-text"}')
    source = tmp_path / "queries.txt"
    source.write_bytes(b"a dog\x00runs\nred car\n")
    code, _, err = pig("embed-text", source, "-m", tiny_model_dir, "-o", out)
    assert code == 0, err
    assert "NUL characters in 1 line: 1" in err
    assert f"discarding {stale}" in err
    assert not stale.exists()
    _check_embeddings(out, tiny_model, ["q1", "q2"], ["a dog runs", "red car"])
    # a finished file from other queries is still only replaced with --force
    source.write_text("another query\n")
    code, _, err = pig("embed-text", source, "-m", tiny_model_dir, "-o", out)
    assert code == 1 and "--force" in err
