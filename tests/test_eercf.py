"""EERCF scores, rerank and loss against direct numpy loops written from the spec."""

import numpy as np
import pytest
import torch

from pigcli.core.cost import rerank_macs, two_tower_macs
from pigcli.model.eercf import (
    EercfHead,
    RerankWeights,
    combine_scores,
    eercf_loss,
    fine_scores_for_pairs,
    l2n,
    pearson_constraint,
    rerank_candidates,
)

D, T, NP = 8, 4, 12
ATOL = 1e-5


# ---------------------------------------------------------------- numpy reference


def np_norm(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def ref_scores(t, frames, patches, mixed, w_g, w_f):
    """All five scores of one text and one video, plus the TIB frame-pooled vector, by loops."""
    t, frames, patches, mixed = (np_norm(np.asarray(a, np.float64)) for a in (t, frames, patches, mixed))
    s_f = np.array([t @ frames[f] for f in range(len(frames))])
    a = np_softmax(s_f / 0.01)
    a_mix = np.array([sum(w_f[f, g] * a[g] for g in range(len(a))) for f in range(len(a))])
    gate = np_softmax(s_f / 0.1)
    v_fs = np_norm(sum(gate[f] * mixed[f] for f in range(len(mixed))))
    s_p = np.array([t @ patches[p] for p in range(len(patches))])
    b = np_softmax(s_p / 0.01)
    v = np_norm(mixed.mean(0))
    return {
        "v": t @ (w_g @ v),
        "fw": sum(s_f[f] * a_mix[f] for f in range(len(s_f))),
        "pw": sum(s_p[p] * b[p] for p in range(len(s_p))),
        "fs": t @ v_fs,
        "ps": t @ np_norm(sum(b[p] * patches[p] for p in range(len(patches)))),
        "v_fs": v_fs,
        "v_vec": w_g @ v,
    }


def np_sym_ce(logits):
    """EERCF's symmetric CE: the MEAN of the text-to-video and video-to-text cross-entropies."""
    def ce_rows(m):
        return np.mean([-np.log(np_softmax(m[i])[i]) for i in range(len(m))])
    return (ce_rows(logits) + ce_rows(logits.T)) / 2


def np_pc(a, b):
    za = (a - a.mean(0)) / a.std(0)
    zb = (b - b.mean(0)) / b.std(0)
    return 0.14 * sum((np.dot(za[:, d], zb[:, d]) / len(a) - 1) ** 2 for d in range(a.shape[1]))


# ---------------------------------------------------------------- fixtures


def make_head(random_weights: bool, seed: int = 0) -> EercfHead:
    head = EercfHead(D, T)
    if random_weights:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            head.w_g.copy_(torch.eye(D) + 0.5 * torch.randn(D, D, generator=g))
            head.w_f.copy_(torch.rand(T, T, generator=g))
    return head


def bank(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, T, D, generator=g), torch.randn(n, NP, D, generator=g),
            torch.randn(n, T, D, generator=g))


def numpy_of(head):
    return head.w_g.detach().numpy().astype(np.float64), head.w_f.detach().numpy().astype(np.float64)


# ---------------------------------------------------------------- scores


@pytest.mark.parametrize("random_weights", [False, True])
def test_fine_and_coarse_scores_match_numpy(random_weights):
    head = make_head(random_weights)
    w_g, w_f = numpy_of(head)
    q, k = 3, 5
    frames, patches, mixed = (x.view(q, k, *x.shape[1:]) for x in bank(q * k))
    text = torch.randn(q, D, generator=torch.Generator().manual_seed(2))
    fine = head.fine_scores(text, frames, patches, mixed)
    coarse = l2n(text) @ head.video_embed(mixed.reshape(q * k, T, D)).T  # S_v [Q, Q*K]
    assert set(fine) == {"fw", "fs", "pw", "ps"}
    for i in range(q):
        for j in range(k):
            ref = ref_scores(text[i].numpy(), frames[i, j].numpy(), patches[i, j].numpy(), mixed[i, j].numpy(), w_g, w_f)
            for key in ("fw", "fs", "pw", "ps"):
                assert fine[key][i, j].item() == pytest.approx(ref[key], abs=ATOL), key
            assert coarse[i, i * k + j].item() == pytest.approx(ref["v"], abs=ATOL)


def test_random_weights_change_scores():
    frames, patches, mixed = (x[None] for x in bank(2))
    text = torch.randn(1, D)
    plain, trained = make_head(False), make_head(True)
    assert not torch.allclose(plain.fine_scores(text, frames, None)["fw"], trained.fine_scores(text, frames, None)["fw"])
    assert not torch.allclose(plain.video_embed(mixed[0]), trained.video_embed(mixed[0]))


def test_frames_mixed_defaults_to_frames_and_patch_keys_optional():
    head = make_head(True)
    frames, patches, _ = (x[None] for x in bank(3))
    text = torch.randn(1, D)
    fine = head.fine_scores(text, frames, None)
    assert set(fine) == {"fw", "fs"}
    assert torch.allclose(fine["fs"], head.fine_scores(text, frames, None, frames)["fs"])
    assert set(head.fine_scores(text, frames, patches, with_ps=False)) == {"fw", "fs", "pw"}
    assert fine["fw"].shape == (1, 3)


