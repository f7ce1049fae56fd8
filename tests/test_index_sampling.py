"""pig extract / pig index warn when the videos are sampled otherwise than the model's training frames were."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def centre_trained_model(tmp_path_factory, tiny_model_dir):
    """The tiny model as pig train saves one trained on centre-sampled frames (its config records the run)."""
    from pigcli.model.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(tiny_model_dir)
    loaded.model.config.extra["train"] = {"settings": {"sampling": "centre"}, "phase": 2, "epoch": 1}
    return save_checkpoint(loaded.model, loaded.tokenizer, tmp_path_factory.mktemp("trained") / "best")


@pytest.mark.parametrize("sampling, warned", [("uniform", True), ("centre", False)])
def test_extract_warns_when_sampling_differs_from_training(centre_trained_model, make_video, tmp_path, capsys,
                                                           sampling, warned) -> None:
    from pigcli.stages.extract import ExtractSettings, extract

    video = make_video("a.mp4", num_frames=12)
    extract([video], tmp_path / "feats.h5", str(centre_trained_model), settings=ExtractSettings(sampling=sampling),
            device="cpu", workers=0)
    err = capsys.readouterr().err
    assert ("trained on frames sampled with --sampling centre" in err) is warned, err
    assert ("pass --sampling centre" in err) is warned


def test_a_model_pig_train_did_not_make_gives_no_warning(tiny_model_dir, make_video, tmp_path, capsys) -> None:
    from pigcli.stages.extract import extract

    extract([make_video("a.mp4", num_frames=12)], tmp_path / "feats.h5", str(tiny_model_dir), device="cpu", workers=0)
    assert "sampling" not in capsys.readouterr().err
