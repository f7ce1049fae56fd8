"""Mixed precision and memory in `pig train` (issue #12 item 5): the loss scaler that fp16 needs, checked
on the CPU in fp32 with a forced scale; inf/NaN steps skipped; the scale kept across --resume; fp16 and
bf16 runs; gradient checkpointing giving the same gradients.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from pigcli.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(pig, size: int = 3, seed: int = 0):
    """Random uint8 frames, token ids and an all-valid mask: one training batch for TrainStep."""
    generator = torch.Generator().manual_seed(seed)
    frames = pig.config.num_frames
    pixels = torch.randint(0, 256, (size, frames, 3, pig.image_size, pig.image_size), generator=generator,
                           dtype=torch.uint8)
    ids = torch.randint(0, 500, (size, 6), generator=generator)
    return ids, torch.ones_like(ids), torch.ones(size, dtype=torch.bool), pixels


def one_step(pig, scaler, loss_factor: float = 1.0, grad_checkpointing: bool = False):
    """Phase 2 (everything trains) on one batch with AdamW; returns what the scaler reported."""
    from pigcli.train.forward import TrainStep
    from pigcli.train.optim import make_optimizer, set_trainable

    set_trainable(pig, 2, "pig", False, "vip")
    optimizer, _ = make_optimizer(pig, 1e-3, 1e-4, 0.2, 0.0, 10)
    step = TrainStep(pig, "pig", 2, 1.0, "vip", grad_checkpointing=grad_checkpointing).eval()  # eval: no dropout
    ids, mask, valid, pixels = batch(pig)
    loss = step(ids, mask, valid, pixels=pixels)["loss"] * loss_factor
    optimizer.zero_grad(set_to_none=True)
    return scaler.step(loss, optimizer, grad_clip=1.0)


@pytest.fixture
def two_models(tiny_model):
    """Two independent copies of the tiny model (tests change their weights)."""
    return copy.deepcopy(tiny_model.model), copy.deepcopy(tiny_model.model)


def test_scaled_step_equals_the_unscaled_step(two_models):
    """backward(S loss), unscale, clip, AdamW: the same update as without scaling (S = 1024 and 2**16)."""
    from pigcli.train.precision import LossScaler

    plain, scaled = two_models
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    assert one_step(plain, LossScaler(torch.device("cpu"), "fp32")) == {}
    report = one_step(scaled, LossScaler(torch.device("cpu"), "fp32", initial_scale=1024.0))
    assert report == {"loss_scale": 1024.0, "skipped": False}
    a, b = plain.state_dict(), scaled.state_dict()
    moved = [k for k in a if not torch.equal(a[k], before[k])]
    assert len(moved) > 50  # the step changed the backbone, text tower, generator, fusioner
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-7), key


def test_non_finite_gradients_skip_the_step_and_halve_the_scale(tiny_model):
    from pigcli.train.precision import LossScaler

    pig = copy.deepcopy(tiny_model.model)
    before = {k: v.clone() for k, v in pig.state_dict().items()}
    scaler = LossScaler(torch.device("cpu"), "fp32", initial_scale=1024.0)
    assert one_step(pig, scaler, loss_factor=float("inf")) == {"loss_scale": 1024.0, "skipped": True}
    assert scaler.scaler.get_scale() == 512.0
    after = pig.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_gradient_checkpointing_gives_the_same_gradients(two_models):
    from pigcli.train.forward import TrainStep
    from pigcli.train.optim import set_trainable

    grads = []
    for pig, checkpointing in zip(two_models, (False, True)):
        set_trainable(pig, 2, "pig", False, "vip")
        step = TrainStep(pig, "pig", 2, 1.0, "vip", grad_checkpointing=checkpointing).eval()
        ids, mask, valid, pixels = batch(pig)
        step(ids, mask, valid, pixels=pixels)["loss"].backward()
        grads.append({n: p.grad for n, p in pig.named_parameters() if p.grad is not None})
    plain, checkpointed = grads
    assert set(plain) == set(checkpointed) and any(n.startswith("clip.vision_model.encoder") for n in plain)
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], rtol=1e-5, atol=1e-7), name


def test_checkpointed_layers_keep_only_their_inputs_for_backward(tiny_model):
    """What checkpointing saves memory on: the tensors autograd keeps from the forward for backward. Without it,
    every layer's activations (about 30 tensors a layer); with it, each layer's input alone."""
    from pigcli.model.clip_compat import checkpointed_layers, run_layers

    layers = copy.deepcopy(tiny_model.model.clip.vision_model.encoder.layers)
    hidden = torch.randn(2, 5, layers[0].self_attn.embed_dim)
    kept = {}
    for enabled in (False, True):
        count = [0]

        def pack(tensor, count=count):
            count[0] += 1
            return tensor

        with checkpointed_layers(enabled), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = run_layers(layers, hidden, None)
        out.sum().backward()  # recomputes the layers, and works
        kept[enabled] = count[0]
    assert kept[True] <= len(layers) < 10 * len(layers) <= kept[False]


@pytest.fixture(scope="module")
def feature_run(tiny_model_dir, tiny_extract, tmp_path_factory):
    """Captions for the conftest videos and the settings of a short phase-2 run on their features."""
    from conftest import VIDEO_FOLDER_SPECS

    captions = tmp_path_factory.mktemp("precision") / "captions.csv"
    captions.write_text("video_id,caption\n" + "".join(f"{Path(n).stem},video {Path(n).stem} number {i}\n"
                                                       for i, n in enumerate(VIDEO_FOLDER_SPECS)))
    return dict(captions=captions, model=str(tiny_model_dir), features=tiny_extract, phases="2", epochs=2,
                batch_size=3, lr=1e-3, lr_clip=1e-3, freeze_backbone=True, device="cpu", workers=0)


def steps(output: Path) -> list[dict]:
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "step"]


def test_resume_keeps_the_loss_scale(feature_run, tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(output=out, stop_after=2, loss_scale=1024.0, **feature_run))
    assert [(r["loss_scale"], r["skipped"]) for r in steps(out)] == [(1024.0, False)] * 2
    state = torch.load(out / "state.pt", weights_only=False)
    assert state["scaler"]["scale"] == 1024.0
    state["scaler"]["scale"] = 256.0  # as if earlier steps had overflowed
    torch.save(state, out / "state.pt")
    result = train(TrainConfig(output=out, resume=True, loss_scale=1024.0, **feature_run))
    assert result.steps == 4 and [r["loss_scale"] for r in steps(out)][2:] == [256.0, 256.0]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_runs_train(feature_run, tmp_path, precision):
    """fp16 (loss scaling on, recorded per step) and bf16 (no scaling) train on the CPU too."""
    out = tmp_path / precision
    result = train(TrainConfig(output=out, precision=precision, steps=2, **feature_run))
    start = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][0]
    assert start["precision"] == precision and start["loss_scaling"] == (precision == "fp16")
    assert result.steps == 2 and result.final_loss == pytest.approx(result.final_loss)  # finite
    if precision == "fp16":
        assert [r["loss_scale"] for r in steps(out)][0] == 2.0**16
    else:
        assert "loss_scale" not in steps(out)[0]
