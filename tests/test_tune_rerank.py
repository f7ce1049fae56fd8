"""`pig tune-rerank` (query/tune_rerank.py), the model's rerank.json, and rank/eval using it by default.

The tuner's metrics are checked against `pig eval --rerank K --w-...` run through the CLI (an
independent computation: eval scores its own candidates for its own K), never against the tuner's
own helpers. The index is a meanpool index of the 6 session videos, extracted with a private model
folder whose EERCF head is not the identity (rerank.json is written into that folder; an autouse
fixture removes it before each test).
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import TINY_DIM, TINY_T, VIDEO_FOLDER_SPECS
from test_stages import pig

N_VIDEOS = len(VIDEO_FOLDER_SPECS)
CAPTIONS = ("a red square moves left", "blue and green", "something bright in the corner",
            "a small dark box", "colours change fast", "two squares cross")


@pytest.fixture(scope="module")
def val(tmp_path_factory, tiny_model_dir, video_folder):
    """A model folder of its own (trained-looking EERCF head), the 6 videos extracted with it, their
    meanpool index, 2 captions per video (val.csv) and queries."""
    import torch

    from pigcli.model.checkpoint import load_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("tune_rerank")
    loaded = load_checkpoint(tiny_model_dir)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        loaded.model.eercf.w_f.copy_(torch.rand(TINY_T, TINY_T, generator=g))
        loaded.model.eercf.w_g.add_(0.3 * torch.randn(TINY_DIM, TINY_DIM, generator=g))
    model = save_checkpoint(loaded.model, loaded.tokenizer, root / "model")
    paths = SimpleNamespace(root=root, model=model, feats=root / "feats.h5", index=root / "index.h5",
                            q=root / "q.h5", captions=root / "val.csv")
    videos = sorted(VIDEO_FOLDER_SPECS)
    lines = [f"{v.rsplit('.', 1)[0]},{CAPTIONS[i]}" for i, v in enumerate(videos)]
    lines += [f"{v.rsplit('.', 1)[0]},{CAPTIONS[(i + 2) % len(CAPTIONS)]} again" for i, v in enumerate(videos)]
    paths.captions.write_text("video_id,caption\n" + "\n".join(lines) + "\n")
    for args in (("extract", video_folder, "-m", model, "-o", paths.feats, "--workers", 0, "--device", "cpu"),
                 ("fuse", paths.feats, "--method", "meanpool", "-o", paths.index),
                 ("embed-text", "-", "-m", model, "-o", paths.q, "--device", "cpu")):
        code, _, err = pig(*args, input="".join(c + "\n" for c in CAPTIONS[:4]))
        assert code == 0, err
    from test_stages import read

    assert sorted(read(paths.index)["ids"]) == sorted(v.rsplit(".", 1)[0] for v in videos)  # every caption kept
    return paths


@pytest.fixture(autouse=True)
def no_rerank_json(request):
    """Each test starts without rerank.json in the module's model folder."""
    if "val" in request.fixturenames:
        val = request.getfixturevalue("val")
        (val.model / "rerank.json").unlink(missing_ok=True)
    yield


