"""Sharding the video stages (`extract`, `frames`) over processes, GPUs and nodes.

A shard I/N (0 <= I < N) holds the videos whose id hashes to I modulo N (sha256 of the UTF-8 id): the
share of a video depends on its id only, so it is the same however the inputs are listed, on every
node, and adding videos never moves the others. A shard's output goes beside the -o path, with
`.shard-I-of-N` before the suffix (feats.h5 -> feats.shard-1-of-4.h5), so shards never collide and
`pig merge` (stages/merge.py) joins them into the -o path.

Where the shard comes from (`resolve_shard`):
  --shard I/N     explicitly;
  --shard auto    torchrun's RANK/WORLD_SIZE, else a SLURM array's task (SLURM_ARRAY_TASK_ID minus
                  SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT);
  no --shard      torchrun's rank when WORLD_SIZE > 1 (N processes of one command would otherwise all
                  write the same -o), else the whole input. A SLURM array is only sharded when asked
                  (`--shard auto`): arrays also run one command over different inputs.

Under torchrun (`run_sharded`) each rank writes its shard on its own GPU (cuda:LOCAL_RANK), waits for the
others at a barrier, and rank 0 merges the shards into the -o path; the shard files stay as the cache of
a rerun (an unchanged rerun does nothing).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..console import log
from ..errors import UsageError

AUTO = "auto"
BARRIER_HOURS = 48  # how long torchrun ranks wait for the slowest shard (a stuck rank ends the job then)


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def holds(self, video_id: str) -> bool:
        return shard_of(video_id, self.count) == self.index


@dataclass(frozen=True)
class ShardPlan:
    """The shard of this process, and whether torchrun started it (then rank 0 merges at the end)."""
    shard: Shard | None
    torchrun: bool = False
    local_rank: int = 0


def shard_of(video_id: str, count: int) -> int:
    """The shard (0..count-1) of an id: stable across runs, machines and listings."""
    digest = hashlib.sha256(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """'I/N' -> Shard(I, N), with 0 <= I < N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--shard must be I/N (e.g. 0/4, counting from 0) or auto, not {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise UsageError(f"--shard {text}: I must be between 0 and N-1 (N >= 1)")
    return Shard(index, count)


def _env_int(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "")
    if not value.isdigit():
        raise UsageError(f"${name} must be a non-negative integer, not {value!r}")
    return int(value)


def torchrun_world(env: Mapping[str, str]) -> int:
    """WORLD_SIZE as torchrun sets it (1 outside torchrun)."""
    return _env_int(env, "WORLD_SIZE") if env.get("WORLD_SIZE") else 1


def resolve_shard(option: str | None, env: Mapping[str, str] | None = None) -> ShardPlan:
    """The shard this process works on, from --shard (None, 'auto' or 'I/N') and the environment."""
    env = os.environ if env is None else env
    world = torchrun_world(env)
    if option is not None and option != AUTO:
        if world > 1:
            raise UsageError("--shard I/N cannot be combined with torchrun, which gives each process its "
                             "shard (RANK/WORLD_SIZE): drop --shard")
        shard = parse_shard(option)
        return ShardPlan(shard if shard.count > 1 else None)
    if world > 1:
        return ShardPlan(Shard(_env_int(env, "RANK"), world), torchrun=True,
                         local_rank=_env_int(env, "LOCAL_RANK") if env.get("LOCAL_RANK") else 0)
    if option == AUTO:
        if env.get("SLURM_ARRAY_TASK_COUNT"):
            count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
            index = _env_int(env, "SLURM_ARRAY_TASK_ID") - int(env.get("SLURM_ARRAY_TASK_MIN") or 0)
            if not 0 <= index < count:
                raise UsageError(f"SLURM array task {index} is not between 0 and {count - 1}: use a contiguous "
                                 "--array, e.g. --array=0-3, or pass --shard I/N")
            return ShardPlan(Shard(index, count) if count > 1 else None)
        raise UsageError("--shard auto found neither torchrun (WORLD_SIZE) nor a SLURM array "
                         "(SLURM_ARRAY_TASK_COUNT); pass --shard I/N")
    return ShardPlan(None)


def shard_output(output: str | Path, shard: Shard | None) -> Path:
    """Where a shard's output goes: `.shard-I-of-N` before the suffix (the output itself without a shard)."""
    output = Path(output)
    if shard is None:
        return output
    return output.with_name(f"{output.stem}.{shard.tag}{output.suffix}")


def shard_entries(entries: list, shard: Shard | None) -> list:
    """The videos (anything with an .id) of the shard, in their listed order."""
    if shard is None:
        return entries
    mine = [e for e in entries if shard.holds(e.id)]
    log(f"shard {shard}: {len(mine)} of {len(entries)} videos")
    return mine


def shard_device(device: str, plan: ShardPlan) -> str:
    """Under torchrun, 'auto' or 'cuda' means this rank's own GPU, cuda:LOCAL_RANK."""
    if not plan.torchrun or device not in (AUTO, "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu" if device == AUTO else device  # resolve_device says what is wrong with 'cuda'
    torch.cuda.set_device(plan.local_rank)
    return f"cuda:{plan.local_rank}"


def run_sharded(run_shard: Callable[[Path, Shard | None], object], output: str | Path, plan: ShardPlan,
                force: bool = False):
    """run_shard(path, shard) -> its StageSummary, for this process's shard; under torchrun all ranks
    then meet at a barrier and rank 0 merges every shard into `output` (returns the merge's summary;
    other ranks return None)."""
    summary = run_shard(shard_output(output, plan.shard), plan.shard)
    if not plan.torchrun:
        return summary
    import torch.distributed as dist

    # gloo on every device: a barrier moves no tensors, and it needs no GPU set-up
    dist.init_process_group("gloo", timeout=datetime.timedelta(hours=BARRIER_HOURS))
    try:
        dist.barrier()
        if dist.get_rank() != 0:
            return None
        from .merge import merge

        count = plan.shard.count
        return merge([shard_output(output, Shard(i, count)) for i in range(count)], output, force=force)
    finally:
        dist.destroy_process_group()
