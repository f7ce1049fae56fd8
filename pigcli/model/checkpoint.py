"""Model folders: the on-disk format, the one reader of its files, saving and loading.

A pig model folder holds:
    config.json        {"pig": PigConfig, "clip": CLIPConfig}
    model.safetensors  every weight (CLIP, proxies, temporal embedding, generator, fusioner, EERCF head)
    tokenizer/         a CLIPTokenizer that loads offline
    checkpoint.json    {"format", "name", "hash"}: the identity that stage files record
    rerank.json        optional: the EERCF rerank setting chosen on validation by `pig tune-rerank`
                       {"k", "w_fw", "w_fs", "w_pw", "w_coarse", "tuned_on", "videos", "r1_before",
                       "r1_after", "created", ...}. Kept out of config.json and the weights on purpose:
                       the hash covers those two, and every stage file records the hash.

`ModelFolder.read` is the only code that parses config.json and checkpoint.json (and `.rerank`
rerank.json); it reads no weights, so a stage can check a model's identity and settings before
deciding to load it. Reading a folder imports neither torch nor the networks (they are imported by
the loaders), so that commands which only check a model stay light.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PigError
from .config import PigConfig

if TYPE_CHECKING:
    import torch

    from .eercf import RerankWeights
    from .pig import PigModel

CHECKPOINT_FORMAT = "pig-checkpoint/1"
BYTE_VOCAB_SIZE = 514  # the offline byte-level tokenizer: 512 byte tokens, then BOS and EOS
# Modules added after a checkpoint may have been written: absent from its weights, they keep their
# initial values (the EERCF head: identities, i.e. an untrained head).
OPTIONAL_PREFIXES = ("eercf.",)
RERANK_FILE = "rerank.json"


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    hash: str

    def to_dict(self) -> dict:
        return {"name": self.name, "hash": self.hash}


@dataclass(frozen=True)
class TunedRerank:
    """A model's rerank.json: the EERCF rerank chosen on validation captions (`pig tune-rerank`).

    k = 0 means "off": no rerank setting beat the plain index there; `weights` are then the best
    setting's weights all the same (what an explicit `--rerank K` uses). r1_after is the validation
    R@1 of those weights at their best K; r1_before the plain index's.
    """

    k: int
    weights: RerankWeights
    tuned_on: str
    videos: int
    r1_before: float
    r1_after: float
    model_hash: str = ""
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    extra: dict = field(default_factory=dict)  # other recorded fields (index, captions, ...), kept as read

    def to_dict(self) -> dict:
        w = self.weights
        return {"k": self.k, "w_fw": w.fw, "w_fs": w.fs, "w_pw": w.pw, "w_coarse": w.coarse,
                "tuned_on": self.tuned_on, "videos": self.videos, "r1_before": self.r1_before,
                "r1_after": self.r1_after, "model_hash": self.model_hash, "created": self.created, **self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> "TunedRerank":
        from .eercf import RerankWeights

        known = {"k", "w_fw", "w_fs", "w_pw", "w_coarse", "tuned_on", "videos", "r1_before", "r1_after",
                 "model_hash", "created"}
        weights = RerankWeights(fw=float(data["w_fw"]), fs=float(data["w_fs"]), pw=float(data["w_pw"]),
                                coarse=float(data["w_coarse"]))
        return cls(int(data["k"]), weights, str(data["tuned_on"]), int(data["videos"]), float(data["r1_before"]),
                   float(data["r1_after"]), str(data.get("model_hash", "")), str(data.get("created", "")),
                   {key: value for key, value in data.items() if key not in known})


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

    @property
    def trained_sampling(self) -> str | None:
        """How the frames the model was trained on were sampled (pig train records it in the model's config;
        runs from before it recorded one sampled segment centres); None for a model pig train did not make."""
        from ..inputs.video import UNRECORDED_SAMPLING

        train = self.config.extra.get("train")
        if not isinstance(train, dict):
            return None
        return train.get("settings", {}).get("sampling", UNRECORDED_SAMPLING)

    def require_weights(self) -> Path:
        """The weights file, or a PigError saying the folder is incomplete (json files without weights)."""
        if not self.weights.is_file():
            raise PigError(f"model folder {self.path} has no weights ({self.weights.name} is missing): copy the whole "
                           "folder, or make the model again with pig init or pig train")
        return self.weights

    @property
    def rerank_file(self) -> Path:
        return self.path / RERANK_FILE

    @property
    def rerank(self) -> TunedRerank | None:
        """The rerank setting tuned for this model (rerank.json), or None when there is none. One
        tuned for other weights (its model_hash is not this folder's) is ignored, with a warning."""
        if not self.rerank_file.is_file():
            return None
        try:
            tuned = TunedRerank.from_dict(json.loads(self.rerank_file.read_text()))
        except (ValueError, KeyError, TypeError) as err:
            raise PigError(f"{self.rerank_file} is not a valid rerank file ({type(err).__name__}: {err}); "
                           f"delete it or make it again with pig tune-rerank") from None
        if tuned.model_hash and tuned.model_hash != self.identity.hash:
            from ..console import warn

            warn(f"{self.rerank_file} was tuned for model {tuned.model_hash}, not this folder's {self.identity.hash}: "
                 "ignored (run pig tune-rerank again)")
            return None
        return tuned

    def write_rerank(self, tuned: TunedRerank) -> Path:
        """Write rerank.json (atomically). config.json and the weights are untouched, so the model's
        hash, and every stage file made with it, stay valid. Records this folder's hash in it."""
        tuned = replace(tuned, model_hash=self.identity.hash)
        from ..safe_write import write_bytes

        write_bytes(self.rerank_file, (json.dumps(tuned.to_dict(), indent=2) + "\n").encode())
        return self.rerank_file

    def load(self, device: str | torch.device = "cpu") -> LoadedModel:
        """Build the model and read every weight (no random init: the file overwrites it)."""
        from safetensors.torch import load_model
        from transformers import CLIPConfig, CLIPModel

        from .clip_compat import skip_weight_init
        from .pig import PigModel

        weights = self.require_weights()
        with skip_weight_init():  # the EERCF head's identity start is kept for old folders without it
            model = PigModel(CLIPModel(CLIPConfig.from_dict(self.clip_config)), self.config)
        missing, unexpected = load_model(model, str(weights), strict=False, device="cpu")
        self._check_loaded_keys(missing, unexpected)
        model.to(device).eval()
        return LoadedModel(model, load_tokenizer(self.path / "tokenizer"), self.identity, self.path)

    def load_eercf_head(self):
        """The EERCF head (W_g, W_F) alone, without building the model (what `pig rank --rerank` and
        `pig fuse --method eercf` need); identities when the folder has none."""
        from safetensors import safe_open

        from .eercf import EercfHead

        head = EercfHead(self.embed_dim, self.config.num_frames)
        with safe_open(str(self.require_weights()), framework="pt") as weights:
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


MODEL_FILES = frozenset({"config.json", "model.safetensors", "tokenizer", "checkpoint.json", RERANK_FILE})


def check_model_target(output: Path, force: bool | None) -> None:
    """pig writes a model folder only where nothing is, into an empty folder, or over a model folder
    of its own holding nothing pig did not put there (force: see safe_write.check_target; a run's own
    checkpoints pass None)."""
    from ..safe_write import check_target, refuse_foreign

    if is_checkpoint(output) and not output.is_symlink():
        foreign = sorted(entry.name for entry in Path(output).iterdir() if entry.name not in MODEL_FILES)
        if foreign:
            refuse_foreign(output, f"holds files that pig did not make ({', '.join(foreign[:5])})")
    check_target(output, "pig model folder", is_checkpoint, force)


def save_checkpoint(model: PigModel, tokenizer, output: Path, name: str | None = None,
                    force: bool | None = False) -> Path:
    """Write a model folder atomically: into a new hidden folder next to OUTPUT, then renamed into
    place (check_model_target's rule: a model folder is replaced only with force, or force None)."""
    from safetensors.torch import save_model

    from ..safe_write import replace_folder, temporary_folder, write_errors

    output = Path(os.path.abspath(output))  # `-o ..` names the parent folder itself
    check_model_target(output, force)
    with write_errors(output), temporary_folder(output) as staging:
        config = {"pig": model.config.to_dict(), "clip": model.clip.config.to_dict()}
        (staging / "config.json").write_text(json.dumps(config, indent=2, default=str))
        save_model(model, str(staging / "model.safetensors"))  # deduplicates the shared vision tower
        tokenizer.save_pretrained(str(staging / "tokenizer"))
        identity = {"format": CHECKPOINT_FORMAT, "name": name or output.name, "hash": content_hash(staging)}
        (staging / "checkpoint.json").write_text(json.dumps(identity, indent=2))
        replace_folder(staging, output)
    return output


def content_hash(folder: Path) -> str:
    """sha256 over the config and the weights: what a model's outputs depend on."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with open(Path(folder) / name, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
