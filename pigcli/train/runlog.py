"""OUT/log.jsonl: the run log, one JSON object per line.

Events: 'start' (settings, data, devices), 'step' (losses, logit scale, learning rates), 'val' (before
training), 'epoch' (mean losses, validation metrics, timing) and 'end'. Step, val and epoch records
carry the training phase (key 'phase'; 0 before training) and the run's optimiser step count.
"""

from __future__ import annotations

import json
from pathlib import Path


class RunLog:
    """OUT/log.jsonl: one JSON object per step, validation and epoch (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume: drop what an interrupted run logged after its last saved state."""
        if not (self.enabled and self.path.is_file()):
            return
        records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in records if r.get("step", 0) <= step and not (r.get("step") == step and r["event"] == "end")]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
