"""Evaluation protocol: pessimistic ties, hand-checked numbers, multi-caption v2t, DSL."""

from __future__ import annotations

import numpy as np
import pytest

from pigcli.core import metrics
from pigcli.errors import PigError
from pigcli.core.metrics import dsl, format_table, gt_ranks, retrieval_metrics, summarize, v2t_ranks

# 4 captions x 4 videos; video 3 has no caption (a distractor).
SIM = np.array([
    [0.9, 0.1, 0.3, 0.0],  # caption 0 -> video 0
    [0.2, 0.8, 0.8, 0.0],  # caption 1 -> video 1
    [0.5, 0.6, 0.4, 0.0],  # caption 2 -> video 2
    [0.7, 0.7, 0.7, 0.7],  # caption 3 -> video 0
], dtype=np.float32)
CAPTION_VIDEO = np.array([0, 1, 2, 0])


def test_t2v_by_hand():
    # caption 0: 0.9 beats all                       -> rank 0
    # caption 1: 0.8 ties with wrong video 2          -> rank 1 (pessimistic)
    # caption 2: 0.4 < 0.5 and 0.6; 0.0 is below      -> rank 2
    # caption 3: all four equal                       -> rank 3 = V - 1
    ranks = gt_ranks(SIM, CAPTION_VIDEO)
    assert ranks.dtype == np.int64
    assert ranks.tolist() == [0, 1, 2, 3]


def test_v2t_by_hand():
    # groups: video 0 = captions {0, 3}, video 1 = {1}, video 2 = {2}; a group scores its best caption
    # video 0: own group max(0.9, 0.7) = 0.9; group 1 scores 0.2, group 2 0.5            -> 0
    # video 1: own 0.8; group 0 max(0.1, 0.7) = 0.7, group 2 0.6                          -> 0
    # video 2: own 0.4; group 0 max(0.3, 0.7) = 0.7 and group 1 0.8 are >= 0.4            -> 2
    # video 3: no caption, left out
    assert v2t_ranks(SIM, CAPTION_VIDEO).tolist() == [0, 0, 2]


# 5 captions x 3 videos, two captions for videos 0 and 1: where ranking among caption groups (CLIP4Clip,
# X-Pool) and ranking among captions differ.
MULTI = np.array([
    [0.90, 0.20, 0.90],  # caption 0 -> video 0
    [0.30, 0.10, 0.80],  # caption 1 -> video 0
    [0.40, 0.70, 0.60],  # caption 2 -> video 1
    [0.95, 0.50, 0.10],  # caption 3 -> video 1
    [0.10, 0.70, 0.50],  # caption 4 -> video 2
])
MULTI_VIDEO = np.array([0, 0, 1, 1, 2])


def test_v2t_ranks_caption_groups_not_captions():
    # video 0: own group max(0.90, 0.30) = 0.90; group 1 max(0.40, 0.95) = 0.95 >= 0.90; group 2 0.10  -> 1
    # video 1: own max(0.70, 0.50) = 0.70; group 0 max(0.20, 0.10) = 0.20; group 2 0.70 ties: counts  -> 1
    # video 2: own 0.50; group 0 max(0.90, 0.80) = 0.90 and group 1 max(0.60, 0.10) = 0.60 beat it   -> 2
    #          (among captions it would be 3: captions 0, 1 and 2 all score >= 0.50)
    assert v2t_ranks(MULTI, MULTI_VIDEO).tolist() == [1, 1, 2]
    v2t = retrieval_metrics(MULTI, MULTI_VIDEO)["v2t"]
    assert v2t == {"R@1": 0.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": pytest.approx(7 / 3), "count": 3}


def test_retrieval_metrics_by_hand():
    results = retrieval_metrics(SIM, CAPTION_VIDEO)
    # t2v ranks [0, 1, 2, 3]: R@1 = 1/4, R@5 = R@10 = 4/4, MdR = median 1.5 + 1, MnR = mean 1.5 + 1
    assert results["t2v"] == {"R@1": 25.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.5, "MnR": 2.5, "count": 4}
    # v2t ranks [0, 0, 2]: R@1 = 2/3, MdR = 0 + 1, MnR = 2/3 + 1
    v2t = results["v2t"]
    assert v2t["R@1"] == pytest.approx(66.6666667)
    assert (v2t["R@5"], v2t["R@10"], v2t["MdR"], v2t["count"]) == (100.0, 100.0, 1.0, 3)
    assert v2t["MnR"] == pytest.approx(1.6666667)


def test_all_equal_scores_give_worst_rank():
    sim = np.full((3, 5), 0.25)
    assert gt_ranks(sim, np.array([0, 2, 4])).tolist() == [4, 4, 4]
    assert v2t_ranks(sim, np.array([0, 2, 4])).tolist() == [2, 2, 2]  # 3 captions: 2 others tie


def test_summarize_custom_ks():
    # ranks 0, 4, 9, 50: R@1 1/4, R@5 2/4, R@10 3/4, median (4 + 9) / 2 + 1, mean 63/4 + 1
    assert summarize(np.array([0, 4, 9, 50])) == {"R@1": 25.0, "R@5": 50.0, "R@10": 75.0,
                                                  "MdR": 7.5, "MnR": 16.75, "count": 4}
    assert summarize(np.array([3]), ks=(1, 50)) == {"R@1": 0.0, "R@50": 100.0, "MdR": 4.0, "MnR": 4.0, "count": 1}


def _v2t_loop(sim: np.ndarray, caption_video: np.ndarray) -> list[int]:
    """CLIP4Clip's v2t, written out: max over each video's captions, then rank the groups."""
    groups = sorted(set(caption_video.tolist()))
    ranks = []
    for video in range(sim.shape[1]):
        if video in groups:
            group_score = {u: sim[caption_video == u, video].max() for u in groups}
            ranks.append(sum(score >= group_score[video] for u, score in group_score.items() if u != video))
    return ranks


def _t2v_loop(sim: np.ndarray, gt: np.ndarray) -> list[int]:
    return [int(sum(sim[i, j] >= sim[i, gt[i]] for j in range(sim.shape[1]) if j != gt[i])) for i in range(len(gt))]


@pytest.mark.parametrize("block", [metrics.BLOCK_ELEMENTS, 7])  # 7: blocks of one row, remainders
def test_multi_caption_against_loops(monkeypatch, block):
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 4, size=(40, 12)).astype(np.float32)  # few values: many ties
    caption_video = rng.integers(0, 10, size=40)  # videos 10, 11 never get a caption
    assert v2t_ranks(sim, caption_video).tolist() == _v2t_loop(sim, caption_video)
    assert gt_ranks(sim, caption_video).tolist() == _t2v_loop(sim, caption_video)