def test_wrong_frame_count_raises():
    with pytest.raises(ValueError, match="4 frames"):
        EercfHead(D, T).fine_scores(torch.randn(1, D), torch.randn(1, 2, T + 1, D), None)


@pytest.mark.parametrize("chunk_size", [None, 1, 2])
def test_fine_scores_for_pairs_gathers_each_querys_candidates(chunk_size):
    head = make_head(True)
    w_g, w_f = numpy_of(head)
    frames, patches, mixed = bank(7)
    text = torch.randn(3, D, generator=torch.Generator().manual_seed(3))
    cand = torch.tensor([[6, 0, 2], [1, 1, 5], [3, 4, 0]])
    fine = fine_scores_for_pairs(head, text, frames.half(), cand, patches, mixed, chunk_size=chunk_size)
    for i in range(3):
        for j in range(3):
            v = cand[i, j]
            ref = ref_scores(text[i].numpy(), frames[v].half().float().numpy(), patches[v].numpy(), mixed[v].numpy(), w_g, w_f)
            for key in ("fw", "fs", "pw", "ps"):
                assert fine[key][i, j].item() == pytest.approx(ref[key], abs=ATOL), key


# ---------------------------------------------------------------- rerank


def test_combine_scores_is_the_weighted_sum():
    g = torch.Generator().manual_seed(4)
    coarse, *terms = (torch.randn(2, 5, generator=g) for _ in range(5))
    fine = dict(zip(("fw", "fs", "pw", "ps"), terms))
    w = RerankWeights(fw=0.3, fs=0.7, pw=0.1, coarse=0.9, ps=0.4)
    expected = 0.9 * coarse + 0.3 * fine["fw"] + 0.7 * fine["fs"] + 0.1 * fine["pw"] + 0.4 * fine["ps"]
    assert torch.allclose(combine_scores(coarse, fine, w), expected)
    default = RerankWeights()
    assert torch.allclose(combine_scores(coarse, fine, default),
                          0.5 * coarse + 0.8 * fine["fw"] + 0.2 * fine["fs"] + 0.2 * fine["pw"])


def test_missing_patch_scores_need_explicit_weights():
    fine = {"fw": torch.zeros(1, 3), "fs": torch.zeros(1, 3)}
    with pytest.raises(ValueError, match="without_patches"):
        combine_scores(torch.zeros(1, 3), fine, RerankWeights())
    combine_scores(torch.zeros(1, 3), fine, RerankWeights().without_patches())


def test_overwhelming_fine_score_moves_to_top():
    coarse = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    fw = torch.zeros(1, 5)
    fw[0, 3] = 100.0
    order, _ = rerank_candidates(coarse, {"fw": fw, "fs": torch.zeros(1, 5)}, RerankWeights().without_patches())
    assert order.tolist() == [[3, 0, 1, 2, 4]]


def test_ties_keep_coarse_order():
    zeros = {"fw": torch.zeros(2, 4), "fs": torch.zeros(2, 4)}
    w = RerankWeights(coarse=0.0).without_patches()
    coarse = torch.tensor([[0.9, 0.5, 0.4, 0.1], [0.2, 0.8, 0.8, 0.9]])
    order, combined = rerank_candidates(coarse, zeros, w)
    assert torch.equal(combined, torch.zeros(2, 4))
    assert order.tolist() == [[0, 1, 2, 3], [3, 1, 2, 0]]


# ---------------------------------------------------------------- cost


def test_macs():
    # k=2, T=2, NP=3, D=4: per candidate 8 + 4 + 2 + 8 + 8 = 30, patches 12 + 3 = 15, ps 12 + 8 = 20
    assert rerank_macs(2, 2, 0, 4) == 60
    assert rerank_macs(2, 2, 3, 4) == 90
    assert rerank_macs(2, 2, 3, 4, with_ps=True) == 130
    assert two_tower_macs(1000, 512) == 512_000


# ---------------------------------------------------------------- loss


@pytest.mark.parametrize("with_patches", [True, False])
def test_loss_matches_numpy(with_patches):
    b = 4
    head = make_head(True, seed=8)
    w_g, w_f = numpy_of(head)
    frames, patches, mixed = bank(b, seed=9)
    text = torch.randn(b, D, generator=torch.Generator().manual_seed(10))
    scale = torch.tensor(7.0)
    loss, parts = eercf_loss(text, frames, patches if with_patches else None, head, scale, frames_mixed=mixed)

    refs = [[ref_scores(text[i].numpy(), frames[j].numpy(), patches[j].numpy(), mixed[j].numpy(), w_g, w_f)
             for j in range(b)] for i in range(b)]
    mat = {key: np.array([[refs[i][j][key] for j in range(b)] for i in range(b)]) for key in ("v", "fw", "pw", "fs")}
    main = 0.5 * mat["v"] + 0.5 * mat["fw"] + (0.05 * mat["pw"] if with_patches else 0.0)
    t = np_norm(text.numpy().astype(np.float64))
    v = np.stack([refs[0][j]["v_vec"] for j in range(b)])
    v_fs = np.stack([refs[i][i]["v_fs"] for i in range(b)])
    expected = {"ce_main": np_sym_ce(7.0 * main), "ce_tib": np_sym_ce(7.0 * mat["fs"]),
                "pc_video": np_pc(t, v), "pc_tib": np_pc(t, v_fs)}
    expected["loss"] = (0.8 * expected["ce_main"] + 0.2 * expected["ce_tib"]
                        + 0.001 * (expected["pc_video"] + expected["pc_tib"]))
    for key, value in expected.items():
        assert parts[key].item() == pytest.approx(value, rel=1e-4, abs=1e-4), key
    assert loss.item() == pytest.approx(expected["loss"], rel=1e-4)


