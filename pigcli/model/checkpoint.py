"""Model folders: the on-disk format, the one reader of its files, saving and loading.

A pig model folder holds:
    config.json        {"pig": PigConfig, "clip": CLIPConfig}
    model.safetensors  every weight (CLIP, proxies, temporal embedding, generator, fusioner, EERCF head)
    tokenizer/         a CLIPTokenizer that loads offline
    checkpoint.json    {"format", "name", "hash"}: the identity that stage files record

`ModelFolder.read` is the only code that parses config.json and checkpoint.json; it reads no weights,
so a stage can check a model's identity and settings before deciding to load it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PigError
from .clip_compat import skip_weight_init
from .pig import PigConfig, PigModel

CHECKPOINT_FORMAT = "pig-checkpoint/1"
BYTE_VOCAB_SIZE = 514  # the offline byte-level tokenizer: 512 byte tokens, then BOS and EOS
# Modules added after a checkpoint may have been written: absent from its weights, they keep their
# initial values (the EERCF head: identities, i.e. an untrained head).
OPTIONAL_PREFIXES = ("eercf.",)


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    hash: str

    def to_dict(self) -> dict:
        return {"name": self.name, "hash": self.hash}


@dataclass
class LoadedModel:
    model: PigModel
    tokenizer: object
    identity: ModelIdentity
    path: Path


@dataclass(frozen=True)
class ModelFolder:
    """A pig model folder as its json files describe it; weights are read only by `load`."""

    path: Path
    identity: ModelIdentity
    config: PigConfig
    clip_config: dict

    @classmethod
    def read(cls, path: str | Path) -> "ModelFolder":
        path = Path(path)
        if not is_checkpoint(path):
            raise PigError(f"{path} is not a pig model folder (no checkpoint.json); make one with: pig init -o {path}")
        config = json.loads((path / "config.json").read_text())
        identity = json.loads((path / "checkpoint.json").read_text())
        return cls(path, ModelIdentity(identity["name"], identity["hash"]), PigConfig.from_dict(config["pig"]),
                   config["clip"])

    @property
    def image_size(self) -> int:
        return self.clip_config["vision_config"]["image_size"]

    @property
    def embed_dim(self) -> int:
        return self.clip_config["projection_dim"]

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"

    def load(self, device: str | torch.device = "cpu") -> LoadedModel:
        """Build the model and read every weight (no random init: the file overwrites it)."""
        from safetensors.torch import load_model
        from transformers import CLIPConfig, CLIPModel

        with skip_weight_init():  # the EERCF head's identity start is kept for old folders without it
            model = PigModel(CLIPModel(CLIPConfig.from_dict(self.clip_config)), self.config)
        missing, unexpected = load_model(model, str(self.weights), strict=False, device="cpu")
        self._check_loaded_keys(missing, unexpected)
        model.to(device).eval()
        return LoadedModel(model, load_tokenizer(self.path / "tokenizer"), self.identity, self.path)

    def load_eercf_head(self):
        """The EERCF head (W_g, W_F) alone, without building the model (what `pig rank --rerank` and
        `pig fuse --method eercf` need); identities when the folder has none."""
        from safetensors import safe_open

        from .eercf import EercfHead

        head = EercfHead(self.embed_dim, self.config.num_frames)
        with safe_open(str(self.weights), framework="pt") as weights:
            stored = {key[len("eercf."):]: weights.get_tensor(key) for key in weights.keys() if key.startswith("eercf.")}
        head.load_state_dict(stored, strict=False)
        return head.eval()

    def _check_loaded_keys(self, missing: list[str], unexpected: list[str]) -> None:
        required = [key for key in missing if not key.startswith(OPTIONAL_PREFIXES)]
        if required or unexpected:
            names = ", ".join((required + unexpected)[:4])
            raise PigError(f"{self.weights} does not fit this pig version's model ({names}, ...); "
                           "make the checkpoint again with pig init or pig train")


def is_checkpoint(path: str | Path | None) -> bool:
    return bool(path) and (Path(path) / "checkpoint.json").is_file()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a pig model folder (weights and tokenizer)."""
    return ModelFolder.read(path).load(device)


def load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


def save_checkpoint(model: PigModel, tokenizer, output: Path, name: str | None = None) -> Path:
    """Write a model folder atomically (to OUTPUT.partial, then rename)."""
    from safetensors.torch import save_model

    output = Path(output)
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    config = {"pig": model.config.to_dict(), "clip": model.clip.config.to_dict()}
    (staging / "config.json").write_text(json.dumps(config, indent=2, default=str))
    save_model(model, str(staging / "model.safetensors"))  # deduplicates the shared vision tower
    tokenizer.save_pretrained(str(staging / "tokenizer"))
    identity = {"format": CHECKPOINT_FORMAT, "name": name or output.name, "hash": content_hash(staging)}
    (staging / "checkpoint.json").write_text(json.dumps(identity, indent=2))
    if output.exists():
        shutil.rmtree(output)
    os.replace(staging, output)
    return output


def content_hash(folder: Path) -> str:
    """sha256 over the config and the weights: what a model's outputs depend on."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with open(Path(folder) / name, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
