"""`pig inspect`: a readable summary of a stage file or a model folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import PigError
from ..store import failure_counts, read_attrs


def describe(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        return _describe_model(path)
    if not path.is_file():
        raise PigError(f"{path}: no such file or folder")
    try:
        attrs = read_attrs(path)
    except OSError as err:
        raise PigError(f"{path} is not an HDF5 file ({err})") from err
    return {
        "file": str(path),
        "stage": attrs.get("stage"),
        "schema": attrs.get("schema"),
        "pig_version": attrs.get("pig_version"),
        "created": attrs.get("created"),
        "model": attrs.get("model"),
        "settings": attrs.get("settings"),
        "inputs": attrs.get("inputs"),
        "timings": attrs.get("timings"),
        "datasets": _datasets(path),
        "failures": dict(failure_counts(path).most_common(10)),
    }


def _datasets(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as handle:
        return {name: {"shape": list(handle[name].shape), "dtype": str(handle[name].dtype)} for name in handle}


def _describe_model(path: Path) -> dict:
    from ..model.checkpoint import ModelFolder

    folder = ModelFolder.read(path)
    clip = folder.clip_config
    return {
        "model": str(path),
        **folder.identity.to_dict(),
        "pig": folder.config.to_dict(),
        "clip": {"projection_dim": clip.get("projection_dim"),
                 "vision": {k: clip["vision_config"].get(k) for k in ("image_size", "patch_size", "hidden_size", "num_hidden_layers")},
                 "text": {k: clip["text_config"].get(k) for k in ("hidden_size", "num_hidden_layers", "vocab_size")}},
        "rerank_head": _rerank_head_state(folder),
        "rerank": _rerank_setting(folder),
    }


def _rerank_setting(folder):
    """rerank.json (pig tune-rerank), or a line saying there is none."""
    tuned = folder.rerank
    if tuned is None:
        return "none: pig rank/eval --rerank use the default weights (pig tune-rerank VAL_INDEX --captions val.csv)"
    return tuned.to_dict()


def _rerank_head_state(folder) -> str:
    """Whether the EERCF rerank head was trained (differs from its identity start)."""
    import torch

    head = folder.load_eercf_head()
    with torch.no_grad():
        change = max(float((w - torch.eye(w.shape[0])).abs().max()) for w in (head.w_g, head.w_f))
    if change == 0.0:
        return "untrained (W_g, W_F identities)"
    return f"trained (largest change from the identity: {change:.3g})"


def render(info: dict) -> str:
    """Text form: one 'key: value' line per field, datasets as a table."""
    lines = []
    for key, value in info.items():
        if key == "datasets":
            lines.append("datasets:")
            width = max((len(n) for n in value), default=0)
            lines += [f"  {name:<{width}}  {str(tuple(d['shape'])):<20} {d['dtype']}" for name, d in value.items()]
        elif key == "failures":
            lines.append(f"failures: {sum(value.values())}" + ("" if value else " (none)"))
            lines += [f"  {count} x {message}" for message, count in value.items()]
        elif isinstance(value, (dict, list)):
            lines.append(f"{key}: {json.dumps(value, default=str)}")
        elif value is not None:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
