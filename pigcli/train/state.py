"""OUT/state.pt: what --resume needs to continue a run exactly as if it had not stopped.

The state holds the run's settings (`TrainConfig.identity`, which a resumed run must match), its
position (phase, epoch, batch, steps), the model, optimiser and schedule, the RNG states (dropout
continues with the same random numbers) and the metrics and losses recorded so far. It is written
atomically: a run killed while saving leaves the previous state.

When: on a cadence (--save-every: a time or a number of steps, `SaveCadence`), at the end of each phase,
at --stop-after, and when the process gets SIGTERM (`StopSignal`: a scheduler ending the job); not every
epoch, since a full state (model and optimiser) takes seconds to write for a B/32.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import torch

from ..errors import UsageError
from .config import ADDED_SETTINGS, parse_cadence

STATE_FORMAT = "pig-train-state/2"  # /2: training phases (position phase_index, phase_step; settings 'phases')


def save_state(path: Path, settings: dict, position: dict, model, optimizer, scheduler, device: torch.device,
               progress: dict) -> None:
    """Write the state; optimizer and scheduler are None between phases (a phase starts fresh ones)."""
    state = {"format": STATE_FORMAT, "config": settings, "position": position, "model": model.state_dict(),
             "optimizer": optimizer.state_dict() if optimizer else None,
             "scheduler": scheduler.state_dict() if scheduler else None, "rng": rng_state(device), **progress}
    atomic_torch_save(state, path)


def load_state(path: Path, settings: dict) -> dict:
    """Read a state written with these settings; a usage error for another format or other settings."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise UsageError(f"{path} is not a pig training state that this version resumes "
                         f"({state.get('format')!r}, expected {STATE_FORMAT!r}); start a new run with another -o")
    saved = {**ADDED_SETTINGS, **state["config"]}
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise UsageError(f"--resume with other settings than the run in {path.parent} ({details}); "
                         "resume with the same options, or start a new run with another -o")
    return state


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def atomic_torch_save(obj, path: Path) -> None:
    from ..safe_write import replacing

    with replacing(path) as tmp:
        torch.save(obj, tmp)


class SaveCadence:
    """When the state is due again: --save-every's time or steps since it was last saved."""

    def __init__(self, every: str, step: int = 0):
        self.kind, self.amount = parse_cadence(every)
        self.saved(step)

    def saved(self, step: int) -> None:
        self.last_step, self.last_time = step, time.monotonic()

    def due(self, step: int, clock: bool = True) -> bool:
        """clock=False: steps only (torchrun ranks read the clock at agreed steps, so that they agree)."""
        if self.kind == "steps":
            return step - self.last_step >= self.amount
        return clock and time.monotonic() - self.last_time >= self.amount


class StopSignal:
    """SIGTERM asks the run to stop: the step in progress ends, the state is saved, the run is resumable."""

    def __init__(self):
        self.received = False

    @contextlib.contextmanager
    def installed(self):
        """The handler while the block runs (the previous one after); none outside the main thread,
        where Python cannot install one."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self._receive)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _receive(self, _signum, _frame) -> None:
        self.received = True