def eval_json(val, *args) -> dict:
    code, out, err = pig("eval", val.index, "--captions", val.captions, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def weight_args(weights) -> list:
    return ["--w-fw", weights.fw, "--w-fs", weights.fs, "--w-pw", weights.pw, "--w-coarse", weights.coarse]


def eval_setting(val, setting) -> dict:
    """t2v metrics of `pig eval --rerank K --w-fw .. --w-fs .. --w-pw .. --w-coarse ..`."""
    report = eval_json(val, "--rerank", setting.k, *weight_args(setting.weights))
    assert report["rerank"] == setting.k
    return report["t2v"]


def better(a: dict, b: dict) -> bool:
    """a beats b: R@1, then R@5, then MdR lower."""
    return (a["R@1"], a["R@5"], -a["MdR"]) > (b["R@1"], b["R@5"], -b["MdR"])


def rank_out(val, *args) -> tuple[str, str]:
    code, out, err = pig("rank", val.index, val.q, "--top", N_VIDEOS, *args)
    assert code == 0, err
    return out, err


def write_tuned(val, k: int, **weights):
    from pigcli.model.checkpoint import ModelFolder, TunedRerank
    from pigcli.model.eercf import RerankWeights

    folder = ModelFolder.read(val.model)
    folder.write_rerank(TunedRerank(k, RerankWeights(**weights), str(val.captions), N_VIDEOS, 10.0, 20.0))
    return folder


# --- 1. the tuner's metrics are pig eval's ----------------------------------------------------------------

@pytest.mark.slow
def test_tuner_metrics_equal_pig_eval_and_fine_scores_are_computed_once(val, monkeypatch) -> None:
    import pigcli.model.eercf as eercf
    import pigcli.query.rerank as rerank_module
    from pigcli.model.eercf import RerankWeights
    from pigcli.query.tune_rerank import Setting, tune_rerank

    grid = [Setting(2, RerankWeights(fw=1.0, fs=0.0, pw=0.0, coarse=0.5)),
            Setting(3, RerankWeights(fw=0.2, fs=1.0, pw=0.5, coarse=1.0)),
            Setting(4, RerankWeights(fw=0.0, fs=0.0, pw=1.0, coarse=0.5)),
            Setting(N_VIDEOS, RerankWeights(fw=0.8, fs=0.2, pw=0.2, coarse=0.5)),
            Setting(N_VIDEOS, RerankWeights(fw=0.5, fs=0.5, pw=0.0, coarse=2.0)),
            Setting(50, RerankWeights(fw=0.0, fs=1.0, pw=0.0, coarse=0.0))]  # K above N: capped at N
    calls = {"fine": 0, "read": 0}
    real_fine, real_read = eercf.fine_scores_for_pairs, rerank_module.read_candidate_tokens

    def counting_fine(*args, **kwargs):
        calls["fine"] += 1
        return real_fine(*args, **kwargs)

    def counting_read(*args, **kwargs):
        calls["read"] += 1
        return real_read(*args, **kwargs)

    monkeypatch.setattr(eercf, "fine_scores_for_pairs", counting_fine)
    monkeypatch.setattr(rerank_module, "read_candidate_tokens", counting_read)
    report = tune_rerank(val.index, val.captions, device="cpu", grid=grid, dry_run=True, report=False)
    assert calls == {"fine": 1, "read": 1}  # once for the largest K, not per setting
    monkeypatch.undo()

    assert report.written is None and not (val.model / "rerank.json").exists()
    assert len(report.scored) == len(grid) and report.captions == 2 * N_VIDEOS and report.videos == N_VIDEOS
    assert report.baseline.metrics == eval_json(val)["t2v"]
    distinct = set()
    for item in report.scored:
        want = eval_setting(val, item.setting)
        assert item.setting.k <= N_VIDEOS
        for key in ("R@1", "R@5", "R@10", "MdR", "MnR", "count"):
            assert item.metrics[key] == pytest.approx(want[key]), (item.setting, key)
        distinct.add(item.metrics["MnR"])
    assert len(distinct) > 1, "every setting ranked alike: the test data do not tell them apart"


# --- 2. the choice: the best of the grid, written to rerank.json ------------------------------------------

@pytest.mark.slow
def test_tune_rerank_chooses_the_best_setting_and_writes_rerank_json(val) -> None:
    from pigcli.model.checkpoint import ModelFolder, content_hash
    from pigcli.query.tune_rerank import default_grid, tune_rerank

    hash_before = ModelFolder.read(val.model).identity.hash
    report = tune_rerank(val.index, val.captions, device="cpu", report=False)
    grid = default_grid(N_VIDEOS)
    assert len(report.scored) == len(grid) == 3 * 63  # K capped at N: one K; w_fw, w_fs, w_pw not all 0
    keys = [item.key() for item in report.scored]
    assert keys == sorted(keys, reverse=True) and report.best is report.scored[0]
    beats = better(report.best.metrics, report.baseline.metrics)
    assert report.k == (report.best.setting.k if beats else 0)

    # written next to the model; the model's identity is untouched
    path = val.model / "rerank.json"
    assert report.written == path
    data = json.loads(path.read_text())
    w = report.best.setting.weights
    assert data["k"] == report.k
    assert (data["w_fw"], data["w_fs"], data["w_pw"], data["w_coarse"]) == (w.fw, w.fs, w.pw, w.coarse)
    assert data["tuned_on"] == str(val.captions) and data["videos"] == N_VIDEOS
    assert data["r1_before"] == report.baseline.metrics["R@1"] and data["r1_after"] == report.best.metrics["R@1"]
    assert data["created"] and data["model_hash"] == hash_before
    folder = ModelFolder.read(val.model)
    assert folder.identity.hash == content_hash(val.model) == hash_before
    assert folder.rerank.to_dict() == data

    # through pig eval: the best setting's metrics, and no setting of the grid beats it
    best_eval = eval_setting(val, report.best.setting)
    assert best_eval["R@1"] == pytest.approx(data["r1_after"])
    rng = np.random.default_rng(0)
    for i in rng.choice(len(grid), 4, replace=False):
        assert not better(eval_setting(val, grid[i]), best_eval), grid[i]
    if report.k == 0:
        assert not better(best_eval, eval_json(val)["t2v"])


@pytest.mark.slow
def test_tune_rerank_cli(val, monkeypatch) -> None:
    from pigcli.model.eercf import RerankWeights
    from pigcli.query import tune_rerank as module

    # a small grid keeps this quick; the command is what is under test
    monkeypatch.setattr(module, "default_grid", lambda n, patches=True: [
        module.Setting(2, RerankWeights(fw=1.0, fs=0.0, pw=0.0, coarse=1.0)),
        module.Setting(3, RerankWeights(fw=0.0, fs=1.0, pw=0.5, coarse=1.0))])
    code, out, err = pig("tune-rerank", val.index, "--captions", val.captions, "--dry-run")
    assert code == 0, err
    assert out == "" and not (val.model / "rerank.json").exists()
    assert "no rerank (the plain index)" in err and "choice: " in err
    code, out, err = pig("tune-rerank", val.index, "--captions", val.captions)
    assert code == 0, err
    assert out.strip() == str(val.model / "rerank.json")
    code, out, err = pig("tune-rerank", val.index, "-c", val.captions, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["output"] == str(val.model / "rerank.json") and info["settings"] == 2
    assert info["k"] in (0, 2, 3) and info["off"] == (info["k"] == 0)
    # captions named like a test split: a warning
    test_csv = val.root / "test.csv"
    shutil.copy(val.captions, test_csv)
    code, _, err = pig("tune-rerank", val.index, "-c", test_csv, "--dry-run")
    assert code == 0 and "validation split only" in err
    code, out, _ = pig("tune-rerank", "--help")
    assert "VALIDATION" in out and "Example" in out


# --- 3. the model's hash and the stage files made with it ---------------------------------------------------

def test_rerank_json_keeps_the_model_and_its_stage_files_valid(val) -> None:
    from pigcli.model.checkpoint import ModelFolder, content_hash

    before = ModelFolder.read(val.model).identity
    index_bytes = val.index.read_bytes()
    plain, _ = rank_out(val)
    write_tuned(val, 3, fw=0.1, fs=0.9, pw=0.3, coarse=2.0)
    after = ModelFolder.read(val.model).identity
    assert after == before and content_hash(val.model) == before.hash
    # a stage made with the model is up to date (not redone), and the index still ranks with the model
    code, out, err = pig("fuse", val.feats, "--method", "meanpool", "-o", val.index, "--json")
    assert code == 0, err
    assert json.loads(out)["skipped"] and val.index.read_bytes() == index_bytes
    assert rank_out(val)[0] == plain
    # pig inspect shows the setting
    code, out, err = pig("inspect", val.model, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["hash"] == before.hash and info["rerank"]["k"] == 3 and info["rerank"]["w_fs"] == 0.9
    (val.model / "rerank.json").unlink()
    assert json.loads(pig("inspect", val.model, "--json")[1])["rerank"].startswith("none")


def test_rerank_json_of_other_weights_or_broken_is_not_used(val, capsys) -> None:
    from pigcli.errors import PigError
    from pigcli.model.checkpoint import ModelFolder

    folder = write_tuned(val, 3, fw=0.1, fs=0.9, pw=0.3, coarse=2.0)
    data = json.loads(folder.rerank_file.read_text())
    folder.rerank_file.write_text(json.dumps({**data, "model_hash": "0123456789abcdef"}))
    assert ModelFolder.read(val.model).rerank is None  # tuned for other weights: ignored, with a warning
    assert "tuned for model 0123456789abcdef" in capsys.readouterr().err
    folder.rerank_file.write_text('{"k": 3}')
    with pytest.raises(PigError, match="not a valid rerank file"):
        ModelFolder.read(val.model).rerank


# --- 4. rank and eval use it by default; --w-* override -------------------------------------------------------

@pytest.mark.slow
def test_rank_and_eval_use_rerank_json_and_w_options_override(val) -> None:
    tuned = dict(fw=0.1, fs=0.9, pw=0.3, coarse=2.0)
    explicit = ["--w-fw", 0.1, "--w-fs", 0.9, "--w-pw", 0.3, "--w-coarse", 2.0]
    # without rerank.json: the old defaults, K = 50 for --rerank alone
    default_out, err = rank_out(val, "--rerank")
    assert default_out == rank_out(val, "--rerank", 50, "--w-fw", 0.8, "--w-fs", 0.2, "--w-pw", 0.2,
                                   "--w-coarse", 0.5)[0]
    assert err.count("rerank: ") == 1 and "default weights" in err

    folder = write_tuned(val, 3, **tuned)
    out, err = rank_out(val, "--rerank")                                  # tuned K and weights
    assert out == rank_out(val, "--rerank", 3, *explicit)[0] != default_out
    assert err.count("rerank: ") == 1
    assert f"weights from {folder.rerank_file} (tuned on {val.captions})" in err and "tuned K" in err
    out, _ = rank_out(val, "--rerank", 5)                                 # K given, tuned weights
    assert out == rank_out(val, "--rerank", 5, *explicit)[0]
    out, err = rank_out(val, "--rerank", "--w-fw", 0.7)                  # one weight overridden
    assert out == rank_out(val, "--rerank", 3, "--w-fw", 0.7, "--w-fs", 0.9, "--w-pw", 0.3, "--w-coarse", 2.0)[0]
    assert "given: --w-fw" in err and "w_fw=0.7" in err
    assert rank_out(val)[0] != out                                        # no --rerank: no rerank

    report = eval_json(val, "--rerank")
    assert report["rerank"] == 3 and report["rerank_weights"] == {**tuned, "ps": 0.0}
    assert report["t2v"] == eval_json(val, "--rerank", 3, *explicit)["t2v"]
    report = eval_json(val, "--rerank", 4, "--w-coarse", 0)
    assert report["rerank"] == 4 and report["rerank_weights"] == {**tuned, "coarse": 0.0, "ps": 0.0}


def test_resolve_rerank_is_the_one_place(val, capsys) -> None:
    from pigcli.model.checkpoint import ModelFolder
    from pigcli.model.eercf import RerankWeights
    from pigcli.query.rerank import AUTO, DEFAULT_K, resolve_rerank

    folder = ModelFolder.read(val.model)
    assert resolve_rerank(0, None, folder).k == 0 and capsys.readouterr().err == ""
    plan = resolve_rerank(AUTO, None, folder)
    assert (plan.k, plan.weights) == (DEFAULT_K, RerankWeights())
    plan = resolve_rerank(AUTO, {"fw": None, "coarse": 1.5}, None)
    assert (plan.k, plan.weights) == (DEFAULT_K, RerankWeights(coarse=1.5))
    write_tuned(val, 7, fw=0.0, fs=1.0, pw=0.5, coarse=1.0)
    plan = resolve_rerank(AUTO, {"pw": 0.25}, folder)
    assert (plan.k, plan.weights) == (7, RerankWeights(fw=0.0, fs=1.0, pw=0.25, coarse=1.0))
    given = RerankWeights(fw=0.3, fs=0.3, pw=0.3, coarse=0.3)
    assert resolve_rerank(9, given, folder).weights == given                # a RerankWeights is used as it is
    assert resolve_rerank(9, given, folder, report=False).source.startswith("rerank: top 9 (K given), weights given")
    err = capsys.readouterr().err
    assert err.count("rerank: ") == 4  # one line per call that reported


# --- 5. "off": nothing beats the plain index ------------------------------------------------------------------

def test_off_when_no_setting_beats_the_plain_index(val) -> None:
    from pigcli.model.checkpoint import ModelFolder
    from pigcli.model.eercf import RerankWeights
    from pigcli.query.tune_rerank import Setting, tune_rerank

    # the coarse score alone reorders nothing: these settings are the plain index again, never better
    grid = [Setting(N_VIDEOS, RerankWeights(fw=0.0, fs=0.0, pw=0.0, coarse=0.5)),
            Setting(2, RerankWeights(fw=0.0, fs=0.0, pw=0.0, coarse=1.0))]
    report = tune_rerank(val.index, val.captions, device="cpu", grid=grid, report=False)
    assert report.off and report.k == 0
    assert report.best.setting == grid[1]                                  # equal metrics: the smaller K
    assert report.best.metrics == report.baseline.metrics
    tuned = ModelFolder.read(val.model).rerank
    assert tuned.k == 0 and tuned.r1_after == tuned.r1_before

    plain, _ = rank_out(val)
    out, err = rank_out(val, "--rerank")                                   # tuned off: the plain ranking
    assert out == plain
    assert err.count("rerank: ") == 1 and "rerank: off" in err and "--rerank K" in err
    report = eval_json(val, "--rerank")
    assert report["rerank"] == 0 and report["t2v"] == eval_json(val)["t2v"] and "v2t" in report
    out, err = rank_out(val, "--rerank", 3)                                # an explicit K reranks anyway
    assert "rerank: top 3 (K given), weights from" in err
    assert [line.split("\t")[:3] for line in out.splitlines()] == [line.split("\t")[:3] for line in plain.splitlines()]
