"""Checkpoint folders: make one (`pig init`), save, load with no network, and identify it.

A checkpoint folder holds:
    config.json        {"pig": PigConfig, "clip": CLIPConfig}
    model.safetensors  every weight (CLIP, proxies, temporal embedding, generator, fusioner)
    tokenizer files    a CLIPTokenizer that loads offline
    checkpoint.json    {"format", "name", "hash"}: the identity that stage files record
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
from .clip_compat import skip_weight_init, write_byte_tokenizer
from .pig import PigConfig, PigModel

CHECKPOINT_FORMAT = "pig-checkpoint/1"
DEFAULT_MODEL = "openai/clip-vit-base-patch32"
BYTE_VOCAB_SIZE = 514

# Small random CLIPs for tests, demos and CPU experiments. 'toy' is the setting that trained best on
# 2 CPU cores (shared/TOY_TRAINING.md); 'b32' has ViT-B/32's shape, for speed measurements.
PRESETS: dict[str, dict] = {
    "tiny": dict(image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2,
                 text_width=32, text_layers=2, text_heads=2, projection_dim=32),
    "toy": dict(image_size=64, patch_size=16, vision_width=128, vision_layers=2, vision_heads=4,
                text_width=128, text_layers=2, text_heads=4, projection_dim=128),
    "b32": dict(image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12,
                text_width=512, text_layers=12, text_heads=8, projection_dim=512),
}


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


# --- making models --------------------------------------------------------------------------------

def random_clip(preset: str = "tiny", seed: int = 0, vocab_size: int = BYTE_VOCAB_SIZE, **overrides):
    """A randomly initialised CLIPModel of a named size, for a byte-level tokenizer of `vocab_size`
    tokens (BOS and EOS are ids 512 and 513)."""
    from transformers import CLIPConfig, CLIPModel

    if preset not in PRESETS:
        raise PigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    sizes = {**PRESETS[preset], **overrides}
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=sizes["text_width"], intermediate_size=4 * sizes["text_width"],
            num_hidden_layers=sizes["text_layers"], num_attention_heads=sizes["text_heads"],
            max_position_embeddings=77, bos_token_id=BYTE_VOCAB_SIZE - 2, eos_token_id=BYTE_VOCAB_SIZE - 1,
            pad_token_id=BYTE_VOCAB_SIZE - 1,
        ),
        vision_config=dict(
            image_size=sizes["image_size"], patch_size=sizes["patch_size"], hidden_size=sizes["vision_width"],
            intermediate_size=4 * sizes["vision_width"], num_hidden_layers=sizes["vision_layers"],
            num_attention_heads=sizes["vision_heads"],
        ),
        projection_dim=sizes["projection_dim"],
        # From scratch, CLIP's own initial temperature log(1/0.07) (what trained best on the toy corpus,
        # shared/TOY_TRAINING.md). METHOD.md's log(100) is a pretrained CLIP's value, kept by `--from`.
        logit_scale_init_value=2.6592,
    )
    torch.manual_seed(seed)
    return CLIPModel(config).eval()


def init_random(output: Path, preset: str = "tiny", seed: int = 0, pig_config: PigConfig | None = None,
                vocab_texts: list[str] = (), **overrides) -> Path:
    """`pig init --preset`: a random CLIP of a preset size made into a pig checkpoint.

    vocab_texts: texts to learn word tokens from (e.g. a corpus's captions); none: one token per byte.
    """
    tokenizer_dir = Path(output).with_name(Path(output).name + ".tokenizer.partial")
    vocab_size = write_byte_tokenizer(tokenizer_dir, texts=list(vocab_texts))
    clip = random_clip(preset, seed, vocab_size=vocab_size, **overrides)
    config = pig_config or PigConfig()
    config.source = f"random:{preset}:seed{seed}"
    config.bos_token_id, config.eos_token_id = BYTE_VOCAB_SIZE - 2, BYTE_VOCAB_SIZE - 1
    torch.manual_seed(seed + 1)
    model = PigModel(clip, config)
    tokenizer = _load_tokenizer(tokenizer_dir)
    shutil.rmtree(tokenizer_dir)
    return save_checkpoint(model, tokenizer, output, name=Path(output).name)


def init_from_clip(source: str, output: Path, pig_config: PigConfig | None = None, seed: int = 0) -> Path:
    """`pig init --from`: any CLIP that transformers.CLIPModel can load (hub id or folder)."""
    from transformers import CLIPModel, CLIPTokenizer

    # Without a resolvable hub, the hub client retries for ~30 s before failing: use its cache only.
    local = {} if Path(source).is_dir() or hub_resolvable() else {"local_files_only": True}
    try:
        clip = CLIPModel.from_pretrained(source, **local).eval()
        tokenizer = CLIPTokenizer.from_pretrained(source, **local)
    except OSError as err:
        raise PigError(
            f"cannot load CLIP {source!r} ({_first_line(err)}). Without network access, point -m at a local "
            "pig model folder, or make one offline: pig init --preset tiny -o models/tiny"
        ) from err
    config = pig_config or PigConfig()
    config.source = source
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.image_mean, config.image_std = _image_statistics(source, local)
    torch.manual_seed(seed)
    return save_checkpoint(PigModel(clip, config), tokenizer, output, name=source)


def hub_resolvable() -> bool:
    """Whether the model hub's host name resolves (offline machines fail this at once). Honours
    HF_HUB_OFFLINE and HF_ENDPOINT."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _image_statistics(source: str, hub_options: dict) -> tuple[tuple, tuple]:
    try:
        from transformers import CLIPImageProcessor

        processor = CLIPImageProcessor.from_pretrained(source, **hub_options)
        return tuple(processor.image_mean), tuple(processor.image_std)
    except Exception:  # no preprocessor config in the folder: CLIP's own statistics
        config = PigConfig()
        return config.image_mean, config.image_std


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# --- saving and loading ---------------------------------------------------------------------------

def save_checkpoint(model: PigModel, tokenizer, output: Path, name: str | None = None) -> Path:
    """Write a checkpoint folder atomically (to OUTPUT.partial, then rename)."""
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


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "checkpoint.json").is_file()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    from safetensors.torch import load_model
    from transformers import CLIPConfig, CLIPModel

    path = Path(path)
    if not is_checkpoint(path):
        raise PigError(f"{path} is not a pig model folder (no checkpoint.json); make one with: pig init -o {path}")
    config = json.loads((path / "config.json").read_text())
    identity = json.loads((path / "checkpoint.json").read_text())
    with skip_weight_init():  # every weight is overwritten by the file (the EERCF head's identity start is kept)
        model = PigModel(CLIPModel(CLIPConfig.from_dict(config["clip"])), PigConfig.from_dict(config["pig"]))
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False, device="cpu")
    _check_loaded_keys(path, missing, unexpected)
    model.to(device).eval()
    return LoadedModel(model, _load_tokenizer(path / "tokenizer"), ModelIdentity(identity["name"], identity["hash"]), path)


