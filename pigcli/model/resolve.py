"""Which model a command uses: the one place that turns `-m`, $PIG_MODEL or a stage file's record
into a model folder.

    -m MODEL           a pig model folder, or any CLIP (hub id or folder) converted once into the cache
    no -m              $PIG_MODEL, else openai/clip-vit-base-patch32 (extract, embed-text, train, init)
    no -m, stage file  the model the file was made with (select, generate, fuse, rank, eval); if that
                       folder is gone, an error that says to pass -m
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PigError
from .checkpoint import LoadedModel, ModelFolder, is_checkpoint

DEFAULT_MODEL = "openai/clip-vit-base-patch32"


def model_cache_dir() -> Path:
    return Path(os.environ.get("PIG_CACHE", Path.home() / ".cache" / "pig")) / "models"


def resolve_folder(spec: str | None) -> ModelFolder:
    """-m MODEL (default $PIG_MODEL, else openai/clip-vit-base-patch32) as a pig model folder; a CLIP
    is converted into the model cache the first time it is named."""
    spec = spec or os.environ.get("PIG_MODEL") or DEFAULT_MODEL
    if is_checkpoint(spec):
        return ModelFolder.read(spec)
    looks_like_path = Path(spec).exists() or spec.startswith((".", "/", "~"))
    if looks_like_path and not (Path(spec) / "config.json").is_file():
        raise PigError(f"{spec} is neither a pig model folder nor a CLIP folder; make a model with: "
                       f"pig init --preset tiny -o {spec}  (or pig init --from CLIP -o {spec})")
    cached = model_cache_dir() / spec.replace("/", "--")
    if not is_checkpoint(cached):
        from .factory import init_from_clip

        init_from_clip(spec, cached)
    return ModelFolder.read(cached)


def resolve_model(spec: str | None, device="cpu") -> LoadedModel:
    """resolve_folder, then its weights."""
    return resolve_folder(spec).load(device)


def folder_for_file(spec: str | None, handle, path, rerun_hint: str) -> ModelFolder:
    """The model to continue a stage file with: -m, else the one the file records; it must be the
    model the file was made with (else a StaleInputError naming `rerun_hint`)."""
    from ..store import recorded_model, recorded_model_path, require_same_model

    if spec:
        folder = resolve_folder(spec)
    else:
        recorded_path = recorded_model_path(handle)
        if not is_checkpoint(recorded_path):
            made_with = recorded_model(handle) or {}
            raise PigError(f"{path} was made with model {made_with.get('name')} ({made_with.get('hash')}), "
                           f"whose folder {recorded_path or '(not recorded)'} is gone; pass -m MODEL, "
                           "the pig model folder the file was made with")
        folder = ModelFolder.read(recorded_path)
    require_same_model(path, handle, folder.identity.to_dict(), rerun_hint)
    return folder


def select_k_for(spec: str | None, handle, path, default_when_unknown: bool = False) -> int:
    """k, the ITS tokens per video, of the model a stage file was made with (-m's if given): the one
    select_k lookup. default_when_unknown: a file whose model folder is not recorded or gone gets the
    default k (explain's pictures) instead of an error (`pig select`, which must use the model's k)."""
    from ..store import recorded_model_path
    from .config import PigConfig

    if default_when_unknown and not spec and not is_checkpoint(recorded_model_path(handle)):
        return PigConfig().select_k
    return folder_for_file(spec, handle, path, "pig extract with this model, or pass -k").config.select_k