def test_pearson_constraint_zero_for_identical_and_positive_otherwise():
    g = torch.Generator().manual_seed(11)
    a = torch.randn(6, D, generator=g)
    assert pearson_constraint(a, a).item() == pytest.approx(0.0, abs=1e-5)
    assert pearson_constraint(a, 3 * a + 1).item() == pytest.approx(0.0, abs=1e-5)  # scale/shift invariant
    assert pearson_constraint(a, -a).item() == pytest.approx(0.14 * 4 * D, rel=1e-4)  # C_dd = -1
    assert pearson_constraint(a, torch.randn(6, D, generator=g)).item() > 0.1


def test_gradient_reaches_w_g_and_w_f():
    head = make_head(False)
    frames, patches, _ = bank(4, seed=12)
    text = frames.mean(1) + 0.1 * torch.randn(4, D, generator=torch.Generator().manual_seed(13))
    scale = torch.tensor(10.0, requires_grad=True)
    loss, _ = eercf_loss(text, frames, patches, head, scale)
    loss.backward()
    assert head.w_g.grad is not None and head.w_g.grad.abs().sum() > 0
    assert head.w_f.grad is not None and head.w_f.grad.abs().sum() > 0
    assert scale.grad is not None and scale.grad != 0


# ---------------------------------------------------------------- the head in checkpoints


def copy_model(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def rewrite_weights(folder, drop_prefix: str) -> None:
    """Rewrite a checkpoint's weights without the tensors named drop_prefix* (an older or broken file)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    kept = {k: v for k, v in load_file(path).items() if not k.startswith(drop_prefix)}
    save_file(kept, path, metadata={"format": "pt"})


def test_saved_head_is_read_back_alone_and_with_the_model(tiny_model_dir, tmp_path):
    from pigcli.model.checkpoint import load_checkpoint, ModelFolder, save_checkpoint

    loaded = load_checkpoint(tiny_model_dir)
    assert torch.equal(loaded.model.eercf.w_f, torch.eye(loaded.model.config.num_frames))  # untrained: identities
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        loaded.model.eercf.w_f.copy_(torch.rand(loaded.model.eercf.w_f.shape, generator=g))
        loaded.model.eercf.w_g.add_(0.1 * torch.randn(loaded.model.eercf.w_g.shape, generator=g))
    folder = save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "trained")
    alone, whole = ModelFolder.read(folder).load_eercf_head(), load_checkpoint(folder).model.eercf
    for name in ("w_g", "w_f"):
        assert torch.equal(getattr(alone, name), getattr(loaded.model.eercf, name))
        assert torch.equal(getattr(whole, name), getattr(loaded.model.eercf, name))


def test_checkpoint_without_a_head_loads_an_untrained_one(tiny_model_dir, tmp_path):
    from pigcli.model.checkpoint import load_checkpoint, ModelFolder

    folder = copy_model(tiny_model_dir, tmp_path / "old")
    rewrite_weights(folder, "eercf.")
    for head in (load_checkpoint(folder).model.eercf, ModelFolder.read(folder).load_eercf_head()):
        assert torch.equal(head.w_f, torch.eye(head.w_f.shape[0])) and torch.equal(head.w_g, torch.eye(head.w_g.shape[0]))


def test_checkpoint_missing_model_weights_is_refused(tiny_model_dir, tmp_path):
    from pigcli.errors import PigError
    from pigcli.model.checkpoint import load_checkpoint

    folder = copy_model(tiny_model_dir, tmp_path / "broken")
    rewrite_weights(folder, "fusioner.")
    with pytest.raises(PigError, match="fusioner.*pig init or pig train"):
        load_checkpoint(folder)


def test_inspect_tells_whether_the_head_was_trained(tiny_model_dir, tmp_path):
    from pigcli.tools.inspect import describe
    from pigcli.model.checkpoint import load_checkpoint, save_checkpoint

    assert describe(tiny_model_dir)["rerank_head"].startswith("untrained")
    loaded = load_checkpoint(tiny_model_dir)
    with torch.no_grad():
        loaded.model.eercf.w_f[0, 1] = 0.25
    trained = save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "trained")
    assert describe(trained)["rerank_head"] == "trained (largest change from the identity: 0.25)"