# Modules added after a checkpoint may have been written: absent from its weights, they keep their
# initial values (the EERCF head: identities, i.e. an untrained head).
OPTIONAL_PREFIXES = ("eercf.",)


def _check_loaded_keys(path: Path, missing: list[str], unexpected: list[str]) -> None:
    required = [key for key in missing if not key.startswith(OPTIONAL_PREFIXES)]
    if required or unexpected:
        names = ", ".join((required + unexpected)[:4])
        raise PigError(f"{path}/model.safetensors does not fit this pig version's model ({names}, ...); "
                       "make the checkpoint again with pig init or pig train")


def load_eercf_head(path: str | Path):
    """A checkpoint's EERCF head (W_g, W_F) alone, read without building the model (fast for rerank);
    identities when the checkpoint has none."""
    from safetensors import safe_open

    from .eercf import EercfHead

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    head = EercfHead(config["clip"]["projection_dim"], config["pig"].get("num_frames", PigConfig().num_frames))
    with safe_open(str(path / "model.safetensors"), framework="pt") as weights:
        stored = {key[len("eercf."):]: weights.get_tensor(key) for key in weights.keys() if key.startswith("eercf.")}
    head.load_state_dict(stored, strict=False)
    return head.eval()


def read_pig_config(path: str | Path) -> PigConfig:
    """A checkpoint's pig settings without loading weights (defaults when the folder is gone)."""
    config_file = Path(path) / "config.json"
    if not path or not config_file.is_file():
        return PigConfig()
    return PigConfig.from_dict(json.loads(config_file.read_text())["pig"])


def _load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


def model_cache_dir() -> Path:
    return Path(os.environ.get("PIG_CACHE", Path.home() / ".cache" / "pig")) / "models"


@dataclass(frozen=True)
class ModelInfo:
    """What stage files record about a model, read without loading its weights."""

    identity: ModelIdentity
    config: PigConfig
    image_size: int
    path: Path


def peek_model(spec: str | None) -> ModelInfo | None:
    """The model -m would load, from its json files; None if it must first be made from a CLIP."""
    spec = spec or os.environ.get("PIG_MODEL") or DEFAULT_MODEL
    for folder in (Path(spec), model_cache_dir() / spec.replace("/", "--")):
        if is_checkpoint(folder):
            config = json.loads((folder / "config.json").read_text())
            identity = json.loads((folder / "checkpoint.json").read_text())
            return ModelInfo(ModelIdentity(identity["name"], identity["hash"]), PigConfig.from_dict(config["pig"]),
                             config["clip"]["vision_config"]["image_size"], folder)
    return None


def resolve_model(spec: str | None, device: str | torch.device = "cpu") -> LoadedModel:
    """-m MODEL: a pig folder, else any CLIP (hub id or folder) converted once into the model cache.

    Without -m: $PIG_MODEL, else openai/clip-vit-base-patch32.
    """
    spec = spec or os.environ.get("PIG_MODEL") or DEFAULT_MODEL
    if is_checkpoint(spec):
        return load_checkpoint(spec, device)
    looks_like_path = Path(spec).exists() or spec.startswith((".", "/", "~"))
    if looks_like_path and not (Path(spec) / "config.json").is_file():
        raise PigError(f"{spec} is neither a pig model folder nor a CLIP folder; make a model with: "
                       f"pig init --preset tiny -o {spec}  (or pig init --from CLIP -o {spec})")
    cached = model_cache_dir() / spec.replace("/", "--")
    if not is_checkpoint(cached):
        init_from_clip(spec, cached)
    return load_checkpoint(cached, device)
