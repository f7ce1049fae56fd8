"""What `pig train` does on a GPU, checked without one: the device chosen (torch.cuda monkeypatched as
a machine with GPUs), and the parts of a fast step that a CPU can hold (sync-free steps, captions
tokenized once, the checkpoint cadence, fused attention equal to the eager path)."""

from __future__ import annotations

import json
import os
import signal
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.cuda._utils import _get_device_index
from torch.utils._python_dispatch import TorchDispatchMode

from pigcli.core.device import resolve_device
from pigcli.errors import UsageError
from pigcli.train import TrainConfig, train
from pigcli.train.config import parse_cadence
from pigcli.train.distributed import DistContext
from pigcli.train.loop import training_device

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeCuda:
    """torch.cuda of a machine with `count` GPUs, current GPU 0; records set_device's arguments and
    refuses a device without an index as torch does."""

    def __init__(self, monkeypatch, count: int = 2):
        self.count, self.current, self.set = count, 0, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)

    def set_device(self, device) -> None:
        self.current = _get_device_index(device)  # torch's own check: ValueError for 'cuda' without index
        self.set.append(self.current)


def chosen(device: str, context: DistContext = DistContext()) -> torch.device:
    return training_device(TrainConfig(output="unused", captions="unused", device=device), context)[0]


@pytest.mark.parametrize("device, expected", [("auto", "cuda:0"), ("cuda", "cuda:0"), ("cuda:1", "cuda:1"),
                                              ("cpu", "cpu")])
def test_training_device_on_a_gpu_machine(monkeypatch, device, expected):
    cuda = FakeCuda(monkeypatch)
    got = chosen(device)
    assert got == torch.device(expected)
    assert cuda.set == ([got.index] if got.type == "cuda" else [])


def test_cuda_means_the_current_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=4)
    cuda.current = 3  # e.g. set by the caller before pig's train()
    assert chosen("cuda") == torch.device("cuda", 3)


@pytest.mark.parametrize("device", ["auto", "cuda", "cuda:0"])
def test_torchrun_gives_each_process_its_local_rank_gpu(monkeypatch, device):
    cuda = FakeCuda(monkeypatch)
    assert chosen(device, DistContext(rank=1, world_size=2, local_rank=1)) == torch.device("cuda", 1)
    assert cuda.set == [1]


def test_torchrun_binds_nccl_to_the_local_rank_gpu(monkeypatch):
    """NCCL takes the current GPU when its process group starts: each rank's own, not GPU 0 for all."""
    import torch.distributed as dist

    from pigcli.train.distributed import setup

    cuda = FakeCuda(monkeypatch, count=4)
    started = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(started))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: started.append((backend, cuda.current)))
    monkeypatch.setattr(dist, "get_rank", lambda: 7)
    monkeypatch.setattr(dist, "get_world_size", lambda: 8)
    assert setup("cuda") == DistContext(rank=7, world_size=8, local_rank=3)
    assert started == [("nccl", 3)]


@pytest.mark.parametrize("overrides, message", [(dict(workers=-1), "--workers"), (dict(log_every=0), "--log-every"),
                                                (dict(save_every="often"), "--save-every")])
def test_new_settings_are_checked(overrides, message):
    from pigcli.train.config import check_config

    with pytest.raises(UsageError, match=message):
        check_config(TrainConfig(output="unused", captions="unused", features="f.h5", **overrides), (1,))


def test_no_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=0)
    assert chosen("auto") == torch.device("cpu") and cuda.set == []
    with pytest.raises(UsageError, match="no CUDA GPU"):
        chosen("cuda")


@pytest.mark.parametrize("device, message", [("cuda:2", "sees 2 CUDA GPUs"), ("gpu", "auto, cpu, cuda or cuda:N"),
                                             ("mps", "auto, cpu, cuda or cuda:N")])
def test_devices_that_do_not_exist_are_usage_errors(monkeypatch, device, message):
    FakeCuda(monkeypatch)
    with pytest.raises(UsageError, match=message):
        resolve_device(device)


