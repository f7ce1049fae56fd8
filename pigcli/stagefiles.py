"""What each stage file is and how it is made: the one place that knows the kinds of stage file.

store.py is the format (attributes, provenance, crash-safe writing, opening with checks); this module is
the catalogue on top of it: the command that makes each stage's file (every "make it with" and "rerun"
hint comes from MADE_BY), opening a file of a stage with that hint, following a file's recorded inputs
back to an upstream stage, the video settings extract and frames recorded, and the layout checks of an
extract file. Stages, training and the query side all ask here; core/ knows no files.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import PigError
from .inputs.video import UNRECORDED_RESIZE, UNRECORDED_SAMPLING
from .store import open_stage_file, read_attrs

MADE_BY = {
    "extract": "pig extract VIDEOS -m MODEL -o feats.h5",
    "frames": "pig frames VIDEOS -m MODEL -o frames.h5",
    "select": "pig select feats.h5 -k 16 -o sel.h5",
    "generate": "pig generate sel.h5 -m MODEL -o gen.h5",
    "fuse": "pig fuse gen.h5 -m MODEL -o index.h5 (or pig index VIDEOS -o index.h5)",
    "embed-text": "pig embed-text QUERIES -m MODEL -o q.h5",
}
FEATURE_STAGES = ("extract", "select", "generate")  # the files xpool scoring reads tokens from
UPSTREAM_STEPS = 8  # how far recorded inputs are followed back (extract -> ... -> fuse is 3)


def made_by(stage: str) -> str:
    """The command that makes a `stage` file, as error messages name it."""
    return MADE_BY[stage]


def open_stage(path: str | Path, *stages: str, note: str = "", random_access: bool = False):
    """Open a file of one of `stages` (store.open_stage_file), naming how the first of them is made
    (followed by `note`) if it is missing or of another kind."""
    return open_stage_file(path, stages, made_by(stages[0]) + note, random_access=random_access)


def upstream_file(path: str | Path, stages: tuple[str, ...]) -> Path | None:
    """Follow a stage file's recorded inputs back to the nearest file of one of `stages`."""
    current = Path(path)
    for _ in range(UPSTREAM_STEPS):
        attrs = read_attrs(current)
        if attrs.get("stage") in stages:
            return current
        parents = [i for i in attrs.get("inputs", []) if "stage" in i and Path(i["path"]).is_file()]
        if not parents:
            return None
        current = Path(parents[0]["path"])
    return None


def stage_of(path: str | Path) -> str:
    """The stage that wrote the file."""
    return str(read_attrs(path).get("stage"))


# --- recorded video settings ---------------------------------------------------------------------------

def recorded_settings(handle) -> dict:
    """The settings a stage file records ({} for a file without them)."""
    return json.loads(handle.attrs.get("settings", "{}"))


def recorded_sampling(settings: dict) -> str:
    """How extract or frames chose each video's frames (files from before the setting: the old rule)."""
    return str(settings.get("sampling", UNRECORDED_SAMPLING))


def recorded_resize(settings: dict) -> str:
    """How extract or frames resized each frame (files from before the setting: the old crop)."""
    return str(settings.get("resize", UNRECORDED_RESIZE))


# --- the layout of an extract file ---------------------------------------------------------------------

def corrupt_extract(path, detail: str) -> PigError:
    """The one message for an extract file whose contents do not fit together."""
    return PigError(f"{path} is damaged or not a complete extract file ({detail}); rerun: {made_by('extract')} --force")


def require_extract_layout(path, handle, names: tuple[str, ...] = ()) -> None:
    """Check what selecting patches reads of an extract file: ids [N], its_score [N, P],
    patch_index [N, K], patches [N, K, D] with K <= P, and `names` with N rows."""
    wanted = {"ids": 1, "its_score": 2, "patch_index": 2, "patches": 3, **{name: None for name in names}}
    shapes = {}
    for name, ndim in wanted.items():
        try:
            if name not in handle:
                raise corrupt_extract(path, f"no '{name}' dataset")
            shapes[name] = handle[name].shape
        except (OSError, RuntimeError, KeyError) as err:  # a damaged file's structure, as h5py reports it
            raise corrupt_extract(path, f"cannot read '{name}': {err}") from None
        if ndim is not None and len(shapes[name]) != ndim:
            raise corrupt_extract(path, f"'{name}' has shape {shapes[name]}, expected {ndim} dimensions")
    rows = shapes["ids"][0]
    for name, shape in shapes.items():
        if not shape or shape[0] != rows:
            raise corrupt_extract(path, f"'{name}' has {shape[0] if shape else 0} rows, 'ids' {rows}")
    if shapes["patches"][1] != shapes["patch_index"][1] or shapes["patch_index"][1] > shapes["its_score"][1]:
        raise corrupt_extract(path, f"'patches' {shapes['patches']}, 'patch_index' {shapes['patch_index']} and "
                                    f"'its_score' {shapes['its_score']} do not fit together")


def require_kept_patches(path, kept: int, k: int) -> None:
    """An extract file must keep at least the k patches the selector takes."""
    if kept < k:
        raise PigError(f"{path} kept {kept} patch tokens per video, fewer than the {k} the selector takes "
                       f"(-k, default the model's); rerun extract with --patches all (or top-N with N >= {k})")
