"""`pig train --recipe` (issue #12 item 6): the official settings fill the options not given, explicit options
win, the run records them; and the warm-up + cosine schedule the recipe relies on, against its formula."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pigcli.cli import app
from pigcli.errors import UsageError
from pigcli.train.recipes import RECIPES, apply_recipe, check_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_recipe_fills_what_was_not_given_and_explicit_values_win():
    values, applied = apply_recipe("msrvtt-b32", {"lr": 1e-3, "epochs": 5, "seed": 0}, given={"lr"})
    assert values["lr"] == 1e-3 and "lr" not in applied                 # given: kept
    assert values["epochs"] == 100 and values["seed"] == 42              # defaults: replaced
    assert values["batch_size"] == 128 and values["precision"] == "fp16" and values["phases"] == "2"
    assert values["lr_clip"] == 3e-6 and values["warmup"] == 0.01 and values["recipe"] == "msrvtt-b32"
    with pytest.raises(UsageError, match="msrvtt-b32"):
        apply_recipe("nope", {}, set())


def test_every_recipe_value_names_its_source():
    for recipe in RECIPES.values():
        for item in (*recipe.train.values(), *recipe.model.values()):
            assert item.source.strip()


def test_model_settings_are_compared_with_the_recipe():
    pig = {"num_frames": 12, "num_proxies": 3, "select_k": 16, "max_text_tokens": 32}
    differences = check_model("msrvtt-b32", pig, {"vision_config": {"image_size": 224}})
    assert len(differences) == 1 and differences[0].startswith("max_text_tokens is 32, the recipe's 50")


def test_warmup_cosine_schedule_values():
    """LR of the optimiser at a few steps: linear warm-up to the peak over round(0.1 T) steps, then
    0.5 (1 + cos(pi (s - w) / (T - w))) down to 0 (the official get_lr_sched 'cosine', 0-based steps)."""
    from pigcli.train.optim import make_optimizer

    model = torch.nn.Linear(3, 3)
    total, peak = 50, 3e-6
    optimizer, scheduler = make_optimizer(_Wrapped(model), peak, peak, 0.2, 0.1, total)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warm = 5
    expected = {0: peak / warm, 4: peak, 5: peak, 17: peak * 0.5 * (1 + math.cos(math.pi * 12 / 45)),
                27: peak * 0.5 * (1 + math.cos(math.pi * 22 / 45)), 49: peak * 0.5 * (1 + math.cos(math.pi * 44 / 45))}
    for step, lr in expected.items():
        assert seen[step] == pytest.approx(lr, rel=1e-9), step
    assert seen[28] < peak / 2 < seen[27]  # half way through the decay: (27.5 - 5) / 45


class _Wrapped(torch.nn.Module):
    """make_optimizer groups parameters by pig's names: a CLIP-side name for a plain layer."""

    def __init__(self, layer):
        super().__init__()
        self.clip = layer


def test_train_with_recipe_records_it_and_reports_what_it_set(tiny_model_dir, tiny_extract, tmp_path):
    from conftest import VIDEO_FOLDER_SPECS

    captions = tmp_path / "captions.csv"
    captions.write_text("video_id,caption\n" + "".join(f"{Path(n).stem},video {Path(n).stem}\n"
                                                       for n in VIDEO_FOLDER_SPECS))
    args = ["train", "--recipe", "msrvtt-b32", "--captions", str(captions), "-m", str(tiny_model_dir),
            "--features", str(tiny_extract), "--freeze-backbone", "--batch-size", "3", "--steps", "1",
            "--lr", "1e-3", "--precision", "fp32", "--device", "cpu", "--workers", "0", "-o", str(tmp_path / "run")]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    assert "recipe msrvtt-b32 set: --method pig --phases 2 --epochs 100" in outcome.stderr
    assert "--lr 1e-3" not in outcome.stderr.split("set:")[1].split("\n")[0]
    assert "image_size is 32, the recipe's 224" in outcome.stderr          # the tiny model is not B/32
    start = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])["settings"]
    assert start["recipe"] == "msrvtt-b32" and start["lr"] == [1e-3, 1e-3] and start["lr_clip"] == [3e-6, 3e-6]
    assert start["weight_decay"] == 0.2 and start["seed"] == 42 and start["precision"] == "fp32"
    assert start["batch_size"] == 3 and start["phases"] == [2]