def test_epochs_record_the_gpu_memory_peak_on_a_gpu_only(monkeypatch):
    from pigcli.train.loop import peak_memory

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**30 + 2**19 if device.index == 1
                        else 0)
    assert peak_memory(torch.device("cuda", 1)) == {"gpu_peak_mb": 3072.5}
    assert peak_memory(torch.device("cpu")) == {}


def test_every_stage_gets_an_indexed_gpu_and_gpu_precision(monkeypatch):
    FakeCuda(monkeypatch)
    assert resolve_device("auto") == (torch.device("cuda", 0), "bf16")
    assert resolve_device("cuda", "fp16") == (torch.device("cuda", 0), "fp16")


# --- a step that never waits for the device --------------------------------------------------------

# aten ops that make the host wait for a GPU: a number or a mask-dependent shape read back
HOST_WAITS = {"_local_scalar_dense", "nonzero", "masked_select", "item"}
# tensor methods that copy to the host (on a CPU tensor some are no-ops that reach no aten op)
HOST_COPIES = ("cpu", "tolist", "item", "__float__", "__int__", "__bool__", "__index__")


class HostWaits(TorchDispatchMode):
    """Records what inside the block would make the host wait for a GPU: the aten ops above and calls of
    the methods above from outside torch, each with the first frame outside torch that asked for it."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.seen: list[str] = []
        self.monkeypatch = monkeypatch

    def __enter__(self):
        for name in HOST_COPIES:
            self.monkeypatch.setattr(torch.Tensor, name, self._watched(name, getattr(torch.Tensor, name)))
        return super().__enter__()

    def __exit__(self, *exc):
        self.monkeypatch.undo()
        return super().__exit__(*exc)

    def _watched(self, name, method):
        def watched(tensor, *args, **kwargs):
            self._record(name)
            return method(tensor, *args, **kwargs)
        return watched

    def _record(self, name: str) -> None:
        stack = traceback.extract_stack()[:-2]
        outside = [f for f in stack if "/torch/" not in f.filename and f.filename != __file__]
        if "/torch/" not in stack[-1].filename:
            self.seen.append(f"{name} at {Path(outside[-1].filename).name}:{outside[-1].lineno} {outside[-1].line}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        masked = name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                         for i in (args[1] if len(args) > 1 else []) if i is not None)
        if name in HOST_WAITS or masked:
            stack = traceback.extract_stack()
            caller = [f for f in stack if "/torch/" not in f.filename and f.filename != __file__][-1]
            self.seen.append(f"{name} at {Path(caller.filename).name}:{caller.lineno} {caller.line}")
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def frames_corpus(tmp_path_factory):
    """(train captions, model without dropout, its frames file, its extract file) of the training corpus."""
    from pigcli.model.factory import init_random
    from pigcli.model.pig import PigConfig
    from pigcli.stages.extract import extract
    from pigcli.stages.frames import frames as make_frames
    from test_train import write_corpus

    root = tmp_path_factory.mktemp("gpu_corpus")
    videos, captions, _ = write_corpus(root)
    model = init_random(root / "tiny-nodrop", "tiny", pig_config=PigConfig(fusion_dropout=0.0))
    make_frames([videos], root / "frames.h5", str(model), workers=0)
    extract([videos], root / "feats.h5", str(model), device="cpu", workers=0)
    return captions, model, root / "frames.h5", root / "feats.h5"


def run_config(frames_corpus, output: Path, **overrides) -> TrainConfig:
    captions, model, frames, _ = frames_corpus
    base = dict(output=output, captions=captions, model=str(model), frames=frames, phases="2", batch_size=4,
                steps=4, lr=1e-3, lr_clip=1e-3, device="cpu", workers=0)
    return TrainConfig(**{**base, **overrides})


def step_records(output: Path) -> list[dict]:
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "step"]


@pytest.mark.parametrize("loss_scale", [None, 1024.0])
def test_a_training_step_never_waits_for_the_device(frames_corpus, tmp_path, monkeypatch, loss_scale):
    """Full fine-tune from a frames file (backbone, ITS selection, generator, fusioner, both losses, with
    and without fp16's loss scaling) with AdamW fused as on a GPU: no number or mask is read back inside
    a step; the losses (and the scaler's numbers) are read every --log-every steps."""
    import pigcli.train.loop as loop

    waits = HostWaits(pytest.MonkeyPatch())
    real_step = loop.Trainer.train_step

    def watched(self, *args, **kwargs):
        with waits:
            return real_step(self, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "train_step", watched)
    monkeypatch.setattr(loop, "fused_adamw", lambda device: True)  # as on a GPU
    train(run_config(frames_corpus, tmp_path / "run", log_every=3, method="pig", loss_scale=loss_scale))
    assert waits.seen == []
    records = step_records(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    if loss_scale:
        assert [(r["loss_scale"], r["skipped"]) for r in records] == [(1024.0, False)] * 4


def test_logging_every_n_steps_logs_the_same_numbers(frames_corpus, tmp_path):
    every = {n: train(run_config(frames_corpus, tmp_path / f"every{n}", log_every=n)) for n in (1, 3)}
    one, three = step_records(tmp_path / "every1"), step_records(tmp_path / "every3")
    assert len(one) == 4 and one == three
    assert every[1].final_loss == every[3].final_loss


def test_captions_are_tokenized_once_as_each_batch_would_be(tiny_model):
    from pigcli.core.text import tokenize
    from pigcli.train.data import CaptionTokens, PairSet

    pairs = PairSet(["a", "b", "c"], [["short"], ["a much longer caption than the others", "mid length one"],
                                      ["x " * 80]])  # the last is cut to the limit
    tokens = CaptionTokens(tiny_model.tokenizer, pairs, 50)
    for videos, captions in (([0, 2], [0, 0]), ([1, 0], [1, 0]), ([1, 1], [0, 1]), ([0], [0])):
        texts = [pairs.captions[v][c] for v, c in zip(videos, captions)]
        expected = tokenize(tiny_model.tokenizer, texts, 50)["input_ids"]
        assert torch.equal(tokens.batch(np.array(videos), np.array(captions)), expected)


def test_its_selection_on_the_device_chooses_as_pig_select_does():
    from pigcli.core.selection import choose_patches, select_patch_tokens

    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (5, 40), generator=generator).float() / 6  # many ties: lower index first
    patches = torch.randn(5, 40, 3, generator=generator)
    chosen = torch.from_numpy(choose_patches(scores.numpy(), 7))
    expected = torch.stack([patches[i, chosen[i]] for i in range(5)])
    assert torch.equal(select_patch_tokens(patches, scores, 7), expected)


# --- the state's cadence, SIGTERM ------------------------------------------------------------------

def saved_steps(monkeypatch) -> list[tuple[int, bool]]:
    """(step, with optimiser) of every state.pt written from now on."""
    import pigcli.train.loop as loop

    saved = []
    real = loop.save_state

    def spy(path, settings, position, model, optimizer, *args):
        saved.append((position["step"], optimizer is not None))
        return real(path, settings, position, model, optimizer, *args)

    monkeypatch.setattr(loop, "save_state", spy)
    return saved


def test_state_is_saved_on_the_cadence_and_at_the_end_not_every_epoch(frames_corpus, tmp_path, monkeypatch):
    saved = saved_steps(monkeypatch)
    features = dict(frames=None, features=frames_corpus[3], freeze_backbone=True, batch_size=2, steps=None, epochs=3)
    train(run_config(frames_corpus, tmp_path / "default", **features))  # 4 steps per epoch, 3 epochs
    assert saved == [(12, False)]  # the phase's end only (the default cadence is 30 minutes)
    saved.clear()
    train(run_config(frames_corpus, tmp_path / "steps", save_every="5steps", **features))
    assert saved == [(5, True), (10, True), (12, False)]


@pytest.mark.parametrize("value, expected", [("90s", ("seconds", 90.0)), ("10m", ("seconds", 600.0)),
                                             ("1.5h", ("seconds", 5400.0)), ("500steps", ("steps", 500)),
                                             ("1step", ("steps", 1))])
def test_save_every_values(value, expected):
    assert parse_cadence(value) == expected


@pytest.mark.parametrize("value", ["10", "0m", "2.5steps", "epoch", "-3s"])
def test_save_every_refuses_other_values(value):
    with pytest.raises(UsageError, match="--save-every"):
        parse_cadence(value)


def test_sigterm_saves_the_state_and_the_resumed_run_equals_an_uninterrupted_one(frames_corpus, tmp_path,
                                                                                  monkeypatch):
    import pigcli.train.loop as loop
    from test_train import weights

    straight = train(run_config(frames_corpus, tmp_path / "straight", log_every=3))
    real_step = loop.Trainer.train_step

    def terminated_at_step_2(self, *args, **kwargs):
        real_step(self, *args, **kwargs)
        if self.position.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler ending the job does

    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(loop.Trainer, "train_step", terminated_at_step_2)
    stopped = train(run_config(frames_corpus, tmp_path / "run", log_every=3))
    assert stopped.interrupted and stopped.stopped and stopped.steps == 2 and stopped.last is None
    assert signal.getsignal(signal.SIGTERM) == handler  # the handler is pig train's only while it runs
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["position"]["step"] == 2
    monkeypatch.setattr(loop.Trainer, "train_step", real_step)
    resumed = train(run_config(frames_corpus, tmp_path / "run", log_every=3, resume=True))
    a, b = weights(straight.last), weights(resumed.last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert step_records(tmp_path / "run") == step_records(tmp_path / "straight")


def test_cli_exits_143_on_sigterm(frames_corpus, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import pigcli.train.loop as loop
    from pigcli.cli import app

    real_step = loop.Trainer.train_step

    def terminated(self, *args, **kwargs):
        real_step(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop.Trainer, "train_step", terminated)
    captions, model, frames, _ = frames_corpus
    args = ["train", "--captions", captions, "-m", model, "--frames", frames, "--phases", "2", "--batch-size", "4",
            "--steps", "3", "--device", "cpu", "--workers", "0", "-o", tmp_path / "run"]
    outcome = CliRunner().invoke(app, [str(a) for a in args])
    assert outcome.exit_code == 143, outcome.output
    assert (tmp_path / "run" / "state.pt").is_file() and not (tmp_path / "run" / "last").exists()


# --- fused kernels ---------------------------------------------------------------------------------

def test_fused_adamw_steps_as_the_plain_one(tiny_model_dir):
    from pigcli.model.checkpoint import load_checkpoint
    from pigcli.train.optim import fused_adamw, make_optimizer, set_trainable

    assert fused_adamw(torch.device("cuda", 0)) and not fused_adamw(torch.device("cpu"))
    results = []
    for fused in (False, True):
        pig = load_checkpoint(tiny_model_dir).model
        set_trainable(pig, 2, "meanpool", False, "vip")
        optimizer, _ = make_optimizer(pig, 1e-3, 1e-4, 0.2, 0.0, 10, fused=fused)
        assert optimizer.defaults.get("fused") is (True if fused else None)
        for step in range(3):
            torch.manual_seed(step)
            for param in pig.parameters():
                param.grad = torch.randn_like(param) if param.requires_grad else None
            optimizer.step()
        results.append(pig.state_dict())
    plain, fused = results
    assert max((plain[k] - fused[k]).abs().max().item() for k in plain) < 1e-6


def test_clip_towers_use_fused_attention_equal_to_eager(tiny_model_dir):
    """Both towers (and the generator's copy of the text layers) run transformers' sdpa attention:
    PyTorch's fused kernel. It equals the eager softmax(QK^T)V path within float32 rounding."""
    from transformers import PretrainedConfig

    from pigcli.model.checkpoint import load_checkpoint
    from pigcli.inputs.video import normalize

    fused, eager = load_checkpoint(tiny_model_dir).model, load_checkpoint(tiny_model_dir).model
    configs = {id(m.config): m.config for m in eager.modules() if isinstance(getattr(m, "config", None),
                                                                           PretrainedConfig)}
    assert {c._attn_implementation for c in configs.values()} == {"sdpa"}
    for config in configs.values():
        config._attn_implementation = "eager"
    generator = torch.Generator().manual_seed(0)
    cfg = fused.config
    pixels = torch.randint(0, 256, (2, cfg.num_frames, 3, fused.image_size, fused.image_size), dtype=torch.uint8,
                           generator=generator)
    frames = normalize(pixels, cfg.image_mean, cfg.image_std)
    ids = torch.randint(0, 500, (3, 12), generator=generator)
    ids[:, 0], ids[:, -1] = 512, 513  # BOS, EOS of the byte tokenizer
    queries = torch.randn(2, 6, fused.embed_dim, generator=generator)
    with torch.no_grad():
        a, b = fused.encode_video(frames), eager.encode_video(frames)
        pairs = [(a.video, b.video), (a.patches, b.patches), (a.its_score, b.its_score),
                 (fused.text_features(ids), eager.text_features(ids)), (fused.generate(queries), eager.generate(queries))]
    for x, y in pairs:
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


# --- the data path ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cpus, processes, expected", [(16, 1, 15), (16, 4, 3), (2, 1, 1), (1, 1, 1), (8, 16, 1)])
def test_default_workers_follow_the_cpus(monkeypatch, cpus, processes, expected):
    from pigcli.core.device import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    assert default_workers() == expected


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_compiled_step_trains_as_the_plain_one(frames_corpus, tmp_path, monkeypatch):
    """--compile wraps the step in torch.compile (dynamo's eager backend here: inductor takes minutes on a
    busy CPU); the step's graph breaks (the generator's layers, ITS selection) keep the same numbers."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    features = dict(frames=None, features=frames_corpus[3], freeze_backbone=True, steps=2)
    plain = train(run_config(frames_corpus, tmp_path / "plain", **features))
    compiled = train(run_config(frames_corpus, tmp_path / "compiled", compile=True, **features))
    losses = [[r["loss"] for r in step_records(tmp_path / name)] for name in ("plain", "compiled")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5) and compiled.steps == plain.steps == 2


@pytest.mark.slow
def test_sigterm_to_the_job_stops_pig_train_resumably(frames_corpus, tmp_path, pig_cache):
    """SIGTERM to the whole process group (as a scheduler ending a job sends it), reading workers included:
    pig train saves its state and exits 143; --resume continues from the step it stopped at."""
    import subprocess
    import sys
    import time

    from conftest import pig_env

    captions, model, frames, _ = frames_corpus
    args = [sys.executable, "-m", "pigcli", "train", "--captions", captions, "-m", model, "--frames", frames,
            "--phases", "2", "--batch-size", "4", "--steps", "400", "--device", "cpu", "--workers", "1",
            "--log-every", "1", "-o", tmp_path / "run"]
    env = pig_env(pig_cache, {"OMP_NUM_THREADS": "1"})
    proc = subprocess.Popen([str(a) for a in args], env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.monotonic() + 180
    while not (log.is_file() and '"event": "step"' in log.read_text()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    stopped_at = torch.load(tmp_path / "run" / "state.pt", weights_only=True)["position"]["step"]
    assert 1 <= stopped_at < 400 and "by SIGTERM" in err
    resumed = subprocess.run([str(a) for a in args + ["--resume", "--stop-after", "2"]], env=env,
                             capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["step"] for r in step_records(tmp_path / "run")] == list(range(1, stopped_at + 3))