def test_single_caption_v2t_is_the_transpose():
    rng = np.random.default_rng(1)
    sim = rng.integers(0, 3, size=(9, 9)).astype(np.float64)
    order = rng.permutation(9)
    caption_of_video = np.argsort(order)  # caption i shows video order[i]
    assert v2t_ranks(sim, order).tolist() == gt_ranks(sim.T, caption_of_video).tolist()


def test_bad_inputs():
    with pytest.raises(PigError, match="NaN"):
        gt_ranks(np.array([[0.1, np.nan]]), np.array([0]))
    with pytest.raises(PigError, match="outside 0..1"):
        gt_ranks(np.zeros((1, 2)), np.array([2]))
    with pytest.raises(PigError, match="integer column indices"):
        gt_ranks(np.zeros((2, 2)), np.array([0]))
    with pytest.raises(PigError, match="nothing to evaluate"):
        summarize(np.array([], dtype=np.int64))


def _dsl_direct(sim: np.ndarray, tau: float) -> np.ndarray:
    weights = np.exp(sim / tau)
    return sim * weights / weights.sum(axis=0, keepdims=True)


@pytest.mark.parametrize("block", [metrics.BLOCK_ELEMENTS, 5])
def test_dsl_matches_direct_formula(monkeypatch, block):
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(2)
    sim = rng.uniform(-1, 1, size=(7, 4))
    assert np.allclose(dsl(sim, tau=0.5), _dsl_direct(sim, 0.5), rtol=1e-6, atol=1e-9)
    sim32 = (sim / 10).astype(np.float32)  # default tau = 1/100: exp(100 * 0.1) still fits float64
    out = dsl(sim32)
    assert out.dtype == np.float32
    assert np.allclose(out, _dsl_direct(sim32.astype(np.float64), 0.01), rtol=1e-5, atol=1e-7)


def test_dsl_is_stable_and_documented():
    sim = np.array([[10.0, 9.0], [9.5, 10.0]])  # 100 * 10 overflows a naive exp
    out = dsl(sim)
    assert np.isfinite(out).all()
    # softmax over queries: column 0 weights exp(50) / (1 + exp(50)) on the 10.0 entry
    assert out[0, 0] == pytest.approx(10.0 / (1 + np.exp(-50)))
    assert "not a valid online" in " ".join(dsl.__doc__.lower().split())
    with pytest.raises(PigError, match="positive"):
        dsl(sim, tau=0)


def test_format_table():
    table = format_table(retrieval_metrics(SIM, CAPTION_VIDEO), "MSRVTT 1k-A")
    lines = table.splitlines()
    assert lines[0] == "MSRVTT 1k-A"
    assert lines[1].split() == ["R@1", "R@5", "R@10", "MdR", "MnR"]
    assert lines[2].split() == ["t2v", "25.0", "100.0", "100.0", "2.5", "2.5"]
    assert lines[3].split() == ["v2t", "66.7", "100.0", "100.0", "1.0", "1.7"]
    assert lines[-1] == "ties ranked pessimistically"
    assert len({len(line) for line in lines[1:4]}) == 1  # fixed width


def test_v2t_reads_an_hdf5_dataset_in_blocks(monkeypatch, tmp_path):
    """Groups gather rows from all over the matrix; h5py needs them in increasing order."""
    import h5py

    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 24)  # two rows of 12 per block: groups split across reads
    rng = np.random.default_rng(3)
    sim = rng.integers(0, 4, size=(30, 12)).astype(np.float32)
    caption_video = rng.integers(0, 10, size=30)
    with h5py.File(tmp_path / "sim.h5", "w") as handle:
        handle["sim"] = sim
    with h5py.File(tmp_path / "sim.h5", "r") as handle:
        assert v2t_ranks(handle["sim"], caption_video).tolist() == _v2t_loop(sim, caption_video)
